"""Settings of the probing reader: the probe recipe, and the Tune sweep over it.

``ProbeConfig``'s defaults are the tuned recipe (Adam, lr 0.02, no weight decay), the one
the commands use unless ``--config`` names another; ``configs/readers/probes.yaml`` writes
it out. ``configs/readers/probes-reference.yaml`` is the reference recipe (lr 1e-3, coupled
weight decay 0.1), which underfits probes of 32-48 standardized features; it lists only the
two fields it changes. ``configs/tune/probes.yaml`` writes out ``ProbeTuneConfig``'s
defaults. All are read with ``zoo.config.load_config`` (unknown keys are errors, one line
naming the field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from zoo.config import DEVICE_HELP, Device, Strict, load_or_default, shipped_config
from zoo.readers.tune import Distribution, TuneSettings

DEFAULT_CONFIG = shipped_config("readers/probes.yaml")
DEFAULT_TUNE_CONFIG = shipped_config("tune/probes.yaml")

Split = Literal["train", "val", "benchmark"]
Ambiguous = Literal["drop", "smallest_pool"]


class PlateauConfig(Strict):
    """ReduceLROnPlateau, per probe, stepped on the probe's training loss after every epoch.

    A loss counts as better when it is below ``best * (1 - threshold)`` (torch's
    ``threshold_mode="rel"``); after more than ``patience`` epochs without a better one the
    learning rate is multiplied by ``factor`` (never below ``min_lr``).
    """

    factor: float = Field(0.75, gt=0.0, le=1.0, description="multiplies the learning rate on a plateau (1: never changes it)")
    patience: int = Field(0, ge=0, description="epochs without a better training loss tolerated before a reduction")
    threshold: float = Field(1e-4, ge=0.0, description="relative improvement that counts as a better loss")
    min_lr: float = Field(0.0, ge=0.0, description="the learning rate is never reduced below this")


class ProbeConfig(Strict):
    """One linear probe per layer, one-vs-rest (a sigmoid per class, BCE on one-hot targets)."""

    # what is probed
    site: Literal["post", "pre"] = Field(
        "post",
        description="post- or pre-activations of each hidden layer (an MLP's layers, a transformer's feed-forward units)",
    )
    include_input: bool = Field(
        True,
        description="also probe layer 0: an MLP's one-hot input (what is readable for free), a transformer's embedding",
    )
    layers: list[int | str] | None = Field(
        None,
        description="layers to probe: numbers (0 = input or embed, 1.. hidden) or hookpoint names "
        "(layers.0.post, blocks.1.resid, head); None: every hidden layer and layer 0",
    )
    splits: list[Split] = Field(
        ["train", "val", "benchmark"], description="the batch's labelled sets pooled into the probe's data"
    )
    ambiguous: Ambiguous = Field(
        "drop",
        description="positives matching several of the model's patterns: left out (a one-label probe has no right "
        "answer for them), or labelled as the sampler files them (the pattern with the smallest pool)",
    )
    max_samples: int | None = Field(None, ge=2, description="stratified subsample of the pooled data (None: all)")
    # the recipe
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="stratified validation share")
    split_seed: int = Field(0, ge=0, description="seed of the stratified train/validation split")
    init_seed: int = Field(0, ge=0, description="seed of the probes' initial weights and data order")
    epochs: int = Field(50, ge=1, description="passes over the probe's training data")
    batch_size: int = Field(200, ge=1, description="examples per optimizer step")
    optimizer: Literal["adam", "adamw"] = Field(
        "adam", description="adam: L2 weight decay added to the gradient (coupled, as torch.optim.Adam); adamw: decoupled"
    )
    lr: float = Field(
        0.02,
        gt=0.0,
        description="initial learning rate (chosen by `zoo tune probes` on the quickstart zoo; the reference recipe: 1e-3)",
    )
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam's decay rates of the gradient's mean and square")
    eps: float = Field(1e-8, gt=0.0, description="Adam's denominator term")
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        description="on the weights only, never the biases (the reference recipe's 0.1 underfits zoo subjects)",
    )
    scheduler: PlateauConfig = Field(
        PlateauConfig(), description="ReduceLROnPlateau per probe, on its training loss after every epoch"
    )
    val_every: int = Field(
        10, ge=1, description="validate every this many epochs (and after the last); the best checkpoint is chosen among them"
    )
    standardize: bool = Field(True, description="z-score every feature with the training split's mean and std")
    # controls
    control: bool = Field(
        True, description="also train probes on shuffled labels at every layer, for selectivity (accuracy - control's)"
    )
    control_seed: int = Field(1, ge=0, description="seed of the control probes' label shuffle")
    random_twin: bool = Field(True, description="also probe the untrained twin (same architecture and init seed)")
    # across the zoo
    readable_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="a pattern is linearly readable at a layer when its probe F1 reaches this"
    )
    models_per_group: int = Field(16, ge=1, description="models whose probes train as one batched computation")
    activation_chunk: int = Field(8192, ge=1, description="sequences per forward pass when collecting activations")
    device: Device = Field("auto", description=DEVICE_HELP)
    threads: int | None = Field(
        1, ge=1, description="torch CPU threads while probing (tiny matmuls: one thread beats two); null keeps torch's"
    )

    @model_validator(mode="after")
    def _sane(self) -> ProbeConfig:
        b1, b2 = self.betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError("betas: each must lie in [0, 1)")
        if not self.splits:
            raise ValueError("splits: at least one is needed")
        if len(set(self.splits)) != len(self.splits):
            raise ValueError("splits: listed twice")
        if self.layers is not None:
            if not self.layers:
                raise ValueError("layers: an empty list probes nothing (use null for all)")
            if any(isinstance(l, int) and l < 0 for l in self.layers):
                raise ValueError("layers: layer indices start at 0 (the input)")
            if any(isinstance(l, str) and not l.strip() for l in self.layers):
                raise ValueError("layers: an empty hookpoint name")
        return self


class ProbeTuneConfig(TuneSettings):
    """A Ray Tune (ASHA) sweep of the probe recipe on the clean models of some batches of a zoo.

    The shape is ``zoo.readers.tune.TuneSettings`` (shared with ``zoo tune interpreter``),
    with the probes' defaults and one field of their own, ``models``. Every trial probes
    all layers of all chosen models as one batched computation, validating every epoch
    without controls or twins, and reports after every epoch the validation accuracy of
    the best layer averaged over the models (``val_accuracy``) and that layer's
    validation loss (``val_loss``); ASHA stops weak trials early on ``metric``.
    """

    base: str | None = Field(
        None, description="probe recipe the sampled values override (default: configs/readers/probes.yaml, the tuned recipe)"
    )
    overrides: dict = Field(
        {"epochs": 50, "batch_size": 200},
        description="fixed changes to the base recipe for every trial; its epochs are ASHA's max_t unless the space draws them",
    )
    space: dict[str, Distribution] = Field(
        default_factory=lambda: {
            "lr": Distribution(loguniform=(1e-4, 5e-2)),
            "weight_decay": Distribution(choice=[0.0, 1e-4, 1e-3, 1e-2, 1e-1]),
            "epochs": Distribution(choice=[20, 50, 100]),
            "betas": Distribution(choice=[[0.9, 0.95], [0.9, 0.999]]),
            "optimizer": Distribution(choice=["adam", "adamw"]),
            "scheduler.factor": Distribution(uniform=(0.5, 0.95)),
        },
        description="dotted probe-recipe field (lr, betas, scheduler.factor, ...) -> its distribution",
    )
    models: int = Field(8, ge=1, description="clean models (the first batches of the zoo) each trial probes")
    num_samples: int = Field(32, ge=1, description="trials sampled from the space")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy",
        description="what ASHA and the ranking read: the validation accuracy of each model's best layer, averaged over "
        "the models (mode max), or that layer's validation loss (mode min)",
    )
    mode: Literal["min", "max"] = Field("max", description="max for val_accuracy, min for val_loss")
    grace_period: int = Field(5, ge=1, description="epochs every trial runs before ASHA may stop it")
    name: str = Field("probes", pattern=r"^[A-Za-z0-9_.-]+$", description="the sweep's folder under storage_path")

    @model_validator(mode="after")
    def _mode(self) -> ProbeTuneConfig:
        wanted = "max" if self.metric == "val_accuracy" else "min"
        if self.mode != wanted:
            raise ValueError(f"mode: {self.metric} is {'maximized' if wanted == 'max' else 'minimized'}: set mode {wanted}")
        return self


def load_probe_config(path: str | Path | None = None, overrides: dict | None = None) -> ProbeConfig:
    """The recipe at ``path`` (default: ``configs/readers/probes.yaml``, the tuned recipe)."""
    return load_or_default(path, DEFAULT_CONFIG, ProbeConfig, overrides)  # type: ignore[return-value]


def load_probe_tune_config(path: str | Path | None = None, overrides: dict | None = None) -> ProbeTuneConfig:
    """The sweep at ``path`` (default: ``configs/tune/probes.yaml``)."""
    return load_or_default(path, DEFAULT_TUNE_CONFIG, ProbeTuneConfig, overrides)  # type: ignore[return-value]
