"""The re-ranking methods as one table: what --rerank offers in evaluate_gpu.py and demo.py, each method's
defaults (the original's), how reports name it and which parameters it accepts. Adding one is an entry here.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from reid.evaluation.gnn_rerank import gnn_rerank_blocks
from reid.evaluation.rerank import k_reciprocal_rerank_blocks


def _k2_within_k1(k1, k2):
    if k2 > k1:
        return f'--k1 {k1} --k2 {k2}: GNN re-ranking propagates over the first k2 of the k1 neighbours, so k2 <= k1'
    return None


@dataclass(frozen=True)
class Reranker:
    """blocks(qf, gf, k1, k2, lambda_value) -> iterator of (start, stop, distance block, smaller = better);
    k1, k2, lambda_value: the defaults, and what k1 and k2 mean for the method; `how`: the words of the report's
    title; `check(k1, k2)`: what is wrong with them for this method, or None."""
    blocks: Callable
    k1: int
    k1_is: str
    k2: int
    k2_is: str
    lambda_value: float
    how: str
    summary: str
    check: Optional[Callable] = None


RERANKERS = {
    'k_reciprocal': Reranker(k_reciprocal_rerank_blocks, 20, 'the k-reciprocal sets', 6,
                             'the local query expansion', 0.3, 're-ranked',
                             'k-reciprocal encoding (Zhong et al., CVPR 2017)'),
    'gnn': Reranker(gnn_rerank_blocks, 26, 'the graph', 7, 'each propagation round', 0.3, 're-ranked by GNN',
                    "GNN re-ranking (Zhang et al., the original's GPU-Re-Ranking)", _k2_within_k1),
}
DEFAULT_RERANKER = 'k_reciprocal'   # what a bare --rerank means, as in the original


def _defaults(key, meaning=None):
    return '; '.join(f'{name}: {getattr(entry, key):g}' + (f', {getattr(entry, meaning)}' if meaning else '')
                     for name, entry in RERANKERS.items())


def add_rerank_flags(parser):
    """Add --rerank [METHOD], --k1, --k2 and --lambda to a command's parser; their help comes from the table."""
    parser.add_argument('--rerank', nargs='?', const=DEFAULT_RERANKER, default=None, choices=list(RERANKERS),
                        help='re-rank: ' + '; '.join(f'{name}: {entry.summary}' for name, entry in RERANKERS.items())
                             + f' (a bare --rerank: {DEFAULT_RERANKER})')
    parser.add_argument('--k1', default=None, type=int,
                        help=f're-ranking: neighbours per image ({_defaults("k1", "k1_is")})')
    parser.add_argument('--k2', default=None, type=int,
                        help=f're-ranking: the first neighbours of the k1 ({_defaults("k2", "k2_is")})')
    parser.add_argument('--lambda', dest='lambda_value', default=None, type=float,
                        help='re-ranking: weight of the original distance (score) in the final one '
                             f'({_defaults("lambda_value")})')


def rerank_params(method, k1=None, k2=None, lambda_value=None):
    """Return dict(k1=, k2=, lambda_value=) of `method` with its defaults where a value is None; ValueError
    naming the flags when they do not fit the method."""
    entry = RERANKERS[method]
    params = dict(k1=entry.k1 if k1 is None else k1, k2=entry.k2 if k2 is None else k2,
                  lambda_value=entry.lambda_value if lambda_value is None else lambda_value)
    if params['k1'] < 1 or params['k2'] < 1:
        raise ValueError(f'--k1 {params["k1"]} --k2 {params["k2"]}: both must be at least 1')
    if not 0 <= params['lambda_value'] <= 1:
        raise ValueError(f'--lambda {params["lambda_value"]}: must lie in [0, 1]')
    complaint = entry.check(params['k1'], params['k2']) if entry.check else None
    if complaint:
        raise ValueError(complaint)
    return params


def rerank_blocks(method, qf, gf, params):
    """The re-ranked distance blocks (start, stop, block; smaller = better) of `method`, streamed."""
    return RERANKERS[method].blocks(qf, gf, **params)


def rerank_title(method, params):
    """How a report names a re-ranked result: 're-ranked (k1=20 k2=6 lambda=0.3)'."""
    return f'{RERANKERS[method].how} (k1={params["k1"]} k2={params["k2"]} lambda={params["lambda_value"]:g})'


def reranked_distances(method, qf, gf, params):
    """Return the whole (Q, G) re-ranked distance (float32 numpy, smaller = better) for pictures and pages."""
    out = torch.zeros(len(qf), len(gf))
    for start, stop, block in rerank_blocks(method, qf, gf, params):
        out[start:stop] = block.cpu()
    return np.asarray(out.numpy())
