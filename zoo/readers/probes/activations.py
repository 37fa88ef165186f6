"""Activations of subject models at every layer, many models in one batched forward pass.

Layer 0 is the one-hot input (what a probe can read for free); layer ``l >= 1`` is
hidden layer ``l``, before (``pre``) or after (``post``) its activation function.
Models are run as a ``Population`` (padded to the widest and deepest), each on its
own sequences, in chunks of sequences; each model's layers come back at their true
widths. Large sets can be streamed to Parquet and read back (``cache_activations``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.atomic import atomic_path
from zoo.subjects.families.mlp import Architecture
from zoo.subjects.population import forward, from_weights, one_hot_inputs

Site = Literal["post", "pre"]
_META = b"zoo.probe.activations"


def layer_names(architecture: Architecture, include_input: bool = True) -> list[int]:
    """The layers a model offers to probes: 0 (input) and 1..n_layers."""
    return list(range(0 if include_input else 1, architecture.n_layers + 1))


def layer_width(architecture: Architecture, layer: int) -> int:
    return architecture.in_features if layer == 0 else architecture.widths[layer - 1]


def collect(
    architectures: Sequence[Architecture],
    weights: Sequence[np.ndarray],
    tokens: Sequence[np.ndarray],
    site: Site = "post",
    chunk: int = 8192,
    device: torch.device | str = "cpu",
) -> list[list[np.ndarray]]:
    """For every model, ``[input [N, in], layer 1 [N, w1], ...]`` on that model's own ``tokens``.

    Models with the same number of sequences run together as one population.
    """
    if not (len(architectures) == len(weights) == len(tokens)):
        raise ValueError("architectures, weights and tokens must be parallel lists")
    out: list[list[np.ndarray] | None] = [None] * len(architectures)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (arch, t) in enumerate(zip(architectures, tokens)):
        by_size.setdefault((len(t), arch.in_features), []).append(i)
    for (n, _), members in by_size.items():
        archs = [architectures[i] for i in members]
        pop = from_weights(archs, [np.asarray(weights[i], dtype=np.float32) for i in members], device)
        stacked = torch.as_tensor(np.stack([np.asarray(tokens[i], dtype=np.int64) for i in members]), device=pop.device)
        parts: list[list[list[np.ndarray]]] = [[[] for _ in range(a.n_layers + 1)] for a in archs]
        with torch.no_grad():
            for start in range(0, max(n, 1), chunk):
                x = one_hot_inputs(stacked[:, start : start + chunk], archs[0].vocab_size)
                _, pres, posts = forward(pop, x)
                for slot, arch in enumerate(archs):
                    parts[slot][0].append(x[slot, :, :-1].cpu().numpy())
                    for layer in range(1, arch.n_layers + 1):
                        source = pres[layer - 1] if site == "pre" else posts[layer - 1][..., :-1]
                        parts[slot][layer].append(source[slot, :, : arch.widths[layer - 1]].cpu().numpy())
        for slot, i in enumerate(members):
            out[i] = [np.ascontiguousarray(np.concatenate(p), dtype=np.float32) for p in parts[slot]]
    return out  # type: ignore[return-value]


def model_activations(
    architecture: Architecture, weights: np.ndarray, tokens: np.ndarray, site: Site = "post", chunk: int = 8192
) -> list[np.ndarray]:
    """One model's ``[input, layer 1, ...]`` activations (see ``collect``)."""
    return collect([architecture], [weights], [tokens], site, chunk)[0]


def cache_activations(
    path: str | Path,
    architecture: Architecture,
    weights: np.ndarray,
    tokens: np.ndarray,
    labels: np.ndarray,
    key: dict,
    site: Site = "post",
    chunk: int = 8192,
) -> Path:
    """Stream one model's activations to Parquet, a row group per chunk; reuse the file if ``key`` matches.

    Columns: ``label`` and ``layer_<l>`` (``fixed_size_list<float32>[width]``) for every layer.
    """
    path = Path(path)
    meta = json.dumps({**key, "site": site, "rows": int(len(tokens))}, sort_keys=True).encode()
    if path.is_file():
        stored = (pq.read_schema(path).metadata or {}).get(_META)
        if stored == meta:
            return path
    layers = layer_names(architecture)
    schema = pa.schema(
        [pa.field("label", pa.int16())]
        + [pa.field(f"layer_{l}", pa.list_(pa.float32(), layer_width(architecture, l))) for l in layers],
        metadata={_META: meta},
    )
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for start in range(0, len(tokens), chunk):
            acts = model_activations(architecture, weights, tokens[start : start + chunk], site, chunk)
            columns = [pa.array(np.asarray(labels[start : start + chunk], dtype=np.int16))]
            for layer, values in zip(layers, acts):
                flat = pa.array(values.ravel(), type=pa.float32())
                columns.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    return path


def read_activations(path: str | Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(labels [N], [input, layer 1, ...])`` from a file ``cache_activations`` wrote."""
    table = pq.read_table(path)
    labels = table.column("label").to_numpy().astype(np.int64)
    layers = sorted(int(n.split("_")[1]) for n in table.column_names if n.startswith("layer_"))
    acts = []
    for layer in layers:
        column = table.column(f"layer_{layer}").combine_chunks()
        acts.append(column.values.to_numpy().reshape(len(column), -1).astype(np.float32))
    return labels, acts
