"""What a population is made of: activation streams, one spec per SAE, and the training settings.

A ``Stream`` is one hookpoint's activations: a training split and a held-out split
(never the same tokens), and for transcoders a target of its own width beside each.
An ``SAESpec`` names its stream and says what to train on it: the kind, the number of
latents, ``k`` (TopK, BatchTopK) or ``alpha`` (ReLU + L1), the seed of its
initialization, whether it transcodes (input -> the stream's target) and whether it has
a skip connection (skip transcoders), AuxK, and optionally its own learning rate.

Every check raises ``SAEError`` (a ``ValueError``) with one line naming the bad value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["topk", "batchtopk", "relu"]
KINDS = ("topk", "batchtopk", "relu")

# Adam's rate at 2**14 latents, scaled by (latents / 2**14) ** -0.5 (the notes' sparsify/OpenAI rule).
BASE_LR = 2e-4
BASE_LATENTS = 2**14


class SAEError(ValueError):
    """Bad input to the SAE reader (k larger than the width, an empty stream, an unknown kind): one line."""


def _as_float32(name: str, array) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    out = np.asarray(array, dtype=np.float32)
    if out.ndim != 2:
        raise SAEError(f"stream {name!r}: activations must be 2-D [tokens, width], got shape {out.shape}")
    if out.shape[0] == 0:
        raise SAEError(f"stream {name!r} is empty (0 tokens)")
    if out.shape[1] == 0:
        raise SAEError(f"stream {name!r} has width 0")
    if not np.isfinite(out).all():
        raise SAEError(f"stream {name!r} holds NaN or infinite activations")
    return out


@dataclass(eq=False)
class Stream:
    """One hookpoint's activations: ``train``, ``val`` ``[tokens, d]``; transcoders: ``target_*`` ``[tokens, d_out]``."""

    name: str
    train: np.ndarray
    val: np.ndarray
    target_train: np.ndarray | None = None
    target_val: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.train = _as_float32(f"{self.name}.train", self.train)
        self.val = _as_float32(f"{self.name}.val", self.val)
        if self.train.shape[1] != self.val.shape[1]:
            raise SAEError(
                f"stream {self.name!r}: train width {self.train.shape[1]} != held-out width {self.val.shape[1]}"
            )
        if (self.target_train is None) != (self.target_val is None):
            raise SAEError(f"stream {self.name!r}: give both target_train and target_val, or neither")
        if self.target_train is not None:
            self.target_train = _as_float32(f"{self.name}.target_train", self.target_train)
            self.target_val = _as_float32(f"{self.name}.target_val", self.target_val)
            for split, x, y in (("train", self.train, self.target_train), ("val", self.val, self.target_val)):
                if len(x) != len(y):
                    raise SAEError(f"stream {self.name!r}: {len(x)} {split} inputs but {len(y)} targets")
            if self.target_train.shape[1] != self.target_val.shape[1]:
                raise SAEError(f"stream {self.name!r}: target widths differ between train and held-out")

    @property
    def d_in(self) -> int:
        return int(self.train.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.target_train.shape[1]) if self.target_train is not None else self.d_in


@dataclass(frozen=True)
class SAESpec:
    """One SAE or transcoder of a population."""

    stream: str
    latents: int
    kind: Kind = "topk"
    k: int = 8  # TopK / BatchTopK: active latents per token (BatchTopK: on average)
    alpha: float = 1.0  # ReLU: L1 coefficient (per token, over d_out; see docs/guide/sae.md)
    seed: int = 0
    transcode: bool = False
    skip: bool = False
    auxk: float = 0.0  # AuxK coefficient (1/32 in sparsify-style setups); 0: off
    lr: float | None = None  # None: BASE_LR * (latents / 2**14) ** -0.5
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        kind = "transcoder" if self.transcode else "sae"
        if self.skip:
            kind = "skip-" + kind
        sparsity = f"a{self.alpha:g}" if self.kind == "relu" else f"k{self.k}"
        return f"{self.stream}.{kind}.{self.kind}.m{self.latents}.{sparsity}.s{self.seed}"

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else BASE_LR * math.sqrt(BASE_LATENTS / self.latents)


@dataclass(frozen=True)
class TrainConfig:
    """How a population trains. ``patience=None`` trains every SAE for exactly ``steps`` steps."""

    steps: int = 2000  # at most this many optimizer steps per SAE
    batch_size: int = 256  # tokens per SAE per step
    eval_every: int = 100  # steps between held-out evaluations
    patience: int | None = 5  # evaluations without a better held-out objective before an SAE stops
    min_delta: float = 1e-4  # an improvement smaller than this (relative) does not count
    val_tokens: int = 8192  # held-out tokens used for early stopping and the final metrics (at most)
    eval_batch: int = 2048  # held-out tokens per evaluation chunk
    dead_tokens: int | None = None  # AuxK: tokens without firing before a latent is dead; None: one pass
    median_tokens: int = 4096  # tokens whose geometric median initializes b_dec
    threshold_decay: float = 0.99  # BatchTopK: EMA of the smallest selected activation (the inference threshold)
    bucket: bool = True  # one stack per kind and padded shape; False: one stack per kind
    data_seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "val_tokens", "eval_batch", "median_tokens"):
            if getattr(self, name) < 1:
                raise SAEError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise SAEError(f"patience must be at least 1 or None, got {self.patience}")
        if not 0.0 <= self.threshold_decay < 1.0:
            raise SAEError(f"threshold_decay must lie in [0, 1), got {self.threshold_decay}")


def check_specs(streams: list[Stream], specs: list[SAESpec]) -> dict[str, Stream]:
    """The streams by name, after checking every spec against them."""
    if not streams:
        raise SAEError("no activation streams given")
    if not specs:
        raise SAEError("no SAEs to train (empty spec list)")
    by_name: dict[str, Stream] = {}
    for stream in streams:
        if stream.name in by_name:
            raise SAEError(f"two streams are named {stream.name!r}")
        by_name[stream.name] = stream
    labels: set[str] = set()
    for spec in specs:
        if spec.stream not in by_name:
            raise SAEError(f"{spec.label}: unknown stream {spec.stream!r} (have {', '.join(sorted(by_name))})")
        stream = by_name[spec.stream]
        if spec.kind not in KINDS:
            raise SAEError(f"{spec.label}: unknown kind {spec.kind!r} (choose from {', '.join(KINDS)})")
        if spec.latents < 1:
            raise SAEError(f"{spec.label}: latents must be at least 1, got {spec.latents}")
        if spec.kind != "relu" and not 1 <= spec.k <= spec.latents:
            raise SAEError(f"{spec.label}: k={spec.k} must lie in 1..{spec.latents} (the number of latents)")
        if spec.kind == "relu" and spec.alpha < 0:
            raise SAEError(f"{spec.label}: alpha must be non-negative, got {spec.alpha}")
        if spec.transcode and stream.target_train is None:
            raise SAEError(f"{spec.label}: transcode=True but stream {spec.stream!r} has no target")
        if spec.skip and not spec.transcode:
            raise SAEError(f"{spec.label}: a skip connection needs transcode=True (an SAE would learn the identity)")
        if spec.auxk < 0:
            raise SAEError(f"{spec.label}: auxk must be non-negative, got {spec.auxk}")
        if spec.learning_rate <= 0:
            raise SAEError(f"{spec.label}: learning rate must be positive, got {spec.learning_rate}")
        if spec.label in labels:
            raise SAEError(f"two SAEs share the label {spec.label!r}: give them distinct seeds or names")
        labels.add(spec.label)
    return by_name


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / scale`` with one scalar ``scale``: the centered stream has mean squared norm ``d``."""

    mean: np.ndarray
    scale: float

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        mean = x.mean(axis=0, dtype=np.float64)
        sq = float(((x - mean) ** 2).sum(axis=1, dtype=np.float64).mean())
        scale = math.sqrt(sq / x.shape[1]) if sq > 0 else 1.0
        return cls(mean=mean.astype(np.float32), scale=scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / np.float32(self.scale)).astype(np.float32)

    def to_json(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "scale": self.scale}


@dataclass(eq=False)
class PreparedStream:
    """A stream standardized with its training statistics (inputs and targets each)."""

    stream: Stream
    x_std: Standardizer
    y_std: Standardizer | None
    train: np.ndarray
    val: np.ndarray
    target_train: np.ndarray | None = None
    target_val: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def prepare(stream: Stream) -> PreparedStream:
    x_std = Standardizer.fit(stream.train)
    prepared = PreparedStream(stream, x_std, None, x_std(stream.train), x_std(stream.val))
    if stream.target_train is not None:
        y_std = Standardizer.fit(stream.target_train)
        prepared.y_std = y_std
        prepared.target_train = y_std(stream.target_train)
        prepared.target_val = y_std(stream.target_val)
    return prepared
