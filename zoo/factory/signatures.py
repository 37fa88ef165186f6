"""Architecture-independent fingerprints: every neuron's statistics over the fixed probe set.

Computed for a whole population of any family in one forward pass, from the
family's hookpoints; each model's matrix is then cut to its own signature sites, so a
reader can treat neurons as tokens whatever the architecture.
"""

from __future__ import annotations

import numpy as np
import torch

from zoo.config import SignatureConfig
from zoo.patterns.sampler import ProbeSet
from zoo.subjects.families import Family, SignatureSite


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


def signatures(family: Family, pop, probe: ProbeSet, config: SignatureConfig) -> list[np.ndarray]:
    """Each model's ``[n_neurons, n_stats]`` float32 matrix, rows in the order of its signature sites.

    One forward pass of the whole population over the probe set gives every hookpoint;
    statistics are taken over the padded population, then each model keeps its own sites'
    first ``width`` units.
    """
    tokens = torch.as_tensor(probe.tokens, device=pop.device)
    points = family.activations(pop, tokens.unsqueeze(0).expand(len(pop.architectures), *tokens.shape))
    member = _membership(probe, pop.device)
    sources = ("pre", "post") if config.activations == "both" else (config.activations,)
    cache: dict[tuple[str, str], np.ndarray] = {}

    def site_stats(site: SignatureSite) -> np.ndarray:
        key = (site.pre, site.post)
        if key not in cache:
            chosen = {"pre": points[site.pre], "post": points[site.post]}
            with torch.no_grad():
                cache[key] = torch.cat(
                    [_stats(chosen[s], chosen["pre"], config, member) for s in sources], dim=2
                ).cpu().numpy()
        return cache[key]

    result = []
    for row, arch in enumerate(pop.architectures):
        parts = [site_stats(site)[row, : site.width] for site in family.signature_sites(arch)]
        result.append(np.concatenate(parts).astype(np.float32))
    return result
