"""Records back into models: arrays and a layout in, an ``nn.Module`` out, no pickle."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import nn

from zoo.subjects.families import architecture_of, family_of


def load_model(row: dict, which: Literal["clean", "degraded"] = "clean") -> nn.Module:
    """Rebuild the clean or degraded model of a record (a dict as ``Table.to_pylist()`` gives it).

    The record's family builds the module; an MLP maps a ``[batch, seq_len]`` long tensor
    of token ids (0 = A) to ``[batch]`` logits. Records of every schema version load.
    """
    if which not in ("clean", "degraded"):
        raise ValueError(f"which must be 'clean' or 'degraded', not {which!r}")
    architecture = architecture_of(row["architecture"])
    weights = np.asarray(row["weights" if "weights" in row else f"{which}_weights"], dtype=np.float32)  # language: one model
    return family_of(architecture).build_module(architecture, weights)
