"""The MLP family's own reader input: a subject's weights in token space (``neurons.TOKEN_SPACE``).

A subject's weights live in token space: ``w_in [N, D]`` holds the first hidden layer's
input weights (inputs are one-hot (position, token) features, so their order is fixed),
``adj [N, N]`` holds every other weight (``adj[j, i]`` is the weight from neuron ``i`` to
neuron ``j`` of the next layer) and ``bias [N]``. Permuting a layer's neurons permutes these
rows and columns together, which is what makes the interpreter's permutation invariance
testable. Subjects of a family without a token space keep all-zero rows here (see
``neurons``): the readers built on these tensors are masked off for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.neurons import has_token_space
from zoo.subjects.families.mlp import Architecture

if TYPE_CHECKING:
    from zoo.readers.interpreter.data import Example

@dataclass(frozen=True)
class TokenMap:
    """Where each entry of an architecture's flat weight vector goes in token space."""

    n_tokens: int
    layer: np.ndarray  # [N] layer of each token (n_layers: the output)
    fan_in: np.ndarray  # [N]
    width: np.ndarray  # [N] width of the token's layer
    in_flat: np.ndarray  # flat positions of first-layer weights ...
    in_row: np.ndarray  # ... their token ...
    in_col: np.ndarray  # ... and input feature
    adj_flat: np.ndarray  # flat positions of every later weight ...
    adj_row: np.ndarray  # ... target token j ...
    adj_col: np.ndarray  # ... source token i
    bias_flat: np.ndarray  # flat positions of the biases, token order
    n_params: int


@lru_cache(maxsize=512)
def token_map(architecture: Architecture) -> TokenMap:
    sizes = architecture.layer_sizes
    starts = np.cumsum([0, *sizes[1:]])  # token index where each non-input layer starts
    entries = architecture.layout()
    layers, fan_in, width = [], [], []
    in_flat, in_row, in_col, adj_flat, adj_row, adj_col, bias_flat = [], [], [], [], [], [], []
    for layer in range(architecture.n_layers + 1):
        w, b = entries[2 * layer], entries[2 * layer + 1]
        n_out, n_in = w.shape
        rows = np.repeat(np.arange(n_out), n_in) + starts[layer]
        cols = np.tile(np.arange(n_in), n_out)
        flat = np.arange(w.offset, w.offset + w.size)
        if layer == 0:
            in_flat.append(flat), in_row.append(rows), in_col.append(cols)
        else:
            adj_flat.append(flat), adj_row.append(rows), adj_col.append(cols + starts[layer - 1])
        bias_flat.append(np.arange(b.offset, b.offset + b.size))
        layers.append(np.full(n_out, layer)), fan_in.append(np.full(n_out, n_in)), width.append(np.full(n_out, n_out))

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return TokenMap(
        n_tokens=int(starts[-1]),
        layer=cat(layers),
        fan_in=cat(fan_in),
        width=cat(width),
        in_flat=cat(in_flat),
        in_row=cat(in_row),
        in_col=cat(in_col),
        adj_flat=cat(adj_flat),
        adj_row=cat(adj_row),
        adj_col=cat(adj_col),
        bias_flat=cat(bias_flat),
        n_params=architecture.n_params,
    )


@dataclass
class Weights:
    """A padded batch of subjects' weights in token space."""

    w_in: torch.Tensor  # [B, N, D]
    adj: torch.Tensor  # [B, N, N]
    bias: torch.Tensor  # [B, N]

    def to(self, device: torch.device) -> Weights:
        return Weights(self.w_in.to(device), self.adj.to(device), self.bias.to(device))

    def __add__(self, other: Weights) -> Weights:
        return Weights(self.w_in + other.w_in, self.adj + other.adj, self.bias + other.bias)

    def __sub__(self, other: Weights) -> Weights:
        return Weights(self.w_in - other.w_in, self.adj - other.adj, self.bias - other.bias)


def to_tokens(examples: Sequence[tuple[Architecture, np.ndarray]], n_tokens: int, in_features: int) -> Weights:
    """Flat weight vectors of (possibly different) architectures -> padded token-space ``Weights``
    (all-zero rows for a family without a token space)."""
    b = len(examples)
    w_in = np.zeros((b, n_tokens, in_features), dtype=np.float32)
    adj = np.zeros((b, n_tokens, n_tokens), dtype=np.float32)
    bias = np.zeros((b, n_tokens), dtype=np.float32)
    for k, (arch, flat) in enumerate(examples):
        if not has_token_space(arch):
            continue
        m = token_map(arch)
        if len(flat) != m.n_params:
            raise InterpreterError(f"{arch.describe()}: {len(flat)} weights, the layout needs {m.n_params}")
        w_in[k, m.in_row, m.in_col] = flat[m.in_flat]
        adj[k, m.adj_row, m.adj_col] = flat[m.adj_flat]
        bias[k, : m.n_tokens] = flat[m.bias_flat]
    return Weights(torch.from_numpy(w_in), torch.from_numpy(adj), torch.from_numpy(bias))


def from_tokens(weights: Weights, architectures: Sequence[Architecture]) -> list[np.ndarray | None]:
    """The inverse of ``to_tokens``: each model's flat weights in ``Architecture.layout`` order (None for a
    family without a token space: nothing of its weights is there)."""
    w_in = weights.w_in.detach().cpu().numpy()
    adj = weights.adj.detach().cpu().numpy()
    bias = weights.bias.detach().cpu().numpy()
    out = []
    for k, arch in enumerate(architectures):
        if not has_token_space(arch):
            out.append(None)
            continue
        m = token_map(arch)
        flat = np.zeros(m.n_params, dtype=np.float32)
        flat[m.in_flat] = w_in[k, m.in_row, m.in_col]
        flat[m.adj_flat] = adj[k, m.adj_row, m.adj_col]
        flat[m.bias_flat] = bias[k, : m.n_tokens]
        out.append(flat)
    return out


def permute_layer(example: Example, layer: int, order: np.ndarray) -> Example:
    """The same model with the neurons of hidden ``layer`` reordered (weights moved along).

    Row ``i`` of the new layer is old neuron ``order[i]``: its signature row, its
    incoming weights and bias, and its column in the next layer's weights. The
    model computes exactly the same function.
    """
    arch = example.architecture
    if not 0 <= layer < arch.n_layers:
        raise ValueError(f"layer {layer} is not a hidden layer of {arch.describe()}")
    order = np.asarray(order)
    start = sum(arch.widths[:layer])
    signature = example.signature.copy()
    signature[start : start + len(order)] = example.signature[start + order]

    def permuted(flat: np.ndarray) -> np.ndarray:
        entries = {e.name: e for e in arch.layout()}
        out = flat.copy()
        w, b = entries[f"layers.{layer}.weight"], entries[f"layers.{layer}.bias"]
        out[w.offset : w.offset + w.size] = flat[w.offset : w.offset + w.size].reshape(w.shape)[order].ravel()
        out[b.offset : b.offset + b.size] = flat[b.offset : b.offset + b.size][order]
        nxt = entries[f"layers.{layer + 1}.weight"] if layer + 1 < arch.n_layers else entries["head.weight"]
        out[nxt.offset : nxt.offset + nxt.size] = flat[nxt.offset : nxt.offset + nxt.size].reshape(nxt.shape)[:, order].ravel()
        return out

    return replace(example, signature=signature, degraded=permuted(example.degraded), clean=permuted(example.clean))
