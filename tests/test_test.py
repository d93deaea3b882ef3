"""Tests of test.py: checkpoint choice, --ms, the .mat contract (keys, dtypes, shapes, ids from names), features
recomputed independently, --multi, and one end-to-end run of prepare.py -> train.py -> test.py as a user types it.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from reid.data.images import parse_market_name
from reid.runs import load_checkpoint, load_opts

from conftest import build, hand_transform, library_messages, load_test_cli, train_tiny_run
from reid.evaluation import extract
from reid.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]


T = load_test_cli()


@pytest.fixture(scope='module')
def trained_run(tiny_prepared, tmp_path_factory):
    """A 1-epoch resnet18 run on the tiny set: (model_dir, name)."""
    return train_tiny_run(tiny_prepared, tmp_path_factory.mktemp('runs'), (32, 16), 1)


def run_test(trained_run, tiny_prepared, tmp_path, *extra):
    model_dir, name = trained_run
    opts = T.build_parser().parse_args(
        ['--name', name, '--model_dir', str(model_dir), '--test_dir', str(tiny_prepared), '--num_workers', '0',
         '--batchsize', '32', '--result', str(tmp_path / 'pytorch_result.mat'), *extra])
    with library_messages() as lines:
        results = extract.run_test(opts)
    return results, '\n'.join(lines)


def names_in_folder_order(folder):
    """File names of a prepared split: sub-folders sorted by name, files sorted within each."""
    return [os.path.join(folder, d, f) for d in sorted(os.listdir(folder)) for f in sorted(os.listdir(folder / d))]


def test_which_epoch_names_the_checkpoint_file():
    assert RunFolder('m/r').checkpoint('last') == Path('m/r/net_last.pth')
    assert RunFolder('m/r').checkpoint('init') == Path('m/r/net_init.pth')
    assert RunFolder('m/r').checkpoint('9') == Path('m/r/net_009.pth')
    with pytest.raises(ValueError, match='--which_epoch best'):
        RunFolder('m/r').checkpoint('best')


def test_a_run_saved_under_the_earlier_snapshot_names_answers_the_originals_epoch_numbers(tmp_path):
    # Earlier runs kept the weights after 10 epochs as net_009.pth; the original (and now this toolkit) net_010.pth.
    for name in ('net_009.pth', 'net_019.pth', 'net_last.pth'):
        (tmp_path / name).write_bytes(b'')
    run = RunFolder(tmp_path)
    assert run.existing_checkpoint('10') == tmp_path / 'net_009.pth'
    assert run.existing_checkpoint('20') == tmp_path / 'net_019.pth'
    assert run.existing_checkpoint('9') == tmp_path / 'net_009.pth'
    with pytest.raises(ValueError, match='net_030.pth: checkpoint not found'):
        run.existing_checkpoint('30')
    (tmp_path / 'net_010.pth').write_bytes(b'')   # a file of the new name wins
    assert run.existing_checkpoint('10') == tmp_path / 'net_010.pth'


def test_ms_values_are_area_ratios():
    assert extract.parse_scales('1,1.1') == [1.0, pytest.approx(math.sqrt(1.1))]
    for bad in ('', 'a,b', '1,-2'):
        with pytest.raises(ValueError, match='--ms'):
            extract.parse_scales(bad)


def test_result_mat_keys_dtypes_shapes_and_ids_from_file_names(trained_run, tiny_prepared, tmp_path):
    results, printed = run_test(trained_run, tiny_prepared, tmp_path)
    mat = scipy.io.loadmat(tmp_path / 'pytorch_result.mat')
    gallery = names_in_folder_order(tiny_prepared / 'gallery')
    query = names_in_folder_order(tiny_prepared / 'query')
    assert mat['gallery_f'].dtype == np.float32 and mat['query_f'].dtype == np.float32
    assert mat['gallery_f'].shape == (len(gallery), 512) and mat['query_f'].shape == (len(query), 512)
    for key, names, part in (('gallery_label', gallery, 0), ('gallery_cam', gallery, 1),
                             ('query_label', query, 0), ('query_cam', query, 1)):
        assert mat[key].shape == (1, len(names))
        assert mat[key][0].tolist() == [parse_market_name(n)[part] for n in names], key
    assert {-1, 0} <= set(mat['gallery_label'][0].tolist())  # junk and distractors keep their ids
    np.testing.assert_allclose(np.linalg.norm(mat['gallery_f'], axis=1), 1.0, rtol=1e-5)
    assert 'Rank@1:' in printed and 'mAP:' in printed
    assert results['single']['n_valid'] + results['single']['n_skipped'] == len(query)
    assert 'Rank@1:' in (trained_run[0] / trained_run[1] / 'result.txt').read_text()


@pytest.mark.precision
@pytest.mark.parametrize('precision', ['off', 'on'])
def test_features_match_an_independent_computation(trained_run, tiny_prepared, tmp_path, precision):
    """Rebuild the unfused network by hand and recompute a few rows in fp32: flip-sum over the original image at
    each scale (--ms area ratios -> sqrt), then L2. fp32 extraction equals it up to rounding; bf16 (what
    `--cpu_bf16 auto` extracts with on a CPU with native bf16; emulated elsewhere) is within cosine 0.999."""
    from PIL import Image
    run_test(trained_run, tiny_prepared, tmp_path, '--ms', '1,1.44', '--which_epoch', 'last', '--cpu_bf16', precision)
    mat = scipy.io.loadmat(tmp_path / 'pytorch_result.mat')
    model_dir, name = trained_run
    opts = load_opts(model_dir / name / 'opts.yaml')
    net = build(opts, opts['nclasses'], pretrained=False)
    net.load_state_dict(load_checkpoint(model_dir / name / 'net_last.pth'))
    net.eval()
    query = names_in_folder_order(tiny_prepared / 'query')
    for i in (0, len(query) - 1):
        with Image.open(query[i]) as img:
            x = hand_transform(opts['h'], opts['w'])(img.convert('RGB'))[None]
        with torch.no_grad():
            big = F.interpolate(x, scale_factor=1.2, mode='bicubic', align_corners=False)
            f = sum(net(v, return_feature=True) for v in (x, x.flip(3), big, big.flip(3)))
        ref = f.div(torch.norm(f, p=2, dim=1, keepdim=True))[0].numpy()   # the original's ff.div(fnorm)
        if precision == 'off':
            np.testing.assert_allclose(mat['query_f'][i], ref, atol=2e-4)
        else:
            assert 0.999 <= float(mat['query_f'][i] @ ref) and not np.allclose(mat['query_f'][i], ref, atol=2e-4)


def test_multi_query_mat_and_untrained_network(trained_run, tiny_prepared, tmp_path):
    results, printed = run_test(trained_run, tiny_prepared, tmp_path, '--multi', '--which_epoch', 'init',
                                '--cpu_bf16', 'off')   # rows compared in fp32 below
    multi = scipy.io.loadmat(tmp_path / 'multi_query.mat')
    names = names_in_folder_order(tiny_prepared / 'multi-query')
    assert multi['mquery_f'].shape == (len(names), 512) and multi['mquery_f'].dtype == np.float32
    assert multi['mquery_label'][0].tolist() == [parse_market_name(n)[0] for n in names]
    assert multi['mquery_cam'][0].tolist() == [parse_market_name(n)[1] for n in names]
    assert 'multi:Rank@1:' in printed and 'net_init.pth' in printed
    assert set(results) == {'single', 'multi'}
    # the rows are the multi-query images' own features: the untrained network rebuilt by hand, flip-summed, L2
    model_dir, name = trained_run
    opts = load_opts(model_dir / name / 'opts.yaml')
    net = build(opts, opts['nclasses'], pretrained=False)
    net.load_state_dict(load_checkpoint(model_dir / name / 'net_init.pth'))
    net.eval()
    from PIL import Image
    for i in (0, len(names) - 1):
        with Image.open(names[i]) as img:
            x = hand_transform(opts['h'], opts['w'])(img.convert('RGB'))[None]
        with torch.no_grad():
            f = (net(x, return_feature=True) + net(x.flip(3), return_feature=True))[0].double().numpy()
        np.testing.assert_allclose(multi['mquery_f'][i], f / math.sqrt(float(f @ f)), atol=2e-4)


def brute_force_rank1_and_map(mat):
    """Rank@1 and the original's mAP, one query at a time: cosine scores (features are unit vectors), gallery
    sorted by score (ties in gallery order), junk (id -1, or the query's id seen by its own camera) dropped, AP
    by the original's compute_mAP (trapezoid of precision before and at each match); queries without a match
    skipped."""
    qf, gf = mat['query_f'].astype(np.float64), mat['gallery_f'].astype(np.float64)
    ql, qc, gl, gc = (mat[k][0].tolist() for k in ('query_label', 'query_cam', 'gallery_label', 'gallery_cam'))
    hits, aps = [], []
    for i in range(len(qf)):
        scores = [float(qf[i] @ gf[j]) for j in range(len(gf))]
        order = sorted(range(len(gf)), key=lambda j: -scores[j])
        kept = [j for j in order if gl[j] != -1 and not (gl[j] == ql[i] and gc[j] == qc[i])]
        good_rows = [r for r, j in enumerate(kept) if gl[j] == ql[i]]
        if not good_rows:
            continue
        hits.append(1.0 if good_rows[0] == 0 else 0.0)
        ap = 0.0
        for k, row in enumerate(good_rows):
            precision = (k + 1) / (row + 1)
            old_precision = k / row if row != 0 else 1.0
            ap += (old_precision + precision) / 2 / len(good_rows)
        aps.append(ap)
    return sum(hits) / len(hits), sum(aps) / len(aps)


def test_result_txt_gets_each_runs_lines_appended_with_the_metrics_of_its_mat(trained_run, tiny_prepared, tmp_path):
    """As the original (evaluate_gpu.py | tee -a model/<name>/result.txt): every test.py run appends its lines,
    earlier runs' lines stay; the Rank@1 and mAP it prints are those of the .mat it wrote, recomputed here."""
    result_txt = trained_run[0] / trained_run[1] / 'result.txt'
    before = result_txt.read_text() if result_txt.exists() else ''
    texts = []
    for epoch in ('last', 'init'):
        folder = tmp_path / epoch
        folder.mkdir()
        _, printed = run_test(trained_run, tiny_prepared, folder, '--which_epoch', epoch, '--backend', 'torch')
        mat = scipy.io.loadmat(folder / 'pytorch_result.mat')
        rank1, mean_ap = brute_force_rank1_and_map(mat)
        metrics = next(line for line in printed.splitlines() if line.startswith('Rank@1:'))
        fields = dict(item.split(':') for item in metrics.split())
        assert float(fields['Rank@1']) == pytest.approx(rank1, abs=2e-6), epoch
        assert float(fields['mAP']) == pytest.approx(mean_ap, abs=2e-6), epoch
        texts.append(printed[printed.index(f'{trained_run[1]} (net_{epoch}.pth, '):])   # the runtime notes not
    assert result_txt.read_text() == before + ''.join(text + '\n' for text in texts)


def test_missing_run_or_checkpoint_is_a_clear_error(trained_run, tiny_prepared, tmp_path):
    model_dir, name = trained_run
    with pytest.raises(SystemExit, match='opts.yaml not found'):
        T.main(['--name', 'nothing', '--model_dir', str(model_dir), '--test_dir', str(tiny_prepared)])
    with pytest.raises(SystemExit, match='net_049.pth: checkpoint not found'):
        T.main(['--name', name, '--model_dir', str(model_dir), '--test_dir', str(tiny_prepared),
                '--which_epoch', '49'])


def test_original_model_flags_are_accepted_and_checked(trained_run, tiny_prepared, tmp_path):
    results, _ = run_test(trained_run, tiny_prepared, tmp_path, '--linear_num', '512', '--stride', '2', '--bf16')
    assert results['single']['n_valid'] > 0
    with pytest.raises(ValueError, match='--PCB True: the run was trained with PCB=False'):
        run_test(trained_run, tiny_prepared, tmp_path, '--PCB')
    with pytest.raises(ValueError, match='--linear_num 256'):
        run_test(trained_run, tiny_prepared, tmp_path, '--linear_num', '256')
    with pytest.raises(ValueError, match='--backbone resnet34: the run was trained with backbone=resnet18'):
        run_test(trained_run, tiny_prepared, tmp_path, '--backbone', 'resnet34')


def test_end_to_end_as_a_user_types_it(tmp_path):
    """prepare.py (make + split) -> train.py -> test.py as subprocesses in a fresh folder; training lowers the
    loss and test.py writes pytorch_result.mat in the working directory and prints the result."""
    def run(*args):
        done = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=tmp_path, text=True,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    run('prepare.py', '--make-demo', 'raw', '--size', 'tiny')
    run('prepare.py', '--download_path', 'raw')
    run('train.py', '--name', 'e2e', '--data_dir', 'raw/pytorch', '--backbone', 'resnet18', '--scratch',
        '--h', '64', '--w', '32', '--pad', '4', '--batchsize', '8', '--lr', '0.01', '--total_epoch', '4',
        '--num_workers', '0')
    history = load_checkpoint(tmp_path / 'model' / 'e2e' / 'resume.pth')['history']
    assert history['train_loss'][-1] < history['train_loss'][0]
    printed = run('test.py', '--name', 'e2e', '--test_dir', 'raw/pytorch', '--num_workers', '0')
    assert 'Rank@1:' in printed and (tmp_path / 'pytorch_result.mat').is_file()


def test_the_evaluation_transform_is_pils_bicubic_resize_and_imagenet_normalisation(tiny_prepared):
    from PIL import Image
    from reid.data.transforms import eval_transform
    paths = names_in_folder_order(tiny_prepared / 'query')[:3]
    for path in paths:
        with Image.open(path) as img:
            for mode in ('RGB', 'L', 'RGBA'):   # test.py feeds any image as RGB
                picture = img.convert(mode)
                torch.testing.assert_close(eval_transform(64, 32)(picture.convert('RGB')),
                                           hand_transform(64, 32)(picture), atol=1e-6, rtol=0)
