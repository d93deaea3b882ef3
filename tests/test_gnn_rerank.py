"""Tests of gnn_rerank against a dense reference of the original's gnn_reranking steps (every N x N matrix, float64,
loops where the original has CUDA kernels); only fit for small sets, which is all the tests need.
"""
import numpy as np
import pytest

from reid.evaluation import blocks, gnn_rerank, metrics


def dense_gnn_reference(qf, gf, k1, k2, lambda_value):
    """The original's gnn_reranking with dense matrices: returns the (Q, G) score (float64, larger = better)."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    n, n_query = len(x), len(qf)
    score = x @ x.T
    rank = np.argsort(-score, axis=1, kind='stable')[:, :k1]
    s = np.take_along_axis(score, rank, 1) ** 2
    a = np.zeros((n, n))
    for i in range(n):                     # build_adjacency_matrix
        a[i, rank[i]] = 1.0
    if k2 != 1:
        for _ in range(2):
            a = a + a.T
            propagated = np.zeros((n, n))
            for i in range(n):             # gnn_propagate
                for j in range(k2):
                    propagated[i] += s[i, j] * a[rank[i, j]]
            a = propagated / np.linalg.norm(propagated, axis=1, keepdims=True)
    return (1 - lambda_value) * a[:n_query] @ a[n_query:].T + lambda_value * score[:n_query, n_query:]


def unit_features(rng, n, d=16, ids=None):
    f = rng.standard_normal((n, d))
    if ids is not None:  # clusters, so that neighbourhoods overlap as in real data
        f = rng.standard_normal((ids.max() + 1, d))[ids] * 2 + f
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize('k1, k2, lam', [(26, 7, 0.3), (5, 3, 0.0), (4, 1, 0.5), (6, 6, 1.0)])
def test_gnn_matches_the_dense_reference(k1, k2, lam):
    rng = np.random.default_rng(k1 + k2)
    ids = rng.integers(0, 12, 110)
    x = unit_features(rng, 110, ids=ids)
    qf, gf = x[:30], x[30:]
    got = gnn_rerank.gnn_rerank(qf, gf, k1, k2, lam, device='cpu')
    want = dense_gnn_reference(qf, gf, k1, k2, lam)
    assert np.abs(got - want).max() < 1e-5
    # the ranking by our scores is the reference's ranking (exactly equal where no two scores are within 1e-6)
    ours = np.argsort(-got, 1, kind='stable')
    assert (np.diff(np.take_along_axis(want, ours, 1), axis=1) <= 1e-6).all()
    if lam > 0:
        assert (ours == np.argsort(-want, 1, kind='stable')).all()


def test_gnn_blocks_are_streamed_and_equal_the_whole(monkeypatch):
    rng = np.random.default_rng(1)
    x = unit_features(rng, 90, ids=rng.integers(0, 9, 90))
    whole = gnn_rerank.gnn_rerank(x[:40], x[40:], 8, 3, device='cpu')
    monkeypatch.setattr(blocks, 'DENSE', 90 * 7)   # 7 rows per block everywhere
    parts = list(gnn_rerank.gnn_rerank_blocks(x[:40], x[40:], 8, 3, device='cpu'))
    assert len(parts) == 6 and all(b.shape[0] <= 7 for _, _, b in parts)
    assert np.abs(np.concatenate([-b.numpy() for _, _, b in parts]) - whole).max() < 1e-6


def test_gnn_ties_keep_image_order():
    # four entries of +-0.5: unit vectors whose scores (multiples of 0.25) are exact in float32, so many are
    # equal and the top-k1 sets depend on the tie rule (lower index first)
    rng = np.random.default_rng(2)
    x = np.zeros((50, 16), dtype=np.float32)
    for row in x:
        row[rng.choice(16, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    got = gnn_rerank.gnn_rerank(x[:15], x[15:], 4, 2, device='cpu')
    assert np.abs(got - dense_gnn_reference(x[:15], x[15:], 4, 2, 0.3)).max() < 1e-5


def test_gnn_improves_a_clustered_retrieval():
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 30, 400)
    cams = rng.integers(1, 4, 400)
    x = unit_features(rng, 400, d=32, ids=ids)
    ql, qc, gl, gc = ids[:80], cams[:80], ids[80:], cams[80:]
    plain = metrics.compute_cmc_map(x[:80], ql, qc, x[80:], gl, gc, device='cpu')
    blocks = gnn_rerank.gnn_rerank_blocks(x[:80], x[80:], device='cpu')
    reranked = metrics.compute_cmc_map_from_blocks(blocks, ql, qc, gl, gc, device='cpu')
    assert reranked['mAP'] > plain['mAP']


def test_gnn_rejects_bad_parameters():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match='k2'):
        gnn_rerank.gnn_rerank_blocks(x, x, 3, 5)
    with pytest.raises(ValueError, match='features'):
        gnn_rerank.gnn_rerank_blocks(x, x[:, :3])
