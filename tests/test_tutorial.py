"""Runs every command of tutorial/README.md, and quickstart.sh, the way a newcomer types them.

For speed the data set is the tiny one and training lasts one epoch: the only edits to the commands are
`--size demo` -> `--size tiny`, `--total_epoch N` -> `--total_epoch 1`, `--query_index 777` -> `7` (the tiny
set has fewer queries) and the tracking clip's 150 frames -> 40. This machine is offline with no ImageNet
weights, so a train.py command that needs them must fail with the clear message; it is then re-run from scratch
with a small network so the next steps have a run.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = re.compile(r'^python (\w+\.py)')


def tutorial_commands():
    """Return the lines of the ```bash blocks of tutorial/README.md, in order."""
    text = (REPO / 'tutorial' / 'README.md').read_text()
    blocks = re.findall(r'```bash\n(.*?)```', text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def fast_version(command):
    command = command.replace('--size demo', '--size tiny').replace('--query_index 777', '--query_index 7')
    command = command.replace('--make-clip data/clip', '--make-clip data/clip --frames 40')
    return re.sub(r'--total_epoch \d+', '--total_epoch 1', command)


def run(command, cwd, env):
    script = SCRIPT.match(command)
    assert script, f'tutorial command is not `python <script>.py ...`: {command}'
    argv = [sys.executable, str(REPO / script.group(1))] + command.split()[2:]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def offline_env(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch_home'), MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    return env


def test_every_tutorial_command_runs(tiny_market, tmp_path, offline_env):
    commands = tutorial_commands()
    assert len(commands) >= 8
    work = tmp_path / 'work'
    work.mkdir()
    shutil.copytree(tiny_market, tmp_path / 'Market')  # the real-data section reads ../Market
    for command in map(fast_version, commands):
        done = run(command, work, offline_env)
        # --preset quick trains from scratch too; any other train.py command here needs ImageNet weights
        if command.startswith('python train.py') and not {'--scratch', 'quick'} & set(command.split()):
            assert done.returncode != 0 and 'ImageNet' in done.stderr + done.stdout, done.stderr[-2000:]
            done = run(command + ' --scratch --backbone resnet18 --h 64 --w 32 --total_epoch 1', work, offline_env)
        assert done.returncode == 0, f'{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}'
        if command.startswith('python test.py') or command.startswith('python evaluate_gpu.py'):
            assert re.search(r'Rank@1:[\d.]+ Rank@5:[\d.]+ Rank@10:[\d.]+ mAP:[\d.]+', done.stdout), done.stdout
            words = command.split()
            saved = words[words.index('--result') + 1] if '--result' in words else 'pytorch_result.mat'
            # what it printed is what its features give, counted here (re-ranked: test_rerank's dense reference)
            check_printed_metrics(done.stdout, work / saved, reranked='--rerank' in words)
        if command.startswith('python track.py'):
            the_tracks_are_written_and_scored(done.stdout, work, command.split())
    heatmap_mass_is_on_the_person(work, tmp_path / 'boxes')
    the_outputs_hold_what_they_should(work)


def check_printed_metrics(printed, result_mat, reranked):
    """The first Rank@1/mAP printed equal those of a plain sort of the saved features' cosine distances; with
    --rerank, the 'single query, re-ranked (k1=20 k2=6 lambda=0.3)' line equals those of test_rerank's dense
    reference of Zhong et al. 2017 (both counted query by query in test_rerank.brute_force_rank1_and_map)."""
    import scipy.io
    from test_rerank import brute_force_rank1_and_map, dense_rerank_reference

    r = scipy.io.loadmat(result_mat)
    qf, gf = r['query_f'].astype(np.float64), r['gallery_f'].astype(np.float64)
    labels = [r[k].ravel() for k in ('query_label', 'query_cam', 'gallery_label', 'gallery_cam')]
    assert np.abs(np.linalg.norm(qf, axis=1) - 1).max() < 1e-4 and np.abs(np.linalg.norm(gf, axis=1) - 1).max() < 1e-4
    line = r'Rank@1:([\d.]+) Rank@5:[\d.]+ Rank@10:[\d.]+ mAP:([\d.]+)'

    def within(found, bounds):
        # a one-epoch network's features are nearly alike: distances within float32 rounding (1e-5 here) may
        # come in either order, so the figures are checked against the lowest and highest of those orders
        for value, (low, high) in zip((float(found.group(1)), float(found.group(2))), bounds):
            assert low - 2e-6 <= value <= high + 2e-6, (found.group(0), bounds)

    within(re.search(line, printed), brute_force_rank1_and_map(-(qf @ gf.T), *labels, tie=1e-5))
    if reranked:
        found = re.search(r'^single query, re-ranked \(k1=20 k2=6 lambda=0.3\):\n' + line, printed, re.M)
        assert found, printed
        # the figures of the re-ranked distances of the saved features, counted here; the distances are the
        # re-ranker's: a one-epoch network's features are so alike (sorted distances 2e-8 apart) that float32
        # rounding decides who is the 21st neighbour, so they differ from the float64 dense reference by up to 0.03
        # (measured, seed 0). The re-ranker itself is checked against that reference in tests/test_rerank.py; here
        # the reference must give the same figures within 0.005 (measured: equal Rank@1, mAP 5e-6 apart).
        from reid.evaluation.rerank import k_reciprocal_rerank
        within(found, brute_force_rank1_and_map(k_reciprocal_rerank(qf, gf, device='cpu'), *labels, tie=2e-5))
        dense = brute_force_rank1_and_map(dense_rerank_reference(qf, gf, 20, 6, 0.3), *labels, tie=2e-5)
        assert abs(float(found.group(2)) - np.mean(dense[1])) < 0.005, (found.group(0), dense)


def the_outputs_hold_what_they_should(work):
    """Each file the tutorial names, opened and checked for what it must hold (not only that it exists)."""
    import scipy.io
    import torch
    import yaml

    opts = yaml.safe_load((work / 'model/demo/opts.yaml').read_text())
    assert (opts['name'], opts['backbone'], opts['h'], opts['w']) == ('demo', 'resnet18', 128, 64), opts
    trained, init = (torch.load(work / f'model/demo/net_{e}.pth', map_location='cpu') for e in ('last', 'init'))
    assert trained.keys() == init.keys() and all(torch.isfinite(v).all() for v in trained.values()
                                                 if v.is_floating_point())
    assert any(not torch.equal(trained[k], init[k]) for k in trained)   # the epoch changed the weights
    # the real-data section's run, trained again offline as ResNet-18 at 64x32 (see above): that network's weights
    real = torch.load(work / 'model/ft_ResNet50/net_last.pth', map_location='cpu')
    assert yaml.safe_load((work / 'model/ft_ResNet50/opts.yaml').read_text())['backbone'] == 'resnet18'
    assert any('layer4' in k for k in real) and all(torch.isfinite(v).all() for v in real.values()
                                                    if v.is_floating_point())
    for picture, least in (('model/demo/train.jpg', 100), ('show.png', 200), ('results/cmc.png', 100)):
        with Image.open(work / picture) as img:
            colours = np.unique(np.asarray(img.convert('RGB')).reshape(-1, 3), axis=0)
            assert min(img.size) >= least and len(colours) > 20, picture   # drawn
    with Image.open(work / 'show.png') as a, Image.open(work / 'heatmap.png') as b:
        show, heat = np.asarray(a.convert('RGB'), np.int16), np.asarray(b.convert('RGB'), np.int16)
    assert show.shape == heat.shape and (np.abs(show - heat) > 40).any(axis=2).mean() > 0.05   # laid over
    query = sorted((work / 'data/demo/pytorch/query').rglob('*.jpg'))
    assert (work / 'results/index.html').read_text().count('<tr class="query"') == len(query)
    trained_f, init_f = (scipy.io.loadmat(work / f)['query_f'] for f in ('triplet_result.mat', 'init_result.mat'))
    assert trained_f.shape == init_f.shape and init_f.shape[0] == len(query)
    assert np.abs(trained_f - init_f).max() > 0.05   # a trained run's features are not those before training
    multi = scipy.io.loadmat(work / 'multi_query.mat')
    assert len(multi['mquery_f']) == len(multi['mquery_label'].ravel()) > 0
    # the video section: one row per tracklet folder of the prepared MARS-layout set, named after it
    tracklets = sorted(p.name for p in (work / 'data/mars/pytorch/query').glob('*/*') if p.is_dir())
    for name in ('mars_result.mat', 'mars_frames.mat'):
        mars = scipy.io.loadmat(work / name)
        assert sorted(str(n[0]) for n in mars['query_tracklet'].reshape(-1)) == tracklets, name
        assert mars['query_f'].shape[0] == len(tracklets) > 0, name


def the_tracks_are_written_and_scored(printed, work, words):
    """track.py's results file: MOTChallenge's ten columns, frames of the clip, ids from 1; its strip drawn; its
    printed line of figures, each a percentage (and a count of switches) — TrackEval's own checks are in
    tests/test_track.py."""
    out = work / words[words.index('--output') + 1]
    rows = np.loadtxt(out / 'clip.txt', delimiter=',', ndmin=2)
    assert rows.shape[1] == 10 and len(rows) > 40 and (rows[:, 7:] == -1).all()
    assert 1 <= rows[:, 0].min() and rows[:, 0].max() <= 40 and rows[:, 1].min() >= 1
    with Image.open(out / 'clip.jpg') as img:
        colours = np.unique(np.asarray(img.convert('RGB')).reshape(-1, 3), axis=0)
        assert img.width > 2 * img.height and len(colours) > 20   # frames side by side, drawn
    found = re.search(r'IDF1:([\d.]+) MOTA:(-?[\d.]+) IDs:(\d+) HOTA:([\d.]+)', printed)
    assert found, printed[-2000:]
    assert 0 < float(found.group(1)) <= 100 and 0 < float(found.group(4)) <= 100


def heatmap_mass_is_on_the_person(work, boxes_dir):
    """The tutorial's trained run: its heatmaps put more of their mass inside each person's box than its own
    network did before training (net_init.pth), and more than the box's share of the image. The figures are
    computed by hand (test_heatmap.hand_person_box_figures: layer4 called by hand, the map in numpy, the mass
    summed over the box), not by reid.evaluation.heatmap. The boxes come from the generator's side file for the
    same (seed, size), whose images are checked to be the tutorial's own.
    Measured (tiny set, one epoch, --seed 0 / 1 / 2, 90 people): 1.335x / 1.321x / 1.327x the box's share trained,
    1.286x / 1.244x / 1.285x untrained; the bar 1.30x lies between (the old 1.25x passed untrained), and the trained
    run must beat its own untrained network by 0.02 (measured 0.049 / 0.077 / 0.042). The quick start's own run is
    tests/test_quickstart_run.py."""
    from reid.data import synthetic
    from test_heatmap import hand_person_box_figures

    synthetic.make_dataset(boxes_dir, size='tiny', seed=0, boxes=True)
    for rel in list(synthetic.read_person_boxes(boxes_dir))[::25]:
        assert (boxes_dir / rel).read_bytes() == (work / 'data' / 'demo' / rel).read_bytes(), rel
    trained, untrained = (hand_person_box_figures(work / 'model' / 'demo', epoch, boxes_dir) for epoch in ('last', 'init'))
    assert trained['images'] >= 50 and trained['ratio'] > 1.30, trained
    assert trained['ratio'] > untrained['ratio'] + 0.02, (trained, untrained)   # training moved it


def test_quickstart_script_runs_end_to_end(tmp_path, offline_env):
    copy = tmp_path / 'repo'
    copy.mkdir()
    for path in list(REPO.glob('*.py')) + [REPO / 'quickstart.sh']:
        shutil.copy2(path, copy / path.name)
    shutil.copytree(REPO / 'reid', copy / 'reid', ignore=shutil.ignore_patterns('__pycache__'))
    env = dict(offline_env, SIZE='tiny', EPOCHS='1', PYTHON=sys.executable)
    done = subprocess.run(['bash', str(copy / 'quickstart.sh')], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count('Rank@1:') >= 3  # test.py, then evaluate_gpu.py single + multi/rerank
    # test.py's line and evaluate_gpu.py's re-ranked line: those of the saved features, counted here
    check_printed_metrics(done.stdout, copy / 'pytorch_result.mat', reranked=True)
    with Image.open(copy / 'show.png') as img:   # the query and its top 10 drawn, not an empty figure
        colours = np.unique(np.asarray(img.convert('RGB')).reshape(-1, 3), axis=0)
        assert img.width > 4 * img.height and len(colours) > 1000   # 11 panels side by side
    import torch
    weights = torch.load(copy / 'model' / 'demo_tiny' / 'net_last.pth', map_location='cpu')
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
