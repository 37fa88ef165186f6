"""What the probes read: a zoo folder's records, and each record's labelled sequences.

A record does not store its data sets; the batch task is a pure function of
``(config, batch_id)``, so the zoo's ``config.yaml`` regenerates them exactly.
A probe's classes are the batch's patterns, in the batch's order, then ``none``
(the negatives). A positive that matches several of the batch's patterns belongs to
all of them; the sampler files it under the one with the smallest pool, but a
one-label probe has no right answer for it, so by default it is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from zoo.config import ZooConfig
from zoo.readers.probes.config import Ambiguous
from zoo.factory.manifest import ManifestError

NONE_CLASS = "none"
RECORD_COLUMNS = (
    "example_id",
    "batch_id",
    "pair_index",
    "init_seed",
    "architecture",
    "patterns",
    "corrupted_pattern",
    "clean_weights",
    "degraded_weights",
    "metrics",
)
Which = Literal["clean", "degraded"]


class ProbeError(ValueError):
    """Bad input to the probing reader (a missing layer, no data, a row that does not exist): one line, exit 2."""


@dataclass(frozen=True, eq=False)
class LabelledData:
    """Sequences and the class of each: an index into ``classes`` (the last class is ``none``)."""

    tokens: np.ndarray  # [N, seq_len] int64
    labels: np.ndarray  # [N] int64
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.labels):
            raise ProbeError(f"{len(self.tokens)} sequences but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ProbeError(f"labels must lie in 0..{len(self.classes) - 1} (one per class)")

    def __len__(self) -> int:
        return len(self.labels)


def from_patterns(tokens: np.ndarray, pattern: np.ndarray, names: tuple[str, ...] | list[str]) -> LabelledData:
    """A ``LabelledSet``'s arrays (pattern index, -1 = negative) as probe classes (negatives -> ``none``)."""
    pattern = np.asarray(pattern, dtype=np.int64)
    labels = np.where(pattern < 0, len(names), pattern)
    return LabelledData(np.asarray(tokens, dtype=np.int64), labels, (*names, NONE_CLASS))


def subsample(data: LabelledData, n: int | None, seed: int) -> LabelledData:
    """At most ``n`` sequences, every class keeping its share (at least one of each present class)."""
    if n is None or len(data) <= n:
        return data
    rng = np.random.default_rng([seed, 7])
    keep = []
    for c in np.unique(data.labels):
        members = np.flatnonzero(data.labels == c)
        take = max(1, round(n * len(members) / len(data)))
        keep.append(rng.choice(members, size=min(take, len(members)), replace=False))
    index = np.sort(np.concatenate(keep))
    return LabelledData(data.tokens[index], data.labels[index], data.classes)


def unambiguous(config: ZooConfig, names: tuple[str, ...] | list[str], tokens: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Which sequences to keep: negatives, and positives that match only one of ``names``.

    A pattern nested in another of the batch (``all_same`` in ``palindrome``) has no
    positive of its own; it keeps all of its positives, under the sampler's label (the
    more specific pattern), rather than vanish from the probe's classes.
    """
    from zoo.patterns.sampler import sampler_for

    keep = sampler_for(config.patterns).match_counts(tokens, names) <= 1
    for k in range(len(names)):
        mine = pattern == k
        if mine.any() and not (keep & mine).any():
            keep |= mine
    return np.asarray(keep)


def batch_data(
    config: ZooConfig, batch_id: int, splits: list[str], *, ambiguous: Ambiguous, expect: list[str] | None = None
) -> LabelledData:
    """The labelled sequences of a batch (the chosen splits pooled), regenerated from the zoo's config;
    ``ambiguous="drop"`` leaves out positives that match several of the batch's patterns."""
    from zoo.factory.plan import plan_batch

    plan = plan_batch(config, int(batch_id))
    if expect is not None and list(plan.patterns) != list(expect):
        raise ProbeError(
            f"batch {batch_id}: config.yaml regenerates patterns {list(plan.patterns)}, the record says {list(expect)}"
        )
    parts = [getattr(plan.data, split) for split in splits]
    tokens = np.concatenate([p.tokens for p in parts])
    pattern = np.concatenate([p.pattern for p in parts])
    if ambiguous == "drop":
        keep = unambiguous(config, plan.patterns, tokens, pattern)
        tokens, pattern = tokens[keep], pattern[keep]
    return from_patterns(tokens, pattern, plan.patterns)


@dataclass
class ZooRecords:
    """A zoo folder opened for probing: its config and every record (rows in (batch, pair) order)."""

    path: Path
    config: ZooConfig
    table: pa.Table

    @property
    def n_rows(self) -> int:
        return self.table.num_rows

    def row(self, index: int) -> dict:
        if not 0 <= index < self.n_rows:
            span = f"rows 0-{self.n_rows - 1}" if self.n_rows else "no rows"
            raise ProbeError(f"row {index} does not exist: {self.path} holds {self.n_rows} records ({span})")
        return self.table.slice(index, 1).to_pylist()[0]

    def rows(self, indices: list[int] | None = None) -> list[dict]:
        if indices is None:
            return self.table.to_pylist()
        return [self.row(i) for i in indices]


def open_zoo(path: str | Path) -> ZooRecords:
    """Read a zoo's records (``zoo.open``); every problem is a one-line ``ProbeError``."""
    from zoo.api import Zoo, ZooError, require_task
    from zoo.readers.probes.activations import PROBED_FAMILIES
    from zoo.subjects.families import UnsupportedFamily, require_families

    try:
        zoo = Zoo(path)
        require_task(zoo, "patterns", "zoo probe activations (zoo probe model and zoo probe zoo read language zoos)")
        table = zoo.table(columns=[*RECORD_COLUMNS, "family"])
        require_families(table.column("family").to_pylist(), PROBED_FAMILIES, "zoo probe")
    except (ZooError, UnsupportedFamily) as error:
        raise ProbeError(str(error)) from None
    except (ManifestError, FileNotFoundError, OSError, pa.ArrowException) as error:
        raise ProbeError(f"{Path(path)}: unreadable zoo ({error})") from None
    return ZooRecords(zoo.path, zoo.config, table.select(list(RECORD_COLUMNS)))


def row_weights(row: dict, which: Which) -> np.ndarray:
    if which not in ("clean", "degraded"):
        raise ProbeError(f"which must be 'clean' or 'degraded', not {which!r}")
    return np.asarray(row[f"{which}_weights"], dtype=np.float32)
