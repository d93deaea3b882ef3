"""What a trained re-ID model changes in tracking: StrongSORT with the run's network (trained, and untrained:
--which_epoch init) against a motion-only tracker (ByteTrack), on generated clips of several seeds.

    python -m bench.tracking [--name demo_demo] [--seeds 0 1 2 3 4] [--frames 150] [--people 6]

Each seed's clip (prepare.py --make-clip, in a temporary folder) is tracked by each configuration with track.py's
own code; the table gives IDF1, identity switches, MOTA and HOTA per seed, then their mean and range.
"""
import argparse
import statistics
import tempfile
from pathlib import Path

CONFIGS = (('trained', 'strongsort', 'last'), ('untrained', 'strongsort', 'init'), ('motion only', 'bytetrack', 'last'))
FIGURES = ('IDF1', 'IDs', 'MOTA', 'HOTA')


def clip_figures(name, model_dir, clip, out):
    """Return {config: {IDF1, MOTA, HOTA (percent), IDs, ms per frame}} of one clip: each configuration of CONFIGS
    tracked with track.py's code."""
    import track

    figures = {}
    for label, tracker, epoch in CONFIGS:
        opts = track.build_parser().parse_args(['--name', name, '--model_dir', model_dir, '--which_epoch', epoch,
                                                '--sequence', str(clip), '--tracker', tracker,
                                                '--output', str(Path(out) / label.replace(' ', '_'))])
        done = track.track_sequence(opts)
        metrics = done['metrics']
        figures[label] = dict({k: 100 * metrics[k] for k in ('IDF1', 'MOTA', 'HOTA')}, IDs=metrics['IDs'],
                              ms=done['ms_per_frame'])
    return figures


def summary_rows(per_seed):
    """Markdown rows: per configuration, each figure's mean and range over the seeds."""
    rows = []
    for label, _, _ in CONFIGS:
        cells = []
        for key in FIGURES + ('ms',):
            values = [seed[label][key] for seed in per_seed.values()]
            cells.append(f'{statistics.fmean(values):.2f} ({min(values):.2f}-{max(values):.2f})' if key != 'IDs'
                         else f'{statistics.fmean(values):.1f} ({min(values)}-{max(values)})')
        rows.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--name', default='demo_demo')
    p.add_argument('--model_dir', default='model')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--frames', type=int, default=150)
    p.add_argument('--people', type=int, default=6)
    args = p.parse_args(argv)
    from reid.cli import print_library_messages
    from reid.data.clips import make_clip
    from reid.runtime import cpu_model, native_cpu_bf16

    print_library_messages()
    per_seed = {}
    with tempfile.TemporaryDirectory(prefix='bench_tracking_') as work:
        for seed in args.seeds:
            clip = Path(work) / f'clip{seed}'
            make_clip(clip, seed=seed, frames=args.frames, people=args.people)
            per_seed[seed] = clip_figures(args.name, args.model_dir, clip, Path(work) / f'out{seed}')
            print(f'seed {seed}: ' + '; '.join(f'{label} IDF1 {f["IDF1"]:.2f} IDs {f["IDs"]}'
                                               for label, f in per_seed[seed].items()), flush=True)
    import os
    print(f'\n{cpu_model()}, {os.cpu_count()} cores, native bf16: {native_cpu_bf16() or "no"}; run {args.name}; '
          f'{len(args.seeds)} clips of {args.frames} frames, {args.people} people')
    print('| appearance | IDF1 | IDs | MOTA | HOTA | ms per frame |')
    print('|---|---|---|---|---|---|')
    print('\n'.join(summary_rows(per_seed)))
    return per_seed


if __name__ == '__main__':
    main()
