"""Probe checkpoints as safetensors: weight ``[d, C]``, bias ``[C]`` and the standardization.

A checkpoint is self-contained: ``load_probe(path).predict(raw_activations)`` gives
the classes (indices into ``metadata["classes"]``, a JSON list) without the
training data. Metadata values are strings (safetensors' rule).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from zoo.atomic import atomic_path
from zoo.readers.probes.data import ProbeError
from zoo.readers.probes.train import ProbeWeights

TENSORS = ("weight", "bias", "mean", "std")


def checkpoint_name(layer: int, final: bool = False) -> str:
    return f"probe_layer_{layer}{'_final' if final else ''}.safetensors"


def save_probe(path: str | Path, probe: ProbeWeights, metadata: dict) -> Path:
    path = Path(path)
    tensors = {name: np.ascontiguousarray(getattr(probe, name), dtype=np.float32) for name in TENSORS}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_probe(path: str | Path) -> tuple[ProbeWeights, dict]:
    """The probe and its metadata (JSON values decoded)."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: no such probe checkpoint")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ProbeError(f"{path}: not a probe checkpoint ({error})") from None
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        raise ProbeError(f"{path}: not a probe checkpoint (lacks {', '.join(missing)})")
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return ProbeWeights(**{name: tensors[name] for name in TENSORS}), meta
