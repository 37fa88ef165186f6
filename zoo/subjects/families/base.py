"""The seam every subject family sits behind.

A family is one module that defines a config space, an architecture and one ``Family``
object; the factory, signatures and ``load_model`` call only what is declared here,
so adding a family is adding a module and a line in the registry
(``zoo.subjects.families.FAMILIES``).

The factory trains ``SubjectJob``s through ``Family.train`` and reads populations only
through the ``Family`` methods; readers that read only some families (``zoo export`` reads
MLPs; the interpreter's decoder repairs MLPs) say so up front and refuse the others in
one line (``require_families``).

Two names matter to everything downstream:

- **hookpoints**: named activation sites of a model (``layers.0.pre``, ``layers.0.post``,
  ``head`` for the MLP), each with a width. Signatures, probes and sparse autoencoders
  address activations by these names.
- **signature sites**: the neurons that get a row in a signature, in order: each site
  reads a pre- and a post-activation hookpoint of the same width, and carries a layer
  index and a family-independent kind (``hidden``, ``output``, ...), which the record
  stores as ``neuron_layer`` and ``neuron_kind``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.config_types import Strict


@dataclass(frozen=True)
class LayoutEntry:
    """Where one parameter tensor lives in a flat float32 weight vector (``nn.Module`` state-dict order)."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class SignatureSite:
    """One group of neurons with a signature row each: ``width`` units read at two hookpoints."""

    name: str
    pre: str
    post: str
    width: int
    layer: int
    kind: str


class SubjectArchitecture(ABC):
    """What every family's architecture offers (frozen dataclasses in practice)."""

    family: str

    @abstractmethod
    def layout(self) -> list[LayoutEntry]:
        """Every parameter tensor's name, shape and offset in the flat weight vector."""

    @property
    def n_params(self) -> int:
        last = self.layout()[-1]
        return last.offset + last.size

    @abstractmethod
    def to_dict(self) -> dict:
        """A JSON-able mapping that ``from_dict`` reads back; it names the family."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict) -> SubjectArchitecture: ...

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable label, e.g. ``mlp 32x32 relu``."""

    def to_json(self) -> str:
        """The record's ``architecture`` value: compact JSON, keys in ``to_dict`` order."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True)
class SubjectJob:
    """One model to train, of any family: its architecture, seeds, learning rate and its own data.

    Tokens are ``[samples, seq_len]`` ids; labels are the task's targets per sample.
    ``init`` (flat weights) starts the model from trained weights instead of its seed.
    """

    architecture: SubjectArchitecture
    init_seed: int
    order_seed: int
    lr: float
    train_tokens: np.ndarray
    train_labels: np.ndarray
    val_tokens: np.ndarray
    val_labels: np.ndarray
    init: np.ndarray | None = field(default=None, compare=False)


class Family(ABC):
    """One subject family: its config space, architecture, modules and batched population.

    Population methods take whatever population object ``train`` returned; the rest of
    zoo never looks inside it.
    """

    name: ClassVar[str]
    space: ClassVar[type[Strict]]
    architecture: ClassVar[type[SubjectArchitecture]]

    # ---- architectures and single models
    @abstractmethod
    def sample(self, space: Any, vocab_size: int, seq_len: int, rng: np.random.Generator) -> SubjectArchitecture:
        """Draw an architecture from ``space``; all randomness from ``rng``."""

    @abstractmethod
    def init_weights(self, architecture: Any, seed: int) -> np.ndarray:
        """Flat float32 initial weights, a pure function of the seed."""

    @abstractmethod
    def build_module(self, architecture: Any, weights: np.ndarray) -> nn.Module:
        """A standard ``nn.Module`` holding ``weights`` (laid out as ``architecture.layout()``).

        Besides ``forward``, it offers ``activations(tokens) -> {hookpoint: [batch, width]}``
        with the names and widths of ``hookpoints``.
        """

    @abstractmethod
    def hookpoints(self, architecture: Any) -> dict[str, int]:
        """Named activation sites and their widths, in forward order."""

    @abstractmethod
    def signature_sites(self, architecture: Any) -> list[SignatureSite]:
        """The neurons of a signature, in row order."""

    def neuron_layers(self, architecture: Any) -> np.ndarray:
        """``[n_neurons]`` int16: each signature row's layer."""
        return np.concatenate(
            [np.full(s.width, s.layer, dtype=np.int16) for s in self.signature_sites(architecture)]
        )

    def neuron_kinds(self, architecture: Any) -> list[str]:
        """``[n_neurons]``: each signature row's family-independent kind."""
        return [s.kind for s in self.signature_sites(architecture) for _ in range(s.width)]

    # ---- populations: many models as one computation
    @abstractmethod
    def train(self, jobs: list, config: Any, device: torch.device, epochs: int | None = None) -> list:
        """Train every job; returns groups with ``indices``, ``population`` and ``result.epochs``."""

    @abstractmethod
    def population(self, architectures: list, weights: list[np.ndarray], device: torch.device | str = "cpu") -> Any:
        """Existing models as one population (what ``train`` returns, without training): ``weights`` are flat,
        laid out as each architecture says. The models must share a ``population_key``."""

    @abstractmethod
    def population_key(self, architecture: Any) -> tuple:
        """Models with equal keys can share one population (e.g. one input size, one feed-forward kind)."""

    @abstractmethod
    def logits(self, population: Any, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [N, B, L]`` (each model its own inputs) -> ``[N, B]`` logits."""

    @abstractmethod
    def activations(self, population: Any, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """``tokens [N, B, L]`` -> every hookpoint's ``[N, B, width]`` (padded to the widest model)."""

    @abstractmethod
    def quantize_(self, population: Any, scheme: str) -> None:
        """Round the population's weights in place (``none`` leaves them)."""

    @abstractmethod
    def weights(self, population: Any) -> list[np.ndarray]:
        """Each model's flat float32 weights, laid out as its architecture says."""
