"""Tests of reid/data/samplers.py: P x K batches (ids and counts), reproducibility per generator seed, rank split."""
from collections import Counter

import pytest
import torch

from reid.data.samplers import PKSampler, pk_batches, pk_epoch_length

# 7 ids with 1..9 images each (id 3 has fewer images than K)
TARGETS = [pid for pid, n in enumerate([9, 5, 8, 2, 4, 6, 7]) for _ in range(n)]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_every_batch_has_p_ids_with_k_images_each():
    batches = pk_batches(TARGETS, 8, 4, gen(0))
    assert batches
    for batch in batches:
        counts = Counter(TARGETS[i] for i in batch)
        assert len(batch) == 8 and len(counts) == 2 and set(counts.values()) == {4}
    used = [i for b in batches for i in b]
    big = [i for i in used if TARGETS[i] != 3]
    assert len(big) == len(set(big))  # without replacement, except for the id with fewer than K images
    # all groups of K: floor(n / K) per id (at least 1) -> 2+1+2+1+1+1+1 = 9 groups; pairs of ids -> <= 4 batches
    assert len(batches) <= 4


def test_order_is_a_function_of_the_generator_seed_only():
    assert pk_batches(TARGETS, 8, 4, gen(5)) == pk_batches(TARGETS, 8, 4, gen(5))
    assert pk_batches(TARGETS, 8, 4, gen(5)) != pk_batches(TARGETS, 8, 4, gen(6))


def test_sampler_gives_a_fixed_length_and_splits_by_rank():
    length = pk_epoch_length(TARGETS, 8, 4)
    for seed in range(5):
        assert len(list(PKSampler(TARGETS, 8, 4, gen(seed), length))) == length
    whole = list(PKSampler(TARGETS, 4, 2, gen(1), 10))
    ranks = [list(PKSampler(TARGETS, 4, 2, gen(1), 10, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [3, 3, 3]
    assert [b for i in range(3) for b in (ranks[0][i], ranks[1][i], ranks[2][i])] == whole[:9]


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match='multiple of --num_instances'):
        pk_batches(TARGETS, 10, 4, gen(0))
    with pytest.raises(ValueError, match='identities per batch'):
        pk_batches(TARGETS, 32, 4, gen(0))
