r"""Turn a re-ID download (or your own photos) into the ImageFolder layout train.py and test.py read.

Usage (the download is never moved, renamed or deleted; images are copied, or hard-linked with --link):
    python prepare.py                                            # ../Market -> ../Market/pytorch/{train,val,...}
    python prepare.py --download_path ../Market --save_path /fast/disk/market --link
    python prepare.py --download_path ../MSMT17_V1               # the layout is detected from the folder
    python prepare.py --dataset cuhk03 --cuhk03 labeled --download_path ../cuhk03-np
    python prepare.py --dataset vehicleid --test_size 1600 --download_path ../VehicleID_V1.0
    python prepare.py --dataset viper --split 3 --download_path ../VIPeR --save_path ../VIPeR/pytorch3
    python prepare.py --download_path ../MARS                     # video: frames filed per tracklet
    python prepare.py --dataset ilidsvid --split 3 --download_path ../iLIDS-VID --save_path ../iLIDS-VID/pytorch3
    python prepare.py --custom ../photos --pattern '(?P<id>\d+)_c(?P<cam>\d+)'   # train/ query/ gallery/
    python prepare.py --csv ../photos/list.csv                    # lines path,id,camera,split
Layouts: market duke msmt17 cuhk03 veri vehicleid cub viper custom csv; video: mars dukev ilidsvid prid2011
(reid/data/layouts/, docs/datasets.md).
Besides the images, <save_path>/images.csv records every image's id, label and camera (and tracklet), read by test.py.
No download at hand? Generate a synthetic set of any layout first, then prepare it like a real one:
    python prepare.py --make-demo data/demo [--layout market] [--size tiny|demo|market] [--seed 0]
    python prepare.py --download_path data/demo
A generated tracking clip in the MOTChallenge layout (img1/, seqinfo.ini, gt/gt.txt, det/det.txt) for track.py:
    python prepare.py --make-clip data/clip [--seed 0] [--frames 150] [--people 6]
"""
import argparse
from pathlib import Path

from reid.cli import DOWNLOAD_DIR, one_line_errors
from reid.data.images import require_readable_images
from reid.data.layouts import GENERATED, LAYOUTS, detect_layout, plan_splits
from reid.data.layouts.common import option_dest, unmatched_queries
from reid.data.prepared import write_split
from reid.data.synthetic import PRESETS


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--download_path', default=None, help='raw download folder (default ../Market)')
    parser.add_argument('--save_path', default=None, help='output folder (default <download_path>/pytorch)')
    parser.add_argument('--link', action='store_true',
                        help='hard-link instead of copying (symlinks across filesystems)')
    parser.add_argument('--dataset', default=None, choices=downloads(),
                        help='the download\'s layout (default: detected from the folder)')
    added = set()
    for layout in LAYOUTS.values():   # each layout's own flags (reid/data/layouts/<layout>.py)
        for option in layout.options:
            if option.flag not in added:   # a flag several layouts share (--split) is one argument
                parser.add_argument(option.flag, **option.kwargs)
                added.add(option.flag)
    parser.add_argument('--make-demo', '--make_demo', dest='make_demo', metavar='DIR', default=None,
                        help='only generate a synthetic raw set in DIR, then exit')
    parser.add_argument('--layout', default='market', choices=GENERATED, help='with --make-demo: which layout to write')
    parser.add_argument('--size', default='demo', choices=tuple(PRESETS), help='with --make-demo')
    parser.add_argument('--seed', type=int, default=0, help='with --make-demo or --make-clip')
    parser.add_argument('--cameras', type=int, default=6, help='with --make-demo --layout market (15 mimics MSMT17)')
    parser.add_argument('--boxes', action='store_true',
                        help="with --make-demo: also write person_boxes.csv, each drawn person's box (the images "
                             "are the same)")
    parser.add_argument('--make-clip', '--make_clip', dest='make_clip', metavar='DIR', default=None,
                        help='only generate a tracking clip in the MOTChallenge layout in DIR, then exit')
    parser.add_argument('--frames', type=int, default=150, help='with --make-clip: its length (15 frames a second)')
    parser.add_argument('--people', type=int, default=6, help='with --make-clip: how many people walk in it')
    return parser


def downloads():
    """Return the layouts a download folder can have (not those whose own flag names the data: --custom, --csv)."""
    return [name for name, layout in LAYOUTS.items() if not any(o.source for o in layout.options)]


def layout_and_source(args):
    """Return (layout name, source path) that the flags name: --custom DIR or --csv FILE, --dataset, a layout's
    own flag (--cuhk03 KIND), or the layout detected in --download_path."""
    chosen = [(o, name) for name, layout in LAYOUTS.items() for o in layout.options
              if o.selects and getattr(args, option_dest(o))]
    for option, name in chosen:
        if option.source:
            return name, getattr(args, option_dest(option))
    if args.dataset:
        return args.dataset, args.download_path
    if chosen:
        return chosen[0][1], args.download_path
    return detect_layout(args.download_path), args.download_path


def make_demo(args):
    """Write a generated raw set (--make-demo) and say how to prepare it."""
    from reid.data import synthetic

    if args.layout == 'market':
        counts = synthetic.make_dataset(args.make_demo, size=args.size, seed=args.seed, n_cameras=args.cameras,
                                        boxes=args.boxes)
        what = f'a synthetic Market-style set ({args.size}, seed {args.seed}, {args.cameras} cameras)'
    else:
        counts = synthetic.make_layout(args.make_demo, args.layout, size=args.size, seed=args.seed, boxes=args.boxes)
        what = f'a synthetic {args.layout} set ({args.size}, seed {args.seed})'
    print(f'wrote {what} to {args.make_demo}')
    for key, value in counts.items():
        print(f'  {key:20s} {value}')
    flag = '' if args.layout in ('market', 'duke') else f' --dataset {args.layout}'
    print(f'next: python prepare.py{flag} --download_path {args.make_demo}')


def make_clip(args):
    """Write a generated tracking clip (--make-clip) and say how to track it."""
    from reid.data import clips

    counts = clips.make_clip(args.make_clip, seed=args.seed, frames=args.frames, people=args.people)
    print(f'wrote a generated tracking clip (seed {args.seed}, {args.frames} frames, {args.people} people) '
          f'to {args.make_clip}')
    for key, value in counts.items():
        print(f'  {key:20s} {value}')
    print(f'next: python track.py --name demo_demo --sequence {args.make_clip} --output track_results')


def refuse_other_layouts_flags(args, name):
    """ValueError naming a flag of another layout given here: layout `name` would silently ignore it."""
    defaults = build_parser()
    own = {option.flag for option in LAYOUTS[name].options}
    for other, layout in LAYOUTS.items():
        for option in layout.options:
            dest = option_dest(option)
            if option.flag not in own and getattr(args, dest) != defaults.get_default(dest):
                raise ValueError(f'{option.flag} is a flag of the {other} layout; {name} does not use it (drop it, '
                                 f'or pick the layout with --dataset)')


def prepare(args):
    """Read the download in its layout, check every image, write the prepared folder; print what was written."""
    name, source = layout_and_source(args)
    refuse_other_layouts_flags(args, name)
    layout = LAYOUTS[name]
    options = layout.option_values(args)
    splits = plan_splits(name, source, options)
    require_readable_images(sorted({record.path for items in splits.values() for record in items}))
    source = Path(source)
    save_path = args.save_path or (source.parent if source.is_file() else source) / 'pytorch'
    info = dict(layout=name, input_size=list(layout.size), protocol=layout.protocol, trials=layout.trials,
                options={k: v for k, v in options.items() if v is not None and k != name})
    counts = write_split(splits, save_path, link=args.link, info=info)
    print(f'{"linked" if args.link else "copied"} {source} ({name}) -> {save_path}')
    for split, items in splits.items():
        tracklets = len({r.tracklet for r in items if r.tracklet is not None})
        print(f'  {split:12s} {counts[split]:6d} images  {len({r.id for r in items}):5d} ids'
              + (f'  {tracklets:6d} tracklets' if tracklets else ''))
    if name in ('market', 'duke') and 'multi-query' not in splits:
        print('  multi-query  skipped: no gt_bbox/ folder (DukeMTMC-reID has none)')
    unmatched = unmatched_queries(splits)
    if unmatched:
        print(f'warning: {len(unmatched)} of {len(splits["query"])} queries have no match in the gallery (another '
              f'image of the id from another camera), e.g. {unmatched[0].path}; evaluation skips and counts them')
    print(f'protocol ({name}): {layout.protocol}; input size {layout.size[0]}x{layout.size[1]} '
          '(train.py --h/--w override it)')
    return splits


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = [o.flag for l in LAYOUTS.values() for o in l.options if o.source and getattr(args, option_dest(o))]
    if args.make_demo and (args.download_path or args.save_path or args.link or sources):
        parser.error('--make-demo only generates; run `prepare.py --download_path DIR` as a second step')
    demo_flags = args.layout != 'market' or args.size != 'demo' or args.cameras != 6 or args.boxes
    if args.make_clip and (args.make_demo or args.download_path or args.save_path or args.link or sources
                           or demo_flags):
        parser.error('--make-clip only generates a tracking clip (with --seed, --frames, --people); give it alone')
    if (args.frames, args.people) != (150, 6) and not args.make_clip:
        parser.error('--frames and --people go with --make-clip DIR')
    for flag, value in (('--frames', args.frames), ('--people', args.people)):
        if value < 1:
            parser.error(f'{flag} {value}: need at least 1')
    if len(sources) + bool(args.download_path) > 1 or (args.dataset and sources):
        parser.error('--download_path (with --dataset), ' + ', '.join(o.flag for l in LAYOUTS.values()
                     for o in l.options if o.source) + ' each name the data: give one')
    if args.pattern and not args.custom:
        parser.error('--pattern goes with --custom DIR')
    args.download_path = args.download_path or DOWNLOAD_DIR
    # Ctrl-C: write_split has removed its partial folder; the download was only read
    with one_line_errors('prepare.py', 'interrupted; nothing was changed (run the same command again)'):
        if args.make_demo:
            make_demo(args)
        elif args.make_clip:
            make_clip(args)
        else:
            prepare(args)


if __name__ == '__main__':
    main()
