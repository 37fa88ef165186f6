"""What SAEs read and are scored against: token sequences with ground-truth labels, from any kind of zoo.

A ``Corpus`` is token sequences ``[N, L]`` plus named labels, each either per sequence
``[N]`` or per token ``[N, L]``, integers indexing the label's value names (-1: the label
does not apply there, e.g. padding). Two sources today:

- ``pattern_corpus(zoo_config, probe_set)``: a pattern zoo's fixed probe set (or a larger one drawn
  the same way from its pattern space, ``run.zoo_corpus`` with ``corpus: sampled``). Labels:
  ``pattern`` (which library pattern the sequence was drawn for, ``none`` for the
  negatives), ``matches:<name>`` (the sequence satisfies library pattern ``name``; one value,
  ``yes``), and ``token@<p>`` (the letter at position ``p``).
- ``from_probe_corpus(corpus)``: a language zoo's ``zoo.languages.probe.ProbeCorpus``
  (``tokens``, ``lengths``, ``labels`` by name ``[N, L]``, ``specs`` with value names), read
  by attribute so this module does not import the language package.

The subjects' hookpoints give one vector per sequence, read where the readout reads (the
last position), so activation rows are sequences and a per-token label is taken at each
sequence's last real token (``row_labels``). A family that gives per-position activations
will read rows per token instead (``per_token=True``: every position below the length).

``features(corpus)`` turns the labels into the binary features ``autointerp`` scores
against: one column per (label, value), named ``label=value`` (a one-value label: ``label``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from zoo.readers.sae.spec import SAEError


@dataclass(frozen=True, eq=False)
class Label:
    """One ground-truth label: value names and ``[N]`` (per sequence) or ``[N, L]`` (per token) indices, -1: none."""

    values: tuple[str, ...]
    array: np.ndarray


@dataclass(frozen=True, eq=False)
class Corpus:
    """Token sequences ``tokens [N, L]`` (int64), real lengths ``lengths [N]``, labels by name, and a hash."""

    name: str
    tokens: np.ndarray
    labels: dict[str, Label] = field(default_factory=dict)
    lengths: np.ndarray | None = None
    hash: str = ""

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens)
        if tokens.ndim != 2 or len(tokens) == 0:
            raise SAEError(f"corpus {self.name!r} is empty or not [sequences, length] (shape {tokens.shape})")
        lengths = np.full(len(tokens), tokens.shape[1]) if self.lengths is None else np.asarray(self.lengths)
        object.__setattr__(self, "tokens", tokens.astype(np.int64))
        object.__setattr__(self, "lengths", lengths.astype(np.int64))
        for name, label in self.labels.items():
            if label.array.shape not in (tokens.shape[:1], tokens.shape):
                raise SAEError(f"corpus {self.name!r}: label {name!r} has shape {label.array.shape}, not [N] or [N, L]")
            if label.array.size and int(label.array.max()) >= len(label.values):
                raise SAEError(f"corpus {self.name!r}: label {name!r} indexes past its {len(label.values)} values")
        if not self.hash:
            object.__setattr__(self, "hash", corpus_hash(self))

    def __len__(self) -> int:
        return len(self.tokens)

    def row_labels(self, per_token: bool = False) -> dict[str, np.ndarray]:
        """Each label per activation row: at each sequence's last real token, or (``per_token``) at every real token."""
        n, L = self.tokens.shape
        last = self.lengths - 1
        real = np.arange(L)[None, :] < self.lengths[:, None]
        out = {}
        for name, label in self.labels.items():
            a = label.array
            if per_token:
                out[name] = (a if a.ndim == 2 else np.repeat(a[:, None], L, axis=1))[real]
            else:
                out[name] = a[np.arange(n), last] if a.ndim == 2 else a
        return out


def corpus_hash(corpus: Corpus) -> str:
    h = hashlib.sha256(b"zoo-sae-corpus-v1\0")
    h.update(np.asarray(corpus.tokens.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(corpus.tokens, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(corpus.lengths, dtype="<i8").tobytes())
    for name in sorted(corpus.labels):
        label = corpus.labels[name]
        h.update(json.dumps([name, list(label.values)]).encode())
        h.update(np.ascontiguousarray(label.array, dtype="<i8").tobytes())
    return h.hexdigest()


def features(corpus: Corpus, per_token: bool = False) -> tuple[np.ndarray, list[str]]:
    """Binary features ``[rows, F]`` (bool) and their names: one column per label value that occurs."""
    columns, names = [], []
    for name, values in corpus.row_labels(per_token).items():
        label = corpus.labels[name]
        for v, value in enumerate(label.values):
            column = values == v
            if column.any():
                columns.append(column)
                names.append(name if len(label.values) == 1 else f"{name}={value}")
    if not columns:
        raise SAEError(f"corpus {corpus.name!r} has no labelled features to score against")
    return np.stack(columns, axis=1), names


def pattern_corpus(config, probe_set, name: str = "probe_set") -> Corpus:
    """A pattern zoo's probe set (``Zoo.probe_set``) with its labels (see the module docstring)."""
    from zoo.patterns.sampler import sampler_for

    tokens = np.asarray(probe_set.tokens, dtype=np.int64)
    names = tuple(probe_set.names)
    pattern = np.asarray(probe_set.pattern, dtype=np.int64)
    labels = {"pattern": Label((*names, "none"), np.where(pattern < 0, len(names), pattern))}
    sampler = sampler_for(config.patterns)
    for pattern_name in names:
        matches = np.asarray(sampler.library[pattern_name].predicate(tokens), dtype=bool)
        labels[f"matches:{pattern_name}"] = Label(("yes",), np.where(matches, 0, -1))
    letters = tuple(chr(ord("A") + i) for i in range(config.patterns.vocab_size))
    for p in range(tokens.shape[1]):
        labels[f"token@{p}"] = Label(letters, tokens[:, p])
    return Corpus(name, tokens, labels, hash=probe_set.hash)


def from_probe_corpus(corpus) -> Corpus:
    """A language zoo's ``ProbeCorpus`` (duck-typed: ``tokens``, ``lengths``, ``labels``, ``specs``, ``hash``)."""
    specs = {spec.name: tuple(spec.values) for spec in corpus.specs}
    labels = {name: Label(specs[name], np.asarray(array, dtype=np.int64)) for name, array in corpus.labels.items()}
    return Corpus(f"{corpus.grammar}.probe", corpus.tokens, labels, lengths=corpus.lengths, hash=corpus.hash)


def split_rows(n: int, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out row indices (sorted), disjoint, a seeded permutation; both non-empty."""
    if n < 2:
        raise SAEError(f"a corpus of {n} row(s) cannot be split into training and held-out rows")
    order = np.random.default_rng([seed, 29]).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_share)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
