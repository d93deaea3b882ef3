"""PRID-2011: multi_shot/cam_a|cam_b/person_NNNN/ (persons 1-200 are seen by both cameras); the 178 of them with 27
frames or more in each camera, split 89/89 by a splits file or, without one, at random per --split K.
"""
import json
import logging
import re

import numpy as np

from reid.data.layouts.common import (PERSON, SPLIT, Layout, image_files, paired_splits, people_split,
                                     require_folders, tracklet_frames)

BOTH_CAMERAS = 200    # person_0001..0200 are the same people in cam_a and cam_b; higher numbers are not
MIN_FRAMES = 27       # in each camera, for the 178-person protocol
JSON_SPLITS, MAT_SPLITS = 'splits_prid2011.json', 'train_test_splits_prid.mat'
_PERSON = re.compile(r'^person_(\d{4})$')
logger = logging.getLogger(__name__)


def read_prid2011(root, options):
    """PRID-2011's multi-shot part as its zip unpacks (multi_shot/cam_a/person_0001..0385, cam_b/person_0001..0749,
    frames 0001.png...; single_shot/ is not read). Persons 1-200 are the same people in both cameras.

    The protocol's people: those of 1-200 with at least 27 frames in each camera (178 on the real data: a
    third-party reader's rule, asserted there to give 178; torchreid's splits_prid2011.json lists 178 people,
    89/89 per split, checked here). --split K (0-9) picks split K of, first found next to multi_shot/ or one
    folder up (splits_file):
    splits_prid2011.json (torchreid's: [{train: [person dirs], test: [...]}] x 10), or
    train_test_splits_prid.mat (shipped in the iLIDS-VID download's `train-test people splits/`: `ls_set`, 10 x
    178 1-based indices into those people sorted, the first 89 test). Without either (the PRID download has
    none) the split is this toolkit's own, not the original's: the same people, permuted with numpy's
    default_rng(K), the first half test. Query cam_a, gallery cam_b. Published counts: 200 people in both
    cameras, 400 tracklets (torchreid's docstring); per split train 89 ids / 178 tracklets, query 89, gallery 89.
    """
    root = require_folders(root, 'multi_shot/cam_a', 'multi_shot/cam_b', what='a PRID-2011 download')
    people = {cam: _people(root / 'multi_shot' / sub) for cam, sub in ((1, 'cam_a'), (2, 'cam_b'))}
    both = sorted(set(people[1]) & set(people[2]))
    chosen = [p for p in both if min(len(people[1][p]), len(people[2][p])) >= MIN_FRAMES]
    if len(chosen) < 2:
        raise ValueError(f'{root / "multi_shot"}: {len(chosen)} of persons 1-{BOTH_CAMERAS} have {MIN_FRAMES} '
                         'frames or more in both cameras; need at least 2')
    split = int(options.get('split') or 0)
    if split < 0:
        raise ValueError(f'--split {split}: a split number is 0 or more')
    source = splits_file(root)
    if source is not None and source.name == JSON_SPLITS:
        train, test = _json_split(source, split, both)
    elif source is not None:
        train, test = people_split(source, chosen, split)
    else:
        order = np.random.default_rng(split).permutation(len(chosen))
        test = sorted(chosen[i] for i in order[:len(chosen) // 2])
        train = sorted(set(chosen) - set(test))
    # which protocol the split is matters when splits are compared or averaged: said every time
    logger.info(f'PRID-2011 split {split}: ' + (str(source) if source else
                f'no {JSON_SPLITS} or {MAT_SPLITS} in {root} or {root.parent}, so this toolkit\'s own split '
                f'(the {len(chosen)} people permuted by numpy default_rng({split})), not torchreid\'s'))
    return paired_splits(people, train, test, lambda person, cam: f'{person}_cam_{"ab"[cam - 1]}')


def splits_file(root):
    """The splits file of the download at `root`: JSON_SPLITS, then MAT_SPLITS, beside multi_shot/ or one folder
    up (where torchreid keeps its JSON, beside prid_2011/); None when there is neither."""
    for folder in (root, root.parent):
        for name in (JSON_SPLITS, MAT_SPLITS):
            if (folder / name).is_file():
                return folder / name
    return None


def _people(folder):
    """{person folder: its frames} of one camera, persons 1-200 only (the others are not seen by both)."""
    out = {}
    for path in sorted(folder.iterdir()):
        match = _PERSON.match(path.name)
        if path.is_dir() and match is None:
            raise ValueError(f'{path}: not a person_NNNN folder')
        if path.is_dir() and int(match.group(1)) <= BOTH_CAMERAS:
            out[path.name] = image_files(path)
    return out


def _json_split(path, split, both):
    """(train, test) person folders of split `split` of torchreid's splits_prid2011.json, checked."""
    try:
        splits = json.loads(path.read_text())
        train, test = sorted(splits[split]['train']), sorted(splits[split]['test'])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f'{path}: not a list of {{"train": [...], "test": [...]}} splits ({err})') from None
    except IndexError:
        raise ValueError(f'--split {split}: {path} holds {len(splits)} splits (0-{len(splits) - 1})') from None
    unknown = sorted(set(train + test) - set(both))
    if unknown or set(train) & set(test):
        raise ValueError(f'{path}: split {split} names {(unknown or sorted(set(train) & set(test)))[0]}, '
                         f'{"not a person of 1-200 in both cameras" if unknown else "in train and in test"}')
    return train, test


def generate_prid2011(drawn):
    """multi_shot/cam_a|cam_b/person_NNNN/FFFF.png: drawn people numbered 1.. in both cameras (every sixth with
    a tracklet too short for the protocol in one camera), a few more people from 201 on in one camera each; no
    splits file, as the PRID download."""
    people = sorted(drawn.train_ids + drawn.test_ids)[:{'tiny': 10, 'demo': 60}.get(drawn.size, BOTH_CAMERAS)]
    tracks = []   # (camera, person number, look, frames)
    for number, pid in enumerate(people, 1):
        for cam in (1, 2):
            short = number % 6 == 0 and cam == 1 + number % 2
            tracks.append((cam, number, (1, pid), MIN_FRAMES - 8 if short else MIN_FRAMES + number % 5))
    for cam, extra in ((1, max(2, len(people) // 4)), (2, max(3, len(people) // 2))):
        tracks += [(cam, BOTH_CAMERAS + k, (4, 1000 * cam + k), 6 + k % 5) for k in range(1, extra + 1)]
    files = []
    for cam, number, look, length in tracks:
        for spec in tracklet_frames(cam, 'person', look, (4, cam, number), length):
            files.append((f'multi_shot/cam_{"ab"[cam - 1]}/person_{number:04d}/{spec.frame + 1:04d}.png', spec))
    return files, {}


LAYOUT = Layout('prid2011', read_prid2011, PERSON, ('multi_shot/cam_a', 'multi_shot/cam_b'),
                f'tracklets; persons 1-{BOTH_CAMERAS} with >= {MIN_FRAMES} frames in both cameras, split K of '
                f'{JSON_SPLITS} or {MAT_SPLITS} (else seeded by K) per prepare.py --split K; query cam_a, gallery '
                'cam_b; mean and std over 10 splits', generate_prid2011, options=(SPLIT,), trials='split',
                cameras=2, tracklets=True)
