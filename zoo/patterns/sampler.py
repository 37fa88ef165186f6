"""Data sets for subject models: pools, positives, negatives, benchmark and probe sets.

A sampler is built once per pattern space (``sampler_for`` caches it per process);
``batch_data`` is then a cheap pure function of (space, names, seed).

Two modes, with the same rules:

* enumerated (``vocab_size ** seq_len <= exhaustive_limit``): every sequence is
  listed once and each pattern's pool is the exact set of its members;
* sampled (larger spaces): each batch draws candidates with the patterns'
  constructive generators and keeps distinct ones. Pool sizes (which decide the
  smallest-pool rule) come from the library's exact counting formulas, which the
  tests check against enumeration, so both modes attribute overlaps the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zoo.patterns.library import Pattern, pattern_library, selectable

if TYPE_CHECKING:
    from zoo.config import PatternSpace

_ROUNDS = 8


@dataclass(frozen=True, eq=False)
class LabelledSet:
    """Sequences with the pattern each positive belongs to (-1: negative)."""

    tokens: np.ndarray
    pattern: np.ndarray
    hard: np.ndarray | None = None
    """bool [n]: a negative made from a positive by changing one token (None when unknown)."""

    @property
    def labels(self) -> np.ndarray:
        return (self.pattern >= 0).astype(np.float32)

    def __len__(self) -> int:
        return len(self.pattern)


@dataclass(frozen=True, eq=False)
class BatchData:
    """The three splits of one batch; pattern indices point into ``patterns``."""

    patterns: tuple[str, ...]
    train: LabelledSet
    val: LabelledSet
    benchmark: LabelledSet


_NAMES_KEY = b"zoo.probe.names"
_HASH_KEY = b"zoo.probe.hash"


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """The fixed inputs every model of a zoo is fingerprinted on, identified by ``hash``."""

    names: tuple[str, ...]
    tokens: np.ndarray
    pattern: np.ndarray
    hash: str

    @staticmethod
    def digest(names: Sequence[str], tokens: np.ndarray, pattern: np.ndarray) -> str:
        """Byte-order and dtype are fixed so the hash is the same on every machine."""
        h = hashlib.sha256(b"zoo-probe-v1\0")
        h.update(json.dumps(list(names)).encode())
        h.update(np.asarray(tokens.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(tokens, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(pattern, dtype="<i8").tobytes())
        return h.hexdigest()

    def to_arrow(self) -> pa.Table:
        length = self.tokens.shape[1]
        values = pa.array(self.tokens.astype(np.int8).ravel(), type=pa.int8())
        names = [self.names[p] if p >= 0 else None for p in self.pattern]
        schema = pa.schema(
            [
                pa.field("tokens", pa.list_(pa.int8(), length)),
                pa.field("pattern", pa.int16()),
                pa.field("pattern_name", pa.string()),
            ],
            metadata={_NAMES_KEY: json.dumps(list(self.names)).encode(), _HASH_KEY: self.hash.encode()},
        )
        return pa.Table.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(values, length),
                pa.array(self.pattern.astype(np.int16), type=pa.int16()),
                pa.array(names, type=pa.string()),
            ],
            schema=schema,
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> ProbeSet:
        """Rebuild and re-hash; a table whose content does not match its stored hash is refused."""
        metadata = table.schema.metadata or {}
        if _NAMES_KEY not in metadata or _HASH_KEY not in metadata:
            raise ValueError("not a probe set: schema metadata lacks names or hash")
        names = tuple(json.loads(metadata[_NAMES_KEY]))
        column = table.column("tokens").combine_chunks()
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64)
        tokens = flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
        pattern = table.column("pattern").to_numpy().astype(np.int64)
        stored = metadata[_HASH_KEY].decode()
        actual = cls.digest(names, tokens, pattern)
        if actual != stored:
            raise ValueError(f"probe set hash mismatch: stored {stored[:12]}, content {actual[:12]}")
        return cls(names, tokens, pattern, stored)


@dataclass(frozen=True)
class _Selection:
    """Attributed pools of some patterns plus the membership test for negatives.

    Items are whatever the backend uses to name a sequence: an int64 code in the
    enumerated space, an int8 row in the sampled one. ``all_negatives`` and the
    ``negatives`` count are None where the space cannot be listed.
    """

    pools: dict[int, np.ndarray]
    is_negative: Callable[[np.ndarray], np.ndarray]
    all_negatives: Callable[[], np.ndarray | None]
    negatives: int | None


class _Enumerated:
    """Every sequence once; item = its index in lexicographic order."""

    def __init__(self, patterns: list[Pattern], vocab: int, length: int) -> None:
        self.vocab, self.length, self.size = vocab, length, vocab**length
        self.place = vocab ** np.arange(length - 1, -1, -1, dtype=np.int64)
        self.rows = np.empty((self.size, length), dtype=np.int8, order="F")
        for j in range(length):
            column = np.repeat(np.arange(vocab, dtype=np.int8), vocab ** (length - 1 - j))
            self.rows[:, j] = np.tile(column, vocab**j)
        self.members = [np.flatnonzero(p.predicate(self.rows)) for p in patterns]

    def select(
        self, ranked: Sequence[int], targets: dict[int, int], rng: np.random.Generator | None
    ) -> _Selection:
        covered = np.zeros(self.size, dtype=bool)
        pools = {}
        for p in ranked:
            members = self.members[p]
            pools[p] = members[~covered[members]]
            covered[members] = True
        negatives = self.size - int(np.count_nonzero(covered))
        return _Selection(pools, lambda codes: ~covered[codes], lambda: np.flatnonzero(~covered), negatives)

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, self.size, size=n, dtype=np.int64)

    def mutate(self, rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
        at = rng.integers(0, self.length, size=len(codes))
        old = self.rows[codes, at].astype(np.int64)
        new = (old + rng.integers(1, self.vocab, size=len(codes))) % self.vocab
        return codes + (new - old) * self.place[at]

    @staticmethod
    def keys(codes: np.ndarray) -> np.ndarray:
        return codes

    def tokens(self, codes: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.rows[codes], dtype=np.int64)


class _Sampled:
    """Too many sequences to list: draw them; item = an int8 row."""

    def __init__(self, patterns: list[Pattern], vocab: int, length: int) -> None:
        self.patterns, self.vocab, self.length = patterns, vocab, length

    def select(
        self, ranked: Sequence[int], targets: dict[int, int], rng: np.random.Generator | None
    ) -> _Selection:
        predicates = [self.patterns[q].predicate for q in ranked]
        pools = {
            p: self._draw_pool(self.patterns[p], predicates[:i], targets[p], rng) for i, p in enumerate(ranked)
        }
        return _Selection(pools, lambda rows: ~_any(predicates, rows), lambda: None, None)

    def _draw_pool(self, pattern: Pattern, claimed: list, target: int, rng: np.random.Generator) -> np.ndarray:
        """Distinct generated positives not claimed by a smaller pool; fewer when the pool is exhausted."""
        pool = np.empty((0, self.length), dtype=np.int8)
        for _ in range(_ROUNDS):
            drawn = pattern.generate(rng, 2 * (target - len(pool)) + 16, self.vocab, self.length).astype(np.int8)
            drawn = drawn[~_any(claimed, drawn)]
            grown = _distinct(self, np.concatenate([pool, drawn]))
            if len(grown) == len(pool) and len(pool):
                break
            pool = grown
            if len(pool) >= target:
                return pool[:target]
        return pool

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, self.vocab, size=(n, self.length), dtype=np.int8)

    def mutate(self, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        out = rows.copy()
        at = rng.integers(0, self.length, size=len(rows))
        index = np.arange(len(rows))
        out[index, at] = (out[index, at] + rng.integers(1, self.vocab, size=len(rows))) % self.vocab
        return out

    def keys(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rows, dtype=np.int8).view(np.dtype((np.void, self.length))).ravel()

    @staticmethod
    def tokens(rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.int64)


def _any(predicates: list, rows: np.ndarray) -> np.ndarray:
    hit = np.zeros(len(rows), dtype=bool)
    for predicate in predicates:
        hit |= predicate(rows)
    return hit


def _distinct(backend: _Enumerated | _Sampled, items: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """First occurrences, in order, leaving out anything in ``exclude``."""
    keys = backend.keys(items)
    _, first = np.unique(keys, return_index=True)
    first.sort()
    if exclude is not None and len(exclude):
        first = first[~np.isin(keys[first], backend.keys(exclude))]
    return items[first]


def _even(total: int, parts: int) -> list[int]:
    """``total`` split as evenly as possible, remainder to the first parts."""
    return [total // parts + (i < total % parts) for i in range(parts)]


_PROBE_CANDIDATES = 16  # candidates per probe that ``_distinctive`` chooses among


def _cover(part: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k items of ``part``: distinct while they last, then repeats drawn with replacement."""
    if k <= len(part):
        return part[rng.choice(len(part), size=k, replace=False)]
    extra = part[rng.integers(0, len(part), size=k - len(part))]
    return np.concatenate([part[rng.permutation(len(part))], extra])


def _proportional(total: int, needs: Sequence[int]) -> list[int]:
    """Part sizes summing to ``total``, proportional to ``needs``, none empty (total >= len(needs))."""
    weight = sum(needs)
    sizes = [max(1, total * n // weight) for n in needs]
    while sum(sizes) > total:
        sizes[sizes.index(max(sizes))] -= 1
    order = sorted(range(len(needs)), key=lambda i: sizes[i] / needs[i])
    for i in range(total - sum(sizes)):
        sizes[order[i % len(order)]] += 1
    return sizes


class PatternSampler:
    """Builds every data set a batch needs from one pattern space."""

    def __init__(self, space: PatternSpace) -> None:
        self.space = space
        self.library: dict[str, Pattern] = pattern_library(space)
        self.names: tuple[str, ...] = tuple(self.library)
        self.selectable: tuple[str, ...] = selectable(space)
        patterns = list(self.library.values())
        v, n = space.vocab_size, space.seq_len
        self.enumerated = v**n <= space.exhaustive_limit
        if self.enumerated:
            self._backend: _Enumerated | _Sampled = _Enumerated(patterns, v, n)
            sizes = [len(m) for m in self._backend.members]
        else:
            self._backend = _Sampled(patterns, v, n)
            sizes = [p.count(v, n) for p in patterns]
        self.pool_sizes: dict[str, int] = dict(zip(self.names, sizes))
        self._rank = {i: (size, i) for i, size in enumerate(sizes)}
        self._always_usable = False
        self._always_usable = not self.enumerated or self._unusable(range(len(patterns))) is None

    def _ranked(self, indices: Sequence[int]) -> list[int]:
        return sorted(indices, key=self._rank.__getitem__)

    def _indices(self, names: Sequence[str]) -> list[int]:
        unknown = [name for name in names if name not in self.library]
        if unknown:
            raise ValueError(f"unknown pattern {unknown[0]!r} for this space; known: {', '.join(self.names)}")
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"names must be distinct and not empty, got {list(names)}")
        room = min(self.space.train_size, self.space.val_size, self.space.benchmark_size) // 2
        if len(names) > room:
            raise ValueError(f"{len(names)} patterns do not fit {room} positives per split")
        return sorted(self.names.index(name) for name in names)

    def _unusable(self, indices: Sequence[int]) -> str | None:
        """Why a selection cannot make a batch in an enumerated space, or None.

        Only tiny spaces fail: when a pattern's positives are all claimed by smaller
        selected pools, or the selected patterns cover every sequence. A selection
        the whole library passes makes every sub-selection pass, hence the shortcut.
        """
        if self._always_usable:
            return None
        selection = self._backend.select(self._ranked(indices), {}, None)
        starved = [self.names[i] for i in indices if len(selection.pools[i]) == 0]
        if starved:
            return f"{', '.join(starved)}: every positive is claimed by a smaller selected pool"
        if not selection.negatives:
            return "the selected patterns leave no negatives in this space"
        return None

    def select_patterns(self, rng: np.random.Generator) -> tuple[str, ...]:
        """k uniform in per_batch, patterns uniform among the selectable, in library order.

        Draws again (from the same generator) when a pattern would have no positives of its own.
        """
        low, high = self.space.per_batch.min, self.space.per_batch.max
        for _ in range(1000):
            k = int(rng.integers(low, high + 1))
            chosen = np.sort(rng.choice(len(self.selectable), size=k, replace=False))
            names = tuple(self.selectable[i] for i in chosen)
            if self._unusable(self._indices(names)) is None:
                return names
        raise ValueError("no pattern selection in this space leaves every pattern positives and some negatives")

    def batch_data(self, names: Sequence[str], seed: int) -> BatchData:
        """Train, val and benchmark sets of fixed sizes for the selected ``names``; pure in (space, names, seed)."""
        space = self.space
        indices = self._indices(names)
        k = len(indices)
        sizes = (space.train_size, space.val_size, space.benchmark_size)
        positives = [_even(size // 2, k) for size in sizes]
        needs = {p: [positives[s][j] for s in range(3)] for j, p in enumerate(indices)}
        streams = np.random.SeedSequence(seed).spawn(5)
        r_pools, r_pos, r_hard, r_easy, r_mix = (np.random.default_rng(s) for s in streams)

        problem = self._unusable(indices) if self.enumerated else None
        if problem:
            raise ValueError(problem)
        targets = {p: max(sum(need), space.holdout_min_pool) for p, need in needs.items()}
        selection = self._backend.select(self._ranked(indices), targets, r_pools)
        starved = [self.names[p] for p in indices if len(selection.pools[p]) == 0]
        if starved:
            raise ValueError(f"{', '.join(starved)}: the generators found no positives outside smaller pools")

        split_pos: list[list[np.ndarray]] = [[], [], []]
        for p in indices:
            for s, items in enumerate(self._positives(selection.pools[p], needs[p], r_pos)):
                split_pos[s].append(items)

        negatives = [size - size // 2 for size in sizes]
        hard_wanted = [round(space.hard_negative_share * n) for n in negatives]
        pools = [selection.pools[p] for p in indices]
        hard = self._hard_negatives(selection, pools, sum(hard_wanted), r_hard)
        hard_counts = _scaled(hard_wanted, len(hard))
        easy_counts = [n - h for n, h in zip(negatives, hard_counts)]
        easy = self._easy_negatives(selection, sum(easy_counts), hard, r_easy)

        splits = [
            self._assemble(split_pos[s], hard_part, easy_part, r_mix)
            for s, (hard_part, easy_part) in enumerate(zip(_chunks(hard, hard_counts), _chunks(easy, easy_counts)))
        ]
        return BatchData(tuple(self.names[p] for p in indices), *splits)

    def _assemble(
        self, positives: list[np.ndarray], hard: np.ndarray, easy: np.ndarray, rng: np.random.Generator
    ) -> LabelledSet:
        """One split, shuffled so that no consumer sees the examples grouped by kind."""
        n_pos = sum(len(x) for x in positives)
        pattern = np.concatenate(
            [np.full(len(x), j, dtype=np.int64) for j, x in enumerate(positives)]
            + [np.full(len(hard) + len(easy), -1, dtype=np.int64)]
        )
        is_hard = np.zeros(len(pattern), dtype=bool)
        is_hard[n_pos : n_pos + len(hard)] = True
        tokens = self._backend.tokens(np.concatenate([*positives, hard, easy]))
        order = rng.permutation(len(pattern))
        return LabelledSet(tokens[order], pattern[order], is_hard[order])

    def _positives(self, pool: np.ndarray, needs: list[int], rng: np.random.Generator) -> list[np.ndarray]:
        """Positives of one pattern for train, val and benchmark.

        A pool of at least ``holdout_min_pool`` (and at least 3) members is cut into three
        disjoint parts (exact sizes when it is large enough, else proportional to the needs),
        so benchmark positives are never trained on. A smaller pool cannot hold out: every
        split draws from all of it.
        """
        if len(pool) < max(self.space.holdout_min_pool, 3):
            return [_cover(pool, need, rng) for need in needs]
        total = sum(needs)
        if len(pool) >= total:
            picked = pool[rng.choice(len(pool), size=total, replace=False)]
            cuts = np.cumsum(needs)[:-1]
            return np.split(picked, cuts)
        shuffled = pool[rng.permutation(len(pool))]
        parts = np.split(shuffled, np.cumsum(_proportional(len(pool), needs))[:-1])
        return [_cover(part, need, rng) for part, need in zip(parts, needs)]

    def _hard_negatives(
        self, selection: _Selection, pools: list[np.ndarray], wanted: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Distinct near misses: a selected pattern's positive with one token changed, matching none."""
        backend = self._backend
        found = pools[0][:0]
        if wanted == 0:
            return found
        for attempt in range(_ROUNDS):
            per = _even((2 * (wanted - len(found)) + 16) << attempt, len(pools))
            sources = np.concatenate([pool[rng.integers(0, len(pool), size=n)] for pool, n in zip(pools, per)])
            candidates = backend.mutate(rng, sources)
            candidates = candidates[selection.is_negative(candidates)]
            found = _distinct(backend, np.concatenate([found, candidates]))
            if len(found) >= wanted:
                break
        return found[rng.permutation(len(found))][:wanted]

    def _easy_negatives(
        self, selection: _Selection, wanted: int, exclude: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Distinct uniform sequences matching no selected pattern, none in ``exclude``.

        Rejection sampling, or the full list where negatives are scarce. Only a space with
        fewer negatives than needed repeats them (reusing ``exclude`` when nothing else is left).
        """
        backend = self._backend
        found = backend.random(rng, 0)
        if selection.negatives is None or selection.negatives >= 8 * (wanted + len(exclude)):
            draw = 2 * wanted + 64
            for _ in range(_ROUNDS):
                candidates = backend.random(rng, draw)
                candidates = candidates[selection.is_negative(candidates)]
                found = _distinct(backend, np.concatenate([found, candidates]), exclude)
                if len(found) >= wanted:
                    return found[:wanted]
                draw *= 2
        everything = selection.all_negatives()
        if everything is not None:
            found = _distinct(backend, everything, exclude)
            if len(found) == 0:
                found = everything
            found = found[rng.permutation(len(found))]
        if len(found) == 0:
            raise ValueError("no sequence of this space matches none of the selected patterns")
        return _cover(found, wanted, rng) if len(found) < wanted else found[:wanted]

    def probe_set(self, seed: int) -> ProbeSet:
        """``probe_per_pattern`` examples of every library pattern, then ``probe_negatives`` matching none.

        Attribution is by smallest pool among all library patterns; within a pool, sequences
        that match the fewest selectable patterns come first (see ``_distinctive``). A pattern left with no
        positives of its own (only in tiny spaces) has no examples; if fewer sequences than
        ``probe_negatives`` match no pattern, they repeat; if none do, there are no negatives.
        """
        space = self.space
        r_pools, r_pos, r_neg = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        every = list(range(len(self.names)))
        targets = {p: _PROBE_CANDIDATES * space.probe_per_pattern for p in every}  # room to prefer (sampled spaces)
        selection = self._backend.select(self._ranked(every), targets, r_pools)
        items, pattern = [], []
        for p in every:
            pool = selection.pools[p]
            if len(pool):
                items.append(self._distinctive(pool, space.probe_per_pattern, r_pos))
                pattern.append(np.full(space.probe_per_pattern, p, dtype=np.int64))
        none = self._backend.random(r_neg, 0)
        try:
            negatives = self._easy_negatives(selection, space.probe_negatives, none, r_neg)
        except ValueError:
            negatives = none
        items.append(negatives)
        pattern.append(np.full(len(negatives), -1, dtype=np.int64))
        tokens = self._backend.tokens(np.concatenate(items))
        labels = np.concatenate(pattern)
        return ProbeSet(self.names, tokens, labels, ProbeSet.digest(self.names, tokens, labels))


    def _distinctive(self, pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` members of a pool, those that match the fewest selectable patterns first.

        A probe that matches its own pattern alone names that pattern by the model's answer;
        a sorted probe that also starts with A cannot tell ``sorted_ascending`` from
        ``starts_with_A``, so an interpreter reading the probe set would see the two blur.
        """
        if len(pool) <= k:
            return _cover(pool, k, rng)
        pool = pool[rng.permutation(len(pool))[: _PROBE_CANDIDATES * k]]  # a large pool: a random share is plenty
        matches = self.match_counts(self._backend.tokens(pool), self.selectable)
        return pool[np.argsort(matches, kind="stable")[:k]]

    def match_counts(self, tokens: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Per sequence ``[N, seq_len]``: how many of the patterns ``names`` it matches."""
        return sum(self.library[name].predicate(tokens).astype(np.int64) for name in names)


def _chunks(items: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    return np.split(items, np.cumsum(counts)[:-1])


def _scaled(wanted: list[int], available: int) -> list[int]:
    """Per-split counts when only ``available`` of ``sum(wanted)`` items exist."""
    total = sum(wanted)
    if available >= total:
        return list(wanted)
    counts = [w * available // total for w in wanted]
    for i in range(available - sum(counts)):
        counts[i] += 1
    return counts


@functools.lru_cache(maxsize=8)
def _cached(key: str) -> PatternSampler:
    from zoo.config import PatternSpace

    return PatternSampler(PatternSpace.model_validate_json(key))


def sampler_for(space: PatternSpace) -> PatternSampler:
    """One sampler per space and process: construction enumerates the space once."""
    return _cached(space.model_dump_json())
