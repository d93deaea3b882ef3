"""iLIDS-VID: i-LIDS-VID/sequences/cam1|cam2/personNNN/ (one tracklet per person and camera) and train-test people
splits/train_test_splits_ilidsvid.mat (10 splits of 150/150 people); query cam1, gallery cam2; --split K.
"""
import re

from reid.data.layouts.common import (PERSON, SPLIT, Layout, drawn_rng, image_files, mat_bytes, paired_splits,
                                     people_split, require_folders, track_length, tracklet_frames)

SPLITS_FILE = 'train-test people splits/train_test_splits_ilidsvid.mat'
_PERSON = re.compile(r'^person\d+$')


def read_ilidsvid(root, options):
    """iLIDS-VID as its tar unpacks: i-LIDS-VID/sequences/cam1|cam2/personNNN/*.png and train-test people
    splits/train_test_splits_ilidsvid.mat (i-LIDS-VID/images/, single frames, is not read).

    --split K (0-9) takes row K+1 of the file's `ls_set` (10 x 300 indices, 1-based, into the sorted person
    folders): its first 150 people test, the other 150 train, as torchreid (following Wang et al., ECCV 2014).
    Train: both cameras' tracklets of the train people; query: the test people's cam1 tracklets, gallery: their
    cam2 ones. Published counts (the dataset's page; torchreid's docstring): 300 people, 600 tracklets, 2
    cameras; per split train 150 ids / 300 tracklets, query 150 tracklets, gallery 150 tracklets.
    """
    root = require_folders(root, 'i-LIDS-VID/sequences/cam1', 'i-LIDS-VID/sequences/cam2',
                           what='an iLIDS-VID download')
    people = {cam: _people(root / 'i-LIDS-VID' / 'sequences' / f'cam{cam}') for cam in (1, 2)}
    unpaired = sorted(set(people[1]) ^ set(people[2]))
    if unpaired:
        raise ValueError(f'{root / "i-LIDS-VID" / "sequences"}: {unpaired[0]} is in one camera only '
                         f'({len(unpaired)} such)')
    train, test = people_split(root / SPLITS_FILE, sorted(people[1]), int(options.get('split') or 0))
    return paired_splits(people, train, test, lambda person, cam: f'{person}_cam{cam}')


def _people(folder):
    """{person folder name: its frames} of one camera's sequences folder."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    odd = [n for n in names if not _PERSON.match(n)]
    if odd:
        raise ValueError(f'{folder / odd[0]}: not a personNNN folder')
    return {name: image_files(folder / name) for name in names}


def generate_ilidsvid(drawn):
    """i-LIDS-VID/sequences/cam1|cam2/personNNN/camK_personNNN_FFFFF.png for every drawn person (at most 300)
    and the 10 splits file (each row a seeded permutation of 1..people)."""
    import numpy as np

    people = sorted(drawn.train_ids + drawn.test_ids)[:300]
    files = []
    for pid in people:
        for cam in (1, 2):
            length = track_length(drawn, 5, pid, cam)
            start = int(drawn_rng(drawn, 6, pid, cam).integers(1, 2000))
            for spec in tracklet_frames(cam, 'person', (1, pid), (3, pid, cam), length):
                files.append((f'i-LIDS-VID/sequences/cam{cam}/person{pid:03d}/cam{cam}_person{pid:03d}_'
                              f'{start + spec.frame:05d}.png', spec))
    table = np.array([drawn_rng(drawn, 7, k).permutation(len(people)) + 1 for k in range(10)], float)
    return files, {SPLITS_FILE: mat_bytes({'ls_set': table})}


LAYOUT = Layout('ilidsvid', read_ilidsvid, PERSON, ('i-LIDS-VID', 'train-test people splits'),
                'tracklets; split K of train_test_splits_ilidsvid.mat (150/150 people) per prepare.py --split K; '
                'query cam1, gallery cam2; mean and std over 10 splits', generate_ilidsvid, options=(SPLIT,),
                trials='split', cameras=2, tracklets=True)
