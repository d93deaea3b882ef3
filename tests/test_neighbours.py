"""Tests of the exact neighbour search the re-rankers share, against a brute-force stable sort of every row's keys
(float64), with blocks and screening segments small enough that every merge path runs.
"""
import numpy as np
import pytest
import torch

from reid.evaluation import neighbours


def distance_key(score):
    return (2 - 2 * score).clamp(min=0) + 0.0


def negated_key(score):
    return -score + 0.0


def quantised_features(seed, n, dim=8):
    """Four entries of +-1/2: unit norm, every dot product a multiple of 1/4 and exact, so keys tie a lot."""
    rng = np.random.default_rng(seed)
    f = np.zeros((n, dim), np.float32)
    for row in f:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    f[10] = f[3]   # exact duplicates on top of the ties
    f[41] = f[3]
    return f


def brute_force(f, k, key):
    """Each row's k columns of smallest key, equal keys by column, and its smallest score, in float64."""
    score = f.astype(np.float64) @ f.T.astype(np.float64)
    keys = key(torch.from_numpy(score)).numpy()
    order = np.argsort(keys, axis=1, kind='stable')[:, :k]
    return order, np.take_along_axis(keys, order, 1), score.min(1)


@pytest.mark.parametrize('rows_per_block, segment', [(None, 32), (7, 4), (5, 3), (1, 2), (32, 8), (36, 8)])
@pytest.mark.parametrize('key', [distance_key, negated_key])
def test_ties_come_in_column_order_for_any_block_and_segment(rows_per_block, segment, key, monkeypatch):
    monkeypatch.setattr(neighbours, 'SEGMENT', segment)
    f = quantised_features(0, 75)
    for k in (1, 4, 9, 75):
        columns, keys, lowest = neighbours.nearest(torch.from_numpy(f), k, key, with_lowest=True,
                                                   rows_per_block=rows_per_block)
        want_columns, want_keys, want_lowest = brute_force(f, k, key)
        np.testing.assert_array_equal(columns.numpy(), want_columns)
        np.testing.assert_array_equal(keys.numpy(), want_keys)
        np.testing.assert_array_equal(lowest.numpy(), want_lowest)


@pytest.mark.parametrize('rows_per_block, segment', [(None, 32), (9, 4), (16, 16)])
def test_continuous_features_give_the_brute_force_neighbours(rows_per_block, segment, monkeypatch):
    monkeypatch.setattr(neighbours, 'SEGMENT', segment)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 15, 300)
    f = rng.standard_normal((15, 24))[ids] * 1.5 + rng.standard_normal((300, 24))
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    columns, keys, lowest = neighbours.nearest(torch.from_numpy(f), 12, distance_key, with_lowest=True,
                                               rows_per_block=rows_per_block)
    want_columns, want_keys, want_lowest = brute_force(f, 12, distance_key)
    np.testing.assert_allclose(keys.numpy(), want_keys, atol=1e-5)
    np.testing.assert_allclose(lowest.numpy(), want_lowest, atol=1e-6)
    # the same columns wherever no two keys of the row are within float32 rounding of each other
    every = np.sort(distance_key(torch.from_numpy(f.astype(np.float64) @ f.T.astype(np.float64))).numpy(), 1)[:, :13]
    clear = (np.diff(every, axis=1) > 1e-5).all(1)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(columns.numpy()[clear], want_columns[clear])


def test_a_tie_across_the_cut_is_recomputed(monkeypatch):
    """Rows whose k-th key equals the last candidate's: keep only the k asked for, and the ties still resolve."""
    monkeypatch.setattr(neighbours, 'EXTRA', 0)
    f = quantised_features(2, 60)
    columns, keys = neighbours.nearest(torch.from_numpy(f), 5, negated_key, rows_per_block=4)
    want_columns, want_keys, _ = brute_force(f, 5, negated_key)
    np.testing.assert_array_equal(columns.numpy(), want_columns)
