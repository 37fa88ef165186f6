"""The TopK training kernels equal the dense computation they replace, values and gradients."""

from __future__ import annotations

import pytest
import torch

from zoo.readers.sae.kernels import scatter_outer, sparse_decode, topk_encode


def _dense(x, shift, W_enc, b_enc, W_dec, K):
    """The dense rule: relu, top K per token, a dense latent matrix, a dense decode."""
    pre = torch.relu(torch.baddbmm(b_enc, x - shift, W_enc.mT))
    values, indices = pre.topk(K, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, indices, values)
    return torch.bmm(z, W_dec)


@pytest.mark.parametrize(("S", "B", "M", "D", "K"), [(1, 16, 12, 5, 3), (4, 32, 64, 8, 8), (3, 7, 20, 6, 20)])
def test_sparse_kernels_match_the_dense_rule_and_its_gradients(S, B, M, D, K):
    gen = torch.Generator().manual_seed(S * 100 + K)
    x = torch.randn(S, B, D, generator=gen)
    params = [torch.randn(S, 1, D, generator=gen), torch.randn(S, M, D, generator=gen),
              torch.randn(S, 1, M, generator=gen) - 1.0, torch.randn(S, M, D, generator=gen)]  # fmt: skip
    # many pre-activations below zero: kept slots with value 0 exercise the relu-after-top-k rule
    target = torch.randn(S, B, D, generator=gen)
    grads = []
    for sparse in (True, False):
        leaves = [p.clone().requires_grad_() for p in params]
        shift, W_enc, b_enc, W_dec = leaves
        if sparse:
            values, indices = topk_encode(x, shift, W_enc, b_enc, K)
            out = sparse_decode(values, indices, W_dec)
        else:
            out = _dense(x, shift, W_enc, b_enc, W_dec, K)
        ((out - target) ** 2).sum().backward()
        grads.append((out.detach(), [p.grad for p in leaves]))
    (sparse_out, sparse_grads), (dense_out, dense_grads) = grads
    torch.testing.assert_close(sparse_out, dense_out, atol=1e-4, rtol=1e-4)
    for name, a, b in zip(("shift", "W_enc", "b_enc", "W_dec"), sparse_grads, dense_grads):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4, msg=name)


def test_scatter_outer_adds_each_weighted_row_into_its_target():
    flat = torch.tensor([0, 2, 2, 1])  # tokens 0 and 1, two kept slots each
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rows = torch.tensor([[1.0, 10.0], [100.0, 1000.0]])
    out = scatter_outer(flat, weights, rows, 3)
    assert out.tolist() == [[1.0, 10.0], [400.0, 4000.0], [302.0, 3020.0]]
