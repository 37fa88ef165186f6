"""Activations of subject models at their probe points, many models in one batched forward pass.

A model's **probe points** are numbered layers, each reading one hookpoint (``Family.hookpoints``)
at its true width, in forward order:

- MLP: layer 0 is the one-hot input (``input``: what a probe can read for free), layer
  ``l >= 1`` is hidden layer ``l`` (``layers.{l-1}.post`` or ``.pre``, by ``site``);
- transformer (every hookpoint read at the last position): layer 0 is ``embed``, then per
  block ``blocks.{i}.ffn.post`` (or ``.pre``, by ``site``: the feed-forward's hidden units)
  and ``blocks.{i}.resid`` (the residual stream after the block).

These are the points probed by default; ``head`` (the logit) comes last and is probed only
when asked for by name. Layers are asked for by number (the default points) or by hookpoint
name (``resolve_layers``).

Models are grouped by family, number of sequences and ``Family.population_key``; each
group runs as one population (``Family.population``, read through ``Family.activations``),
each model on its own sequences, in chunks of sequences. Large sets can be streamed to
Parquet and read back (``cache_activations``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.atomic import atomic_path
from zoo.subjects.families import SubjectArchitecture, get_family

Site = Literal["post", "pre"]
Layer = int | str
INPUT = "input"  # the MLP's one-hot input: no family hookpoint, the tokens themselves
PROBED_FAMILIES = ("mlp", "transformer")
_META = b"zoo.probe.activations"


@dataclass(frozen=True)
class ProbePoint:
    """One numbered probe layer of a model: the hookpoint it reads and that hookpoint's width."""

    layer: int
    hookpoint: str
    width: int
    site: str  # the checkpoints' "site": post / pre for a site-dependent point, else input / embed / resid / head
    default: bool = True  # probed when no layers are asked for
    shared: bool = False  # the same for every model on the same sequences, whatever the weights (the one-hot input)


def _site(hookpoint: str, site: str) -> str:
    if hookpoint.endswith((".pre", ".post")):
        return site
    return hookpoint.rsplit(".", 1)[-1]


def probe_points(architecture: SubjectArchitecture, site: Site = "post") -> list[ProbePoint]:
    """Every point a probe can read in this model, numbered in forward order (``head`` last, not a default)."""
    family = architecture.family
    widths = get_family(family).hookpoints(architecture)
    if family == "mlp":
        names = [f"layers.{i}.{site}" for i in range(architecture.n_layers)]
        points = [ProbePoint(0, INPUT, architecture.in_features, INPUT, shared=True)]
    elif family == "transformer":
        names = ["embed"]
        for i in range(architecture.n_layers):
            names += [f"blocks.{i}.ffn.{site}", f"blocks.{i}.resid"]
        points = []
    else:
        raise ValueError(f"zoo probe reads {' and '.join(PROBED_FAMILIES)} subjects, not {family!r} ones")
    for name in names:
        points.append(ProbePoint(len(points), name, widths[name], _site(name, site)))
    points.append(ProbePoint(len(points), "head", widths["head"], "head", default=False))
    return points


def default_layers(architecture: SubjectArchitecture, include_input: bool = True, site: Site = "post") -> list[int]:
    """The layers probed when none are asked for: 0 (input or embedding) unless left out, and every hidden point."""
    return [p.layer for p in probe_points(architecture, site) if p.default and (include_input or p.layer > 0)]


def resolve_layers(architecture: SubjectArchitecture, layers: Sequence[Layer], site: Site = "post") -> list[int]:
    """Layer numbers (of the default points) and hookpoint names as sorted layer numbers.

    An unknown one is a ``ValueError`` in one line naming what the model has.
    """
    points = probe_points(architecture, site)
    by_name = {p.hookpoint: p.layer for p in points}
    numbered = [p.layer for p in points if p.default]
    out = set()
    for layer in layers:
        if isinstance(layer, str) and not layer.strip().lstrip("-").isdigit():
            if layer not in by_name:
                raise ValueError(
                    f"unknown hookpoint {layer!r}: {architecture.describe()} (site {site}) has {', '.join(by_name)}"
                )
            out.add(by_name[layer])
        else:
            if int(layer) not in numbered:
                raise ValueError(
                    f"unknown layer {int(layer)}: {architecture.describe()} has layers 0 ({points[0].hookpoint}) to "
                    f"{numbered[-1]} (or name a hookpoint: {', '.join(by_name)})"
                )
            out.add(int(layer))
    return sorted(out)


def has_layer(architecture: SubjectArchitecture, layer: Layer, site: Site = "post") -> bool:
    try:
        resolve_layers(architecture, [layer], site)
    except ValueError:
        return False
    return True


def layer_names(architecture: SubjectArchitecture, include_input: bool = True, site: Site = "post") -> list[int]:
    """The layers a model offers to probes by default (see ``default_layers``)."""
    return default_layers(architecture, include_input, site)


def layer_width(architecture: SubjectArchitecture, layer: int, site: Site = "post") -> int:
    return probe_points(architecture, site)[layer].width


def one_hot(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[B, L]`` ids -> ``[B, L * vocab]`` float32 one-hot, position-major (the MLP's input features)."""
    tokens = tokens.long()
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got {int(tokens.min())}..{int(tokens.max())}")
    return torch.nn.functional.one_hot(tokens, vocab_size).reshape(tokens.shape[0], -1).float()


def collect_layers(
    architectures: Sequence[SubjectArchitecture],
    weights: Sequence[np.ndarray],
    tokens: Sequence[np.ndarray],
    layers: Sequence[Sequence[int]],
    site: Site = "post",
    chunk: int = 8192,
    device: torch.device | str = "cpu",
) -> list[dict[int, np.ndarray]]:
    """For every model, ``{layer: [N, width]}`` for the layers asked (numbers) on that model's own ``tokens``.

    Models of one family with the same number of sequences and ``population_key`` run together
    as one population, in the order given.
    """
    if not (len(architectures) == len(weights) == len(tokens) == len(layers)):
        raise ValueError("architectures, weights, tokens and layers must be parallel lists")
    out: list[dict[int, np.ndarray] | None] = [None] * len(architectures)
    groups: dict[tuple, list[int]] = {}
    for i, (arch, t) in enumerate(zip(architectures, tokens)):
        family = get_family(arch.family)
        groups.setdefault((arch.family, len(t), family.population_key(arch)), []).append(i)
    device = torch.device(device)
    for (name, n, _), members in groups.items():
        family = get_family(name)
        archs = [architectures[i] for i in members]
        wanted = []
        for i in members:
            points = probe_points(architectures[i], site)
            wanted.append([points[layer] for layer in layers[i]])
        parts: list[dict[int, list[np.ndarray]]] = [{p.layer: [] for p in w} for w in wanted]
        if n == 0:
            for slot, i in enumerate(members):
                out[i] = {p.layer: np.zeros((0, p.width), dtype=np.float32) for p in wanted[slot]}
            continue
        pop = family.population(archs, [np.asarray(weights[i], dtype=np.float32) for i in members], device)
        stacked = torch.as_tensor(np.stack([np.asarray(tokens[i], dtype=np.int64) for i in members]), device=device)
        needs_family = any(not p.shared for w in wanted for p in w)
        with torch.no_grad():
            for start in range(0, n, chunk):
                batch = stacked[:, start : start + chunk]
                acts = family.activations(pop, batch) if needs_family else {}
                for slot, arch in enumerate(archs):
                    for point in wanted[slot]:
                        if point.hookpoint == INPUT:
                            value = one_hot(batch[slot], arch.vocab_size)
                        else:
                            value = acts[point.hookpoint][slot, :, : point.width]
                        parts[slot][point.layer].append(value.cpu().numpy())
        for slot, i in enumerate(members):
            out[i] = {l: np.ascontiguousarray(np.concatenate(p), dtype=np.float32) for l, p in parts[slot].items()}
    return out  # type: ignore[return-value]


def collect(
    architectures: Sequence[SubjectArchitecture],
    weights: Sequence[np.ndarray],
    tokens: Sequence[np.ndarray],
    site: Site = "post",
    chunk: int = 8192,
    device: torch.device | str = "cpu",
) -> list[list[np.ndarray]]:
    """For every model, its default layers' activations ``[layer 0 [N, w0], layer 1 [N, w1], ...]``
    (for an MLP: ``[input, hidden layer 1, ...]``) on that model's own ``tokens``."""
    layers = [default_layers(a, True, site) for a in architectures]
    acts = collect_layers(architectures, weights, tokens, layers, site, chunk, device)
    return [[a[l] for l in ls] for a, ls in zip(acts, layers)]


def model_activations(
    architecture: SubjectArchitecture, weights: np.ndarray, tokens: np.ndarray, site: Site = "post", chunk: int = 8192
) -> list[np.ndarray]:
    """One model's default layers' activations (see ``collect``)."""
    return collect([architecture], [weights], [tokens], site, chunk)[0]


def cache_activations(
    path: str | Path,
    architecture: SubjectArchitecture,
    weights: np.ndarray,
    tokens: np.ndarray,
    labels: np.ndarray,
    key: dict,
    site: Site = "post",
    chunk: int = 8192,
) -> Path:
    """Stream one model's activations to Parquet, a row group per chunk; reuse the file if ``key`` matches.

    Columns: ``label`` and ``layer_<l>`` (``fixed_size_list<float32>[width]``) for every default
    layer; each layer column's field metadata names its ``hookpoint``.
    """
    path = Path(path)
    meta = json.dumps({**key, "site": site, "rows": int(len(tokens))}, sort_keys=True).encode()
    if path.is_file():
        stored = (pq.read_schema(path).metadata or {}).get(_META)
        if stored == meta:
            return path
    points = [p for p in probe_points(architecture, site) if p.default]
    schema = pa.schema(
        [pa.field("label", pa.int16())]
        + [
            pa.field(f"layer_{p.layer}", pa.list_(pa.float32(), p.width), metadata={b"hookpoint": p.hookpoint.encode()})
            for p in points
        ],
        metadata={_META: meta},
    )
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for start in range(0, len(tokens), chunk):
            acts = model_activations(architecture, weights, tokens[start : start + chunk], site, chunk)
            columns = [pa.array(np.asarray(labels[start : start + chunk], dtype=np.int16))]
            for values in acts:
                flat = pa.array(values.ravel(), type=pa.float32())
                columns.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    return path


def read_activations(path: str | Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(labels [N], [layer 0, layer 1, ...])`` from a file ``cache_activations`` wrote."""
    table = pq.read_table(path)
    labels = table.column("label").to_numpy().astype(np.int64)
    layers = sorted(int(n.split("_")[1]) for n in table.column_names if n.startswith("layer_"))
    acts = []
    for layer in layers:
        column = table.column(f"layer_{layer}").combine_chunks()
        acts.append(column.values.to_numpy().reshape(len(column), -1).astype(np.float32))
    return labels, acts


def read_hookpoints(path: str | Path) -> dict[int, str]:
    """``{layer: hookpoint}`` of a file ``cache_activations`` wrote."""
    schema = pq.read_schema(path)
    out = {}
    for field in schema:
        if field.name.startswith("layer_"):
            out[int(field.name.split("_")[1])] = (field.metadata or {}).get(b"hookpoint", b"").decode()
    return out
