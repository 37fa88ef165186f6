"""The evaluation report of an interpreter run, with its two baselines.

``RUN/report.json`` maps every evaluated split to its figures under the keys
``REPORT_KEYS``, plus ``by_corruption_rate`` (the same figures per bin of the corruption
rate), and holds the baselines under ``baselines`` (``weight_statistics`` and
``output_only``, each mapping splits to exactly ``REPORT_KEYS``; they do not repair, so their
repair figures are null), and under ``ensembles`` the same for ``interpreter+output_only``:
the interpreter's probabilities averaged with the output-only baseline's. With
``refine.epochs`` > 0 each split also holds ``refined_repair``: repair figures after
refinement on the named set's data (``zoo.readers.interpreter.refine``), started from the
decoded weights and from the degraded ones. ``thresholds`` holds each reader's set
threshold (``set_threshold``, or chosen on the validation split: ``metrics.choose_threshold``).
``RUN/report.md``
shows the same figures as tables and says how far the interpreter is above each baseline;
``RUN/predictions/SPLIT.parquet`` holds every record's readouts (``zoo.readers.interpreter.predictions``).

Repair is judged by behaviour: the decoded weights are loaded with ``zoo.load_model``
and scored on the record's own clean benchmark set (``plan_batch(...).data.benchmark``),
the set the zoo measured the clean and degraded models on.
``repair_restored`` is the mean over models of (repaired - degraded) / (clean - degraded)
accuracy on the corrupted pattern; ``repair_side_effect`` the mean drop (degraded -
repaired, positive is a loss) on the model's other patterns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.baselines import BASELINES, ENSEMBLE, BaselineModel, ensemble, readouts
from zoo.readers.interpreter.baselines import feature_sets as _feature_sets
from zoo.readers.interpreter.config import InterpreterConfig
from zoo.readers.interpreter.data import SPLITS, Example, ZooSource, batched, dump_json, open_source, stream
from zoo.readers.interpreter.judge import _clean, answer_trace, judge_repair, populations, refined_repair
from zoo.readers.interpreter.metrics import (
    Readout,
    SetSpace,
    choose_threshold,
    exact_match,
    hits,
    macro_f1,
    mae,
    names_of,
    nanmean,
    per_pattern_f1,
    read_sets,
    top1,
)
from zoo.readers.interpreter.neurons import TOKEN_SPACE
from zoo.readers.interpreter.predictions import predictions_table, write_predictions
from zoo.readers.interpreter.refine import Plans, sequences_per_model
from zoo.readers.interpreter.report import render_markdown, report_rows, split_names
from zoo.readers.interpreter.train import Predictions, checkpoint_path, load_model, predict
from zoo.runtime import resolve_device, torch_threads

# re-exported from the modules they moved to
__all__ = [
    "BaselineModel", "answer_trace", "ensemble", "judge_repair", "populations", "refined_repair", "report_rows", "split_names",
]


REPORT_KEYS = (
    "exact_match",
    "macro_f1",
    "per_pattern_f1",
    "corrupted_pattern_accuracy",
    "accuracy_mae",
    "repair_restored",
    "repair_side_effect",
)
EVAL_SPLITS = ("validation", "test", "ood_architecture", "ood_patterns")


def figures(
    names: tuple[str, ...],
    pattern_sets: np.ndarray,
    corrupted_logits: np.ndarray,
    accuracy: np.ndarray,
    examples: list[Example],
    restored: np.ndarray | None = None,
    side: np.ndarray | None = None,
) -> dict:
    """One split's figures under ``REPORT_KEYS``."""
    truth = np.stack([e.targets for e in examples])
    return _clean(
        {
            "exact_match": exact_match(pattern_sets, truth),
            "macro_f1": macro_f1(pattern_sets, truth, names),
            "per_pattern_f1": per_pattern_f1(pattern_sets, truth, names),
            "corrupted_pattern_accuracy": top1(corrupted_logits, np.array([e.corrupted for e in examples])),
            "accuracy_mae": mae(accuracy, np.array([e.accuracy for e in examples])),
            "repair_restored": None if restored is None else nanmean(restored),
            "repair_side_effect": None if side is None else nanmean(side),
        }
    )


def decoder_repair(
    examples: list[Example], repaired: list[np.ndarray], plans: Plans
) -> tuple[np.ndarray, np.ndarray, dict[str, float], str | None]:
    """``judge_repair`` over the records of families the decoder writes (nan for the others), and a one-line
    note when some records are of a family it does not write (None when all are)."""
    writes = np.array([e.family in TOKEN_SPACE for e in examples], dtype=bool)
    if writes.all():
        return (*judge_repair(examples, repaired, plans), None)
    restored, side = np.full(len(examples), np.nan), np.full(len(examples), np.nan)
    keep = np.flatnonzero(writes).tolist()
    if keep:
        restored[keep], side[keep], extra = judge_repair([examples[i] for i in keep], [repaired[i] for i in keep], plans)
    else:
        extra = dict.fromkeys(("negatives_degraded", "negatives_repaired", "negatives_clean", "accuracy_degraded",
                               "accuracy_repaired", "accuracy_clean", "accuracy_restored"), float("nan"))
    other = sorted({e.family for e, w in zip(examples, writes) if not w})
    note = (
        f"repair of {' and '.join(other)} subjects is not supported yet: the decoder writes only "
        f"{' and '.join(TOKEN_SPACE)} weights, so its repair figures cover only the {len(keep)} such records; "
        f"refined repair (refine.epochs > 0) covers every family, from the degraded weights where nothing was decoded"
    )
    return restored, side, extra, note


def by_family(
    names: tuple[str, ...],
    examples: list[Example],
    outputs: dict[str, Readout],
    sets: dict[str, np.ndarray],
    per_model: dict[str, np.ndarray],
    refined: dict[str, dict[str, np.ndarray]] | None,
) -> dict[str, dict]:
    """Per subject family: the interpreter's figures (``REPORT_KEYS``), the record count, every baseline's and the
    ensemble's figures, and the refined repair's share restored and side effect (from the decoded weights where
    the decoder writes the family, else from the degraded ones)."""
    out = {}
    for family in sorted({e.family for e in examples}):
        rows = np.array([e.family == family for e in examples])
        mine = [e for e, r in zip(examples, rows) if r]
        probs, corrupted, accuracy = outputs["interpreter"]
        fig = figures(names, sets["interpreter"][rows], corrupted[rows], accuracy[rows], mine,
                      per_model["repair_restored"][rows], None)
        fig["records"] = len(mine)
        fig["baselines"] = {
            name: figures(names, sets[name][rows], outputs[name][1][rows], outputs[name][2][rows], mine)
            for name in (*BASELINES, ENSEMBLE)
        }
        if refined is not None:
            start = "decoded" if family in TOKEN_SPACE else "degraded"
            fig["refined_restored"] = _clean(nanmean(refined[start]["restored"][rows]))
            fig["refined_side_effect"] = _clean(nanmean(refined[start]["side_effect"][rows]))
            fig["refined_from"] = start
        out[family] = fig
    return out


def by_corruption_rate(
    examples: list[Example],
    pattern_sets: np.ndarray,
    corrupted_logits: np.ndarray,
    per_model: dict[str, np.ndarray],
    low: float,
    high: float,
    bins: int = 8,
) -> list[dict]:
    """Exact match, corrupted-pattern accuracy and the mean of each ``per_model`` array (by report key: the
    repairs' shares restored, the answer trace, the output-only baseline's hits) per equal bin of the corruption rate.

    The more of a pattern's labels were flipped, the harder it is to see that the degraded model was trained on
    it; this table shows where the interpreter misses, beside readers of the model's answers.
    """
    rate = np.array([e.metrics["corruption_rate"] for e in examples])
    truth = np.stack([e.targets for e in examples])
    corrupted = np.array([e.corrupted for e in examples])
    edges = np.linspace(low, high, bins + 1)
    which = np.clip(np.searchsorted(edges, rate, side="right") - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        mine = which == k
        if not mine.any():
            continue
        rows.append(
            _clean(
                {
                    "rate": f"{edges[k]:.2f}-{edges[k + 1]:.2f}",
                    "records": int(mine.sum()),
                    "exact_match": exact_match(pattern_sets[mine], truth[mine]),
                    "corrupted_pattern_accuracy": top1(corrupted_logits[mine], corrupted[mine]),
                    **{key: nanmean(values[mine]) for key, values in per_model.items()},
                }
            )
        )
    return rows


# ---------------------------------------------------------------- the report


def set_thresholds(
    config: InterpreterConfig, validation: tuple[Predictions, dict[str, Readout]] | None, space: SetSpace | None = None
) -> dict[str, float]:
    """Each reader's set threshold: ``config.set_threshold``, else chosen on the validation predictions and the
    readers' outputs on them, sets brought into the zoo's ``space`` (0.5 without a validation split)."""
    readers = ("interpreter", *BASELINES, ENSEMBLE)
    if config.set_threshold is not None:
        return {name: config.set_threshold for name in readers}
    if validation is None:
        return {name: 0.5 for name in readers}
    pred, outputs = validation
    return {name: choose_threshold(probs, corrupted, pred.targets, space=space) for name, (probs, corrupted, _) in outputs.items()}


def evaluate(
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    splits: list[str] | None = None,
    which: str = "best",
    refine_epochs: int | None = None,
    console=None,
    progress=None,
) -> dict:
    """Evaluate a run on a zoo's splits, train and score the baselines, write ``report.json`` and ``report.md``.

    ``refine_epochs`` overrides the run's ``refine.epochs``. ``progress(done, total, what)``, when
    given, is told each step (``zoo.progress``: ``zoo interpret eval`` shows it as a bar).
    """
    run_dir = Path(run_dir)
    model, config, description = load_model(run_dir, which)
    if refine_epochs is not None:
        if refine_epochs < 0:
            raise InterpreterError(f"--refine-epochs: must be 0 or more, got {refine_epochs}")
        config = config.model_copy(update={"refine": config.refine.model_copy(update={"epochs": refine_epochs})})
    # the decoder's own best epoch (see zoo.readers.interpreter.train); the same file for "last"
    repair_which = "repair" if which == "best" else which
    repairer = model
    if checkpoint_path(run_dir, repair_which) != checkpoint_path(run_dir, which):
        repairer = load_model(run_dir, repair_which)[0]
    source = open_source(data_dir)
    stored = description["data"]
    for key in ("pattern_names", "signature_stats"):
        if list(stored[key]) != list(getattr(source, key)):
            raise InterpreterError(f"{data_dir}: its {key.replace('_', ' ')} differ from the zoo {run_dir} was trained on")
    with torch_threads(config.threads):
        return _evaluate(run_dir, model, repairer, config, description, source, splits, which, console, progress)


def _evaluate(
    run_dir: Path,
    model,
    repairer,
    config: InterpreterConfig,
    description: dict,
    source: ZooSource,
    splits: list[str] | None,
    which: str,
    console,
    progress=None,
) -> dict:
    step = progress if progress is not None else (lambda *args: None)
    device = resolve_device(config.device, "device")
    model.to(device)
    repairer.to(device)
    wanted = list(splits) if splits else [s for s in EVAL_SPLITS if source.rows(s) > 0]
    for name in wanted:
        if name not in SPLITS:
            raise InterpreterError(f"--split: unknown split {name!r}; splits are {', '.join(SPLITS)}")
        if source.rows(name) == 0:
            raise InterpreterError(f"--split: split {name!r} of {source.path} holds no records")
    names = source.pattern_names
    train_examples = list(stream(source, config.data.train_split))
    if not train_examples:
        raise InterpreterError(f"{source.path}: no training records for the baselines")
    log = console.print if console is not None else (lambda *a, **k: None)
    log(f"baselines: fitting on {len(train_examples)} training records")
    step(0, None, "fitting the baselines")
    train_features = _feature_sets(source, train_examples)
    undrawn = ~source.set_space.drawn
    baselines = {
        name: BaselineModel.fit(train_features[name], train_examples, undrawn, config.baselines, config.seed)
        for name in BASELINES
    }
    del train_examples, train_features

    def read(split: str) -> tuple[Predictions, dict[str, Readout]]:
        """The interpreter's predictions on a split and every reader's outputs on it."""
        step(0, None, f"{split}: reading the records")
        examples = list(stream(source, split))
        pred = predict(model, batched(examples, config.eval_batch_size), device, repair=repairer is model)
        return pred, readouts(pred, _feature_sets(source, pred.examples), baselines, config.baselines.ensemble_weight)

    val = config.data.val_split
    validation = read(val) if config.set_threshold is None and source.rows(val) > 0 else None
    thresholds = set_thresholds(config, validation, source.set_space)
    log("set thresholds: " + ", ".join(f"{name} {t}" for name, t in thresholds.items()))

    def sets_of(outputs: dict[str, Readout]) -> dict[str, np.ndarray]:
        return {name: read_sets(probs, corrupted, thresholds[name], source.set_space) for name, (probs, corrupted, _) in outputs.items()}

    def save(split: str, examples: list[Example], outputs: dict[str, Readout], sets: dict[str, np.ndarray], per_model: dict) -> None:
        table = predictions_table(names, examples, outputs, sets, per_model, {"checkpoint": which, "thresholds": thresholds})
        write_predictions(run_dir / "predictions" / f"{split}.parquet", table)

    if validation is not None and val not in wanted:  # read for the thresholds: its readouts are kept too
        save(val, validation[0].examples, validation[1], sets_of(validation[1]), {})
    plans = Plans(source.config)
    rates = source.config.corruption.rate
    report: dict = {}
    base_report: dict = {name: {} for name in BASELINES}
    ensemble_report: dict = {ENSEMBLE: {}}
    rows: dict[str, int] = {}
    behaviour: dict[str, dict[str, float]] = {}
    for split in wanted:
        pred, outputs = validation if split == val and validation else read(split)  # read once
        examples = pred.examples  # batched() reorders within chunks: every figure follows the predictions' order
        if repairer is not model:  # the same chunks, already in batched()'s order
            pred.repaired = predict(repairer, batched(examples, config.eval_batch_size), device, repair=True).repaired
        rows[split] = len(examples)
        log(f"{split}: {len(examples)} records")
        step(0, None, f"{split}: scoring the repairs")
        restored, side, behaviour[split], note = decoder_repair(examples, pred.repaired or [], plans)
        sets = sets_of(outputs)
        report[split] = figures(names, sets["interpreter"], pred.corrupted_logits, pred.accuracy, examples, restored, side)
        # what the restored share cannot show: a change toward "yes" restores it and costs the negatives
        report[split].update(
            _clean(
                {
                    "repair_negatives": behaviour[split]["negatives_repaired"],
                    "repair_accuracy": behaviour[split]["accuracy_repaired"],
                    "repair_accuracy_restored": behaviour[split]["accuracy_restored"],
                }
            )
        )
        per_model = {"repair_restored": restored}
        if config.refine.epochs:
            size = sequences_per_model(config.refine, source.config)
            log(
                f"{split}: refining the repairs ({config.refine.epochs} epochs on {size} sequences of the named sets' "
                f"data per model, lr x {config.refine.lr_scale})"
            )
            refined, restored_by_start = refined_repair(
                pred, names_of(sets["interpreter"], names), plans, config.refine, device, config.seed,
                progress=progress, label=f"{split}: refining",
            )
            report[split]["refined_repair"] = refined
            per_model["refined_restored"] = restored_by_start["decoded"]["restored"]
        per_model["answer_trace"] = answer_trace(examples, source.config.patterns, source.drawn)
        lost = np.array([e.corrupted for e in examples])
        per_model["output_only_corrupted_accuracy"] = hits(outputs["output_only"][1], lost)
        report[split]["by_corruption_rate"] = by_corruption_rate(
            examples, sets["interpreter"], pred.corrupted_logits, per_model, rates.min, rates.max
        )
        if note:
            report[split]["repair_note"] = note
        if len({e.family for e in examples}) > 1 or note:
            report[split]["by_family"] = by_family(names, examples, outputs, sets, per_model, restored_by_start if config.refine.epochs else None)
        save(split, examples, outputs, sets, per_model)
        for name in BASELINES:
            base_report[name][split] = figures(names, sets[name], *outputs[name][1:], examples)
        ensemble_report[ENSEMBLE][split] = figures(names, sets[ENSEMBLE], *outputs[ENSEMBLE][1:], examples)
    report["baselines"] = base_report
    report["ensembles"] = ensemble_report
    report["thresholds"] = thresholds
    dump_json(run_dir / "report.json", report)
    (run_dir / "report.md").write_text(render_markdown(report, rows, run_dir, source, description, behaviour))
    return report
