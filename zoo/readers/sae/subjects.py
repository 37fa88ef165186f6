"""Activations from a zoo's subject models at named hookpoints: the streams an SAE population trains on.

A ``Subject`` is one model (any family): its architecture, flat weights, and the task
targets of its corpus rows (a pattern classifier's label: the sequence matches one of the
record's patterns), which the spliced evaluation scores against. ``zoo_subjects`` reads
them from a zoo through ``zoo.open``: with ``which="clean"`` one per batch (a batch's
records share their clean model), with ``"degraded"`` one per record.

``collect_streams`` runs every subject over one corpus, batched over models by the probes'
collector (``zoo.readers.probes.activations.collect_layers``: models of one family and
population key run as one population), and returns one ``Stream`` per (subject, hookpoint),
named ``<subject>.<hookpoint>``, split into training and held-out rows by sequence
(``corpus.split_rows``: the same rows for every subject, so a row's labels line up across
streams). Hookpoints default to each family's main streams (MLP: ``layers.{i}.post``;
transformer: ``blocks.{i}.resid``); a named hookpoint that no subject has, or that the
collector cannot read, is refused in one line; subjects without it (shallower models) skip it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.readers.sae.corpus import Corpus, split_rows
from zoo.readers.sae.spec import SAEError, Stream
from zoo.subjects.families import SubjectArchitecture, get_family

DEFAULT_HOOKPOINTS = {"mlp": ("layers.", ".post"), "transformer": ("blocks.", ".resid")}


@dataclass(frozen=True, eq=False)
class Subject:
    """One model read by SAEs. ``targets [N]`` (float 0/1) are its task's labels on the corpus rows, or None."""

    id: str
    architecture: SubjectArchitecture
    weights: np.ndarray
    targets: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def module(self):
        """The subject as an ``nn.Module`` (``Family.build_module``)."""
        return get_family(self.architecture.family).build_module(self.architecture, self.weights)

    def hookpoints(self) -> dict[str, int]:
        return get_family(self.architecture.family).hookpoints(self.architecture)


@dataclass(frozen=True, eq=False)
class SubjectStreams:
    """Every (subject, hookpoint) stream, the rows each split holds, and which subject/hookpoint a stream reads."""

    streams: list[Stream]
    train_rows: np.ndarray
    val_rows: np.ndarray
    owner: dict[str, tuple[str, str]]  # stream name -> (subject id, hookpoint)


def zoo_subjects(
    data: str | Path, corpus: Corpus, which: str = "clean", limit: int | None = None, twins: bool = False
) -> list[Subject]:
    """The zoo's clean models (one per batch) or degraded ones (one per record), first ``limit`` of them.

    ``twins``: after each subject its untrained twin (``<id>.twin``: the same architecture at its
    initial weights, ``Family.init_weights(architecture, init_seed)``), the control that SAEs on a
    trained model should beat on every ground-truth measure.
    """
    from zoo.api import Zoo
    from zoo.patterns.sampler import sampler_for
    from zoo.subjects.families import architecture_of

    if which not in ("clean", "degraded"):
        raise SAEError(f"which must be 'clean' or 'degraded', not {which!r}")
    zoo = Zoo(data)
    columns = ["batch_id", "example_id", "init_seed", "architecture", "patterns", f"{which}_weights"]
    table = zoo.table(columns=columns)
    if table.num_rows == 0:
        raise SAEError(f"{data}: the zoo holds no records")
    sampler = sampler_for(zoo.config.patterns)
    subjects, seen = [], set()
    for index, row in enumerate(table.to_pylist()):
        if which == "clean" and row["batch_id"] in seen:
            continue
        seen.add(row["batch_id"])
        name = f"batch{row['batch_id']}.clean" if which == "clean" else f"row{index}.degraded"
        targets = (sampler.match_counts(corpus.tokens, list(row["patterns"])) > 0).astype(np.float32)
        meta = {"row": index, "batch_id": int(row["batch_id"]), "example_id": row["example_id"], "which": which}
        arch = architecture_of(row["architecture"])
        subjects.append(Subject(name, arch, np.asarray(row[f"{which}_weights"], dtype=np.float32), targets, meta))
        if twins:
            initial = get_family(arch.family).init_weights(arch, int(row["init_seed"]))
            subjects.append(Subject(f"{name}.twin", arch, initial, targets, {**meta, "which": "twin"}))
        if limit is not None and len(subjects) == limit * (2 if twins else 1):
            break
    return subjects


def default_hookpoints(architecture: SubjectArchitecture) -> list[str]:
    prefix, suffix = DEFAULT_HOOKPOINTS.get(architecture.family, ("", ""))
    names = get_family(architecture.family).hookpoints(architecture)
    return [n for n in names if n.startswith(prefix) and n.endswith(suffix)] if prefix else list(names)


def _probe_layer(architecture: SubjectArchitecture, hookpoint: str) -> tuple[str, int] | None:
    """``(site, probe layer)`` under which the probes' collector reads ``hookpoint``; None if it cannot."""
    from zoo.readers.probes.activations import probe_points

    site = "pre" if hookpoint.endswith(".pre") else "post"
    for point in probe_points(architecture, site):
        if point.hookpoint == hookpoint:
            return site, point.layer
    return None


def plan_hookpoints(subjects: Sequence[Subject], hookpoints: Sequence[str] | None) -> dict[str, list[str]]:
    """Per subject id, the hookpoints to read; every named one is checked against the subjects' families."""
    if not subjects:
        raise SAEError("no subject models to read")
    plan = {}
    for s in subjects:
        have = s.hookpoints()
        plan[s.id] = [h for h in (hookpoints or default_hookpoints(s.architecture)) if h in have]
    for h in hookpoints or ():
        if not any(h in s.hookpoints() for s in subjects):
            known = sorted({n for s in subjects for n in s.hookpoints()})
            raise SAEError(f"unknown hookpoint {h!r}: the subjects have {', '.join(known)}")
        owner = next(s for s in subjects if h in s.hookpoints())
        if _probe_layer(owner.architecture, h) is None:
            raise SAEError(f"hookpoint {h!r} ({owner.architecture.describe()}) is not collected yet: "
                           "zoo.readers.probes.activations reads only its probe points")  # fmt: skip
    if not any(plan.values()):
        raise SAEError("none of the subjects has any of the hookpoints asked for")
    return plan


def collect_activations(
    subjects: Sequence[Subject], corpus: Corpus, plan: dict[str, list[str]], chunk: int = 8192, device: str = "cpu"
) -> dict[tuple[str, str], np.ndarray]:
    """``{(subject id, hookpoint): [N, width]}`` over the whole corpus, batched over models (the probes' collector)."""
    from zoo.readers.probes.activations import collect_layers

    out: dict[tuple[str, str], np.ndarray] = {}
    for site in ("post", "pre"):
        wanted = []
        for s in subjects:
            layers = {h: _probe_layer(s.architecture, h) for h in plan[s.id]}
            wanted.append({h: sl[1] for h, sl in layers.items() if sl is not None and sl[0] == site})
        if not any(wanted):
            continue
        acts = collect_layers(
            [s.architecture for s in subjects], [s.weights for s in subjects], [corpus.tokens] * len(subjects),
            [sorted(w.values()) for w in wanted], site, chunk, device,
        )  # fmt: skip
        for s, w, a in zip(subjects, wanted, acts):
            for h, layer in w.items():
                out[(s.id, h)] = a[layer]
    return out


def collect_streams(
    subjects: Sequence[Subject],
    corpus: Corpus,
    hookpoints: Sequence[str] | None = None,
    val_share: float = 0.2,
    split_seed: int = 0,
    chunk: int = 8192,
    device: str = "cpu",
) -> SubjectStreams:
    """One ``Stream`` per (subject, hookpoint): training and held-out rows of the corpus (see the module docstring)."""
    plan = plan_hookpoints(subjects, hookpoints)
    acts = collect_activations(subjects, corpus, plan, chunk, device)
    train_rows, val_rows = split_rows(len(corpus), val_share, split_seed)
    streams, owner = [], {}
    for s in subjects:
        for h in plan[s.id]:
            name = f"{s.id}.{h}"
            x = acts[(s.id, h)]
            streams.append(Stream(name, train=x[train_rows], val=x[val_rows]))
            owner[name] = (s.id, h)
    return SubjectStreams(streams, train_rows, val_rows, owner)
