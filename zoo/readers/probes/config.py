"""Settings of the probing reader: the probe recipe, and the Tune sweep over it.

``ProbeConfig``'s defaults are the reference recipe (Adam, lr 1e-3, coupled weight
decay 0.1; ``configs/readers/probes-reference.yaml`` writes them out). ``configs/readers/probes.yaml``,
the recipe the commands use unless ``--config`` names another, is the tuned one: the
reference's coupled weight decay of 0.1 underfits probes of 32-48 standardized features.
``configs/tune/probes.yaml`` is an instance of ``ProbeTuneConfig``. All are read with
``zoo.config.load_config`` (unknown keys are errors, one line naming the field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from zoo.config import Strict, load_or_default

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
DEFAULT_CONFIG = CONFIGS / "readers" / "probes.yaml"
DEFAULT_TUNE_CONFIG = CONFIGS / "tune" / "probes.yaml"

Split = Literal["train", "val", "benchmark"]
Ambiguous = Literal["drop", "smallest_pool"]


class PlateauConfig(Strict):
    """ReduceLROnPlateau, per probe, stepped on the probe's training loss after every epoch.

    A loss counts as better when it is below ``best * (1 - threshold)`` (torch's
    ``threshold_mode="rel"``); after more than ``patience`` epochs without a better one the
    learning rate is multiplied by ``factor`` (never below ``min_lr``).
    """

    factor: float = Field(0.75, gt=0.0, le=1.0)
    patience: int = Field(0, ge=0)
    threshold: float = Field(1e-4, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)


class ProbeConfig(Strict):
    """One linear probe per layer, one-vs-rest (a sigmoid per class, BCE on one-hot targets)."""

    # what is probed
    site: Literal["post", "pre"] = Field("post", description="post- or pre-activations of each hidden layer")
    include_input: bool = Field(True, description="also probe layer 0, the one-hot input: what is readable for free")
    layers: list[int] | None = Field(None, description="layers to probe (0 = input, 1.. hidden); None: all")
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
    split_seed: int = Field(0, ge=0)
    init_seed: int = Field(0, ge=0, description="seed of the probes' initial weights and data order")
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(200, ge=1)
    optimizer: Literal["adam", "adamw"] = Field(
        "adam", description="adam: L2 weight decay added to the gradient (coupled, as torch.optim.Adam); adamw: decoupled"
    )
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0, description="on the weights only, never the biases")
    scheduler: PlateauConfig = PlateauConfig()
    val_every: int = Field(10, ge=1, description="validate every this many epochs (and after the last)")
    standardize: bool = Field(True, description="z-score every feature with the training split's mean and std")
    # controls
    control: bool = Field(True, description="also train probes on shuffled labels, for selectivity")
    control_seed: int = Field(1, ge=0)
    random_twin: bool = Field(True, description="also probe the untrained twin (same architecture and init seed)")
    # across the zoo
    readable_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="a pattern is linearly readable at a layer when its probe F1 reaches this"
    )
    models_per_group: int = Field(16, ge=1, description="models whose probes train as one batched computation")
    activation_chunk: int = Field(8192, ge=1, description="sequences per forward pass when collecting activations")
    device: Literal["auto", "cpu", "cuda"] = "auto"
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
            if min(self.layers) < 0:
                raise ValueError("layers: layer indices start at 0 (the input)")
        return self


class SearchDimension(Strict):
    """One hyperparameter's distribution: ``{loguniform: [lo, hi]}`` style, exactly one key."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list | None = None

    @model_validator(mode="after")
    def _one(self) -> SearchDimension:
        given = [k for k in ("loguniform", "uniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, randint, choice")
        if self.loguniform is not None and not 0 < self.loguniform[0] <= self.loguniform[1]:
            raise ValueError("loguniform: needs 0 < low <= high")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform: needs low <= high")
        if self.randint is not None and self.randint[0] >= self.randint[1]:
            raise ValueError("randint: needs low < high (high is exclusive)")
        if self.choice is not None and not self.choice:
            raise ValueError("choice: needs at least one value")
        return self


TUNABLE = ("lr", "weight_decay", "epochs", "beta1", "beta2", "eps", "optimizer", "batch_size", "plateau_factor", "plateau_patience")


class AshaConfig(Strict):
    grace_period: int = Field(2, ge=1, description="epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(3.0, gt=1.0)


class ProbeTuneConfig(Strict):
    """A Ray Tune (ASHA) sweep of the probe recipe on the clean models of some batches of a zoo.

    Every trial probes all layers of all chosen models as one batched computation and
    reports, after every epoch, the validation accuracy of the best layer averaged over
    the models (``val_accuracy``); ASHA stops weak trials early on it.
    """

    probe: ProbeConfig = Field(
        ProbeConfig(),
        description="the recipe every trial starts from; the search space overrides it, and trials "
        "validate every epoch without controls or twins",
    )
    search_space: dict[str, SearchDimension] = Field(
        default_factory=lambda: {
            "lr": SearchDimension(loguniform=(1e-4, 3e-2)),
            "weight_decay": SearchDimension(loguniform=(1e-4, 1.0)),
        }
    )
    models: int = Field(4, ge=1, description="clean models (the first batches of the zoo) each trial probes")
    num_samples: int = Field(16, ge=1)
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    asha: AshaConfig = AshaConfig()
    cpus_per_trial: float = Field(1.0, gt=0.0)
    gpus_per_trial: float = Field(0.0, ge=0.0)
    seed: int | None = Field(0, description="seed of the search's random sampling (None: unseeded)")
    out: str = Field("runs/tune-probes", description="where the table, the best config and Tune's files go")

    @model_validator(mode="after")
    def _known(self) -> ProbeTuneConfig:
        unknown = sorted(set(self.search_space) - set(TUNABLE))
        if unknown:
            raise ValueError(f"search_space: unknown hyperparameter {unknown[0]!r} (tunable: {', '.join(TUNABLE)})")
        return self

    @property
    def mode(self) -> str:
        return "max" if self.metric == "val_accuracy" else "min"


def load_probe_config(path: str | Path | None = None, overrides: dict | None = None) -> ProbeConfig:
    """The recipe at ``path`` (default: ``configs/readers/probes.yaml``, the tuned recipe)."""
    return load_or_default(path, DEFAULT_CONFIG, ProbeConfig, overrides)  # type: ignore[return-value]


def load_probe_tune_config(path: str | Path | None = None, overrides: dict | None = None) -> ProbeTuneConfig:
    """The sweep at ``path`` (default: ``configs/tune/probes.yaml``)."""
    return load_or_default(path, DEFAULT_TUNE_CONFIG, ProbeTuneConfig, overrides)  # type: ignore[return-value]
