"""Every setting of zoo, as pydantic models: the single source of truth.

YAML files in ``configs/`` (shipped with the package as ``zoo/configs/``; the checkout's
top-level ``configs`` is a link to it) are instances of these models. Validation errors are
turned into one line naming the field (``ConfigError``) so that the CLI can print
it and exit 2 before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, model_serializer, model_validator

from zoo.config_types import DEVICE_HELP, ConfigError, Device, FloatRange, IntRange, Strict, format_validation_error  # noqa: F401 (re-exported)
from zoo.languages.config import GrammarShare, LanguageTask  # noqa: F401 (re-exported)
from zoo.patterns.library import validate_selection

from zoo.subjects.families import ArchitectureSpace
from zoo.subjects.families.mlp import ACTIVATIONS, Activation, MLPSpace  # noqa: F401 (re-exported)

CONFIGS = Path(__file__).resolve().parent / "configs"
"""The shipped recipes (package data): ``zoo/``, ``readers/`` and ``tune/`` YAML files."""

Quantization = Literal["none", "int8", "int4", "ternary", "binary"]
Statistic = Literal["mean", "std", "min", "max", "frac_active", "pattern_mean"]


class PatternSpace(Strict):
    """The token space, which patterns a batch may draw, and how data sets are sized."""

    vocab_size: int = Field(7, ge=2, le=26, description="tokens in the vocabulary: the letters A, B, ... (7: A..G)")
    seq_len: int = Field(7, ge=3, le=24, description="tokens per sequence")
    names: list[str] | None = Field(
        None, description="patterns a batch may draw from; None means the library less `exclude`"
    )
    exclude: list[str] = Field(
        ["no_repeats", "double_letter", "majority", "zigzag", "all_same", "alternating", "first_equals_last"],
        description="left out when `names` is None (they stay available by name). The first four need "
        "wider models than the default 32-48 units to reach 0.95 on unseen sequences; the last three "
        "are nested in other patterns (an all-same sequence is a palindrome, a palindrome has first == "
        "last), so a model trained on the larger one answers like one trained on both and its pattern "
        "set could not be read from it",
    )
    start_token: str = Field("A", pattern=r"^[A-Z]$", description="the token of the starts_with_<token> pattern")
    end_token: str = Field("G", pattern=r"^[A-Z]$", description="the token of the ends_with_<token> pattern")
    trigram: str = Field("ABC", pattern=r"^[A-Z]{3}$", description="the three tokens of the contains_<trigram> pattern")
    per_batch: IntRange = Field(
        IntRange(min=2, max=5), description="patterns a batch's models detect (any of them: a positive), drawn uniformly"
    )
    train_size: int = Field(
        5000,
        ge=2,
        le=10_000_000,
        description="training examples per batch: half positives (split over the patterns), half negatives, "
        "whatever the pattern count",
    )
    val_size: int = Field(500, ge=2, le=10_000_000, description="validation examples per batch (early stopping reads them)")
    benchmark_size: int = Field(500, ge=2, le=10_000_000, description="clean held-out examples per batch")
    hard_negative_share: float = Field(
        0.1, ge=0.0, le=1.0, description="share of the negatives that are near misses: a positive with one token changed"
    )
    probe_per_pattern: int = Field(
        16, ge=1, description="sequences of every library pattern in the zoo's fixed probe set (signatures are read on it)"
    )
    probe_negatives: int = Field(32, ge=1, description="sequences matching no pattern in the probe set")
    holdout_min_pool: int = Field(
        60,
        ge=2,
        description="pools smaller than this are too small to hold positives out: they train and "
        "benchmark on the whole pool",
    )
    exhaustive_limit: int = Field(2_000_000, ge=1, description="enumerate the whole space up to this size")

    @model_validator(mode="after")
    def _tokens_fit(self) -> PatternSpace:
        top = chr(ord("A") + self.vocab_size - 1)
        for field in ("start_token", "end_token"):
            if ord(getattr(self, field)) - ord("A") >= self.vocab_size:
                raise ValueError(f"{field}: token {getattr(self, field)} is outside the vocabulary A..{top}")
        if any(ord(c) - ord("A") >= self.vocab_size for c in self.trigram):
            raise ValueError(f"trigram: {self.trigram} uses a token outside the vocabulary A..{top}")
        validate_selection(self)
        return self


class TrainingConfig(Strict):
    """How each subject model is trained (the population trainer and the reference alike)."""

    epochs: int = Field(20, ge=1, description="most passes over a batch's training set (early stopping may end sooner)")
    batch_size: int = Field(64, ge=1, description="training examples per optimizer step")
    lr: FloatRange = Field(
        FloatRange(min=5e-3, max=2e-2), description="Adam learning rate, drawn log-uniformly once per batch"
    )
    weight_decay: float = Field(
        0.0, ge=0.0, description="weight decay: Adam's L2 for MLPs; AdamW's decoupled decay on matrices for transformers"
    )
    patience: int = Field(5, ge=1, description="epochs without a better validation loss before a model stops")
    min_delta: float = Field(1e-4, ge=0.0, description="a validation loss lower by more than this counts as better")
    population_size: int | Literal["auto"] = Field(
        "auto", description="models per batched computation; auto sizes it to the device"
    )
    device: Device = Field("auto", description=DEVICE_HELP)

    @model_validator(mode="after")
    def _lr_positive(self) -> TrainingConfig:
        if self.lr.min <= 0:
            raise ValueError("lr.min: must be positive")
        if isinstance(self.population_size, int) and self.population_size < 1:
            raise ValueError("population_size: must be at least 1")
        return self


class FamilyShare(Strict):
    """One part of a mixed zoo: an architecture space, the share of batches drawn from it, and
    optionally its own training recipe (families train best at different rates and lengths)."""

    share: float = Field(gt=0.0, le=1.0, description="share of batches drawn from this space; the list's shares sum to 1")
    space: ArchitectureSpace = Field(description="the family's architecture space")
    training: TrainingConfig | None = Field(
        None, description="how this part's models are trained; None: the zoo's `training` block"
    )


class CorruptionConfig(Strict):
    """How degraded models are made and which pairs are kept."""

    degraded_per_batch: int = Field(
        4, ge=1, description="degraded models per batch, each with one of the batch's patterns corrupted"
    )
    rate: FloatRange = Field(
        FloatRange(min=0.6, max=1.0),
        description="share of the corrupted pattern's positives whose labels flip to negative, drawn uniformly per "
        "degraded model",
    )
    min_degradation: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="pairs are kept when the corrupted pattern's accuracy dropped by at least this (a fraction, "
        "clean minus degraded)",
    )
    pairing: Literal["scratch", "finetune"] = Field(
        "scratch",
        description="scratch: a degraded model trains from the clean model's initialization on the corrupted labels; "
        "finetune: from the trained clean model's weights",
    )
    finetune_epochs: int = Field(10, ge=1, description="epochs of fine-tuning when pairing is finetune")

    @model_validator(mode="after")
    def _rate_in_unit(self) -> CorruptionConfig:
        if not 0.0 < self.rate.min <= 1.0 or self.rate.max > 1.0:
            raise ValueError("rate: must lie in (0, 1]")
        return self


class SignatureConfig(Strict):
    """What the fingerprint of a model is made of."""

    activations: Literal["pre", "post", "both"] = Field(
        "post", description="which values of each neuron the statistics are taken over: pre- or post-activation, or both"
    )
    statistics: list[Statistic] = Field(
        ["mean", "std", "min", "max", "frac_active", "pattern_mean"],
        description="per-neuron statistics over the probe set, in this column order; frac_active: share of probes "
        "with a positive pre-activation; pattern_mean: the mean over each pattern's probes (one column per pattern, "
        "and one for the negatives)",
    )

    @model_validator(mode="after")
    def _some(self) -> SignatureConfig:
        if not self.statistics:
            raise ValueError("statistics: at least one is needed")
        if len(set(self.statistics)) != len(self.statistics):
            raise ValueError("statistics: listed twice")
        return self


class StorageConfig(Strict):
    """How records are grouped into Parquet shards."""

    batches_per_shard: int = Field(
        8, ge=1, description="batches trained together as one population and written as one shard"
    )
    row_group_rows: int = Field(1024, ge=1, description="rows per Parquet row group (the unit a reader fetches)")
    compression: Literal["zstd", "snappy", "none"] = Field("zstd", description="Parquet compression codec of the shards")


class RuntimeConfig(Strict):
    """Where and how the batches run; not part of the config hash (it cannot change a record)."""

    workers: int = Field(2, ge=0, description="Ray actors; 0 runs in-process without Ray")
    address: str | None = Field(None, description="Ray address; None starts an embedded local Ray")
    in_flight_per_worker: int = Field(2, ge=1, description="tasks (shards) queued on each actor at once")
    num_gpus_per_worker: float = Field(
        0.0, ge=0.0, le=8.0, description="GPUs Ray reserves for each actor (0.25: four actors share a GPU)"
    )
    num_cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each actor")
    torch_threads: int = Field(1, ge=1, description="torch CPU threads in each actor (or in-process)")
    max_restarts: int = Field(3, ge=0, description="times Ray restarts an actor that died before it is replaced")


class ZooConfig(Strict):
    """A whole zoo: everything a record depends on, derived from one run seed."""

    name: str = Field("zoo", pattern=r"^[A-Za-z0-9_.-]+$", description="the zoo's name; part of its id")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="run seed every batch's draws and initializations derive from")
    batches: int = Field(
        10, ge=1, le=1_000_000_000, description="batches to make (a batch: one clean model and its degraded ones); a zoo can grow later"
    )
    patterns: PatternSpace = Field(PatternSpace(), description="the token space, the patterns and the data set sizes")
    architecture: Annotated[
        Annotated[ArchitectureSpace, Tag("~space")] | Annotated[list[FamilyShare], Field(min_length=1), Tag("~mix")],
        Discriminator(lambda value: "~mix" if isinstance(value, (list, tuple)) else "~space"),
    ] = Field(
        MLPSpace(),
        description="the subject family and ranges every batch's architecture is drawn from; a list of "
        "{share, space} entries mixes families",
    )
    training: TrainingConfig = Field(TrainingConfig(), description="how each subject model is trained")
    corruption: CorruptionConfig = Field(CorruptionConfig(), description="how degraded models are made and kept")
    quantization: Quantization = Field(
        "none", description="post-training weight quantization of every model (biases stay float)"
    )
    signature: SignatureConfig = Field(SignatureConfig(), description="what a model's fingerprint is made of")
    storage: StorageConfig = Field(StorageConfig(), description="shards and Parquet settings")
    runtime: RuntimeConfig = Field(
        RuntimeConfig(), description="where and how the batches run (not part of the zoo id)"
    )
    language: LanguageTask | None = Field(
        None,
        description="the language task (transformers trained on formal languages); None: a pattern zoo. Left out "
        "of dumps and of the zoo id when None, so pattern zoos read as before",
    )

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> ZooConfig:
        if isinstance(self.architecture, list):
            total = sum(part.share for part in self.architecture)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"architecture: the shares sum to {total:g}, not 1")
        if self.language is not None:
            other = sorted({s.family for s in self.spaces()} - {"transformer"})
            if other:
                raise ValueError(f"architecture: a language zoo trains the transformer family, not {', '.join(other)}")
        return self

    @model_serializer(mode="wrap")
    def _without_absent_task(self, handler):
        data = handler(self)
        if self.language is None and isinstance(data, dict):
            data.pop("language", None)
        return data

    @property
    def task(self) -> str:
        """``patterns`` or ``language``: which batch task makes the records."""
        return "patterns" if self.language is None else "language"

    def training_for(self, part: int | None) -> TrainingConfig:
        """The training recipe of mixture part ``part`` (None: a single space): its own, or the zoo's."""
        own = None if part is None else self.architecture[part].training
        return self.training if own is None else own

    def spaces(self, family: str | None = None) -> list:
        """The architecture spaces a batch may draw from (one, or each of a mixture), optionally of one family."""
        spaces = [e.space for e in self.architecture] if isinstance(self.architecture, list) else [self.architecture]
        return [s for s in spaces if family is None or s.family == family]

    def content_hash(self) -> str:
        """Hash of what determines the records: everything but the runtime block and the batch count."""
        content = self.model_dump(mode="json", exclude={"runtime", "batches"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def parse_config(data: dict, model: type[Strict] = ZooConfig) -> Strict:
    """Validate a plain mapping into ``model``; raise ``ConfigError`` with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def shipped_config(relative: str | Path) -> Path:
    """A recipe shipped with the package, e.g. ``shipped_config("zoo/quickstart.yaml")``."""
    return CONFIGS / relative


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself; where no such file exists and it reads ``configs/...`` (as the README and the
    jobs write recipes), the recipe of that name shipped with the package, so the commands work
    from any folder with an installed zoo."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and path.parts[:1] == ("configs",) and len(path.parts) > 1:
        shipped = CONFIGS.joinpath(*path.parts[1:])
        if shipped.is_file():
            return shipped
    return path


def load_config(path: str | Path, model: type[Strict] = ZooConfig, overrides: dict | None = None) -> Strict:
    """Read a YAML file into ``model``; every failure is a ``ConfigError`` naming file or field.

    A relative ``configs/...`` path that does not exist here is the shipped recipe of that name
    (``resolve_config_path``)."""
    path = resolve_config_path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if overrides:
        data = _merge(data, overrides)
    try:
        return parse_config(data, model)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def zoo_config_from(
    path: str | Path | None,
    *,
    batches: int | None = None,
    workers: int | None = None,
    address: str | None = None,
) -> ZooConfig:
    """The zoo recipe at ``path`` (None: ``ZooConfig``'s defaults) with a command's overrides:
    the batch count, and the runtime's ``workers`` and Ray ``address`` (None leaves each as it is)."""
    overrides: dict = {}
    if batches is not None:
        overrides["batches"] = batches
    runtime = {key: value for key, value in (("workers", workers), ("address", address)) if value is not None}
    if runtime:
        overrides["runtime"] = runtime
    if path is None:
        return parse_config(overrides, ZooConfig)  # type: ignore[return-value]
    return load_config(path, ZooConfig, overrides)  # type: ignore[return-value]


def load_or_default(
    path: str | Path | None, default: Path, model: type[Strict], overrides: dict | None = None
) -> Strict:
    """``path``; without one, the shipped ``default`` file (package data, see ``CONFIGS``), or
    ``model``'s built-in defaults (the same values) should it be missing, which it says on stderr."""
    if path is None and not default.is_file():
        print(f"zoo: {default} not found; using {model.__name__}'s built-in defaults", file=sys.stderr)
        return parse_config(overrides or {}, model)
    return load_config(default if path is None else path, model, overrides)


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: Strict) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
