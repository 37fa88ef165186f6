"""Zoo shards -> padded neuron-token batches.

Records are streamed from the manifest's shards with pyarrow (one Arrow record
batch at a time, only the columns the interpreter reads), filtered to one split
(the batches ``zoo split`` assigned to it, grouped by batch), and decoded into
``Example``s. ``collate`` pads examples of different architectures to one token
count: every neuron of a subject (hidden units, then the output logit) is a token,
and ``mask`` marks the real ones.

A subject's weights live in token space: ``w_in [N, D]`` holds the first hidden
layer's input weights (inputs are one-hot (position, token) features, so their
order is fixed), ``adj [N, N]`` holds every other weight (``adj[j, i]`` is the
weight from neuron ``i`` to neuron ``j`` of the next layer) and ``bias [N]``.
Permuting a layer's neurons permutes these rows and columns together, which is
what makes the interpreter's permutation invariance testable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from zoo.atomic import write_json_atomic
from zoo.config import ACTIVATIONS, ZooConfig
from zoo.factory.reader import shard_paths
from zoo.factory.schema import signature_stats_of
from zoo.patterns.library import pattern_library, selectable
from zoo.patterns.sampler import ProbeSet
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.metrics import SetSpace
from zoo.subjects.families import UnsupportedFamily, require_families, require_family
from zoo.subjects.families.mlp import Architecture

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

SMALL_COLUMNS = ("example_id", "batch_id", "pair_index", "architecture", "patterns", "corrupted_pattern", "corruption_rate", "metrics")


# ---------------------------------------------------------------- the zoo


@dataclass
class ZooSource:
    """A zoo folder as the interpreter sees it: its config, pattern vocabulary, signature columns and splits."""

    path: Path
    config: ZooConfig
    zoo_id: str
    pattern_names: tuple[str, ...]
    signature_stats: tuple[str, ...]
    assignment: dict[int, str]
    split_source: str
    zoo: Zoo | None = None
    _counts: dict[str, int] = field(default_factory=dict)

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
            for path in shard_paths(self.path):
                for batch in pq.read_table(path, columns=["batch_id"]).column("batch_id").to_pylist():
                    counts[self.assignment.get(int(batch), "train")] += 1
            self._counts.update(counts)
        return self._counts[split]

    def describe(self) -> dict:
        return {
            "zoo_dir": str(self.path.resolve()),
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


def open_source(path: str | Path) -> ZooSource:
    """Open a zoo (``zoo.open``) for the interpreter; every problem is one ``InterpreterError`` line."""
    from zoo.api import Zoo, ZooError

    path = Path(path)
    if not path.is_dir():
        raise InterpreterError(f"{path}: no such zoo folder")
    try:
        zoo = Zoo(path)
        require_families(zoo.table(columns=["family"]).column("family").to_pylist(), ("mlp",), "zoo interpret")
    except (ZooError, UnsupportedFamily) as error:
        raise InterpreterError(str(error)) from None
    shards = zoo.shards
    if not shards:
        raise InterpreterError(f"{path}: the zoo holds no shards yet")
    if signature_stats_of(pq.read_schema(shards[0])) is None:
        raise InterpreterError(f"{shards[0]}: no zoo.signature_stats in the schema metadata")
    assignment, source = _assignment(path)
    return ZooSource(
        path=path,
        config=zoo.config,
        zoo_id=zoo.info.zoo_id,
        pattern_names=tuple(pattern_library(zoo.config.patterns)),
        signature_stats=zoo.signature_stats,
        assignment=assignment,
        split_source=source,
        zoo=zoo,
    )


def _assignment(path: Path) -> tuple[dict[int, str], str]:
    """The stored splits (``zoo split``); without them the default split, computed in memory."""
    from zoo.export.splits import SPLITS_FILE, BatchFacts, SplitOptions, SplitsError, assign, load_splits

    if (path / SPLITS_FILE).is_file():
        try:
            return dict(load_splits(path).assignment), SPLITS_FILE
        except SplitsError as error:
            raise InterpreterError(str(error)) from None
    facts: dict[int, BatchFacts | None] = {}
    for shard in shard_paths(path):
        for row in pq.read_table(shard, columns=["batch_id", "patterns", "architecture"]).to_pylist():
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
    architecture: Architecture
    signature: np.ndarray  # [N, S] degraded model's signature
    degraded: np.ndarray  # [P] flat weights (Architecture.layout)
    clean: np.ndarray  # [P]
    patterns: tuple[str, ...]
    targets: np.ndarray  # [V] multi-hot over the pattern vocabulary
    corrupted: int  # index into the vocabulary
    accuracy: float  # the degraded model's benchmark accuracy
    metrics: dict


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


def decode(batch: pa.RecordBatch, vocab: Sequence[str]) -> list[Example]:
    """Examples from an Arrow record batch holding at least ``COLUMNS``."""
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
                architecture=require_family(row["architecture"], ("mlp",), "zoo interpret"),
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
    paths = shard_paths(source.path)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        paths = [paths[i] for i in rng.permutation(len(paths))]
    buffer: list[Example] = []
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=read_rows, columns=list(COLUMNS)):
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("batch_id"), value_set=wanted))
            if batch.num_rows == 0:
                continue
            examples = decode(batch, source.pattern_names)
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


def batched(examples, batch_size: int) -> Iterator[tuple[list[Example], Batch]]:
    """``(examples, collated batch)`` pairs; each chunk is ordered by activation (fewer runs to apply)."""
    chunk: list[Example] = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == batch_size:
            chunk.sort(key=lambda e: e.architecture.activation)
            yield chunk, collate(chunk)
            chunk = []
    if chunk:
        chunk.sort(key=lambda e: e.architecture.activation)
        yield chunk, collate(chunk)


# ---------------------------------------------------------------- token space


@dataclass(frozen=True)
class TokenMap:
    """Where each entry of an architecture's flat weight vector goes in token space."""

    n_tokens: int
    layer: np.ndarray  # [N] layer of each token (n_layers: the output)
    fan_in: np.ndarray  # [N]
    width: np.ndarray  # [N] width of the token's layer
    in_flat: np.ndarray  # flat positions of first-layer weights ...
    in_row: np.ndarray  # ... their token ...
    in_col: np.ndarray  # ... and input feature
    adj_flat: np.ndarray  # flat positions of every later weight ...
    adj_row: np.ndarray  # ... target token j ...
    adj_col: np.ndarray  # ... source token i
    bias_flat: np.ndarray  # flat positions of the biases, token order
    n_params: int


@lru_cache(maxsize=512)
def token_map(architecture: Architecture) -> TokenMap:
    sizes = architecture.layer_sizes
    starts = np.cumsum([0, *sizes[1:]])  # token index where each non-input layer starts
    entries = architecture.layout()
    layers, fan_in, width = [], [], []
    in_flat, in_row, in_col, adj_flat, adj_row, adj_col, bias_flat = [], [], [], [], [], [], []
    for layer in range(architecture.n_layers + 1):
        w, b = entries[2 * layer], entries[2 * layer + 1]
        n_out, n_in = w.shape
        rows = np.repeat(np.arange(n_out), n_in) + starts[layer]
        cols = np.tile(np.arange(n_in), n_out)
        flat = np.arange(w.offset, w.offset + w.size)
        if layer == 0:
            in_flat.append(flat), in_row.append(rows), in_col.append(cols)
        else:
            adj_flat.append(flat), adj_row.append(rows), adj_col.append(cols + starts[layer - 1])
        bias_flat.append(np.arange(b.offset, b.offset + b.size))
        layers.append(np.full(n_out, layer)), fan_in.append(np.full(n_out, n_in)), width.append(np.full(n_out, n_out))

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return TokenMap(
        n_tokens=int(starts[-1]),
        layer=cat(layers),
        fan_in=cat(fan_in),
        width=cat(width),
        in_flat=cat(in_flat),
        in_row=cat(in_row),
        in_col=cat(in_col),
        adj_flat=cat(adj_flat),
        adj_row=cat(adj_row),
        adj_col=cat(adj_col),
        bias_flat=cat(bias_flat),
        n_params=architecture.n_params,
    )


@dataclass
class Weights:
    """A padded batch of subjects' weights in token space."""

    w_in: torch.Tensor  # [B, N, D]
    adj: torch.Tensor  # [B, N, N]
    bias: torch.Tensor  # [B, N]

    def to(self, device: torch.device) -> Weights:
        return Weights(self.w_in.to(device), self.adj.to(device), self.bias.to(device))

    def __add__(self, other: Weights) -> Weights:
        return Weights(self.w_in + other.w_in, self.adj + other.adj, self.bias + other.bias)

    def __sub__(self, other: Weights) -> Weights:
        return Weights(self.w_in - other.w_in, self.adj - other.adj, self.bias - other.bias)


@dataclass
class Batch:
    """Padded tensors of a list of examples (``B`` models, ``N`` tokens at most)."""

    signature: torch.Tensor  # [B, N, S]
    mask: torch.Tensor  # [B, N] bool: a real neuron
    layer: torch.Tensor  # [B, N] long, -1 on padding
    n_layers: torch.Tensor  # [B] long
    fan_in: torch.Tensor  # [B, N] float (1 on padding)
    width: torch.Tensor  # [B, N] float (1 on padding)
    activation: torch.Tensor  # [B] long, index into zoo.config.ACTIVATIONS
    degraded: Weights
    clean: Weights
    targets: torch.Tensor  # [B, V]
    corrupted: torch.Tensor  # [B] long
    accuracy: torch.Tensor  # [B]

    def to(self, device: torch.device) -> Batch:
        moved = {}
        for name, value in self.__dict__.items():
            moved[name] = value.to(device)
        return Batch(**moved)

    @property
    def edges(self) -> torch.Tensor:
        """``[B, N, N]`` bool: ``j`` sits one layer above ``i`` (both real), i.e. a weight of ``adj``."""
        real = self.mask[:, :, None] & self.mask[:, None, :]
        return real & (self.layer[:, :, None] == self.layer[:, None, :] + 1)

    @property
    def first(self) -> torch.Tensor:
        """``[B, N]`` bool: the first hidden layer, whose inputs are the one-hot features."""
        return self.mask & (self.layer == 0)

    @property
    def output(self) -> torch.Tensor:
        return self.mask & (self.layer == self.n_layers[:, None])

    @property
    def n_weights(self) -> torch.Tensor:
        """``[B]``: each subject's real weights (first-layer inputs, edges and biases)."""
        return self.first.sum(-1) * self.degraded.w_in.shape[-1] + self.edges.sum((1, 2)) + self.mask.sum(-1)


def to_tokens(examples: Sequence[tuple[Architecture, np.ndarray]], n_tokens: int, in_features: int) -> Weights:
    """Flat weight vectors of (possibly different) architectures -> padded token-space ``Weights``."""
    b = len(examples)
    w_in = np.zeros((b, n_tokens, in_features), dtype=np.float32)
    adj = np.zeros((b, n_tokens, n_tokens), dtype=np.float32)
    bias = np.zeros((b, n_tokens), dtype=np.float32)
    for k, (arch, flat) in enumerate(examples):
        m = token_map(arch)
        if len(flat) != m.n_params:
            raise InterpreterError(f"{arch.describe()}: {len(flat)} weights, the layout needs {m.n_params}")
        w_in[k, m.in_row, m.in_col] = flat[m.in_flat]
        adj[k, m.adj_row, m.adj_col] = flat[m.adj_flat]
        bias[k, : m.n_tokens] = flat[m.bias_flat]
    return Weights(torch.from_numpy(w_in), torch.from_numpy(adj), torch.from_numpy(bias))


def from_tokens(weights: Weights, architectures: Sequence[Architecture]) -> list[np.ndarray]:
    """The inverse of ``to_tokens``: each model's flat weights in ``Architecture.layout`` order."""
    w_in = weights.w_in.detach().cpu().numpy()
    adj = weights.adj.detach().cpu().numpy()
    bias = weights.bias.detach().cpu().numpy()
    out = []
    for k, arch in enumerate(architectures):
        m = token_map(arch)
        flat = np.zeros(m.n_params, dtype=np.float32)
        flat[m.in_flat] = w_in[k, m.in_row, m.in_col]
        flat[m.adj_flat] = adj[k, m.adj_row, m.adj_col]
        flat[m.bias_flat] = bias[k, : m.n_tokens]
        out.append(flat)
    return out


def collate(examples: Sequence[Example]) -> Batch:
    if not examples:
        raise ValueError("collate needs at least one example")
    maps = [token_map(e.architecture) for e in examples]
    n = max(m.n_tokens for m in maps)
    b, s = len(examples), examples[0].signature.shape[1]
    in_features = examples[0].architecture.in_features
    signature = np.zeros((b, n, s), dtype=np.float32)
    mask = np.zeros((b, n), dtype=bool)
    layer = np.full((b, n), -1, dtype=np.int64)
    fan_in = np.ones((b, n), dtype=np.float32)
    width = np.ones((b, n), dtype=np.float32)
    for k, (e, m) in enumerate(zip(examples, maps)):
        if e.signature.shape[0] != m.n_tokens:
            raise InterpreterError(f"record {e.example_id}: {e.signature.shape[0]} signature rows for {m.n_tokens} neurons")
        signature[k, : m.n_tokens] = e.signature
        mask[k, : m.n_tokens] = True
        layer[k, : m.n_tokens] = m.layer
        fan_in[k, : m.n_tokens] = m.fan_in
        width[k, : m.n_tokens] = m.width
    activation = [ACTIVATIONS.index(e.architecture.activation) if e.architecture.activation in ACTIVATIONS else -1 for e in examples]
    return Batch(
        signature=torch.from_numpy(signature),
        mask=torch.from_numpy(mask),
        layer=torch.from_numpy(layer),
        n_layers=torch.tensor([e.architecture.n_layers for e in examples]),
        fan_in=torch.from_numpy(fan_in),
        width=torch.from_numpy(width),
        activation=torch.tensor(activation),
        degraded=to_tokens([(e.architecture, e.degraded) for e in examples], n, in_features),
        clean=to_tokens([(e.architecture, e.clean) for e in examples], n, in_features),
        targets=torch.from_numpy(np.stack([e.targets for e in examples])),
        corrupted=torch.tensor([e.corrupted for e in examples]),
        accuracy=torch.tensor([e.accuracy for e in examples], dtype=torch.float32),
    )


def permute_layer(example: Example, layer: int, order: np.ndarray) -> Example:
    """The same model with the neurons of hidden ``layer`` reordered (weights moved along).

    Row ``i`` of the new layer is old neuron ``order[i]``: its signature row, its
    incoming weights and bias, and its column in the next layer's weights. The
    model computes exactly the same function.
    """
    arch = example.architecture
    if not 0 <= layer < arch.n_layers:
        raise ValueError(f"layer {layer} is not a hidden layer of {arch.describe()}")
    order = np.asarray(order)
    start = sum(arch.widths[:layer])
    signature = example.signature.copy()
    signature[start : start + len(order)] = example.signature[start + order]

    def permuted(flat: np.ndarray) -> np.ndarray:
        entries = {e.name: e for e in arch.layout()}
        out = flat.copy()
        w, b = entries[f"layers.{layer}.weight"], entries[f"layers.{layer}.bias"]
        out[w.offset : w.offset + w.size] = flat[w.offset : w.offset + w.size].reshape(w.shape)[order].ravel()
        out[b.offset : b.offset + b.size] = flat[b.offset : b.offset + b.size][order]
        nxt = entries[f"layers.{layer + 1}.weight"] if layer + 1 < arch.n_layers else entries["head.weight"]
        out[nxt.offset : nxt.offset + nxt.size] = flat[nxt.offset : nxt.offset + nxt.size].reshape(nxt.shape)[:, order].ravel()
        return out

    return Example(
        **{**example.__dict__, "signature": signature, "degraded": permuted(example.degraded), "clean": permuted(example.clean)}
    )


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
