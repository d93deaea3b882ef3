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
from collections import namedtuple
from pathlib import Path

import numpy as np
import scipy.io

from reid.data import layouts as datasets
from reid.evaluation import metrics
from reid.evaluation import rerank

# The arrays of pytorch_result.mat / multi_query.mat, named by their .mat keys, in the argument order of
# metrics.compute_cmc_map / metrics.pool_multi_query.
ReIDResult = namedtuple('ReIDResult', 'query_f query_label query_cam gallery_f gallery_label gallery_cam')
MultiQuery = namedtuple('MultiQuery', 'mquery_f mquery_label mquery_cam')


def _load_mat_fields(path, prefixes):
    """Return [(features, labels, cams)] from a .mat file for each key prefix; SystemExit naming what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f'{path}: is a folder, not a .mat file (pass the file test.py wrote)')
    if not path.is_file():
        raise SystemExit(f'{path}: file not found (run test.py first, or pass the right path)')
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for a damaged or foreign file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SystemExit(f'{path}: not a readable .mat file ({reason}); run test.py again to rewrite it')
    groups = []
    for prefix in prefixes:
        names = [prefix + '_f', prefix + '_label', prefix + '_cam']
        missing = [name for name in names if name not in mat]
        if missing:
            raise SystemExit(f'{path}: missing key(s) {", ".join(missing)}')
        labels, cams = (_integer_row(mat[name], path, name) for name in names[1:])
        try:
            features = np.asarray(mat[names[0]], dtype=np.float32)
        except (TypeError, ValueError):
            raise SystemExit(f'{path}: {names[0]} is not a numeric array') from None
        if features.ndim != 2 or not len(features) == len(labels) == len(cams):
            raise SystemExit(f'{path}: {names[0]} has shape {features.shape} but {names[1]} has {len(labels)} '
                             f'and {names[2]} {len(cams)} entries')
        if len(features) == 0:
            raise SystemExit(f'{path}: {names[0]} is empty (no {prefix} image); run test.py on a prepared set')
        if not np.isfinite(features).all():
            bad = int((~np.isfinite(features).all(axis=1)).sum())
            raise SystemExit(f'{path}: {names[0]} has NaN or infinite values in {bad} row(s); the network that '
                             'wrote it diverged: test another --which_epoch')
        groups.append((features, labels, cams))
    if len(groups) == 2 and groups[0][0].shape[1] != groups[1][0].shape[1]:
        raise SystemExit(f'{path}: {prefixes[0]}_f has {groups[0][0].shape[1]} columns but {prefixes[1]}_f has '
                         f'{groups[1][0].shape[1]}; both must come from the same network')
    return groups


def _integer_row(values, path, name):
    """Return a .mat field as a 1-D int64 array; SystemExit naming the key when it holds anything but integers."""
    values = np.asarray(values)
    if values.dtype.kind in 'iub':
        return values.reshape(-1).astype(np.int64)
    if values.dtype.kind == 'f' and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.reshape(-1).astype(np.int64)  # MATLAB's default double
    raise SystemExit(f'{path}: {name} must hold integer ids, found {values.dtype} values'
                     + (f' such as {values.reshape(-1)[0]!r}' if values.size else ''))


def load_result(path):
    """Return ReIDResult(query_f, query_label, query_cam, gallery_f, gallery_label, gallery_cam) from a .mat.

    Features are float32 (N, D); labels and cameras 1-D int64 (savemat stores them as 1 x N rows).
    Unpacks in metrics.compute_cmc_map's argument order; fields also read as result.query_f.
    SystemExit naming the file when it or a key is missing.
    """
    (qf, ql, qc), (gf, gl, gc) = _load_mat_fields(path, ['query', 'gallery'])
    return ReIDResult(qf, ql, qc, gf, gl, gc)


def load_multi_query(path):
    """Return MultiQuery(mquery_f, mquery_label, mquery_cam) from multi_query.mat (same rules as load_result)."""
    return MultiQuery(*_load_mat_fields(path, ['mquery'])[0])


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


def evaluate_all(result, multi=None, rerank_params=None):
    """Return [(title or None, metrics dict, note or None)] for single-query, multi-query and re-ranked runs.

    `multi`: a MultiQuery or None; `rerank_params`: dict(k1=, k2=, lambda_value=) or None.
    """
    qf, ql, qc, gf, gl, gc = result
    runs = [(None, qf, None)]
    if multi is not None:
        pooled, n_fallback = metrics.pool_multi_query(qf, ql, qc, *multi)
        note = f'{n_fallback} of {len(ql)} queries had no multi-query image of their id and camera: single query used'
        runs.append(('multi-query (mean of the images of the same id and camera):', pooled, note))
    reports = []
    for title, query_features, note in runs:
        reports.append((title, metrics.compute_cmc_map(query_features, ql, qc, gf, gl, gc), note))
        if rerank_params is not None:
            # streamed per block of queries: the (Q, G) re-ranked matrix never exists
            blocks = rerank.k_reciprocal_rerank_blocks(query_features, gf, **rerank_params)
            label = 'k1=%(k1)d k2=%(k2)d lambda=%(lambda_value)g' % rerank_params
            reports.append(((title or 'single query:').rstrip(':') + f', re-ranked ({label}):',
                            metrics.compute_cmc_map_from_blocks(blocks, ql, qc, gl, gc), None))
    return reports


def redrawn_galleries(result, trials):
    """Return [ReIDResult] of `trials` gallery draws (seeds 0, 1, ...) over all the images of `result`.

    Query and gallery are pooled, put in prepare.py's order, and per id one random image goes to the gallery
    (datasets.gallery_draw; seed 0 gives the split prepare.py wrote). Needs one camera value per image, as
    prepare.py gives a layout without cameras (VehicleID): ValueError otherwise.
    """
    features, labels, cams = (np.concatenate(pair) for pair in zip(result[:3], result[3:]))
    if len(np.unique(cams)) != len(cams):
        raise ValueError('--trials re-draws the gallery of a layout without cameras (VehicleID), where each image '
                         'has its own camera value; these cameras repeat')
    order = datasets.canonical_order(cams)
    features, labels, cams = features[order], labels[order], cams[order]
    draws = [datasets.gallery_draw(labels, seed) for seed in range(trials)]
    return [ReIDResult(features[~g], labels[~g], cams[~g], features[g], labels[g], cams[g]) for g in draws]


TRIAL_KEYS = ('rank1', 'rank5', 'rank10', 'mAP', 'mAP_standard', 'mINP', 'n_valid', 'n_skipped')


def trial_summary(reports):
    """Return {key: per-trial values (numpy)} of metrics dicts, then their means and standard deviations."""
    values = {key: np.array([metrics.rank_at(r, int(key[4:])) if key.startswith('rank') else r[key]
                             for r in reports], dtype=np.float64) for key in TRIAL_KEYS}
    return values, {k: float(v.mean()) for k, v in values.items()}, {k: float(v.std()) for k, v in values.items()}


def format_trials(mean, std, n):
    """The original's first line (of the means), then the standard deviations, then the other metrics."""
    line = 'Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f'
    return '\n'.join([line % tuple(mean[k] for k in TRIAL_KEYS[:4]),
                      ('std ' + line + ' (over %d trials)') % (tuple(std[k] for k in TRIAL_KEYS[:4]) + (n,)),
                      'mAP(standard):%f+-%f mINP:%f+-%f (queries per trial: %.1f evaluated, %.1f skipped)' % (
                          mean['mAP_standard'], std['mAP_standard'], mean['mINP'], std['mINP'],
                          mean['n_valid'], mean['n_skipped'])])


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
