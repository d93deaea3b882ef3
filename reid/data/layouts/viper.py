"""VIPeR: cam_a/, cam_b/ (632 pairs), a seeded random 316/316 split per prepare.py --split K; query cam_a,
gallery cam_b; mean and std over splits.
"""
import re

import numpy as np

from reid.data.layouts.common import (PERSON, SPLIT, Item, Layout, image_files, leading_group, parse_all,
                                     require_folders)

_LEADING_NUMBER = re.compile(r'^(\d+)')


def read_viper(root, options):
    """VIPeR: cam_a/, cam_b/, one image of each person per camera, paired by the leading number of the name.

    --split K draws (seeded by K) half of the people for training and half for testing (316/316);
    query = cam_a, gallery = cam_b of the test people.
    """
    root = require_folders(root, 'cam_a', 'cam_b', what='a VIPeR download')
    by_number = {}
    for cam, sub in ((1, 'cam_a'), (2, 'cam_b')):
        paths = image_files(root / sub)
        numbers = parse_all(paths, lambda p: leading_group(_LEADING_NUMBER, p.name),
                            'VIPeR names <number>_<angle>.bmp (000_45.bmp)')
        for path, number in zip(paths, numbers):
            if number in by_number.get(cam, {}):
                raise ValueError(f'{path}: a second image of person {number} in {sub}')
            by_number.setdefault(cam, {})[number] = path
    unpaired = sorted(set(by_number[1]) ^ set(by_number[2]))
    if unpaired:
        first = by_number[1].get(unpaired[0]) or by_number[2][unpaired[0]]
        raise ValueError(f'{first}: no image of this person in the other camera ({len(unpaired)} unpaired)')
    people = sorted(by_number[1])
    order = np.random.default_rng(int(options.get('split') or 0)).permutation(len(people))
    train_ids = {people[i] for i in order[:len(people) // 2]}
    train = sorted(Item(by_number[c][n], n, c) for n in train_ids for c in (1, 2))
    test = [n for n in people if n not in train_ids]
    return {'train_all': train, 'query': [Item(by_number[1][n], n, 1) for n in test],
            'gallery': [Item(by_number[2][n], n, 2) for n in test]}


def generate_viper(drawn):
    """cam_a/NNN_angle.bmp, cam_b/NNN_angle.bmp: one image per person and camera."""
    files = []
    for number, pid in enumerate(drawn.train_ids + drawn.test_ids):
        for cam, sub in ((1, 'cam_a'), (2, 'cam_b')):
            s = next(x for x in drawn.people[pid] if x.cam == cam)
            files.append((f'{sub}/{number:03d}_{45 * (number % 4)}.bmp', s))
    return files, {}


LAYOUT = Layout('viper', read_viper, PERSON, ('cam_a', 'cam_b'),
                '316/316 random split per prepare.py --split K; query cam_a, gallery cam_b; mean and std '
                'over 10 splits', generate_viper,
                options=(SPLIT,),
                trials='split', cameras=2)
