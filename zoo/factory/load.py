"""Records back into models: arrays and a layout in, an ``nn.Module`` out, no pickle."""

from __future__ import annotations

from typing import Literal

from zoo.subjects.architecture import Architecture
from zoo.subjects.mlp import SubjectMLP, build_model


def load_model(row: dict, which: Literal["clean", "degraded"] = "clean") -> SubjectMLP:
    """Rebuild the clean or degraded model of a record (a dict as ``Table.to_pylist()`` gives it).

    The model maps a ``[batch, seq_len]`` long tensor of token ids (0 = A) to ``[batch]`` logits.
    """
    if which not in ("clean", "degraded"):
        raise ValueError(f"which must be 'clean' or 'degraded', not {which!r}")
    architecture = Architecture.from_dict(row["architecture"])
    return build_model(architecture, row[f"{which}_weights"])
