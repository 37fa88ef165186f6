"""The TopK training kernels, for a stack ``[S, ...]`` (one coder is ``S = 1``): sparse where the math is sparse.

A TopK coder's latents have ``k`` nonzeros per token out of ``m``. ``topk_encode`` computes
the dense pre-activations once (one ``baddbmm``) and keeps the top ``K`` per token; its
backward touches only the kept entries (a sparse product ``scatter_outer`` of ``g`` and ``x``
into the encoder's kept rows, ``index_add`` into the bias) instead of a dense ``[B, m]`` gradient and a second
``bmm``. ``sparse_decode`` sums the kept rows of ``W_dec`` (``embedding_bag``, as sparsify's
decoder does; its weight gradient is a ``scatter_outer`` too), so decoding and its gradient cost ``B * k * d`` instead of ``B * m * d``.
This is EleutherAI sparsify's fused encoder, batched over coders, with the SAE input shift
(``b_dec``) inside it. The population and the
per-SAE loop (``module.SparseCoder.objective``) both use these kernels, so the benchmark
compares the same arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class TopKEncode(torch.autograd.Function):
    """``relu((x - shift) @ W.T + b)`` ``[S, B, M]``, top ``K`` per token: values ``[S, B, K]`` (sorted) and indices.

    ``x [S, B, D]`` (data: no gradient), ``shift [S, 1, D]`` (an SAE's ``b_dec``; zero for
    transcoders), ``W [S, M, D]``, ``b [S, 1, M]``.
    """

    @staticmethod
    def forward(ctx, x, shift, W, b, K: int):
        xs = x - shift
        # relu is monotone, so the top K of the raw pre-activations, relu'd, are the top K of the relu'd ones:
        # the same values; only slots whose value is 0 may name another latent, and those carry nothing
        # (zero in the decode, masked in the backward). Ranking raw values skips a pass over [S, B, M], and
        # top-k over half-zero rows (ties) is about 1.5x slower than over raw ones on CPU.
        values, indices = torch.baddbmm(b, xs, W.mT).topk(K, dim=-1)
        values = values.relu_()
        ctx.save_for_backward(xs, W, indices, values)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        xs, W, indices, values = ctx.saved_tensors
        S, B, _ = indices.shape
        M, D = W.shape[1], W.shape[2]
        g = grad_values * (values > 0)
        flat = (indices + torch.arange(S, device=xs.device)[:, None, None] * M).reshape(-1)
        grad_shift = grad_W = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_W = scatter_outer(flat, g, xs.reshape(S * B, D), S * M).view(S, M, D)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            grad_b = torch.zeros(S * M, dtype=xs.dtype, device=xs.device).index_add_(0, flat, g.reshape(-1))
            grad_b = grad_b.view(S, 1, M)
            if ctx.needs_input_grad[1]:  # d/dshift of sum_bj g_bj W[idx_bj] . (x_b - shift) = -(sum_b g_b) @ W
                grad_shift = -torch.bmm(grad_b, W)
            if not ctx.needs_input_grad[3]:
                grad_b = None
        if ctx.needs_input_grad[0]:
            raise RuntimeError("TopKEncode does not differentiate its input activations")
        return None, grad_shift, grad_W, grad_b, None


def scatter_outer(flat: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """``out [n, D]`` with ``out[flat[t, j]] += weights[t, j] * rows[t]`` over tokens ``t`` and kept slots ``j``.

    ``flat`` and ``weights`` are ``[T * K]`` (``[T, K]`` row-major), ``rows`` is ``[T, D]``. One sparse
    ``[n, T] @ [T, D]`` product (COO, ``T * K`` entries) instead of materializing ``T * K`` scaled rows for
    an ``index_add``: about 3.5x faster on CPU at these sizes, the same sums up to rounding.
    """
    T = rows.shape[0]
    K = flat.numel() // T
    token = torch.arange(T, device=rows.device).repeat_interleave(K)
    matrix = torch.sparse_coo_tensor(
        torch.stack([flat.reshape(-1), token]), weights.reshape(-1), (n, T), check_invariants=False
    )
    return torch.sparse.mm(matrix, rows)


def topk_encode(x, shift, W, b, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    return TopKEncode.apply(x, shift, W, b, K)


class SparseDecode(torch.autograd.Function):
    """``out[s, b] = sum_j values[s, b, j] * W[s, indices[s, b, j]]``: an ``embedding_bag``; the backward a gather and a
    ``scatter_outer``."""

    @staticmethod
    def forward(ctx, values, indices, W):
        S, B, K = indices.shape
        M, D = W.shape[1], W.shape[2]
        flat = (indices + torch.arange(S, device=W.device)[:, None, None] * M).reshape(-1)
        ctx.save_for_backward(values, flat, W)
        # the fused gather-and-sum (sparsify's decoder): about 10x faster on CPU than gathering rows for a bmm
        out = F.embedding_bag(flat.view(S * B, K), W.reshape(S * M, D), per_sample_weights=values.reshape(S * B, K),
                              mode="sum")  # fmt: skip
        return out.view(S, B, D)

    @staticmethod
    def backward(ctx, grad_out):
        values, flat, W = ctx.saved_tensors
        S, M, D = W.shape
        SB, K = values.shape[0] * values.shape[1], values.shape[2]
        g = grad_out.reshape(SB, D)
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            rows = W.reshape(S * M, D).index_select(0, flat).view(SB, K, D)
            # a row vector times each [D, K] (rows.mT), not each [K, D] times a column: the same products, and
            # on CPU about 20x faster for these shapes (the batched matrix-vector path is slow)
            grad_values = torch.bmm(g[:, None, :], rows.mT).view(values.shape)
        if ctx.needs_input_grad[2]:
            grad_W = scatter_outer(flat, values, g, S * M).view(S, M, D)
        return grad_values, None, grad_W


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j values[s, b, j] * W_dec[s, indices[s, b, j]]`` ``[S, B, D_out]`` (no bias)."""
    return SparseDecode.apply(values, indices, W_dec)
