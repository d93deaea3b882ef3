"""What every dataset layout shares: the items a reader lists, the Layout record that makes a layout one unit
(reader, writer, prepare.py options), the reading helpers, the val rule, labels, cameras and video tracklets.
"""
import os
import re
from collections import Counter, namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from reid.data.images import is_image_file, parse_market_name

# What a reader returns per image: the source file, the id as a string (it names the output folder), the
# camera (an int, a string naming a camera, or None when the layout has no cameras) and, in a video layout, the
# tracklet the frame belongs to (a string naming its folder, unique within a split; None for an image layout).
Item = namedtuple('Item', 'path id cam tracklet', defaults=(None,))
# What prepare.py writes per image: the same, plus the integer label evaluation uses and a camera that is
# always an int (an unknown camera is a negative number of its own; see with_labels_and_cameras).
Record = namedtuple('Record', 'path id label cam tracklet', defaults=(None,))
# A prepare.py flag of a layout: `flag` (--cuhk03), argparse keywords; `selects`: giving the flag picks this
# layout (its value is then the source when `source`); the value reaches the reader as options[dest].
Option = namedtuple('Option', 'flag kwargs selects source', defaults=(False, False))
# The generated set a layout's writer files: every drawn image (reid.data.synthetic.ImageSpec), the drawn people
# {id: [spec]}, the train and test ids, and the size asked for.
Drawn = namedtuple('Drawn', 'size specs people train_ids test_ids')

PERSON, VEHICLE, BIRD = (256, 128), (256, 256), (224, 224)
# The split flag of the layouts with numbered train/test splits (iLIDS-VID, PRID-2011; VIPeR has its own).
SPLIT = Option('--split', dict(default=0, type=int,
                               help='VIPeR: the random 316/316 split number (its seed); iLIDS-VID, PRID-2011: '
                                    'which of the 10 train/test splits (0-9)'))
TEST_SPLITS = ('query', 'gallery', 'multi-query')
INT = re.compile(r'^-?\d+$')


@dataclass(frozen=True)
class Layout:
    """One dataset layout: how to read a download of it, how to write a generated one, its prepare.py flags.

    read(root, options) -> {split: [Item]} for train_all, query, gallery (and val, multi-query where the layout
    defines them); generate(Drawn) -> ([(relative path, ImageSpec)], {relative path: text}) (a video layout:
    FrameSpec, and bytes for a binary file such as MATLAB's). `markers`: the folders/files that identify a
    download (detect_layout); `size`: the input size a new run trains at;
    `trials`: 'gallery' or 'split' when the protocol averages several draws; `ids_reused`: train and test
    number their people separately; `cameras`: how many the generated set draws; `tracklets`: a video layout,
    whose items are frames of tracklets and whose generated set is drawn as frames (synthetic.render_frame).
    """
    name: str
    read: Callable
    size: tuple
    markers: tuple
    protocol: str
    generate: Optional[Callable] = None
    options: tuple = ()
    trials: Optional[str] = None
    ids_reused: bool = False
    cameras: int = 6
    detect: bool = True
    tracklets: bool = False

    def option_values(self, args):
        """Return {dest: value} of this layout's prepare.py flags in parsed `args`."""
        return {option_dest(o): getattr(args, option_dest(o)) for o in self.options}


def option_dest(option):
    """Return the argparse destination of a layout Option (--test_size -> test_size)."""
    return option.kwargs.get('dest') or option.flag.lstrip('-').replace('-', '_')


def require_folders(root, *subs, what):
    """Return Path(root) after checking it and its sub-folders `subs` exist; ValueError naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f'{root}: download folder not found (set --download_path)')
    missing = [sub for sub in subs if not (root / sub).is_dir()]
    if missing:
        raise ValueError(f'{root / missing[0]}: required folder missing ({what} has {", ".join(subs)})')
    return root


def image_files(folder, recursive=False):
    """Sorted image files of `folder` (sub-folders too when `recursive`); ValueError when there are none."""
    folder = Path(folder)
    if recursive:
        paths = sorted(Path(d) / f for d, _, files in os.walk(folder) for f in files if is_image_file(f))
    else:
        paths = sorted(folder / n for n in os.listdir(folder) if is_image_file(n) and (folder / n).is_file())
    if not paths:
        raise ValueError(f'{folder}: no images found')
    return paths


def parse_all(paths, parse, expected):
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
    return parse_all(image_files(folder), parse, 'the Market-1501 pattern <id>_c<camera>... (0002_c1s1_000451_03.jpg)')


def leading_group(regex, text):
    """The first group of `regex` matched at the start of `text`; ValueError when it does not match."""
    match = regex.match(text)
    if match is None:
        raise ValueError(text)
    return match.group(1)


def tracklet_items(frames, pid, cam, tracklet):
    """[Item] of one tracklet: its frames in file-name order (the frame order in every video layout)."""
    return [Item(path, pid, cam, tracklet) for path in sorted(frames, key=lambda path: Path(path).name)]


def mat_variable(path, key, what):
    """The array `key` of the MATLAB file `path` (scipy.io.loadmat); ValueError naming the file when it is
    missing, unreadable or without that variable. `what` says what the file is for."""
    import scipy.io

    if not Path(path).is_file():
        raise ValueError(f'{path}: file missing ({what})')
    try:
        data = scipy.io.loadmat(path)
    except Exception as err:   # scipy raises ValueError, MatReadError, OSError... for a file that is not MATLAB
        raise ValueError(f'{path}: not a readable MATLAB file ({type(err).__name__}: {err})') from None
    if key not in data:
        raise ValueError(f'{path}: no variable {key} (it has {", ".join(k for k in data if not k.startswith("__"))})')
    return data[key]


def people_split(path, people, split):
    """(train, test) people of row `split` of the ls_set of a train_test_splits_*.mat file (iLIDS-VID's format):
    each row lists 1-based indices into `people` (sorted), the first half test, the rest train (Wang et al.,
    ECCV 2014, as torchreid reads it). ValueError naming the file for a bad row or --split."""
    table = np.asarray(mat_variable(path, 'ls_set', 'the 10 train/test splits of people'))
    if table.ndim != 2 or table.shape[1] != len(people):
        raise ValueError(f'{path}: ls_set has shape {table.shape}; expected (splits, {len(people)}): one column per '
                         f'person found ({len(people)})')
    if not 0 <= split < table.shape[0]:
        raise ValueError(f'--split {split}: {path} holds {table.shape[0]} splits (0-{table.shape[0] - 1})')
    row = table[split]
    if sorted(int(v) for v in row) != list(range(1, len(people) + 1)) or not np.all(row == np.round(row)):
        raise ValueError(f'{path}: row {split + 1} of ls_set is not a permutation of 1..{len(people)}')
    half = len(people) // 2
    return sorted(people[int(i) - 1] for i in row[half:]), sorted(people[int(i) - 1] for i in row[:half])


def paired_splits(people, train, test, tracklet_name):
    """{train_all, query, gallery} of a two-camera layout: the train people's tracklets of both cameras, the test
    people's camera-1 tracklets as queries and camera-2 ones as the gallery; `people` = {camera: {person:
    frames}}, the id is the person's number."""
    def items(names, cams):
        return [item for name in names for cam in cams
                for item in tracklet_items(people[cam][name], re.sub(r'\D', '', name), cam, tracklet_name(name, cam))]
    return {'train_all': items(train, (1, 2)), 'query': items(test, (1,)), 'gallery': items(test, (2,))}


def split_train_val(train_all):
    """Split sorted (path, id, ...) items into (train, val): val takes each id's first file name in sorted order.

    File-name order (not file-system order) makes the split the same on every machine and every run.
    An id with a single image stays in train only: it has nothing left to train on otherwise.
    Frames of tracklets (a video layout) are split by whole tracklets (split_train_val_tracklets).
    """
    if any(getattr(item, 'tracklet', None) is not None for item in train_all):
        return split_train_val_tracklets(train_all)
    count = Counter(item[1] for item in train_all)
    train, val, seen = [], [], set()
    for item in sorted(train_all, key=lambda item: (Path(item[0]).name, str(item[0]))):
        (val if item[1] not in seen and count[item[1]] > 1 else train).append(item)
        seen.add(item[1])
    return train, val


def split_train_val_tracklets(train_all):
    """Split frames (Items with a tracklet) into (train, val) by whole tracklets: val takes each id's first
    tracklet in sorted order of the tracklet names, train the rest. An id stays whole in train when that would
    leave train a single tracklet, or a single camera of an id seen by several (iLIDS-VID, PRID-2011: one
    tracklet per camera), so train always holds a same-id pair across cameras where the data has one.

    A frame in val whose tracklet also trains would make validation a test on training data.
    """
    cameras = {}
    for item in train_all:
        cameras.setdefault(item.id, {})[item.tracklet] = item.cam
    first = {}
    for pid, tracklets in cameras.items():
        held = min(tracklets)
        left = {cam for name, cam in tracklets.items() if name != held}
        if len(left) >= min(2, len(set(tracklets.values()))):   # a single tracklet leaves none
            first[pid] = held
    train, val = [], []
    for item in train_all:
        (val if first.get(item.id) == item.tracklet else train).append(item)
    return train, val


def _numbering(values):
    """{value: int}: int(value) when every value is an integer string, else 1, 2, ... in sorted order."""
    values = sorted(set(values))
    if all(INT.match(str(v)) for v in values):
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
                           cams[item.cam] if item.cam is not None else unknown[item.path], item.tracklet)
                    for item in split_items]
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
        check_tracklets(items)
    if not ids_reused:
        train = {item.id: item.path for item in splits.get('train_all', [])}
        for split in TEST_SPLITS:
            clash = [item for item in splits.get(split, []) if item.id in train and item.id not in ('-1', '0000')]
            if clash:
                raise ValueError(f'{clash[0].path}: id {clash[0].id} is in {split} and in train (e.g. '
                                 f'{train[clash[0].id]}); train and test ids must differ')


def check_tracklets(items):
    """Raise ValueError naming the file when a tracklet of one split cannot name a folder or holds frames of two
    ids or two cameras (its frames are written to one folder and pooled into one feature)."""
    seen = {}
    for item in items:
        if item.tracklet is None:
            continue
        if item.tracklet in ('', '.', '..') or '/' in item.tracklet or '\\' in item.tracklet:
            raise ValueError(f'{item.path}: tracklet {item.tracklet!r} cannot name a folder')
        first = seen.setdefault(item.tracklet, item)
        if (first.id, first.cam) != (item.id, item.cam):
            raise ValueError(f'{item.path}: tracklet {item.tracklet} holds frames of id {first.id} camera {first.cam} '
                             f'({first.path}) and of id {item.id} camera {item.cam}')


def unmatched_queries(splits):
    """Return the query Records that have no valid match in the gallery (another image of the id, other camera)."""
    cams_of = {}
    for record in splits['gallery']:
        if record.label != -1:
            cams_of.setdefault(record.label, set()).add(record.cam)
    return [q for q in splits['query'] if not cams_of.get(q.label, set()) - {q.cam}]


# What a video layout's writer files: frames of tracklets of the drawn people (reid.data.synthetic.render_frame draws
# each, a pure function of (seed, FrameSpec)), and MATLAB files for the layouts that ship them.
FrameSpec = namedtuple('FrameSpec', 'cam mode look_key track_key frame length')
TRACK_LENGTHS = {'tiny': (4, 7), 'demo': (6, 12), 'market': (8, 16)}   # frames per generated tracklet, by --size
MAT_HEADER = b'MATLAB 5.0 MAT-file, written by reid/data/synthetic.py (generated data)'


def tracklet_frames(cam, mode, look_key, track_key, length):
    """[FrameSpec] of one tracklet: `length` frames of the person `look_key` walking through camera `cam`;
    `track_key` (a tuple of ints) must be unique in the set: the tracklet's own draws come from it."""
    return [FrameSpec(cam, mode, look_key, tuple(track_key), frame, length) for frame in range(length)]


def drawn_rng(drawn, *key):
    """A generator for a video writer's choices (tracklet lengths, start numbers): seeded by the drawn set's ids,
    which depend on the seed, and by `key`; so a set is the same on every run and differs between seeds."""
    return np.random.default_rng([*drawn.train_ids[:16], *drawn.test_ids[:16], *key])


def track_length(drawn, *key):
    """The number of frames of a generated tracklet (TRACK_LENGTHS of the drawn size), drawn with drawn_rng."""
    lo, hi = TRACK_LENGTHS.get(drawn.size, TRACK_LENGTHS['demo'])
    return int(drawn_rng(drawn, 9, *key).integers(lo, hi + 1))


def mat_bytes(variables):
    """The bytes of a MATLAB 5 file holding `variables` (scipy.io.savemat), with a fixed header text in place of
    savemat's creation time, so that a generated set is byte-identical for a seed."""
    import io

    import scipy.io

    out = io.BytesIO()
    scipy.io.savemat(out, variables, format='5')
    return MAT_HEADER.ljust(116) + out.getvalue()[116:]
