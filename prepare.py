r"""Turn a re-ID download (or your own photos) into the ImageFolder layout train.py and test.py read.

Usage (the download is never moved, renamed or deleted; images are copied, or hard-linked with --link):
    python prepare.py                                            # ../Market -> ../Market/pytorch/{train,val,...}
    python prepare.py --download_path ../Market --save_path /fast/disk/market --link
    python prepare.py --download_path ../MSMT17_V1               # the layout is detected from the folder
    python prepare.py --dataset cuhk03 --cuhk03 labeled --download_path ../cuhk03-np
    python prepare.py --dataset vehicleid --test_size 1600 --download_path ../VehicleID_V1.0
    python prepare.py --dataset viper --split 3 --download_path ../VIPeR --save_path ../VIPeR/pytorch3
    python prepare.py --custom ../photos --pattern '(?P<id>\d+)_c(?P<cam>\d+)'   # train/ query/ gallery/
    python prepare.py --csv ../photos/list.csv                    # lines path,id,camera,split
Layouts: market duke msmt17 cuhk03 veri vehicleid cub viper custom csv (see datasets.py and README.md).
Besides the images, <save_path>/images.csv records every image's id, label and camera, read by test.py.
No download at hand? Generate a synthetic set of any layout first, then prepare it like a real one:
    python prepare.py --make-demo data/demo [--layout market] [--size tiny|demo|market] [--seed 0]
    python prepare.py --download_path data/demo
"""
import argparse
import csv
import io
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

from reid.data import layouts as datasets
from reid.data.images import IMAGE_TABLE, PREPARED_MARKER as OUTPUT_MARKER   # only a folder with the marker is replaced
from reid.data.layouts import split_train_val  # noqa: F401  (kept importable here: the val rule of prepare.py)

SPLITS = ('train', 'val', 'train_all', 'query', 'gallery', 'multi-query')
LAYOUT_OPTION = {'cuhk03': 'cuhk03', 'vehicleid': 'test_size', 'viper': 'split', 'custom': 'pattern'}   # recorded


def plan_market_split(download_path):
    """Return {split: [datasets.Record]} for a raw Market-1501 / DukeMTMC-reID folder (see datasets.read_market)."""
    return datasets.plan_splits('market', download_path)


def verify_images(paths, progress=True):
    """Raise ValueError listing the files that do not decode (corrupt, truncated, empty, not an image).

    A full decode (data.unreadable_images): PIL's header-level verify() passes a JPEG cut in half.
    """
    from reid.data.images import require_readable_images
    require_readable_images(paths, progress=progress)


def _place(src, dst, link):
    if not link:
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:   # another filesystem, or no hard links there: a symlink still saves the space
        os.symlink(os.path.abspath(src), dst)


def _check_ours(folder):
    if not (Path(folder) / OUTPUT_MARKER).is_file():
        raise ValueError(f'{folder}: exists and was not written by prepare.py (no {OUTPUT_MARKER}); '
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


def image_table(rows):
    """The text of images.csv: split, path (relative to the prepared folder), id, label, camera."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(('split', 'path', 'id', 'label', 'camera'))
    writer.writerows(rows)
    return out.getvalue()


def write_split(splits, save_path, link=False, progress=True, info=None):
    """Write {split: [Record]} as `save_path/<split>/<id>/<file name>` plus images.csv; return {split: count}.

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
    except OSError:   # say why in one line (utils imports torch, which prepare.py otherwise never needs)
        from reid.runs import ensure_writable_folder
        ensure_writable_folder(save_path.parent, '--save_path')
        raise
    building = save_path.parent / f'.{save_path.name}.partial'
    if building.exists():
        _remove_ours(building)   # left by an interrupted run
    building.mkdir()
    counts = {split: len(items) for split, items in splits.items()}
    (building / OUTPUT_MARKER).write_text(json.dumps(dict(info or {}, link=bool(link), counts=counts), indent=1)
                                          + '\n')
    rows = []
    try:
        with tqdm(total=sum(counts.values()), desc=f'writing {save_path}', unit='img', disable=not progress) as bar:
            for split, items in splits.items():
                by_folder = defaultdict(list)
                for record in items:
                    by_folder[record.id].append(record)
                for pid, records in by_folder.items():
                    dst = building / split / pid
                    dst.mkdir(parents=True, exist_ok=True)
                    for record, name in zip(records, destination_names([r.path for r in records])):
                        _place(record.path, dst / name, link)
                        rows.append((split, f'{split}/{pid}/{name}', pid, record.label, record.cam))
                        bar.update()
        (building / IMAGE_TABLE).write_text(image_table(rows))
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


def _make_demo(args):
    from reid.data import synthetic
    if args.layout == 'market':
        counts = synthetic.make_dataset(args.make_demo, size=args.size, seed=args.seed, n_cameras=args.cameras)
        what = f'a synthetic Market-style set ({args.size}, seed {args.seed}, {args.cameras} cameras)'
    else:
        counts = synthetic.make_layout(args.make_demo, args.layout, size=args.size, seed=args.seed)
        what = f'a synthetic {args.layout} set ({args.size}, seed {args.seed})'
    print(f'wrote {what} to {args.make_demo}')
    for key, value in counts.items():
        print(f'  {key:20s} {value}')
    flag = '' if args.layout in ('market', 'duke') else f' --dataset {args.layout}'
    print(f'next: python prepare.py{flag} --download_path {args.make_demo}')


def layout_and_source(args):
    """Return (layout name, source path) that the flags name: --custom, --csv, --dataset or the detected one."""
    if args.custom:
        return 'custom', args.custom
    if args.csv:
        return 'csv', args.csv
    if args.dataset:
        return args.dataset, args.download_path
    if args.cuhk03:
        return 'cuhk03', args.download_path
    return datasets.detect_layout(args.download_path), args.download_path


def _prepare(args):
    name, source = layout_and_source(args)
    options = dict(cuhk03=args.cuhk03 or 'detected', test_size=args.test_size, split=args.split, pattern=args.pattern)
    splits = datasets.plan_splits(name, source, options)
    verify_images(sorted({record.path for items in splits.values() for record in items}))
    source = Path(source)
    save_path = args.save_path or (source.parent if name == 'csv' else source) / 'pytorch'
    layout = datasets.LAYOUTS[name]
    info = dict(layout=name, input_size=list(layout.size), protocol=layout.protocol, trials=layout.trials,
                options={k: v for k, v in options.items() if k == LAYOUT_OPTION.get(name)})
    counts = write_split(splits, save_path, link=args.link, info=info)
    print(f'{"linked" if args.link else "copied"} {source} ({name}) -> {save_path}')
    for split, items in splits.items():
        print(f'  {split:12s} {counts[split]:6d} images  {len({r.id for r in items}):5d} ids')
    if name in ('market', 'duke') and 'multi-query' not in splits:
        print('  multi-query  skipped: no gt_bbox/ folder (DukeMTMC-reID has none)')
    unmatched = datasets.unmatched_queries(splits)
    if unmatched:
        print(f'warning: {len(unmatched)} of {len(splits["query"])} queries have no match in the gallery (another '
              f'image of the id from another camera), e.g. {unmatched[0].path}; evaluation skips and counts them')
    print(f'protocol ({name}): {layout.protocol}; input size {layout.size[0]}x{layout.size[1]} '
          '(train.py --h/--w override it)')
    return splits


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--download_path', default=None, help='raw download folder (default ../Market)')
    parser.add_argument('--save_path', default=None, help='output folder (default <download_path>/pytorch)')
    parser.add_argument('--link', action='store_true',
                        help='hard-link instead of copying (symlinks across filesystems)')
    parser.add_argument('--dataset', default=None, choices=[n for n in datasets.LAYOUTS if n not in ('custom', 'csv')],
                        help='the download\'s layout (default: detected from the folder)')
    parser.add_argument('--cuhk03', default=None, choices=('detected', 'labeled'), help='CUHK03-NP: which boxes')
    parser.add_argument('--test_size', default=800, type=int, choices=(800, 1600, 2400), help='VehicleID test list')
    parser.add_argument('--split', default=0, type=int, help='VIPeR: the random 316/316 split number (its seed)')
    parser.add_argument('--custom', default=None, metavar='DIR', help='your photos: DIR/{train,query,gallery}')
    parser.add_argument('--pattern', default=None, metavar='REGEX',
                        help='with --custom: named groups id and (optionally) cam, searched in each relative path')
    parser.add_argument('--csv', default=None, metavar='FILE', help='your photos listed as path,id,camera,split')
    parser.add_argument('--make-demo', '--make_demo', dest='make_demo', metavar='DIR', default=None,
                        help='only generate a synthetic raw set in DIR, then exit')
    parser.add_argument('--layout', default='market', choices=[n for n in datasets.LAYOUTS if n not in ('custom', 'csv')],
                        help='with --make-demo: which layout to write')
    parser.add_argument('--size', default='demo', choices=('tiny', 'demo', 'market'), help='with --make-demo')
    parser.add_argument('--seed', type=int, default=0, help='with --make-demo')
    parser.add_argument('--cameras', type=int, default=6, help='with --make-demo --layout market (15 mimics MSMT17)')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.make_demo and (args.download_path or args.save_path or args.link or args.custom or args.csv):
        parser.error('--make-demo only generates; run `prepare.py --download_path DIR` as a second step')
    if sum(bool(v) for v in (args.download_path, args.custom, args.csv)) > 1 or (args.dataset and (args.custom or args.csv)):
        parser.error('--download_path (with --dataset), --custom and --csv each name the data: give one')
    if args.pattern and not args.custom:
        parser.error('--pattern goes with --custom DIR')
    args.download_path = args.download_path or '../Market'
    try:
        if args.make_demo:
            _make_demo(args)
        else:
            _prepare(args)
    except ValueError as err:
        raise SystemExit(f'prepare.py: {err}') from None
    except OSError as err:
        name = f'{err.filename}: ' if err.filename is not None else ''
        raise SystemExit(f'prepare.py: {name}{err.strerror or err}') from None
    except KeyboardInterrupt:   # write_split has removed its partial folder; the download was only read
        raise SystemExit('prepare.py: interrupted; nothing was changed (run the same command again)') from None


if __name__ == '__main__':
    main()
