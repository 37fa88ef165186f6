"""The TopK training kernels, for a stack ``[S, ...]`` (one coder is ``S = 1``): sparse where the math is sparse.

A TopK coder's latents have ``k`` nonzeros per token out of ``m``. ``topk_encode`` computes
the dense pre-activations once (one ``baddbmm``) and keeps the top ``K`` per token; its
backward touches only the kept entries (``index_add`` of ``x * g`` into the encoder's kept
columns, ``scatter_add`` into the bias) instead of a dense ``[B, m]`` gradient and a second
``bmm``. ``sparse_decode`` gathers the kept rows of ``W_dec`` (as sparsify's ``embedding_bag``
decoder does), so decoding and its gradient cost ``B * k * d`` instead of ``B * m * d``.
This is EleutherAI sparsify's fused encoder, batched over coders, with the SAE input shift
(``b_dec``) inside it. The population and the
per-SAE loop (``module.SparseCoder.objective``) both use these kernels, so the benchmark
compares the same arithmetic.
"""

from __future__ import annotations

import torch


class TopKEncode(torch.autograd.Function):
    """``relu((x - shift) @ W.T + b)`` ``[S, B, M]``, top ``K`` per token: values ``[S, B, K]`` (sorted) and indices.

    ``x [S, B, D]`` (data: no gradient), ``shift [S, 1, D]`` (an SAE's ``b_dec``; zero for
    transcoders), ``W [S, M, D]``, ``b [S, 1, M]``.
    """

    @staticmethod
    def forward(ctx, x, shift, W, b, K: int):
        xs = x - shift
        values, indices = torch.relu(torch.baddbmm(b, xs, W.mT)).topk(K, dim=-1)
        ctx.save_for_backward(xs, W, indices, values)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        xs, W, indices, values = ctx.saved_tensors
        S, B, K = indices.shape
        M, D = W.shape[1], W.shape[2]
        g = grad_values * (values > 0)
        flat = (indices + torch.arange(S, device=xs.device)[:, None, None] * M).reshape(-1)
        grad_shift = grad_W = grad_b = None
        if ctx.needs_input_grad[2]:
            src = (g[..., None] * xs[:, :, None, :]).reshape(S * B * K, D)
            grad_W = torch.zeros(S * M, D, dtype=xs.dtype, device=xs.device).index_add_(0, flat, src).view(S, M, D)
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


def topk_encode(x, shift, W, b, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    return TopKEncode.apply(x, shift, W, b, K)


class SparseDecode(torch.autograd.Function):
    """``out[s, b] = sum_j values[s, b, j] * W[s, indices[s, b, j]]``: a gather and a ``bmm``; the backward an ``index_add``."""

    @staticmethod
    def forward(ctx, values, indices, W):
        S, B, K = indices.shape
        M, D = W.shape[1], W.shape[2]
        flat = (indices + torch.arange(S, device=W.device)[:, None, None] * M).reshape(-1)
        rows = W.reshape(S * M, D).index_select(0, flat).view(S * B, K, D)
        ctx.save_for_backward(values, flat, rows)
        ctx.shape = (S, M, D)
        return torch.bmm(values.reshape(S * B, 1, K), rows).view(S, B, D)

    @staticmethod
    def backward(ctx, grad_out):
        values, flat, rows = ctx.saved_tensors
        S, M, D = ctx.shape
        SB, K = rows.shape[0], rows.shape[1]
        g = grad_out.reshape(SB, D)
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.bmm(rows, g[:, :, None]).view(values.shape)
        if ctx.needs_input_grad[2]:
            src = (values.reshape(SB, K, 1) * g[:, None, :]).reshape(SB * K, D)
            grad_W = torch.zeros(S * M, D, dtype=g.dtype, device=g.device).index_add_(0, flat, src).view(S, M, D)
        return grad_values, None, grad_W


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j values[s, b, j] * W_dec[s, indices[s, b, j]]`` ``[S, B, D_out]`` (no bias)."""
    return SparseDecode.apply(values, indices, W_dec)
