"""Tests of reid/data/synthetic.py: determinism, Market-1501 naming and the split rules a re-ID evaluation relies on.

The raw tiny set comes from the session fixture `tiny_market` (conftest.py); a few tests generate their own.
"""
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.data import synthetic
from reid.data.images import parse_market_name


def checksums(root):
    """{relative path: sha256} of every file under root."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def labelled(root, folder):
    return [(n, *parse_market_name(n)) for n in sorted(p.name for p in (Path(root) / folder).iterdir())]


def test_same_seed_gives_identical_bytes_even_with_a_worker_pool(tiny_market, tmp_path):
    again = tmp_path / 'again'
    synthetic.make_dataset(again, size='tiny', seed=0, workers=2)
    assert checksums(again) == checksums(tiny_market)


def test_another_seed_gives_other_images(tiny_market, tmp_path):
    other = tmp_path / 'other'
    synthetic.make_dataset(other, size='tiny', seed=1)
    a, b = checksums(tiny_market), checksums(other)
    common = set(a) & set(b)
    assert sum(a[k] != b[k] for k in common) == len(common)
    assert set(a) != set(b)


def test_counts_match_the_files_written(tiny_market):
    counts = json.loads((tiny_market / synthetic.MARKER).read_text())['counts']
    for folder in synthetic.FOLDERS:
        files = list((tiny_market / folder).iterdir())
        assert len(files) == counts[folder] > 0
    gallery = labelled(tiny_market, 'bounding_box_test')
    assert counts['distractors'] == sum(pid == 0 for _, pid, _ in gallery) > 0
    assert counts['junk'] == sum(pid == -1 for _, pid, _ in gallery) > 0
    assert counts['train_ids'] == len({pid for _, pid, _ in labelled(tiny_market, 'bounding_box_train')})
    assert counts['test_ids'] == len({pid for _, pid, _ in labelled(tiny_market, 'query')})


def test_images_are_market_sized_rgb_jpegs(tiny_market):
    for path in sorted(tiny_market.rglob('*.jpg')):
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ('JPEG', 'RGB', (64, 128)), path


def test_names_follow_market_pattern_and_split_rules(tiny_market):
    import re
    pattern = re.compile(r'^(-1|\d{4})_c\d+s\d_\d{6}_\d{2}\.jpg$')
    for path in tiny_market.rglob('*.jpg'):
        assert pattern.match(path.name), path.name
    train = labelled(tiny_market, 'bounding_box_train')
    query = labelled(tiny_market, 'query')
    gallery = labelled(tiny_market, 'bounding_box_test')
    gt = labelled(tiny_market, 'gt_bbox')
    train_ids = {pid for _, pid, _ in train}
    test_ids = {pid for _, pid, _ in query}
    assert not train_ids & test_ids
    assert min(train_ids | test_ids) >= 1            # 0 and -1 only appear as gallery distractors / junk
    gallery_ids = {pid for _, pid, _ in gallery}
    assert gallery_ids == test_ids | {0, -1}
    # about one query per (id, camera), and every query has a match in another camera
    assert max(Counter((pid, cam) for _, pid, cam in query).values()) == 1
    seen = defaultdict(set)
    for _, pid, cam in gallery:
        seen[pid].add(cam)
    for name, pid, cam in query:
        assert seen[pid] - {cam}, name
        assert cam in seen[pid], name
    # gt_bbox has several extra views for every (query id, camera), for multi-query
    gt_pairs = Counter((pid, cam) for _, pid, cam in gt)
    assert all(gt_pairs[pid, cam] >= 1 for _, pid, cam in query)
    # every training id is seen by at least two cameras, with at least two images
    train_cams = defaultdict(set)
    for _, pid, cam in train:
        train_cams[pid].add(cam)
    assert min(len(c) for c in train_cams.values()) >= 2


def test_fifteen_cameras_give_multi_digit_camera_names(tmp_path):
    root = tmp_path / 'msmt_like'
    counts = synthetic.make_dataset(root, size='tiny', seed=3, n_cameras=15)
    cams = {parse_market_name(p.name)[1] for p in root.rglob('*.jpg')}
    assert max(cams) > 9 and cams <= set(range(1, 16))
    assert counts['cameras'] == len(cams)
    assert any(p.name.split('_')[1].startswith(f'c{c}s') for c in cams if c > 9 for p in root.rglob('*.jpg'))


def test_market_preset_has_market_1501_counts():
    specs = synthetic.plan_dataset('market', seed=0)
    counts = synthetic.dataset_counts(specs)
    assert (counts['train_ids'], counts['bounding_box_train']) == (751, 12936)
    assert (counts['test_ids'], counts['query'], counts['bounding_box_test']) == (750, 3368, 19732)
    assert (counts['distractors'], counts['junk']) == (2793, 3819)
    assert len({s.name for s in specs}) == len(specs)   # names are unique across all folders


def test_single_cues_are_shared_but_combinations_are_not():
    # the task must not be solvable by one colour: each single cue is shared by many of the 200 demo ids
    specs = synthetic.plan_dataset('demo', seed=0)
    ids = sorted({s.look_key[1] for s in specs if s.mode == 'person'})
    looks = [synthetic.identity_look(0, 1, pid) for pid in ids]
    for cue in ('upper', 'lower', 'pattern', 'hair', 'skin', 'accessory', 'shoes'):
        values = Counter(getattr(look, cue) for look in looks)
        assert max(values.values()) / len(ids) < 0.5, cue
        assert len(values) > 1
    discrete = Counter((lk.upper, lk.upper2 if lk.pattern else None, lk.pattern, lk.sleeves, lk.lower, lk.lower_kind,
                        lk.hair, lk.long_hair, lk.skin, lk.accessory) for lk in looks)
    assert len(discrete) >= 0.95 * len(ids)


def test_identity_is_stable_and_pixels_vary_per_image():
    look_a = synthetic.identity_look(0, 1, 7)
    assert synthetic.identity_look(0, 1, 7) == look_a
    specs = [s for s in synthetic.plan_dataset('tiny', seed=0) if s.mode == 'person']
    first = specs[0]
    same_id = [s for s in specs if s.look_key == first.look_key][:3]
    pixels = [np.asarray(synthetic.render_image(0, s), dtype=np.float32) for s in same_id]
    assert len(pixels) == 3
    assert all(np.abs(pixels[0] - p).mean() > 1 for p in pixels[1:])
    assert np.array_equal(np.asarray(synthetic.render_image(0, first)), np.asarray(synthetic.render_image(0, first)))


def test_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'thesis.txt').write_text('precious')
    with pytest.raises(ValueError, match='mine.*not empty'):
        synthetic.make_dataset(foreign, size='tiny')
    assert (foreign / 'thesis.txt').read_text() == 'precious'

    ours = tmp_path / 'ours'
    synthetic.make_dataset(ours, size='tiny', seed=0)
    (ours / 'query' / 'stale_0001_c1s1_000001_00.jpg').write_bytes(b'x')
    (ours / 'pytorch').mkdir()
    (ours / 'pytorch' / 'keep.txt').write_text('prepared')
    synthetic.make_dataset(ours, size='tiny', seed=0)
    assert not (ours / 'query' / 'stale_0001_c1s1_000001_00.jpg').exists()
    assert (ours / 'pytorch' / 'keep.txt').read_text() == 'prepared'
    assert synthetic.read_marker(ours)['complete'] is True


@pytest.mark.parametrize('kwargs, message', [(dict(size='huge'), 'size'), (dict(n_cameras=1), 'n_cameras')])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.make_dataset(tmp_path / 'x', **kwargs)
    assert not (tmp_path / 'x').exists()


LAYOUT_NAMES = {   # independent of the layouts' writers: each dataset's published naming
    'duke': r'^(bounding_box_train|bounding_box_test|query)/(-1|\d{4})_c\d_f\d{7}\.jpg$',
    'msmt17': r'^(train|test)/(\d{4})/\2_\d{3}_(0[1-9]|1[0-5])_0303morning_\d{4}_0\.jpg$',
    'cuhk03': r'^(detected|labeled)/(bounding_box_train|bounding_box_test|query)/\d{4}_c[12]_\d+\.png$',
    'veri': r'^image_(train|query|test)/\d{4}_c0[0-2]\d_\d{8}_0\.jpg$',
    'vehicleid': r'^image/\d{7}\.jpg$',
    'cub': r'^images/(\d{3})\.Bird_\1/Bird_\1_\d{4}_\d+\.jpg$',
    'viper': r'^cam_[ab]/\d{3}_\d+\.bmp$',
}


@pytest.mark.parametrize('layout', sorted(LAYOUT_NAMES))
def test_every_layout_plan_uses_the_real_naming_and_is_deterministic(layout):
    import re
    files, texts = synthetic.plan_layout(layout, 'tiny', seed=0)
    again = synthetic.plan_layout(layout, 'tiny', seed=0)
    assert [(rel, spec) for rel, spec in files] == again[0] and texts == again[1]
    assert len({rel for rel, _ in files}) == len(files) > 0
    for rel, _ in files:
        assert re.match(LAYOUT_NAMES[layout], rel), rel
    if layout == 'msmt17':   # list lines `relative/path label`, and every listed file is written
        listed = [line.split()[0] for name in ('train', 'val') for line in texts[f'list_{name}.txt'].splitlines()]
        assert sorted('train/' + p for p in listed) == sorted(rel for rel, _ in files if rel.startswith('train/'))
    if layout == 'vehicleid':
        ids = [set(line.split()[1] for line in texts[f'train_test_split/test_list_{n}.txt'].splitlines())
               for n in (800, 1600, 2400)]
        assert ids[0] < ids[1] < ids[2]
        train = {line.split()[1] for line in texts['train_test_split/train_list.txt'].splitlines()}
        assert not train & ids[2]


def test_make_layout_writes_files_refuses_foreign_folders_and_replaces_its_own(tmp_path):
    root = tmp_path / 'viper'
    counts = synthetic.make_layout(root, 'viper', size='tiny', seed=0)
    assert counts == {'cam_a': 24, 'cam_b': 24}
    first = checksums(root)
    (root / 'cam_a' / 'stale.bmp').write_bytes(b'x')
    synthetic.make_layout(root, 'viper', size='tiny', seed=0)
    assert checksums(root) == first
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'thesis.txt').write_text('precious')
    with pytest.raises(ValueError, match='not empty'):
        synthetic.make_layout(foreign, 'cub')
    with pytest.raises(ValueError, match='layout'):
        synthetic.make_layout(tmp_path / 'x', 'imagenet')
    assert (foreign / 'thesis.txt').read_text() == 'precious'


def test_person_boxes_side_file_keeps_the_images_and_bounds_the_drawn_person(tiny_market, tmp_path, monkeypatch):
    """boxes=True writes person_boxes.csv and the same image bytes; each box bounds the pixels the person changes,
    found here by rendering each image again with the person drawn onto a throw-away copy (same random draws)."""
    boxed = tmp_path / 'boxed'
    synthetic.make_dataset(boxed, size='tiny', seed=0, boxes=True)
    images = {k: v for k, v in checksums(boxed).items() if k.endswith('.jpg')}
    assert images == {k: v for k, v in checksums(tiny_market).items() if k.endswith('.jpg')}
    boxes = synthetic.read_person_boxes(boxed)
    assert set(boxes) == set(images)
    specs = {f'{s.folder}/{s.name}': s for s in synthetic.plan_dataset('tiny', 0)}
    with_person = {rel: np.asarray(synthetic.render_image(0, specs[rel]), np.int16) for rel in list(boxes)[::3]}
    real = synthetic.draw_person
    monkeypatch.setattr(synthetic, 'draw_person', lambda img, *a: real(img.copy(), *a))
    close = 0
    for rel, pixels in with_person.items():
        changed = (np.abs(pixels - np.asarray(synthetic.render_image(0, specs[rel]), np.int16)) > 24).any(axis=2)
        ys, xs = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        x0, y0, x1, y1 = boxes[rel]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 128
        if len(xs):  # blur spreads a change by a pixel or two
            assert x0 - 3 <= xs[0] and xs[-1] < x1 + 3 and y0 - 3 <= ys[0] and ys[-1] < y1 + 3, rel
            close += max(abs(xs[0] - x0), abs(xs[-1] + 1 - x1), abs(ys[0] - y0), abs(ys[-1] + 1 - y1)) <= 3
    assert close >= 0.7 * len(with_person)  # tight, not just inside the frame (occluders hide some edges)
    monkeypatch.undo()
    synthetic.make_dataset(boxed, size='tiny', seed=0)
    assert not (boxed / synthetic.BOXES_FILE).exists()  # a re-run without boxes drops the stale file
    import prepare
    prepare.main(['--make-demo', str(boxed), '--size', 'tiny', '--boxes'])
    assert synthetic.read_person_boxes(boxed) == boxes
