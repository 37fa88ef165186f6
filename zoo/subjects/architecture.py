"""What a subject model is, independent of how it is stored or trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from zoo.config import ArchitectureSpace


@dataclass(frozen=True)
class LayoutEntry:
    """Where one parameter tensor lives in a flat float32 weight vector (nn.Linear orientation)."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Architecture:
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
    def n_params(self) -> int:
        last = self.layout()[-1]
        return last.offset + last.size

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


def sample_architecture(
    space: ArchitectureSpace, vocab_size: int, seq_len: int, rng: np.random.Generator
) -> Architecture:
    """Draw depth, one width for every hidden layer and an activation, uniformly from the ranges."""
    n_layers = int(rng.integers(space.layers.min, space.layers.max + 1))
    width = int(rng.integers(space.width.min, space.width.max + 1))
    activation = str(space.activations[int(rng.integers(len(space.activations)))])
    return Architecture(n_layers, (width,) * n_layers, activation, vocab_size, seq_len, space.family)
