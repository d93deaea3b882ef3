"""Re-ID retrieval metrics: CMC, mAP (Market-1501 trapezoid and standard), mINP, and multi-query pooling.

Pure tensor functions shared by evaluate_gpu.py, test.py and train.py; they run on CUDA when present, else the CPU.

Ranking rule used everywhere: gallery items are ordered by descending score (ascending distance); equal scores keep
gallery order (a stable sort), so results never depend on the device or on a sort's internal order.
Per query, gallery items with the query's id AND camera, and all items with id -1, are junk (removed from the
ranking); the other items with the query's id are the matches; everything else, distractors (id 0) included,
is a wrong match. A query without any match is skipped and counted in 'n_skipped'.
"""
from collections import namedtuple

import numpy as np
import torch

from reid.evaluation import blocks
from reid.runtime import pick_device

JUNK_ID = -1


def feature_pair(qf, gf, device=None):
    """Return (qf, gf, device): query (Q, D) and gallery (G, D) features (torch or numpy) as float32 torch on
    `device` (default: pick_device); ValueError when they are not two matrices of one width. The first step of
    every re-ranker and of query expansion."""
    device = pick_device(device)
    qf = torch.as_tensor(qf).to(device=device, dtype=torch.float32)
    gf = torch.as_tensor(gf).to(device=device, dtype=torch.float32)
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f'features: expected (Q, D) and (G, D), got {tuple(qf.shape)} and {tuple(gf.shape)}')
    return qf, gf, device


def _as_tensor(x, device, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _as_ids(x, device, what):
    ids = _as_tensor(x, device, torch.int64)
    if ids.dim() > 1 and max(ids.shape) != ids.numel():
        raise ValueError(f'{what}: expected a 1-D array of ints, got shape {tuple(ids.shape)}')
    return ids.reshape(-1)


def _check_lengths(n, labels, cams, what):
    if len(labels) != n or len(cams) != n:
        raise ValueError(f'{what}: {n} rows but {len(labels)} labels and {len(cams)} cameras')


def _all_finite(x):
    # one pass: NaN and inf survive a float64 sum, which float32 values cannot overflow
    return bool(torch.isfinite(x.sum(dtype=torch.float64)))


def _rows_per_block(block, n_columns):
    return int(block) if block else blocks.rows_per_block(blocks.SCORES, n_columns)


def stable_smallest_k(keys, k):
    """Return (values, indices) of the k smallest entries of each row of `keys`, ordered by (value, column).

    The order is exactly that of a stable ascending sort truncated to k: equal values keep column order.
    torch.topk picks arbitrarily among entries equal to the k-th value, so rows with such a tie fall back to a
    full stable sort (rare with real features). `keys` must be finite; normalise -0.0 to 0.0 beforehand (a
    radix sort on CUDA would order them apart).
    """
    k = min(int(k), keys.shape[1])
    if k == keys.shape[1]:
        return torch.sort(keys, dim=1, stable=True)
    # one more than needed: the set of the k smallest is ambiguous only if the (k+1)-th equals the k-th
    values, indices = torch.topk(keys, k + 1, dim=1, largest=False, sorted=True)
    tied = values[:, k] == values[:, k - 1]
    values, indices = values[:, :k], indices[:, :k]
    # re-order the chosen k by (value, column): sort by column, then stable sort by value
    indices, by_column = indices.sort(dim=1)
    values = values.gather(1, by_column)
    values, by_value = values.sort(dim=1, stable=True)
    indices = indices.gather(1, by_value)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        full_values, full_indices = torch.sort(keys[rows], dim=1, stable=True)
        values[rows] = full_values[:, :k]
        indices[rows] = full_indices[:, :k]
    return values, indices


def expand_segments(starts, lengths):
    """Return (owner, position): segment s gives lengths[s] entries, owner s, positions starts[s], starts[s]+1...

    A vectorised concatenation of aranges (1-D int64 tensors in, 1-D int64 tensors out).
    """
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    offset = torch.arange(len(owner), device=lengths.device) - (torch.cumsum(lengths, 0) - lengths)[owner]
    return owner, starts[owner] + offset


def _row_ordered_keys(rows, keys):
    """int64 keys that sort like (row, key): the row above 32 bits, the float32 key's order-preserving bits below.

    For a negative float the bits below the sign run backwards, so they are flipped. -0.0 must be normalised.
    """
    bits = keys.contiguous().view(torch.int32)
    monotone = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return rows * (1 << 32) + (monotone.long() + (1 << 31))


def _matches_before(match_keys, cols, item_keys, item_cols):
    """For each valid item (its (row, key) and gallery index), the number of matches ranked before it: those with
    a smaller (row, key), and among equal keys those with a smaller gallery index (equal matches are kept in
    gallery order)."""
    before = torch.searchsorted(match_keys, item_keys)
    last = len(match_keys) - 1
    tied = (match_keys[before.clamp(max=last)] == item_keys).nonzero().squeeze(1)
    while len(tied):
        j = before[tied].clamp(max=last)
        ahead = (before[tied] <= last) & (match_keys[j] == item_keys[tied]) & (cols[j] < item_cols[tied])
        before[tied] += ahead
        tied = tied[ahead]
    return before


# The gallery as every block's statistics read it: ids and cameras, the column order that sorts it by id (a stable
# sort: gallery order within an id) with the sorted ids, and the columns of junk images (id JUNK_ID).
_Gallery = namedtuple('_Gallery', 'labels cams label_order sorted_labels junk_columns')


def _gallery_index(gl, gc):
    """Return the _Gallery of ids `gl` and cameras `gc` (torch, on the evaluation device)."""
    label_order = torch.sort(gl, stable=True).indices
    return _Gallery(gl, gc, label_order, gl[label_order], (gl == JUNK_ID).nonzero().squeeze(1))


def _block_query_stats(keys, ql, qc, gallery):
    """Per-query (n_good, first_rank, market_ap, standard_ap, inp) for one block of keys (smaller = better).

    No row is sorted. The matches of each query (few) come from the gallery sorted by label; junk gets key
    +inf (changes `keys` in place); only the items up to a query's hardest match (one comparison over the
    block) affect its metrics, and for each of them a binary search among the sorted matches says how many
    matches it precedes; a cumulative count of those gives every match's rank.
    Queries without a match get n_good 0 and zeros elsewhere.
    """
    n_rows, n_gallery = keys.shape
    device = keys.device
    zeros = torch.zeros(n_rows, dtype=torch.float64, device=device)
    lo = torch.searchsorted(gallery.sorted_labels, ql)
    hi = torch.searchsorted(gallery.sorted_labels, ql, right=True)
    rows, position = expand_segments(lo, hi - lo)
    cols = gallery.label_order[position]
    same_cam = gallery.cams[cols] == qc[rows]
    keys.index_fill_(1, gallery.junk_columns, float('inf'))
    keys[rows[same_cam], cols[same_cam]] = float('inf')
    is_good = ~same_cam & (gallery.labels[cols] != JUNK_ID)
    rows, cols = rows[is_good], cols[is_good]  # row-major, gallery order within a row
    n_good = torch.bincount(rows, minlength=n_rows)
    if len(rows) == 0:
        return n_good, n_good.clone(), zeros, zeros.clone(), zeros.clone()
    good_keys = keys[rows, cols]
    hardest = torch.full((n_rows,), -float('inf'), device=device).scatter_reduce_(0, rows, good_keys, 'amax')
    item_rows, item_cols = (keys <= hardest[:, None]).nonzero(as_tuple=True)  # valid items only (junk is inf)

    # matches in ranked order, (row, key, gallery index): a stable sort keeps the gallery order of equal keys
    match_keys = _row_ordered_keys(rows, good_keys)
    match_keys, by_rank = torch.sort(match_keys, stable=True)
    rows, cols = rows[by_rank], cols[by_rank]
    item_keys = _row_ordered_keys(item_rows, keys[item_rows, item_cols])
    before = _matches_before(match_keys, cols, item_keys, item_cols)

    row_start = torch.cumsum(n_good, 0) - n_good
    preceded = before - row_start[item_rows]                  # matches of the row ranked before the item
    counts = torch.bincount(before[preceded < n_good[item_rows]], minlength=len(rows))
    # rank of a row's j-th match = valid items preceded by at most j matches (the match itself included)
    cumulative = torch.cumsum(counts, 0)
    ranks = (cumulative - (cumulative - counts)[row_start[rows]]).double()
    hits = (torch.arange(len(rows), device=device) - row_start[rows] + 1).double()
    precision = hits / ranks
    # precision at the previous rank; 1.0 at the first rank (Market-1501's compute_mAP)
    previous = torch.where(ranks > 1, (hits - 1) / (ranks - 1).clamp(min=1), torch.ones_like(ranks))
    n = n_good.double().clamp(min=1)
    market_ap = zeros.clone().index_add_(0, rows, (precision + previous) / 2) / n
    standard_ap = zeros.clone().index_add_(0, rows, precision) / n
    has = (n_good > 0).nonzero().squeeze(1)
    first = torch.zeros(n_rows, dtype=torch.int64, device=device)
    first[has] = ranks[row_start[has]].long()
    inp = zeros.clone()
    inp[has] = n_good[has].double() / ranks[row_start[has] + n_good[has] - 1]
    return n_good, first, market_ap, standard_ap, inp


def _evaluate_blocks(key_blocks, n_query, ql, qc, gl, gc):
    """Aggregate per-query statistics over (start, stop, keys) blocks of query rows into the metrics dict.

    The blocks must cover the query rows in order; each `keys` is changed in place.
    """
    n_gallery = len(gl)
    gallery = _gallery_index(gl, gc)
    parts, covered = [], 0
    for start, stop, keys in key_blocks:
        if start != covered or stop > n_query or tuple(keys.shape) != (stop - start, n_gallery):
            raise ValueError(f'distance blocks: rows {start}:{stop} of shape {tuple(keys.shape)} do not continue '
                             f'rows 0:{covered} of a ({n_query}, {n_gallery}) matrix')
        parts.append(_block_query_stats(keys, ql[start:stop], qc[start:stop], gallery))
        covered = stop
    if covered != n_query:
        raise ValueError(f'distance blocks: cover {covered} of {n_query} query rows')
    if parts:
        n_good, first, market_ap, standard_ap, inp = (torch.cat(p).cpu() for p in zip(*parts))
    else:
        n_good = first = torch.zeros(0, dtype=torch.int64)
        market_ap = standard_ap = inp = torch.zeros(0, dtype=torch.float64)
    valid = n_good > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        nan = float('nan')
        return {'cmc': np.full(n_gallery, nan), 'mAP': nan, 'mAP_standard': nan, 'mINP': nan,
                'n_valid': 0, 'n_skipped': n_query}
    hits_at = np.bincount(first[valid].numpy() - 1, minlength=n_gallery)
    return {'cmc': np.cumsum(hits_at) / n_valid,
            'mAP': float(market_ap[valid].mean()),
            'mAP_standard': float(standard_ap[valid].mean()),
            'mINP': float(inp[valid].mean()),
            'n_valid': n_valid,
            'n_skipped': n_query - n_valid}


def reranking_inputs(qf, gf, device=None):
    """Return (x, n_query, device): the query and gallery features (feature_pair's checks) stacked, the set a
    re-ranker ranks within; x is None when the query or the gallery is empty (there is nothing to re-rank)."""
    qf, gf, device = feature_pair(qf, gf, device)
    if len(qf) == 0 or len(gf) == 0:
        return None, len(qf), device
    return torch.cat([qf, gf]), len(qf), device


def labelled_features(qf, ql, qc, gf, gl, gc, device=None):
    """Return (qf, ql, qc, gf, gl, gc, device): the features as feature_pair gives them and the ids and cameras as
    int64 torch on the same device; ValueError when a set's labels or cameras do not count its rows."""
    qf, gf, device = feature_pair(qf, gf, device)
    ql, qc = _as_ids(ql, device, 'query labels'), _as_ids(qc, device, 'query cameras')
    gl, gc = _as_ids(gl, device, 'gallery labels'), _as_ids(gc, device, 'gallery cameras')
    _check_lengths(len(qf), ql, qc, 'query')
    _check_lengths(len(gf), gl, gc, 'gallery')
    return qf, ql, qc, gf, gl, gc, device


def compute_cmc_map(qf, ql, qc, gf, gl, gc, device=None):
    """Return the retrieval metrics of query features against gallery features, scored by dot product.

    qf (Q, D), gf (G, D): torch tensors or numpy arrays, assumed L2-normalised (score = cosine); ql, qc, gl, gc:
    1-D int labels and cameras. Works on `device` (default: CUDA when present, else CPU) over blocks of query rows
    (as many as keep a block of scores at blocks.SCORES values).
    Returns a dict: 'cmc' (numpy float array of length G, cmc[k-1] = Rank@k as a fraction of valid queries,
    non-decreasing), 'mAP' (Market-1501 trapezoid AP), 'mAP_standard' (non-interpolated AP), 'mINP',
    'n_valid' and 'n_skipped' (queries without a match). With no valid query the metrics are NaN.
    Ties in score keep gallery order (see the module docstring for the junk and match rules).
    """
    qf, ql, qc, gf, gl, gc, device = labelled_features(qf, ql, qc, gf, gl, gc, device)
    if not (_all_finite(qf) and _all_finite(gf)):
        raise ValueError('features: NaN or infinite values')
    negated = -qf

    rows = _rows_per_block(None, len(gf))
    # -score, with -0.0 turned into 0.0 so that equal scores get equal keys
    key_blocks = ((start, min(start + rows, len(qf)), torch.mm(negated[start:start + rows], gf.T).add_(0.0))
                  for start in range(0, len(qf), rows))
    return _evaluate_blocks(key_blocks, len(qf), ql, qc, gl, gc)


def compute_cmc_map_from_dist(dist, ql, qc, gl, gc, device=None, block=None):
    """Return the metrics of compute_cmc_map from a (Q, G) distance matrix (smaller = better), e.g. re-ranked.

    `dist` is a torch tensor or numpy array; it is moved to `device` one block of rows at a time.
    Equal distances keep gallery order.
    """
    device = pick_device(device)
    if not isinstance(dist, torch.Tensor):
        dist = torch.as_tensor(np.asarray(dist))
    if dist.dim() != 2:
        raise ValueError(f'dist: expected a (Q, G) matrix, got shape {tuple(dist.shape)}')
    ql, qc = _as_ids(ql, device, 'query labels'), _as_ids(qc, device, 'query cameras')
    gl, gc = _as_ids(gl, device, 'gallery labels'), _as_ids(gc, device, 'gallery cameras')
    _check_lengths(dist.shape[0], ql, qc, 'query')
    _check_lengths(dist.shape[1], gl, gc, 'gallery')

    return _evaluate_blocks(_checked_keys([(0, dist.shape[0], dist)], device, block, dist.shape[1]),
                            dist.shape[0], ql, qc, gl, gc)


def compute_cmc_map_from_blocks(blocks, ql, qc, gl, gc, device=None, block=None):
    """Return the metrics of compute_cmc_map from distance blocks, never holding the (Q, G) matrix.

    `blocks`: an iterable of (start, stop, dist) with dist the (stop - start, G) distances of query rows
    start..stop (smaller = better), in order and covering every query, e.g. rerank.k_reciprocal_rerank_blocks.
    Each block is evaluated in pieces of `block` rows (default: 2**22 values), so its size bounds nothing here.
    The result equals compute_cmc_map_from_dist on the stacked blocks.
    """
    device = pick_device(device)
    ql, qc = _as_ids(ql, device, 'query labels'), _as_ids(qc, device, 'query cameras')
    gl, gc = _as_ids(gl, device, 'gallery labels'), _as_ids(gc, device, 'gallery cameras')
    _check_lengths(len(ql), ql, qc, 'query')
    return _evaluate_blocks(_checked_keys(blocks, device, block, len(gl)), len(ql), ql, qc, gl, gc)


def _checked_keys(blocks, device, block, n_gallery):
    """Yield (start, stop, keys): each block split into metric-sized pieces, as float32 copies on `device`."""
    rows = _rows_per_block(block, n_gallery)
    for start, stop, dist in blocks:
        if not isinstance(dist, torch.Tensor):
            dist = torch.as_tensor(np.asarray(dist))
        if dist.dim() != 2:
            raise ValueError(f'dist: expected a (Q, G) matrix, got shape {tuple(dist.shape)}')
        for piece in range(0, stop - start, rows):
            keys = dist[piece:piece + rows].to(device=device, dtype=torch.float32)
            if not _all_finite(keys):
                raise ValueError('dist: NaN or infinite values')
            # a copy (the block is changed in place), with -0.0 turned into 0.0
            yield start + piece, min(start + piece + rows, stop), keys + 0.0


def junk_pairs(ql, qc, gl, gc):
    """Return the [Q, G] boolean mask of junk query-gallery pairs (numpy or torch, as given): the query's id seen by
    the query's camera, and every gallery item with id -1 (the rule of the module docstring); the one place the
    rule is written for whole pairs."""
    return (gl[None, :] == JUNK_ID) | ((gl[None, :] == ql[:, None]) & (gc[None, :] == qc[:, None]))


def junk_mask(ql, qc, gl, gc):
    """Return the boolean mask of gallery items that are junk for one query (numpy in, numpy out)."""
    return junk_pairs(np.asarray([ql]), np.asarray([qc]), np.asarray(gl), np.asarray(gc))[0]


def rank_at(res, k):
    """Return Rank@k of a metrics dict; for k beyond the gallery size the CMC has saturated at Rank@G."""
    cmc = res['cmc']
    return float(cmc[min(k, len(cmc)) - 1]) if len(cmc) else float('nan')


def format_result(res):
    """Return the two lines evaluate_gpu.py prints: the original's format, then standard mAP, mINP and counts."""
    first = 'Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f' % (rank_at(res, 1), rank_at(res, 5), rank_at(res, 10),
                                                      res['mAP'])
    second = 'mAP(standard):%f mINP:%f (queries: %d evaluated, %d skipped without a match)' % (
        res['mAP_standard'], res['mINP'], res['n_valid'], res['n_skipped'])
    return first + '\n' + second


def pool_multi_query(qf, ql, qc, mf, ml, mc):
    """Return (features, n_fallback): per query, the mean of the multi-query features with its id AND camera.

    The mean is L2-normalised afterwards: ranking by dot product is unchanged (one positive factor per query)
    and re-ranking gets unit vectors. A query with no multi-query image of its id and camera keeps its own
    feature; n_fallback counts those. Inputs as compute_cmc_map; returns a float32 tensor on qf's device
    (CPU for numpy input).
    """
    device = qf.device if isinstance(qf, torch.Tensor) else torch.device('cpu')
    qf, mf = _as_tensor(qf, device, torch.float32), _as_tensor(mf, device, torch.float32)
    ql, qc = _as_ids(ql, device, 'query labels'), _as_ids(qc, device, 'query cameras')
    ml, mc = _as_ids(ml, device, 'multi-query labels'), _as_ids(mc, device, 'multi-query cameras')
    _check_lengths(len(qf), ql, qc, 'query')
    _check_lengths(len(mf), ml, mc, 'multi-query')
    if mf.dim() != 2 or mf.shape[1] != qf.shape[1]:
        raise ValueError(f'multi-query features: expected (M, {qf.shape[1]}), got {tuple(mf.shape)}')
    pairs = torch.stack([torch.cat([ql, ml]), torch.cat([qc, mc])], 1)
    _, group = torch.unique(pairs, dim=0, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    sums = torch.zeros(n_groups, qf.shape[1], dtype=torch.float64, device=device)
    sums.index_add_(0, group[len(qf):], mf.double())
    counts = torch.bincount(group[len(qf):], minlength=n_groups)
    query_group = group[:len(qf)]
    has_multi = counts[query_group] > 0
    pooled = sums[query_group] / counts[query_group].clamp(min=1)[:, None]
    pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)
    features = torch.where(has_multi[:, None], pooled.float(), qf)
    return features, int((~has_multi).sum())
