"""bf16 autocast against fp32 on this CPU, per job: the quick start's training over several seeds (mAP, seconds)
and test.py's extraction (seconds, the cosine of its features to fp32's); what `--cpu_bf16 auto` rests on.

    python -m bench.precision [--data data/demo] [--seeds 0,1,2] [--epochs N]   # default: the quick start's

Trains `--preset quick --train_all` with `--cpu_bf16 on` and `off` for each seed (both run on any CPU: without
native bf16 the bf16 side is emulated, the same rounding, slower), scores every run with fp32 extraction, then
extracts the last fp32 run's features both ways. Prints one row per run, then the means and the ratios.
"""
import argparse
import statistics
import time

import numpy as np
import scipy.io

import train
from bench.tricks import QUICK, ensure_demo, test_cli
from reid.runtime import cpu_model, native_cpu_bf16


def train_and_score(args, T, seed, precision):
    """Train the quick recipe with --cpu_bf16 `precision`; return (mAP, Rank@1, training seconds)."""
    name = f'precision_{precision}_{seed}'
    start = time.perf_counter()
    epochs = ['--total_epoch', str(args.epochs)] if args.epochs else []
    train.main([*QUICK, '--data_dir', f'{args.data}/pytorch', '--model_dir', args.model_dir, '--name', name,
                *epochs, '--seed', seed, '--overwrite', '--cpu_bf16', precision])
    seconds = time.perf_counter() - start
    result = extract(args, T, name, 'off')[0]
    return result['mAP'], result['cmc'][0], seconds


def extract(args, T, name, precision):
    """test.py on run `name` with --cpu_bf16 `precision`; return (metrics, query features, seconds)."""
    out = f'{args.model_dir}/{name}/result_{precision}.mat'
    start = time.perf_counter()
    result = T.run_test(T.build_parser().parse_args(
        ['--name', name, '--model_dir', args.model_dir, '--test_dir', f'{args.data}/pytorch', '--result', out,
         '--cpu_bf16', precision]))['single']
    return result, scipy.io.loadmat(out)['gallery_f'], time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/demo')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--epochs', default=None, type=int, help="default: the quick preset's")
    p.add_argument('--model_dir', default='bench/runs')
    args = p.parse_args(argv)
    ensure_demo(args.data)
    T = test_cli()
    print(f'CPU: {cpu_model()}, native bf16: {native_cpu_bf16() or "none (bf16 emulated)"}', flush=True)
    rows = {'on': [], 'off': []}
    for seed in args.seeds.split(','):
        for precision in ('off', 'on'):
            rows[precision].append(train_and_score(args, T, seed, precision))
            m, r1, s = rows[precision][-1]
            print(f'| train {"bf16" if precision == "on" else "fp32"} | seed {seed} | mAP {100 * m:.2f} | '
                  f'Rank@1 {100 * r1:.2f} | {s:.1f} s |', flush=True)
    name = f'precision_off_{args.seeds.split(",")[-1]}'
    (fp32, f32, t32), (bf16, f16, t16) = extract(args, T, name, 'off'), extract(args, T, name, 'on')
    cosine = (f32 * f16).sum(1)   # both L2-normalised
    for precision in ('off', 'on'):
        maps = [100 * m for m, _, _ in rows[precision]]
        print(f'training {"bf16" if precision == "on" else "fp32"}: mAP mean {statistics.mean(maps):.2f} '
              f'(min {min(maps):.2f}, max {max(maps):.2f}), {statistics.mean(s for *_, s in rows[precision]):.1f} s '
              'per run (training + start-up)')
    gap = statistics.mean(100 * m for m, _, _ in rows['off']) - statistics.mean(100 * m for m, _, _ in rows['on'])
    speed = statistics.mean(s for *_, s in rows['off']) / statistics.mean(s for *_, s in rows['on'])
    print(f'training: bf16 costs {gap:.2f} mAP points on average and runs {speed:.2f}x as fast as fp32')
    print(f'extraction ({name}): fp32 {t32:.1f} s mAP {100 * fp32["mAP"]:.2f}, bf16 {t16:.1f} s '
          f'mAP {100 * bf16["mAP"]:.2f}: {t32 / t16:.2f}x as fast, feature cosine min {cosine.min():.5f} '
          f'mean {np.mean(cosine):.5f}')


if __name__ == '__main__':
    main()
