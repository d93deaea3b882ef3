"""DukeMTMC-VideoReID: train/, query/, gallery/, each `<id>/<tracklet>/<frames>`, frames `0001_C6_F0099_X30823.jpg`
(or the older `0001C6F0099X30823.jpg`); query/ against gallery/, same id and camera is junk.
"""
import os
import re

from reid.data.layouts.common import (PERSON, Layout, drawn_rng, image_files, require_folders, track_length,
                                     tracklet_frames, tracklet_items)

# id, camera, frame within the tracklet, frame within the camera's video; underscores in the current download
_FRAME = re.compile(r'^(\d{4})_?C(\d)_?F(\d+)_?X(\d+)\.jpg$')
_SPLITS = (('train_all', 'train'), ('query', 'query'), ('gallery', 'gallery'))


def read_dukev(root, options):
    """DukeMTMC-VideoReID (github.com/Yu-Wu/DukeMTMC-VideoReID) as its zip unzips: train/, query/, gallery/,
    each `<id>/<tracklet>/<frames>.jpg`; the camera is the frame name's `C<n>` (1-8), as torchreid reads it.

    A tracklet is named `<id>_<tracklet folder>`. The gallery's ids include 408 distractor people seen by one
    camera only: ordinary ids that match no query (torchreid reads them so too). Published counts (the
    dataset's README; torchreid's docstring; a torchreid-style reader's printed table): train 702 ids, 2,196
    tracklets, 369,656 frames; query 702 ids, 702 tracklets, 111,848 frames; gallery 1,110 ids (702 + 408),
    2,636 tracklets, 445,764 frames.
    """
    root = require_folders(root, 'train', 'query', 'gallery', what='a DukeMTMC-VideoReID download')
    return {split: _split_tracklets(root / folder) for split, folder in _SPLITS}


def _split_tracklets(folder):
    """[Item] of every frame of a split folder `<id>/<tracklet>/`, checked: name, id, one camera per tracklet."""
    items = []
    for pid in sorted(os.listdir(folder)):
        if not (folder / pid).is_dir():
            continue
        if not re.match(r'^\d{4}$', pid):
            raise ValueError(f'{folder / pid}: not a 4-digit id folder (DukeMTMC-VideoReID has <split>/<id>/'
                             '<tracklet>/)')
        for tracklet in sorted(os.listdir(folder / pid)):
            if (folder / pid / tracklet).is_dir():
                frames = image_files(folder / pid / tracklet)
                items += tracklet_items(frames, pid, _camera(frames, pid), f'{pid}_{tracklet}')
    if not items:
        raise ValueError(f'{folder}: no tracklets (expected <id>/<tracklet>/<frames>.jpg)')
    return items


def _camera(frames, pid):
    """The one camera of a tracklet's frames, from their names; ValueError naming the first odd frame."""
    cams = []
    for path in frames:
        match = _FRAME.match(path.name)
        if match is None:
            raise ValueError(f'{path}: name does not match the DukeMTMC-VideoReID frame name '
                             '<id>_C<camera>_F<frame>_X<frame>.jpg (0001_C6_F0099_X30823.jpg)')
        if match.group(1) != pid:
            raise ValueError(f'{path}: a frame of id {match.group(1)} in the folder of id {pid}')
        cams.append(int(match.group(2)))
        if cams[-1] != cams[0]:
            raise ValueError(f'{path}: camera {cams[-1]} in a tracklet of camera {cams[0]} ({frames[0].name})')
    return cams[0]


def generate_dukev(drawn):
    """train/, query/, gallery/ of `<id>/<tracklet>/<id>_C<cam>_F<frame>_X<video frame>.jpg`: per training id
    1-2 tracklets per camera; per test id one query tracklet and a gallery tracklet in each of its cameras (the
    query's own camera included); gallery-only distractor people seen by one camera."""
    tracks = {'train': [], 'query': [], 'gallery': []}   # (id, camera, look, tracklet number)
    for pid in drawn.train_ids:
        cams = [s.cam for s in drawn.people[pid] if s.folder == 'bounding_box_train']
        numbers = iter(range(1, 100))
        for cam in sorted(set(cams)):
            tracks['train'] += [(pid, cam, (1, pid), next(numbers)) for _ in range(1 + (cams.count(cam) >= 3))]
    for pid in drawn.test_ids:
        cams = sorted({s.cam for s in drawn.people[pid] if s.folder == 'query'})
        tracks['query'].append((pid, cams[0], (1, pid), 1))
        tracks['gallery'] += [(pid, cam, (1, pid), k) for k, cam in enumerate(cams, 2)]
    first = max(drawn.people) + 1   # DukeMTMC's 408 distractors are real people, seen by one camera
    for i in range(max(1, round(0.58 * len(drawn.test_ids)))):
        cam = int(drawn_rng(drawn, 2, i).integers(1, 9))
        tracks['gallery'].append((first + i, cam, (4, i), 1))
    files = []
    for split, entries in tracks.items():
        for pid, cam, look, number in entries:
            length = track_length(drawn, 3, pid, number)
            start = int(drawn_rng(drawn, 4, pid, number).integers(100, 90000))
            for f, spec in enumerate(tracklet_frames(cam, 'person', look, (2, pid, number), length), 1):
                files.append((f'{split}/{pid:04d}/{number:04d}/{pid:04d}_C{cam}_F{f:04d}_X{start + 12 * f:05d}.jpg',
                              spec))
    return files, {}


LAYOUT = Layout('dukev', read_dukev, PERSON, ('train', 'query', 'gallery'),
                'tracklets; query/ against gallery/; same id and camera is junk', generate_dukev, cameras=8,
                tracklets=True)
