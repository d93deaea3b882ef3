"""How much of a (query x gallery) matrix evaluation holds at once: the block budgets the streamed metrics, the
re-rankers and query expansion share, and the rows of a given width that fit in one.
"""
import numpy as np
import torch

# float32 scores per block when ranking is streamed (metrics, verification): 16 MiB, small next to the features
SCORES = 1 << 22
# elements per block of the re-rankers' and query expansion's dense rows: 64 MiB, where their products run
# at full speed on a CPU and a GPU alike
DENSE = 1 << 24
# index pairs per step of k-reciprocal's sparse stages (expanded sets, expansion, final rows): a few arrays of
# this many int64/float32 entries each, 16-32 MiB
SPARSE = 1 << 21


def rows_per_block(budget, width):
    """Return how many rows of `width` elements fit in `budget` elements (at least one)."""
    return max(1, budget // max(1, width))


def stacked(parts, n_query, n_gallery, sign=1):
    """Return the whole (Q, G) float32 numpy matrix of streamed (start, stop, block) parts, times `sign`: for
    pictures, pages and the functions that return one matrix (evaluation keeps the parts streamed)."""
    out = torch.zeros(n_query, n_gallery)
    for start, stop, block in parts:
        out[start:stop] = block.cpu() * sign
    return np.asarray(out.numpy())
