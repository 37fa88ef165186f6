"""Accuracy of many models on labelled sets, per pattern: pure array functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Per-model figures on one labelled set (arrays over the population)."""

    pattern_accuracy: np.ndarray  # [N, K]: share of each pattern's positives called positive (NaN if absent)
    negative_accuracy: np.ndarray  # [N]
    accuracy: np.ndarray  # [N]
    loss: np.ndarray  # [N]


def score(logits: np.ndarray, pattern: np.ndarray, n_patterns: int) -> Scores:
    """``logits [N, M]``, ``pattern [N, M]`` (index of the sample's pattern, -1 for negatives)."""
    labels = (pattern >= 0).astype(np.float32)
    correct = (logits > 0) == (labels > 0)
    loss = np.logaddexp(0.0, logits) - labels * logits
    per_pattern = np.full((logits.shape[0], n_patterns), np.nan, dtype=np.float32)
    for k in range(n_patterns):
        member = pattern == k
        count = member.sum(1)
        hits = (correct & member).sum(1)
        per_pattern[:, k] = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    negative = pattern < 0
    negative_accuracy = (correct & negative).sum(1) / np.maximum(negative.sum(1), 1)
    return Scores(
        pattern_accuracy=per_pattern,
        negative_accuracy=negative_accuracy.astype(np.float32),
        accuracy=correct.mean(1).astype(np.float32),
        loss=loss.mean(1).astype(np.float32),
    )
