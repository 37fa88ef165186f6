"""Architecture-independent fingerprints: every neuron's statistics over the fixed probe set.

Computed for a whole population in one forward pass; each model's matrix is then
cut to its own layers and widths, so a reader can treat neurons as tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from zoo.config import SignatureConfig
from zoo.patterns.sampler import ProbeSet
from zoo.subjects.architecture import Architecture
from zoo.subjects.population import Population, forward, one_hot_inputs


def stat_names(config: SignatureConfig, probe_names: tuple[str, ...]) -> list[str]:
    """Column names of the signature matrix, e.g. ``mean`` or ``pattern_mean:palindrome``."""
    names = []
    for stat in config.statistics:
        if stat == "pattern_mean":
            names += [f"pattern_mean:{p}" for p in (*probe_names, "none")]
        else:
            names.append(stat)
    if config.activations == "both":
        return [f"{source}:{n}" for source in ("pre", "post") for n in names]
    return names


def neuron_layers(arch: Architecture) -> np.ndarray:
    """Layer index of every neuron; the output logit is layer ``n_layers``."""
    return np.concatenate([np.full(w, i, dtype=np.int16) for i, w in enumerate(arch.widths)] + [
        np.array([arch.n_layers], dtype=np.int16)
    ])


def _membership(probe: ProbeSet, device: torch.device) -> torch.Tensor:
    """``[P, C]`` averaging weights: column c averages the probes of pattern c (last: negatives)."""
    classes = np.where(probe.pattern >= 0, probe.pattern, len(probe.names))
    one_hot = np.eye(len(probe.names) + 1, dtype=np.float32)[classes]
    one_hot /= np.maximum(one_hot.sum(0, keepdims=True), 1.0)
    return torch.from_numpy(one_hot).to(device)


def _stats(values: torch.Tensor, pre: torch.Tensor, config: SignatureConfig, member: torch.Tensor) -> torch.Tensor:
    """``values [N, P, H]`` over probes -> ``[N, H, n_stats]``."""
    columns = []
    for stat in config.statistics:
        if stat == "mean":
            columns.append(values.mean(1)[..., None])
        elif stat == "std":
            columns.append(values.std(1, correction=0)[..., None])
        elif stat == "min":
            columns.append(values.amin(1)[..., None])
        elif stat == "max":
            columns.append(values.amax(1)[..., None])
        elif stat == "frac_active":
            columns.append((pre > 0).to(values.dtype).mean(1)[..., None])
        elif stat == "pattern_mean":
            columns.append(torch.einsum("nph,pc->nhc", values, member))
    return torch.cat(columns, dim=2)


def signatures(pop: Population, probe: ProbeSet, config: SignatureConfig) -> list[np.ndarray]:
    """Each model's ``[n_neurons, n_stats]`` float32 matrix, neurons ordered as ``neuron_layers``."""
    device = pop.device
    vocab = pop.architectures[0].vocab_size
    x = one_hot_inputs(torch.as_tensor(probe.tokens, device=device), vocab)
    x = x.unsqueeze(0).expand(pop.size, *x.shape).contiguous()
    member = _membership(probe, device)
    sources = ("pre", "post") if config.activations == "both" else (config.activations,)
    with torch.no_grad():
        logits, pres, posts = forward(pop, x)
        out = logits.unsqueeze(-1)
        layers = []
        for pre, post in zip([*pres, out], [*(p[..., :-1] for p in posts), out]):
            chosen = {"pre": pre, "post": post}
            layers.append(torch.cat([_stats(chosen[s], pre, config, member) for s in sources], dim=2).cpu().numpy())
    result = []
    for row, arch in enumerate(pop.architectures):
        parts = [layers[i][row, :width] for i, width in enumerate(arch.widths)]
        parts.append(layers[-1][row])
        result.append(np.concatenate(parts).astype(np.float32))
    return result
