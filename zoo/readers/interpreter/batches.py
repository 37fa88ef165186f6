"""Examples -> padded neuron-token batches, for subjects of any family.

``collate`` pads examples of different architectures (and families) to one token count:
every neuron of a subject is a token (an MLP's hidden units, then the output logit; a
transformer's feed-forward units and residual stream per block, then the logit), and
``mask`` marks the real ones. The family-agnostic tensors (signature, kind, layer, width)
are filled for every subject; the token-space weights only for families that have them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from zoo.config import ACTIVATIONS
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.neurons import KINDS, has_token_space, in_features
from zoo.readers.interpreter.neurons import layout as neuron_layout
from zoo.readers.interpreter.token_space import Weights, to_tokens, token_map

if TYPE_CHECKING:
    from zoo.readers.interpreter.data import Example


@dataclass
class Batch:
    """Padded tensors of a list of examples (``B`` models, ``N`` tokens at most), of any families.

    The family-agnostic part (signature, mask, kind, layer, width, targets) is there for every
    subject; ``degraded``/``clean`` are the token-space weights, real only where ``token_space``
    (all zero for a family without one); ``site_values`` are the probe values of subjects without
    a token space (their neurons' values cannot be computed from token-space weights), None when
    every subject has one.
    """

    signature: torch.Tensor  # [B, N, S]
    mask: torch.Tensor  # [B, N] bool: a real neuron
    layer: torch.Tensor  # [B, N] long, -1 on padding
    n_layers: torch.Tensor  # [B] long
    fan_in: torch.Tensor  # [B, N] float (1 on padding)
    width: torch.Tensor  # [B, N] float (1 on padding)
    activation: torch.Tensor  # [B] long, index into zoo.config.ACTIVATIONS (-1: none, or another family)
    degraded: Weights
    clean: Weights
    targets: torch.Tensor  # [B, V]
    corrupted: torch.Tensor  # [B] long
    accuracy: torch.Tensor  # [B]
    kind: torch.Tensor | None = None  # [B, N] long, index into neurons.KINDS (0 on padding)
    token_space: torch.Tensor | None = None  # [B] bool: the subject's family has the token-space reader
    site_values: torch.Tensor | None = None  # [B, R, N] probe values of subjects without a token space (0 elsewhere)

    def to(self, device: torch.device) -> Batch:
        return Batch(**{name: None if value is None else value.to(device) for name, value in self.__dict__.items()})

    @property
    def reads_weights(self) -> torch.Tensor:
        """``[B]`` bool: the token-space reader and the weight decoder apply (all True for an MLP zoo)."""
        return torch.ones_like(self.n_layers, dtype=torch.bool) if self.token_space is None else self.token_space

    @property
    def weight_mask(self) -> torch.Tensor:
        """``[B, N]`` bool: real neurons with token-space weights (their biases are weights)."""
        return self.mask & self.reads_weights[:, None]

    @property
    def edges(self) -> torch.Tensor:
        """``[B, N, N]`` bool: ``j`` sits one layer above ``i`` (both real), i.e. a weight of ``adj``."""
        real = self.weight_mask[:, :, None] & self.weight_mask[:, None, :]
        return real & (self.layer[:, :, None] == self.layer[:, None, :] + 1)

    @property
    def first(self) -> torch.Tensor:
        """``[B, N]`` bool: the first hidden layer, whose inputs are the one-hot features."""
        return self.weight_mask & (self.layer == 0)

    @property
    def output(self) -> torch.Tensor:
        return self.mask & (self.layer == self.n_layers[:, None])

    @property
    def n_weights(self) -> torch.Tensor:
        """``[B]``: each subject's real weights (first-layer inputs, edges and biases; 0 without a token space)."""
        return self.first.sum(-1) * self.degraded.w_in.shape[-1] + self.edges.sum((1, 2)) + self.weight_mask.sum(-1)


def _neurons(architecture) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(kind, layer, fan_in, width)`` per token: the token map's for a token-space family, else its sites'."""
    if has_token_space(architecture):
        m = token_map(architecture)
        kind = np.where(m.layer == architecture.n_layers, KINDS.index("output"), KINDS.index("hidden"))
        return kind, m.layer, m.fan_in, m.width
    kind, layer, width = neuron_layout(architecture)
    return kind, layer, np.ones(len(kind), dtype=np.float32), width


def collate(examples: Sequence[Example]) -> Batch:
    if not examples:
        raise ValueError("collate needs at least one example")
    layouts = [_neurons(e.architecture) for e in examples]
    n = max(len(k) for k, *_ in layouts)
    b, s = len(examples), examples[0].signature.shape[1]
    features = in_features(examples[0].architecture)
    signature = np.zeros((b, n, s), dtype=np.float32)
    mask = np.zeros((b, n), dtype=bool)
    kind = np.zeros((b, n), dtype=np.int64)
    layer = np.full((b, n), -1, dtype=np.int64)
    fan_in = np.ones((b, n), dtype=np.float32)
    width = np.ones((b, n), dtype=np.float32)
    for k, (e, (kinds, layers, fans, widths)) in enumerate(zip(examples, layouts)):
        t = len(kinds)
        if e.signature.shape[0] != t:
            raise InterpreterError(f"record {e.example_id}: {e.signature.shape[0]} signature rows for {t} neurons")
        signature[k, :t], mask[k, :t], kind[k, :t], layer[k, :t], fan_in[k, :t], width[k, :t] = e.signature, True, kinds, layers, fans, widths
    token_space = [has_token_space(e.architecture) for e in examples]
    activation = [ACTIVATIONS.index(a) if (a := getattr(e.architecture, "activation", None)) in ACTIVATIONS else -1 for e in examples]
    return Batch(
        signature=torch.from_numpy(signature),
        mask=torch.from_numpy(mask),
        layer=torch.from_numpy(layer),
        n_layers=torch.tensor([e.architecture.n_layers for e in examples]),
        fan_in=torch.from_numpy(fan_in),
        width=torch.from_numpy(width),
        activation=torch.tensor(activation),
        degraded=to_tokens([(e.architecture, e.degraded) for e in examples], n, features),
        clean=to_tokens([(e.architecture, e.clean) for e in examples], n, features),
        targets=torch.from_numpy(np.stack([e.targets for e in examples])),
        corrupted=torch.tensor([e.corrupted for e in examples]),
        accuracy=torch.tensor([e.accuracy for e in examples], dtype=torch.float32),
        kind=torch.from_numpy(kind),
        token_space=torch.tensor(token_space),
        site_values=None if all(token_space) else _site_values(examples, n),
    )


def _site_values(examples: Sequence[Example], n: int) -> torch.Tensor:
    """``[B, R, N]``: each subject's stored probe values (zeros for token-space subjects, computed by the model)."""
    stored = [e.site_values for e in examples if e.site_values is not None]
    if not stored:
        raise InterpreterError("records of a family without a token space need their probe values (decode with the probe tokens)")
    out = np.zeros((len(examples), stored[0].shape[0], n), dtype=np.float32)
    for k, e in enumerate(examples):
        if e.site_values is not None:
            out[k, :, : e.site_values.shape[1]] = e.site_values
    return torch.from_numpy(out)
