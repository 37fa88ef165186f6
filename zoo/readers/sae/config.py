"""Settings of the SAE reader: the population recipe of ``zoo sae train``, and the Tune sweep over it.

``SAERecipe``'s defaults are ``configs/readers/sae.yaml`` written out; ``SAETuneConfig``'s
are ``configs/tune/sae.yaml``. Both are read with ``zoo.config.load_config``
(unknown keys are errors, one line naming the field). The recipe's grid (kinds x
expansions x k or alpha x seeds) is trained on every (subject, hookpoint) stream, the
whole population as one computation (``train.train_population``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from zoo.config import DEVICE_HELP, Device, Strict, load_or_default, shipped_config
from zoo.readers.tune import Distribution, TuneSettings

DEFAULT_CONFIG = shipped_config("readers/sae.yaml")
DEFAULT_TUNE_CONFIG = shipped_config("tune/sae.yaml")

Kind = Literal["topk", "batchtopk", "relu"]


class SAERecipe(Strict):
    """Which subjects and hookpoints, the grid of coders per stream, and how the population trains."""

    # what is read
    which: Literal["clean", "degraded"] = Field(
        "clean", description="subject models: clean (one per batch) or degraded (one per record)"
    )
    subjects: int | None = Field(None, ge=1, description="only the first N subjects (null: every one)")
    twins: bool = Field(
        False, description="also each subject's untrained twin (same architecture, initial weights): the control"
    )
    hookpoints: list[str] | None = Field(
        None,
        description="hookpoint names read on every subject that has them (null: MLP layers.{i}.post, transformer "
        "blocks.{i}.resid)",
    )
    corpus: Literal["probe_set", "sampled"] = Field(
        "probe_set",
        description="the token corpus: the zoo's fixed probe set, or a larger one drawn the same way from the zoo's "
        "pattern space (corpus_per_pattern, corpus_negatives, corpus_seed); language zoos' corpora come later",
    )
    corpus_per_pattern: int = Field(256, ge=1, le=100_000, description="sampled corpus: sequences of every library pattern")
    corpus_negatives: int = Field(1024, ge=1, le=1_000_000, description="sampled corpus: sequences matching no pattern")
    corpus_seed: int = Field(1, ge=0, description="sampled corpus: the seed it is drawn with")
    val_share: float = Field(0.2, gt=0.0, lt=1.0, description="share of corpus sequences held out (early stopping, metrics)")
    split_seed: int = Field(0, ge=0, description="seed of the training / held-out split of the corpus sequences")
    # the grid of coders per stream
    kinds: list[Kind] = Field(["topk"], min_length=1, description="coder kinds: topk, batchtopk, relu (ReLU + L1)")
    expansion: list[int] = Field([4], min_length=1, description="latents per activation dimension (latents = e x width)")
    k: list[int] = Field([4], min_length=1, description="topk / batchtopk: active latents per token")
    alpha: list[float] = Field([1.0], min_length=1, description="relu: L1 coefficients (per token, over the width)")
    seeds: list[int] = Field([0], min_length=1, description="initialization seeds (several: cross-seed overlap)")
    auxk: float = Field(1 / 32, ge=0.0, description="AuxK coefficient for dead latents (0: off)")
    lr: float | None = Field(None, gt=0.0, description="Adam's rate for every coder (null: 2e-4 x sqrt(2^14 / latents))")
    # training
    epochs: int = Field(20, ge=1, le=100_000, description="evaluation rounds: each is eval_every steps, then a held-out check")
    eval_every: int = Field(50, ge=1, description="optimizer steps per round (training length: epochs x eval_every)")
    batch_size: int = Field(64, ge=1, description="activation rows per coder per step")
    patience: int | None = Field(5, ge=1, description="rounds without a better held-out objective before a coder stops (null: never)")
    min_delta: float = Field(1e-4, ge=0.0, description="relative improvement that counts as better")
    data_seed: int = Field(0, ge=0, description="seed of every stream's batch order")
    autointerp_rows: Literal["val", "all"] = Field(
        "val", description="corpus rows zoo autointerp scores latents on: the held-out ones, or all"
    )
    device: Device = Field("auto", description=DEVICE_HELP)
    threads: int | None = Field(1, ge=1, description="torch CPU threads (null: torch's default)")

    @model_validator(mode="after")
    def _sane(self) -> SAERecipe:
        if any(e < 1 for e in self.expansion):
            raise ValueError("expansion: each must be at least 1")
        if any(k < 1 for k in self.k):
            raise ValueError("k: each must be at least 1")
        if any(a < 0 for a in self.alpha):
            raise ValueError("alpha: each must be non-negative")
        if self.hookpoints is not None and not self.hookpoints:
            raise ValueError("hookpoints: an empty list reads nothing (use null for the defaults)")
        return self

    def specs(self, stream: str, width: int) -> list:
        """The grid of ``SAESpec``s on one stream of ``width``."""
        from zoo.readers.sae.spec import SAESpec

        out = []
        for kind, e, seed in itertools.product(self.kinds, self.expansion, self.seeds):
            for sparsity in self.alpha if kind == "relu" else self.k:
                extra = {"alpha": float(sparsity)} if kind == "relu" else {"k": int(sparsity)}
                out.append(SAESpec(stream, e * width, kind=kind, seed=seed, auxk=self.auxk, lr=self.lr, **extra))
        return out

    def train_config(self):
        from zoo.readers.sae.spec import TrainConfig

        return TrainConfig(
            steps=self.epochs * self.eval_every, batch_size=self.batch_size, eval_every=self.eval_every,
            patience=self.patience, min_delta=self.min_delta, data_seed=self.data_seed, device=self.device,
            threads=self.threads,
        )  # fmt: skip


class SAETuneConfig(TuneSettings):
    """A Ray Tune (ASHA) sweep of the SAE recipe on the zoo's first ``models`` subjects.

    The shape is ``zoo.readers.tune.TuneSettings`` (shared with the other readers). A trial
    trains the recipe's population on every (subject, hookpoint) stream and reports after every
    evaluation round (an "epoch": ``eval_every`` steps) the mean held-out FVU, L0 and objective
    over its coders; a trial trains one kind.
    """

    base: str | None = Field(None, description="SAE recipe the sampled values override (default: configs/readers/sae.yaml)")
    overrides: dict = Field({"patience": None}, description="fixed changes to the base recipe for every trial")
    space: dict[str, Distribution] = Field(
        default_factory=lambda: {
            "kinds": Distribution(choice=[["topk"], ["batchtopk"], ["relu"]]),
            "expansion": Distribution(choice=[[2], [4], [8]]),
            "lr": Distribution(loguniform=(1e-4, 1e-2)),
        },
        description="dotted recipe field (kinds, expansion, k, alpha, lr, ...) -> its distribution",
    )
    models: int = Field(4, ge=1, description="subjects (the zoo's first) each trial reads")
    num_samples: int = Field(12, ge=1, description="trials sampled from the space")
    metric: Literal["val_fvu", "val_objective"] = Field(
        "val_fvu", description="what ASHA and the ranking read: mean held-out FVU over the coders, or the objective"
    )
    mode: Literal["min"] = Field("min", description="both metrics are minimized")
    grace_period: int = Field(3, ge=1, description="rounds every trial runs before ASHA may stop it")
    name: str = Field("sae", pattern=r"^[A-Za-z0-9_.-]+$", description="the sweep's folder under storage_path")


def load_recipe(path: str | Path | None = None, overrides: dict | None = None) -> SAERecipe:
    """The recipe at ``path`` (default: ``configs/readers/sae.yaml``)."""
    return load_or_default(path, DEFAULT_CONFIG, SAERecipe, overrides)  # type: ignore[return-value]


def load_tune_config(path: str | Path | None = None, overrides: dict | None = None) -> SAETuneConfig:
    """The sweep at ``path`` (default: ``configs/tune/sae.yaml``)."""
    return load_or_default(path, DEFAULT_TUNE_CONFIG, SAETuneConfig, overrides)  # type: ignore[return-value]
