"""MSMT17 V1 (train/, test/) or V2 (mask_train_v2/, mask_test_v2/) with list_{train,val,query,gallery}.txt;
camera = the name's third field (1-15); train and test number their people from 0 each.
"""
import re
from pathlib import Path

from reid.data.layouts.common import INT, PERSON, Item, Layout, parse_all

_MSMT_NAME = re.compile(r'^(\d+)_(\d+)_(\d+)_')   # 0000_000_01_0303morning_0015_0.jpg: id, index, camera


def read_msmt17(root, options):
    """MSMT17 V1 (train/, test/) or V2 (mask_train_v2/, mask_test_v2/) with list_{train,val,query,gallery}.txt.

    `val` is the official list_val.txt; train_all is list_train plus list_val. Camera = the name's third field.
    The lists number train and test ids from 0 each, so the same number is two people (ids_reused).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f'{root}: download folder not found (set --download_path)')
    for train_dir, test_dir in (('train', 'test'), ('mask_train_v2', 'mask_test_v2')):
        if (root / train_dir).is_dir() and (root / test_dir).is_dir():
            break
    else:
        raise ValueError(f'{root}: neither train/ and test/ (MSMT17_V1) nor mask_train_v2/ and mask_test_v2/ '
                         '(MSMT17_V2) found')
    lists = {split: _msmt_list(root, f'list_{name}.txt', folder) for split, name, folder in
             (('train', 'train', train_dir), ('val', 'val', train_dir), ('query', 'query', test_dir),
              ('gallery', 'gallery', test_dir))}
    val_paths = {item.path for item in lists['val']}
    lists['train'] = [item for item in lists['train'] if item.path not in val_paths]
    lists['train_all'] = sorted(set(lists['train']) | set(lists['val']))
    return lists


def _msmt_list(root, name, folder):
    list_file = root / name
    if not list_file.is_file():
        raise ValueError(f'{list_file}: list file missing (MSMT17 has list_train, list_val, list_query, list_gallery)')
    entries = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not INT.match(parts[1]):
            raise ValueError(f'{list_file}: line {number}: expected `relative/path label`, got {line.strip()!r}')
        path = root / folder / parts[0]
        if not path.is_file():
            raise ValueError(f'{path}: listed in {list_file} (line {number}) but not found')
        entries.append((path, int(parts[1])))

    def parse(entry):
        path, label = entry
        match = _MSMT_NAME.match(path.name)
        if match is None:
            raise ValueError(path)
        return Item(path, f'{label:04d}', int(match.group(3)))
    items = parse_all(entries, parse, 'MSMT17 names <id>_<index>_<camera>_... (0000_000_01_0303morning_0015_0.jpg)')
    if not items:
        raise ValueError(f'{list_file}: no images listed')
    return sorted(items)


def generate_msmt17(drawn):
    """V1: train/, test/, list files; ids numbered from 0 in train and in test."""
    files, lists = [], {name: [] for name in ('train', 'val', 'query', 'gallery')}
    for ids, top, folders in ((drawn.train_ids, 'train', ('bounding_box_train',)),
                              (drawn.test_ids, 'test', ('query', 'bounding_box_test'))):
        for label, pid in enumerate(ids):
            mine = [s for s in drawn.people[pid] if s.folder in folders]
            for k, s in enumerate(mine):
                rel = f'{label:04d}/{label:04d}_{k:03d}_{s.cam:02d}_0303morning_{k:04d}_0.jpg'
                files.append((f'{top}/{rel}', s))
                name = ('val' if k == 0 and len(mine) > 1 else 'train') if top == 'train' else \
                    'query' if s.folder == 'query' else 'gallery'
                lists[name].append(f'{rel} {label}')
    return files, {f'list_{name}.txt': ''.join(line + '\n' for line in lines) for name, lines in lists.items()}


LAYOUT = Layout('msmt17', read_msmt17, PERSON, ('list_train.txt', 'list_query.txt'),
                'single query; val = list_val.txt; same id and camera is junk', generate_msmt17, ids_reused=True,
                cameras=15)
