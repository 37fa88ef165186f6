"""Post-training weight quantization, vectorized over a population.

Weights (not biases) are rounded per model and per tensor to a few levels and
stored dequantized as float32, so a quantized model loads and runs like any
other; the record's ``quantization`` column says which grid its weights lie on.
Scales are computed over each model's true (unpadded) entries.
"""

from __future__ import annotations

import torch

from zoo.subjects.population import Population

LEVELS = {"int8": 127, "int4": 7}


def quantize_(pop: Population, scheme: str) -> None:
    """Quantize every weight matrix of ``pop`` in place (``scheme`` 'none' leaves it untouched)."""
    if scheme == "none":
        return
    params = pop.params()
    for layer, (w, _) in enumerate(params):
        head = layer == len(params) - 1
        true_count = torch.tensor(
            [_entries(a.layer_sizes, a.n_layers if head else layer, a.n_layers) for a in pop.architectures],
            dtype=w.dtype,
            device=w.device,
        )[:, None, None]
        w.copy_(quantize_weights(w, scheme, true_count.clamp_min(1)))


def _entries(sizes: tuple[int, ...], layer: int, depth: int) -> int:
    """True weight count of a model's layer (``depth`` is its head); 0 for a layer past its depth."""
    return sizes[layer] * sizes[layer + 1] if layer <= depth else 0


def quantize_weights(w: torch.Tensor, scheme: str, count: torch.Tensor) -> torch.Tensor:
    """``w [N, in, out]`` with zero padding; ``count [N, 1, 1]`` true entries per model."""
    magnitude = w.abs()
    if scheme in LEVELS:
        levels = LEVELS[scheme]
        scale = magnitude.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12) / levels
        return torch.round(w / scale).clamp(-levels, levels) * scale
    mean_abs = magnitude.sum(dim=(1, 2), keepdim=True) / count
    if scheme == "binary":
        return torch.sign(w) * mean_abs
    if scheme == "ternary":
        keep = magnitude > 0.7 * mean_abs
        kept = keep.sum(dim=(1, 2), keepdim=True).clamp_min(1)
        alpha = (magnitude * keep).sum(dim=(1, 2), keepdim=True) / kept
        return torch.sign(w) * keep * alpha
    raise ValueError(f"unknown quantization {scheme!r}")
