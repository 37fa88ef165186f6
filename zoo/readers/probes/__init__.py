"""Reading probes: per-layer linear probes of subject models (MLPs and transformers, each layer a named
hookpoint), with controls, reports and a Tune sweep.

- ``probe_row(data_dir, row, out, config)``: one record's model, every layer; checkpoints and a report.
- ``probe_zoo(data_dir, out, config, workers=...)``: every model of a zoo, summarized.
- ``probe_models(specs, config)``: any models (``ModelSpec``) on any labelled sequences.
- ``tune_probes(data_dir, tune_config)``: a Ray Tune (ASHA) sweep of the recipe.
- ``probe_language_zoo(data_dir, out, config)``: a language zoo's models, per token, for every grammar state.
- ``load_probe(path)``: a checkpoint back, ``.predict(activations)``.

Names are imported lazily so that ``zoo`` commands start without loading torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ProbeConfig": "config",
    "ProbeTuneConfig": "config",
    "load_probe_config": "config",
    "ProbeError": "data",
    "LabelledData": "data",
    "open_zoo": "data",
    "collect": "activations",
    "collect_layers": "activations",
    "probe_points": "activations",
    "resolve_layers": "activations",
    "model_activations": "activations",
    "cache_activations": "activations",
    "read_activations": "activations",
    "train_probes": "train",
    "FeatureSet": "train",
    "ProbeWeights": "train",
    "ModelSpec": "probe",
    "ModelProbes": "probe",
    "probe_model": "probe",
    "probe_models": "probe",
    "load_probe": "checkpoint",
    "save_probe": "checkpoint",
    "write_model_report": "report",
    "probe_row": "zoo_probe",
    "probe_zoo": "zoo_probe",
    "tune_probes": "tune",
    "probe_language_zoo": "language",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
