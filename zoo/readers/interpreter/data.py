"""Zoo shards -> padded neuron-token batches.

Records are streamed from the manifest's shards with pyarrow (one Arrow record
batch at a time, only the columns the interpreter reads), filtered to one split
(the batches ``zoo split`` assigned to it, grouped by batch), and decoded into
``Example``s. ``collate`` pads examples of different architectures to one token
count: every neuron of a subject (hidden units, then the output logit) is a token,
and ``mask`` marks the real ones.

A subject of any family is read the same way (``neurons``): its neurons' signature
rows, kinds and depths, and their values on the probe set. For an MLP these values are
computed from its weights in token space (``token_space``: the MLP family's own reader,
which also feeds the weights themselves to the model); for a family without a token space
they are computed at decode time through the family's population (``site_values``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from zoo.atomic import write_json_atomic
from zoo.config import ZooConfig
from zoo.factory.reader import shard_keys
from zoo.factory.schema import signature_stats_of
from zoo.patterns.library import pattern_library, selectable
from zoo.patterns.sampler import ProbeSet
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.metrics import SetSpace
from zoo.readers.interpreter.neurons import READ_FAMILIES, has_token_space, site_values
from zoo.readers.interpreter.batches import Batch, collate
from zoo.readers.interpreter.token_space import TokenMap, Weights, from_tokens, permute_layer, to_tokens, token_map
from zoo.storage import Store, is_uri, resolve
from zoo.subjects.families import SubjectArchitecture, UnsupportedFamily, require_families, require_family

if TYPE_CHECKING:
    from zoo.api import Zoo

SPLITS = ("train", "validation", "test", "ood_architecture", "ood_patterns")
COLUMNS = (
    "example_id",
    "batch_id",
    "pair_index",
    "architecture",
    "patterns",
    "corrupted_pattern",
    "corruption_rate",
    "metrics",
    "neuron_layer",
    "degraded_signature",
    "degraded_weights",
    "clean_weights",
)

# re-exported: the batches and the token space moved to their own modules
__all__ = ["Batch", "TokenMap", "Weights", "collate", "from_tokens", "permute_layer", "to_tokens", "token_map"]

SMALL_COLUMNS = ("example_id", "batch_id", "pair_index", "architecture", "patterns", "corrupted_pattern", "corruption_rate", "metrics")


# ---------------------------------------------------------------- the zoo


@dataclass
class ZooSource:
    """A zoo as the interpreter sees it: its config, pattern vocabulary, signature columns and splits.

    ``path`` names it (a ``Path`` for a local folder, the URI for object storage); its files are
    read through ``store`` (``zoo.storage``), so a zoo on ``s3://`` reads as a folder does.
    """

    path: Path | str
    config: ZooConfig
    zoo_id: str
    pattern_names: tuple[str, ...]
    signature_stats: tuple[str, ...]
    assignment: dict[int, str]
    split_source: str
    zoo: Zoo | None = None
    _counts: dict[str, int] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        """Where the shards are read from: the opened zoo's store, else the one ``path`` names."""
        return self.zoo.store if self.zoo is not None else resolve(self.path)

    @property
    def drawn(self) -> tuple[str, ...]:
        """The patterns the zoo's batches draw from: the only ones an interpreter should name."""
        return selectable(self.config.patterns)

    @cached_property
    def set_space(self) -> SetSpace:
        """The pattern sets this zoo's models can have."""
        sizes = self.config.patterns.per_batch
        return SetSpace(sizes.min, sizes.max, np.array([name in self.drawn for name in self.pattern_names]))

    @property
    def in_features(self) -> int:
        return self.config.patterns.vocab_size * self.config.patterns.seq_len

    def batches(self, split: str) -> set[int]:
        if split not in SPLITS:
            raise InterpreterError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        return {b for b, name in self.assignment.items() if name == split}

    def rows(self, split: str) -> int:
        """Records in a split (counted once from the batch_id column)."""
        if not self._counts:
            counts = dict.fromkeys(SPLITS, 0)
            store = self.store
            for key in shard_keys(store):
                for batch in pq.read_table(key, columns=["batch_id"], filesystem=store.fs).column("batch_id").to_pylist():
                    counts[self.assignment.get(int(batch), "train")] += 1
            self._counts.update(counts)
        return self._counts[split]

    def describe(self) -> dict:
        return {
            "zoo_dir": str(self.path.resolve()) if isinstance(self.path, Path) else self.path,
            "zoo_id": self.zoo_id,
            "pattern_names": list(self.pattern_names),
            "drawn": list(self.drawn),
            "signature_stats": list(self.signature_stats),
            "in_features": self.in_features,
            "vocab_size": self.config.patterns.vocab_size,
            "seq_len": self.config.patterns.seq_len,
            "splits": self.split_source,
            "probe_tokens": self.probe.tokens.tolist(),
            "probe_patterns": self.probe_patterns,
            "probe_member": self.probe_member.tolist(),
        }

    @cached_property
    def probe(self) -> ProbeSet:
        """The zoo's probe set (``probe.parquet``): the inputs its signatures were computed on, each
        labelled with its pattern. A source built without a zoo folder regenerates it from the config."""
        if self.zoo is not None:
            try:
                return self.zoo.probe_set
            except ValueError as error:
                raise InterpreterError(str(error)) from None
        from zoo.factory.batch import probe_set

        return probe_set(self.config)

    @property
    def probe_patterns(self) -> list[int]:
        """Each probe's pattern as an index into ``pattern_names`` (-1: a negative)."""
        probe = self.probe
        index = {name: i for i, name in enumerate(self.pattern_names)}
        return [index[probe.names[p]] if p >= 0 else -1 for p in probe.pattern.tolist()]

    @property
    def probe_member(self) -> np.ndarray:
        """``[R, V]`` 0/1: which library patterns each probe matches (a probe made for one pattern may match
        others), so any pattern set labels the probe set as the zoo labels its training data."""
        library = pattern_library(self.config.patterns)
        tokens = self.probe.tokens
        return np.stack([library[name].predicate(tokens) for name in self.pattern_names], axis=1).astype(np.int8)


def open_source(path: str | Path | Store) -> ZooSource:
    """Open a zoo (``zoo.open``: a folder or a ``pyarrow.fs`` URI) for the interpreter; every problem
    is one ``InterpreterError`` line."""
    from zoo.api import Zoo, ZooError, require_task

    if not isinstance(path, Store) and not is_uri(path) and not Path(path).is_dir():
        raise InterpreterError(f"{Path(path)}: no such zoo folder")
    try:
        zoo = Zoo(path)
        require_task(zoo, "patterns", "zoo interpret")
        require_families(zoo.table(columns=["family"]).column("family").to_pylist(), READ_FAMILIES, "zoo interpret")
    except (ZooError, UnsupportedFamily) as error:
        raise InterpreterError(str(error)) from None
    shards = zoo.shards
    if not shards:
        raise InterpreterError(f"{path}: the zoo holds no shards yet")
    if signature_stats_of(pq.read_schema(zoo.shard_keys[0], filesystem=zoo.filesystem)) is None:
        raise InterpreterError(f"{shards[0]}: no zoo.signature_stats in the schema metadata")
    assignment, source = _assignment(zoo.store)
    return ZooSource(
        path=zoo.path,
        config=zoo.config,
        zoo_id=zoo.info.zoo_id,
        pattern_names=tuple(pattern_library(zoo.config.patterns)),
        signature_stats=zoo.signature_stats,
        assignment=assignment,
        split_source=source,
        zoo=zoo,
    )


def _assignment(store: Store) -> tuple[dict[int, str], str]:
    """The stored splits (``zoo split``); without them the default split, computed in memory."""
    from zoo.export.splits import SPLITS_FILE, BatchFacts, SplitOptions, SplitsError, assign, load_splits

    if store.is_file(SPLITS_FILE):
        try:
            return dict(load_splits(store).assignment), SPLITS_FILE
        except SplitsError as error:
            raise InterpreterError(str(error)) from None
    facts: dict[int, BatchFacts | None] = {}
    for key in shard_keys(store):
        for row in pq.read_table(key, columns=["batch_id", "patterns", "architecture"], filesystem=store.fs).to_pylist():
            facts[int(row["batch_id"])] = BatchFacts.of_row(row)
    try:
        return assign(facts, SplitOptions()), "default (no splits.json: batch-grouped 80/10/10, no OOD)"
    except SplitsError as error:
        raise InterpreterError(str(error)) from None


# ---------------------------------------------------------------- records -> examples


@dataclass
class Example:
    """One record, decoded: the degraded model to read and what the interpreter should say about it."""

    example_id: str
    batch_id: int
    pair_index: int
    architecture: SubjectArchitecture
    signature: np.ndarray  # [N, S] degraded model's signature
    degraded: np.ndarray  # [P] flat weights (the architecture's layout)
    clean: np.ndarray  # [P]
    patterns: tuple[str, ...]
    targets: np.ndarray  # [V] multi-hot over the pattern vocabulary
    corrupted: int  # index into the vocabulary
    accuracy: float  # the degraded model's benchmark accuracy
    metrics: dict
    site_values: np.ndarray | None = None  # [R, N] probe values; only for a family without a token space

    @property
    def family(self) -> str:
        return self.architecture.family


def _lists(array: pa.Array) -> list[np.ndarray]:
    """A list column as one numpy array per row (handles sliced arrays)."""
    lengths = np.asarray(array.value_lengths().fill_null(0), dtype=np.int64)
    values = array.flatten()
    if pa.types.is_fixed_size_list(values.type):
        width = values.type.list_size
        flat = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    else:
        flat = values.to_numpy(zero_copy_only=False)
    return np.split(flat, np.cumsum(lengths)[:-1])


def decode(batch: pa.RecordBatch, vocab: Sequence[str], probe_tokens: np.ndarray | None = None) -> list[Example]:
    """Examples from an Arrow record batch holding at least ``COLUMNS``.

    With ``probe_tokens [R, L]`` the subjects of a family without a token space get their probe
    values (``site_values``: one population forward per family group), which the model needs.
    """
    index = {name: i for i, name in enumerate(vocab)}
    columns = {name: batch.column(name) for name in COLUMNS}
    signatures = _lists(columns["degraded_signature"])
    degraded = _lists(columns["degraded_weights"])
    clean = _lists(columns["clean_weights"])
    small = pa.RecordBatch.from_arrays(
        [columns[n] for n in SMALL_COLUMNS],
        names=list(SMALL_COLUMNS),
    ).to_pylist()
    examples = []
    for i, row in enumerate(small):
        targets = np.zeros(len(vocab), dtype=np.float32)
        unknown = [p for p in row["patterns"] if p not in index]
        if unknown:
            raise InterpreterError(f"record {row['example_id']}: pattern {unknown[0]!r} is not in the zoo's library")
        targets[[index[p] for p in row["patterns"]]] = 1.0
        metrics = dict(row["metrics"])
        metrics["corrupted_pattern"] = row["corrupted_pattern"]
        metrics["corruption_rate"] = float(row["corruption_rate"])
        examples.append(
            Example(
                example_id=row["example_id"],
                batch_id=int(row["batch_id"]),
                pair_index=int(row["pair_index"]),
                architecture=require_family(row["architecture"], READ_FAMILIES, "zoo interpret"),
                signature=np.array(signatures[i], dtype=np.float32),
                degraded=np.array(degraded[i], dtype=np.float32),
                clean=np.array(clean[i], dtype=np.float32),
                patterns=tuple(row["patterns"]),
                targets=targets,
                corrupted=index[row["corrupted_pattern"]],
                accuracy=float(metrics["degraded_accuracy"]),
                metrics=metrics,
            )
        )
    generic = [e for e in examples if not has_token_space(e.architecture)]
    if generic and probe_tokens is not None:
        values = site_values([e.architecture for e in generic], [e.degraded for e in generic], probe_tokens)
        for e, v in zip(generic, values):
            e.site_values = v
    return examples


def stream(
    source: ZooSource,
    split: str | None,
    *,
    read_rows: int = 256,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 2048,
) -> Iterator[Example]:
    """Examples of a split (None: every record), shard by shard, never the whole zoo in memory.

    With ``shuffle_seed`` the shard order is shuffled and rows pass through a shuffle
    buffer of ``shuffle_buffer`` examples; without it rows come in the zoo's order.
    """
    wanted = None if split is None else pa.array(sorted(source.batches(split)), type=pa.int64())
    store = source.store
    paths = shard_keys(store)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        paths = [paths[i] for i in rng.permutation(len(paths))]
    buffer: list[Example] = []
    for path in paths:
        for batch in pq.ParquetFile(path, filesystem=store.fs).iter_batches(batch_size=read_rows, columns=list(COLUMNS)):
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("batch_id"), value_set=wanted))
            if batch.num_rows == 0:
                continue
            examples = decode(batch, source.pattern_names, source.probe.tokens)
            if rng is None:
                yield from examples
                continue
            buffer.extend(examples)
            while len(buffer) >= shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
    if rng is not None:
        for i in rng.permutation(len(buffer)):
            yield buffer[i]


def read_row(source: ZooSource, ref: str) -> Example:
    """One record by ``example_id`` or by its index in the zoo's (batch_id, pair_index) order."""
    if ref.isdigit():
        position = int(ref)
        for i, example in enumerate(stream(source, None)):
            if i == position:
                return example
        raise InterpreterError(f"--model {ref}: the zoo holds fewer records")
    for example in stream(source, None):
        if example.example_id == ref:
            return example
    raise InterpreterError(f"--model {ref}: no record with this example_id (or give a row index)")


class SplitData:
    """A split as repeated epochs of examples: streamed each epoch, or cached after the first pass."""

    def __init__(self, source: ZooSource, split: str, *, cache: bool = True, read_rows: int = 256, shuffle_buffer: int = 2048):
        self.source, self.split, self.cache = source, split, cache
        self.read_rows, self.shuffle_buffer = read_rows, shuffle_buffer
        self._cached: list[Example] | None = None

    def __len__(self) -> int:
        return len(self._cached) if self._cached is not None else self.source.rows(self.split)

    def examples(self, seed: int | None = None) -> Iterator[Example]:
        if self._cached is not None:
            order = range(len(self._cached)) if seed is None else np.random.default_rng(seed).permutation(len(self._cached))
            for i in order:
                yield self._cached[i]
            return
        if self.cache:
            self._cached = list(stream(self.source, self.split, read_rows=self.read_rows))
            yield from self.examples(seed)
            return
        yield from stream(self.source, self.split, read_rows=self.read_rows, shuffle_seed=seed, shuffle_buffer=self.shuffle_buffer)

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[tuple[list[Example], Batch]]:
        yield from batched(self.examples(seed), batch_size)


def _run_key(example: Example) -> str:
    """Sort key that keeps runs of one activation together (subjects without one first)."""
    return getattr(example.architecture, "activation", "") or ""


def batched(examples, batch_size: int) -> Iterator[tuple[list[Example], Batch]]:
    """``(examples, collated batch)`` pairs; each chunk is ordered by activation (fewer runs to apply)."""
    chunk: list[Example] = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == batch_size:
            chunk.sort(key=_run_key)
            yield chunk, collate(chunk)
            chunk = []
    if chunk:
        chunk.sort(key=_run_key)
        yield chunk, collate(chunk)


def repair_inputs(
    config: ZooConfig, per_pattern: int, random: int, seed: int | tuple[int, ...] = 0, near_misses: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs the functional repair loss compares decoded and clean models on.

    ``per_pattern`` sequences from every library pattern's generator, ``near_misses`` of
    each of those patterns' sequences with one token changed (the benchmark's hard
    negatives are such near misses, and a repair that says yes to them is no repair),
    plus ``random`` uniform sequences; returns tokens ``[R, seq_len]``, membership
    ``[R, V]`` (which library patterns each sequence matches) and nearness ``[R, V]``
    (which pattern's sequence a near miss was made from, where it left that pattern).
    An integer ``seed`` gives the fixed set of earlier runs; a tuple, one draw of many.
    """
    space = config.patterns
    library = pattern_library(space)
    rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 7919])
    parts = [p.generate(rng, per_pattern, space.vocab_size, space.seq_len) for p in library.values()]
    parts.append(rng.integers(0, space.vocab_size, size=(random, space.seq_len)))
    origin = np.full(sum(len(p) for p in parts), -1)
    if near_misses:
        near = np.concatenate([p[rng.integers(0, len(p), near_misses)] for p in parts[: len(library)]])
        where = rng.integers(0, space.seq_len, len(near))
        shift = rng.integers(1, space.vocab_size, len(near))
        near[np.arange(len(near)), where] = (near[np.arange(len(near)), where] + shift) % space.vocab_size
        parts.append(near)
        origin = np.concatenate([origin, np.repeat(np.arange(len(library)), near_misses)])
    tokens = np.concatenate(parts).astype(np.int64)
    member = np.stack([p.predicate(tokens) for p in library.values()], axis=1).astype(np.float32)
    nearness = (origin[:, None] == np.arange(len(library))[None]) & (member == 0)
    return tokens, member, nearness.astype(np.float32)


def one_hot(tokens: np.ndarray | torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[R, L]`` token ids -> ``[R, L * vocab]`` features, as ``SubjectMLP.encode`` builds them."""
    t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    return torch.nn.functional.one_hot(t, vocab_size).flatten(1).float()


def dump_json(path: Path, data: dict) -> None:
    write_json_atomic(path, data)
