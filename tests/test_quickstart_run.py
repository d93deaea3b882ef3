"""The quick start's own run, trained as quickstart.sh trains it (demo set, seed 0, --preset quick): its heatmaps lie
on the people and its retrieval comes near the range README prints. About 3 minutes on 2 cores, so it is marked
`quickstart` and left out of the default suite; .ci/run runs it after the suite (`pytest -m quickstart`).
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(script, *argv, cwd):
    done = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f'{script} {" ".join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}'
    return done.stdout


def metrics_of(printed):
    found = re.search(r'Rank@1:([\d.]+) .*mAP:([\d.]+)', printed)
    return float(found.group(1)), float(found.group(2))


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    """The quick start's run, trained as quickstart.sh trains it, and test.py's output on it (default backend)."""
    from reid.data import synthetic

    work = tmp_path_factory.mktemp('quick')
    data = work / 'data' / 'demo'
    synthetic.make_dataset(data, size='demo', seed=0, boxes=True)
    run_script('prepare.py', '--download_path', str(data), cwd=work)
    script = (REPO / 'quickstart.sh').read_text().replace('\\\n', ' ')
    train = next(line.split() for line in script.splitlines() if 'train.py' in line)
    assert train[train.index('--preset') + 1] == 'quick' and '--train_all' in train
    assert 'EPOCHS=${EPOCHS:-}' in script   # the quick preset's own epochs unless EPOCHS is given
    run_script('train.py', '--preset', 'quick', '--name', 'quick', '--data_dir', str(data / 'pytorch'),
               '--train_all', '--seed', '0', cwd=work)
    printed = run_script('test.py', '--name', 'quick', '--test_dir', str(data / 'pytorch'), '--which_epoch', 'last',
                         cwd=work)
    return work, data, printed


@pytest.mark.quickstart
def test_the_quick_starts_heatmaps_lie_on_the_people_and_its_map_is_near_readmes_range(quick):
    """The boxes are the generator's record of where it drew each person (independent of the network). Measured
    (README "Pictures" and "Figures", seeds 0-2): 1.48-1.52x the box's share inside the box trained, 1.28-1.35x
    untrained; Rank@1 71.5-80.0 %, mAP 59.9-64.1 %. The margins asserted leave room for another CPU's float noise
    (mAP 5 points under the lowest seed), not for a 64x32 network (1.16x) or 6 epochs (mAP 47.2)."""
    from test_heatmap import hand_person_box_figures

    work, data, printed = quick
    rank1, mean_ap = metrics_of(printed)
    # the shares computed by hand (layer4 called by hand, the map in numpy), not by reid.evaluation.heatmap
    trained, untrained = (hand_person_box_figures(work / 'model' / 'quick', epoch, data, every=4)
                          for epoch in ('last', 'init'))
    assert trained['images'] == 450
    assert trained['ratio'] > 1.4, trained
    assert trained['mass'] > untrained['mass'] + 0.02, (trained, untrained)   # training moved it onto the person
    assert rank1 > 0.65 and mean_ap > 0.54, (rank1, mean_ap)


@pytest.mark.quickstart
def test_the_quick_starts_map_is_kept_by_the_default_backend_and_by_int8(quick):
    """README "Deployment", measured on this run (EPYC-bf16): torch fp32 mAP 60.01, the default (OpenVINO bf16)
    59.98, int8 59.67. The default must give the same mAP as torch fp32 (the issue's bar: 0.2 points), int8
    within 1.0 point; export.py's int8 line prints both networks' retrieval on the val split."""
    work, data, printed = quick
    assert 'backend openvino' in printed, printed[-2000:]   # auto's choice on the CPU
    _, default_map = metrics_of(printed)
    test = ['test.py', '--name', 'quick', '--test_dir', str(data / 'pytorch')]
    _, fp32_map = metrics_of(run_script(*test, '--backend', 'torch', '--cpu_bf16', 'off', cwd=work))
    exported = run_script('export.py', '--name', 'quick', '--format', 'openvino', '--precision', 'int8', cwd=work)
    assert re.search(r'^fp32: Rank@1 [\d.]+ mAP [\d.]+', exported, re.M), exported
    assert re.search(r'^int8: Rank@1 [\d.]+ mAP [\d.]+', exported, re.M), exported
    int8 = run_script(*test, '--backend', 'openvino', '--precision', 'int8', cwd=work)
    assert 'exporting' not in int8   # export.py's file is the one test.py runs
    _, int8_map = metrics_of(int8)
    assert abs(default_map - fp32_map) <= 0.002, (default_map, fp32_map)
    assert abs(int8_map - fp32_map) <= 0.01, (int8_map, fp32_map)


@pytest.mark.quickstart
def test_the_quick_starts_model_keeps_identities_in_a_tracker_better_than_before_training(quick):
    """README "Your model in a tracker", measured with python -m bench.tracking (5 clips of 150 frames): StrongSORT
    with the trained run switches identities far less and keeps them longer than with its untrained network
    (--which_epoch init). Here two clips (seeds 0, 1): the trained IDF1 beats the untrained one by 8 points or more
    on each (measured: TRAINED_MARGIN), and switches fewer identities on each. The figures are TrackEval's
    (tests/test_track.py checks them against hand-worked examples)."""
    pytest.importorskip('boxmot', reason='pip install -r requirements-track.txt')
    work, _, _ = quick
    figures = {}
    for seed in (0, 1):
        clip = work / f'clip{seed}'
        run_script('prepare.py', '--make-clip', str(clip), '--seed', str(seed), cwd=work)
        for epoch in ('last', 'init'):
            printed = run_script('track.py', '--name', 'quick', '--which_epoch', epoch, '--sequence', str(clip),
                                 '--output', str(work / f'tracks_{epoch}_{seed}'), cwd=work)
            found = re.search(r'IDF1:([\d.]+) MOTA:(-?[\d.]+) IDs:(\d+)', printed)
            assert found, printed[-2000:]
            figures[seed, epoch] = float(found.group(1)), int(found.group(3))
    for seed in (0, 1):
        (trained_idf1, trained_ids), (untrained_idf1, untrained_ids) = figures[seed, 'last'], figures[seed, 'init']
        assert trained_idf1 >= untrained_idf1 + 8 and trained_ids < untrained_ids, figures
