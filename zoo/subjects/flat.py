"""Flat float32 weight vectors to and from a family's ``nn.Module``, by the architecture's layout (no pickle)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def load_flat(model: nn.Module, architecture, weights: np.ndarray | torch.Tensor) -> nn.Module:
    """``model`` (built for ``architecture``) holding ``weights``, laid out as ``architecture.layout()``."""
    flat = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    if flat.numel() != architecture.n_params:
        raise ValueError(
            f"weights hold {flat.numel()} values but {architecture.describe()} needs {architecture.n_params}"
        )
    model.load_state_dict({e.name: flat[e.offset : e.offset + e.size].view(e.shape).clone() for e in architecture.layout()})
    return model


def flatten(model: nn.Module) -> np.ndarray:
    """The inverse of ``load_flat``: the module's parameters as one float32 vector."""
    state = model.state_dict()
    return np.concatenate(
        [state[e.name].detach().cpu().numpy().ravel() for e in model.architecture.layout()]
    ).astype(np.float32)
