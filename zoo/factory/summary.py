"""What a zoo folder holds, in numbers: for ``zoo inspect`` and the dataset card.

Only small columns are read (ids, patterns, architecture, metrics), never weights
or signatures, so a 100k-record zoo summarizes in about a second.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from zoo.languages.config import describe_language, parse_language
from zoo.subjects.families import architecture_of
from zoo.factory.manifest import read_manifest, read_zoo_info
from zoo.factory.reader import read_records

_COLUMNS = ["batch_id", "family", "architecture", "patterns", "corrupted_pattern", "quantization", "metrics"]
WIDTH_BUCKET = 8


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "min": None, "p50": None, "max": None}
    return {
        "mean": float(values.mean()),
        "min": float(values.min()),
        "p50": float(np.median(values)),
        "max": float(values.max()),
    }


def _counts(array: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Value counts, most frequent first (ties by name)."""
    return _ranked({str(item["values"]): int(item["counts"]) for item in pc.value_counts(array).to_pylist()})


def _ranked(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])))


def _width_bucket(width: int) -> str:
    low = (width - 1) // WIDTH_BUCKET * WIDTH_BUCKET + 1
    return f"{low}-{low + WIDTH_BUCKET - 1}"


def _architectures(architecture: pa.ChunkedArray) -> dict[str, dict[str, int]]:
    """Separate histograms per record: family, and where the family has them, depth, activation and
    hidden widths in buckets (one count per layer)."""
    archs = [architecture_of(value).to_dict() for value in architecture.to_pylist()]
    buckets = Counter(_width_bucket(int(w)) for arch in archs for w in arch.get("widths", ()))
    return {
        "family": _ranked(Counter(str(a["family"]) for a in archs)),
        "n_layers": _ranked(Counter(str(a["n_layers"]) for a in archs if "n_layers" in a)),
        "activation": _ranked(Counter(str(a["activation"]) for a in archs if "activation" in a)),
        "width": dict(sorted(buckets.items(), key=lambda item: int(item[0].split("-")[0]))),
    }


def _metric(metrics: pa.ChunkedArray, name: str) -> np.ndarray:
    struct = metrics.combine_chunks() if metrics.num_chunks else pa.array([], metrics.type)
    return struct.field(name).to_numpy(zero_copy_only=False).astype(np.float64)


def summarize(out_dir: str | Path) -> dict:
    """Counts and distributions of a zoo folder (JSON-serializable).

    ``bytes_per_model`` divides the shards' disk bytes by the number of distinct
    models stored: one degraded model per row plus one clean model per batch
    with rows (the clean model's weights repeat in each of its batch's rows).
    """
    entries = read_manifest(out_dir)
    if read_zoo_info(out_dir).schema_version == 3:
        return summarize_language(out_dir, entries)
    table = read_records(out_dir, columns=_COLUMNS)
    batch_ids = pc.unique(table.column("batch_id"))
    disk_bytes = sum(int(entry["bytes"]) for entry in entries)
    models = table.num_rows + len(batch_ids)
    return {
        "rows": table.num_rows,
        "batches": len({int(b) for entry in entries for b in entry["batches"]}),
        "batches_with_rows": len(batch_ids),
        "shards": len(entries),
        "bytes": disk_bytes,
        "models": models,
        "bytes_per_model": disk_bytes / models if models else None,
        "patterns": _counts(pc.list_flatten(table.column("patterns"))),
        "corrupted": _counts(table.column("corrupted_pattern")),
        "degradation": _stats(_metric(table.column("metrics"), "degradation")),
        "clean_accuracy": _stats(_metric(table.column("metrics"), "clean_accuracy")),
        "degraded_accuracy": _stats(_metric(table.column("metrics"), "degraded_accuracy")),
        "architectures": _architectures(table.column("architecture")),
        "quantization": _counts(table.column("quantization")),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _overview(summary: dict) -> Table:
    table = Table(title="zoo", show_header=False)
    table.add_column("what", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    for key in ("rows", "batches", "batches_with_rows", "shards", "models"):
        table.add_row(key.replace("_", " "), f"{summary[key]:,}")
    table.add_row("bytes", f"{summary['bytes'] / 1e6:,.1f} MB")
    per_model = summary["bytes_per_model"]
    table.add_row("bytes per model", "-" if per_model is None else f"{per_model:,.0f}")
    return table


def _metrics_table(summary: dict) -> Table:
    table = Table(title="metrics")
    table.add_column("metric", overflow="fold")
    for stat in ("mean", "min", "p50", "max"):
        table.add_column(stat, justify="right", overflow="fold")
    for key in ("degradation", "clean_accuracy", "degraded_accuracy"):
        stats = summary[key]
        table.add_row(key.replace("_", " "), *(_fmt(stats[s]) for s in ("mean", "min", "p50", "max")))
    return table


def _patterns_table(summary: dict) -> Table:
    table = Table(title="patterns")
    table.add_column("pattern", overflow="fold")
    table.add_column("records with it", justify="right", overflow="fold")
    table.add_column("corrupted in", justify="right", overflow="fold")
    in_set, corrupted = summary["patterns"], summary["corrupted"]
    for name in sorted({*in_set, *corrupted}, key=lambda n: (-in_set.get(n, 0), n)):
        table.add_row(name, f"{in_set.get(name, 0):,}", f"{corrupted.get(name, 0):,}")
    return table


def _histograms_table(title: str, histograms: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title)
    table.add_column("feature", overflow="fold")
    table.add_column("value", overflow="fold")
    table.add_column("count", justify="right", overflow="fold")
    for feature, counts in histograms.items():
        for i, (value, count) in enumerate(counts.items()):
            label = feature.replace("_", " ") if i == 0 else ""
            table.add_row(label, str(value), f"{count:,}", end_section=i == len(counts) - 1)
    return table


LANGUAGE_METRICS = ("val_loss", "legal_accuracy", "validity", "length_tv")


def summarize_language(out_dir: str | Path, entries: list[dict]) -> dict:
    """A language zoo's counts and, per (grammar, feed-forward kind), the mean of each language metric
    and the lowest validity; a grammar is named with the parameters it does not share with its
    defaults (``describe_language``: ``dyck p_nest=0.3``, ``expr postfix``)."""
    table = read_records(out_dir, columns=["batch_id", "grammar_config", "architecture", "quantization", "metrics"])
    archs = [architecture_of(v) for v in table.column("architecture").to_pylist()]
    grammars = [describe_language(parse_language(json.loads(v))) for v in table.column("grammar_config").to_pylist()]
    metrics = {name: _metric(table.column("metrics"), name) for name in LANGUAGE_METRICS}
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (grammar, arch) in enumerate(zip(grammars, archs)):
        groups.setdefault((grammar, arch.ffn), []).append(i)
    per_group = []
    for (grammar, ffn), rows in sorted(groups.items()):
        entry = {"grammar": grammar, "ffn": ffn, "models": len(rows)}
        entry.update({name: float(metrics[name][rows].mean()) for name in LANGUAGE_METRICS})
        entry["validity_min"] = float(metrics["validity"][rows].min())
        per_group.append(entry)
    disk_bytes = sum(int(entry["bytes"]) for entry in entries)
    return {
        "task": "language",
        "rows": table.num_rows,
        "batches": len({int(b) for entry in entries for b in entry["batches"]}),
        "batches_with_rows": len(pc.unique(table.column("batch_id"))),
        "shards": len(entries),
        "bytes": disk_bytes,
        "models": table.num_rows,
        "bytes_per_model": disk_bytes / table.num_rows if table.num_rows else None,
        "languages": per_group,
        "architectures": {
            "n_layers": _ranked(Counter(str(a.n_layers) for a in archs)),
            "d_model": _ranked(Counter(str(a.d_model) for a in archs)),
            "ffn": _ranked(Counter(a.ffn for a in archs)),
        },
        "quantization": _counts(table.column("quantization")),
    }


def _languages_table(summary: dict) -> Table:
    table = Table(title="language models (means per grammar and feed-forward kind)")
    for name, justify in (("grammar", "left"), ("ffn", "left"), ("models", "right"), ("loss", "right"),
                          ("legal", "right"), ("valid", "right"), ("min", "right"), ("len TV", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # fmt: skip
    for g in summary["languages"]:
        table.add_row(
            g["grammar"], g["ffn"], f"{g['models']:,}", _fmt(g["val_loss"]), _fmt(g["legal_accuracy"]),
            _fmt(g["validity"]), _fmt(g["validity_min"]), _fmt(g["length_tv"]),
        )  # fmt: skip
    return table


def render_summary(summary: dict, console: Console) -> None:
    """Print the summary as rich tables."""
    console.print(_overview(summary))
    if summary.get("task") == "language":
        console.print(_languages_table(summary))
        console.print(_histograms_table("architecture", {**summary["architectures"], "quantization": summary["quantization"]}))
        return
    console.print(_metrics_table(summary))
    console.print(_patterns_table(summary))
    histograms = {**summary["architectures"], "quantization": summary["quantization"]}
    histograms["hidden width (per layer)"] = histograms.pop("width")
    console.print(_histograms_table("architecture", histograms))
