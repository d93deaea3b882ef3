"""Tests of reid/data/clips.py and prepare.py --make-clip: a generated tracking clip in the MOTChallenge layout.

The files are read back with configparser, numpy and PIL and checked against the format's definition, the drawn
pixels (an empty street taken as the per-pixel median of the frames) and the quick start's generated set.
"""
import configparser
import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image

import prepare
from reid.data import clips, synthetic

W, H, N, PEOPLE = 640, 360, 150, 6   # the default clip


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    """(folder, counts, seconds) of the default clip (seed 0, 150 frames, 6 people)."""
    root = tmp_path_factory.mktemp('clip') / 'street'
    start = time.perf_counter()
    counts = clips.make_clip(root, progress=False)
    return root, counts, time.perf_counter() - start


@pytest.fixture(scope='module')
def pixels(clip):
    """({frame: int16 array}, the empty street: the per-pixel median of every third frame)."""
    frames = {f: np.asarray(Image.open(clip[0] / 'img1' / f'{f:06d}.jpg'), dtype=np.int16) for f in range(1, N + 1)}
    return frames, np.median(np.stack([frames[f] for f in range(1, N + 1, 3)]), axis=0).astype(np.int16)


def read_gt(root):
    return np.loadtxt(root / 'gt' / 'gt.txt', delimiter=',', ndmin=2)


def read_det(root):
    return np.loadtxt(root / 'det' / 'det.txt', delimiter=',', ndmin=2)


def box_of(row):
    """(x0, y0, x1, y1), 0-based with x1, y1 exclusive, of a gt or det row (MOTChallenge's left, top are 1-based)."""
    return row[2] - 1, row[3] - 1, row[2] - 1 + row[4], row[3] - 1 + row[5]


def in_frame(box):
    return max(box[0], 0), max(box[1], 0), min(box[2], W), min(box[3], H)


def iou(a, b):
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def walkers(root):
    """{track id: demo-set identity} of the pedestrians, from the clip's marker."""
    tracks = json.loads((root / clips.MARKER).read_text())['tracks']
    return {int(t): v['pid'] for t, v in tracks.items() if v['cls'] == 1}


def runs(frames):
    """[(first, last)] of the runs of consecutive frame numbers."""
    cuts = np.flatnonzero(np.diff(frames) > 1)
    starts, ends = np.r_[0, cuts + 1], np.r_[cuts, len(frames) - 1]
    return [(int(frames[a]), int(frames[b])) for a, b in zip(starts, ends)]


def test_the_folder_is_a_motchallenge_sequence(clip):
    root, counts, _ = clip
    info = configparser.ConfigParser()
    info.read(root / 'seqinfo.ini')
    assert dict(info['Sequence']) == dict(name='street', imdir='img1', framerate='15', seqlength=str(N),
                                          imwidth=str(W), imheight=str(H), imext='.jpg')
    assert sorted(p.name for p in (root / 'img1').iterdir()) == [f'{f:06d}.jpg' for f in range(1, N + 1)]
    for f in (1, N):
        with Image.open(root / 'img1' / f'{f:06d}.jpg') as img:
            assert (img.format, img.mode, img.size) == ('JPEG', 'RGB', (W, H))
    gt, det = read_gt(root), read_det(root)
    assert gt.shape[1] == 9 and det.shape[1] == 10
    assert np.array_equal(gt[:, :8], np.round(gt[:, :8])) and (gt[:, 4:6] > 0).all()
    keys = [tuple(k) for k in gt[:, :2].astype(int)]
    assert keys == sorted(set(keys)) and {k[0] for k in keys} == set(range(1, N + 1))   # by frame, then id
    assert set(gt[:, 7]) == {1, 7, 8} and np.array_equal(gt[:, 6], gt[:, 7] == 1)
    assert ((gt[:, 8] >= 0) & (gt[:, 8] <= 1)).all()
    assert (det[:, 1] == -1).all() and (det[:, 7:] == -1).all() and np.array_equal(det[:, 0], np.sort(det[:, 0]))
    assert ((det[:, 6] > 0) & (det[:, 6] <= 1)).all() and (det[:, 4:6] > 0).all()
    assert counts['frames'] == N and counts['people'] == PEOPLE == len(walkers(root))
    assert (counts['gt_rows'], counts['ignored_rows'], counts['detections']) == (
        int((gt[:, 7] == 1).sum()), int((gt[:, 7] != 1).sum()), len(det))
    assert json.loads((root / clips.MARKER).read_text())['complete'] is True


def checksums(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_a_seed_gives_the_same_bytes_and_another_seed_another_clip(tmp_path):
    for parent, seed in (('a', 3), ('b', 3), ('c', 4)):
        clips.make_clip(tmp_path / parent / 'seq', seed=seed, frames=30, people=4, progress=False)
    a, b, c = (checksums(tmp_path / p / 'seq') for p in 'abc')
    assert a == b and len(a) == 30 + 4
    assert a['gt/gt.txt'] != c['gt/gt.txt'] and a['det/det.txt'] != c['det/det.txt']
    assert sum(a[k] != c[k] for k in a if k.startswith('img1/')) >= 29


def test_the_walkers_are_test_identities_of_the_quick_start_set_never_training_ones(clip, pixels):
    root = clip[0]
    drawn = synthetic.drawn_set('demo', 0)
    pids = walkers(root)
    assert len(set(pids.values())) == PEOPLE and set(pids.values()) <= set(drawn.test_ids)
    train_looks = {synthetic.identity_look(0, 1, t) for t in drawn.train_ids}
    looks = {t: synthetic.identity_look(0, 1, pid) for t, pid in pids.items()}
    assert not set(looks.values()) & train_looks
    assert looks[3].upper == looks[4].upper and looks[1].upper != looks[2].upper   # as plan_clip casts them
    # each walker is drawn in its look's colours: in full view, most of its pixels that no one else's box
    # covers are of its palette
    frames, street = pixels
    gt = read_gt(root)
    for track, look in looks.items():
        shares = []
        for row in gt[(gt[:, 1] == track) & (gt[:, 8] >= 0.99)][::5]:
            x0, y0, x1, y1 = (int(v) for v in in_frame(box_of(row)))
            alone = np.zeros((H, W), bool)
            alone[y0:y1, x0:x1] = np.abs(frames[int(row[0])] - street).sum(axis=2)[y0:y1, x0:x1] > 60
            for o in gt[(gt[:, 0] == row[0]) & (gt[:, 1] != track)]:
                ox0, oy0, ox1, oy1 = (int(v) for v in in_frame(box_of(o)))
                alone[oy0:oy1, ox0:ox1] = False
            person = frames[int(row[0])][alone]
            upper, upper2 = np.array(synthetic.UPPER[look.upper]), np.array(synthetic.UPPER[look.upper2])
            palette = np.array([upper, upper2, (upper + upper2) // 2,   # fine stripes blur into their mean
                                synthetic.LOWER[look.lower], synthetic.SKIN[look.skin], synthetic.HAIR[look.hair],
                                synthetic.SHOES[look.shoes], synthetic.UPPER[look.acc_colour]])
            if len(person) > 500:
                nearest = np.abs(person[:, None, :] - palette[None]).max(axis=2)
                shares.append(((nearest.min(axis=1) <= 20).mean(), (nearest[:, 0] <= 20).mean()))
        assert shares and np.median(np.array(shares)[:, 0]) > 0.5, (track, shares)
        if look.pattern == 0:   # a plain upper garment shows its colour (fine stripes blur in the JPEG)
            assert np.median(np.array(shares)[:, 1]) > 0.05, (track, shares)


def test_gt_boxes_frame_the_drawn_people_and_nobody_else_is_drawn(clip, pixels):
    root = clip[0]
    frames, street = pixels
    gt = read_gt(root)
    errors = []
    for f in range(1, N + 1):
        rows = gt[gt[:, 0] == f]
        moved = np.abs(frames[f] - street).sum(axis=2) > 60
        covered = np.zeros_like(moved)
        for row in rows:
            x0, y0, x1, y1 = (int(v) for v in in_frame(box_of(row)))
            covered[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
        assert not (moved & ~covered).any(), f'frame {f}: something drawn outside every gt box'
        for row in rows:   # a pedestrian in full view, alone, inside the frame: its pixels span its box
            box = np.array(box_of(row), int)
            near = [box_of(o) for o in rows if o[1] != row[1]]
            if row[7] != 1 or row[8] < 0.99 or box[0] < 10 or box[1] < 10 or box[2] > W - 10 or box[3] > H - 10 \
                    or any(iou(box + (-12, -12, 12, 12), o) > 0 for o in near):
                continue
            ys, xs = np.nonzero(moved[box[1] - 10:box[3] + 10, box[0] - 10:box[2] + 10])
            found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) + box[[0, 1, 0, 1]] - 10
            assert (found[:2] >= box[:2] - 3).all() and (found[2:] <= box[2:] + 3).all(), (f, row[1], found, box)
            errors.append(found - box)
    # the JPEG blurs an edge outwards by a pixel, a hand or hair may match the street: the sides are off by a
    # pixel either way, but the box is centred on the drawing (1-based left and top: else off by 1 both sides)
    errors = np.array(errors)
    assert len(errors) >= 100 and (np.abs(errors).max(axis=1) <= 3).mean() > 0.8
    mean = errors.mean(axis=0)
    assert abs(mean[0] + mean[2]) < 1.2 and abs(mean[1] + mean[3]) < 1.2, mean


def test_visibility_is_the_share_of_a_person_that_shows(clip):
    """Against the pixels: the person drawn alone, less what the pillar covers and what the people nearer the
    camera (lower feet in gt) cover."""
    root = clip[0]
    plan = clips.plan_clip(json.loads((root / clips.MARKER).read_text())['seed'], N, PEOPLE)
    gt = read_gt(root)

    def image(frame, **kw):
        return np.asarray(clips.render_frame(plan, frame, **kw), dtype=np.int16)

    def differ(a, b):
        return np.abs(a - b).sum(axis=2) > 30

    empty = image(1, only=(), occluder=False)
    pillar = np.zeros((H, W), bool)   # a full-height band: all the columns where it changes a pixel
    pillar[:, differ(image(1, only=()), empty).any(axis=0)] = True
    by_person = by_pillar = 0
    errors = []
    for row in gt[(gt[:, 7] == 1) & (gt[:, 8] > 0.05) & (gt[:, 8] < 0.95)][::3]:
        box = box_of(row)
        if in_frame(box) != box:
            continue
        f, track = int(row[0]), int(row[1])
        others = [o for o in gt[(gt[:, 0] == f) & (gt[:, 1] != track)] if iou(box_of(o), box) > 0]
        if any(abs(o[3] + o[5] - row[3] - row[5]) <= 1 for o in others):
            continue   # feet on the same line: which is nearer is not in gt
        nearer = tuple(int(o[1]) for o in others if o[3] + o[5] > row[3] + row[5])
        alone = image(f, only=(track,), occluder=False)
        drawn = differ(alone, empty)
        # what nearer people change over it, or where they differ from the street (clothes like its own)
        covered = pillar | differ(image(f, only=nearer + (track,), occluder=False), alone) | differ(
            image(f, only=nearer, occluder=False), empty)
        shows = (drawn & ~covered).sum() / drawn.sum()
        assert abs(shows - row[8]) < 0.1, (f, track, shows, row[8])   # colours that match the street blur it
        errors.append(abs(shows - row[8]))
        behind_pillar = (drawn & pillar).any()
        by_pillar += behind_pillar
        by_person += not behind_pillar and (drawn & covered).any()
    assert by_person >= 3 and by_pillar >= 3 and np.mean(errors) < 0.03


def test_people_enter_leave_come_back_cross_and_hide(clip):
    gt = read_gt(clip[0])
    entries = exits = comebacks = 0
    turns = []
    for track in walkers(clip[0]):
        rows = gt[gt[:, 1] == track]
        passes = runs(rows[:, 0])
        comebacks += len(passes) > 1
        for first, last in passes:
            a, b = box_of(rows[rows[:, 0] == first][0]), box_of(rows[rows[:, 0] == last][0])
            entries += first > 1 and (a[0] < 0 or a[2] > W)
            exits += last < N and (b[0] < 0 or b[2] > W)
        centre = rows[:, 2] + rows[:, 4] / 2
        hidden = np.r_[False, rows[:, 8] < 0.1, False].astype(int)
        for start, end in zip(np.flatnonzero(np.diff(hidden) == 1), np.flatnonzero(np.diff(hidden) == -1)):
            if end - start >= 6 and start >= 3 and end + 3 <= len(rows):   # velocity in and out of hiding
                turns.append((end - start, centre[start - 1] - centre[start - 3], centre[end + 2] - centre[end]))
    assert entries >= 3 and exits >= 3 and comebacks >= 1
    assert any(n >= 10 for n, _, _ in turns)                               # hidden 10 frames or more
    assert any(before * after < 0 for _, before, after in turns)           # turned back while hidden
    assert any(before * after > 0 and not 0.8 < after / before < 1.25 for _, before, after in turns)  # new speed
    edge = [r for r in gt[gt[:, 7] == 1] if np.prod(np.subtract(in_frame(box_of(r))[2:], in_frame(box_of(r))[:2]))
            < 0.2 * r[4] * r[5]]
    assert edge and max(r[8] for r in edge) < 0.5                         # partly out of view: partly visible
    heights = gt[gt[:, 7] == 1, 5]
    assert heights.min() < 115 and heights.max() > 135                     # near people are taller
    stride = [np.ptp(rows[:, 4]) / rows[0, 5] for rows in (gt[(gt[:, 1] == t) & (gt[:, 8] > 0.99)]
                                                            for t in walkers(clip[0])) if np.ptp(rows[:, 5]) == 0]
    assert stride and min(stride) > 0.08                                   # arms and legs swing: widths change
    crossed = False
    for f in range(2, N + 1):   # two walkers swap sides while one hides the other
        now, then = gt[(gt[:, 0] == f) & (gt[:, 7] == 1)], gt[(gt[:, 0] == f - 1) & (gt[:, 7] == 1)]
        for p in now:
            for q in now:
                was_p, was_q = then[then[:, 1] == p[1]], then[then[:, 1] == q[1]]
                if p[1] != q[1] and len(was_p) and len(was_q) and min(p[8], q[8]) < 0.6 and iou(
                        box_of(p), box_of(q)) > 0.1 and (p[2] - q[2]) * (was_p[0, 2] - was_q[0, 2]) < 0:
                    crossed = True
    assert crossed


def test_detections_are_the_true_boxes_with_noise_misses_and_false_positives(clip):
    """Each detection is a gt box (cut to the frame) moved by a few pixels, or a box on the background."""
    root = clip[0]
    gt, det = read_gt(root), read_det(root)
    matched, false = [], []
    for f in range(1, N + 1):
        rows = gt[gt[:, 0] == f]
        for d in det[det[:, 0] == f]:
            near = []
            for row in rows:
                truth = np.array(in_frame(box_of(row)))
                w, h = truth[2] - truth[0], truth[3] - truth[1]
                err = np.array(box_of(d)) - truth
                if (np.abs(err) <= np.array([0.35 * w, 0.15 * h, 0.35 * w, 0.15 * h]) + 0.01).all():
                    near.append((iou(box_of(d), truth), row[1], row[7], row[8], *err / (w, h, w, h)))
            seen = [n for n in near if n[3] >= 0.3]   # boxes of people in each other's way may fit both
            assert seen or not near, (f, d, near)     # never on someone mostly hidden
            if seen:
                matched.append(max(seen)[1:])
            else:
                assert max(iou(box_of(d), in_frame(box_of(r))) for r in rows) < 0.2 and d[6] <= 0.5, (f, d)
                false.append(d)
    matched = np.array(matched)
    assert 3 <= len(false) <= 30
    assert 0.01 < np.abs(matched[:, 3:]).mean() < 0.1        # a few pixels of noise
    assert set(matched[:, 1]) == {1, 7, 8}                   # the ignored figures are detected too
    clear = ((gt[:, 7] == 1) & (gt[:, 8] >= 0.7)).sum()
    found = ((matched[:, 1] == 1) & (matched[:, 2] >= 0.7)).sum()
    assert 0.85 * clear <= found < clear                     # most people in view are found, not all


def test_make_clip_takes_only_its_own_folder_and_is_quick(clip, tmp_path):
    assert clip[2] < 15, f'the default clip took {clip[2]:.1f} s'
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    with pytest.raises(ValueError, match='mine'):
        clips.make_clip(mine, frames=3, progress=False)
    assert (mine / 'notes.txt').read_text() == 'keep me' and not (mine / 'img1').exists()
    seq = tmp_path / 'seq'
    clips.make_clip(seq, frames=12, people=2, progress=False)
    clips.make_clip(seq, seed=5, frames=4, people=2, progress=False)   # a previous clip is replaced
    assert len(list((seq / 'img1').iterdir())) == 4 and read_gt(seq)[:, 0].max() == 4
    with pytest.raises(ValueError, match='frames'):
        clips.make_clip(seq, frames=0)


def test_prepare_make_clip_writes_and_says_what_next_and_refuses_flag_mixes(tmp_path, capsys):
    seq = tmp_path / 'clip'
    prepare.main(['--make-clip', str(seq), '--frames', '5', '--people', '2', '--seed', '1'])
    out = capsys.readouterr().out
    assert f'python track.py --name demo_demo --sequence {seq} --output track_results' in out
    assert len(list((seq / 'img1').iterdir())) == 5
    other = tmp_path / 'other'
    for argv, flag in ((['--make-clip', str(other), '--download_path', str(seq)], '--make-clip'),
                       (['--make-clip', str(other), '--make-demo', str(tmp_path / 'd')], '--make-clip'),
                       (['--make-clip', str(other), '--frames', '0'], '--frames'),
                       (['--make-clip', str(other), '--people', '0'], '--people'),
                       (['--frames', '10'], '--make-clip')):
        with pytest.raises(SystemExit):
            prepare.main(argv)
        assert flag in capsys.readouterr().err, argv
    assert not other.exists()
