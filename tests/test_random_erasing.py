"""Tests of random erasing (reid/data/transforms.py): one rectangle of the paper's size range is filled,
probability is honoured."""
import pytest
import torch

from reid.data.transforms import random_erasing


def test_erasing_fills_one_rectangle_within_the_area_range():
    torch.manual_seed(0)
    erase = random_erasing(probability=1.0, fill=(0.0, 0.0, 0.0))
    for _ in range(20):
        img = torch.rand(3, 64, 32) + 1.0  # never 0, so erased pixels are exactly the zeros
        zeros = (erase(img) == 0).all(dim=0)
        rows, cols = zeros.any(dim=1).nonzero(), zeros.any(dim=0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(zeros.sum()) == h * w  # a filled rectangle
        assert 0.02 * 64 * 32 * 0.5 <= h * w <= 0.4 * 64 * 32 * 1.1  # rounding of the sides aside


def test_probability_zero_leaves_the_image_and_bad_values_are_refused():
    img = torch.rand(3, 16, 8)
    assert torch.equal(random_erasing(probability=0.0)(img), img)
    with pytest.raises(ValueError, match='--erasing_p'):
        random_erasing(probability=1.5)
