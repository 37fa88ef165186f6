"""Sparse autoencoders and transcoders, trained as populations, and scored against ground truth.

- ``train_population(streams, specs, config)``: many SAEs / transcoders in one batched
  computation (stacked ``[S, d, m]`` weights), early stopping on held-out streams.
- ``save_population(result, out)`` / ``load_coder(path)``: sparsify's layout
  (``cfg.json`` + ``sae.safetensors``) and an ``nn.Module`` with ``encode``/``decode``.
- ``zoo.readers.sae.metrics``: FVU, L0, dead fraction, cross-seed overlap, matching.
- ``zoo.readers.sae.synthetic``: a planted dictionary (known sparse features in superposition).
- ``zoo.readers.sae.autointerp``: AUROC and best-threshold F1 of every latent against every
  known binary feature.
- ``python -m zoo.readers.sae.bench``: the population against a per-SAE loop.
- On a zoo: ``corpus.Corpus`` (token sequences with ground-truth labels), ``subjects.collect_streams``
  (activations at hookpoints, one stream per subject and hookpoint), ``splice.spliced_metrics``
  (CE loss recovered), ``run.train_run`` / ``run.open_run`` (the run folder of ``zoo sae train``).

Names are imported lazily so that importing the package does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SAEError": "spec",
    "SAESpec": "spec",
    "Stream": "spec",
    "TrainConfig": "spec",
    "SparseCoder": "module",
    "train_population": "train",
    "PopulationResult": "train",
    "save_population": "store",
    "save_coder": "store",
    "load_coder": "store",
    "load_population": "store",
    "Corpus": "corpus",
    "collect_streams": "subjects",
    "spliced_metrics": "splice",
    "train_run": "run",
    "open_run": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
