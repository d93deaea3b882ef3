"""Verification ("are these two images the same person?"): TAR at fixed false-accept rates, their score thresholds
and the ROC AUC over every valid query-gallery pair, streamed per block of queries and exact at the thresholds.
"""
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import yaml

from reid.evaluation import blocks
from reid.evaluation.metrics import junk_pairs, labelled_features

FARS = (1e-1, 1e-2, 1e-3, 1e-4)
DEFAULT_FAR = 1e-3


def check_far(far):
    """ValueError naming --far when it is not one of the rates the reports give (FARS)."""
    if far not in FARS:
        raise ValueError(f'--far {far:g}: one of {", ".join(f"{rate:g}" for rate in FARS)}')


# Histogram bins over [-1, 1] of the first pass; the second keeps only the negatives in the bins holding a threshold.
_BINS = 1 << 16


def _pair_blocks(qf, ql, qc, gf, gl, gc):
    """Yield (scores, is_positive, is_negative) per block of queries: the valid pairs' flat scores.

    Junk as in the ranking (the query's id seen by its camera, and id -1) is neither; positives share the id;
    negatives (distractors included) do not.
    """
    step = blocks.rows_per_block(blocks.SCORES, len(gf))
    for start in range(0, len(qf), step):
        scores = torch.mm(qf[start:start + step], gf.T)
        same_id = ql[start:start + step, None] == gl[None]
        junk = junk_pairs(ql[start:start + step], qc[start:start + step], gl, gc)
        yield scores, same_id & ~junk, ~same_id & ~junk


def _bin_of(scores):
    return ((scores.clamp(-1, 1) + 1) * (_BINS / 2)).long().clamp_(max=_BINS - 1)


def verification_report(qf, ql, qc, gf, gl, gc, fars=FARS):
    """Return {'fars', 'tar', 'threshold', 'auc', 'n_positive', 'n_negative'} of the query-gallery pairs.

    Score = dot product (cosine of normalised features); a pair is accepted when its score is above the
    threshold. For a false-accept rate F the threshold is the (k+1)-th highest negative score, k = floor(F * #neg)
    (so at most k negatives are accepted); TAR = accepted positives / positives. AUC: Mann-Whitney, P(positive
    score > negative score), ties counted half. Two passes over the score blocks: a histogram of the negatives
    and the positives' scores, then the exact negatives in the bins of the thresholds and the AUC counts.
    ValueError when there are no positive or no negative pairs, or when ids, cameras and features do not count
    the same images. Runs where evaluation runs (reid.runtime.pick_device: CUDA when present, REID_DEVICE=cpu).
    """
    qf, ql, qc, gf, gl, gc, device = labelled_features(qf, ql, qc, gf, gl, gc)
    histogram = torch.zeros(_BINS, dtype=torch.int64, device=device)
    positives = []
    for scores, pos, neg in _pair_blocks(qf, ql, qc, gf, gl, gc):
        positives.append(scores[pos])
        histogram += torch.bincount(_bin_of(scores[neg]), minlength=_BINS)
    positives = torch.sort(torch.cat(positives)).values
    n_pos, n_neg = len(positives), int(histogram.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f'verification needs both kinds of pairs: {n_pos} same-id and {n_neg} different-id pairs')
    # rank r (0-based from the highest) of each threshold; the bin holding it, counted from the top
    ranks = [min(math.floor(Fraction(repr(far)) * n_neg), n_neg - 1) for far in fars]  # exact decimal F
    above = torch.cumsum(histogram.flip(0), 0).flip(0) - histogram   # negatives in higher bins
    bins = [int(((above <= r) & (above + histogram > r)).nonzero()[0]) for r in ranks]
    wanted = torch.zeros(_BINS, dtype=torch.bool, device=device)
    wanted[bins] = True
    kept, greater, ties = [], 0, 0
    for scores, pos, neg in _pair_blocks(qf, ql, qc, gf, gl, gc):
        negatives = scores[neg]
        kept.append(negatives[wanted[_bin_of(negatives)]])
        left = torch.searchsorted(positives, negatives, right=False)
        right = torch.searchsorted(positives, negatives, right=True)
        greater += int((n_pos - right).sum())
        ties += int((right - left).sum())
    kept = torch.sort(torch.cat(kept), descending=True).values
    thresholds = []
    for r, b in zip(ranks, bins):
        # kept holds, in descending order, the negatives of the wanted bins; bin b's start in it
        offset = int(sum(int(histogram[w]) for w in set(bins) if w > b))
        thresholds.append(float(kept[offset + r - int(above[b])]))
    tar = [(n_pos - int(torch.searchsorted(positives, torch.tensor(t, device=device), right=True))) / n_pos
           for t in thresholds]
    return {'fars': [float(f) for f in fars], 'tar': tar, 'threshold': thresholds,
            'auc': (greater + 0.5 * ties) / (n_pos * n_neg), 'n_positive': n_pos, 'n_negative': n_neg}


def format_verification(report):
    """The lines evaluate_gpu.py --verify prints: one `TAR@FAR=1e-02:0.812300 threshold:0.671200` per rate, AUC."""
    lines = ['TAR@FAR=%.0e:%f threshold:%f' % (far, tar, thr)
             for far, tar, thr in zip(report['fars'], report['tar'], report['threshold'])]
    lines.append('AUC:%f (pairs: %d same id, %d different id)' % (report['auc'], report['n_positive'],
                                                                  report['n_negative']))
    return '\n'.join(lines)


def figures_file(result_path):
    """Where evaluate_gpu.py --verify saves the figures of a result: pytorch_result.mat -> pytorch_result_verify.yaml."""
    result_path = Path(result_path)
    return result_path.with_name(result_path.stem + '_verify.yaml')


def save_figures(report, path, source):
    """Write a verification report (and where it came from) as YAML."""
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump({**report, 'source': str(source)}, f, sort_keys=False)


def threshold_entry(report, far, source):
    """The threshold.yaml content for false-accept rate `far` (one of the report's rates)."""
    if far not in report['fars']:
        raise ValueError(f'--far {far}: not among the computed rates {report["fars"]}')
    i = report['fars'].index(far)
    return {'far': far, 'threshold': report['threshold'][i], 'tar': report['tar'][i], 'auc': report['auc'],
            'calibrated_on': str(source), 'pairs': {'same_id': report['n_positive'],
                                                    'different_id': report['n_negative']},
            'accept': 'cosine score above the threshold'}


def threshold_of(run_dir=None, result_path=None, far=DEFAULT_FAR):
    """Return the same-identity threshold (a cosine score; accept when above) a run or a result has, or None.

    The run's calibrated threshold.yaml first; else the figures evaluate_gpu.py --verify saved beside the
    result, at `far`. ValueError naming the file when one is malformed.
    """
    from reid.runs import RunFolder

    if run_dir is not None and RunFolder(run_dir).threshold_file.is_file():
        return RunFolder(run_dir).read_threshold()['threshold']
    if result_path is not None and figures_file(result_path).is_file():
        path = figures_file(result_path)
        try:
            with open(path, encoding='utf-8') as f:
                figures = yaml.safe_load(f)
            return float(figures['threshold'][[float(x) for x in figures['fars']].index(far)])
        except (yaml.YAMLError, TypeError, KeyError, ValueError, IndexError) as err:
            raise ValueError(f'{path}: not a verification figures file ({type(err).__name__}: {err})') from None
    return None
