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

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.config import ACTIVATIONS, PatternSpace
from zoo.factory.batch import benchmark_scores
from zoo.subjects.families.mlp import FAMILY as MLP
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.config import BaselineConfig, InterpreterConfig, RefineConfig
from zoo.readers.interpreter.data import SPLITS, Example, ZooSource, batched, collate, dump_json, one_hot, open_source, stream
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
    repair_figures,
    sigmoid,
    softmax,
    top1,
)
from zoo.readers.interpreter.model import NEVER, subject_logits
from zoo.readers.interpreter.predictions import predictions_table, write_predictions
from zoo.readers.interpreter.refine import Plans, refine, sequences_per_model
from zoo.readers.interpreter.train import AdamW, Predictions, checkpoint_path, load_model, predict
from zoo.runtime import resolve_device, torch_threads
from zoo.subjects.population import Population, from_weights, logits, one_hot_inputs
from zoo.subjects.train import plan_groups

REPORT_KEYS = (
    "exact_match",
    "macro_f1",
    "per_pattern_f1",
    "corrupted_pattern_accuracy",
    "accuracy_mae",
    "repair_restored",
    "repair_side_effect",
)
BASELINES = ("weight_statistics", "output_only")
ENSEMBLE = "interpreter+output_only"
EVAL_SPLITS = ("validation", "test", "ood_architecture", "ood_patterns")


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


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


# ---------------------------------------------------------------- repair, by behaviour


def judge_repair(
    examples: list[Example], repaired: list[np.ndarray], plans: Plans
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Per model: share restored and side effect (``repair_figures``); plus mean accuracies of the
    degraded, repaired and clean models on the benchmark negatives and overall, and the share of the
    overall accuracy lost that the repair wins back (ratio of the means: a repair that buys the lost
    pattern with the negatives wins little of it)."""
    scored: list[np.ndarray] = [np.zeros(0)] * len(examples)
    negatives, overall = np.zeros(len(examples)), np.zeros(len(examples))
    for chunk, population in populations(examples, repaired):
        scores = benchmark_scores(MLP, population, [plans(examples[i].batch_id) for i in chunk])
        for slot, i in enumerate(chunk):
            scored[i] = scores.pattern_accuracy[slot, : len(examples[i].patterns)]
            negatives[i], overall[i] = scores.negative_accuracy[slot], scores.accuracy[slot]
    degraded = [np.asarray(e.metrics["degraded_pattern_accuracy"], dtype=np.float64) for e in examples]
    clean = [np.asarray(e.metrics["clean_pattern_accuracy"], dtype=np.float64) for e in examples]
    corrupted = [e.patterns.index(e.metrics["corrupted_pattern"]) for e in examples]
    restored, side = repair_figures(scored, degraded, clean, corrupted)
    def mean(values) -> float:
        return float(np.mean(values)) if len(examples) else float("nan")

    extra = {
        "negatives_degraded": mean([e.metrics["degraded_negative_accuracy"] for e in examples]),
        "negatives_repaired": mean(negatives),
        "negatives_clean": mean([e.metrics["clean_negative_accuracy"] for e in examples]),
        "accuracy_degraded": mean([e.metrics["degraded_accuracy"] for e in examples]),
        "accuracy_repaired": mean(overall),
        "accuracy_clean": mean([e.metrics["clean_accuracy"] for e in examples]),
    }
    lost = extra["accuracy_clean"] - extra["accuracy_degraded"]
    extra["accuracy_restored"] = (extra["accuracy_repaired"] - extra["accuracy_degraded"]) / lost if lost > 0 else float("nan")
    return restored, side, extra


def populations(examples: list[Example], weights: list[np.ndarray], size: int = 32) -> Iterator[tuple[list[int], Population]]:
    """``examples`` with ``weights`` (flat, ``Architecture.layout``) as padded populations of at most ``size``
    models, each with the indices of its members: many subjects run in one batched computation."""
    if len(weights) != len(examples):
        raise ValueError(f"{len(weights)} weight vectors for {len(examples)} records")
    architectures = [e.architecture for e in examples]
    for chunk in plan_groups(architectures, size):
        yield chunk, from_weights([architectures[i] for i in chunk], [weights[i] for i in chunk])


def answer_trace(
    examples: list[Example], space: PatternSpace, drawn: Sequence[str], per_pattern: int = 1024, seed: int = 0
) -> np.ndarray:
    """Per model: does its corrupted pattern get the highest mean logit among the patterns it was not otherwise
    trained on? (1.0 or 0.0; nan without candidates.)

    A reader with no parameters, told the model's other patterns: it names the candidate whose sequences (up to
    ``per_pattern``, those of no other member) the model still accepts most, i.e. whose flipped labels still show
    in its answers. Where it does no better than a guess, the mean answer no longer shows the pattern; a reader
    trained on the answers (the output-only baseline) can still find it there, which is why the report shows both.
    """
    from zoo.patterns.library import pattern_library

    library = pattern_library(space)
    rng = np.random.default_rng(seed)
    pools = [np.unique(library[n].generate(rng, per_pattern, space.vocab_size, space.seq_len), axis=0) for n in drawn]
    owner = np.repeat(np.arange(len(drawn)), [len(pool) for pool in pools])  # which candidate each sequence stands for
    sequences = np.concatenate(pools)
    inside = {o: library[o].predicate(sequences) for o in library}  # [o]: which sequences pattern o holds
    members = [owner == k for k in range(len(drawn))]
    x = one_hot_inputs(torch.as_tensor(sequences), space.vocab_size)
    found = np.full(len(examples), np.nan)
    for chunk, population in populations(examples, [e.degraded for e in examples]):
        answers = logits(population, x.expand(population.size, -1, -1)).numpy()  # [models, sequences]
        for slot, i in enumerate(chunk):
            lost = examples[i].metrics["corrupted_pattern"]
            others = [p for p in examples[i].patterns if p != lost]
            kept = ~np.any([inside[o] for o in others], axis=0) if others else np.ones(len(sequences), dtype=bool)
            means = np.full(len(drawn), -np.inf)
            for k, name in enumerate(drawn):
                rows = kept & members[k]
                if name not in others and rows.any():
                    means[k] = answers[slot, rows].mean()
            target = drawn.index(lost) if lost in drawn else -1
            if target >= 0 and np.isfinite(means[target]):  # else every lost sequence is another member's
                found[i] = float(int(np.argmax(means)) == target)
    return found


def refined_repair(
    pred: Predictions,
    named: list[list[str]],
    plans: Plans,
    config: RefineConfig,
    device: torch.device,
    seed: int,
    progress=None,
    label: str = "refining",
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Repair figures after refinement on the ``named`` sets' data, from the decoded and (control) the degraded
    weights; and per start, each model's share restored. ``progress(done, total, what)`` follows each
    refinement (see ``zoo.progress``)."""
    starts = {"decoded": pred.repaired or [], "degraded": [e.degraded for e in pred.examples]}
    out, per_model = {}, {}
    for start, weights in starts.items():
        step = None if progress is None else (lambda done, total, what=f"{label} from the {start} weights": progress(done, total, what))
        refined = refine(pred.examples, weights, named, plans, config, device, seed, progress=step)
        restored, side, extra = judge_repair(pred.examples, refined, plans)
        per_model[start] = restored
        out[start] = _clean(
            {
                "repair_restored": nanmean(restored),
                "repair_side_effect": nanmean(side),
                "negatives": extra["negatives_repaired"],
                "accuracy": extra["accuracy_repaired"],
                "accuracy_restored": extra["accuracy_restored"],
            }
        )
    return out, per_model


# ---------------------------------------------------------------- baselines


def weight_statistics(examples: list[Example], max_layers: int) -> np.ndarray:
    """Per layer (hidden layers up to ``max_layers``, then the head): 10 weight and 4 bias statistics,
    plus depth, log width and the activation: ``[n, 14 * (max_layers + 1) + 7]``."""
    rows = []
    for e in examples:
        arch = e.architecture
        entries = arch.layout()
        slots = np.zeros((max_layers + 1, 15), dtype=np.float32)
        for layer in range(arch.n_layers + 1):
            w, b = entries[2 * layer], entries[2 * layer + 1]
            weights = e.degraded[w.offset : w.offset + w.size]
            bias = e.degraded[b.offset : b.offset + b.size]
            slot = max_layers if layer == arch.n_layers else min(layer, max_layers - 1)
            q = np.quantile(weights, [0.05, 0.25, 0.5, 0.75, 0.95])
            slots[slot] = [
                1.0, weights.mean(), weights.std(), weights.min(), weights.max(), np.abs(weights).mean(), *q,
                bias.mean(), bias.std(), bias.min(), bias.max(),
            ]
        act = np.zeros(len(ACTIVATIONS), dtype=np.float32)
        if arch.activation in ACTIVATIONS:
            act[ACTIVATIONS.index(arch.activation)] = 1.0
        rows.append(np.concatenate([slots.ravel(), [arch.n_layers / max_layers, np.log(max(arch.widths))], act]))
    return np.asarray(rows, dtype=np.float32)


def output_logits(examples: list[Example], probe_tokens: np.ndarray, vocab_size: int, batch_size: int = 64) -> np.ndarray:
    """Each degraded subject's logits on the probe set: ``[n, n_probes]``."""
    x = one_hot(probe_tokens, vocab_size)
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = collate(chunk)
            out.append(subject_logits(batch, batch.degraded, x).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(probe_tokens)), dtype=np.float32)


@dataclass
class BaselineModel:
    """A small MLP with the interpreter's three heads, on fixed features."""

    net: torch.nn.Module
    mean: np.ndarray
    std: np.ndarray
    undrawn: np.ndarray  # [V] bool: patterns the zoo never draws, which a baseline never names either

    @classmethod
    def fit(cls, features: np.ndarray, examples: list[Example], undrawn: np.ndarray, config: BaselineConfig, seed: int) -> BaselineModel:
        n_patterns = len(undrawn)
        torch.manual_seed(seed)
        mean, std = features.mean(0), features.std(0) + 1e-6
        x = torch.from_numpy((features - mean) / std).float()
        targets = torch.from_numpy(np.stack([e.targets for e in examples]))
        corrupted = torch.tensor([e.corrupted for e in examples])
        accuracy = torch.tensor([e.accuracy for e in examples], dtype=torch.float32)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], config.hidden),
            torch.nn.GELU(),
            torch.nn.Linear(config.hidden, config.hidden),
            torch.nn.GELU(),
            torch.nn.Linear(config.hidden, 2 * n_patterns + 1),
        )
        opt = AdamW(net.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
        for _ in range(config.epochs):
            out = net(x)
            loss = (
                F.binary_cross_entropy_with_logits(out[:, :n_patterns], targets)
                + F.cross_entropy(out[:, n_patterns : 2 * n_patterns], corrupted)
                + 10.0 * F.mse_loss(torch.sigmoid(out[:, -1]), accuracy)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        return cls(net.eval(), mean, std, undrawn)

    def outputs(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pattern-set and corrupted-pattern logits (``NEVER`` for undrawn patterns) and accuracy."""
        with torch.no_grad():
            out = self.net(torch.from_numpy((features - self.mean) / self.std).float()).numpy()
        k = len(self.undrawn)
        patterns, corrupted = out[:, :k], out[:, k : 2 * k]
        patterns[:, self.undrawn] = NEVER
        corrupted[:, self.undrawn] = NEVER
        return patterns, corrupted, sigmoid(out[:, -1])

    def probabilities(self, features: np.ndarray) -> Readout:
        patterns, corrupted, accuracy = self.outputs(features)
        return sigmoid(patterns), corrupted, accuracy


def ensemble(pred: Predictions, baseline: BaselineModel, features: np.ndarray, weight: float) -> Readout:
    """Set probabilities, corrupted-pattern log-probabilities and accuracy of the interpreter averaged with a baseline.

    The interpreter reads neuron signatures and the output-only baseline the subject's
    answers on the probes; they err on different models (the baseline names the corrupted
    pattern better at 90%+ corruption, the interpreter below), so their mean beats both.
    """
    patterns, corrupted, accuracy = baseline.outputs(features)
    pattern_probs = weight * pred.pattern_probs + (1.0 - weight) * sigmoid(patterns)
    corrupted = np.log(weight * softmax(pred.corrupted_logits) + (1.0 - weight) * softmax(corrupted) + 1e-12)
    return pattern_probs, corrupted, weight * pred.accuracy + (1.0 - weight) * accuracy


def readouts(pred: Predictions, features: dict[str, np.ndarray], baselines: dict[str, BaselineModel], weight: float) -> dict[str, Readout]:
    """Every reader's outputs on the same examples: the interpreter, the baselines, the ensemble."""
    out = {"interpreter": (pred.pattern_probs, pred.corrupted_logits, pred.accuracy)}
    for name, baseline in baselines.items():
        out[name] = baseline.probabilities(features[name])
    out[ENSEMBLE] = ensemble(pred, baselines["output_only"], features["output_only"], weight)
    return out


# ---------------------------------------------------------------- the report


def _feature_sets(source: ZooSource, examples: list[Example]) -> dict[str, np.ndarray]:
    probe = source.probe
    return {
        "weight_statistics": weight_statistics(examples, max(s.layers.max for s in source.config.spaces("mlp"))),
        "output_only": output_logits(examples, probe.tokens, source.config.patterns.vocab_size),
    }


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
        restored, side, behaviour[split] = judge_repair(examples, pred.repaired or [], plans)
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
            per_model["refined_restored"] = restored_by_start["decoded"]
        per_model["answer_trace"] = answer_trace(examples, source.config.patterns, source.drawn)
        lost = np.array([e.corrupted for e in examples])
        per_model["output_only_corrupted_accuracy"] = hits(outputs["output_only"][1], lost)
        report[split]["by_corruption_rate"] = by_corruption_rate(
            examples, sets["interpreter"], pred.corrupted_logits, per_model, rates.min, rates.max
        )
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
