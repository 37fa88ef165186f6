"""``RUN/report.md``: an evaluation report (``evaluate``) as tables."""

from __future__ import annotations

from pathlib import Path

from zoo.readers.interpreter.baselines import BASELINES
from zoo.readers.interpreter.data import ZooSource
from zoo.readers.interpreter.judge import _clean


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_rows(report: dict, split: str) -> list[tuple[str, dict]]:
    """``(reader, figures)`` for one split: the interpreter, the baselines, the ensembles."""
    return (
        [("interpreter", report[split])]
        + [(name, report["baselines"][name][split]) for name in BASELINES]
        + [(name, runs[split]) for name, runs in report["ensembles"].items()]
    )


def split_names(report: dict) -> list[str]:
    return [key for key in report if key not in ("baselines", "ensembles", "thresholds")]


def render_markdown(
    report: dict, rows: dict[str, int], run_dir: Path, source: ZooSource, description: dict, behaviour: dict | None = None
) -> str:
    splits = split_names(report)
    state_path = run_dir / "state.json"
    lines = [
        "# Interpreter evaluation",
        "",
        f"- run: `{run_dir}`",
        f"- zoo: `{source.path}` ({source.zoo_id}; {len(source.assignment)} batches; splits: {source.split_source})",
        "- records evaluated: " + ", ".join(f"{s} {rows[s]}" for s in splits),
        "- set thresholds (a pattern joins a predicted set above it; chosen on validation unless the config fixes "
        "one): " + ", ".join(f"{name} {t}" for name, t in report.get("thresholds", {}).items()),
        f"- pattern vocabulary: {len(source.pattern_names)} patterns",
    ]
    if state_path.is_file():
        import json

        state = json.loads(state_path.read_text())
        lines.append(
            f"- trained {state['epoch']} epochs; best.safetensors (pattern heads) is epoch {state.get('best_epoch')}, "
            f"best_repair.safetensors (repair) epoch {state.get('best_repair_epoch') or state.get('best_epoch')}"
        )
    lines += [
        "",
        "Repair is judged by behaviour: decoded weights loaded with `zoo.load_model`, scored on each record's clean "
        "benchmark set. *restored*: share of the corrupted pattern's lost accuracy won back (mean over models); "
        "*side effect*: mean accuracy drop on the other patterns (positive is a loss).",
        "",
        "*interpreter+output_only*: both readers' probabilities averaged (weight chosen on validation). Set "
        "thresholds are chosen on validation too (unless the config fixes one), so every validation row is optimistic.",
        "",
        "| split | model | exact match | macro F1 | corrupted acc. | accuracy MAE | repair restored | repair side effect |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in splits:
        for name, fig in report_rows(report, split):
            lines.append(
                f"| {split} | {name} | {_fmt(fig['exact_match'])} | {_fmt(fig['macro_f1'])} | "
                f"{_fmt(fig['corrupted_pattern_accuracy'])} | {_fmt(fig['accuracy_mae'])} | "
                f"{_fmt(fig['repair_restored'])} | {_fmt(fig['repair_side_effect'])} |"
            )
    lines += [
        "",
        "## Above the baselines",
        "",
        "Interpreter minus baseline (for accuracy MAE: baseline minus interpreter), so positive means the interpreter is better.",
        "",
        "| split | baseline | exact match | macro F1 | corrupted acc. | accuracy MAE |",
        "|---|---|---|---|---|---|",
    ]
    for split in splits:
        mine = report[split]
        for name in BASELINES:
            other = report["baselines"][name][split]
            cells = []
            for key, better in (("exact_match", 1), ("macro_f1", 1), ("corrupted_pattern_accuracy", 1), ("accuracy_mae", -1)):
                if mine[key] is None or other[key] is None:
                    cells.append("n/a")
                else:
                    cells.append(f"{better * (mine[key] - other[key]):+.3f}")
            lines.append(f"| {split} | {name} | " + " | ".join(cells) + " |")
    if behaviour:
        lines += [
            "",
            "## Repair beyond the corrupted pattern",
            "",
            "Mean benchmark accuracy on the negatives (sequences of none of the model's patterns) and overall, "
            "for the degraded model, the repaired one (decoded weights) and the clean one; *overall restored*: "
            "the share of the overall accuracy lost that the repair wins back.",
            "",
            "| split | negatives: degraded | repaired | clean | overall: degraded | repaired | clean | overall restored |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for split in splits:
            b = _clean(behaviour[split])
            lines.append(
                f"| {split} | {_fmt(b['negatives_degraded'])} | {_fmt(b['negatives_repaired'])} | {_fmt(b['negatives_clean'])} | "
                f"{_fmt(b['accuracy_degraded'])} | {_fmt(b['accuracy_repaired'])} | {_fmt(b['accuracy_clean'])} | "
                f"{_fmt(b['accuracy_restored'])} |"
            )
    refined = [s for s in splits if "refined_repair" in report[s]]
    if refined:
        lines += [
            "",
            "## Repair refined on the named pattern set",
            "",
            "Each model trained further on the data the zoo makes for the pattern set the interpreter names "
            "(none of it from the record's benchmark set), starting from the decoded weights and, as a control, "
            "from the degraded ones. Negatives and overall: benchmark accuracy after refinement.",
            "",
            "| split | start | repair restored | repair side effect | negatives | overall | overall restored |",
            "|---|---|---|---|---|---|---|",
        ]
        for split in refined:
            for start, fig in report[split]["refined_repair"].items():
                lines.append(
                    f"| {split} | {start} | {_fmt(fig['repair_restored'])} | {_fmt(fig['repair_side_effect'])} | "
                    f"{_fmt(fig['negatives'])} | {_fmt(fig['accuracy'])} | {_fmt(fig['accuracy_restored'])} |"
                )
    lines += family_lines(report, splits)
    lines += [
        "",
        "## By corruption rate (interpreter)",
        "",
        "Share of the corrupted pattern's labels that were flipped. Near 1 a degraded model was trained to reject the "
        "pattern outright, and its having been trained on it is hard to see. Answer trace: how often a reader with no "
        "parameters, told the other patterns, names the corrupted one as the candidate the model still accepts most "
        "(evaluate.answer_trace); near a guess, the mean answer no longer shows it. Output-only: how often the "
        "output-only baseline, a reader trained on the answers to the probe set, names it; what it finds that the "
        "answer trace does not is in the answers still, in more than their mean.",
        "",
        "| split | rate | records | exact match | corrupted acc. | repair restored | refined restored | answer trace "
        "| output-only: corrupted acc. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split in splits:
        for row in report[split].get("by_corruption_rate", []):
            lines.append(
                f"| {split} | {row['rate']} | {row['records']} | {_fmt(row['exact_match'])} | "
                f"{_fmt(row['corrupted_pattern_accuracy'])} | {_fmt(row['repair_restored'])} | "
                f"{_fmt(row.get('refined_restored'))} | {_fmt(row.get('answer_trace'))} | "
                f"{_fmt(row.get('output_only_corrupted_accuracy'))} |"
            )
    lines += ["", "## Per-pattern F1 (interpreter)", "", "| pattern | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    patterns = sorted({p for s in splits for p in report[s]["per_pattern_f1"]}, key=source.pattern_names.index)
    for p in patterns:
        lines.append(f"| {p} | " + " | ".join(_fmt(report[s]["per_pattern_f1"].get(p)) for s in splits) + " |")
    return "\n".join(lines) + "\n"


def family_lines(report: dict, splits: list[str]) -> list[str]:
    """The "By family" section: each split's figures per subject family (mixed zoos, or zoos of a family
    the decoder does not write), with the output-only baseline beside, and the one-line repair note."""
    shown = [s for s in splits if report[s].get("by_family")]
    if not shown:
        return []
    lines = [
        "",
        "## By family",
        "",
        "Every reader's figures on each subject family's records alone. *restored*: the decoder's repair; "
        "*refined*: after refinement from the decoded weights (from the degraded ones for a family the decoder "
        "does not write).",
        "",
        "| split | family | records | exact match | macro F1 | corrupted acc. | output-only: exact | macro F1 | corrupted acc. "
        "| restored | refined | refined: side effect |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for split in shown:
        for family, fig in report[split]["by_family"].items():
            base = fig["baselines"]["output_only"]
            lines.append(
                f"| {split} | {family} | {fig['records']} | {_fmt(fig['exact_match'])} | {_fmt(fig['macro_f1'])} | "
                f"{_fmt(fig['corrupted_pattern_accuracy'])} | {_fmt(base['exact_match'])} | {_fmt(base['macro_f1'])} | "
                f"{_fmt(base['corrupted_pattern_accuracy'])} | {_fmt(fig['repair_restored'])} | {_fmt(fig.get('refined_restored'))} | "
                f"{_fmt(fig.get('refined_side_effect'))} |"
            )
    notes = sorted({report[s]["repair_note"] for s in shown if report[s].get("repair_note")})
    return lines + [""] + [f"*{note}*" for note in notes] if notes else lines
