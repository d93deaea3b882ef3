"""Evaluate the features test.py saved: pytorch_result.mat -> Rank@1/5/10, mAP (Market and standard), mINP.

    python evaluate_gpu.py                              # reads ./pytorch_result.mat
    python evaluate_gpu.py --result other.mat --multi   # also multi-query, from ./multi_query.mat
    python evaluate_gpu.py --rerank --k1 20 --k2 6 --lambda 0.3   # also k-reciprocal re-ranking
    python evaluate_gpu.py --trials 10                  # VehicleID: mean and std over 10 re-drawn galleries
    python evaluate_gpu.py --result viper0.mat viper1.mat ...     # VIPeR: mean and std over several splits

Runs on CUDA when present, else on the CPU, one block of queries at a time (re-ranking included: memory stays far
below queries x gallery). The first printed line keeps the original's format (with several
trials it holds the means; the standard deviations follow on the next line, per-trial values go to *_trials.mat).
"""
import argparse
from pathlib import Path

import scipy.io

from reid.evaluation import metrics
from reid.evaluation.protocols import evaluate_all, format_trials, redrawn_galleries, trial_summary
from reid.evaluation.results import load_multi_query, load_result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--result', default=['pytorch_result.mat'], nargs='+',
                        help='features saved by test.py; several files (e.g. VIPeR splits): mean and std over them')
    parser.add_argument('--trials', default=0, type=int,
                        help='VehicleID protocol: re-draw the gallery (one random image per id, seeds 0..N-1) '
                             'N times from the features; mean and std')
    parser.add_argument('--multi', action='store_true', help='also evaluate multi-query (features from --multi_result)')
    parser.add_argument('--multi_result', default='multi_query.mat', help='multi-query features saved by test.py')
    parser.add_argument('--rerank', action='store_true', help='also evaluate with k-reciprocal re-ranking')
    parser.add_argument('--k1', default=20, type=int, help='re-ranking: size of the k-reciprocal sets')
    parser.add_argument('--k2', default=6, type=int, help='re-ranking: neighbours of the local query expansion')
    parser.add_argument('--lambda', dest='lambda_value', default=0.3, type=float,
                        help='re-ranking: weight of the original distance in the final distance')
    args = parser.parse_args(argv)
    if args.k1 < 1 or args.k2 < 1:
        parser.error(f'--k1 {args.k1} --k2 {args.k2}: both must be at least 1')
    if not 0 <= args.lambda_value <= 1:
        parser.error(f'--lambda {args.lambda_value}: must lie in [0, 1]')
    if args.trials < 0 or (args.trials and len(args.result) > 1):
        parser.error(f'--trials {args.trials}: a positive number of gallery draws of one --result file')
    if (args.trials or len(args.result) > 1) and (args.multi or args.rerank):
        parser.error('--multi and --rerank evaluate one result; not with --trials or several --result files')
    return args


def evaluate_trials(args):
    """Evaluate several results (files, or --trials gallery draws); print mean and std; save *_trials.mat."""
    if args.trials:
        try:
            results = redrawn_galleries(load_result(args.result[0]), args.trials)
        except ValueError as e:
            raise SystemExit(f'{args.result[0]}: {e}') from None
    else:
        results = [load_result(path) for path in args.result]
    reports = [metrics.compute_cmc_map(*result) for result in results]
    values, mean, std = trial_summary(reports)
    print(format_trials(mean, std, len(reports)))
    out = Path(args.result[0]).with_name(Path(args.result[0]).stem + '_trials.mat')
    scipy.io.savemat(out, {**values, **{f'mean_{k}': v for k, v in mean.items()},
                           **{f'std_{k}': v for k, v in std.items()}})
    print(f'per-trial values: {out}')
    return values, mean, std


def main(argv=None):
    args = parse_args(argv)
    if args.trials or len(args.result) > 1:
        return evaluate_trials(args)
    args.result = args.result[0]
    result = load_result(args.result)
    multi = load_multi_query(args.multi_result) if args.multi else None
    params = dict(k1=args.k1, k2=args.k2, lambda_value=args.lambda_value) if args.rerank else None
    try:
        reports = evaluate_all(result, multi, params)
    except ValueError as e:
        raise SystemExit(f'{args.result}: {e}')
    if reports[0][1]['n_valid'] == 0:
        raise SystemExit(f'{args.result}: none of the {len(result.query_label)} queries has a match in the gallery '
                         '(same id, another camera); check that query and gallery come from the same test set')
    for title, res, note in reports:
        if title:
            print(title)
        print(metrics.format_result(res))
        if note:
            print(note)
    return reports


if __name__ == '__main__':
    main()
