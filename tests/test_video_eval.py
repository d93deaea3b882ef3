"""Testing on tracklets (issue 31 item 3): test.py's one feature per tracklet recomputed by hand (chunks of
--seq_len, flip-sum, L2 per chunk, mean, L2), the .mat's rows and tracklet names, evaluate_gpu.py's figures (and
re-ranking, query expansion, verification) against brute-force loops over the saved .mat, the HTML page's strips,
and iLIDS-VID / PRID-2011 over two splits averaged by --result a b.

The sets are the generated tiny ones, prepared here; networks are ResNet-18 from scratch at 32 x 16, trained
in-process for one epoch; test.py extracts in fp32 (--cpu_bf16 off) so the hand computation matches to rounding.
"""
import contextlib
import html.parser
import io
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import demo
import evaluate_gpu
import prepare
from conftest import build, hand_transform, load_test_cli
from reid.evaluation import extract
from reid.runs import load_checkpoint, load_opts
from reid.training import recipe, trainer

SIZE = (32, 16)
TEST = load_test_cli()


def prepared_set(root, layout, *split):
    """Generate the tiny set of `layout` under root/raw (once) and prepare it (--split K when given)."""
    if not (root / 'raw').is_dir():
        prepare.main(['--make-demo', str(root / 'raw'), '--layout', layout, '--size', 'tiny'])
    out = root / ('prepared' + ''.join(f'_{k}' for k in split))
    prepare.main(['--dataset', layout, '--download_path', str(root / 'raw'), '--save_path', str(out),
                  *(['--split', str(split[0])] if split else [])])
    return out


def train_run(data, model_dir, name, *extra):
    opts = recipe.build_parser().parse_args(
        ['--name', name, '--data_dir', str(data), '--model_dir', str(model_dir), '--backbone', 'resnet18',
         '--scratch', '--h', str(SIZE[0]), '--w', str(SIZE[1]), '--batchsize', '8', '--num_workers', '0',
         '--lr', '0.01', '--total_epoch', '1', *extra])
    trainer.run_training(opts)
    return model_dir / name


def run_test_cli(run, data, result, *extra):
    TEST.main(['--name', run.name, '--model_dir', str(run.parent), '--test_dir', str(data), '--num_workers', '0',
               '--result', str(result), '--cpu_bf16', 'off', *extra])
    return scipy.io.loadmat(result)


def walked_tracklets(split_dir):
    """[(tracklet name, frame paths)] of a prepared split walked here: id folders, tracklet folders, frames sorted."""
    return [(name, [str(split_dir / pid / name / f) for f in sorted(os.listdir(split_dir / pid / name))])
            for pid in sorted(os.listdir(split_dir)) for name in sorted(os.listdir(split_dir / pid))]


def brute_force_metrics(mat):
    """Per query (Rank@1 hit, Market AP) by plain sorts, junk = id -1 or the query's id and camera; the valid
    same-id and different-id pair counts."""
    gl, gc = mat['gallery_label'][0], mat['gallery_cam'][0]
    hits, aps, positive, negative = [], [], 0, 0
    for q, ql, qc in zip(mat['query_f'], mat['query_label'][0], mat['query_cam'][0]):
        order = sorted(range(len(gl)), key=lambda j: (-float(np.dot(q, mat['gallery_f'][j])), j))
        keep = [j for j in order if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))]
        good = [k for k, j in enumerate(keep) if gl[j] == ql]
        positive += len(good)
        negative += len(keep) - len(good)
        if good:
            hits.append(float(good[0] == 0))
            aps.append(sum(((1.0 if k == 0 else i / k) + (i + 1) / (k + 1)) / 2 for i, k in enumerate(good))
                       / len(good))
    return float(np.mean(hits)), float(np.mean(aps)), positive, negative


@pytest.fixture(scope='module')
def mars_run(tmp_path_factory):
    """(prepared MARS set, run folder, result file, its arrays, what test.py printed) of a 1-epoch attention
    network with --seq_len 3, tested."""
    root = tmp_path_factory.mktemp('mars')
    data = prepared_set(root, 'mars')
    run = train_run(data, root / 'runs', 'mars', '--temporal', 'attention', '--seq_len', '3', '--triplet')
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        mat = run_test_cli(run, data, root / 'mars.mat')
    return SimpleNamespace(data=data, run=run, result=root / 'mars.mat', mat=mat, printed=printed.getvalue())


def trained_network(run):
    """The run's network rebuilt from its opts.yaml and net_last.pth, in eval mode (not fused)."""
    opts = load_opts(run / 'opts.yaml')
    net = build(opts, opts['nclasses'], pretrained=False)
    net.load_state_dict(load_checkpoint(run / 'net_last.pth'))
    return net.eval()


def hand_tracklet_feature(net, paths, length):
    """The documented tracklet feature, written out: consecutive chunks of `length` frames (the last shorter),
    each (and its horizontal flip) through the network as one clip, summed and L2-normalised; the chunks' mean,
    L2-normalised."""
    transform = hand_transform(*SIZE)
    frames = []
    for path in paths:
        with Image.open(path) as img:
            frames.append(transform(img.convert('RGB')))
    chunks = []
    with torch.no_grad():
        for start in range(0, len(frames), length):
            clip = torch.stack(frames[start:start + length])[None]
            f = (net(clip, return_feature=True) + net(clip.flip(-1), return_feature=True))[0].double().numpy()
            chunks.append(f / np.linalg.norm(f))
    mean = np.mean(chunks, axis=0)
    return mean / np.linalg.norm(mean)


def test_mars_one_row_per_tracklet_with_features_as_computed_by_hand(mars_run):
    data, mat = mars_run.data, mars_run.mat
    assert 'tracklets in chunks of 3 frame(s)' in mars_run.printed
    opts = load_opts(mars_run.run / 'opts.yaml')
    assert (opts['temporal'], opts['seq_len']) == ('attention', 3)
    net = trained_network(mars_run.run)
    for split in ('query', 'gallery'):
        walked = walked_tracklets(data / split)
        assert [str(c[0]) for c in mat[f'{split}_tracklet'].reshape(-1)] == [name for name, _ in walked]
        assert mat[f'{split}_f'].shape == (len(walked), 512)
        # MARS names a tracklet <id>C<camera>T<number>; id 00-1 is junk (-1)
        heads = [re.match(r'(\d\d-1|\d{4})C(\d)T', name).groups() for name, _ in walked]
        assert mat[f'{split}_label'][0].tolist() == [-1 if pid == '00-1' else int(pid) for pid, _ in heads]
        assert mat[f'{split}_cam'][0].tolist() == [int(cam) for _, cam in heads]
        for k in (0, 1, 2, 3, len(walked) - 1):
            np.testing.assert_allclose(mat[f'{split}_f'][k], hand_tracklet_feature(net, walked[k][1], 3), atol=2e-4)
    assert any(len(paths) % 3 for _, paths in walked_tracklets(data / 'query'))   # short last chunks were checked


def test_seq_len_zero_takes_the_whole_tracklet_at_once_and_one_frame_by_frame(mars_run):
    """With max pooling over time (a random network), the whole tracklet as one clip and its frames one by one
    give clearly different features: each must be the one written out by hand."""
    from reid.models.heads import build_model
    from reid.spec import NetworkSpec

    torch.manual_seed(0)
    net = build_model(NetworkSpec(backbone='resnet18', h=SIZE[0], w=SIZE[1], temporal='max'), 7,
                      pretrained=False).eval()
    runtime = SimpleNamespace(workers=0, device=torch.device('cpu'), amp_dtype=None)
    walked = walked_tracklets(mars_run.data / 'query')
    got = {}
    for length in (0, 1):
        rows = extract.tracklet_features(net, mars_run.data / 'query', runtime, SIZE, [1.0], 16, length)
        got[length] = rows[0].numpy()
        assert rows.names == [name for name, _ in walked] and len(rows) == 3
        for k in (0, len(walked) - 1):
            want = hand_tracklet_feature(net, walked[k][1], length or len(walked[k][1]))
            np.testing.assert_allclose(got[length][k], want, atol=2e-4)
    assert np.abs(got[0] - got[1]).max() > 1e-2


def test_test_py_chunks_by_seq_len_and_refuses_it_where_it_cannot(mars_run, tiny_prepared, tmp_path):
    assert extract.chunk_length(SimpleNamespace(seq_len=None), {'temporal': 'avg', 'seq_len': 6}) == 6
    assert extract.chunk_length(SimpleNamespace(seq_len=0), {'temporal': 'avg', 'seq_len': 6}) == 0
    assert extract.chunk_length(SimpleNamespace(seq_len=None), {}) == 1   # an image network: frame by frame
    with pytest.raises(ValueError, match='^--seq_len 4: the run was trained on images'):
        extract.chunk_length(SimpleNamespace(seq_len=4), {})
    with pytest.raises(SystemExit, match='--seq_len 2: .* is not a video layout'):
        run_test_cli(mars_run.run, tiny_prepared, tmp_path / 'x.mat', '--seq_len', '2')
    with pytest.raises(SystemExit, match='--backend onnxruntime: an export embeds single images'):
        run_test_cli(mars_run.run, mars_run.data, tmp_path / 'x.mat', '--backend', 'onnxruntime')
    with pytest.raises(SystemExit, match='^test.py: --multi: .* is a video layout, with no multi-query split'):
        run_test_cli(mars_run.run, mars_run.data, tmp_path / 'x.mat', '--multi')


def test_a_frame_that_goes_bad_during_test_stops_it_naming_the_frame_even_in_a_worker(mars_run, tmp_path):
    """A frame that cannot be read once extraction has started (after test.py's start-up check) would otherwise
    be replaced by another image, maybe of another tracklet or id: test.py stops with one line and saves nothing
    (test.py runs in a child process with a DataLoader worker, see conftest.test_py_breaking)."""
    import shutil

    from conftest import test_py_breaking

    data = shutil.copytree(mars_run.data, tmp_path / 'data')
    bad = sorted((data / 'gallery').rglob('*.jpg'))[5]
    done = test_py_breaking(bad, ['--name', mars_run.run.name, '--model_dir', mars_run.run.parent, '--test_dir', data,
                                  '--result', tmp_path / 'x.mat', '--num_workers', '1', '--cpu_bf16', 'off'])
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith(f'test.py: {bad}: became unreadable during the run'), done.stderr
    assert 'Traceback' not in done.stderr and not (tmp_path / 'x.mat').exists()


def test_an_export_of_a_tracklet_network_embeds_frames_and_test_py_averages_them(mars_run, tmp_path):
    """export.py on a --temporal run says what it exports and records the pooling; its ONNX file fed frame by frame
    (test.py --seq_len 1 --backend onnxruntime) gives each tracklet the mean of its frames' features, written out by
    hand from the checkpoint."""
    import json

    import export
    from conftest import library_messages

    out = tmp_path / 'mars.onnx'
    with library_messages() as said:
        export.main(['--name', mars_run.run.name, '--model_dir', str(mars_run.run.parent), '--output', str(out)])
    assert any('a tracklet network (--temporal attention): the export embeds one frame at a time' in m for m in said)
    assert json.loads(out.with_suffix('.json').read_text())['temporal'] == 'attention'
    mat = run_test_cli(mars_run.run, mars_run.data, tmp_path / 'frames.mat', '--seq_len', '1', '--backend',
                       'onnxruntime')
    net = trained_network(mars_run.run)
    walked = walked_tracklets(mars_run.data / 'query')
    for k in (0, len(walked) - 1):
        np.testing.assert_allclose(mat['query_f'][k], hand_tracklet_feature(net, walked[k][1], 1), atol=2e-4)


def test_evaluate_rerank_expansion_and_verification_work_on_tracklet_results(mars_run, capsys):
    result, mat = mars_run.result, mars_run.mat
    rank1, mean_ap, positive, negative = brute_force_metrics(mat)
    reports = evaluate_gpu.main(['--result', str(result)])
    assert reports[0][1]['cmc'][0] == pytest.approx(rank1, abs=1e-6)
    assert reports[0][1]['mAP'] == pytest.approx(mean_ap, abs=1e-5)
    capsys.readouterr()
    reports = evaluate_gpu.main(['--result', str(result), '--rerank', '--aqe', '3', '--verify'])
    out = capsys.readouterr().out
    assert len(reports) == 3 and f'pairs: {positive} same id, {negative} different id' in out
    assert all(r['n_valid'] == len(mat['query_label'][0]) for _, r, _ in reports)


class Figures(html.parser.HTMLParser):
    """Per <tr class="query">: the classes and <img src> of each of its figures."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'tr' and 'query' in (a.get('class') or ''):
            self.rows.append([])
        elif tag == 'figure' and self.rows:
            self.rows[-1].append({'class': a['class'].split()})
        elif tag == 'img' and self.rows and self.rows[-1]:
            self.rows[-1][-1]['src'] = a['src']


def hand_strip(paths):
    """The strip a tracklet is shown as: its frames at floor((2k + 1) n / 8), k = 0..3 (each once), side by side,
    128 pixels high."""
    n = len(paths)
    picks = sorted({(2 * k + 1) * n // 8 for k in range(min(4, n))}) if n >= 4 else list(range(n))
    frames = [Image.open(paths[p]).convert('RGB') for p in picks]
    strip = np.concatenate([np.asarray(f) for f in frames], axis=1)
    image = Image.fromarray(strip)
    return np.asarray(image.resize((round(image.width * 128 / image.height), 128)), dtype=np.float64)


def test_the_page_and_show_png_draw_tracklets_as_strips(mars_run, tmp_path, capsys):
    data, result, mat = mars_run.data, mars_run.result, mars_run.mat
    demo.main(['--html', str(tmp_path / 'page'), '--test_dir', str(data), '--result', str(result), '--top', '3'])
    page = Figures()
    page.feed((tmp_path / 'page' / 'index.html').read_text())
    walked = {'q': walked_tracklets(data / 'query'), 'g': walked_tracklets(data / 'gallery')}
    assert len(page.rows) == len(mat['query_label'][0]) == len(walked['q'])
    assert all('tracklet' in f['class'] and len(row) == 4 for row in page.rows for f in row)
    for f in [f for row in page.rows[:3] for f in row]:
        kind, index = re.match(r'thumbs/([qg])(\d+)\.jpg', f['src']).groups()
        want = hand_strip(walked[kind][int(index)][1])
        with Image.open(tmp_path / 'page' / f['src']) as img:
            got = np.asarray(img.convert('RGB'), dtype=np.float64)
        assert got.shape == want.shape and np.abs(got - want).mean() < 6   # JPEG
        other = hand_strip(walked[kind][(int(index) + 1) % len(walked[kind])][1])
        assert other.shape != want.shape or np.abs(got - other).mean() > 12
    capsys.readouterr()
    demo.main(['--test_dir', str(data), '--result', str(result), '--query_index', '0', '--output',
               str(tmp_path / 'show.png')])
    out = capsys.readouterr().out
    assert out.startswith(f'query 0: {data / "query"}') and walked['q'][0][0] in out.splitlines()[0]
    with Image.open(tmp_path / 'show.png') as img:
        assert img.width > 10 * img.height   # eleven strips side by side
    with pytest.raises(SystemExit, match='--heatmap: draws single images'):
        demo.main(['--test_dir', str(data), '--result', str(result), '--heatmap', '--output',
                   str(tmp_path / 'heat.png')])


@pytest.mark.parametrize('layout', ['ilidsvid', 'prid2011'])
def test_two_splits_trained_tested_and_averaged_as_the_protocol(layout, tmp_path, capsys):
    """Each split prepared, trained (--train_all) and tested; test.py says the protocol averages splits;
    evaluate_gpu.py --result a b prints the mean and the (population) std of the per-split brute-force figures."""
    per_split, results = [], []
    for k in (0, 1):
        data = prepared_set(tmp_path, layout, k)
        run = train_run(data, tmp_path / 'runs', f'{layout}_{k}', '--train_all', '--seq_len', '2')
        capsys.readouterr()
        results.append(tmp_path / f'{layout}_{k}.mat')
        mat = run_test_cli(run, data, results[-1])
        assert '(one split; the protocol averages 10' in capsys.readouterr().out
        walked = walked_tracklets(data / 'query')
        assert [str(c[0]) for c in mat['query_tracklet'].reshape(-1)] == [name for name, _ in walked]
        assert len(set(mat['query_cam'][0])) == 1 and set(mat['query_cam'][0]).isdisjoint(mat['gallery_cam'][0])
        per_split.append(brute_force_metrics(mat)[:2])
    values, mean, std = evaluate_gpu.main(['--result', *map(str, results)])
    out = capsys.readouterr().out
    rank1, maps = np.array(per_split).T
    assert mean['rank1'] == pytest.approx(rank1.mean(), abs=1e-6) and std['rank1'] == pytest.approx(rank1.std())
    assert mean['mAP'] == pytest.approx(maps.mean(), abs=1e-5) and std['mAP'] == pytest.approx(maps.std(), abs=1e-5)
    assert f'mAP:{maps.mean():.6f}' in out.splitlines()[0] and '(over 2 trials)' in out
