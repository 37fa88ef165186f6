"""Everything random about a batch, derived from ``(run seed, batch id)`` and nothing else."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from zoo.config import ZooConfig
from zoo.patterns.sampler import BatchData, LabelledSet, sampler_for
from zoo.subjects.families import SubjectArchitecture, sample_part
from zoo.subjects.families.base import SubjectJob


def batch_seed(run_seed: int, batch_id: int) -> int:
    """A 63-bit seed per batch: a hash, so neighbouring ids give unrelated streams."""
    digest = hashlib.sha256(f"zoo-batch:{run_seed}:{batch_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class Corruption:
    """One degraded model: which selected pattern loses labels, how many, and the flip seed."""

    pattern: int
    rate: float
    seed: int


@dataclass(frozen=True)
class BatchPlan:
    batch_id: int
    seed: int
    architecture: SubjectArchitecture
    lr: float
    init_seed: int
    order_seed: int
    data: BatchData
    corruptions: tuple[Corruption, ...]
    part: int | None = None  # the mixture part drawn (``ZooConfig.training_for``); None for a single space

    @property
    def patterns(self) -> tuple[str, ...]:
        return self.data.patterns


def plan_batch(config: ZooConfig, batch_id: int) -> BatchPlan:
    seed = batch_seed(config.seed, batch_id)
    rng = np.random.default_rng(seed)
    space = config.patterns
    sampler = sampler_for(space)
    names = sampler.select_patterns(rng)
    part, architecture = sample_part(config.architecture, space.vocab_size, space.seq_len, rng)
    lr_range = config.training_for(part).lr
    lr = float(np.exp(rng.uniform(np.log(lr_range.min), np.log(lr_range.max))))
    init_seed, order_seed, data_seed = (int(s) for s in rng.integers(0, 2**63 - 1, size=3))
    rate = config.corruption.rate
    corruptions = tuple(
        Corruption(
            pattern=int(rng.integers(len(names))),
            rate=float(rng.uniform(rate.min, rate.max)),
            seed=int(rng.integers(0, 2**63 - 1)),
        )
        for _ in range(config.corruption.degraded_per_batch)
    )
    data = sampler.batch_data(names, data_seed)
    return BatchPlan(batch_id, seed, architecture, lr, init_seed, order_seed, data, corruptions, part)


def corrupt_labels(split: LabelledSet, corruption: Corruption, salt: int) -> np.ndarray:
    """Labels with a share ``rate`` of the corrupted pattern's positives flipped to negative."""
    rng = np.random.default_rng([corruption.seed, salt])
    flip = (split.pattern == corruption.pattern) & (rng.random(len(split.pattern)) < corruption.rate)
    labels = split.labels.copy()
    labels[flip] = 0.0
    return labels


def clean_job(plan: BatchPlan) -> SubjectJob:
    return SubjectJob(
        architecture=plan.architecture,
        init_seed=plan.init_seed,
        order_seed=plan.order_seed,
        lr=plan.lr,
        train_tokens=plan.data.train.tokens,
        train_labels=plan.data.train.labels,
        val_tokens=plan.data.val.tokens,
        val_labels=plan.data.val.labels,
    )


def degraded_job(plan: BatchPlan, corruption: Corruption, init: np.ndarray | None = None) -> SubjectJob:
    """The clean job with one pattern's labels corrupted: same init and data order.

    With ``init`` (the trained clean model's weights) it is the finetune pairing.
    """
    return replace(
        clean_job(plan),
        train_labels=corrupt_labels(plan.data.train, corruption, 0),
        val_labels=corrupt_labels(plan.data.val, corruption, 1),
        init=init,
    )
