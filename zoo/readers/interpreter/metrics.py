"""Figures of the evaluation report: pure numpy functions of predictions and truths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Readout = tuple[np.ndarray, np.ndarray, np.ndarray]  # set probabilities [n, V], corrupted logits [n, V], accuracy [n]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # no overflow for large negative logits


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def with_corrupted(sets: np.ndarray, corrupted_logits: np.ndarray) -> np.ndarray:
    """``[n, V]`` 0/1 pattern sets with the predicted corrupted pattern added.

    Every model read is a degraded one, trained on the pattern it lost; that pattern no
    longer shows in its answers (at a 90%+ corruption rate it is hard to tell from one never
    trained), so the corrupted-pattern head decides its membership better than the set head.
    """
    sets = sets.astype(np.float32)
    if len(sets):
        sets[np.arange(len(sets)), corrupted_logits.argmax(1)] = 1.0
    return sets


@dataclass(frozen=True)
class SetSpace:
    """The pattern sets a zoo's models can have: ``low`` to ``high`` patterns (``patterns.per_batch``),
    each one the zoo draws (``drawn``, ``[V]`` bool). A predicted set outside is wrong whatever it holds."""

    low: int
    high: int
    drawn: np.ndarray


def within(sets: np.ndarray, probs: np.ndarray, corrupted_logits: np.ndarray, space: SetSpace) -> np.ndarray:
    """``[n, V]`` sets brought into ``space``: one too small takes the most probable drawn patterns it
    lacks, one too large drops its least probable ones (never the corrupted head's choice).

    A strict set threshold leaves a reader unsure of a model's second pattern with the corrupted
    one alone; this names its best guess instead.
    """
    sets = sets.astype(bool)
    n, width = sets.shape
    rows = np.arange(n)[:, None]

    def first(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Per row, the ``counts`` entries of lowest score (ties: the lower index)."""
        ranks = np.empty((n, width), dtype=np.int64)
        ranks[rows, np.argsort(scores, axis=1, kind="stable")] = np.arange(width)
        return ranks < counts[:, None]

    lacking = ~sets & space.drawn
    grow = np.clip(space.low - sets.sum(1), 0, lacking.sum(1))
    sets = sets | (first(np.where(lacking, -probs, np.inf), grow) & lacking)
    kept = np.zeros_like(sets)
    kept[np.arange(n), corrupted_logits.argmax(1)] = True
    shrink = np.clip(sets.sum(1) - space.high, 0, None)
    sets = sets & ~first(np.where(sets & ~kept, probs, np.inf), shrink)
    return sets.astype(np.float32)


def read_sets(
    probs: np.ndarray, corrupted_logits: np.ndarray, threshold: float, space: SetSpace | None = None
) -> np.ndarray:
    """A reader's ``[n, V]`` pattern sets: the patterns above ``threshold``, the corrupted head's choice
    added (``with_corrupted``), brought into ``space`` (``within``) when given."""
    sets = with_corrupted(probs > threshold, corrupted_logits)
    return sets if space is None else within(sets, probs, corrupted_logits, space)


def names_of(sets: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """``[n, V]`` 0/1 sets as lists of pattern names."""
    return [[names[j] for j in np.flatnonzero(row)] for row in sets]


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def choose_threshold(
    probs: np.ndarray,
    corrupted_logits: np.ndarray,
    true: np.ndarray,
    grid: Sequence[float] = THRESHOLDS,
    space: SetSpace | None = None,
) -> float:
    """The ``grid`` value whose sets ``read_sets(probs, corrupted_logits, t, space)`` match ``true`` exactly most often.

    A reader unsure which pattern was corrupted gives each candidate a middling set
    probability; the corrupted head already adds its choice, so the set head is best
    trusted only where it is sure, and how sure is a property of the reader. Ties go to the
    first value (``THRESHOLDS`` ascends).
    """
    scores = [exact_match(read_sets(probs, corrupted_logits, t, space), true) for t in grid]
    return float(grid[int(np.argmax(scores))])


def exact_match(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of models whose predicted pattern set (``[n, V]`` 0/1) equals the true one."""
    if len(true) == 0:
        return float("nan")
    return float((pred.astype(bool) == true.astype(bool)).all(axis=1).mean())


def per_pattern_f1(pred: np.ndarray, true: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """F1 of every pattern that occurs in ``true`` or is predicted at least once."""
    pred, true = pred.astype(bool), true.astype(bool)
    scores = {}
    for k, name in enumerate(names):
        tp = int((pred[:, k] & true[:, k]).sum())
        fp = int((pred[:, k] & ~true[:, k]).sum())
        fn = int((~pred[:, k] & true[:, k]).sum())
        if tp + fp + fn == 0:
            continue
        scores[name] = 2 * tp / (2 * tp + fp + fn)
    return scores


def macro_f1(pred: np.ndarray, true: np.ndarray, names: Sequence[str]) -> float:
    scores = per_pattern_f1(pred, true, names)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row: 1.0 where the highest logit is the label's."""
    return (logits.argmax(axis=1) == labels).astype(np.float64)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float(hits(logits, labels).mean())


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.abs(pred - true).mean()) if len(true) else float("nan")


def repair_figures(
    repaired: np.ndarray, degraded: np.ndarray, clean: np.ndarray, corrupted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per model: the share of the corrupted pattern's lost accuracy restored, and the mean
    drop of the other patterns (degraded minus repaired; positive is a loss).

    Arguments are lists of per-pattern accuracy arrays (a model's own patterns) and the
    corrupted pattern's position among them.
    """
    restored, side = [], []
    for rep, deg, cln, c in zip(repaired, degraded, clean, corrupted):
        rep, deg, cln = (np.asarray(a, dtype=np.float64) for a in (rep, deg, cln))
        lost = cln[c] - deg[c]
        restored.append((rep[c] - deg[c]) / lost if lost > 0 else np.nan)
        others = np.delete(np.arange(len(deg)), c)
        side.append(float(np.nanmean(deg[others] - rep[others])) if len(others) else 0.0)
    return np.asarray(restored, dtype=np.float64), np.asarray(side, dtype=np.float64)


def nanmean(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.isnan(values).all():
        return None
    return float(np.nanmean(values))
