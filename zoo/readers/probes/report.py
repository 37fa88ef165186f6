"""A probed model's files: checkpoints, metrics CSV, markdown report with a plot, report.json."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from zoo.readers.probes.checkpoint import checkpoint_name, save_probe
from zoo.readers.probes.config import ProbeConfig
from zoo.readers.probes.png import Series, line_chart
from zoo.readers.probes.probe import RANDOM, TRAINED, LayerProbe, ModelProbes

METRIC_COLUMNS = (
    "layer",
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_accuracy",
    "best_accuracy",
    "is_best",
    "lr",
    "subject",
    "task",
    "hookpoint",
)
PLOT_FILE = "per_layer_accuracy.png"


def layer_label(layer: int) -> str:
    return "in" if layer == 0 else f"L{layer}"


def class_metrics(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(per-class [C, 4] precision, recall, f1, support; confusion [C, C] true x predicted)``."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    tp = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(0), confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(precision + np.nan_to_num(recall) > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(support > 0, f1, np.nan)
    return np.stack([precision, recall, f1, support], axis=1), confusion


def detection_accuracy(result: ModelProbes, layer: int) -> float:
    """How often the layer's probe gets "one of the patterns vs none" right (the last class is none)."""
    none = len(result.classes) - 1
    return float(((result.trained[layer].val_pred == none) == (result.val_labels == none)).mean())


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def summarize(result: ModelProbes) -> dict:
    """The report.json content (without file names): per-layer accuracies, controls, best layer, classes."""
    best = result.best_layer()
    probe = result.trained[best]
    stats, confusion = class_metrics(result.val_labels, probe.val_pred, len(result.classes))
    counts = np.bincount(result.val_labels, minlength=len(result.classes))
    report = {
        "classes": list(result.classes),
        "layers": result.layers,
        "hookpoints": {str(l): result.hookpoint(l) for l in result.layers},
        "best_layer": best,
        "best_hookpoint": result.hookpoint(best),
        "best_accuracy": _num(probe.accuracy),
        "selectivity": _num(probe.selectivity),
        "per_layer_accuracy": {str(l): _num(v) for l, v in result.per_layer("accuracy").items()},
        "per_layer_final_accuracy": {str(l): _num(v) for l, v in result.per_layer("final_accuracy").items()},
        "per_layer_best_epoch": {str(l): v for l, v in result.per_layer("best_epoch").items()},
        "per_layer_control_accuracy": {str(l): _num(v) for l, v in result.per_layer("control_accuracy").items()},
        "per_layer_selectivity": {str(l): _num(v) for l, v in result.per_layer("selectivity").items()},
        "per_layer_detection_accuracy": {str(l): _num(detection_accuracy(result, l)) for l in result.layers},
        "majority_baseline": _num(counts.max() / counts.sum()),
        "per_class": {
            name: {
                "precision": _num(stats[c, 0]),
                "recall": _num(stats[c, 1]),
                "f1": _num(stats[c, 2]),
                "support": int(stats[c, 3]),
            }
            for c, name in enumerate(result.classes)
        },
        "confusion": confusion.tolist(),
        "samples": {"train": int(len(result.train_idx)), "val": int(len(result.val_idx))},
        "epochs": result.epochs,
    }
    if result.random is not None:
        twin_best = result.best_layer(RANDOM)
        report["random_init"] = {
            "best_layer": twin_best,
            "best_accuracy": _num(result.random[twin_best].accuracy),
            "selectivity": _num(result.random[twin_best].selectivity),
            "per_layer_accuracy": {str(l): _num(v) for l, v in result.per_layer("accuracy", RANDOM).items()},
            "per_layer_control_accuracy": {
                str(l): _num(v) for l, v in result.per_layer("control_accuracy", RANDOM).items()
            },
            "per_layer_selectivity": {str(l): _num(v) for l, v in result.per_layer("selectivity", RANDOM).items()},
        }
        report["training_gain"] = _num(probe.accuracy - result.random[best].accuracy)
    return report


def _metric_rows(probe: LayerProbe, subject: str, task: str, history: dict, best_epoch: int) -> list[dict]:
    rows, best = [], None
    for e in range(len(history["train_loss"])):
        val = history["val_accuracy"][e]
        if not np.isnan(val):
            best = val if best is None else max(best, val)
        rows.append(
            {
                "layer": probe.layer,
                "epoch": e + 1,
                "train_loss": f"{history['train_loss'][e]:.6f}",
                "train_accuracy": f"{history['train_accuracy'][e]:.6f}",
                "val_accuracy": "" if np.isnan(val) else f"{val:.6f}",
                "best_accuracy": "" if best is None else f"{best:.6f}",
                "is_best": str(e + 1 == best_epoch).lower(),
                "lr": f"{history['lr'][e]:.6g}",
                "subject": subject,
                "task": task,
                "hookpoint": probe.hookpoint,
            }
        )
    return rows


def write_metrics_csv(path: Path, result: ModelProbes) -> Path:
    """One row per (subject, task, layer, epoch); ``is_best`` marks the epoch of the best checkpoint."""
    rows = []
    for subject, probes in ((TRAINED, result.trained), (RANDOM, result.random or {})):
        for layer in result.layers:
            if layer not in probes or (subject == RANDOM and result.points[layer].shared):
                continue
            probe = probes[layer]
            rows += _metric_rows(probe, subject, "probe", probe.history, probe.best_epoch)
            if probe.control_history is not None:
                rows += _metric_rows(probe, subject, "control", probe.control_history, probe.control_best_epoch)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_plot(path: Path, result: ModelProbes, title: str) -> Path:
    layers = result.layers
    series = [Series("probe", [result.trained[l].accuracy for l in layers])]
    if result.trained[layers[0]].control_accuracy is not None:
        series.append(Series("control (shuffled)", [result.trained[l].control_accuracy for l in layers], dashed=True))
    if result.random is not None:
        series.append(Series("untrained twin", [result.random[l].accuracy for l in layers], color=(44, 160, 44)))
        if result.random[layers[0]].control_accuracy is not None:
            series.append(
                Series("twin control", [result.random[l].control_accuracy for l in layers], dashed=True, color=(148, 103, 189))
            )
    counts = np.bincount(result.val_labels, minlength=len(result.classes))
    series.append(Series("majority class", [counts.max() / counts.sum()] * len(layers), dashed=True, color=(127, 127, 127)))
    return line_chart(path, series, [layer_label(l) for l in layers], title=title, x_title="layer", y_title="val accuracy")


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"


def write_markdown(path: Path, result: ModelProbes, report: dict, meta: dict) -> Path:
    best = report["best_layer"]
    lines = [f"# Probes of {meta.get('name', 'a model')}", ""]
    for key in ("data", "row", "which", "example_id", "batch_id", "architecture", "patterns", "corrupted_pattern"):
        if key in meta:
            lines.append(f"- {key.replace('_', ' ')}: `{meta[key]}`")
    lines += [
        f"- classes: {', '.join(result.classes)} (validation: {report['samples']['val']} sequences, "
        f"training: {report['samples']['train']}; majority class {report['majority_baseline']:.3f})",
        f"- best layer: **{layer_label(best)}** (`{result.hookpoint(best)}`), accuracy **{report['best_accuracy']:.3f}**"
        + (f", selectivity **{report['selectivity']:.3f}**" if report["selectivity"] is not None else ""),
        "",
        "## Per layer",
        "",
        "Best validation accuracy of a linear probe per layer (`in` is layer 0: the one-hot input of an MLP, the "
        "embedding of a transformer; the hookpoint column names what each layer reads). Control: the same probe "
        "on shuffled labels; selectivity = accuracy - control. Twin: the untrained model (same architecture and "
        "initialization), what the architecture gives for free. Pattern vs none: how often the probe is right "
        "about whether the sequence has one of the patterns at all (the model's own task).",
        "",
        "| layer | hookpoint | width | accuracy | final | best epoch | control | selectivity | twin | twin control | "
        "twin selectivity | pattern vs none |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in result.layers:
        probe = result.trained[layer]
        twin = result.random.get(layer) if result.random is not None else None
        point = result.points[layer]
        lines.append(
            f"| {layer_label(layer)} | `{point.hookpoint}` | {point.width} | {probe.accuracy:.3f} | {probe.final_accuracy:.3f} | {probe.best_epoch} | "
            f"{_fmt(probe.control_accuracy)} | {_fmt(probe.selectivity)} | "
            f"{_fmt(twin.accuracy if twin else None)} | {_fmt(twin.control_accuracy if twin else None)} | "
            f"{_fmt(twin.selectivity if twin else None)} | {report['per_layer_detection_accuracy'][str(layer)]:.3f} |"
        )
    lines += ["", f"![per-layer accuracy]({PLOT_FILE})", "", f"## Classes at the best layer ({layer_label(best)})", ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, stats in report["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(stats['precision'])} | {_fmt(stats['recall'])} | {_fmt(stats['f1'])} | {stats['support']} |"
        )
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(result.classes) + " |")
    lines.append("|---" * (len(result.classes) + 1) + "|")
    for name, counts in zip(result.classes, report["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    lines += [
        "",
        "Files: `probe_layer_{L}.safetensors` (best validation accuracy), `probe_layer_{L}_final.safetensors` "
        "(last epoch), `metrics.csv`, `report.json`.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def write_model_report(out: str | Path, result: ModelProbes, config: ProbeConfig, meta: dict | None = None) -> dict:
    """Every file of a probed model into ``out``; returns the report.json content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or result.spec.meta)
    report = summarize(result)
    for layer in result.layers:
        probe = result.trained[layer]
        common = {
            "layer": layer,
            "hookpoint": result.hookpoint(layer),
            "site": result.points[layer].site,
            "classes": list(result.classes),
            "architecture": result.spec.architecture.to_dict(),
        }
        save_probe(out / checkpoint_name(layer), probe.best, {**common, "epoch": probe.best_epoch, "val_accuracy": probe.accuracy})
        save_probe(
            out / checkpoint_name(layer, final=True),
            probe.final,
            {**common, "epoch": result.epochs, "val_accuracy": probe.final_accuracy},
        )
    write_metrics_csv(out / "metrics.csv", result)
    write_plot(out / PLOT_FILE, result, f"probes of {meta.get('name', 'model')}")
    full = {"model": meta, **report, "site": config.site, "config": config.model_dump(mode="json")}
    write_markdown(out / "report.md", result, report, meta)
    (out / "report.json").write_text(json.dumps(full, indent=2) + "\n")
    return full
