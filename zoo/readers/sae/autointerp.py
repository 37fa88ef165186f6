"""Ground-truth autointerp: every latent scored as a detector of every known binary feature, no language model.

Inputs: latent activations ``acts [tokens, L]`` (SAE latents, transcoder latents, raw neurons)
and per-token labels ``labels [tokens, F]`` (bool: the feature holds at this token; one
column per value of a categorical label, one-hot).

- AUROC of latent l for feature f: the probability that a token where f holds gets a higher
  activation than one where it does not, ties counting one half (Mann-Whitney U over average
  ranks; exact). Computed for all pairs at once: ``labels.T @ ranks``. Not flipped: a latent
  that is low where f holds scores below 0.5.
- Best-threshold F1: the largest F1 of the rule ``act >= t`` over ``n_thresholds`` candidate
  thresholds per latent, the quantiles (levels 0, 1/n, ..., (n-1)/n) of its values above its
  minimum (for an SAE latent: of its nonzero activations; level 0 is "fires at all"). One
  ``[L, T] @ [T, F]`` product per candidate.
- ``summarize``: per latent its best feature (precision view), per feature its best latent
  (recall view), a one-to-one assignment of latents to features maximizing total AUROC
  (Hungarian) and its mean AUROC and F1, coverage (share of features with some latent at
  AUROC >= ``threshold``, 0.9), uniqueness (distinct best features among latents above the
  threshold, over their number) and absorption (share of features that are the best feature,
  above the threshold, of two or more latents).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.readers.sae.metrics import linear_sum_assignment
from zoo.readers.sae.spec import SAEError


@dataclass(eq=False)
class Scores:
    auroc: np.ndarray  # [L, F]
    f1: np.ndarray  # [L, F] best-threshold F1
    threshold: np.ndarray  # [L, F] the threshold that gave it
    positives: np.ndarray  # [F] tokens where each feature holds
    features: list[str]


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of each column of ``x [T, L]``, ties sharing their average rank."""
    T = x.shape[0]
    order = np.argsort(x, axis=0, kind="stable")
    s = np.take_along_axis(x, order, axis=0)
    pos = np.arange(T)[:, None]
    new_run = np.ones_like(s, dtype=bool)
    new_run[1:] = s[1:] != s[:-1]
    start = np.maximum.accumulate(np.where(new_run, pos, 0), axis=0)
    end_run = np.ones_like(s, dtype=bool)
    end_run[:-1] = s[1:] != s[:-1]
    end = np.minimum.accumulate(np.where(end_run, pos, T - 1)[::-1], axis=0)[::-1]
    ranks = np.empty_like(s, dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=0)
    return ranks


def score_latents(
    acts, labels, features: list[str] | None = None, n_thresholds: int = 16, chunk: int = 2**22
) -> Scores:
    acts = _np(acts).astype(np.float32)
    labels = _np(labels).astype(bool)
    if acts.ndim != 2 or labels.ndim != 2:
        raise SAEError(f"acts and labels must be 2-D [tokens, L] / [tokens, F], got {acts.shape}, {labels.shape}")
    T, L = acts.shape
    if T == 0:
        raise SAEError("no tokens to score (empty activations)")
    if labels.shape[0] != T:
        raise SAEError(f"{T} tokens of activations but {labels.shape[0]} of labels")
    if n_thresholds < 1:
        raise SAEError(f"n_thresholds must be at least 1, got {n_thresholds}")
    F = labels.shape[1]
    features = list(features) if features is not None else [f"f{j}" for j in range(F)]
    if len(features) != F:
        raise SAEError(f"{len(features)} feature names for {F} label columns")
    y = labels.astype(np.float64)
    n_pos = y.sum(axis=0)
    n_neg = T - n_pos
    auroc = np.empty((L, F))
    f1 = np.zeros((L, F))
    best_t = np.full((L, F), np.nan)
    step = max(1, chunk // max(T, 1))
    levels = np.arange(n_thresholds) / n_thresholds
    for lo in range(0, L, step):
        a = acts[:, lo : lo + step]
        rank_sums = average_ranks(a).T @ y  # [l, F]
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc[lo : lo + step] = (rank_sums - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        minimum = a.min(axis=0)
        above = np.where(a > minimum, a, np.nan)
        has = ~np.isnan(above).all(axis=0)
        cand = np.full((n_thresholds, a.shape[1]), np.inf, dtype=np.float32)
        if has.any():
            cand[:, has] = np.nanquantile(above[:, has], levels, axis=0, method="lower")
        for t in cand:
            pred = (a >= t).astype(np.float64)  # [T, l]
            tp = pred.T @ y
            with np.errstate(invalid="ignore", divide="ignore"):
                score = np.nan_to_num(2 * tp / (pred.sum(axis=0)[:, None] + n_pos[None, :]))
            better = score > f1[lo : lo + step]
            f1[lo : lo + step] = np.where(better, score, f1[lo : lo + step])
            best_t[lo : lo + step] = np.where(better, t[:, None], best_t[lo : lo + step])
    return Scores(auroc=auroc, f1=f1, threshold=best_t, positives=n_pos.astype(np.int64), features=features)


def summarize(scores: Scores, threshold: float = 0.9) -> dict:
    """Precision and recall views, the one-to-one assignment, coverage, uniqueness and absorption."""
    auroc = np.nan_to_num(scores.auroc, nan=0.5)
    L, F = auroc.shape
    best_feature = auroc.argmax(axis=1)
    best_latent = auroc.argmax(axis=0)
    rows, cols = linear_sum_assignment(-auroc)  # latents, features (min(L, F) pairs)
    good = auroc[np.arange(L), best_feature] >= threshold
    claimed = np.bincount(best_feature[good], minlength=F)
    return {
        "latents": L,
        "features": F,
        "threshold": threshold,
        "per_latent": [
            {"latent": int(l), "feature": scores.features[f], "auroc": float(auroc[l, f]), "f1": float(scores.f1[l, f])}
            for l, f in enumerate(best_feature)
        ],
        "per_feature": [
            {"feature": scores.features[f], "latent": int(l), "auroc": float(auroc[l, f]), "f1": float(scores.f1[l, f]),
             "positives": int(scores.positives[f])}
            for f, l in enumerate(best_latent)
        ],  # fmt: skip
        "assignment": [{"latent": int(l), "feature": scores.features[f]} for l, f in zip(rows, cols)],
        "assignment_auroc": float(auroc[rows, cols].mean()),
        "assignment_f1": float(scores.f1[rows, cols].mean()),
        "coverage": float((auroc.max(axis=0) >= threshold).mean()),
        "mean_best_f1": float(scores.f1.max(axis=0).mean()),
        "uniqueness": float(len(set(best_feature[good].tolist())) / good.sum()) if good.any() else 0.0,
        "absorption": float((claimed >= 2).mean()),
    }
