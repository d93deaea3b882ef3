"""Dataset layouts: one table from a layout name to a small adapter that lists (source path, id, camera) per split.

prepare.py writes every layout the same way (copy or link, atomic swap, images.csv); nothing here copies a file.
"""
import csv
import os
import re
from collections import Counter, namedtuple
from pathlib import Path

import numpy as np

from reid.data.images import is_image_file, parse_market_name

# What an adapter returns per image: the source file, the id as a string (it names the output folder) and the
# camera (an int, a string naming a camera, or None when the layout has no cameras).
Item = namedtuple('Item', 'path id cam')
# What prepare.py writes per image: the same, plus the integer label evaluation uses and a camera that is
# always an int (an unknown camera is a negative number of its own; see with_labels_and_cameras).
Record = namedtuple('Record', 'path id label cam')
Layout = namedtuple('Layout', 'read size markers protocol trials ids_reused')

PERSON, VEHICLE, BIRD = (256, 128), (256, 256), (224, 224)
TEST_SPLITS = ('query', 'gallery', 'multi-query')
_MSMT_NAME = re.compile(r'^(\d+)_(\d+)_(\d+)_')   # 0000_000_01_0303morning_0015_0.jpg: id, index, camera
_LEADING_NUMBER = re.compile(r'^(\d+)')
_CUB_CLASS = re.compile(r'^(\d+)\.')               # images/001.Black_footed_Albatross/
_INT = re.compile(r'^-?\d+$')


def _folder(root, *subs, what):
    """Return Path(root) after checking it and its sub-folders `subs` exist; ValueError naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f'{root}: download folder not found (set --download_path)')
    missing = [sub for sub in subs if not (root / sub).is_dir()]
    if missing:
        raise ValueError(f'{root / missing[0]}: required folder missing ({what} has {", ".join(subs)})')
    return root


def _image_files(folder, recursive=False):
    """Sorted image files of `folder` (sub-folders too when `recursive`); ValueError when there are none."""
    folder = Path(folder)
    if recursive:
        paths = sorted(Path(d) / f for d, _, files in os.walk(folder) for f in files if is_image_file(f))
    else:
        paths = sorted(folder / n for n in os.listdir(folder) if is_image_file(n) and (folder / n).is_file())
    if not paths:
        raise ValueError(f'{folder}: no images found')
    return paths


def _parse_all(paths, parse, expected):
    """Return [parse(path)] for every path; ValueError naming the first path that does not parse and the count."""
    out, bad = [], []
    for path in paths:
        try:
            out.append(parse(path))
        except ValueError:
            bad.append(path)
    if bad:
        raise ValueError(f'{bad[0]}: name does not match {expected} ({len(bad)} of {len(paths)} files do not)')
    return out


def market_folder(folder):
    """Sorted [Item] of a folder of Market-style names (`0002_c1s1_000451_03.jpg`; Duke, CUHK03-NP, VeRi too)."""
    def parse(path):
        _, cam = parse_market_name(path)
        return Item(path, path.name.split('_', 1)[0], cam)   # the id as written (0002, 0000, -1)
    return _parse_all(_image_files(folder), parse, 'the Market-1501 pattern <id>_c<camera>... (0002_c1s1_000451_03.jpg)')


def read_market(root, options):
    """Market-1501 and DukeMTMC-reID: bounding_box_train/, bounding_box_test/ (gallery), query/, gt_bbox/."""
    root = _folder(root, 'bounding_box_train', 'bounding_box_test', 'query',
                   what='a Market-1501 / DukeMTMC-reID download')
    splits = {'train_all': market_folder(root / 'bounding_box_train'), 'query': market_folder(root / 'query'),
              'gallery': market_folder(root / 'bounding_box_test')}
    if (root / 'gt_bbox').is_dir():
        query_ids = {item.id for item in splits['query']}
        splits['multi-query'] = [item for item in market_folder(root / 'gt_bbox') if item.id in query_ids]
        if not splits['multi-query']:
            raise ValueError(f'{root / "gt_bbox"}: no image of a query id, so multi-query would be empty')
    return splits


def read_cuhk03(root, options):
    """CUHK03-NP (767/700 protocol): detected/ and labeled/, each a Market layout; --cuhk03 picks one."""
    kind = options.get('cuhk03') or 'detected'
    _folder(root, kind, what='a CUHK03-NP download')
    return read_market(Path(root) / kind, options)


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
        if len(parts) != 2 or not _INT.match(parts[1]):
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
    items = _parse_all(entries, parse, 'MSMT17 names <id>_<index>_<camera>_... (0000_000_01_0303morning_0015_0.jpg)')
    if not items:
        raise ValueError(f'{list_file}: no images listed')
    return sorted(items)


def read_veri(root, options):
    """VeRi-776: image_train/, image_query/, image_test/ (gallery), names `0001_c001_00016450_0.jpg`."""
    root = _folder(root, 'image_train', 'image_query', 'image_test', what='a VeRi-776 download')
    return {'train_all': market_folder(root / 'image_train'), 'query': market_folder(root / 'image_query'),
            'gallery': market_folder(root / 'image_test')}


def read_vehicleid(root, options):
    """VehicleID: image/ + train_test_split/{train_list, test_list_800|1600|2400}.txt (`image_name vehicle_id`).

    No cameras. Query/gallery = trial 0 of gallery_draw (per test id one random image in the gallery, the rest
    queries); evaluate_gpu.py --trials N re-draws them from the features.
    """
    root = _folder(root, 'image', 'train_test_split', what='a VehicleID download')
    size = int(options.get('test_size') or 800)
    train = _vehicleid_list(root, 'train_list.txt')
    test = _vehicleid_list(root, f'test_list_{size}.txt')
    in_gallery = gallery_draw([int(item.id) for item in test], seed=0)   # test is sorted by path: canonical
    return {'train_all': train, 'query': [t for t, g in zip(test, in_gallery) if not g],
            'gallery': [t for t, g in zip(test, in_gallery) if g]}


def _vehicleid_list(root, name):
    list_file = root / 'train_test_split' / name
    if not list_file.is_file():
        raise ValueError(f'{list_file}: list file missing (check --test_size: 800, 1600 or 2400)')
    items = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f'{list_file}: line {number}: expected `image_name vehicle_id`, got {line.strip()!r}')
        path = root / 'image' / (parts[0] if is_image_file(parts[0]) else parts[0] + '.jpg')
        if not path.is_file():
            raise ValueError(f'{path}: listed in {list_file} (line {number}) but not found')
        items.append(Item(path, parts[1], None))
    if not items:
        raise ValueError(f'{list_file}: no images listed')
    return sorted(items)


def read_cub(root, options):
    """CUB-200-2011: images/NNN.Name/*.jpg; classes 1-100 train, 101-200 test; query = gallery = test images."""
    root = _folder(root, 'images', what='a CUB-200-2011 download')
    folders = sorted(Path(e.path) for e in os.scandir(root / 'images') if e.is_dir())
    classes = _parse_all(folders, lambda p: int(_group(_CUB_CLASS, p.name)),
                         'CUB class folders NNN.Name (001.Black_footed_Albatross)')
    train, test = [], []
    for folder, number in zip(folders, classes):
        items = [Item(path, f'{number:03d}', None) for path in _image_files(folder)]
        (train if number <= 100 else test).extend(items)
    return {'train_all': train, 'query': test, 'gallery': list(test)}


def _group(regex, text):
    """The first group of `regex` matched at the start of `text`; ValueError when it does not match."""
    match = regex.match(text)
    if match is None:
        raise ValueError(text)
    return match.group(1)


def read_viper(root, options):
    """VIPeR: cam_a/, cam_b/, one image of each person per camera, paired by the leading number of the name.

    --split K draws (seeded by K) half of the people for training and half for testing (316/316);
    query = cam_a, gallery = cam_b of the test people.
    """
    root = _folder(root, 'cam_a', 'cam_b', what='a VIPeR download')
    by_number = {}
    for cam, sub in ((1, 'cam_a'), (2, 'cam_b')):
        paths = _image_files(root / sub)
        numbers = _parse_all(paths, lambda p: _group(_LEADING_NUMBER, p.name),
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


def read_custom(root, options):
    """The user's own photos: train/, query/, gallery/ (sub-folders allowed), id and camera from --pattern.

    The pattern is searched in each path relative to its split folder (`/` separators); its named group
    `id` gives the id and the optional group `cam` the camera.
    """
    pattern = options.get('pattern')
    if not pattern:
        raise ValueError('--custom needs --pattern REGEX with a named group id (and optionally cam), '
                         r"e.g. --pattern '(?P<id>\d+)_c(?P<cam>\d+)'")
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f'--pattern {pattern}: not a regular expression ({err})') from None
    if 'id' not in regex.groupindex:
        raise ValueError(f'--pattern {pattern}: needs a named group id, e.g. (?P<id>\\d+)')
    root = _folder(root, 'train', 'query', 'gallery', what='a --custom folder')

    def reader(folder):
        def parse(path):
            match = regex.search(path.relative_to(folder).as_posix())
            if match is None or not match.group('id'):
                raise ValueError(path)
            cam = match.group('cam') if 'cam' in regex.groupindex else None
            return Item(path, match.group('id'), cam or None)
        return _parse_all(_image_files(folder, recursive=True), parse, f'--pattern {pattern}')
    return {'train_all': reader(root / 'train'), 'query': reader(root / 'query'), 'gallery': reader(root / 'gallery')}


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


LAYOUTS = {
    'market': Layout(read_market, PERSON, ('bounding_box_train', 'bounding_box_test', 'query'),
                     'single query (and multi-query from gt_bbox); same id and camera is junk', None, False),
    'duke': Layout(read_market, PERSON, ('bounding_box_train', 'bounding_box_test', 'query'),
                   'single query; same id and camera is junk', None, False),
    'msmt17': Layout(read_msmt17, PERSON, ('list_train.txt', 'list_query.txt'),
                     'single query; val = list_val.txt; same id and camera is junk', None, True),
    'cuhk03': Layout(read_cuhk03, PERSON, ('detected', 'labeled'),
                     'CUHK03-NP 767/700 ids; single query; same id and camera is junk', None, False),
    'veri': Layout(read_veri, VEHICLE, ('image_train', 'image_query', 'image_test'),
                   'single query; same id and camera is junk', None, False),
    'vehicleid': Layout(read_vehicleid, VEHICLE, ('image', 'train_test_split'),
                        'per test id one random image in the gallery, the rest queries; mean and std over '
                        'evaluate_gpu.py --trials 10', 'gallery', False),
    'cub': Layout(read_cub, BIRD, ('images',),
                  'query = gallery = test classes 101-200; only the query itself is excluded; Recall@K = Rank@K',
                  None, False),
    'viper': Layout(read_viper, PERSON, ('cam_a', 'cam_b'),
                    '316/316 random split per prepare.py --split K; query cam_a, gallery cam_b; mean and std '
                    'over 10 splits', 'split', False),
    'custom': Layout(read_custom, PERSON, ('train', 'query', 'gallery'),
                     'single query; same id and camera is junk (no camera: only the query itself)', None, False),
    'csv': Layout(read_csv, PERSON, (), 'as custom', None, False),
}


def detect_layout(folder):
    """Return the name of the one layout whose marker folders/files `folder` holds; ValueError otherwise.

    Market-1501 and DukeMTMC-reID share a layout (and an adapter): 'market' is returned for both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f'{folder}: download folder not found (set --download_path)')
    candidates = {name: sum((folder / m).exists() for m in layout.markers) / len(layout.markers)
                  for name, layout in LAYOUTS.items() if layout.markers and name != 'duke'}
    found = [name for name, score in candidates.items() if score == 1]
    if not found:   # a download with a folder missing: the closest layout's adapter names what is missing
        best = max(candidates.values())
        found = [name for name, score in candidates.items() if score == best and best > 0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f'{folder}: no known dataset layout here (expected one of: '
                         + '; '.join(f'{n} ({", ".join(l.markers)})' for n, l in LAYOUTS.items()
                                     if l.markers and n != 'duke') + '); pick one with --dataset')
    raise ValueError(f'{folder}: looks like several layouts ({", ".join(found)}); pick one with --dataset')


def split_train_val(train_all):
    """Split sorted (path, id, ...) items into (train, val): val takes each id's first file name in sorted order.

    File-name order (not file-system order) makes the split the same on every machine and every run.
    An id with a single image stays in train only: it has nothing left to train on otherwise.
    """
    count = Counter(item[1] for item in train_all)
    train, val, seen = [], [], set()
    for item in sorted(train_all, key=lambda item: (Path(item[0]).name, str(item[0]))):
        (val if item[1] not in seen and count[item[1]] > 1 else train).append(item)
        seen.add(item[1])
    return train, val


def _numbering(values):
    """{value: int}: int(value) when every value is an integer string, else 1, 2, ... in sorted order."""
    values = sorted(set(values))
    if all(_INT.match(str(v)) for v in values):
        return {v: int(v) for v in values}
    return {v: i for i, v in enumerate(values, 1)}


def with_labels_and_cameras(splits):
    """Return {split: [Record]}: integer labels from the id strings, integer cameras, unknown cameras unique.

    An unknown camera (None) becomes -(k + 1), k the image's rank among all distinct source files sorted by
    path: never equal to another image's camera, and the same wherever one file appears twice (CUB's query
    is its gallery), so evaluation's junk rule (same id and camera) removes exactly the query's own image.
    """
    items = [item for split in splits.values() for item in split]
    labels = _numbering(item.id for item in items)
    cams = _numbering(item.cam for item in items if item.cam is not None)
    if any(c < 0 for c in cams.values()):
        raise ValueError(f'camera {min(cams, key=cams.get)}: cameras must not be negative')
    unknown = {p: -(k + 1) for k, p in enumerate(sorted({item.path for item in items if item.cam is None}))}
    return {split: [Record(item.path, item.id, labels[item.id],
                           cams[item.cam] if item.cam is not None else unknown[item.path]) for item in split_items]
            for split, split_items in splits.items()}


def gallery_draw(ids, seed):
    """Boolean mask over `ids` (images in canonical order): per id one image, drawn with `seed`, is gallery.

    The VehicleID protocol; the rest are queries. evaluate_gpu.py --trials draws with seeds 0, 1, ...
    (seed 0 is the split prepare.py writes).
    """
    ids = np.asarray(ids)
    key = np.random.default_rng(seed).random(len(ids))
    order = np.lexsort((key, ids))
    first = np.ones(len(ids), bool)
    first[1:] = ids[order][1:] != ids[order][:-1]
    mask = np.zeros(len(ids), bool)
    mask[order[first]] = True
    return mask


def canonical_order(cams):
    """Indices that put images of a layout without cameras (camera -(k+1)) in source-path order, as prepared."""
    return np.argsort(-np.asarray(cams), kind='stable')


def check_splits(splits, source, ids_reused=False):
    """Raise ValueError naming the file for an empty split, an id that cannot name a folder, or (unless the
    layout numbers train and test people separately) an id in both train and test."""
    for split, items in splits.items():
        if not items:
            raise ValueError(f'{source}: split {split} is empty')
        unsafe = [item for item in items if item.id in ('.', '..') or '/' in item.id or '\\' in item.id]
        if unsafe:
            raise ValueError(f'{unsafe[0].path}: id {unsafe[0].id!r} cannot name a folder (check --pattern)')
    if not ids_reused:
        train = {item.id: item.path for item in splits.get('train_all', [])}
        for split in TEST_SPLITS:
            clash = [item for item in splits.get(split, []) if item.id in train and item.id not in ('-1', '0000')]
            if clash:
                raise ValueError(f'{clash[0].path}: id {clash[0].id} is in {split} and in train (e.g. '
                                 f'{train[clash[0].id]}); train and test ids must differ')


def unmatched_queries(splits):
    """Return the query Records that have no valid match in the gallery (another image of the id, other camera)."""
    cams_of = {}
    for record in splits['gallery']:
        if record.label != -1:
            cams_of.setdefault(record.label, set()).add(record.cam)
    return [q for q in splits['query'] if not cams_of.get(q.label, set()) - {q.cam}]


def plan_splits(name, source, options=None):
    """Return {split: [Record]} for `source` read with layout `name`: train, val, train_all, query, gallery
    and multi-query (where the layout has them), checked. ValueError names the file or folder at fault."""
    if name not in LAYOUTS:
        raise ValueError(f'--dataset {name}: expected one of {", ".join(LAYOUTS)}')
    layout = LAYOUTS[name]
    splits = layout.read(source, dict(options or {}))
    check_splits(splits, source, layout.ids_reused)
    if 'val' not in splits:
        splits['train'], splits['val'] = split_train_val(splits['train_all'])
    splits = with_labels_and_cameras(splits)
    if not splits['val']:
        del splits['val']
    order = ('train', 'val', 'train_all', 'query', 'gallery', 'multi-query')
    return {split: splits[split] for split in order if split in splits}
