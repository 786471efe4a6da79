"""Neighbourhood attention over a fixed-degree gene graph, computed through CSR kernels.

For ``B`` samples, ``H`` heads and ``G`` genes with ``K`` neighbours each, the
``B * H`` attention matrices are laid out as one block-diagonal CSR matrix of
shape ``(B*H*G, B*H*G)`` with ``K`` entries per row. Two small autograd
functions keep everything sparse:

* :class:`SampledDot` -- attention scores ``q_i . k_j`` on the graph's edges
  (forward :func:`torch.sparse.sampled_addmm`; backward two CSR matmuls);
* :class:`SparseAggregate` -- ``out = A @ v`` with per-sample edge weights
  (forward CSR matmul; backward CSR matmul with the transposed pattern for
  ``v`` and :func:`torch.sparse.sampled_addmm` for the weights).

Building a sparse tensor from values that require grad would make autograd
allocate a dense ``(N, N)`` gradient; these functions never do. CPU CSR kernels
have no bf16 path, so both run in float32 inside an autocast-disabled region.
Measured on 2 cores at G=5,000, K=16, 32 blocks x 16 dims: scores 0.07 s
(gather: 0.43 s), aggregation 0.05 s (gather: 0.30 s).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

__all__ = ["NeighborAttention", "SampledDot", "SparseAggregate", "SparsePattern"]


def _csr(crow, col, values, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


class SparsePattern:
    """Block-diagonal CSR pattern of ``n_blocks`` copies of a ``(G, K)`` neighbour list.

    Holds the transposed pattern too (a permutation of the edge values), so
    backward passes never sort. Built once per (graph, number of blocks).

    Parameters
    ----------
    neighbors : LongTensor of shape (G, K)
    n_blocks : int
    """

    def __init__(self, neighbors: torch.Tensor, n_blocks: int):
        G, K = neighbors.shape
        device = neighbors.device
        self.n_genes, self.k, self.n_blocks = G, K, n_blocks
        self.n = n_blocks * G
        # int32 indices halve the pattern's memory (9M edges at 18,000 genes x 32 blocks)
        idx = torch.int32 if self.n * K < 2**31 else torch.int64
        offsets = (torch.arange(n_blocks, device=device) * G).view(-1, 1, 1)
        col = (neighbors.unsqueeze(0) + offsets).reshape(-1)
        self.crow = torch.arange(0, self.n * K + 1, K, device=device, dtype=idx)
        # transposed pattern: a stable sort by column keeps rows ascending within a column
        order = torch.sort(col, stable=True).indices
        self.t_perm = order.to(idx)
        self.t_col = torch.div(order, K, rounding_mode="floor").to(idx)
        counts = torch.bincount(col, minlength=self.n)
        self.t_crow = torch.zeros(self.n + 1, dtype=idx, device=device)
        self.t_crow[1:] = torch.cumsum(counts, 0)
        self.col = col.to(idx)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.col, values, self.n)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.t_crow, self.t_col, values[self.t_perm], self.n)


class SampledDot(torch.autograd.Function):
    """Edge scores ``s_e = q[row(e)] . k[col(e)]`` for the pattern's edges.

    Inputs ``q``, ``k``: ``(N, d)``; output ``(N * K,)`` in CSR order.
    """

    @staticmethod
    def forward(ctx, q, k, pattern: SparsePattern):
        ctx.save_for_backward(q, k)
        ctx.pattern = pattern
        zero = torch.zeros(pattern.col.numel(), dtype=q.dtype, device=q.device)
        out = torch.sparse.sampled_addmm(pattern.matrix(zero), q, k.transpose(0, 1), beta=0.0)
        return out.values().clone()

    @staticmethod
    def backward(ctx, grad):
        # backward can run inside autocast (accelerate's mixed precision); the CSR
        # kernels have no bf16/fp16 path, so it runs in float32 like the forward
        with torch.autocast(device_type=grad.device.type, enabled=False):
            return SampledDot._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        q, k = ctx.saved_tensors
        p = ctx.pattern
        grad = grad.contiguous()
        gq = gk = None
        if ctx.needs_input_grad[0]:
            gq = torch.sparse.mm(p.matrix(grad), k)
        if ctx.needs_input_grad[1]:
            gk = torch.sparse.mm(p.transposed(grad), q)
        return gq, gk, None


class SparseAggregate(torch.autograd.Function):
    """``out = A @ v`` where ``A`` has the pattern's edges and per-edge ``weights``.

    Inputs ``weights``: ``(N * K,)`` in CSR order, ``v``: ``(N, d)``.
    """

    @staticmethod
    def forward(ctx, weights, v, pattern: SparsePattern):
        ctx.save_for_backward(weights, v)
        ctx.pattern = pattern
        return torch.sparse.mm(pattern.matrix(weights), v)

    @staticmethod
    def backward(ctx, grad):
        # backward can run inside autocast (accelerate's mixed precision); the CSR
        # kernels have no bf16/fp16 path, so it runs in float32 like the forward
        with torch.autocast(device_type=grad.device.type, enabled=False):
            return SparseAggregate._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        weights, v = ctx.saved_tensors
        p = ctx.pattern
        grad = grad.contiguous()
        gw = gv = None
        if ctx.needs_input_grad[0]:
            zero = torch.zeros_like(weights)
            gw = torch.sparse.sampled_addmm(
                p.matrix(zero), grad, v.transpose(0, 1), beta=0.0
            ).values()
        if ctx.needs_input_grad[1]:
            gv = torch.sparse.mm(p.transposed(weights), grad)
        return gw, gv, None


class NeighborAttention(nn.Module):
    """Multi-head attention where each gene attends to its graph neighbours.

    Parameters
    ----------
    d_model : int
    n_heads : int
    dropout : float
    mode : {"sparse", "dense"}
        ``"dense"`` is full G x G attention (every gene sees every gene), kept
        only for benchmark comparisons: its memory grows with G squared.

    Examples
    --------
    >>> import torch
    >>> att = NeighborAttention(8, 2)
    >>> nbrs = torch.tensor([[0, 1], [1, 0], [2, 0]])
    >>> att(torch.randn(4, 3, 8), nbrs).shape
    torch.Size([4, 3, 8])
    """

    def __init__(self, d_model: int, n_heads: int = 4, dropout: float = 0.0, mode="sparse"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.mode = mode
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, neighbors: torch.Tensor, pattern: SparsePattern | None = None
    ) -> torch.Tensor:
        """``x``: (B, G, d); ``neighbors``: (G, K) long. Returns (B, G, d).

        ``pattern`` (for ``B * n_heads`` blocks) may be passed in so that all
        layers share one; it is built here otherwise.
        """
        B, G, _ = x.shape
        H, dh = self.n_heads, self.d_head
        qkv = self.qkv(x).view(B, G, 3, H, dh).permute(2, 0, 3, 1, 4)  # 3, B, H, G, dh
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.mode == "dense":
            out = nn.functional.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout.p if self.training else 0.0
            )
        else:
            if pattern is None:
                pattern = SparsePattern(neighbors, B * self.n_heads)
            out = self._sparse(q, k, v, pattern)
        out = out.permute(0, 2, 1, 3).reshape(B, G, H * dh)
        return self.out(out)

    def _sparse(self, q, k, v, pattern: SparsePattern):
        B, H, G, dh = q.shape
        K = pattern.k
        device_type = q.device.type
        # CSR kernels have no bf16/fp16 path: float32, autocast off
        with torch.autocast(device_type=device_type, enabled=False):
            qf = q.float().reshape(B * H * G, dh).contiguous() / math.sqrt(dh)
            kf = k.float().reshape(B * H * G, dh).contiguous()
            vf = v.float().reshape(B * H * G, dh).contiguous()
            scores = SampledDot.apply(qf, kf, pattern)
            weights = torch.softmax(scores.view(-1, K), dim=-1)
            weights = self.dropout(weights).reshape(-1)
            out = SparseAggregate.apply(weights, vf, pattern)
        return out.view(B, H, G, dh).to(q.dtype)
