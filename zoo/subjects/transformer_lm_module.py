"""A language-model transformer subject as a standard ``nn.Module``, rebuilt from flat weights (no pickle).

The pattern module's blocks (``transformer_module``) read at every position, with ``lm_head``
(d -> vocabulary) in place of the one-logit head: token ids ``[batch, T]`` give next-token
logits ``[batch, T, vocab]``. What ``zoo.load_model`` returns for a language-zoo record.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.subjects.families.transformer import Architecture
from zoo.subjects.flat import load_flat
from zoo.subjects.transformer_module import SubjectTransformer


class LanguageModelTransformer(SubjectTransformer):
    """Token ids ``[batch, T]`` (``zoo.languages`` ids: PAD 0, BOS 1, EOS 2) -> logits ``[batch, T, vocab]``."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__(architecture)
        del self.head
        self.lm_head = nn.Linear(architecture.d_model, architecture.vocab_size)

    def _run(self, tokens: torch.Tensor, points: dict | None) -> torch.Tensor:
        x = self.embed(tokens)
        if points is not None:
            points["embed"] = x
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=False, points=points, prefix=f"blocks.{i}")
            if points is not None:
                points[f"blocks.{i}.resid"] = x
        out = self.lm_head(self.ln_f(x))
        if points is not None:
            points["head"] = out
        return out

    def activations(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hookpoint of the family at every position: ``[batch, T, width]``."""
        points: dict[str, torch.Tensor] = {}
        self._run(tokens, points)
        return points


def build_lm(architecture: Architecture, weights: np.ndarray | torch.Tensor) -> LanguageModelTransformer:
    """Rebuild a ``head="next_token"`` model from its architecture and flat weights."""
    if architecture.head != "next_token":
        raise ValueError(f"{architecture.describe()} has a {architecture.head!r} head, not a language-model head")
    return load_flat(LanguageModelTransformer(architecture), architecture, weights)
