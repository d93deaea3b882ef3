"""A prepared folder, the one format prepare.py writes for every layout and every command reads:
`<root>/{train,val,train_all,query,gallery,multi-query}/<id>/<file>`, images.csv and the marker file.

images.csv records each image's split, path, id, integer label and camera (names are parsed once, by the layout's
reader); the marker (`.prepare_reid.json`) records the layout, its input size and protocol, and says the folder
is prepare.py's to replace. The download is only ever read: files are copied or linked.
A video layout's frames go to `<split>/<id>/<tracklet>/<frame>`, one folder per tracklet, and images.csv gains
a sixth column, `tracklet`, naming it (list_reid_tracklets groups a split's images by it).
"""
import csv
import io
import json
import os
import shutil
from collections import defaultdict, namedtuple
from pathlib import Path

from reid.data.images import ReIDImageFolder, parse_market_name

SPLITS = ('train', 'val', 'train_all', 'query', 'gallery', 'multi-query')
IMAGE_TABLE = 'images.csv'                 # split,path,id,label,camera(,tracklet) of every prepared image
PREPARED_MARKER = '.prepare_reid.json'     # layout, input size, protocol, counts; only a folder with it is replaced


def read_image_table(root):
    """Return {relative path: (label, camera)} from `root`/images.csv, or None when the folder has none."""
    path = Path(root) / IMAGE_TABLE
    if not path.is_file():
        return None
    with open(path, newline='') as f:
        try:
            return {row['path']: (int(row['label']), int(row['camera'])) for row in csv.DictReader(f)}
        except (KeyError, TypeError, ValueError):
            raise ValueError(f'{path}: not a table written by prepare.py (re-run prepare.py)') from None


def read_tracklet_table(root):
    """Return {relative path: tracklet name} of the images `root`/images.csv puts in a tracklet: {} for a folder
    of an image layout (no tracklet column, or empty cells) or without images.csv."""
    path = Path(root) / IMAGE_TABLE
    if not path.is_file():
        return {}
    with open(path, newline='') as f:
        return {row['path']: row['tracklet'] for row in csv.DictReader(f) if row.get('tracklet')}


# One tracklet of a prepared split: its name, label and camera, and the indices of its frames in the split's
# list_reid_images / ReIDImageFolder order (frames in file-name order).
Tracklet = namedtuple('Tracklet', 'name label camera indices')


def list_reid_tracklets(folder):
    """Return [Tracklet] of a prepared split in the order of their first frame in list_reid_images(folder).

    A video layout's frames are grouped by images.csv's tracklet column; an image without a tracklet (an image
    layout, a folder prepared before the column existed) is a tracklet of its own, named by its path.
    """
    folder = Path(folder)
    names = read_tracklet_table(folder.parent)
    grouped = {}
    for index, (path, label, camera) in enumerate(list_reid_images(folder)):
        key = Path(path).relative_to(folder.parent).as_posix()
        name = names.get(key, key)
        if name not in grouped:
            grouped[name] = Tracklet(name, label, camera, [])
        elif (grouped[name].label, grouped[name].camera) != (label, camera):
            raise ValueError(f'{path}: tracklet {name} of {folder.parent / IMAGE_TABLE} mixes ids or cameras '
                             '(re-run prepare.py)')
        grouped[name].indices.append(index)
    return list(grouped.values())


def list_reid_images(folder):
    """Return [(path, person_id, camera)] of a prepared split in ImageFolder order.

    Ids and cameras come from the prepared folder's images.csv (parsed once, by prepare.py, for any layout);
    without it (a folder prepared by an older version) from Market-style file names. Never from the folder
    index, so the distractor (0000) and junk (-1) folders keep their meaning.
    """
    folder = Path(folder)
    samples = ReIDImageFolder(folder).samples
    table = read_image_table(folder.parent)
    if table is None:
        return [(path, *parse_market_name(path)) for path, _ in samples]
    out = []
    for path, _ in samples:
        key = Path(path).relative_to(folder.parent).as_posix()
        if key not in table:
            raise ValueError(f'{path}: not in {folder.parent / IMAGE_TABLE} (re-run prepare.py)')
        out.append((path, *table[key]))
    return out


def prepared_info(root):
    """Return what prepare.py recorded about a prepared folder (layout, input_size, protocol...), or {}."""
    try:
        return json.loads((Path(root) / PREPARED_MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _place(src, dst, link):
    if not link:
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:   # another filesystem, or no hard links there: a symlink still saves the space
        os.symlink(os.path.abspath(src), dst)


def _check_ours(folder):
    if not (Path(folder) / PREPARED_MARKER).is_file():
        raise ValueError(f'{folder}: exists and was not written by prepare.py (no {PREPARED_MARKER}); '
                         'move it away or choose another --save_path')


def _remove_ours(folder):
    _check_ours(folder)
    shutil.rmtree(folder)


def destination_names(paths):
    """Return one file name per source path, unique among `paths` and the same on every run.

    The source name where it is unique; where flattening several source folders makes names clash, the two
    parent folders are put in front (`a_b_name.jpg`), then a counter if that still clashes.
    """
    count = defaultdict(int)
    for path in paths:
        count[Path(path).name] += 1
    names, used = [], set()
    for path in paths:
        path = Path(path)
        name = path.name if count[path.name] == 1 else '_'.join(path.parts[-3:-1] + (path.name,))
        stem, suffix, k = Path(name).stem, Path(name).suffix, 1
        while name in used:
            name, k = f'{stem}_{k}{suffix}', k + 1
        used.add(name)
        names.append(name)
    return names


def image_table(rows, tracklets=None):
    """The text of images.csv: split, path (relative to the prepared folder), id, label, camera; and, when any
    of `tracklets` (one per row) is set, a tracklet column (empty for an image outside a tracklet)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    if tracklets is not None and any(t is not None for t in tracklets):
        writer.writerow(('split', 'path', 'id', 'label', 'camera', 'tracklet'))
        writer.writerows(tuple(row) + ('' if t is None else t,) for row, t in zip(rows, tracklets))
    else:   # image layouts keep the five columns their tables always had
        writer.writerow(('split', 'path', 'id', 'label', 'camera'))
        writer.writerows(rows)
    return out.getvalue()


def _destinations(records):
    """Relative destinations (`<tracklet>/<name>` or `<name>`) of one id folder's records: a video layout's
    frames in a folder per tracklet; names unique within their folder (destination_names)."""
    by_folder = defaultdict(list)
    for k, record in enumerate(records):
        by_folder[getattr(record, 'tracklet', None)].append(k)
    out = [None] * len(records)
    for tracklet, indices in by_folder.items():
        for k, name in zip(indices, destination_names([records[k].path for k in indices])):
            out[k] = name if tracklet is None else f'{tracklet}/{name}'
    return out


def write_split(splits, save_path, link=False, progress=True, info=None):
    """Write {split: [Record]} as `save_path/<split>/<id>/<file name>` (a frame of a tracklet: `<id>/<tracklet>/
    <file name>`) plus images.csv; return {split: count}.

    Builds everything in a hidden folder beside `save_path`, then swaps it in, so a re-run (or an interrupted
    one) never leaves mixed or duplicated images. An existing `save_path` is replaced only when prepare.py
    wrote it; the sources are only read. `info` (layout, input size, protocol) goes into the marker file.
    """
    from tqdm import tqdm
    save_path = Path(save_path)
    if save_path.is_symlink():   # the swap below would replace the link, not the tree it points to
        raise ValueError(f'{save_path}: is a symbolic link; pass its target as --save_path')
    if save_path.exists() and not save_path.is_dir():
        raise ValueError(f'{save_path}: exists and is not a folder')
    if save_path.is_dir():
        _check_ours(save_path)   # refuse before doing any work
    try:
        save_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:   # say why in one line (reid.runs imports torch, which preparing otherwise never needs)
        from reid.runs import ensure_writable_folder
        ensure_writable_folder(save_path.parent, '--save_path')
        raise
    building = save_path.parent / f'.{save_path.name}.partial'
    if building.exists():
        _remove_ours(building)   # left by an interrupted run
    building.mkdir()
    counts = {split: len(items) for split, items in splits.items()}
    (building / PREPARED_MARKER).write_text(json.dumps(dict(info or {}, link=bool(link), counts=counts), indent=1)
                                          + '\n')
    rows, tracklets = [], []
    try:
        with tqdm(total=sum(counts.values()), desc=f'writing {save_path}', unit='img', disable=not progress) as bar:
            for split, items in splits.items():
                by_folder = defaultdict(list)
                for record in items:
                    by_folder[record.id].append(record)
                for pid, records in by_folder.items():
                    dst = building / split / pid
                    for record, name in zip(records, _destinations(records)):
                        (dst / name).parent.mkdir(parents=True, exist_ok=True)
                        _place(record.path, dst / name, link)
                        rows.append((split, f'{split}/{pid}/{name}', pid, record.label, record.cam))
                        tracklets.append(getattr(record, 'tracklet', None))
                        bar.update()
        (building / IMAGE_TABLE).write_text(image_table(rows, tracklets))
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if save_path.is_dir():
        old = save_path.parent / f'.{save_path.name}.old'
        if old.exists():
            _remove_ours(old)
        save_path.rename(old)
        building.rename(save_path)
        shutil.rmtree(old)
    else:
        building.rename(save_path)
    return counts
