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


LM_CHUNK = 16
"""Probe sentences per model per forward pass of a language-model signature (bounds activations' memory)."""


def language_stat_names(config: SignatureConfig) -> list[str]:
    """Signature columns of a language zoo: ``stat_names`` without ``pattern_mean`` (there are no patterns)."""
    kept = [s for s in config.statistics if s != "pattern_mean"]
    return stat_names(config.model_copy(update={"statistics": kept}), ())


class _Moments:
    """Running per-unit statistics over token positions: ``[N, H]`` sums, squares, extremes, active counts."""

    def __init__(self) -> None:
        self.count = self.sum = self.squares = self.low = self.high = self.active = None

    def add(self, values: torch.Tensor, pre: torch.Tensor, real: torch.Tensor) -> None:
        """``values``/``pre`` ``[N, B, T, H]``, ``real [N, B, T]`` bool (non-pad positions)."""
        v, m = values.double(), real[..., None]
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=v.device)
        parts = (
            m.double().flatten(1, 2).sum(1),
            (v * m).flatten(1, 2).sum(1),
            (v * v * m).flatten(1, 2).sum(1),
            torch.where(m, v, inf).flatten(1, 2).amin(1),
            torch.where(m, v, -inf).flatten(1, 2).amax(1),
            ((pre > 0) & m).double().flatten(1, 2).sum(1),
        )
        if self.count is None:
            self.count, self.sum, self.squares, self.low, self.high, self.active = parts
            return
        self.count, self.sum, self.squares = self.count + parts[0], self.sum + parts[1], self.squares + parts[2]
        self.low, self.high = torch.minimum(self.low, parts[3]), torch.maximum(self.high, parts[4])
        self.active = self.active + parts[5]

    def stats(self, statistics: list[str]) -> torch.Tensor:
        """``[N, H, len(statistics)]`` float64."""
        n = self.count.clamp_min(1.0)
        mean = self.sum / n
        table = {
            "mean": mean,
            "std": (self.squares / n - mean * mean).clamp_min(0.0).sqrt(),
            "min": self.low,
            "max": self.high,
            "frac_active": self.active / n,
        }
        return torch.stack([table[s] for s in statistics], dim=2)


def language_signatures(family: Family, pop, tokens: np.ndarray, config: SignatureConfig) -> list[np.ndarray]:
    """Each language model's ``[n_neurons, n_stats]`` matrix over every real token of its probe corpus.

    ``tokens [N, P, T]``: model ``i`` reads row ``i`` (its grammar's corpus). Statistics are
    taken over all (sentence, position) pairs before the padding, in chunks of ``LM_CHUNK``
    sentences (in order of length, so each chunk is cut to its longest sentence), with
    running sums in float64; ``pattern_mean`` is left out (``language_stat_names``)."""
    from zoo.languages.grammar import PAD
    from zoo.subjects.transformer_lm import trim

    statistics = [s for s in config.statistics if s != "pattern_mean"]
    sources = ("pre", "post") if config.activations == "both" else (config.activations,)
    archs = pop.architectures
    sites = {(s.pre, s.post): s for a in archs for s in family.signature_sites(a)}
    moments = {(key, src): _Moments() for key in sites for src in sources}
    x = torch.as_tensor(tokens, device=pop.device)
    order = torch.as_tensor(np.argsort((tokens != PAD).sum(-1).max(0), kind="stable"), device=pop.device)
    x = x[:, order]
    for start in range(0, x.shape[1], LM_CHUNK):
        chunk = trim(x[:, start : start + LM_CHUNK])
        points = family.activations(pop, chunk)
        real = chunk != PAD
        for key in sites:
            pre = _true_units(pop, key[0], points[key[0]])
            chosen = {"pre": pre, "post": _true_units(pop, key[1], points[key[1]])}
            for src in sources:
                moments[(key, src)].add(chosen[src], pre, real)
    result = []
    for row, arch in enumerate(archs):
        parts = []
        for site in family.signature_sites(arch):
            key = (site.pre, site.post)
            stats = torch.cat([moments[(key, src)].stats(statistics)[row, : site.width] for src in sources], dim=1)
            parts.append(stats.cpu().numpy())
        result.append(np.concatenate(parts).astype(np.float32))
    return result


def _true_units(pop, name: str, values: torch.Tensor) -> torch.Tensor:
    """Hidden units in each model's own order where padded GroupMax groups reorder them."""
    index = getattr(pop, "unit_index", None)
    if index is None or not name.endswith((".ffn.pre", ".ffn.post")):
        return values
    n, b, t, _ = values.shape
    return values.gather(-1, index[:, None, None, :].expand(n, b, t, -1))
