"""What the interpreter reads of a neuron whatever the subject's family, and where a family offers more.

Every family's records hold the same things per neuron (``zoo.subjects.families.base``): a
signature row, a signature site's kind (``hidden``, ``output``; transformers ``ffn``,
``resid``, ``output``) and layer, and the subject itself, which ``Family.activations`` runs
on the zoo's probe set. The family-agnostic reading path is built from those alone: a
neuron token is its signature row, its kind and depth, and its value on every probe (the
post-activation hookpoint of its site, the signature before it is summarized); the
subject's answers are its ``output`` neuron's values.

A family may offer a reader of its own. The MLP family's is the token-space reader
(``zoo.readers.interpreter.token_space``): every weight is an edge of a graph between
neuron tokens, so tokens carry their incoming weights, blocks pass messages along the
weights and the repair decoder writes a change per weight. ``TOKEN_SPACE`` names the
families that offer it; for the others those inputs are absent (masked to zero) and the
decoder writes nothing. Transformer weights are not neuron-to-neuron edges (attention
mixes positions, the residual stream is shared by every block), so they have no token
space yet; their repair goes through refinement, which trains any family's weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
import torch

from zoo.subjects.families import FAMILIES, SubjectArchitecture, get_family

READ_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
"""Families the interpreter reads: every registered one, through the family-agnostic path."""

TOKEN_SPACE: tuple[str, ...] = ("mlp",)
"""Families with the token-space reader (weights as a neuron graph) and a decoder that writes their weights."""

KINDS: tuple[str, ...] = ("hidden", "output", "ffn", "resid")
"""Neuron kinds with an embedding of their own; any other kind shares the last row. ``hidden`` and
``output`` (the MLP's) are fixed at zero: the layer embedding already tells them apart, so runs on
MLP zoos compute what they computed before kinds existed."""

N_FIXED_KINDS = 2  # hidden, output: no parameters


def has_token_space(architecture: SubjectArchitecture) -> bool:
    return architecture.family in TOKEN_SPACE


def in_features(architecture: SubjectArchitecture) -> int:
    """One-hot input size (``seq_len x vocab``) of any family's subject (the token-space reader's ``D``)."""
    own = getattr(architecture, "in_features", None)
    return int(own) if own is not None else int(architecture.vocab_size * architecture.seq_len)


@lru_cache(maxsize=512)
def layout(architecture: SubjectArchitecture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per neuron (signature row order): kind index into ``KINDS`` (``len(KINDS)``: another kind),
    layer (``n_layers`` for the output) and its site's width, each ``[N]``."""
    family = get_family(architecture.family)
    sites = family.signature_sites(architecture)
    kind = np.concatenate([np.full(s.width, KINDS.index(s.kind) if s.kind in KINDS else len(KINDS)) for s in sites])
    layer = np.concatenate([np.full(s.width, s.layer) for s in sites])
    width = np.concatenate([np.full(s.width, s.width) for s in sites])
    return kind.astype(np.int64), layer.astype(np.int64), width.astype(np.float32)


def family_groups(
    architectures: Sequence[SubjectArchitecture], weights: Sequence[np.ndarray], size: int = 32
) -> Iterator[tuple[object, list[int], object]]:
    """``(family, indices, population)``: the subjects as populations of at most ``size`` models of one
    family and ``population_key``, so many subjects run in one batched computation. MLPs are grouped as
    the trainer groups them (by depth, then width), as the interpreter always ran them."""
    from zoo.subjects.train import plan_groups

    by_key: dict[tuple, list[int]] = {}
    for i, arch in enumerate(architectures):
        by_key.setdefault((arch.family, *get_family(arch.family).population_key(arch)), []).append(i)
    for key, members in by_key.items():
        family = get_family(key[0])
        archs = [architectures[i] for i in members]
        chunks = plan_groups(archs, size) if key[0] == "mlp" else [list(range(s, min(s + size, len(archs)))) for s in range(0, len(archs), size)]
        for chunk in chunks:
            indices = [members[i] for i in chunk]
            yield family, indices, family.population([architectures[i] for i in indices], [weights[i] for i in indices])


def family_logits(architectures: Sequence[SubjectArchitecture], weights: Sequence[np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """Every subject's logits on the same sequences ``tokens [R, L]``: ``[n, R]`` float32."""
    out = np.zeros((len(architectures), len(tokens)), dtype=np.float32)
    seqs = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    with torch.no_grad():
        for family, indices, population in family_groups(architectures, weights):
            out[indices] = family.logits(population, seqs.expand(len(indices), -1, -1)).cpu().numpy()
    return out


def site_values(architectures: Sequence[SubjectArchitecture], weights: Sequence[np.ndarray], tokens: np.ndarray) -> list[np.ndarray]:
    """Every neuron's value on every probe, per subject ``[R, N]`` (signature row order): the post hookpoint of
    its signature site, what the signature summarizes (the output site's value is the logit)."""
    out: list[np.ndarray] = [np.zeros(0)] * len(architectures)
    seqs = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    with torch.no_grad():
        for family, indices, population in family_groups(architectures, weights):
            points = family.activations(population, seqs.expand(len(indices), -1, -1))
            for row, i in enumerate(indices):
                sites = family.signature_sites(architectures[i])
                parts = [points[s.post][row, :, : s.width] for s in sites]
                out[i] = torch.cat(parts, dim=-1).cpu().numpy().astype(np.float32)
    return out
