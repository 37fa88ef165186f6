"""Repair refined by the interpreter's reading: fine-tune the decoded weights on the named set's data.

The decoder repairs in one forward pass and restores less the more of a pattern's labels
were flipped. The interpreter's other output, the pattern set it names, is a complete
specification of what the clean model was trained to do: the zoo's sampler makes training
data for any set. Refinement trains each repaired model for a few epochs on such data,
with the population trainer (all models of a split in a few batched computations).

The data is the zoo's own recipe for the *named* set (``PatternSampler.batch_data``, a
seed per record), with every sequence of the record's benchmark set removed, so the judge
stays held out. The same refinement started from the degraded weights is the control that
shows what the decoder adds.

``zoo interpret edit`` refines an edited model the same way, on the data for the edited set.

Refinement trains any family's subjects: MLPs with the population trainer and the zoo's
``training`` recipe, as always; another family with its own trainer (``Family.train``) and
the recipe of the mixture part its batch drew (``ZooConfig.training_for``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from zoo.config import ZooConfig
from zoo.factory.plan import BatchPlan, batch_seed, plan_batch
from zoo.patterns.sampler import LabelledSet, sampler_for
from zoo.readers.interpreter.config import RefineConfig
from zoo.readers.interpreter.data import Example
from zoo.subjects.families import get_family
from zoo.subjects.population import to_weights
from zoo.subjects.train import SubjectJob, train_subjects


class Plans:
    """Each batch's plan, rebuilt from the zoo config (cached per batch id)."""

    def __init__(self, config: ZooConfig):
        self.config = config
        self._cache: dict[int, BatchPlan] = {}

    def __call__(self, batch_id: int) -> BatchPlan:
        if batch_id not in self._cache:
            self._cache[batch_id] = plan_batch(self.config, batch_id)
        return self._cache[batch_id]


def sequence_keys(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """One integer per sequence (its tokens as base-``vocab_size`` digits)."""
    powers = vocab_size ** np.arange(tokens.shape[1], dtype=np.int64)
    return tokens.astype(np.int64) @ powers


def outside(split: LabelledSet, held_out: np.ndarray, size: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``size`` sequences of ``split`` not in ``held_out``, with their labels.

    Fewer are left only when nearly all of a split is held out; the rest repeat (cyclically)
    so every model of a population gets the same number of rows.
    """
    keep = ~np.isin(sequence_keys(split.tokens, vocab_size), sequence_keys(held_out, vocab_size))
    tokens, labels = split.tokens[keep], split.labels[keep]
    if len(tokens) == 0:
        raise ValueError("every sequence of the refinement data is in the benchmark set")
    take = np.arange(size) % len(tokens)
    return tokens[take], labels[take]


def sequences_per_model(config: RefineConfig, zoo: ZooConfig) -> int:
    """Training sequences each refined model gets: ``config.train_size``, else the zoo's own."""
    return config.train_size or zoo.patterns.train_size


def refine_job(
    example: Example,
    start: np.ndarray,
    named: Sequence[str],
    plans: Plans,
    config: RefineConfig,
    seed: int,
    *,
    held_out: np.ndarray | None = None,
) -> SubjectJob:
    """Train ``start`` (flat weights of ``example``'s architecture) on the data the zoo makes for ``named``,
    none of it in ``held_out`` (the judge: by default the record's benchmark set)."""
    zoo = plans.config
    plan = plans(example.batch_id)
    data_seed = batch_seed(seed, 1_000_003 * example.batch_id + example.pair_index)
    data = sampler_for(zoo.patterns).batch_data(tuple(named), data_seed)
    bench = plan.data.benchmark.tokens if held_out is None else held_out
    vocab = zoo.patterns.vocab_size
    size = sequences_per_model(config, zoo)
    train_tokens, train_labels = outside(data.train, bench, size, vocab)
    val_tokens, val_labels = outside(data.val, bench, len(data.val.tokens), vocab)
    return SubjectJob(
        architecture=example.architecture,
        init_seed=0,
        order_seed=data_seed,
        lr=plan.lr * config.lr_scale,
        train_tokens=train_tokens,
        train_labels=train_labels,
        val_tokens=val_tokens,
        val_labels=val_labels,
        init=np.asarray(start, dtype=np.float32),
    )


def refine(
    examples: list[Example],
    starts: list[np.ndarray],
    named_sets: list[Sequence[str]],
    plans: Plans,
    config: RefineConfig,
    device: torch.device,
    seed: int,
    *,
    held_out: np.ndarray | None = None,
    progress=None,
) -> list[np.ndarray]:
    """Flat weights of every ``starts[i]`` after ``config.epochs`` on ``named_sets[i]``'s data.

    A named set the sampler makes no data for (none at all, or patterns whose positives all
    lie inside each other's) leaves its model unchanged. ``held_out`` applies to every model
    (see ``refine_job``). ``progress(done, total)``, when given, counts each model twice: once
    when its data is made, once when it is trained.
    """
    out = [np.asarray(s, dtype=np.float32) for s in starts]
    total, done = 2 * len(named_sets), 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    todo, jobs = [], []
    for i, named in enumerate(named_sets):
        try:
            jobs.append(refine_job(examples[i], starts[i], named, plans, config, seed, held_out=held_out))
        except ValueError:
            step(2)  # left unchanged: nothing to train either
            continue
        todo.append(i)
        step(1)
    mlp = [k for k, job in enumerate(jobs) if job.architecture.family == "mlp"]
    for group in train_subjects([jobs[k] for k in mlp], plans.config.training, device, epochs=config.epochs, on_group=step):
        for slot, weights in zip(group.indices, to_weights(group.population)):
            out[todo[mlp[slot]]] = weights
    batch_ids = [examples[i].batch_id for i in todo]
    _refine_other_families(jobs, todo, batch_ids, out, plans, config.epochs, device, step)
    return out


def _refine_other_families(
    jobs: list[SubjectJob], todo: list[int], batch_ids: list[int], out: list[np.ndarray], plans: Plans, epochs: int, device, step
) -> None:
    """Train the jobs of families other than the MLP with their own trainer, per mixture part's recipe
    (``jobs[k]`` is model ``todo[k]`` of batch ``batch_ids[k]``)."""
    parts: dict[tuple[str, int | None], list[int]] = {}
    for k, job in enumerate(jobs):
        if job.architecture.family != "mlp":
            parts.setdefault((job.architecture.family, plans(batch_ids[k]).part), []).append(k)
    for (name, part), members in parts.items():
        family = get_family(name)
        for group in family.train([jobs[k] for k in members], plans.config.training_for(part), device, epochs=epochs):
            for slot, weights in zip(group.indices, family.weights(group.population)):
                out[todo[members[slot]]] = weights
        step(len(members))
