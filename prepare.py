"""Turn a Market-1501 / DukeMTMC-reID download into the ImageFolder layout train.py and test.py read.

Usage (the download is never moved, renamed or deleted; images are copied, or hard-linked with --link):
    python prepare.py --download_path ../Market                 # -> ../Market/pytorch/{train,val,train_all,...}
    python prepare.py --download_path ../Market --save_path /fast/disk/market --link
No download at hand? Generate a synthetic Market-style set first, then prepare it like a real one:
    python prepare.py --make-demo data/demo [--size tiny|demo|market] [--seed 0] [--cameras 6]
    python prepare.py --download_path data/demo
"""
import argparse
import json
import os
import shutil
from pathlib import Path

from data import is_image_file, parse_market_name

OUTPUT_MARKER = '.prepare_reid.json'   # only a folder that carries it is ever replaced or removed
REQUIRED = {'train_all': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}
SPLITS = ('train', 'val', 'train_all', 'query', 'gallery', 'multi-query')


def labelled_images(folder):
    """Sorted list of (path, id string) for the image files of `folder`; the id string names the output folder.

    Non-image files and sub-folders are skipped. ValueError names the folder when it has no images and the
    file when a name does not parse.
    """
    folder = Path(folder)
    out = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not is_image_file(name) or not path.is_file():
            continue
        parse_market_name(str(path))   # raises ValueError naming the file
        # keep the id exactly as written in the name (0002, 0000, -1), so folders match the original's
        out.append((path, name.split('_', 1)[0]))
    if not out:
        raise ValueError(f'{folder}: no images found')
    return out


def split_train_val(train_all):
    """Split sorted (path, id) pairs into (train, val): val takes each id's first file name in sorted order.

    File-name order (not file-system order) makes the split the same on every machine and every run.
    An id with a single image stays in train only: it has nothing left to train on otherwise.
    """
    count = {}
    for _, pid in train_all:
        count[pid] = count.get(pid, 0) + 1
    train, val, seen = [], [], set()
    for path, pid in sorted(train_all, key=lambda item: item[0].name):
        if pid not in seen and count[pid] > 1:
            val.append((path, pid))
        else:
            train.append((path, pid))
        seen.add(pid)
    return train, val


def plan_market_split(download_path):
    """Return {split: sorted list of (source path, id string)} for a raw Market-1501 / DukeMTMC-reID folder.

    'multi-query' (from gt_bbox/, restricted to the query ids) is absent when the download has no gt_bbox/
    (DukeMTMC-reID). ValueError names the missing folder or the offending file.
    """
    root = Path(download_path)
    if not root.is_dir():
        raise ValueError(f'{root}: download folder not found (set --download_path)')
    missing = [sub for sub in REQUIRED.values() if not (root / sub).is_dir()]
    if missing:
        raise ValueError(f'{root / missing[0]}: required folder missing (a Market-1501 / DukeMTMC-reID download '
                         f'has {", ".join(REQUIRED.values())})')
    splits = {split: labelled_images(root / sub) for split, sub in REQUIRED.items()}
    splits['train'], splits['val'] = split_train_val(splits['train_all'])
    if (root / 'gt_bbox').is_dir():
        query_ids = {pid for _, pid in splits['query']}
        splits['multi-query'] = [(p, pid) for p, pid in labelled_images(root / 'gt_bbox') if pid in query_ids]
        if not splits['multi-query']:
            raise ValueError(f'{root / "gt_bbox"}: no image of a query id, so multi-query would be empty')
    return {split: splits[split] for split in SPLITS if split in splits}


def verify_images(paths, progress=True):
    """Raise ValueError listing the files that do not decode (corrupt, truncated, empty, not an image).

    A full decode (data.unreadable_images): PIL's header-level verify() passes a JPEG cut in half.
    """
    from data import require_readable_images
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


def write_split(splits, save_path, link=False, progress=True):
    """Write {split: [(src, id)]} as `save_path/<split>/<id>/<file name>`; return {split: number of images}.

    Builds everything in a hidden folder beside `save_path`, then swaps it in, so a re-run (or an interrupted
    one) never leaves mixed or duplicated images. An existing `save_path` is replaced only when prepare.py
    wrote it; the sources are only read.
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
        from utils import ensure_writable_folder
        ensure_writable_folder(save_path.parent, '--save_path')
        raise
    building = save_path.parent / f'.{save_path.name}.partial'
    if building.exists():
        _remove_ours(building)   # left by an interrupted run
    building.mkdir()
    counts = {split: len(items) for split, items in splits.items()}
    (building / OUTPUT_MARKER).write_text(json.dumps(dict(link=bool(link), counts=counts), indent=1) + '\n')
    try:
        total = sum(counts.values())
        with tqdm(total=total, desc=f'writing {save_path}', unit='img', disable=not progress) as bar:
            for split, items in splits.items():
                for src, pid in items:
                    dst = building / split / pid
                    dst.mkdir(parents=True, exist_ok=True)
                    _place(src, dst / Path(src).name, link)
                    bar.update()
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
    import synthetic
    counts = synthetic.make_dataset(args.make_demo, size=args.size, seed=args.seed, n_cameras=args.cameras)
    print(f'wrote a synthetic Market-style set ({args.size}, seed {args.seed}, {args.cameras} cameras) '
          f'to {args.make_demo}')
    for key, value in counts.items():
        print(f'  {key:20s} {value}')
    print(f'next: python prepare.py --download_path {args.make_demo}')


def _prepare(args):
    splits = plan_market_split(args.download_path)
    verify_images(sorted({src for items in splits.values() for src, _ in items}))
    save_path = args.save_path or os.path.join(args.download_path, 'pytorch')
    counts = write_split(splits, save_path, link=args.link)
    print(f'{"linked" if args.link else "copied"} {args.download_path} -> {save_path}')
    for split, items in splits.items():
        print(f'  {split:12s} {counts[split]:6d} images  {len({pid for _, pid in items}):5d} ids')
    if 'multi-query' not in splits:
        print('  multi-query  skipped: no gt_bbox/ folder (DukeMTMC-reID has none)')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--download_path', default=None,
                        help='raw Market-1501 / DukeMTMC-reID folder (default ../Market)')
    parser.add_argument('--save_path', default=None, help='output folder (default <download_path>/pytorch)')
    parser.add_argument('--link', action='store_true',
                        help='hard-link instead of copying (symlinks across filesystems)')
    parser.add_argument('--make-demo', '--make_demo', dest='make_demo', metavar='DIR', default=None,
                        help='only generate a synthetic Market-style raw set in DIR, then exit')
    parser.add_argument('--size', default='demo', choices=('tiny', 'demo', 'market'), help='with --make-demo')
    parser.add_argument('--seed', type=int, default=0, help='with --make-demo')
    parser.add_argument('--cameras', type=int, default=6, help='with --make-demo (15 mimics MSMT17)')
    args = parser.parse_args(argv)
    if args.make_demo and (args.download_path or args.save_path or args.link):
        parser.error('--make-demo only generates; run `prepare.py --download_path DIR` as a second step')
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
