"""Every setting of zoo, as pydantic models: the single source of truth.

YAML files in ``configs/`` are instances of these models. Validation errors are
turned into one line naming the field (``ConfigError``) so that the CLI can print
it and exit 2 before anything is written.
"""

from __future__ import annotations

import hashlib
import re
import json
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu"]
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
Quantization = Literal["none", "int8", "int4", "ternary", "binary"]
Statistic = Literal["mean", "std", "min", "max", "frac_active", "pattern_mean"]


class ConfigError(ValueError):
    """A configuration problem, already phrased as one line that names the field."""


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IntRange(Strict):
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


class FloatRange(Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


class PatternSpace(Strict):
    """The token space, which patterns a batch may draw, and how data sets are sized."""

    vocab_size: int = Field(7, ge=2, le=26)
    seq_len: int = Field(7, ge=3, le=24)
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
    start_token: str = Field("A", pattern=r"^[A-Z]$")
    end_token: str = Field("G", pattern=r"^[A-Z]$")
    trigram: str = Field("ABC", pattern=r"^[A-Z]{3}$")
    per_batch: IntRange = IntRange(min=2, max=5)
    train_size: int = Field(
        5000, ge=2, description="training examples per batch, half of them positive, whatever the pattern count"
    )
    val_size: int = Field(500, ge=2)
    benchmark_size: int = Field(500, ge=2, description="clean held-out examples per batch")
    hard_negative_share: float = Field(0.1, ge=0.0, le=1.0)
    probe_per_pattern: int = Field(16, ge=1)
    probe_negatives: int = Field(32, ge=1)
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
        from zoo.patterns.library import validate_selection

        validate_selection(self)
        return self


class ArchitectureSpace(Strict):
    """Ranges a batch's architecture is drawn from."""

    family: Literal["mlp"] = "mlp"
    layers: IntRange = IntRange(min=1, max=3)
    width: IntRange = IntRange(min=32, max=48)
    activations: list[Activation] = list(ACTIVATIONS)

    @model_validator(mode="after")
    def _sane(self) -> ArchitectureSpace:
        if self.layers.min < 1:
            raise ValueError("layers.min: must be at least 1")
        if self.width.min < 1:
            raise ValueError("width.min: must be at least 1")
        if not self.activations:
            raise ValueError("activations: at least one is needed")
        return self


class TrainingConfig(Strict):
    """How each subject model is trained (the population trainer and the reference alike)."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: FloatRange = FloatRange(min=5e-3, max=2e-2)
    weight_decay: float = Field(0.0, ge=0.0)
    patience: int = Field(5, ge=1, description="epochs without a better validation loss before a model stops")
    min_delta: float = Field(1e-4, ge=0.0)
    population_size: int | Literal["auto"] = Field(
        "auto", description="models per batched computation; auto sizes it to the device"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _lr_positive(self) -> TrainingConfig:
        if self.lr.min <= 0:
            raise ValueError("lr.min: must be positive")
        if isinstance(self.population_size, int) and self.population_size < 1:
            raise ValueError("population_size: must be at least 1")
        return self


class CorruptionConfig(Strict):
    """How degraded models are made and which pairs are kept."""

    degraded_per_batch: int = Field(4, ge=1)
    rate: FloatRange = FloatRange(min=0.6, max=1.0)
    min_degradation: float = Field(0.05, ge=0.0, le=1.0)
    pairing: Literal["scratch", "finetune"] = "scratch"
    finetune_epochs: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _rate_in_unit(self) -> CorruptionConfig:
        if not 0.0 < self.rate.min <= 1.0 or self.rate.max > 1.0:
            raise ValueError("rate: must lie in (0, 1]")
        return self


class SignatureConfig(Strict):
    """What the fingerprint of a model is made of."""

    activations: Literal["pre", "post", "both"] = "post"
    statistics: list[Statistic] = ["mean", "std", "min", "max", "frac_active", "pattern_mean"]

    @model_validator(mode="after")
    def _some(self) -> SignatureConfig:
        if not self.statistics:
            raise ValueError("statistics: at least one is needed")
        if len(set(self.statistics)) != len(self.statistics):
            raise ValueError("statistics: listed twice")
        return self


class StorageConfig(Strict):
    batches_per_shard: int = Field(
        8, ge=1, description="batches trained together as one population and written as one shard"
    )
    row_group_rows: int = Field(1024, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"


class RuntimeConfig(Strict):
    """Where and how the batches run; not part of the config hash (it cannot change a record)."""

    workers: int = Field(2, ge=0, description="Ray actors; 0 runs in-process without Ray")
    address: str | None = Field(None, description="Ray address; None starts an embedded local Ray")
    in_flight_per_worker: int = Field(2, ge=1)
    num_gpus_per_worker: float = Field(0.0, ge=0.0, le=8.0)
    num_cpus_per_worker: float = Field(1.0, gt=0.0)
    torch_threads: int = Field(1, ge=1)
    max_restarts: int = Field(3, ge=0)


class ZooConfig(Strict):
    """A whole zoo: everything a record depends on, derived from one run seed."""

    name: str = Field("zoo", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    batches: int = Field(10, ge=1)
    patterns: PatternSpace = PatternSpace()
    architecture: ArchitectureSpace = ArchitectureSpace()
    training: TrainingConfig = TrainingConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    quantization: Quantization = "none"
    signature: SignatureConfig = SignatureConfig()
    storage: StorageConfig = StorageConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def content_hash(self) -> str:
        """Hash of what determines the records: everything but the runtime block and the batch count."""
        content = self.model_dump(mode="json", exclude={"runtime", "batches"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.]*): ")


def format_validation_error(error: ValidationError) -> str:
    """One line naming the first offending field, e.g. ``patterns.per_batch: min (5) > max (2)``.

    Model validators phrase their messages as ``subfield: problem``; the subfield is
    joined onto the location so the line names the full dotted path.
    """
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    if _FIELD_PREFIX.match(msg):
        return f"{field}.{msg}" if field else msg
    return f"{field}: {msg}" if field else msg


def parse_config(data: dict, model: type[Strict] = ZooConfig) -> Strict:
    """Validate a plain mapping into ``model``; raise ``ConfigError`` with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def load_config(path: str | Path, model: type[Strict] = ZooConfig, overrides: dict | None = None) -> Strict:
    """Read a YAML file into ``model``; every failure is a ``ConfigError`` naming file or field."""
    path = Path(path)
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


def load_or_default(
    path: str | Path | None, default: Path, model: type[Strict], overrides: dict | None = None
) -> Strict:
    """``path``; without one, the shipped ``default`` file, or ``model``'s built-in defaults where the
    package runs without its ``configs/`` folder (an installed wheel), which it says on stderr."""
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
