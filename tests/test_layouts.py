"""Every dataset layout end to end on generated data: prepare -> train one epoch -> test -> evaluate, plus the
layouts' protocols (no cameras, self-match exclusion, VehicleID gallery trials, VIPeR splits) against
independent brute-force computations, and the one-line errors of the user's own data (--custom, --csv).
"""
import csv
import json
import os
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from reid.data import layouts
import evaluate_gpu
from reid.evaluation import metrics
import prepare
from reid.data import synthetic
from reid.data.images import parse_market_name
from reid.data.prepared import list_reid_images

from conftest import expect_prepare_exit as expect_exit, load_test_cli
from reid.training import recipe, trainer
from reid.evaluation import extract

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ('duke', 'msmt17', 'cuhk03', 'veri', 'vehicleid', 'cub', 'viper')
SIZE = ['--h', '32', '--w', '16']


T = load_test_cli()


@pytest.fixture(scope='module')
def raw(tmp_path_factory, tiny_market):
    """raw(name) -> path of a generated raw set of that layout (made once per module); 'custom' and 'csv' are
    the tiny Market set re-filed as a user might: sub-folders per person without cameras, and a CSV file."""
    root = tmp_path_factory.mktemp('raw')
    made = {}

    def get(name):
        if name not in made:
            made[name] = root / name
            if name == 'custom':
                make_custom(tiny_market, made[name])
            elif name == 'csv':
                made[name] = make_csv(tiny_market, root / name)
            else:
                synthetic.make_layout(made[name], name, size='tiny', seed=0)
        return made[name]
    return get


def make_custom(market, out):
    """train/<person>/<n>.jpg, query/..., gallery/... with ids like 'p0007' and no camera; junk left out."""
    for split, sub in (('train', 'bounding_box_train'), ('query', 'query'), ('gallery', 'bounding_box_test')):
        for n, src in enumerate(sorted((market / sub).iterdir())):
            pid = src.name.split('_')[0]
            if pid in ('-1', '0000'):
                continue
            (out / split / f'p{pid}').mkdir(parents=True, exist_ok=True)
            shutil.copy(src, out / split / f'p{pid}' / f'{n}.jpg')


def make_csv(market, out):
    """A photos folder and photos/list.csv (path,id,camera,split) with the Market cameras."""
    out.mkdir()
    rows = [('path', 'id', 'camera', 'split')]
    for split, sub in (('train', 'bounding_box_train'), ('query', 'query'), ('gallery', 'bounding_box_test')):
        for src in sorted((market / sub).iterdir()):
            pid, cam = parse_market_name(src.name)
            shutil.copy(src, out / f'{split}_{src.name}')
            rows.append((f'{split}_{src.name}', str(pid), f'cam{cam}', split))
    with open(out / 'list.csv', 'w', newline='') as f:
        csv.writer(f).writerows(rows)
    return out / 'list.csv'


def prepare_argv(name, source, out, *extra):
    if name == 'custom':
        return ['--custom', str(source), '--pattern', r'^(?P<id>[^/]+)/', '--save_path', str(out), *extra]
    if name == 'csv':
        return ['--csv', str(source), '--save_path', str(out), *extra]
    flags = ['--dataset', name] if name in ('duke', 'cuhk03') else []   # the others are detected
    return [*flags, '--download_path', str(source), '--save_path', str(out), *extra]


def snapshot(source):
    """{path: (size, mtime)} of everything under the raw folder (or beside the CSV file)."""
    folder = source.parent if source.is_file() else source
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob('*')}


def table(prepared):
    with open(prepared / 'images.csv', newline='') as f:
        return list(csv.DictReader(f))


def train_run(data_dir, model_dir, name):
    opts = recipe.build_parser().parse_args(
        ['--name', name, '--data_dir', str(data_dir), '--model_dir', str(model_dir), '--backbone', 'resnet18',
         '--scratch', *SIZE, '--batchsize', '16', '--num_workers', '0', '--total_epoch', '1', '--lr', '0.01'])
    history = trainer.run_training(opts)
    assert len(history['train_loss']) == 1 and np.isfinite(history['train_loss'][0])
    return model_dir, name


def run_test_py(run, test_dir, result):
    model_dir, name = run
    opts = T.build_parser().parse_args(['--name', name, '--model_dir', str(model_dir), '--test_dir', str(test_dir),
                                        '--num_workers', '0', '--result', str(result)])
    return extract.run_test(opts)['single']


def expected_from_raw(name, source, prepared):
    """{split: sorted [(label, camera or None)]} recomputed from the raw set's names and lists, without the
    layouts' readers."""
    def market_style(folder):
        return sorted((int(p.name.split('_')[0]), int(re.match(r'^-?\d+_c(\d+)', p.name).group(1)))
                      for p in folder.iterdir())
    if name in ('duke', 'cuhk03', 'veri'):
        base = source / 'detected' if name == 'cuhk03' else source
        q, g = {'duke': ('query', 'bounding_box_test'), 'cuhk03': ('query', 'bounding_box_test'),
                'veri': ('image_query', 'image_test')}[name]
        return {'query': market_style(base / q), 'gallery': market_style(base / g)}
    if name == 'msmt17':
        def listed(list_name):
            lines = (source / list_name).read_text().split('\n')
            return sorted((int(label), int(path.split('/')[-1].split('_')[2]))
                          for path, label in (line.split() for line in lines if line))
        return {'query': listed('list_query.txt'), 'gallery': listed('list_gallery.txt'),
                'val': listed('list_val.txt')}
    if name == 'cub':
        test = sorted((int(d.name[:3]), None) for d in (source / 'images').iterdir() if int(d.name[:3]) > 100
                      for _ in d.iterdir())
        return {'query': test, 'gallery': test}
    if name == 'vehicleid':
        lines = (source / 'train_test_split' / 'test_list_800.txt').read_text().split()
        ids = sorted(int(v) for v in lines[1::2])
        return {'query+gallery': [(i, None) for i in ids], 'gallery': sorted((i, None) for i in set(ids))}
    if name == 'viper':
        return {'query': sorted((int(r['label']), 1) for r in table(prepared) if r['split'] == 'query'),
                'gallery': sorted((int(r['label']), 2) for r in table(prepared) if r['split'] == 'query')}
    if name == 'custom':
        return {s: sorted((p.parent.name, None) for p in (source / s).rglob('*.jpg')) for s in ('query', 'gallery')}
    # csv: cameras named cam1, cam2, ... are numbered 1, 2, ... in sorted order of the names
    with open(source, newline='') as f:
        rows = list(csv.DictReader(f))
    number = {c: i for i, c in enumerate(sorted({r['camera'] for r in rows}), 1)}
    return {s: sorted((int(r['id']), number[r['camera']]) for r in rows if r['split'] == s) for s in ('query', 'gallery')}


def observed(prepared, split, name):
    rows = [r for r in table(prepared) if r['split'] == split]
    cam_known = name not in ('cub', 'vehicleid', 'custom')
    if name == 'custom':
        return sorted((r['id'], None) for r in rows)
    return sorted((int(r['label']), int(r['camera']) if cam_known else None) for r in rows)


@pytest.fixture(scope='module')
def market_run(tiny_prepared, tmp_path_factory):
    """One 1-epoch run trained on the tiny Market set, tested below on every other layout (cross-dataset)."""
    return train_run(tiny_prepared, tmp_path_factory.mktemp('runs'), 'market')


@pytest.mark.parametrize('name', LAYOUTS + ('custom', 'csv'))
def test_layout_prepare_train_test_evaluate(name, raw, market_run, tmp_path, capsys):
    source = raw(name)
    prepared = tmp_path / 'pytorch'
    before = snapshot(source)
    prepare.main(prepare_argv(name, source, prepared))
    prepare.main(prepare_argv(name, source, prepared))   # a re-run replaces its own output
    assert snapshot(source) == before                    # the raw set is only read
    printed = capsys.readouterr().out
    assert f'({name})' in printed
    rows = table(prepared)
    # the table lists exactly the files written, and each split's (label, camera) is what the raw set says
    written = sorted(str(p.relative_to(prepared)) for p in prepared.rglob('*') if p.is_file() and p.parent != prepared)
    assert sorted(r['path'] for r in rows) == written
    for split, want in expected_from_raw(name, source, prepared).items():
        if split == 'query+gallery':
            got = sorted(observed(prepared, 'query', name) + observed(prepared, 'gallery', name))
        else:
            got = observed(prepared, split, name)
        assert got == want, split
    test_ids = {r['id'] for r in rows if r['split'] in ('query', 'gallery')}
    if name != 'msmt17':   # MSMT17 numbers train and test people from 0 each
        assert not test_ids & {r['id'] for r in rows if r['split'] == 'train_all'} - {'0000', '-1'}

    # this layout's own 1-epoch run; on Duke also the Market run (cross-dataset, as README shows)
    runs = [train_run(prepared, tmp_path / 'model', name)] + ([market_run] if name == 'duke' else [])
    for run in runs:
        result = tmp_path / f'{run[1]}.mat'
        res = run_test_py(run, prepared, result)
        mat = scipy.io.loadmat(result)
        images = list_reid_images(prepared / 'query')
        assert mat['query_label'][0].tolist() == [label for _, label, _ in images]
        assert mat['query_cam'][0].tolist() == [cam for _, _, cam in images]
        assert res['n_valid'] + res['n_skipped'] == len(images) and res['n_valid'] > 0
        capsys.readouterr()
        evaluate_gpu.main(['--result', str(result)])
        lines = capsys.readouterr().out.split('\n')
        assert lines[:2] == metrics.format_result(res).split('\n')
    opts = (tmp_path / 'model' / name / 'opts.yaml').read_text()
    assert 'h: 32' in opts and 'w: 16' in opts


def brute_force(qf, ql, qc, gf, gl, gc):
    """Rank@1 and Market mAP with plain Python: junk = id -1, or the query's id AND camera."""
    rank1, aps, n = 0, [], 0
    for i in range(len(qf)):
        order = sorted(range(len(gf)), key=lambda j: (-float(np.dot(qf[i], gf[j])), j))
        order = [j for j in order if gl[j] != -1 and not (gl[j] == ql[i] and gc[j] == qc[i])]
        hits = [gl[j] == ql[i] for j in order]
        if not any(hits):
            continue
        n += 1
        rank1 += hits[0]
        found, ap, prev = 0, 0.0, 1.0
        good = sum(hits)
        for r, h in enumerate(hits, 1):
            if h:
                found += 1
                ap += (prev + found / r) / 2 / good
            prev = found / r
        aps.append(ap)
    return rank1 / n, float(np.mean(aps)), n


def unit_rows(rng, n, dim=8):
    f = rng.standard_normal((n, dim)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def test_no_camera_query_equals_gallery_excludes_only_the_query_itself():
    """CUB's protocol with the unique-camera rule: the brute force removes only index i (itself) by position."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(101, 109), 4)
    cams = -(np.arange(len(labels)) + 1)
    f = unit_rows(rng, len(labels))
    res = metrics.compute_cmc_map(f, labels, cams, f, labels, cams, device='cpu')
    rank1, aps = 0, []
    for i in range(len(f)):
        order = [j for j in sorted(range(len(f)), key=lambda j: (-float(f[i] @ f[j]), j)) if j != i]
        hits = [labels[j] == labels[i] for j in order]
        rank1 += hits[0]
        precision = [sum(hits[:r + 1]) / (r + 1) for r in range(len(hits)) if hits[r]]
        aps.append(np.mean(precision))
    assert res['n_skipped'] == 0
    assert res['cmc'][0] == pytest.approx(rank1 / len(f))
    assert res['mAP_standard'] == pytest.approx(np.mean(aps))
    # and the query itself would be the first hit if it were not excluded: the rule did something
    same = metrics.compute_cmc_map(f, labels, np.ones_like(cams), f, labels, np.ones_like(cams) * 2, device='cpu')
    assert same['cmc'][0] == 1.0


@pytest.mark.precision
def test_cub_result_excludes_each_query_own_image(raw, market_run, tmp_path, capsys):
    prepared = tmp_path / 'cub'
    prepare.main(prepare_argv('cub', raw('cub'), prepared))
    res = run_test_py(market_run, prepared, tmp_path / 'cub.mat')
    r = evaluate_gpu.load_result(tmp_path / 'cub.mat')
    assert np.array_equal(r.query_label, r.gallery_label) and np.array_equal(r.query_cam, r.gallery_cam)
    assert len(set(r.query_cam.tolist())) == len(r.query_cam) and r.query_cam.max() < 0
    rank1, mean_ap, n = brute_force(*r)
    assert n == len(r.query_label) == res['n_valid']
    assert res['cmc'][0] == pytest.approx(rank1) and res['mAP'] == pytest.approx(mean_ap)
    assert res['cmc'][0] < 1.0   # the query's own image (score 1) was not counted as a hit
    import demo   # demo.py leaves the query's own image out of its top 10 too
    capsys.readouterr()
    demo.main(['--query_index', '0', '--test_dir', str(prepared), '--result', str(tmp_path / 'cub.mat'),
               '--output', str(tmp_path / 'show.png')])
    lines = capsys.readouterr().out.split('\n')
    own = Path(lines[0].split(': ', 1)[1].split(' (id')[0]).name
    shown = [Path(line.split()[-1]).name for line in lines[1:11]]
    assert len(shown) == 10 and own not in shown and 'camera' not in lines[0]


def independent_draw(labels, seed):
    """Per id, the image with the smallest uniform key of default_rng(seed) is the gallery image."""
    key = np.random.default_rng(seed).random(len(labels))
    best = {}
    for i, (label, k) in enumerate(zip(labels, key)):
        if label not in best or k < key[best[label]]:
            best[label] = i
    return set(best.values())


def test_vehicleid_trials_mean_and_std(raw, market_run, tmp_path, capsys):
    prepared = tmp_path / 'vid'
    prepare.main(prepare_argv('vehicleid', raw('vehicleid'), prepared))
    first = run_test_py(market_run, prepared, tmp_path / 'vid.mat')
    r = evaluate_gpu.load_result(tmp_path / 'vid.mat')
    # pool and order by source path: the table's camera -(k+1) numbers the files in that order
    f = np.concatenate([r.query_f, r.gallery_f])
    labels = np.concatenate([r.query_label, r.gallery_label])
    cams = np.concatenate([r.query_cam, r.gallery_cam])
    order = sorted(range(len(cams)), key=lambda i: -cams[i])
    f, labels, cams = f[order], labels[order], cams[order]
    per_trial = []
    for seed in range(3):
        g = independent_draw(labels.tolist(), seed)
        q = [i for i in range(len(labels)) if i not in g]
        g = sorted(g)
        per_trial.append(brute_force(f[q], labels[q], cams[q], f[g], labels[g], cams[g])[:2])
    capsys.readouterr()
    values, mean, std = evaluate_gpu.main(['--result', str(tmp_path / 'vid.mat'), '--trials', '3'])
    lines = capsys.readouterr().out.split('\n')
    assert values['rank1'][0] == pytest.approx(first['cmc'][0])   # trial 0 is the split prepare.py wrote
    for k, key in enumerate(('rank1', 'mAP')):
        want = [t[k] for t in per_trial]
        assert values[key] == pytest.approx(want)
        assert mean[key] == pytest.approx(statistics.fmean(want)) and std[key] == pytest.approx(statistics.pstdev(want))
    assert len(set(values['rank1'].tolist()) | set(values['mAP'].tolist())) > 2   # the draws differ
    assert lines[0] == 'Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f' % (mean['rank1'], mean['rank5'], mean['rank10'],
                                                                  mean['mAP'])
    assert lines[1].startswith('std Rank@1:%f' % std['rank1']) and '3 trials' in lines[1]
    saved = scipy.io.loadmat(tmp_path / 'vid_trials.mat')
    assert saved['mAP'][0] == pytest.approx(values['mAP']) and float(saved['std_rank1'][0, 0]) == pytest.approx(std['rank1'])
    with pytest.raises(SystemExit, match='cameras repeat'):   # a layout with cameras has no gallery draws
        scipy.io.savemat(tmp_path / 'cams.mat', {k: v for k, v in scipy.io.loadmat(tmp_path / 'vid.mat').items()
                                                 if not k.startswith('_')} | {'query_cam': np.ones(len(r.query_cam))})
        evaluate_gpu.main(['--result', str(tmp_path / 'cams.mat'), '--trials', '2'])


def test_viper_splits_are_seeded_and_results_average(raw, tmp_path, capsys):
    source = raw('viper')
    splits = [layouts.plan_splits('viper', source, {'split': k}) for k in (0, 1, 0)]
    test_people = [sorted(r.id for r in s['query']) for s in splits]
    assert test_people[0] == test_people[2] != test_people[1]
    assert len(test_people[0]) == len({r.id for r in splits[0]['train_all']}) == 12
    rng = np.random.default_rng(5)
    files, want = [], []
    for k in range(3):   # three results, as three splits' test.py would write them
        ql = np.arange(12)
        data = {'query_f': unit_rows(rng, 12), 'query_label': ql, 'query_cam': np.ones(12, int),
                'gallery_f': unit_rows(rng, 12), 'gallery_label': ql, 'gallery_cam': np.full(12, 2)}
        files.append(str(tmp_path / f'viper{k}.mat'))
        scipy.io.savemat(files[-1], data)
        want.append(brute_force(data['query_f'], ql, data['query_cam'], data['gallery_f'], ql, data['gallery_cam']))
    capsys.readouterr()
    values, mean, std = evaluate_gpu.main(['--result', *files])
    assert values['rank1'] == pytest.approx([w[0] for w in want])
    assert mean['mAP'] == pytest.approx(statistics.fmean(w[1] for w in want))
    assert std['mAP'] == pytest.approx(statistics.pstdev(w[1] for w in want))


@pytest.fixture
def custom_copy(raw, tmp_path):
    return Path(shutil.copytree(raw('custom'), tmp_path / 'photos'))


def test_custom_errors_name_the_first_bad_file_and_count(custom_copy):
    base = ['--custom', str(custom_copy), '--pattern', r'^p(?P<id>\d+)/']
    loose = [custom_copy / 'gallery' / 'IMG_1.jpg', custom_copy / 'gallery' / 'IMG_2.jpg']
    for p in loose:
        shutil.copy(next((custom_copy / 'query').rglob('*.jpg')), p)
    total = len(list((custom_copy / 'gallery').rglob('*.jpg')))
    expect_exit(base, loose[0], f'2 of {total} files do not', '--pattern')
    for p in loose:
        p.unlink()
    expect_exit(['--custom', str(custom_copy), '--pattern', r'(?P<who>\d+)'], 'named group id')
    expect_exit(['--custom', str(custom_copy)], '--pattern')
    # an id in train and in the gallery
    person = next((custom_copy / 'query').iterdir()).name
    shutil.copytree(custom_copy / 'query' / person, custom_copy / 'train' / person)
    expect_exit(base, f'id {person[1:]}', 'train')
    shutil.rmtree(custom_copy / 'train' / person)
    # an empty split
    shutil.rmtree(custom_copy / 'query')
    (custom_copy / 'query').mkdir()
    expect_exit(base, custom_copy / 'query', 'no images')
    assert not (custom_copy / 'pytorch').exists()


def test_unmatched_queries_are_warned_and_counted(custom_copy, capsys):
    person = sorted((custom_copy / 'gallery').iterdir())[0]
    shutil.rmtree(person)
    n_query = len(list((custom_copy / 'query' / person.name).iterdir()))
    total = len(list((custom_copy / 'query').rglob('*.jpg')))
    prepare.main(['--custom', str(custom_copy), '--pattern', r'^(?P<id>[^/]+)/'])
    out = capsys.readouterr().out
    assert f'warning: {n_query} of {total} queries have no match' in out


def test_flattened_name_clashes_get_unique_deterministic_names(tmp_path):
    src = tmp_path / 'photos'
    image = synthetic.render_image(0, synthetic.plan_dataset('tiny')[0])
    for split, person in (('train', 'ann'), ('train', 'bob'), ('query', 'cy'), ('gallery', 'cy')):
        for day in ('mon', 'tue'):
            (src / split / person / day).mkdir(parents=True)
            image.save(src / split / person / day / '1.jpg')
    argv = ['--custom', str(src), '--pattern', r'^(?P<id>[^/]+)/(?P<cam>[^/]+)/']
    prepare.main(argv)
    names = sorted(p.name for p in (src / 'pytorch' / 'train_all' / 'ann').iterdir())
    assert names == ['ann_mon_1.jpg', 'ann_tue_1.jpg']
    first = sorted(r['path'] for r in table(src / 'pytorch'))
    prepare.main(argv)
    assert sorted(r['path'] for r in table(src / 'pytorch')) == first
    assert {r['camera'] for r in table(src / 'pytorch')} == {'1', '2'}   # 'mon', 'tue' numbered in sorted order


def test_csv_errors(raw, tmp_path):
    bad = tmp_path / 'bad.csv'
    bad.write_text('file,person\nx.jpg,1\n')
    expect_exit(['--csv', str(bad)], bad, 'path,id,camera,split')
    bad.write_text('path,id,camera,split\nmissing.jpg,1,,train\nother.jpg,2,,query\n')
    expect_exit(['--csv', str(bad)], tmp_path / 'missing.jpg', '2 missing')
    source = raw('csv')
    rows = [line for line in source.read_text().splitlines() if not line.endswith(',gallery')]
    no_gallery = tmp_path / 'no_gallery.csv'
    no_gallery.write_text('\n'.join(rows[:1] + [str(source.parent) + '/' + line for line in rows[1:]]) + '\n')
    expect_exit(['--csv', str(no_gallery)], 'no row with split gallery')
    bad.write_text('path,id,camera,split\nx.jpg,1,,test\n')
    expect_exit(['--csv', str(bad)], 'line 2', "'test'")


def test_layout_detection(raw, tmp_path):
    assert layouts.detect_layout(raw('msmt17')) == 'msmt17'
    assert layouts.detect_layout(raw('viper')) == 'viper'
    both = tmp_path / 'both'
    for sub in ('cam_a', 'cam_b', 'image', 'train_test_split'):
        (both / sub).mkdir(parents=True)
    expect_exit(['--download_path', str(both)], 'several layouts', 'vehicleid', 'viper', '--dataset')
    expect_exit(['--download_path', str(tmp_path)], 'no known dataset layout', '--dataset')


def test_list_reid_images_falls_back_to_names_without_the_table(tiny_prepared, tmp_path):
    copy = Path(shutil.copytree(tiny_prepared, tmp_path / 'p'))
    with_table = [(Path(p).name, pid, cam) for p, pid, cam in list_reid_images(copy / 'gallery')]
    (copy / 'images.csv').unlink()
    assert [(Path(p).name, pid, cam) for p, pid, cam in list_reid_images(copy / 'gallery')] == with_table
    assert {-1, 0} <= {pid for _, pid, _ in with_table}


# ---- each layout's reading rules, against the raw files parsed here with the dataset's own definition ----

def names_by_split(splits):
    """{split: sorted [(file name, id, camera)]} of plan_splits' Records."""
    return {s: sorted((Path(r.path).name, r.id, r.cam) for r in items) for s, items in splits.items()}


def test_cuhk03_reads_the_kind_cuhk03_names_and_detected_by_default(raw, tmp_path):
    source = Path(shutil.copytree(raw('cuhk03'), tmp_path / 'cuhk03-np'))
    # make the two kinds differ (the generated ones hold the same images): drop a different gallery file from each
    for kind, k in (('detected', 0), ('labeled', 1)):
        sorted((source / kind / 'bounding_box_test').iterdir())[k].unlink()

    def want(kind):   # CUHK03-NP: each kind is a Market layout of its own; names 0001_c1_72.png
        out = {}
        for split, sub in (('train_all', 'bounding_box_train'), ('query', 'query'), ('gallery', 'bounding_box_test')):
            out[split] = sorted(n for n in os.listdir(source / kind / sub))
        return out
    assert want('detected') != want('labeled')
    for argv, kind in ((['--cuhk03', 'labeled'], 'labeled'), (['--dataset', 'cuhk03'], 'detected')):
        out = tmp_path / kind
        prepare.main([*argv, '--download_path', str(source), '--save_path', str(out)])
        got = {split: sorted(p.name for p in (out / split).rglob('*.png')) for split in want(kind)}
        assert got == want(kind), kind
        # the new protocol: the download's own train/test people (767/700 on the real set), disjoint
        train_ids = {n.split('_')[0] for n in want(kind)['train_all']}
        test_ids = {n.split('_')[0] for n in want(kind)['query'] + want(kind)['gallery']}
        assert {d.name for d in (out / 'train_all').iterdir()} == train_ids and not train_ids & test_ids
        assert {d.name for d in (out / 'gallery').iterdir()} == {n.split('_')[0] for n in want(kind)['gallery']}


def msmt_list(source, name):
    """[(file name, id, camera)] of an MSMT17 list file: `relative/path label`, camera = the name's 3rd field."""
    out = []
    for line in (source / name).read_text().splitlines():
        if line.strip():
            path, label = line.split()
            out.append((path.split('/')[-1], f'{int(label):04d}', int(path.split('/')[-1].split('_')[2])))
    return sorted(out)


def test_msmt17_val_is_list_val_and_train_all_is_train_plus_val(raw, tmp_path):
    source = raw('msmt17')
    got = names_by_split(layouts.plan_splits('msmt17', source))
    train, val = msmt_list(source, 'list_train.txt'), msmt_list(source, 'list_val.txt')
    assert got['val'] == val and got['train'] == train and got['train_all'] == sorted(train + val)
    assert got['query'] == msmt_list(source, 'list_query.txt')
    assert got['gallery'] == msmt_list(source, 'list_gallery.txt')
    assert len({c for _, _, c in got['train_all'] + got['gallery']}) > 9   # cameras past 9 are parsed whole
    # a list_train.txt that also lists the val images: they stay out of train (no leak into what is trained on)
    copy = Path(shutil.copytree(source, tmp_path / 'msmt'))
    with open(copy / 'list_train.txt', 'a') as f:
        f.write((copy / 'list_val.txt').read_text())
    again = names_by_split(layouts.plan_splits('msmt17', copy))
    assert again['train'] == train and again['val'] == val and again['train_all'] == sorted(train + val)


def test_veri_query_gallery_folders_and_three_digit_cameras(raw):
    source = raw('veri')

    def listed(sub):   # VeRi-776: 0001_c001_00016450_0.jpg = vehicle 0001, camera 001 (of 20)
        out = []
        for name in os.listdir(source / sub):
            m = re.match(r'^(\d{4})_c(\d{3})_\d{8}_\d\.jpg$', name)
            assert m, name
            out.append((name, m[1], int(m[2])))
        return sorted(out)
    got = names_by_split(layouts.plan_splits('veri', source))
    assert got['train_all'] == listed('image_train')
    assert got['query'] == listed('image_query') and got['gallery'] == listed('image_test')
    assert max(c for _, _, c in got['gallery'] + got['train_all']) > 9


def test_vehicleid_test_size_picks_the_list_and_the_gallery_holds_one_image_per_id(raw, tmp_path):
    source = raw('vehicleid')

    def listed(name):   # `image_name vehicle_id`, the image in image/<name>.jpg
        pairs = [line.split() for line in (source / 'train_test_split' / name).read_text().splitlines() if line]
        return sorted((f'{n}.jpg', pid) for n, pid in pairs)
    sizes = {size: listed(f'test_list_{size}.txt') for size in (800, 1600, 2400)}
    assert len({len(v) for v in sizes.values()}) == 3
    for size, want in sizes.items():
        s = layouts.plan_splits('vehicleid', source, {'test_size': size})
        query = sorted((Path(r.path).name, r.id) for r in s['query'])
        gallery = sorted((Path(r.path).name, r.id) for r in s['gallery'])
        assert sorted(query + gallery) == want, size
        per_id = {}
        for _, pid in gallery:
            per_id[pid] = per_id.get(pid, 0) + 1
        assert per_id == {pid: 1 for _, pid in want}, size   # exactly one image of every test id in the gallery
        assert sorted((Path(r.path).name, r.id) for r in s['train_all']) == listed('train_list.txt')
    # through prepare.py: --test_size reaches the reader, and the marker tells test.py the protocol draws galleries
    out = tmp_path / 'vid'
    prepare.main(['--download_path', str(source), '--test_size', '1600', '--save_path', str(out)])
    rows = table(out)
    assert sorted((Path(r['path']).name, r['id']) for r in rows if r['split'] in ('query', 'gallery')) == sizes[1600]
    cams = [int(r['camera']) for r in rows]
    assert max(cams) < 0 and len(set(cams)) == len({Path(r['path']).name for r in rows})   # no cameras: one each
    info = json.loads((out / '.prepare_reid.json').read_text())
    assert info['layout'] == 'vehicleid' and info['trials'] == 'gallery' and info['input_size'] == [256, 256]


def test_viper_split_is_half_the_pairs_query_cam_a_gallery_cam_b(raw):
    source = raw('viper')
    number = {sub: {re.match(r'^(\d+)_', n)[1]: n for n in os.listdir(source / sub)} for sub in ('cam_a', 'cam_b')}
    people = sorted(number['cam_a'])
    assert people == sorted(number['cam_b'])
    for k in (0, 3):
        s = layouts.plan_splits('viper', source, {'split': k})
        test = sorted(r.id for r in s['query'])
        train = sorted({r.id for r in s['train_all']})
        assert len(test) == len(train) == len(people) // 2 and sorted(test + train) == people
        assert sorted((Path(r.path).parent.name, Path(r.path).name, r.cam) for r in s['query']) == \
            sorted(('cam_a', number['cam_a'][n], 1) for n in test)
        assert sorted((Path(r.path).parent.name, Path(r.path).name, r.cam) for r in s['gallery']) == \
            sorted(('cam_b', number['cam_b'][n], 2) for n in test)
        assert sorted((Path(r.path).name, r.cam) for r in s['train_all']) == sorted(
            (number[sub][n], cam) for n in train for sub, cam in (('cam_a', 1), ('cam_b', 2)))


def test_cub_classes_1_to_100_train_101_to_200_test_query_is_gallery(tiny_market, tmp_path):
    source = tmp_path / 'CUB_200_2011'
    images = sorted((tiny_market / 'query').iterdir())
    for k, folder in enumerate(('001.Black_footed_Albatross', '100.Brown_Pelican', '101.White_Pelican',
                                '200.Common_Yellowthroat')):
        (source / 'images' / folder).mkdir(parents=True)
        for j in range(2):
            shutil.copy(images[2 * k + j], source / 'images' / folder / f'{folder[4:]}_{j}.jpg')
    s = layouts.plan_splits('cub', source)
    assert sorted({r.id for r in s['train_all']}) == ['001', '100']
    test = sorted((Path(r.path).name, r.id) for r in s['query'])
    assert test == sorted((f'{f[4:]}_{j}.jpg', f[:3]) for f in ('101.White_Pelican', '200.Common_Yellowthroat')
                          for j in range(2))
    # query = gallery, image for image, with the same (own, negative) camera: only the query itself is junk
    assert sorted((r.path, r.cam) for r in s['query']) == sorted((r.path, r.cam) for r in s['gallery'])
    assert len({r.cam for r in s['query']}) == len(s['query']) and max(r.cam for r in s['query']) < 0


def test_custom_pattern_is_searched_in_the_path_below_the_split_folder(tiny_market, tmp_path):
    src = tmp_path / 'photos'
    want = {}
    for split, sub in (('train_all', 'bounding_box_train'), ('query', 'query'), ('gallery', 'bounding_box_test')):
        folder = {'train_all': 'train'}.get(split, split)
        want[split] = []
        for k, path in enumerate(sorted((tiny_market / sub).iterdir())):
            m = re.match(r'^(\d{4})_c(\d)s', path.name)
            if m is None or m[1] == '0000':   # junk and distractors left out of "my photos"
                continue
            (src / folder / f'day{k % 2}').mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / folder / f'day{k % 2}' / path.name)
            want[split].append((path.name, m[1], m[2]))
    # README's example pattern, unanchored: it is found after the day*/ sub-folder
    s = layouts.plan_splits('custom', src, {'pattern': r'(?P<id>\d+)_c(?P<cam>\d+)'})
    for split in want:
        assert sorted((Path(r.path).name, r.id, str(r.cam)) for r in s[split]) == sorted(want[split]), split


def test_csv_paths_are_relative_to_its_folder_and_empty_cameras_are_unique(tiny_market, tmp_path):
    photos = tmp_path / 'photos'
    (photos / 'shots').mkdir(parents=True)
    rows, want = ['path,id,camera,split'], []
    for split, sub in (('train', 'bounding_box_train'), ('query', 'query'), ('gallery', 'bounding_box_test')):
        people = [p for p in sorted((tiny_market / sub).iterdir()) if p.name.split('_')[0] not in ('-1', '0000')]
        for k, path in enumerate(people[:8]):
            pid = path.name.split('_')[0]
            shutil.copy(path, photos / 'shots' / f'{split}_{path.name}')
            cam = '' if k % 2 else f'cam{k % 3}'   # every other image without a camera
            rows.append(f'shots/{split}_{path.name},{pid},{cam},{split}')
            want.append((split.replace('train', 'train_all'), f'{split}_{path.name}', pid, cam))
    (photos / 'list.csv').write_text('\n'.join(rows) + '\n')
    prepare.main(['--csv', str(photos / 'list.csv'), '--save_path', str(tmp_path / 'out')])
    got = [r for r in table(tmp_path / 'out') if r['split'] in ('train_all', 'query', 'gallery')]
    assert sorted((r['split'], Path(r['path']).name, r['id']) for r in got) == sorted(w[:3] for w in want)
    named = sorted({w[3] for w in want if w[3]})
    camera = {(r['split'], Path(r['path']).name): int(r['camera']) for r in got}
    for split, name, _, cam in want:
        if cam:   # named cameras numbered 1, 2, ... in sorted order of the names
            assert camera[split, name] == named.index(cam) + 1
    unknown = [camera[w[0], w[1]] for w in want if not w[3]]
    assert unknown and max(unknown) < 0 and len(set(unknown)) == len(unknown)
