"""The quick start's figures over several seeds, as both kinds of CPU choose: the same commands as quickstart.sh
(train --preset quick --train_all, test.py --multi, evaluate_gpu.py --rerank) with --seed 0, 1, 2.

    python -m bench.quickstart [--data data/demo] [--seeds 0,1,2]

Each seed trains once (training is fp32 on every CPU by default, reid.runtime.AUTO_BF16); its features are then
extracted as a CPU with native bf16 extracts them (bf16) and as one without (fp32), by forcing REID_NATIVE_BF16.
Prints each run's lines, then per CPU kind the mean and the range (min-max) of every figure docs/benchmarks.md shows; where
--data has person boxes (prepare.py --make-demo DIR --boxes), also each run's heatmap mass on the person.
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import train
from bench.tricks import QUICK, ensure_demo, test_cli
from reid.api import ReIDRun
from reid.data.synthetic import BOXES_FILE
from reid.evaluation import metrics
from reid.evaluation.heatmap import person_box_figures
from reid.evaluation.protocols import evaluate_all
from reid.evaluation.results import load_multi_query, load_result
from reid.runtime import cpu_model, native_cpu_bf16

ROWS = ('single', 'single, re-ranked', 'multi-query', 'multi-query, re-ranked')
KINDS = {'1': 'native bf16 (bf16 extraction)', '0': 'no native bf16 (fp32 extraction)'}


def figures(result_path):
    """Return {row: (Rank@1, Rank@5, Rank@10, mAP, mINP)} in % for the quick start's four evaluations."""
    result = load_result(result_path)
    multi = load_multi_query(os.path.join(os.path.dirname(result_path), 'multi_query.mat'))
    reports = evaluate_all(result, multi, dict(k1=20, k2=6, lambda_value=0.3))
    return {row: tuple(100 * v for v in (metrics.rank_at(r, 1), metrics.rank_at(r, 5), metrics.rank_at(r, 10),
                                         r['mAP'], r['mINP']))
            for row, (_, r, _) in zip(ROWS, reports)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/demo')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--model_dir', default='bench/runs')
    args = p.parse_args(argv)
    ensure_demo(args.data)
    T = test_cli()
    print(f'CPU: {cpu_model()}, {os.cpu_count()} cores, native bf16: {native_cpu_bf16() or "none"}', flush=True)
    found = {kind: [] for kind in KINDS}
    for seed in args.seeds.split(','):
        name = f'quickstart_{seed}'
        start = time.perf_counter()
        train.main([*QUICK, '--data_dir', f'{args.data}/pytorch', '--model_dir', args.model_dir, '--name', name,
                    '--seed', seed, '--overwrite'])
        print(f'seed {seed}: trained in {time.perf_counter() - start:.0f} s', flush=True)
        for kind in KINDS:
            os.environ['REID_NATIVE_BF16'] = kind
            out = f'{args.model_dir}/{name}/result_{kind}/pytorch_result.mat'
            os.makedirs(os.path.dirname(out), exist_ok=True)
            T.run_test(T.build_parser().parse_args(['--name', name, '--model_dir', args.model_dir, '--test_dir',
                                                    f'{args.data}/pytorch', '--multi', '--result', out]))
            found[kind].append(figures(out))
            print(f'seed {seed}, {KINDS[kind]}: ' + '; '.join(
                f'{row} R1 {v[0]:.2f} mAP {v[3]:.2f}' for row, v in found[kind][-1].items()), flush=True)
        os.environ.pop('REID_NATIVE_BF16')
        if (Path(args.data) / BOXES_FILE).is_file():
            for epoch in ('init', 'last'):
                f = person_box_figures(ReIDRun(f'{args.model_dir}/{name}', epoch, device='cpu', backend='torch'),
                                       f'{args.data}/pytorch', args.data, every=4)
                print(f'seed {seed}, epoch {epoch}: heatmap mass inside the person box {100 * f["mass"]:.1f}% vs '
                      f'box area {100 * f["area"]:.1f}% (ratio {f["mass"] / f["area"]:.2f})', flush=True)
    for kind, runs in found.items():
        print(f'\n{KINDS[kind]}, seeds {args.seeds}: mean (min-max), %')
        print('| | Rank@1 | Rank@5 | Rank@10 | mAP | mINP |\n|---|---|---|---|---|---|')
        for row in ROWS:
            cells = []
            for i in range(5):
                values = [r[row][i] for r in runs]
                cells.append(f'{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})')
            print(f'| {row} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
