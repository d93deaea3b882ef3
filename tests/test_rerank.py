"""Tests of rerank.k_reciprocal_rerank against a dense, loop-by-loop reference written from Zhong et al. 2017.

The reference builds every (N+M)^2 matrix in float64 and follows the paper step by step; it is only fit for
small inputs, which is all the tests need.
"""
import numpy as np
import pytest

from reid.evaluation import blocks, metrics
from reid.evaluation import rerank


def k_reciprocal_set(rank, i, k):
    """R(i, k): the j among the k+1 nearest of i that also have i among their own k+1 nearest."""
    return [j for j in rank[i, :k + 1] if i in rank[j, :k + 1]]


def dense_rerank_reference(qf, gf, k1, k2, lambda_value):
    """Zhong et al. 2017 with dense matrices: returns the (Q, G) final distance (float64)."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    n, n_query = len(x), len(qf)
    squared = np.maximum(2 - 2 * x @ x.T, 0)           # unit vectors: 2 - 2cos is the squared distance
    squared = (squared + squared.T) / 2                 # exactly symmetric, so column max = row max
    original = (squared / squared.max(axis=0, keepdims=True)).T
    rank = np.argsort(original, axis=1, kind='stable')

    v = np.zeros((n, n))
    for i in range(n):
        own = k_reciprocal_set(rank, i, k1)
        expanded = set(own)
        for c in own:
            half = k_reciprocal_set(rank, c, int(np.around(k1 / 2)))
            if len(set(half) & set(own)) > 2 / 3 * len(half):
                expanded |= set(half)
        members = sorted(expanded)
        weight = np.exp(-original[i, members])
        v[i, members] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])

    final = np.zeros((n_query, n - n_query))
    for q in range(n_query):
        for g in range(n - n_query):
            a, b = v[q], v[n_query + g]
            jaccard = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            final[q, g] = (1 - lambda_value) * jaccard + lambda_value * original[q, n_query + g]
    return final


def brute_force_rank1_and_map(dist, ql, qc, gl, gc, tie=0.0):
    """((lowest, highest) Rank@1, (lowest, highest) Market-1501 mAP) of a (Q, G) distance (smaller = better),
    counted query by query: junk (id -1, same id and camera) removed, a plain sort, AP by the benchmark's
    trapezoid rule written out; queries without a valid match left out. Distances within `tie` of their
    neighbour in the sorted list form one group whose order float rounding may decide: the lowest figures put
    the group's matches last, the highest first (tie=0: one exact order, equal distances by gallery index)."""
    bounds = []
    for i in range(len(ql)):
        keep = sorted((float(dist[i][j]), j) for j in range(len(gl))
                      if not (gl[j] == -1 or (gl[j] == ql[i] and gc[j] == qc[i])))
        if not any(gl[j] == ql[i] for _, j in keep):
            continue
        group, groups = 0, []
        for n, (d, _) in enumerate(keep):
            group += n > 0 and d - keep[n - 1][0] > tie
            groups.append(group)
        figures = []
        for matches_first in (False, True):
            order = sorted(range(len(keep)), key=lambda n: (groups[n], (gl[keep[n][1]] == ql[i]) != matches_first, n))
            good = [k for k, n in enumerate(order) if gl[keep[n][1]] == ql[i]]
            ap = sum(((1.0 if k == 0 else m / k) + (m + 1) / (k + 1)) / 2 / len(good) for m, k in enumerate(good))
            figures.append((float(good[0] == 0), ap))
        bounds.append(figures)
    low, high = np.mean([b[0] for b in bounds], axis=0), np.mean([b[1] for b in bounds], axis=0)
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def test_brute_force_figures_count_ties_both_ways():
    # one query of id 1 (camera 1); gallery: a match at 0.2, a non-match at 0.2 + 1e-9, a match at 0.5
    dist = [[0.2 + 1e-9, 0.2, 0.5]]
    ql, qc, gl, gc = [1], [1], [2, 1, 1], [2, 2, 2]
    exact = ((1 + 1) / 2 + (1 / 2 + 2 / 3) / 2) / 2   # matches at places 1 and 3
    assert brute_force_rank1_and_map(dist, ql, qc, gl, gc) == ((1.0, 1.0), (pytest.approx(exact),) * 2)
    (r_low, r_high), (ap_low, ap_high) = brute_force_rank1_and_map(dist, ql, qc, gl, gc, tie=1e-6)
    assert (r_low, r_high) == (0.0, 1.0)
    assert ap_low == pytest.approx(((0 + 1 / 2) / 2 + (1 / 2 + 2 / 3) / 2) / 2) and ap_high == pytest.approx(
        (1 + (0.5 + 2 / 3) / 2) / 2)


def clustered_features(rng, n_query, n_gallery, n_ids, dim, noise):
    """Unit features around a few identity centres, so neighbour sets and expansions are non-trivial."""
    centres = rng.standard_normal((n_ids, dim))
    ids = rng.integers(0, n_ids, n_query + n_gallery)
    f = centres[ids] + noise * rng.standard_normal((len(ids), dim))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f[:n_query].astype(np.float32), f[n_query:].astype(np.float32)


@pytest.mark.parametrize('seed, n_query, n_gallery, k1, k2, lam', [
    (0, 20, 120, 20, 6, 0.3),
    (1, 15, 90, 7, 3, 0.5),
    (2, 10, 60, 4, 1, 0.0),
    (3, 12, 40, 20, 6, 1.0),
    (4, 5, 12, 20, 6, 0.3),        # fewer images than k1 + 1: every set is the whole set
])
def test_rerank_matches_dense_reference(seed, n_query, n_gallery, k1, k2, lam):
    rng = np.random.default_rng(seed)
    qf, gf = clustered_features(rng, n_query, n_gallery, n_ids=8, dim=16, noise=0.6)
    got = rerank.k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, lambda_value=lam, device='cpu')
    want = dense_rerank_reference(qf, gf, k1, k2, lam)
    assert got.dtype == np.float32 and got.shape == (n_query, n_gallery)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize('block_elements', [None, 350])
def test_rerank_ties_follow_stable_order(block_elements, monkeypatch):
    """Quantised features: dot products are exact and many distances tie, so only a stable order agrees.

    With small blocks the neighbour lists are merged across many blocks and transposed parts.
    """
    if block_elements:
        monkeypatch.setattr(blocks, 'DENSE', block_elements)
    rng = np.random.default_rng(5)
    n, dim = 70, 8
    f = np.zeros((n, dim), np.float32)
    for row in f:  # four entries of +-1/2: unit norm, dot products are multiples of 1/4, exact in float32
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    f[10] = f[3]  # exact duplicates on top of the ties
    f[40] = f[3]
    qf, gf = f[:15], f[15:]
    got = rerank.k_reciprocal_rerank(qf, gf, k1=6, k2=3, lambda_value=0.3, device='cpu')
    np.testing.assert_allclose(got, dense_rerank_reference(qf, gf, 6, 3, 0.3), atol=1e-5, rtol=0)


def test_rerank_tiny_chunks_give_same_result(monkeypatch):
    """The blocked and chunked paths must not change the result when blocks hold a few rows or pairs."""
    rng = np.random.default_rng(6)
    qf, gf = clustered_features(rng, 25, 100, n_ids=6, dim=12, noise=0.5)
    whole = rerank.k_reciprocal_rerank(qf, gf, device='cpu')
    monkeypatch.setattr(blocks, 'DENSE', 300)
    monkeypatch.setattr(blocks, 'SPARSE', 50)
    chunked = rerank.k_reciprocal_rerank(qf, gf, device='cpu')
    np.testing.assert_allclose(chunked, whole, atol=1e-6, rtol=0)
    np.testing.assert_allclose(chunked, dense_rerank_reference(qf, gf, 20, 6, 0.3), atol=1e-5, rtol=0)


def test_lambda_one_keeps_the_original_ranking():
    """lambda = 1 leaves only the original distance over a per-query constant: same metrics as cosine."""
    rng = np.random.default_rng(7)
    qf, gf = clustered_features(rng, 30, 150, n_ids=10, dim=16, noise=0.8)
    ql, gl = rng.integers(1, 10, 30), rng.integers(1, 10, 150)
    qc, gc = rng.integers(1, 4, 30), rng.integers(1, 4, 150)
    dist = rerank.k_reciprocal_rerank(qf, gf, lambda_value=1.0, device='cpu')
    by_dist = metrics.compute_cmc_map_from_dist(dist, ql, qc, gl, gc, device='cpu')
    by_score = metrics.compute_cmc_map(qf, ql, qc, gf, gl, gc, device='cpu')
    np.testing.assert_allclose(by_dist['cmc'], by_score['cmc'])
    assert by_dist['mAP'] == pytest.approx(by_score['mAP'])


def test_rerank_rejects_bad_input():
    f = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match='features'):
        rerank.k_reciprocal_rerank(f, np.eye(3, dtype=np.float32), device='cpu')
    with pytest.raises(ValueError, match='k1'):
        rerank.k_reciprocal_rerank(f, f, k1=0, device='cpu')


def test_streamed_blocks_give_the_matrix_and_its_metrics(monkeypatch):
    """The blocks stack to the dense reference, and metrics from the blocks equal those from the stacked matrix."""
    rng = np.random.default_rng(8)
    qf, gf = clustered_features(rng, 23, 90, n_ids=6, dim=12, noise=0.5)
    ql, gl = rng.integers(1, 6, 23), rng.integers(-1, 6, 90)
    qc, gc = rng.integers(1, 4, 23), rng.integers(1, 4, 90)
    monkeypatch.setattr(blocks, 'DENSE', 500)  # blocks of 5 query rows
    parts = list(rerank.k_reciprocal_rerank_blocks(qf, gf, device='cpu'))
    assert len(parts) > 3 and max(stop - start for start, stop, _ in parts) <= 5
    assert [b[0] for b in parts[1:]] == [b[1] for b in parts[:-1]] and parts[-1][1] == 23
    stacked = np.concatenate([block.numpy() for _, _, block in parts])
    np.testing.assert_allclose(stacked, dense_rerank_reference(qf, gf, 20, 6, 0.3), atol=1e-5, rtol=0)
    streamed = metrics.compute_cmc_map_from_blocks(iter(parts), ql, qc, gl, gc, device='cpu', block=2)
    dense = metrics.compute_cmc_map_from_dist(stacked, ql, qc, gl, gc, device='cpu')
    np.testing.assert_array_equal(streamed['cmc'], dense['cmc'])
    assert [streamed[k] for k in ('mAP', 'mAP_standard', 'mINP', 'n_valid')] == \
        [dense[k] for k in ('mAP', 'mAP_standard', 'mINP', 'n_valid')]


def test_rerank_blocks_check_input_at_once():
    f = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match='k1'):
        rerank.k_reciprocal_rerank_blocks(f, f, k1=0, device='cpu')
