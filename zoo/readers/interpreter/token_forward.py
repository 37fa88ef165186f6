"""Subjects run in token space: every neuron's value, and the logit, from ``token_space.Weights``.

The same function ``zoo.load_model(row)`` computes for an MLP, written over padded batches of
subjects of different depths, widths and activations, and differentiable in the weights, so the
repair losses and the decoder's gradient input can go through it. Rows of a family without a
token space compute zeros here (their weights are all zero); the model reads their stored
probe values instead (``Batch.site_values``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.config import ACTIVATIONS
from zoo.readers.interpreter.data import Batch
from zoo.readers.interpreter.token_space import Weights


_ACTIVATION_FNS = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
}


def activation_runs(activation: torch.Tensor) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` for every run of consecutive models sharing an activation."""
    values = activation.tolist()
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, ACTIVATIONS[values[start]]))
            start = i
    return runs


def _activate(pre: torch.Tensor, runs: list[tuple[int, int, str]]) -> torch.Tensor:
    """Each model's own activation, applied run by run (batches sorted by activation have few runs)."""
    if len(runs) == 1:
        return _ACTIVATION_FNS[runs[0][2]](pre)
    return torch.cat([_ACTIVATION_FNS[name](pre[start:end]) for start, end, name in runs])


def subject_values(batch: Batch, weights: Weights, x: torch.Tensor) -> torch.Tensor:
    """Every neuron's value ``[B, R, N]`` on one-hot inputs ``x [R, D]``: hidden post-activations, and the
    logit at the output token (0 on padding). Differentiable in ``weights``."""
    runs = activation_runs(batch.activation)
    mask, layer = batch.mask, batch.layer
    pre = torch.matmul(x, weights.w_in.transpose(1, 2)) + weights.bias[:, None, :]
    v = _activate(pre, runs) * batch.first.to(x.dtype)[:, None, :]
    for step in range(1, int(batch.n_layers.max()) + 1):
        pre = torch.bmm(v, weights.adj.transpose(1, 2)) + weights.bias[:, None, :]
        here = mask & (layer == step)
        out = (here & batch.output).to(x.dtype)[:, None, :]
        hidden = (here & ~batch.output).to(x.dtype)[:, None, :]
        v = v + pre * out
        if bool(hidden.any()):
            v = v + _activate(pre, runs) * hidden
    return v


def subject_logits(batch: Batch, weights: Weights, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, R]`` of every subject (with ``weights`` in token space) on one-hot inputs ``x [R, D]``.

    The same function as ``zoo.load_model(row)`` computes; differentiable in ``weights``.
    """
    return output_values(batch, subject_values(batch, weights, x))


def output_values(batch: Batch, values: torch.Tensor) -> torch.Tensor:
    """The output logit ``[B, R]`` out of every neuron's values ``[B, R, N]``."""
    return (values * batch.output.to(values.dtype)[:, None, :]).sum(-1)
