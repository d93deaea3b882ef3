"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse neighbour sets and blocked matrix products.

Never builds an (N+M)^2 matrix nor the (queries x gallery) one: it keeps N x k neighbour lists and the sparse
k-reciprocal feature vectors and yields the final distance per block of queries (k_reciprocal_rerank_blocks).
"""
import warnings

import torch

from reid.evaluation import blocks
from reid.evaluation.metrics import expand_segments, reranking_inputs
from reid.evaluation.neighbours import nearest

def _distance_of_score(score):
    """2 - 2s, the squared Euclidean distance of unit vectors with dot product s, clamped at 0 (-0.0 made 0.0)."""
    return score.mul(-2).add_(2).clamp_(min=0).add_(0.0)


def _squared_distance(a, b):
    """The (len(a), len(b)) squared distances of unit rows."""
    return _distance_of_score(torch.mm(a, b.T))


def _is_member(keys, members):
    """Bool tensor shaped like `keys`: which keys occur in the 1-D tensor `members` (sorted here)."""
    members = members.sort().values
    if len(members) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    position = torch.searchsorted(members, keys).clamp_(max=len(members) - 1)
    return members[position] == keys


def _reciprocal_mask(forward):
    """(N, k) bool: forward[i, j] is a k-reciprocal neighbour of i, i.e. i is also in forward[forward[i, j]]."""
    n = len(forward)
    rows = torch.arange(n, device=forward.device)[:, None]
    # the pair (i, j) is written as the key i * n + j
    return _is_member(forward * n + rows, (rows * n + forward).flatten())


def _expanded_sets(forward, forward_mask, half, half_mask, rows_per_block):
    """Return (rows, cols) of the expanded k-reciprocal sets R*(i), sorted by row then column, no duplicates.

    R*(i) = R(i, k1) united with R(c, k1/2) of every c in R(i, k1) whose half set has more than 2/3 of its
    members in R(i, k1) (the authors' code uses '>' where the paper writes '>='; the published numbers use '>').
    """
    n = len(forward)
    all_keys = []
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        row = torch.arange(start, stop, device=forward.device)
        own, own_mask = forward[start:stop], forward_mask[start:stop]
        own_keys = (row[:, None] * n + own)[own_mask]
        cand, cand_mask = half[own], half_mask[own]                      # (b, k1+1, k1/2+1)
        cand_keys = row[:, None, None] * n + cand
        overlap = (_is_member(cand_keys, own_keys) & cand_mask).sum(-1)
        take = own_mask & (3 * overlap > 2 * cand_mask.sum(-1))
        all_keys.append(torch.unique(torch.cat([own_keys, cand_keys[cand_mask & take[..., None]]])))
    keys = torch.cat(all_keys)  # unique sorts: by row, then column
    return keys // n, keys % n


def _pair_distances(x, rows, cols, row_max):
    """Normalised original distance d(rows[p], cols[p]) / row_max[rows[p]] of the pairs of a row-sorted list.

    Computed as a sampled matrix product (only the listed entries of x x^T), which avoids gathering two feature
    rows per pair.
    """
    n = len(x)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(_row_pointers(rows, n), cols, torch.zeros(len(cols), device=x.device),
                                          size=(n, n), check_invariants=False)
        dot = torch.sparse.sampled_addmm(pattern, x, x.T.contiguous(), beta=0.0).values()
    return (2 - 2 * dot).clamp_(min=0) / row_max[rows]


def _row_pointers(rows, n):
    pointers = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    pointers[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return pointers


def _query_expansion(rows, cols, vals, neighbours, k2, rows_per_block):
    """Sparse V_qe[i] = mean of V[j] over the first k2 neighbours j of i; returns (rows, cols, vals) by row."""
    n = len(neighbours)
    pointers = _row_pointers(rows, n)
    lengths = pointers[1:] - pointers[:-1]
    out_rows, out_cols, out_vals = [], [], []
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        sources = neighbours[start:stop, :k2].reshape(-1)
        owner, position = expand_segments(pointers[sources], lengths[sources])
        key = (owner // k2) * n + cols[position]
        unique, inverse = torch.unique(key, sorted=True, return_inverse=True)
        summed = torch.zeros(len(unique), dtype=vals.dtype, device=vals.device).index_add_(0, inverse,
                                                                                          vals[position])
        out_rows.append(unique // n + start)
        out_cols.append(unique % n)
        out_vals.append(summed / k2)
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)


def _final_blocks(x, n_query, rows, cols, vals, lambda_value, row_max_query):
    """Yield (start, stop, block): (1-lambda)*Jaccard + lambda*(distance/row max) for query rows start..stop.

    (rows, cols, vals): the sparse V over all images, sorted by row. Jaccard(q, g) = 1 - sum_k min(V[q,k],
    V[g,k]) / sum_k max(V[q,k], V[g,k]); only columns where both rows are non-zero add to the min (the
    original's inverted index), and sum max = sum V[q] + sum V[g] - sum min. The original distances of a block
    are recomputed from the features, so no (queries x gallery) matrix exists at any time.
    """
    n = len(x)
    n_gallery = n - n_query
    row_sum = torch.zeros(n, dtype=torch.float32, device=vals.device).index_add_(0, rows, vals)
    is_query = rows < n_query
    q_rows, q_cols, q_vals = rows[is_query], cols[is_query], vals[is_query]
    by_col = torch.sort(cols[~is_query], stable=True).indices
    g_rows = rows[~is_query][by_col] - n_query
    g_cols, g_vals = cols[~is_query][by_col], vals[~is_query][by_col]
    del by_col
    col_count = torch.bincount(g_cols, minlength=n)
    del g_cols
    col_start = torch.cumsum(col_count, 0) - col_count
    pairs_per_entry = col_count[q_cols]
    pairs_before_entry = torch.zeros(len(q_cols) + 1, dtype=torch.int64, device=vals.device)
    pairs_before_entry[1:] = torch.cumsum(pairs_per_entry, 0)
    entry_pointers = _row_pointers(q_rows, n_query)
    pairs_before_row = pairs_before_entry[entry_pointers]
    start = 0
    while start < n_query:
        # as many query rows as keep this step's pairs under blocks.SPARSE and its rows under blocks.DENSE
        stop = int(torch.searchsorted(pairs_before_row, pairs_before_row[start] + blocks.SPARSE, right=True)) - 1
        stop = min(max(stop, start + 1), start + blocks.rows_per_block(blocks.DENSE, n_gallery), n_query)
        lo, hi = int(entry_pointers[start]), int(entry_pointers[stop])
        owner, position = expand_segments(col_start[q_cols[lo:hi]], pairs_per_entry[lo:hi])
        mins = torch.minimum(q_vals[lo:hi][owner], g_vals[position])
        flat = (q_rows[lo:hi][owner] - start) * n_gallery + g_rows[position]
        sum_min = torch.zeros((stop - start) * n_gallery, dtype=torch.float32, device=vals.device)
        sum_min = sum_min.index_add_(0, flat, mins).view(stop - start, n_gallery)
        del owner, position, mins, flat
        sum_max = torch.add(row_sum[start:stop, None], row_sum[None, n_query:]).sub_(sum_min).clamp_(min=1e-12)
        jaccard = sum_min.div_(sum_max).neg_().add_(1)
        del sum_max
        block = _squared_distance(x[start:stop], x[n_query:])
        block.div_(row_max_query[start:stop, None]).mul_(lambda_value).add_(jaccard.mul_(1 - lambda_value))
        del jaccard
        yield start, stop, block
        start = stop


K1, K2, LAMBDA = 20, 6, 0.3   # the original's (and Zhong et al.'s) defaults


def check_params(k1, k2, lambda_value):
    """ValueError naming the flags when k1, k2 and lambda do not fit k-reciprocal re-ranking."""
    if k1 < 1 or k2 < 1 or not 0 <= lambda_value <= 1:
        raise ValueError(f'--k1 {k1} --k2 {k2} --lambda {lambda_value:g}: k-reciprocal re-ranking needs k1 >= 1, '
                         'k2 >= 1 and 0 <= lambda <= 1')


def k_reciprocal_rerank(qf, gf, k1=K1, k2=K2, lambda_value=LAMBDA, device=None):
    """Return the (Q, G) re-ranked distance (float32 numpy array, smaller = more similar).

    The stacked blocks of k_reciprocal_rerank_blocks (same arguments); it holds the whole (Q, G) matrix, so for
    evaluation prefer the blocks with metrics.compute_cmc_map_from_blocks.
    """
    return blocks.stacked(k_reciprocal_rerank_blocks(qf, gf, k1, k2, lambda_value, device), len(qf), len(gf))


def k_reciprocal_rerank_blocks(qf, gf, k1=K1, k2=K2, lambda_value=LAMBDA, device=None):
    """Return an iterator of (start, stop, block): the re-ranked distance of query rows start..stop (float32 torch).

    qf (Q, D) and gf (G, D): L2-normalised features (torch or numpy). Follows Zhong et al. 2017 and the authors'
    code on the concatenated query+gallery set, with two fixes: the original distance is 2 - 2cos (already the
    squared Euclidean distance, not squared again), and every ranking is a stable ascending sort (equal distances
    keep image order: queries, then gallery). Steps: original distance divided by its row maximum; k-reciprocal
    sets R(i, k1) expanded by the 2/3 rule with R(c, round(k1/2)); weights exp(-d) normalised per row; local
    query expansion over the first k2 neighbours (skipped for k2 = 1, as the authors do); Jaccard distance
    1 - sum(min)/sum(max); final = (1 - lambda) * Jaccard + lambda * original, restricted to query x gallery.
    The neighbour lists and sparse vectors are built here (input errors raise ValueError at once); the blocks,
    on `device` (default CUDA when present, else CPU), are computed as the iterator is consumed, each at most
    2**24 values. Results on CPU are deterministic.
    """
    x, n_query, device = reranking_inputs(qf, gf, device)
    check_params(k1, k2, lambda_value)
    if x is None:
        return iter([(0, n_query, torch.zeros(n_query, len(gf), device=device))])
    n = len(x)
    k_forward, k_half, k2 = min(k1 + 1, n), min(round(k1 / 2) + 1, n), min(k2, n)
    neighbours, _, lowest = nearest(x, max(k_forward, k2), _distance_of_score, with_lowest=True)
    row_max = _distance_of_score(lowest)  # the largest distance of each row
    row_max.clamp_(min=1e-12)  # all images identical: avoid 0/0

    small_rows = blocks.rows_per_block(blocks.SPARSE, k_forward * k_half)
    forward, half = neighbours[:, :k_forward], neighbours[:, :k_half]
    rows, cols = _expanded_sets(forward, _reciprocal_mask(forward), half, _reciprocal_mask(half), small_rows)
    weights = torch.exp(-_pair_distances(x, rows, cols, row_max))
    row_sum = torch.zeros(n, dtype=torch.float32, device=device).index_add_(0, rows, weights)
    vals = weights / row_sum[rows]
    del weights
    if k2 > 1:
        entries_per_row = k2 * max(1, len(rows) // n)
        rows, cols, vals = _query_expansion(rows, cols, vals, neighbours, k2,
                                             blocks.rows_per_block(blocks.SPARSE, entries_per_row))
    del neighbours, forward, half
    return _final_blocks(x, n_query, rows, cols, vals, lambda_value, row_max[:n_query])
