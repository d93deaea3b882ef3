"""GNN re-ranking (Zhang et al., "Understanding Image Retrieval Re-Ranking: A Graph Neural Network Perspective"),
the original's GPU-Re-Ranking in plain torch, with sparse matrices and streamed per block of queries.

Never builds an (N+M)^2 matrix nor the (queries x gallery) one: the adjacency rows live as sparse CSR matrices
and the final score of a block of queries is a chain of sparse-times-dense products (gnn_rerank_blocks).
"""
import warnings

import torch

from reid.evaluation import blocks
from reid.evaluation.metrics import reranking_inputs
from reid.evaluation.neighbours import nearest

# Dense values held at once: a block of query rows x all images (and the products with it), 2**24 floats = 64 MB.


def _negated_score(score):
    """-s, the ranking key of cosine scores (smaller = more similar), with -0.0 made 0.0."""
    return score.neg().add_(0.0)


def _csr(rows, cols, vals, shape):
    """A CSR tensor from row-sorted (rows, cols, vals)."""
    pointers = torch.zeros(shape[0] + 1, dtype=torch.int64, device=vals.device)
    pointers[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    return _csr_from(pointers, cols, vals, shape)


def _csr_from(pointers, cols, vals, shape):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # "sparse CSR support is in beta", "checks disabled"
        return torch.sparse_csr_tensor(pointers, cols, vals, size=shape, check_invariants=False)


def _plus_transpose(matrix):
    """matrix + matrix^T as CSR (the A <- A + A^T of each round)."""
    return matrix + matrix.t().to_sparse_csr()


def _row_slice(matrix, start, stop):
    """Rows start..stop of a CSR tensor, as CSR."""
    pointers = matrix.crow_indices()
    lo, hi = int(pointers[start]), int(pointers[stop])
    return _csr_from(pointers[start:stop + 1] - lo, matrix.col_indices()[lo:hi], matrix.values()[lo:hi],
                     (stop - start, matrix.shape[1]))


def _row_norms(matrix):
    """L2 norm of every row of a CSR tensor."""
    pointers = matrix.crow_indices()
    rows = torch.repeat_interleave(torch.arange(matrix.shape[0], device=pointers.device), pointers.diff())
    return torch.zeros(matrix.shape[0], device=pointers.device).index_add_(0, rows, matrix.values() ** 2).sqrt_()


def _row_norms_of_product(left, right):
    """L2 norm of every row of left @ right (CSR tensors), a block of rows at a time (the product is dense-ish)."""
    # a row of the product is about an eighth full (measured on the demo and Market-sized graphs)
    step = blocks.rows_per_block(blocks.DENSE, right.shape[1] // 8)
    return torch.cat([_row_norms(torch.sparse.mm(_row_slice(left, start, min(start + step, left.shape[0])), right))
                      for start in range(0, left.shape[0], step)])


def _scaled_rows(matrix, scale):
    """diag(scale) @ matrix for a CSR tensor."""
    pointers = matrix.crow_indices()
    rows = torch.repeat_interleave(torch.arange(matrix.shape[0], device=pointers.device), pointers.diff())
    return _csr_from(pointers, matrix.col_indices(), matrix.values() * scale[rows], matrix.shape)


def _neighbours_and_scores(x, k):
    """Return (top-k neighbours (N, k) by descending cosine, equal scores by index; their scores (N, k))."""
    neighbours, negated = nearest(x, k, _negated_score)
    return neighbours, -negated


class _Graph:
    """The propagated adjacency A = diag(1 / norm) P W (W = the previous A + its transpose, P = the top-k2
    weights S^2), kept as sparse factors: the last round's A (~2,150 entries a row at Market size) is never built."""

    def __init__(self, x, k1, k2):
        n, device = len(x), x.device
        neighbours, scores = _neighbours_and_scores(x, k1)
        rows = torch.arange(n, device=device)
        self.adjacency = _csr(rows.repeat_interleave(k1), neighbours.reshape(-1), torch.ones(n * k1, device=device),
                              (n, n))
        self.rounds = []  # (W, 1 / row norms) per round: that round's A = diag(1 / norm) P W, W = A + A^T
        if k2 == 1:  # the original skips propagation: A stays the 0/1 top-k1 adjacency, rows not normalised
            return
        weight = (scores[:, :k2] ** 2).reshape(-1)
        self.p = _csr(rows.repeat_interleave(k2), neighbours[:, :k2].reshape(-1), weight, (n, n))
        self.p_t = self.p.t().to_sparse_csr()
        # round 1: W1 = A0 + A0^T, A1 = diag(1/n1) P W1 (built: a few hundred entries a row at Market size)
        w1 = _plus_transpose(self.adjacency)
        product = torch.sparse.mm(self.p, w1)
        inverse_n1 = 1 / _row_norms(product).clamp_(min=1e-12)
        a1 = _scaled_rows(product, inverse_n1)
        del product
        # round 2: W2 = A1 + A1^T; A1^T = W1 P^T diag(1/n1) as W1 is symmetric, a product cheaper than a transpose
        w2 = a1 + torch.sparse.mm(w1, _scaled_rows(self.p, inverse_n1).t().to_sparse_csr())
        del a1
        inverse_n2 = 1 / _row_norms_of_product(self.p, w2).clamp_(min=1e-12)
        self.rounds = [(w1, inverse_n1), (w2, inverse_n2)]
        self.b0 = self.rounds[0][0]

    def rows(self, start, stop):
        """Dense rows start..stop of the final A."""
        if not self.rounds:
            return _row_slice(self.adjacency, start, stop).to_dense()
        w, inverse_norm = self.rounds[-1]
        return torch.sparse.mm(_row_slice(self.p, start, stop), w).to_dense().mul_(inverse_norm[start:stop, None])

    def times(self, y):
        """A @ y for a dense (N, b) y: the chain diag(1/n2) P (A1 + A1^T) y with A1 = diag(1/n1) P B0."""
        if not self.rounds:
            return torch.sparse.mm(self.adjacency, y)
        (_, inverse_n1), (_, inverse_n2) = self.rounds
        # A1 y + A1^T y, A1 = diag(1/n1) P B0; B0 = A0 + A0^T is symmetric
        a1_y = torch.sparse.mm(self.p, torch.sparse.mm(self.b0, y)).mul_(inverse_n1[:, None])
        a1t_y = torch.sparse.mm(self.b0, torch.sparse.mm(self.p_t, y * inverse_n1[:, None]))
        return torch.sparse.mm(self.p, a1_y.add_(a1t_y)).mul_(inverse_n2[:, None])


K1, K2, LAMBDA = 26, 7, 0.3   # the original's GPU-Re-Ranking defaults


def check_params(k1, k2, lambda_value):
    """ValueError naming the flags when k1, k2 and lambda do not fit GNN re-ranking (it propagates over the
    first k2 of the k1 neighbours)."""
    if not 1 <= k2 <= k1 or not 0 <= lambda_value <= 1:
        raise ValueError(f'--k1 {k1} --k2 {k2} --lambda {lambda_value:g}: GNN re-ranking propagates over the first '
                         'k2 of the k1 neighbours, so 1 <= k2 <= k1; and 0 <= lambda <= 1')


def gnn_rerank_blocks(qf, gf, k1=K1, k2=K2, lambda_value=LAMBDA, device=None):
    """Return an iterator of (start, stop, block): minus the GNN re-ranked score of query rows start..stop.

    qf (Q, D) and gf (G, D): L2-normalised features (torch or numpy). Follows the original's gnn_reranking on the
    concatenated query+gallery set: the top-k1 neighbours of every image by cosine (equal scores: lower index
    first) give a 0/1 adjacency A; S = their scores squared; when k2 > 1, two rounds of A <- A + A^T,
    A[i] <- sum over the top-k2 neighbours j of S_ij A[j], rows L2-normalised; score = (1 - lambda) A_q . A_g
    + lambda cos(q, g). Blocks hold -score (smaller = better) for metrics.compute_cmc_map_from_blocks, on
    `device` (default CUDA when present, else CPU).
    """
    x, n_query, device = reranking_inputs(qf, gf, device)
    check_params(k1, k2, lambda_value)
    if x is None:
        return iter([(0, n_query, torch.zeros(n_query, len(gf), device=device))])
    graph = _Graph(x, min(k1, len(x)), min(k2, len(x)))
    return _final_blocks(graph, x, n_query, lambda_value)


def _final_blocks(graph, x, n_query, lambda_value):
    n = len(x)
    step = blocks.rows_per_block(blocks.DENSE, n)
    for start in range(0, n_query, step):
        stop = min(start + step, n_query)
        a_query = graph.rows(start, stop)                        # (b, N)
        score = graph.times(a_query.T.contiguous())[n_query:].T  # A_g . A_q, (b, G)
        score = score.mul(1 - lambda_value).add_(torch.mm(x[start:stop], x[n_query:].T), alpha=lambda_value)
        yield start, stop, score.neg_().add_(0.0)


def gnn_rerank(qf, gf, k1=K1, k2=K2, lambda_value=LAMBDA, device=None):
    """Return the (Q, G) GNN re-ranked score (float32 numpy, larger = more similar): the stacked blocks' negation."""
    return blocks.stacked(gnn_rerank_blocks(qf, gf, k1, k2, lambda_value, device), len(qf), len(gf), sign=-1)
