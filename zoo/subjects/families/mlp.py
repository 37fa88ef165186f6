"""The MLP family: one-hot tokens -> ``n_layers`` hidden layers of one width -> one logit.

Its batched population lives in ``zoo.subjects.population`` (layout, forward) and
``zoo.subjects.fit`` (the hand-written backward pass, Adam, early stopping); its
``nn.Module`` in ``zoo.subjects.mlp``. Those import torch, so they are imported where
used: validating a config needs only this module's space.

Hookpoints: ``layers.{i}.pre`` and ``layers.{i}.post`` (width of layer ``i``) and
``head`` (the logit, width 1). Signature sites: each hidden layer (kind ``hidden``),
then the head (kind ``output``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from zoo.config_types import IntRange, Strict
from zoo.subjects.families.base import Family, LayoutEntry, SignatureSite, SubjectArchitecture

if TYPE_CHECKING:
    import torch

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu"]
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
MAX_LAYERS, MAX_WIDTH = 16, 4096  # bounds that refuse a typo (a million units) before anything is written


class MLPSpace(Strict):
    """Ranges an MLP's architecture is drawn from: depth, one width for all hidden layers, activation."""

    family: Literal["mlp"] = Field("mlp", description="subject family: a multilayer perceptron over one-hot tokens")
    layers: IntRange = Field(IntRange(min=1, max=3), description="number of hidden layers, drawn uniformly")
    width: IntRange = Field(
        IntRange(min=32, max=48), description="units of every hidden layer (one draw per model), uniformly"
    )
    activations: list[Activation] = Field(
        list(ACTIVATIONS), description="hidden activations a model draws one of, uniformly"
    )

    @model_validator(mode="after")
    def _sane(self) -> MLPSpace:
        if self.layers.min < 1:
            raise ValueError("layers.min: must be at least 1")
        if self.width.min < 1:
            raise ValueError("width.min: must be at least 1")
        if self.layers.max > MAX_LAYERS:
            raise ValueError(f"layers.max: at most {MAX_LAYERS} hidden layers (the subjects are small models)")
        if self.width.max > MAX_WIDTH:
            raise ValueError(f"width.max: at most {MAX_WIDTH} units (the subjects are small models)")
        if not self.activations:
            raise ValueError("activations: at least one is needed")
        return self


@dataclass(frozen=True)
class Architecture(SubjectArchitecture):
    """An MLP over one-hot tokens: ``seq_len*vocab_size -> widths... -> 1`` logit."""

    n_layers: int
    widths: tuple[int, ...]
    activation: str
    vocab_size: int
    seq_len: int
    family: str = "mlp"

    def __post_init__(self) -> None:
        if len(self.widths) != self.n_layers:
            raise ValueError(f"widths {self.widths} do not match n_layers {self.n_layers}")

    @property
    def in_features(self) -> int:
        return self.vocab_size * self.seq_len

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.in_features, *self.widths, 1)

    def layout(self) -> list[LayoutEntry]:
        entries, offset = [], 0
        sizes = self.layer_sizes
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            prefix = f"layers.{i}" if i < self.n_layers else "head"
            for name, shape in ((f"{prefix}.weight", (fan_out, fan_in)), (f"{prefix}.bias", (fan_out,))):
                entries.append(LayoutEntry(name, shape, offset))
                offset += int(np.prod(shape))
        return entries

    @property
    def n_neurons(self) -> int:
        return sum(self.widths) + 1

    def to_dict(self) -> dict:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(
            n_layers=int(data["n_layers"]),
            widths=tuple(int(w) for w in data["widths"]),
            activation=str(data["activation"]),
            vocab_size=int(data["vocab_size"]),
            seq_len=int(data["seq_len"]),
            family=str(data.get("family", "mlp")),
        )

    def describe(self) -> str:
        return f"{self.family} {'x'.join(str(w) for w in self.widths)} {self.activation}"


def sample_architecture(space: MLPSpace, vocab_size: int, seq_len: int, rng: np.random.Generator) -> Architecture:
    """Draw depth, one width for every hidden layer and an activation, uniformly from the ranges."""
    n_layers = int(rng.integers(space.layers.min, space.layers.max + 1))
    width = int(rng.integers(space.width.min, space.width.max + 1))
    activation = str(space.activations[int(rng.integers(len(space.activations)))])
    return Architecture(n_layers, (width,) * n_layers, activation, vocab_size, seq_len, space.family)


class MLPFamily(Family):
    name = "mlp"
    space = MLPSpace
    architecture = Architecture

    def sample(self, space: MLPSpace, vocab_size: int, seq_len: int, rng: np.random.Generator) -> Architecture:
        return sample_architecture(space, vocab_size, seq_len, rng)

    def init_weights(self, architecture: Architecture, seed: int) -> np.ndarray:
        from zoo.subjects.population import init_weights

        return init_weights(architecture, seed)

    def build_module(self, architecture: Architecture, weights: np.ndarray):
        from zoo.subjects.mlp import build_model

        return build_model(architecture, weights)

    def hookpoints(self, architecture: Architecture) -> dict[str, int]:
        points: dict[str, int] = {}
        for i, width in enumerate(architecture.widths):
            points[f"layers.{i}.pre"] = width
            points[f"layers.{i}.post"] = width
        points["head"] = 1
        return points

    def signature_sites(self, architecture: Architecture) -> list[SignatureSite]:
        hidden = [
            SignatureSite(f"layers.{i}", f"layers.{i}.pre", f"layers.{i}.post", width, i, "hidden")
            for i, width in enumerate(architecture.widths)
        ]
        return [*hidden, SignatureSite("head", "head", "head", 1, architecture.n_layers, "output")]

    def train(self, jobs: list, config, device: torch.device, epochs: int | None = None) -> list:
        from zoo.subjects.train import train_subjects

        return train_subjects(jobs, config, device, epochs=epochs)

    def population(self, architectures: list, weights: list[np.ndarray], device: torch.device | str = "cpu"):
        from zoo.subjects.population import from_weights

        return from_weights(list(architectures), [np.asarray(w, dtype=np.float32) for w in weights], device)

    def population_key(self, architecture: Architecture) -> tuple:
        return (architecture.in_features,)

    def logits(self, population, tokens: torch.Tensor) -> torch.Tensor:
        from zoo.subjects.population import logits, one_hot_inputs

        return logits(population, one_hot_inputs(tokens, population.architectures[0].vocab_size))

    def activations(self, population, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        from zoo.subjects.population import forward, one_hot_inputs

        with torch.no_grad():
            out, pres, posts = forward(population, one_hot_inputs(tokens, population.architectures[0].vocab_size))
        points = {}
        for i, (pre, post) in enumerate(zip(pres, posts)):
            points[f"layers.{i}.pre"] = pre
            points[f"layers.{i}.post"] = post[..., :-1]
        points["head"] = out.unsqueeze(-1)
        return points

    def quantize_(self, population, scheme: str) -> None:
        from zoo.subjects.quantize import quantize_

        quantize_(population, scheme)

    def weights(self, population) -> list[np.ndarray]:
        from zoo.subjects.population import to_weights

        return to_weights(population)


FAMILY = MLPFamily()
