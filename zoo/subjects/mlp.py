"""Subject models as standard ``torch.nn.Module``s, rebuilt from flat float32 arrays (no pickle)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.subjects.flat import flatten, load_flat
from zoo.subjects.families.mlp import Architecture

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class SubjectMLP(nn.Module):
    """Token ids ``[batch, seq_len]`` (0 = A) -> one-hot -> hidden layers -> ``[batch]`` logits."""

    def __init__(self, architecture: Architecture):
        super().__init__()
        self.architecture = architecture
        sizes = architecture.layer_sizes
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-2], sizes[1:-1]))
        self.head = nn.Linear(sizes[-2], 1)
        self.activation = ACTIVATION_MODULES[architecture.activation]()

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(tokens.long(), self.architecture.vocab_size)
        return one_hot.flatten(1).to(self.head.weight.dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encode(tokens)
        for layer in self.layers:
            h = self.activation(layer(h))
        return self.head(h).squeeze(-1)

    def activations(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hookpoint of the family (``layers.{i}.pre``, ``layers.{i}.post``, ``head``): ``[batch, width]``."""
        points, h = {}, self.encode(tokens)
        for i, layer in enumerate(self.layers):
            points[f"layers.{i}.pre"] = z = layer(h)
            points[f"layers.{i}.post"] = h = self.activation(z)
        points["head"] = self.head(h)
        return points


def build_model(architecture: Architecture | dict, weights: np.ndarray | torch.Tensor) -> SubjectMLP:
    """Rebuild a model from its architecture and flat weights laid out by ``Architecture.layout``."""
    if not isinstance(architecture, Architecture):
        from zoo.subjects.families import require_family

        architecture = require_family(architecture, ("mlp",), "the MLP module")
    return load_flat(SubjectMLP(architecture), architecture, weights)


def flatten_model(model: SubjectMLP) -> np.ndarray:
    """The inverse of ``build_model``: the module's parameters as one float32 vector."""
    return flatten(model)
