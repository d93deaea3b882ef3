"""Average query expansion (alpha-QE, as fast-reid's AQE) and database-side augmentation (DBA): features replaced
by the score-weighted mean of their top-K neighbours, computed one block of rows at a time.
"""
import torch

from reid.evaluation import blocks
from reid.evaluation.metrics import feature_pair, stable_smallest_k

# Scores of (rows x gallery) held at once: 2**24 floats = 64 MB.


def _expanded(rows, gallery, k, alpha, include_self):
    """Rows replaced by normalise(sum_j max(s_j, 0)^alpha x_j) over their K neighbours, themselves first.

    With include_self the rows are not in `gallery`: each row is its own first neighbour (weight 1) and the
    other K - 1 are its best gallery matches; otherwise (DBA) the rows are gallery images and their K best
    gallery matches include themselves. Equal scores: lower gallery index first.
    """
    taken = k - 1 if include_self else k
    out = torch.empty_like(rows)
    step = blocks.rows_per_block(blocks.DENSE, len(gallery))
    for start in range(0, len(rows), step):
        block = rows[start:start + step]
        keys = torch.mm(block, gallery.T).neg_().add_(0.0)
        summed = block.clone() if include_self else torch.zeros_like(block)
        if taken > 0:
            negated, index = stable_smallest_k(keys, taken)
            # fast-reid raises the score to alpha; a negative score (a poor neighbour) gets weight 0, never NaN
            weight = (-negated).clamp_(min=0) ** alpha
            summed += torch.einsum('bk,bkd->bd', weight, gallery[index])
        out[start:start + step] = summed / summed.norm(dim=1, keepdim=True).clamp_(min=1e-12)
    return out


def average_query_expansion(qf, gf, k=5, alpha=3.0, dba=False, device=None):
    """Return (query features, gallery features) after alpha-QE (and DBA when `dba`), float32 torch on `device`.

    qf (Q, D), gf (G, D): L2-normalised features. With `dba` each gallery image is first replaced by the
    weighted mean of its top-k gallery neighbours (itself included); then each query by the weighted mean of
    itself and its top k-1 gallery neighbours (of the augmented gallery). Weights: score ** alpha (scores
    below 0 count 0); results L2-normalised. k = 1 leaves the features unchanged.
    """
    qf, gf, device = feature_pair(qf, gf, device)
    if k < 1 or alpha < 0:
        raise ValueError(f'query expansion k={k}, alpha={alpha}: need k >= 1 and alpha >= 0')
    k = min(k, len(gf) + 1)
    if dba:
        gf = _expanded(gf, gf, min(k, len(gf)), alpha, include_self=False)
    return _expanded(qf, gf, k, alpha, include_self=True), gf
