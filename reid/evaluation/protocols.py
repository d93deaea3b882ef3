"""Evaluation protocols over result files: single query, multi-query and re-ranked in one report; several trials
(VehicleID's re-drawn galleries, VIPeR's splits) averaged, with their standard deviations.
"""
import numpy as np

from reid.data.layouts.common import canonical_order, gallery_draw
from reid.evaluation import metrics
from reid.evaluation.rerankers import DEFAULT_RERANKER, rerank_blocks, rerank_title
from reid.evaluation.results import ReIDResult


def evaluate_all(result, multi=None, rerank_params=None, method=DEFAULT_RERANKER, expansion=None):
    """Return [(title or None, metrics dict, note or None)] for single-query, multi-query and re-ranked runs.

    `multi`: a MultiQuery or None; `rerank_params`: dict(k1=, k2=, lambda_value=) or None; `method`: which
    re-ranking (a name of reid.evaluation.rerankers.RERANKERS); `expansion`: dict(k=, alpha=, dba=) of average
    query expansion or None. Per query set: the plain result, then the expanded one, then the re-ranking (of the
    expanded features when expanding) last.
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
        gallery_features, name = gf, (title or 'single query:').rstrip(':')
        if expansion is not None:
            from reid.evaluation.query_expansion import average_query_expansion

            query_features, gallery_features = average_query_expansion(query_features, gf, **expansion)
            name += (f", query expansion (K={expansion['k']} alpha={expansion['alpha']:g}"
                     f"{' + DBA' if expansion['dba'] else ''})")
            reports.append((name + ':', metrics.compute_cmc_map(query_features, ql, qc, gallery_features, gl, gc),
                            None))
        if rerank_params is not None:
            # streamed per block of queries: the (Q, G) re-ranked matrix never exists
            blocks = rerank_blocks(method, query_features, gallery_features, rerank_params)
            reports.append((name + f', {rerank_title(method, rerank_params)}:',
                            metrics.compute_cmc_map_from_blocks(blocks, ql, qc, gl, gc), None))
    return reports


def redrawn_galleries(result, trials):
    """Return [ReIDResult] of `trials` gallery draws (seeds 0, 1, ...) over all the images of `result`.

    Query and gallery are pooled, put in prepare.py's order, and per id one random image goes to the gallery
    (gallery_draw; seed 0 gives the split prepare.py wrote). Needs one camera value per image, as
    prepare.py gives a layout without cameras (VehicleID): ValueError otherwise.
    """
    features, labels, cams = (np.concatenate(pair) for pair in zip(result[:3], result[3:]))
    if len(np.unique(cams)) != len(cams):
        raise ValueError('--trials re-draws the gallery of a layout without cameras (VehicleID), where each image '
                         'has its own camera value; these cameras repeat')
    order = canonical_order(cams)
    features, labels, cams = features[order], labels[order], cams[order]
    draws = [gallery_draw(labels, seed) for seed in range(trials)]
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
