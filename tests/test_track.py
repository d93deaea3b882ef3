"""track.py: BoxMOT's trackers over a MOTChallenge sequence with a run's export; the results file against the
ground truth the test drew, TrackEval's metrics against numbers worked out by hand, BoxMOT's ReID features equal
to reid.api's for the same crops, and an environment that pip freeze finds unchanged after a run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('boxmot', reason='pip install -r requirements-track.txt')
pytest.importorskip('trackeval', reason='pip install -r requirements-track.txt')

import track  # noqa: E402
from test_export import H, W, write_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
# the toy sequence: two people (a box of clothes under a face) walking apart, drawn 1-based as MOTChallenge counts
PEOPLE = {1: (30, 3, (200, 40, 40)), 2: (230, -3, (40, 40, 200))}   # id: (first left edge, px per frame, colour)
FRAMES, BOX_W, BOX_H, TOP = 12, 40, 100, 60
APPEARANCE, MOTION_ONLY = {'strongsort', 'botsort', 'deepocsort', 'boosttrack'}, {'bytetrack', 'ocsort'}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """(model_dir, name) of a run with random weights at 64 x 32, with net_last.pth and net_init.pth."""
    model_dir = tmp_path_factory.mktemp('track_model')
    write_run(model_dir / 'run', pcb=False)
    write_run(model_dir / 'run', pcb=False, seed=1, epoch='init')
    return model_dir, 'run'


def gt_boxes():
    """{(frame, id): (left, top, width, height)} of the toy sequence, 1-based as gt.txt writes them."""
    return {(f, pid): (x0 + step * f, TOP, BOX_W, BOX_H) for f in range(1, FRAMES + 1)
            for pid, (x0, step, _) in PEOPLE.items()}


def write_sequence(folder, with_gt=True):
    """Write the toy sequence: 320 x 240 frames, det.txt = the true boxes (score 0.9), gt.txt in MOT17's layout."""
    for sub in ('img1', 'det', 'gt'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / 'seqinfo.ini').write_text(f'[Sequence]\nname={folder.name}\nimDir=img1\nframeRate=10\n'
                                        f'seqLength={FRAMES}\nimWidth=320\nimHeight=240\nimExt=.jpg\n')
    boxes = gt_boxes()
    for f in range(1, FRAMES + 1):
        pixels = np.full((240, 320, 3), 90, np.uint8)
        for pid, (_, _, colour) in PEOPLE.items():
            x, y, w, h = boxes[f, pid]
            pixels[y - 1:y - 1 + h, x - 1:x - 1 + w] = colour       # 1-based left/top: array index - 1
            pixels[y - 1:y - 1 + 30, x - 1:x - 1 + w] = (230, 200, 160)
        Image.fromarray(pixels).save(folder / 'img1' / f'{f:06d}.jpg', quality=95)
    (folder / 'det' / 'det.txt').write_text(''.join(f'{f},-1,{x},{y},{w},{h},0.9,-1,-1,-1\n'
                                                    for (f, _), (x, y, w, h) in sorted(boxes.items())))
    if with_gt:
        (folder / 'gt' / 'gt.txt').write_text(''.join(f'{f},{pid},{x},{y},{w},{h},1,1,1.0\n'
                                                      for (f, pid), (x, y, w, h) in sorted(boxes.items())))
    return folder


def iou(a, b):
    """IoU of two (left, top, width, height) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def printed_metrics(text):
    m = re.search(r'^IDF1:(\d+\.\d\d) MOTA:(-?\d+\.\d\d) IDs:(\d+) HOTA:(\d+\.\d\d)$', text, re.M)
    assert m, text
    return float(m[1]), float(m[2]), int(m[3]), float(m[4])


def test_strongsort_tracks_the_toy_sequence_and_its_printed_figures_are_the_results_files(tmp_path, run, capsys):
    seq = write_sequence(tmp_path / 'TOY-01')
    track.main(['--model_dir', str(run[0]), '--name', run[1], '--sequence', str(seq), '--output',
                str(tmp_path / 'out')])
    rows = [line.split(',') for line in (tmp_path / 'out' / 'TOY-01.txt').read_text().splitlines()]
    assert rows and all(len(r) == 10 and r[7:] == ['-1', '-1', '-1'] for r in rows)
    truth, matched, owner = gt_boxes(), set(), {}
    for r in rows:
        frame, tid, box = int(r[0]), int(r[1]), tuple(float(v) for v in r[2:6])
        pid = max(PEOPLE, key=lambda p: iou(box, truth[frame, p]))
        # the box the detector gave, in the same 1-based pixels (a half-pixel shift would show here)
        assert np.abs(np.subtract(box, truth[frame, pid])).max() < 0.5, (r, truth[frame, pid])
        assert owner.setdefault(tid, pid) == pid   # a track stays on one person
        matched.add((frame, pid))
    assert len(set(owner.values())) == len(owner) == 2 and min(owner) >= 1   # one track each, ids from 1
    idf1, mota, switches, hota = printed_metrics(capsys.readouterr().out)
    misses = len(truth) - len(matched)   # the frames before a track is confirmed
    assert 0 < misses <= 6 and switches == 0
    assert mota == pytest.approx(100 * (1 - misses / len(truth)), abs=0.006)
    assert idf1 == pytest.approx(100 * 2 * len(matched) / (2 * len(matched) + misses), abs=0.006)
    with Image.open(tmp_path / 'out' / 'TOY-01.jpg') as strip:   # four frames side by side
        assert strip.height == 360 and strip.width > 4 * 320 * 360 / 240


def write_hand_example(folder):
    """Three frames: people 1 and 2 in all, an ignored static person (class 7) in frame 2, an ignored car (class 3)
    in frame 3. Track 1 follows person 1; person 2 is track 2, then track 3 (a switch); track 5 sits on the static
    person, track 6 on the car, track 7 on nothing (frame 1). Every box of a track equals its object's."""
    (folder / 'det').mkdir(parents=True)
    (folder / 'gt').mkdir()
    (folder / 'det' / 'det.txt').write_text('')
    (folder / 'seqinfo.ini').write_text('[Sequence]\nname=HAND\nimDir=img1\nframeRate=30\nseqLength=3\nimExt=.jpg\n')
    at = {1: 11, 2: 111, 3: 211, 4: 311, 'nothing': 511}
    gt = [(f, pid, at[pid], 1, 1) for f in (1, 2, 3) for pid in (1, 2)] + [(2, 3, at[3], 0, 7), (3, 4, at[4], 0, 3)]
    (folder / 'gt' / 'gt.txt').write_text(''.join(f'{f},{pid},{x},11,20,40,{consider},{cls},1\n'
                                                  for f, pid, x, consider, cls in gt))
    tracks = [(f, 1, at[1]) for f in (1, 2, 3)] + [(1, 2, at[2]), (2, 2, at[2]), (3, 3, at[2]), (2, 5, at[3]),
                                                   (3, 6, at[4]), (1, 7, at['nothing'])]
    out = folder.parent / 'results' / 'HAND.txt'
    out.parent.mkdir()
    out.write_text(''.join(f'{f},{tid},{x},11,20,40,1,-1,-1,-1\n' for f, tid, x in tracks))
    return folder, out


def test_metrics_are_motchallenges_worked_out_by_hand(tmp_path):
    """After MOTChallenge's preprocessing, track 5 (on a distractor) is dropped; the car is not a distractor, so
    track 6 stays a false positive. 6 true boxes, all found (TP 6, FN 0), FP 2 (tracks 6, 7), one switch.
    MOTA = 1 - (FN + FP + IDs) / GT = 1 - 3/6. IDF1: the best one-to-one id pairing is 1-1 (3 boxes), 2-2 (2), so
    IDTP 5, IDFN 6 - 5 = 1, IDFP 8 - 5 = 3 and IDF1 = 2*5 / (2*5 + 3 + 1) = 10/14. HOTA at every IoU threshold (the
    boxes coincide): DetA = TP / (TP + FN + FP) = 6/8; AssA = the mean over the 6 TPs of TPA / (TPA + FNA + FPA):
    1-1 (x3) 3/3, 2-2 (x2) 2/(2 + 1 + 0), 2-3 (x1) 1/(1 + 2 + 0), so (3 + 4/3 + 1/3) / 6 = 7/9;
    HOTA = sqrt(DetA AssA)."""
    from reid.tracking.metrics import metrics_line, mot_metrics
    from reid.tracking.mot import read_sequence

    folder, results = write_hand_example(tmp_path / 'HAND')
    got = mot_metrics(read_sequence(folder), results)
    assert (got['GT'], got['TP'], got['FN'], got['FP'], got['IDs']) == (6, 6, 0, 2, 1)
    assert got['MOTA'] == pytest.approx(0.5)
    assert got['IDF1'] == pytest.approx(10 / 14)
    assert got['HOTA'] == pytest.approx(np.sqrt(6 / 8 * 7 / 9))
    assert metrics_line(got) == 'IDF1:71.43 MOTA:50.00 IDs:1 HOTA:76.38'


def test_hota_is_the_mean_over_its_iou_thresholds(tmp_path):
    """One person in one frame, the tracker's box 2 px to the side: IoU = 8*10 / (200 - 80) = 2/3. HOTA counts it at
    the thresholds 0.05, 0.10, ..., 0.65 (13 of 19, where HOTA is 1) and misses it above (HOTA 0): 13/19. CLEAR and
    Identity match at IoU 0.5: MOTA and IDF1 are 1."""
    from reid.tracking.metrics import mot_metrics
    from reid.tracking.mot import read_sequence

    folder, results = write_hand_example(tmp_path / 'HAND')
    (folder / 'seqinfo.ini').write_text('[Sequence]\nname=HAND\nimDir=img1\nframeRate=30\nseqLength=1\n')
    (folder / 'gt' / 'gt.txt').write_text('1,1,1,1,10,10,1,1,1\n')
    results.write_text('1,1,3,1,10,10,1,-1,-1,-1\n')
    got = mot_metrics(read_sequence(folder), results)
    assert (got['MOTA'], got['IDF1']) == (1, 1) and got['HOTA'] == pytest.approx(13 / 19)


@pytest.mark.parametrize('name,false_positives', [('MOT20-99', 0), ('MOT17-99', 1)])
def test_a_mot20_sequence_also_ignores_boxes_on_non_motorised_vehicles(tmp_path, name, false_positives):
    """MOT20's evaluation counts class 6 (non-motorised vehicle) among the distractors, MOT17's does not: a box on
    an ignored bicycle is dropped in a sequence named MOT20-*, a false positive elsewhere."""
    from reid.tracking.metrics import mot_metrics
    from reid.tracking.mot import read_sequence

    folder, results = write_hand_example(tmp_path / name)
    (folder / 'seqinfo.ini').write_text(f'[Sequence]\nname={name}\nimDir=img1\nframeRate=30\nseqLength=1\n')
    (folder / 'gt' / 'gt.txt').write_text('1,1,1,1,10,20,1,1,1\n1,2,101,1,20,10,0,6,1\n')
    (results.parent / f'{name}.txt').write_text('1,1,1,1,10,20,1,-1,-1,-1\n1,2,101,1,20,10,1,-1,-1,-1\n')
    got = mot_metrics(read_sequence(folder), results.parent / f'{name}.txt')
    assert (got['TP'], got['FP']) == (1, false_positives)


def test_the_appearance_trackers_compute_features_with_the_export_and_the_others_do_not(tmp_path, run):
    """Each tracker of the table after one frame of two people: BoxMOT loaded the export (its ReID backend) exactly
    for those the table says use appearance."""
    import cv2

    from reid.export import ensure_export
    from reid.runs import RunFolder
    from reid.tracking.trackers import TRACKERS, boxmot_without_installs, build_tracker

    weights = ensure_export(RunFolder(run[0] / run[1]), 'last', 'onnx', 'fp32')
    seq = write_sequence(tmp_path / 'TOY-07', with_gt=False)
    frame = cv2.imread(str(seq / 'img1' / '000001.jpg'))
    dets = np.array([[29, 59, 69, 159, 0.9, 0], [229, 59, 269, 159, 0.9, 0]], np.float32)
    assert set(TRACKERS) == APPEARANCE | MOTION_ONLY
    for entry in TRACKERS.values():
        with boxmot_without_installs():
            tracker = build_tracker(entry, weights if entry.appearance else None, 10)
            tracker.update(dets, frame)
        loaded = getattr(tracker, '_reid_model', None) is not None
        assert loaded == (entry.name in APPEARANCE) == tracker.generates_embeddings, entry.name


def reference_crops(frame, boxes, resize):
    """The network's input for `boxes` of the BGR `frame`, rebuilt here: the box rounded and clipped to the frame,
    then test.py's PIL bicubic resize (conftest's hand transform) or BoxMOT's OpenCV bilinear resize of the BGR
    pixels, RGB, ImageNet mean/std."""
    import cv2
    import torch

    from conftest import hand_transform

    crops = []
    for x1, y1, x2, y2 in boxes.round().astype(int):
        crop = frame[max(y1, 0):y2, max(x1, 0):min(x2, frame.shape[1])]
        if resize == 'bicubic':
            crops.append(hand_transform(H, W)(Image.fromarray(np.ascontiguousarray(crop[:, :, ::-1]))))
        else:
            rgb = cv2.resize(crop, (W, H), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32) / 255
            crops.append(torch.from_numpy(((rgb - MEAN) / STD).transpose(2, 0, 1).copy()))
    return torch.stack(crops)


@pytest.mark.parametrize('backend,resize', [('onnxruntime', 'bicubic'), ('onnxruntime', 'bilinear'),
                                            ('openvino', 'bicubic'), ('openvino', 'bilinear')])
def test_the_trackers_features_are_the_apis_for_the_same_crops(tmp_path, run, backend, resize):
    """The features a tracker gets for boxes of a frame (test.py's crops, or BoxMOT's own ReID backend's) equal
    reid.api's (torch) for the crops rebuilt here; BoxMOT's own crops themselves equal the bilinear ones."""
    import cv2

    from reid.api import ReIDRun
    from reid.export import ensure_export
    from reid.runs import RunFolder
    from reid.tracking.trackers import BACKENDS, TRACKERS, boxmot_without_installs, build_tracker

    weights = ensure_export(RunFolder(run[0] / run[1]), 'last', BACKENDS[backend], 'fp32')
    seq = write_sequence(tmp_path / 'TOY-02', with_gt=False)
    frame = cv2.imread(str(seq / 'img1' / '000005.jpg'))
    boxes = np.array([[20.4, 50.6, 70.5, 170.2], [180.0, 40.0, 260.7, 200.0], [300.2, 100.0, 340.0, 180.0]],
                     np.float32)   # the last one runs off the frame's right edge
    with boxmot_without_installs():
        encoder = build_tracker(TRACKERS['strongsort'], weights, 10, resize)._get_live_reid_model()
        theirs = encoder.get_features(boxes, frame)
    crops = reference_crops(frame, boxes, resize)
    if resize == 'bilinear':
        assert np.abs(encoder.get_crops(boxes, frame).numpy() - crops.numpy()).max() < 1e-5
    ours = ReIDRun(run[0] / run[1], backend='torch').features(crops).numpy()
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-4


def test_a_track_py_run_leaves_pip_freeze_unchanged(tmp_path, run):
    """BoxMOT's ONNX backend (--resize bilinear) asks for onnxruntime==1.24.3 and pip-installs it when it is
    missing: not here. pip is also kept offline in the child, so a run that tried would fail instead of changing
    this environment."""
    seq = write_sequence(tmp_path / 'TOY-03', with_gt=False)

    def freeze():
        return subprocess.run([sys.executable, '-m', 'pip', 'freeze'], capture_output=True, text=True, check=True,
                              timeout=120).stdout

    before = freeze()
    env = dict(os.environ, PIP_NO_INDEX='1', PIP_FIND_LINKS=str(tmp_path / 'no_wheels'), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / 'track.py'), '--model_dir', str(run[0]), '--name', run[1],
                           '--which_epoch', 'init', '--resize', 'bilinear', '--sequence', str(seq), '--output',
                           str(tmp_path / 'out')],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert freeze() == before
    assert (run[0] / run[1] / 'net_init.onnx').is_file()   # --which_epoch init: the untrained network's export


def test_boxmots_installer_refuses_while_track_py_runs(monkeypatch):
    """Every BoxMOT install goes through RequirementsChecker._run_install, which runs pip in a subprocess: inside
    boxmot_without_installs it raises a one-line ValueError before any subprocess starts."""
    from boxmot.utils import checks

    from reid.tracking.trackers import boxmot_without_installs

    started = []
    monkeypatch.setattr(checks.subprocess, 'run', lambda *a, **k: started.append(a))
    with boxmot_without_installs(), pytest.raises(ValueError, match='never changes the environment'):
        checks.RequirementsChecker().check_packages(['no-such-package==1.0'])
    assert started == []


def test_a_motion_only_tracker_needs_no_run_and_video_has_every_frame(tmp_path):
    import cv2

    seq = write_sequence(tmp_path / 'TOY-04')
    track.main(['--name', 'no_such_run', '--model_dir', str(tmp_path), '--sequence', str(seq), '--tracker',
                'bytetrack', '--output', str(tmp_path / 'out'), '--video'])
    video = cv2.VideoCapture(str(tmp_path / 'out' / 'TOY-04.mp4'))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    video.release()
    assert not (tmp_path / 'out' / 'TOY-04.jpg').exists() and (tmp_path / 'out' / 'TOY-04.txt').stat().st_size


def one_line_exit(argv, *fragments):
    with pytest.raises(SystemExit) as err:
        track.main(argv)
    message = str(err.value.code)
    assert '\n' not in message and message.startswith('track.py: ')
    for fragment in fragments:
        assert fragment in message, message


def test_bad_input_exits_with_one_line_naming_the_path_or_flag(tmp_path, run, monkeypatch):
    seq = write_sequence(tmp_path / 'TOY-05', with_gt=False)
    base = ['--model_dir', str(run[0]), '--name', run[1], '--output', str(tmp_path / 'out')]
    one_line_exit(base + ['--sequence', str(tmp_path / 'nowhere')], '--sequence', 'nowhere')
    one_line_exit(base + ['--sequence', str(seq), '--tracker', 'sort'], '--tracker sort', 'strongsort')
    one_line_exit(base + ['--sequence', str(seq), '--backend', 'tensorrt'], '--backend tensorrt')
    one_line_exit(base + ['--sequence', str(seq), '--resize', 'area'], '--resize area')
    (seq / 'det' / 'det.txt').unlink()
    one_line_exit(base + ['--sequence', str(seq)], str(seq / 'det' / 'det.txt'))
    (seq / 'seqinfo.ini').unlink()
    one_line_exit(base + ['--sequence', str(seq)], str(seq / 'seqinfo.ini'))
    monkeypatch.setitem(sys.modules, 'boxmot', None)   # as if BoxMOT were not installed
    one_line_exit(base + ['--sequence', str(write_sequence(tmp_path / 'TOY-06'))], 'requirements-track.txt')
