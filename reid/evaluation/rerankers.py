"""The re-ranking methods as one table: what --rerank offers in evaluate_gpu.py and demo.py, each method's
defaults (the original's), how reports name it and which parameters it accepts. Adding one is an entry here.
"""
from dataclasses import dataclass
from typing import Callable

from reid.evaluation import blocks, gnn_rerank, rerank


@dataclass(frozen=True)
class Reranker:
    """blocks(qf, gf, k1, k2, lambda_value) -> iterator of (start, stop, distance block, smaller = better);
    k1, k2, lambda_value: the defaults, and what k1 and k2 mean for the method; `how`: the words of the report's
    title; `check(k1, k2, lambda_value)`: ValueError naming the flags when they do not fit the method;
    `negated_score`: its blocks hold minus a similarity score (pictures print the score) rather than a distance."""
    blocks: Callable
    k1: int
    k1_is: str
    k2: int
    k2_is: str
    lambda_value: float
    how: str
    summary: str
    check: Callable
    negated_score: bool = False


RERANKERS = {
    'k_reciprocal': Reranker(rerank.k_reciprocal_rerank_blocks, rerank.K1, 'the k-reciprocal sets', rerank.K2,
                             'the local query expansion', rerank.LAMBDA, 're-ranked',
                             'k-reciprocal encoding (Zhong et al., CVPR 2017)', rerank.check_params),
    'gnn': Reranker(gnn_rerank.gnn_rerank_blocks, gnn_rerank.K1, 'the graph', gnn_rerank.K2, 'each propagation round',
                    gnn_rerank.LAMBDA, 're-ranked by GNN',
                    "GNN re-ranking (Zhang et al., the original's GPU-Re-Ranking)", gnn_rerank.check_params,
                    negated_score=True),
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
    entry.check(**params)
    return params


def chosen_rerank(args):
    """Return dict(k1=, k2=, lambda_value=) of a command's parsed --rerank METHOD, its defaults filled in, or None
    without --rerank; ValueError naming the flags when they do not fit the method or come without --rerank."""
    given = [flag for flag, value in (('--k1', args.k1), ('--k2', args.k2), ('--lambda', args.lambda_value))
             if value is not None]
    if args.rerank is None:
        if given:
            raise ValueError(f'{" ".join(given)}: re-ranking parameters, they go with --rerank')
        return None
    return rerank_params(args.rerank, args.k1, args.k2, args.lambda_value)


def rerank_blocks(method, qf, gf, params):
    """The re-ranked distance blocks (start, stop, block; smaller = better) of `method`, streamed."""
    return RERANKERS[method].blocks(qf, gf, **params)


def rerank_title(method, params):
    """How a report names a re-ranked result: 're-ranked (k1=20 k2=6 lambda=0.3)'."""
    return f'{RERANKERS[method].how} (k1={params["k1"]} k2={params["k2"]} lambda={params["lambda_value"]:g})'


def reranked_distances(method, qf, gf, params):
    """Return the whole (Q, G) re-ranked distance (float32 numpy, smaller = better) for pictures and pages."""
    return blocks.stacked(rerank_blocks(method, qf, gf, params), len(qf), len(gf))
