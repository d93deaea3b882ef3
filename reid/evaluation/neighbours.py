"""Exact nearest neighbours of a feature set within itself (cosine) for the re-rankers: each image's best
neighbours in a stable order and its least similar score, without ever holding the (N x N) matrix.

The products are most of the cost (MSMT17: 93,820 images, 2.3e12 multiply-adds for half the matrix, 22 of the
29 s on 2 cores); finding the few entries that enter a row's list cost more than the products until each block
was screened by the maxima of its segments.
"""
import torch

# (rows x all images) products computed at once: about 2**26 values (256 MB) per block; larger blocks multiply
# ~10% faster than 2**24 (measured at MSMT17 size), more does not help.
BLOCK_ELEMENTS = 1 << 26
# Entries screened together by their best: a reduction over rows costs ~1/10 of a comparison and a nonzero.
SEGMENT = 32
# Candidates kept per row beyond the k asked for: a row is recomputed whole only when the k-th key ties the last
# candidate's, so a few spare candidates make that rare.
EXTRA = 4
_NO_INDEX = torch.iinfo(torch.int64).max


class _Best:
    """The m largest values seen so far in each row, in descending order, with their columns."""

    def __init__(self, n, m, device):
        self.m = m
        self.values = torch.full((n, m), float('-inf'), device=device)
        self.indices = torch.full((n, m), _NO_INDEX, dtype=torch.int64, device=device)

    def full(self, start, stop):
        return not bool(torch.isinf(self.values[start:stop, -1]).any())

    def bound(self, start, stop):
        """The m-th best value of rows start..stop: anything not better never enters."""
        return self.values[start:stop, -1]

    def merge(self, rows, new_values, new_indices):
        """Merge (len(rows), w) candidates into the given rows."""
        values = torch.cat([self.values[rows], new_values], 1)
        values, position = torch.topk(values, self.m, dim=1, sorted=True)
        self.values[rows] = values
        self.indices[rows] = torch.cat([self.indices[rows], new_indices], 1).gather(1, position)

    def offer_rows(self, start, block, first_column):
        """Offer every entry of block (rows start.., columns first_column..) to its row."""
        stop = start + len(block)
        if not self.full(start, stop):
            values, columns = torch.topk(block, min(self.m, block.shape[1]), dim=1)
            self.merge(slice(start, stop), values, columns + first_column)
            return
        bound = self.bound(start, stop)
        # screen segments of SEGMENT columns by their best entry first (one reduction); look into the few that
        # can enter. Columns past the last whole segment are looked at directly.
        whole = block.shape[1] // SEGMENT * SEGMENT
        segments = block[:, :whole].view(len(block), -1, SEGMENT)
        row, segment = (segments.amax(2) > bound[:, None]).nonzero(as_tuple=True)
        values = segments[row, segment]                                    # (hits, SEGMENT)
        hit, offset = (values > bound[row, None]).nonzero(as_tuple=True)
        rows, columns, values = [row[hit]], [segment[hit] * SEGMENT + offset], [values[hit, offset]]
        if whole < block.shape[1]:
            tail_row, tail_col = (block[:, whole:] > bound[:, None]).nonzero(as_tuple=True)
            rows.append(tail_row), columns.append(tail_col + whole), values.append(block[tail_row, whole + tail_col])
        self._merge_pairs(torch.cat(rows), torch.cat(columns), torch.cat(values), start, first_column, len(block))

    def offer_columns(self, start, block, first_row):
        """Offer every entry of block (rows first_row.., columns = rows start.. of these lists) to its column's row."""
        stop = start + block.shape[1]
        if not self.full(start, stop):  # a top-k down the columns: transposing the block costs more
            values, rows = torch.topk(block, min(self.m, len(block)), dim=0)
            self.merge(slice(start, stop), values.T, rows.T + first_row)
            return
        bound = self.bound(start, stop)
        # the same screen by segments of SEGMENT rows (a reduction over rows: cheap on a row-major block)
        whole = len(block) // SEGMENT * SEGMENT
        segments = block[:whole].view(-1, SEGMENT, block.shape[1])
        segment, col = (segments.amax(1) > bound[None, :]).nonzero(as_tuple=True)
        values = segments[segment, :, col]                                 # (hits, SEGMENT)
        hit, offset = (values > bound[col, None]).nonzero(as_tuple=True)
        rows, columns, values = [segment[hit] * SEGMENT + offset], [col[hit]], [values[hit, offset]]
        if whole < len(block):
            tail_row, tail_col = (block[whole:] > bound[None, :]).nonzero(as_tuple=True)
            rows.append(tail_row + whole), columns.append(tail_col), values.append(block[whole + tail_row, tail_col])
        self._merge_pairs(torch.cat(columns), torch.cat(rows), torch.cat(values), start, first_row, block.shape[1])

    def _merge_pairs(self, owner, other, values, start, first_other, n_owners):
        """Merge the entries values[p] (list row start + owner[p], column first_other + other[p]) into the lists."""
        if len(owner) == 0:
            return
        counts = torch.bincount(owner, minlength=n_owners)
        order = torch.argsort(owner, stable=True)
        owner, other, values = owner[order], other[order], values[order]
        owners = counts.nonzero().squeeze(1)
        slot = torch.zeros(n_owners, dtype=torch.int64, device=owner.device)
        slot[owners] = torch.arange(len(owners), device=owner.device)
        position = torch.arange(len(owner), device=owner.device) - (torch.cumsum(counts, 0) - counts)[owner]
        width = int(counts.max())
        new_values = torch.full((len(owners), width), float('-inf'), dtype=values.dtype, device=values.device)
        new_indices = torch.full((len(owners), width), _NO_INDEX, dtype=torch.int64, device=values.device)
        new_values[slot[owner], position] = values
        new_indices[slot[owner], position] = other + first_other
        self.merge(owners + start, new_values, new_indices)


def _candidates(x, m, rows_per_block, with_lowest):
    """Return (a _Best of each row's m largest scores x_i . x_j and their columns, each row's smallest score or None).

    The matrix is symmetric: each block computes the columns from its own first row on; its part past its own
    rows reaches the later rows as columns. The values are those of the blocks' fp32 products.
    """
    n = len(x)
    best = _Best(n, m, x.device)
    lowest = torch.full((n,), float('inf'), device=x.device) if with_lowest else None
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        block = torch.mm(x[start:stop], x[start:].T)
        best.offer_rows(start, block, start)
        if with_lowest:
            lowest[start:stop] = torch.minimum(lowest[start:stop], block.amin(1))
        if stop < n:
            later = block[:, stop - start:]
            best.offer_columns(stop, later, start)
            if with_lowest:
                lowest[stop:] = torch.minimum(lowest[stop:], later.amin(0))
    return best, lowest


def nearest(x, k, key, with_lowest=False, rows_per_block=None):
    """Return (columns (N, k), keys (N, k)) and, with `with_lowest`, each row's smallest score (N,).

    x: (N, D) float32 L2-normalised rows. `key(scores)`: elementwise and non-increasing in the score a.b (2 - 2s,
    -s); each row gets the k columns of smallest key, equal keys in column order (a stable sort of the row's
    keys truncated to k). Only k + EXTRA candidates are kept per row; a row whose k-th key equals the key of
    its last candidate (a tie across the cut) is recomputed whole.
    """
    n = len(x)
    k = min(k, n)
    m = min(k + EXTRA, n)
    rows_per_block = rows_per_block or max(SEGMENT, BLOCK_ELEMENTS // n // SEGMENT * SEGMENT)
    best, lowest = _candidates(x, m, rows_per_block, with_lowest)
    keys, columns = _stable_best(key(best.values), best.indices, k)
    if m < n:
        # a column outside the candidates scores at most the m-th candidate: its key is no smaller than that key
        tied = keys[:, -1] >= key(best.values.amin(1))
        for chunk in tied.nonzero().squeeze(1).split(max(1, BLOCK_ELEMENTS // n)):
            every_key, every_column = key(torch.mm(x[chunk], x.T)).sort(dim=1, stable=True)
            keys[chunk], columns[chunk] = every_key[:, :k], every_column[:, :k]
    return (columns, keys, lowest) if with_lowest else (columns, keys)


def _stable_best(keys, columns, k):
    """Order each row's (key, column) pairs by key ascending, then column, and keep k."""
    columns, by_column = columns.sort(dim=1)
    keys, by_key = keys.gather(1, by_column).sort(dim=1, stable=True)
    return keys[:, :k], columns.gather(1, by_key)[:, :k]
