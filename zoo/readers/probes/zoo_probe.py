"""Probing a zoo record, and probing a whole zoo (in-process or spread over Ray actors).

Across the zoo, every batch contributes its clean model (once, with its untrained
twin: the init seed the clean and degraded models share) and the degraded model of
each of its records; a task is a few batches, whose models are probed as one
batched computation. Workers read the shards themselves and send back small
per-model summaries (accuracies per layer and class), never weights.

The summary answers two questions:

- readability: for each pattern (and subject family), the first layer at which a probe
  reads it (its one-vs-rest F1 reaches ``readable_threshold``), input included;
- degradation: for the corrupted pattern of each degraded model, the probe's
  accuracy on that pattern per layer in the clean and the degraded model, beside
  both models' own output accuracy on it. If the degraded model's last hidden layer
  still reads the pattern as well as the clean one while its output fails, the
  information survives inside and is lost at the output.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zoo.readers.probes.activations import PROBED_FAMILIES, cache_activations, has_layer
from zoo.readers.probes.config import ProbeConfig
from zoo.readers.probes.data import LabelledData, ProbeError, Which, ZooRecords, batch_data, open_zoo, row_weights
from zoo.readers.probes.png import Series, line_chart
from zoo.readers.probes.probe import ModelProbes, ModelSpec, probe_model, probe_models
from zoo.readers.probes.report import class_metrics, detection_accuracy, layer_label, write_model_report
from zoo.runtime import torch_threads
from zoo.storage import resolve
from zoo.subjects.families import get_family, require_family

Log = Callable[[str], None]


# ---------------------------------------------------------------- one record


def row_meta(zoo: ZooRecords, row: dict, which: Which, index: int | None = None) -> dict:
    arch = require_family(row["architecture"], PROBED_FAMILIES, "zoo probe")
    name = f"{row['example_id']} ({which})" if which == "degraded" else f"batch {row['batch_id']} (clean)"
    meta = {
        "name": name,
        "data": str(zoo.path),
        "which": which,
        "example_id": row["example_id"],
        "batch_id": int(row["batch_id"]),
        "architecture": arch.describe(),
        "patterns": list(row["patterns"]),
        "corrupted_pattern": row["corrupted_pattern"],
    }
    if index is not None:
        meta["row"] = index
    return meta


def row_spec(
    zoo: ZooRecords, row: dict, which: Which, config: ProbeConfig, index: int | None = None, data: LabelledData | None = None
) -> ModelSpec:
    """A record's clean or degraded model, its batch's labelled sequences and its untrained twin."""
    arch = require_family(row["architecture"], PROBED_FAMILIES, "zoo probe")
    if data is None:
        data = batch_data(
            zoo.config, row["batch_id"], list(config.splits), ambiguous=config.ambiguous, expect=list(row["patterns"])
        )
    twin = get_family(arch.family).init_weights(arch, int(row["init_seed"])) if config.random_twin else None
    return ModelSpec(arch, row_weights(row, which), data, twin, row_meta(zoo, row, which, index))


def zoo_layers(spec: ModelSpec, config: ProbeConfig) -> ModelSpec:
    """Across a zoo, ``config.layers`` means "those of them a model has" (depths and families differ)."""
    if config.layers is not None:
        spec.layers = [l for l in config.layers if has_layer(spec.architecture, l, config.site)]
    return spec


def probe_row(
    data_dir: str | Path, index: int, out: str | Path, config: ProbeConfig, which: Which = "clean"
) -> tuple[ModelProbes, dict]:
    """Probe one record's model and write its report folder; returns the probes and report.json's content."""
    zoo = open_zoo(data_dir)
    row = zoo.row(index)
    spec = row_spec(zoo, row, which, config, index)
    result = probe_model(spec, config)
    return result, write_model_report(out, result, config)


def cache_row_activations(data_dir: str | Path, index: int, path: str | Path, config: ProbeConfig, which: Which = "clean") -> Path:
    """Stream a record's model's activations on its labelled sequences to Parquet (see ``activations``)."""
    zoo = open_zoo(data_dir)
    row = zoo.row(index)
    spec = row_spec(zoo, row, which, config.model_copy(update={"random_twin": False}), index)
    key = {"example_id": row["example_id"], "which": which, "splits": list(config.splits), "ambiguous": config.ambiguous}
    return cache_activations(
        path, spec.architecture, spec.weights, spec.data.tokens, spec.data.labels, key, config.site, config.activation_chunk
    )


# ---------------------------------------------------------------- a task: a few batches


def model_summary(result: ModelProbes) -> dict:
    """What a worker sends back for one model: per layer accuracies, controls and per-class scores."""
    meta = result.spec.meta
    layers = {}
    for layer in result.layers:
        probe = result.trained[layer]
        stats, _ = class_metrics(result.val_labels, probe.val_pred, len(result.classes))
        twin = result.random.get(layer) if result.random is not None else None
        layers[layer] = {
            "hookpoint": result.hookpoint(layer),
            "accuracy": probe.accuracy,
            "control_accuracy": probe.control_accuracy,
            "random_accuracy": twin.accuracy if twin else None,
            "random_control_accuracy": twin.control_accuracy if twin else None,
            "detection_accuracy": detection_accuracy(result, layer),
            "recall": stats[:, 1].tolist(),
            "f1": stats[:, 2].tolist(),
        }
    return {
        "which": meta["which"],
        "example_id": meta["example_id"],
        "batch_id": meta["batch_id"],
        "architecture": meta["architecture"],
        "family": result.spec.architecture.family,
        "depth": result.spec.architecture.n_layers,
        "patterns": meta["patterns"],
        "corrupted_pattern": meta["corrupted_pattern"],
        "metrics": meta.get("metrics"),
        "classes": list(result.classes),
        "best_layer": result.best_layer(),
        "layers": layers,
    }


def task_specs(zoo: ZooRecords, batch_ids: list[int], config: ProbeConfig) -> list[ModelSpec]:
    """Per batch: its clean model (with twin), then the degraded model of each of its records."""
    specs = []
    wanted = set(int(b) for b in batch_ids)
    rows = [row for row in zoo.rows() if int(row["batch_id"]) in wanted]
    by_batch: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_batch[int(row["batch_id"])].append(row)
    degraded_config = config.model_copy(update={"random_twin": False})
    for batch in sorted(by_batch):
        clean = zoo_layers(row_spec(zoo, by_batch[batch][0], "clean", config), config)
        clean.meta["metrics"] = None
        specs.append(clean)
        for row in by_batch[batch]:
            spec = zoo_layers(row_spec(zoo, row, "degraded", degraded_config, data=clean.data), config)
            spec.meta["metrics"] = _pair_metrics(row)
            specs.append(spec)
    return specs


def _pair_metrics(row: dict) -> dict:
    metrics = row["metrics"]
    k = list(row["patterns"]).index(row["corrupted_pattern"])
    return {
        "clean_output_accuracy": float(metrics["clean_pattern_accuracy"][k]),
        "degraded_output_accuracy": float(metrics["degraded_pattern_accuracy"][k]),
        "degradation": float(metrics["degradation"]),
    }


def probe_batches(zoo: ZooRecords, batch_ids: list[int], config: ProbeConfig) -> list[dict]:
    specs = task_specs(zoo, batch_ids, config)
    return [model_summary(result) for result in probe_models(specs, config)] if specs else []


class ProbeWorker:
    """A Ray actor: opens the zoo once, probes the batches it is given, returns summaries."""

    def __init__(self, data_dir: str, config: ProbeConfig, threads: int = 1):
        self.data_dir = data_dir
        self.config = config
        self.threads = threads
        self.zoo: ZooRecords | None = None

    def run(self, batch_ids: list[int]) -> list[dict]:
        if self.zoo is None:
            self.zoo = open_zoo(self.data_dir)
        with torch_threads(self.threads):
            return probe_batches(self.zoo, batch_ids, self.config)


def zoo_tasks(zoo: ZooRecords, config: ProbeConfig, batches: int | None = None) -> list[list[int]]:
    """Batches (those with records) cut into tasks of about ``models_per_group`` models."""
    counts: dict[int, int] = defaultdict(int)
    for batch in zoo.table.column("batch_id").to_pylist():
        counts[int(batch)] += 1
    ids = sorted(counts)[:batches] if batches is not None else sorted(counts)
    tasks, current, size = [], [], 0
    for batch in ids:
        models = 1 + counts[batch]
        if current and size + models > config.models_per_group:
            tasks.append(current)
            current, size = [], 0
        current.append(batch)
        size += models
    if current:
        tasks.append(current)
    return tasks


def _run_ray(data_dir: Path, config: ProbeConfig, tasks: list[list[int]], workers: int, address: str | None,
             gpus_per_worker: float, log: Log, progress=None) -> list[dict]:
    """The tasks on ``ProbeWorker`` actors of a ``zoo.pool.ActorPool``: a task whose worker dies is requeued."""
    from zoo.pool import NODE_WAIT_S, ActorPool, check_resources, joined_cluster, ray_connection

    results: dict[int, list[dict]] = {}
    with ray_connection(address):
        wait_s = NODE_WAIT_S if joined_cluster(address) else 0.0
        check_resources(1, gpus_per_worker, wait_s, log, cpu_setting="CPUs per worker", gpu_setting="--gpus-per-worker")
        pool = ActorPool(
            ProbeWorker,
            (resolve(data_dir).uri, config),  # an absolute path, or the URI (every node reads it)
            workers=min(workers, len(tasks)),
            num_cpus=1,
            num_gpus=gpus_per_worker,
            describe=lambda task: f"batches {task[0]}-{task[-1]}",
            log=log,
        )
        with pool:
            for index, result in pool.map_unordered(tasks):
                results[index] = result
                task = tasks[index]
                log(f"[{len(results)}/{len(tasks)}] batches {task[0]}-{task[-1]}: {len(result)} models probed")
                if progress is not None:
                    progress(len(results), len(tasks), "probing (tasks)")
    return [s for i in sorted(results) for s in results[i]]


def probe_zoo(
    data_dir: str | Path,
    out: str | Path,
    config: ProbeConfig,
    workers: int = 0,
    address: str | None = None,
    batches: int | None = None,
    gpus_per_worker: float = 0.0,
    log: Log = print,
    progress=None,
) -> dict:
    """Probe every clean and degraded model of a zoo (its first ``batches`` batches if given) and summarize.

    ``progress(done, total, what)``, when given, is told each finished task (``zoo.progress``)."""
    out = Path(out)  # data_dir stays as given: a folder or a pyarrow.fs URI (``zoo.storage``)
    zoo = open_zoo(data_dir)
    if zoo.n_rows == 0:
        raise ProbeError(f"{data_dir}: the zoo holds no records to probe")
    if batches is not None and batches < 1:
        raise ProbeError("batches: must be at least 1")
    start = time.perf_counter()
    tasks = zoo_tasks(zoo, config, batches)
    if workers <= 0:
        summaries = []
        for i, task in enumerate(tasks):
            summaries += probe_batches(zoo, task, config)
            log(f"[{i + 1}/{len(tasks)}] batches {task[0]}-{task[-1]}: {len(summaries)} models probed so far")
            if progress is not None:
                progress(i + 1, len(tasks), "probing (tasks)")
    else:
        summaries = _run_ray(data_dir, config, tasks, workers, address, gpus_per_worker, log, progress)
    summary = write_zoo_summary(out, summaries, config)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["data"] = str(data_dir)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------- the summary


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(float(np.mean(values)), 6) if values else None


def readability(models: list[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """Per (clean model, pattern): the first readable layer; and per pattern and family, the aggregate.

    Layer numbers mean different hookpoints in different families (``probes.csv`` names them),
    so a mixed zoo's patterns are aggregated per family."""
    per_model, by_pattern = [], defaultdict(list)
    for m in models:
        for c, pattern in enumerate(m["patterns"]):
            f1 = {int(l): v["f1"][c] for l, v in m["layers"].items()}
            first = next((l for l in sorted(f1) if f1[l] is not None and not math.isnan(f1[l]) and f1[l] >= threshold), None)
            item = {
                "batch_id": m["batch_id"], "pattern": pattern, "family": m.get("family", "mlp"), "depth": m["depth"],
                "first_readable_layer": first,
            }
            item.update({f"f1_{layer_label(l)}": round(v, 6) for l, v in sorted(f1.items())})
            per_model.append(item)
            by_pattern[(pattern, m.get("family", "mlp"))].append((first, m["depth"], f1))
    table = []
    max_layer = max((l for m in models for l in map(int, m["layers"])), default=0)
    for pattern, family in sorted(by_pattern):
        items = by_pattern[(pattern, family)]
        firsts = [f for f, _, _ in items if f is not None]
        row = {
            "pattern": pattern,
            "family": family,
            "models": len(items),
            "readable_at_input": round(sum(f == 0 for f, _, _ in items) / len(items), 4),
            "readable_somewhere": round(len(firsts) / len(items), 4),
            "median_first_layer": float(np.median(firsts)) if firsts else None,
        }
        for l in range(max_layer + 1):
            row[f"mean_f1_{layer_label(l)}"] = _mean([f1.get(l) for _, _, f1 in items])
        table.append(row)
    return per_model, table


def degradation(models: list[dict]) -> list[dict]:
    """Per degraded model: its corrupted pattern's probe recall per layer, clean vs degraded, and the outputs."""
    clean = {m["batch_id"]: m for m in models if m["which"] == "clean"}
    rows = []
    for m in models:
        if m["which"] != "degraded" or m["batch_id"] not in clean:
            continue
        c = m["patterns"].index(m["corrupted_pattern"])
        ref = clean[m["batch_id"]]
        row = {
            "example_id": m["example_id"],
            "batch_id": m["batch_id"],
            "depth": m["depth"],
            "corrupted_pattern": m["corrupted_pattern"],
            **{k: round(v, 6) for k, v in (m["metrics"] or {}).items()},
        }
        for l in sorted(map(int, m["layers"])):
            row[f"clean_{layer_label(l)}"] = round(ref["layers"][l]["recall"][c], 6)
            row[f"degraded_{layer_label(l)}"] = round(m["layers"][l]["recall"][c], 6)
        last = max(map(int, m["layers"]))
        inside = row[f"clean_{layer_label(last)}"] - row[f"degraded_{layer_label(last)}"]
        output = row.get("clean_output_accuracy", 0.0) - row.get("degraded_output_accuracy", 0.0)
        row["probe_drop_last_layer"] = round(inside, 6)
        row["output_drop"] = round(output, 6)
        row["lost"] = "inside" if output > 0 and inside >= 0.5 * output else "at the output"
        rows.append(row)
    return rows


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_zoo_summary(out: Path, models: list[dict], config: ProbeConfig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    clean = [m for m in models if m["which"] == "clean"]
    per_layer_rows = []
    for m in models:
        for l, v in sorted(m["layers"].items(), key=lambda kv: int(kv[0])):
            sel = None if v["control_accuracy"] is None else v["accuracy"] - v["control_accuracy"]
            per_layer_rows.append(
                {
                    "which": m["which"], "example_id": m["example_id"], "batch_id": m["batch_id"],
                    "architecture": m["architecture"], "layer": int(l), "hookpoint": v.get("hookpoint"), "accuracy": round(v["accuracy"], 6),
                    "control_accuracy": v["control_accuracy"], "selectivity": None if sel is None else round(sel, 6),
                    "random_accuracy": v["random_accuracy"], "random_control_accuracy": v["random_control_accuracy"],
                    "detection_accuracy": round(v["detection_accuracy"], 6),
                }
            )
    _write_csv(out / "probes.csv", per_layer_rows)
    per_model, table = readability(clean, config.readable_threshold)
    _write_csv(out / "readability_models.csv", per_model)
    _write_csv(out / "readability.csv", table)
    degraded = degradation(models)
    if degraded:
        _write_csv(out / "degraded.csv", degraded)

    best = [m["layers"][m["best_layer"]] for m in clean]
    summary = {
        "models": len(models),
        "clean_models": len(clean),
        "degraded_models": len(models) - len(clean),
        "clean_best_accuracy_mean": _mean(b["accuracy"] for b in best),
        "clean_best_accuracy_min": round(min(b["accuracy"] for b in best), 6) if best else None,
        "clean_selectivity_mean": _mean(
            None if b["control_accuracy"] is None else b["accuracy"] - b["control_accuracy"] for b in best
        ),
        "clean_twin_accuracy_mean": _mean(b["random_accuracy"] for b in best),
        "clean_detection_accuracy_mean": _mean(b["detection_accuracy"] for b in best),
        "readability": table,
        "degraded_lost_inside": sum(r["lost"] == "inside" for r in degraded),
        "degraded_lost_at_output": sum(r["lost"] == "at the output" for r in degraded),
        "recipe": config.model_dump(mode="json"),
    }
    max_layer = max((int(l) for m in models for l in m["layers"]), default=0)
    x_labels = [layer_label(l) for l in range(max_layer + 1)]
    if table:
        mixed = len({row["family"] for row in table}) > 1
        series = [
            Series(f"{row['pattern']} ({row['family']})" if mixed else row["pattern"], [_nan(row[f"mean_f1_{x}"]) for x in x_labels])
            for row in table
        ]
        line_chart(
            out / "readability.png", series, x_labels,
            title="pattern readability (clean models)", x_title="layer", y_title="mean probe F1",
        )
    if degraded:
        per_layer = {"layers": x_labels + ["out"]}
        for which in ("clean", "degraded"):
            values = [_mean(r.get(f"{which}_{x}") for r in degraded) for x in x_labels]
            values.append(_mean(r.get(f"{which}_output_accuracy") for r in degraded))
            per_layer[which] = [_nan(v) for v in values]
        line_chart(
            out / "degraded.png",
            [Series("clean", per_layer["clean"]), Series("degraded", per_layer["degraded"])],
            per_layer["layers"],
            title="corrupted pattern: probe recall per layer, model output at OUT",
            x_title="layer",
            y_title="accuracy on the corrupted pattern",
        )
        summary["degraded_per_layer"] = per_layer
    write_zoo_markdown(out / "summary.md", summary, table, degraded, x_labels, config)
    return summary


def write_zoo_markdown(
    path: Path, summary: dict, table: list[dict], degraded: list[dict], x_labels: list[str], config: ProbeConfig
) -> None:
    f = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        "# Probes across the zoo",
        "",
        f"- models probed: {summary['models']} ({summary['clean_models']} clean, {summary['degraded_models']} degraded)",
        f"- clean models, best hidden layer: mean accuracy {f(summary['clean_best_accuracy_mean'])}, "
        f"min {f(summary['clean_best_accuracy_min'])}, mean selectivity {f(summary['clean_selectivity_mean'])}, "
        f"untrained twin at that layer {f(summary['clean_twin_accuracy_mean'])}; pattern-vs-none accuracy of the "
        f"same probes {f(summary['clean_detection_accuracy_mean'])}",
        "",
        "## Where each pattern becomes linearly readable",
        "",
        f"A pattern is readable at a layer when its probe's one-vs-rest F1 reaches {config.readable_threshold} "
        "(`in` is layer 0: an MLP's one-hot input, a transformer's embedding). Mean F1 per layer over the clean "
        "models of a family that have the pattern. Layer numbers name different hookpoints in different families "
        "(`probes.csv` has each layer's hookpoint).",
        "",
        "| pattern | family | models | readable at input | readable somewhere | median first layer | "
        + " | ".join(f"F1 {x}" for x in x_labels) + " |",
        "|---" * (6 + len(x_labels)) + "|",
    ]
    for row in table:
        lines.append(
            f"| {row['pattern']} | {row['family']} | {row['models']} | {f(row['readable_at_input'])} | {f(row['readable_somewhere'])} | "
            f"{f(row['median_first_layer'])} | " + " | ".join(f(row[f'mean_f1_{x}']) for x in x_labels) + " |"
        )
    lines += ["", "![readability](readability.png)", ""]
    if degraded:
        per = summary["degraded_per_layer"]
        lines += [
            "## Degraded models: where the corrupted pattern is lost",
            "",
            "Probe recall of the corrupted pattern per layer (mean over degraded models), clean vs degraded, and the "
            "models' own accuracy on that pattern (`out`). A model counts as losing the pattern *inside* when its "
            "last hidden layer's probe drops by at least half of the output's drop.",
            "",
            "| | " + " | ".join(per["layers"]) + " |",
            "|---" * (1 + len(per["layers"])) + "|",
            "| clean | " + " | ".join(f(v) for v in per["clean"]) + " |",
            "| degraded | " + " | ".join(f(v) for v in per["degraded"]) + " |",
            "",
            f"Lost inside the network: {summary['degraded_lost_inside']}; only at the output: "
            f"{summary['degraded_lost_at_output']} (per model: `degraded.csv`).",
            "",
            "![degraded](degraded.png)",
            "",
        ]
    lines += ["Files: `probes.csv` (per model and layer), `readability.csv`, `readability_models.csv`, "
              "`degraded.csv`, `summary.json`.", ""]
    path.write_text("\n".join(lines))
