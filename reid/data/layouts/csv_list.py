"""Your own photos listed in a CSV file with the header `path,id,camera,split` (split: train, query or gallery;
camera may be empty), paths relative to the file's folder.
"""
import csv
from pathlib import Path

from reid.data.layouts.common import PERSON, Item, Layout, Option

CSV_SPLITS = {'train': 'train_all', 'query': 'query', 'gallery': 'gallery'}


def read_csv(path, options):
    """A CSV file with the header `path,id,camera,split` (split: train, query or gallery; camera may be empty).

    Relative paths are relative to the CSV file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: CSV file not found (set --csv)')
    splits = {split: [] for split in CSV_SPLITS.values()}
    missing = []
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in reader.fieldnames or []]
        if header[:4] != ['path', 'id', 'camera', 'split']:
            raise ValueError(f'{path}: the first line must be the header path,id,camera,split (got {",".join(header)})')
        for number, row in enumerate(reader, 2):
            values = [(v or '').strip() for v in (row['path'], row['id'], row['camera'], row['split'])]
            src, pid, cam, split = values
            if split not in CSV_SPLITS:
                raise ValueError(f'{path}: line {number}: split {split!r}, expected train, query or gallery')
            if not src or not pid:
                raise ValueError(f'{path}: line {number}: empty path or id')
            src = Path(src) if Path(src).is_absolute() else path.parent / src
            if not src.is_file():
                missing.append(src)
            splits[CSV_SPLITS[split]].append(Item(src, pid, cam or None))
    if missing:
        raise ValueError(f'{missing[0]}: listed in {path} but not found ({len(missing)} missing files)')
    for split, items in splits.items():
        if not items:
            raise ValueError(f'{path}: no row with split {split.replace("train_all", "train")}')
    return {split: sorted(items) for split, items in splits.items()}


LAYOUT = Layout('csv', read_csv, PERSON, (), 'as custom',
                options=(Option('--csv', dict(default=None, metavar='FILE',
                                              help='your photos listed as path,id,camera,split'),
                                selects=True, source=True),),
                detect=False)
