"""Tests of average query expansion and DBA against a loop over the rows written from fast-reid's description."""
import numpy as np
import pytest

from reid.evaluation import blocks, query_expansion


def loop_reference(qf, gf, k, alpha, dba):
    """Per row: neighbours by a stable sort of the scores, weights max(score, 0) ** alpha, normalised mean."""
    qf, gf = qf.astype(np.float64), gf.astype(np.float64)

    def expand(row, pool, taken, with_self):
        scores = pool @ row
        order = np.argsort(-scores.astype(np.float32), kind='stable')[:taken]
        total = row.copy() if with_self else np.zeros_like(row)
        for j in order:
            total += max(scores[j], 0) ** alpha * pool[j]
        return total / np.linalg.norm(total)

    if dba:
        gf = np.stack([expand(g, gf, k, False) for g in gf])
    return np.stack([expand(q, gf, k - 1, True) for q in qf]), gf


@pytest.mark.parametrize('k, alpha, dba', [(5, 3.0, False), (5, 3.0, True), (2, 0.0, True), (1, 3.0, False)])
def test_aqe_matches_the_loop(k, alpha, dba, monkeypatch):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((60, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    monkeypatch.setattr(blocks, 'DENSE', 45 * 4)   # 4 rows per block
    q, g = query_expansion.average_query_expansion(x[:15], x[15:], k, alpha, dba, device='cpu')
    want_q, want_g = loop_reference(x[:15], x[15:], k, alpha, dba)
    assert np.abs(q.numpy() - want_q).max() < 1e-5
    assert np.abs(g.numpy() - want_g).max() < 1e-5
    if k == 1:
        assert np.abs(q.numpy() - x[:15]).max() < 1e-6


def test_aqe_rejects_bad_parameters():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match='k=0'):
        query_expansion.average_query_expansion(x, x, 0)
