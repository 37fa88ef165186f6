"""A planted dictionary: synthetic activations made of known sparse features in superposition.

``n_features`` unit directions in ``d`` dimensions (more features than dimensions:
superposition). Each token switches each feature on independently with probability
``active / n_features`` (so ``active`` features per token on average), with a magnitude
drawn uniformly from ``magnitude``; the activation is the sum of the active features'
directions times their magnitudes, plus optional isotropic Gaussian noise of standard
deviation ``noise``. The training and held-out splits are independent draws over the same
features. The per-token on/off labels are the ground truth that ``autointerp`` scores
latents against, and ``metrics.match_directions(features, W_dec)`` measures recovery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.readers.sae.spec import SAEError, Stream


@dataclass(eq=False)
class Planted:
    features: np.ndarray  # [n_features, d] unit rows
    train: np.ndarray  # [tokens, d]
    val: np.ndarray  # [val_tokens, d]
    train_labels: np.ndarray  # [tokens, n_features] bool: feature on at this token
    val_labels: np.ndarray  # [val_tokens, n_features] bool
    val_codes: np.ndarray  # [val_tokens, n_features] magnitudes (0 when off)

    def stream(self, name: str = "planted") -> Stream:
        return Stream(name=name, train=self.train, val=self.val)


def _draw(rng: np.random.Generator, features: np.ndarray, tokens: int, p: float, magnitude, noise: float):
    on = rng.random((tokens, len(features))) < p
    codes = np.where(on, rng.uniform(magnitude[0], magnitude[1], size=on.shape), 0.0)
    x = codes @ features
    if noise:
        x = x + rng.normal(0.0, noise, size=x.shape)
    return x.astype(np.float32), on, codes.astype(np.float32)


def planted_dictionary(
    n_features: int = 64,
    d: int = 32,
    tokens: int = 20_000,
    val_tokens: int = 4_000,
    active: float = 3.0,
    magnitude: tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
    seed: int = 0,
) -> Planted:
    if n_features < 1 or d < 1 or tokens < 1 or val_tokens < 1:
        raise SAEError("planted_dictionary needs n_features, d, tokens and val_tokens of at least 1")
    if not 0 < active <= n_features:
        raise SAEError(f"active={active} must lie in (0, n_features={n_features}]")
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_features, d))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    p = active / n_features
    train, train_on, _ = _draw(rng, features, tokens, p, magnitude, noise)
    val, val_on, val_codes = _draw(rng, features, val_tokens, p, magnitude, noise)
    return Planted(features.astype(np.float32), train, val, train_on, val_on, val_codes)
