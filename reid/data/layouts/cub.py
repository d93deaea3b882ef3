"""CUB-200-2011: images/NNN.Name/*.jpg; classes 1-100 train, 101-200 test; query = gallery (each query's own
image excluded: Recall@K = Rank@K).
"""
import os
import re
from pathlib import Path

from reid.data.layouts.common import BIRD, Item, Layout, image_files, leading_group, parse_all, require_folders

_CUB_CLASS = re.compile(r'^(\d+)\.')               # images/001.Black_footed_Albatross/


def read_cub(root, options):
    """CUB-200-2011: images/NNN.Name/*.jpg; classes 1-100 train, 101-200 test; query = gallery = test images."""
    root = require_folders(root, 'images', what='a CUB-200-2011 download')
    folders = sorted(Path(e.path) for e in os.scandir(root / 'images') if e.is_dir())
    classes = parse_all(folders, lambda p: int(leading_group(_CUB_CLASS, p.name)),
                        'CUB class folders NNN.Name (001.Black_footed_Albatross)')
    train, test = [], []
    for folder, number in zip(folders, classes):
        items = [Item(path, f'{number:03d}', None) for path in image_files(folder)]
        (train if number <= 100 else test).extend(items)
    return {'train_all': train, 'query': test, 'gallery': list(test)}


def generate_cub(drawn):
    """images/NNN.Name/Name_NNNN_K.jpg: classes 1-100 train, 101-200 test."""
    if max(len(drawn.train_ids), len(drawn.test_ids)) > 100:
        raise ValueError(f'size={drawn.size!r}: CUB has 100 train and 100 test classes; use tiny or demo')
    files = []
    for first, ids in ((1, drawn.train_ids), (101, drawn.test_ids)):
        for number, pid in enumerate(ids, first):
            for k, s in enumerate(x for x in drawn.people[pid] if x.folder != 'gt_bbox'):
                files.append((f'images/{number:03d}.Bird_{number:03d}/Bird_{number:03d}_{k:04d}_{pid}.jpg', s))
    return files, {}


LAYOUT = Layout('cub', read_cub, BIRD, ('images',),
                'query = gallery = test classes 101-200; only the query itself is excluded; Recall@K = Rank@K',
                generate_cub)
