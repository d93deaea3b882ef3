"""Each main training option on the demo set under the same budget: Rank@1 / mAP / mINP per option and seed.

    python -m bench.tricks [--data data/demo] [--epochs 6] [--h 64 --w 32] [--seeds 0,1] [--only 1,2]
Generates and prepares the demo set when --data lacks it; every option trains ResNet-18 from scratch at --h x --w for
--epochs on train_all, then test.py scores it. The defaults are the size and budget the quick recipe's optimiser
and tricks were chosen at (the quick start itself trains 10 epochs at 128x64: --h 128 --w 64 --epochs 10). Runs go
to --model_dir (default bench/runs, replaced on each call). Prints one row per option and seed, then the means.
"""
import argparse
import time
from pathlib import Path


import prepare
import train

# The quick start's recipe (quickstart.sh trains `--preset quick --train_all`), chosen from this table.
QUICK = ['--preset', 'quick', '--train_all']
# The original's SGD softmax recipe on ResNet-18: the quick start before the quick preset (30 epochs).
SGD = ['--backbone', 'resnet18', '--scratch', '--batchsize', '32', '--lr', '0.05',
       '--warm_epoch', '1', '--cache', '--train_all']


def bot_scaled(epochs):
    """BoT's schedule (120 epochs, drops at 40 and 70, warm-up 10) scaled to `epochs`, on ResNet-18."""
    first, second = max(1, round(epochs / 3)), max(2, round(epochs * 7 / 12))
    return ['--preset', 'bot', '--backbone', 'resnet18', '--scratch', '--batchsize', '32',
            '--cache', '--train_all', '--steps', f'{first},{max(first + 1, second)}',
            '--warm_epoch', str(round(epochs / 12))]


# option -> flags given after the shared ones (a callable gets --epochs)
OPTIONS = {
    'quick preset: Adam 1e-3, cosine, label smoothing 0.1, BNNeck, last stride 1': QUICK,
    'quick preset without label smoothing': QUICK + ['--label_smoothing', '0'],
    'quick preset + triplet (P x K)': QUICK + ['--triplet'],
    'quick preset + circle (P x K)': QUICK + ['--circle'],
    'quick preset + batch-hard triplet + center (P x K)': QUICK + ['--triplet', '--triplet_mining', 'batch_hard',
                                                                  '--center'],
    'SGD softmax (the original recipe; the previous quick start)': SGD,
    'SGD softmax, backbone lr x0.1': SGD + ['--backbone_lr_mult', '0.1'],
    'SGD softmax + label smoothing 0.1': SGD + ['--label_smoothing', '0.1'],
    'bot preset (Adam 3.5e-4, schedule scaled)': bot_scaled,
}


def test_cli():
    """Return test.py as a module, loaded by path (a plain `import test` may find Python's own package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('reid_test_cli', Path(__file__).resolve().parents[1] / 'test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_demo(data):
    """Generate and prepare the demo set at `data` unless data/pytorch exists."""
    if not (Path(data) / 'pytorch' / 'train_all').is_dir():
        prepare.main(['--make-demo', str(data), '--size', 'demo'])
        prepare.main(['--download_path', str(data)])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/demo')
    p.add_argument('--epochs', default=6, type=int)
    p.add_argument('--h', default=64, type=int, help='input height of every option (flags after it: it wins)')
    p.add_argument('--w', default=32, type=int)
    p.add_argument('--seeds', default='0,1', help='comma-separated training seeds')
    p.add_argument('--only', default=None, help='comma-separated option numbers (1-based) to run')
    p.add_argument('--model_dir', default='bench/runs')
    args = p.parse_args(argv)
    ensure_demo(args.data)
    T = test_cli()

    chosen = list(OPTIONS.items())
    if args.only:
        chosen = [chosen[int(i) - 1] for i in args.only.split(',')]
    rows = []
    for name, flags in chosen:
        flags = flags(args.epochs) if callable(flags) else flags
        for seed in args.seeds.split(','):
            run = f'tricks_{len(rows)}'
            start = time.perf_counter()
            train.main([*flags, '--data_dir', f'{args.data}/pytorch', '--model_dir', args.model_dir, '--name', run,
                        '--total_epoch', str(args.epochs), '--h', str(args.h), '--w', str(args.w), '--seed', seed,
                        '--overwrite', '--num_workers', '0'])
            result = T.run_test(T.build_parser().parse_args(
                ['--name', run, '--model_dir', args.model_dir, '--test_dir', f'{args.data}/pytorch',
                 '--num_workers', '0', '--result', f'{args.model_dir}/{run}/pytorch_result.mat']))['single']
            rows.append((name, seed, result['cmc'][0], result['mAP'], result['mINP'], time.perf_counter() - start))
            print(f'| {name} | {seed} | {100 * rows[-1][2]:.2f} | {100 * rows[-1][3]:.2f} | {100 * rows[-1][4]:.2f} '
                  f'| {rows[-1][5]:.0f} s |', flush=True)
    print(f'\n{args.epochs} epochs each, ResNet-18 from scratch at {args.h}x{args.w}, demo set '
          '(400 queries x 1,850 gallery)')
    print('| option | seeds | Rank@1 | mAP | mINP | time per run |\n|---|---|---|---|---|---|')
    for name, _ in chosen:
        mine = [r for r in rows if r[0] == name]
        mean = [sum(r[i] for r in mine) / len(mine) for i in (2, 3, 4, 5)]
        print(f'| {name} | {len(mine)} | {100 * mean[0]:.2f} | {100 * mean[1]:.2f} | {100 * mean[2]:.2f} '
              f'| {mean[3]:.0f} s |')


if __name__ == '__main__':
    main()
