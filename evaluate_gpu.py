"""Evaluate the features test.py saved: pytorch_result.mat -> Rank@1/5/10, mAP (Market and standard), mINP.

    python evaluate_gpu.py                              # reads ./pytorch_result.mat
    python evaluate_gpu.py --result other.mat --multi   # also multi-query, from ./multi_query.mat
    python evaluate_gpu.py --rerank --k1 20 --k2 6 --lambda 0.3   # also k-reciprocal re-ranking
    python evaluate_gpu.py --rerank gnn                 # GNN re-ranking instead (k1 26, k2 7, lambda 0.3)
    python evaluate_gpu.py --aqe 5 --dba --rerank gnn   # average query expansion (+ DBA), then re-ranking
    python evaluate_gpu.py --verify                     # same person? TAR at FAR 1e-1..1e-4, thresholds, AUC
    python evaluate_gpu.py --verify --save_threshold model/ft_ResNet50 --far 1e-3   # calibrate that run
    python evaluate_gpu.py --trials 10                  # VehicleID: mean and std over 10 re-drawn galleries
    python evaluate_gpu.py --result viper0.mat viper1.mat ...     # VIPeR: mean and std over several splits
    python evaluate_gpu.py --result ilids_0.mat ilids_1.mat ...   # iLIDS-VID, PRID-2011 (tracklets): the same

Runs on CUDA when present, else on the CPU, one block of queries at a time (re-ranking included: memory stays far
below queries x gallery). The first printed line keeps the original's format (with several
trials it holds the means; the standard deviations follow on the next line, per-trial values go to *_trials.mat).
"""
import argparse
from pathlib import Path

import scipy.io

from reid.cli import MODEL_DIR, MULTI_RESULT_FILE, RESULT_FILE, RUN_NAME, one_line_errors
from reid.evaluation import metrics
from reid.evaluation import verification
from reid.evaluation.protocols import evaluate_all, format_trials, redrawn_galleries, trial_summary
from reid.evaluation.rerankers import DEFAULT_RERANKER, add_rerank_flags, chosen_rerank
from reid.evaluation.results import load_multi_query, load_result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--result', default=[RESULT_FILE], nargs='+',
                        help='features saved by test.py; several files (e.g. VIPeR splits): mean and std over them')
    parser.add_argument('--trials', default=0, type=int,
                        help='VehicleID protocol: re-draw the gallery (one random image per id, seeds 0..N-1) '
                             'N times from the features; mean and std')
    parser.add_argument('--multi', action='store_true', help='also evaluate multi-query (features from --multi_result)')
    parser.add_argument('--multi_result', default=MULTI_RESULT_FILE, help='multi-query features saved by test.py')
    add_rerank_flags(parser)
    parser.add_argument('--aqe', default=0, type=int, metavar='K',
                        help='average query expansion: each query replaced by the weighted mean of itself and its '
                             'top K-1 gallery neighbours (fast-reid AQE; weights score**alpha); 0 = off')
    parser.add_argument('--aqe_alpha', default=3.0, type=float, help='query expansion: weight exponent alpha')
    parser.add_argument('--dba', action='store_true',
                        help='with --aqe: first replace each gallery image by the weighted mean of its top K')
    parser.add_argument('--verify', action='store_true',
                        help='score every valid query-gallery pair: TAR at FAR 1e-1..1e-4 with the thresholds, '
                             'and AUC; the figures go beside --result (<stem>_verify.yaml)')
    parser.add_argument('--save_threshold', nargs='?', const=f'{MODEL_DIR}/{RUN_NAME}', default=None, metavar='RUN',
                        help=f'with --verify: write the threshold at --far into RUN/threshold.yaml '
                             f'(default {MODEL_DIR}/{RUN_NAME})')
    parser.add_argument('--far', default=verification.DEFAULT_FAR, type=float,
                        help='false-accept rate of the threshold --save_threshold keeps (one of 1e-1..1e-4)')
    args = parser.parse_args(argv)
    try:   # resolved here, once: None without --rerank
        args.rerank_params = chosen_rerank(args)
    except ValueError as e:
        parser.error(str(e))
    if args.trials < 0 or (args.trials and len(args.result) > 1):
        parser.error(f'--trials {args.trials}: a positive number of gallery draws of one --result file')
    if args.aqe < 0 or args.aqe_alpha < 0 or (args.dba and not args.aqe):
        parser.error(f'--aqe {args.aqe} --aqe_alpha {args.aqe_alpha}: K >= 1 (0 = off), alpha >= 0; --dba needs --aqe')
    if args.save_threshold and not args.verify:
        parser.error('--save_threshold needs --verify')
    try:
        verification.check_far(args.far)
    except ValueError as e:
        parser.error(str(e))
    if (args.trials or len(args.result) > 1) and (args.multi or args.rerank or args.aqe or args.verify):
        parser.error('--multi, --rerank, --aqe and --verify evaluate one result; not with --trials or several '
                     '--result files')
    return args


def evaluate_trials(args):
    """Evaluate several results (files, or --trials gallery draws); print mean and std; save *_trials.mat."""
    if args.trials:
        result = load_result(args.result[0])
        try:
            results = redrawn_galleries(result, args.trials)
        except ValueError as e:
            raise ValueError(f'{args.result[0]}: {e}') from None
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


def verify(args, path, result):
    """Print the verification lines of the plain cosine scores, save them beside the result (and the threshold)."""
    report = verification.verification_report(*result)
    print('verification (every valid query-gallery pair; accepted when the cosine score is above the threshold):')
    print(verification.format_verification(report))
    figures = verification.figures_file(path)
    verification.save_figures(report, figures, path)
    print(f'verification figures: {figures}')
    if args.save_threshold:
        from reid.runs import RunFolder

        run = RunFolder(args.save_threshold)
        if not run.path.is_dir():
            raise ValueError(f'--save_threshold {run.path}: no such run folder')
        written = run.write_threshold(verification.threshold_entry(report, args.far, path))
        print(f'threshold at FAR {args.far:g}: {written}')
    return report


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors('evaluate_gpu.py'):
        return evaluate(args)


def evaluate(args):
    """Evaluate the result file(s) as the flags ask and print the report."""
    if args.trials or len(args.result) > 1:
        return evaluate_trials(args)
    path = args.result[0]
    result = load_result(path)
    multi = load_multi_query(args.multi_result) if args.multi else None
    expansion = dict(k=args.aqe, alpha=args.aqe_alpha, dba=args.dba) if args.aqe else None
    try:
        if args.verify:
            verify(args, path, result)
        reports = evaluate_all(result, multi, args.rerank_params, args.rerank or DEFAULT_RERANKER, expansion)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    if reports[0][1]['n_valid'] == 0:
        raise ValueError(f'{path}: none of the {len(result.query_label)} queries has a match in the gallery '
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
