"""Repair judged by behaviour, for subjects of any family.

The decoded (or refined) weights are loaded into each family's population (what
``zoo.load_model`` builds one at a time) and scored on the record's own clean benchmark
set (``plan_batch(...).data.benchmark``), the set the zoo measured the clean and degraded
models on. Refinement trains any family's weights (``refine``); the decoder writes only
families with a token space (``neurons.TOKEN_SPACE``), so for the others its "repair" is the
degraded model and only the refined figures say anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from zoo.config import PatternSpace
from zoo.factory.batch import benchmark_scores
from zoo.readers.interpreter.config import RefineConfig
from zoo.readers.interpreter.data import Example
from zoo.readers.interpreter.metrics import nanmean, repair_figures
from zoo.readers.interpreter.neurons import family_groups, family_logits
from zoo.readers.interpreter.refine import Plans, refine
from zoo.readers.interpreter.train import Predictions
from zoo.subjects.population import Population, from_weights
from zoo.subjects.train import plan_groups


def _clean(value):
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def judge_repair(
    examples: list[Example], repaired: list[np.ndarray], plans: Plans
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Per model: share restored and side effect (``repair_figures``); plus mean accuracies of the
    degraded, repaired and clean models on the benchmark negatives and overall, and the share of the
    overall accuracy lost that the repair wins back (ratio of the means: a repair that buys the lost
    pattern with the negatives wins little of it)."""
    if len(repaired) != len(examples):
        raise ValueError(f"{len(repaired)} weight vectors for {len(examples)} records")
    scored: list[np.ndarray] = [np.zeros(0)] * len(examples)
    negatives, overall = np.zeros(len(examples)), np.zeros(len(examples))
    for family, chunk, population in family_groups([e.architecture for e in examples], repaired):
        scores = benchmark_scores(family, population, [plans(examples[i].batch_id) for i in chunk])
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
    found = np.full(len(examples), np.nan)
    answers = family_logits([e.architecture for e in examples], [e.degraded for e in examples], sequences)  # [models, sequences]
    for i, example in enumerate(examples):
        lost = example.metrics["corrupted_pattern"]
        others = [p for p in example.patterns if p != lost]
        kept = ~np.any([inside[o] for o in others], axis=0) if others else np.ones(len(sequences), dtype=bool)
        means = np.full(len(drawn), -np.inf)
        for k, name in enumerate(drawn):
            rows = kept & members[k]
            if name not in others and rows.any():
                means[k] = answers[i, rows].mean()
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
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """Repair figures after refinement on the ``named`` sets' data, from the decoded and (control) the degraded
    weights; and per start, each model's share restored and side effect. ``progress(done, total, what)`` follows each
    refinement (see ``zoo.progress``)."""
    starts = {"decoded": pred.repaired or [], "degraded": [e.degraded for e in pred.examples]}
    out, per_model = {}, {}
    for start, weights in starts.items():
        step = None if progress is None else (lambda done, total, what=f"{label} from the {start} weights": progress(done, total, what))
        refined = refine(pred.examples, weights, named, plans, config, device, seed, progress=step)
        restored, side, extra = judge_repair(pred.examples, refined, plans)
        per_model[start] = {"restored": restored, "side_effect": side}
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
