"""The pattern library: what a subject model may be asked to detect.

Every pattern is a vectorized predicate over integer token arrays, a constructive
generator (for spaces too large to enumerate), and an exact counting formula (so
pool sizes, feasibility and the smallest-pool rule never need enumeration).
Tokens are letters: ``A`` is 0, ``B`` is 1, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class _Range(Protocol):
    min: int
    max: int


class PatternSpace(Protocol):
    """What the library reads of a pattern space (``zoo.config.PatternSpace`` is one).

    A protocol, not an import: ``zoo.config`` imports this module to validate its pattern
    space, so the dependency goes one way only (this module imports nothing of zoo).
    """

    vocab_size: int
    seq_len: int
    names: list[str] | None
    exclude: list[str]
    start_token: str
    end_token: str
    trigram: str
    per_batch: _Range
    train_size: int
    val_size: int
    benchmark_size: int

Predicate = Callable[[np.ndarray], np.ndarray]
Generator = Callable[[np.random.Generator, int, int, int], np.ndarray]
Counter = Callable[[int, int], int]


@dataclass(frozen=True)
class Pattern:
    """One detectable property of a sequence.

    ``min_vocab`` (an int or a function of ``seq_len``) and ``min_seq_len`` give the
    smallest space in which the pattern has positives and negatives and differs from
    every other pattern; ``count(vocab, seq_len)`` is the exact size of its pool.
    """

    name: str
    description: str
    predicate: Predicate
    generate: Generator
    count: Counter
    min_vocab: Callable[[int], int] | int = 2
    min_seq_len: int = 3

    def vocab_needed(self, seq_len: int) -> int:
        return self.min_vocab(seq_len) if callable(self.min_vocab) else self.min_vocab

    def problem(self, vocab: int, seq_len: int) -> str | None:
        """Why the pattern cannot be used in this space, or None when it can."""
        if seq_len < self.min_seq_len:
            return f"needs seq_len >= {self.min_seq_len} (seq_len is {seq_len})"
        needed = self.vocab_needed(seq_len)
        if vocab < needed:
            return f"needs vocab_size >= {needed} at seq_len {seq_len} (vocab_size is {vocab})"
        return None


def token(letter: str) -> int:
    return ord(letter) - ord("A")


def letters(tokens: np.ndarray) -> str:
    return "".join(chr(ord("A") + int(t)) for t in tokens)


# Predicates: int array [n, L] -> bool [n], no loop over rows.


def _all_same(x: np.ndarray) -> np.ndarray:
    return (x == x[:, :1]).all(axis=1)


def _palindrome(x: np.ndarray) -> np.ndarray:
    return (x == x[:, ::-1]).all(axis=1)


def _steps(x: np.ndarray) -> np.ndarray:
    return np.diff(x.astype(np.int16), axis=1)


def _sorted_ascending(x: np.ndarray) -> np.ndarray:
    return (_steps(x) >= 0).all(axis=1)


def _sorted_descending(x: np.ndarray) -> np.ndarray:
    return (_steps(x) <= 0).all(axis=1)


def _alternating(x: np.ndarray) -> np.ndarray:
    return (x[:, 2:] == x[:, :-2]).all(axis=1) & (x[:, 0] != x[:, 1])


def _contains(gram: tuple[int, ...]) -> Predicate:
    def predicate(x: np.ndarray) -> np.ndarray:
        width = x.shape[1] - len(gram) + 1
        hit = np.ones((x.shape[0], width), dtype=bool)
        for offset, value in enumerate(gram):
            hit &= x[:, offset : offset + width] == value
        return hit.any(axis=1)

    return predicate


def _starts_with(value: int) -> Predicate:
    return lambda x: x[:, 0] == value


def _ends_with(value: int) -> Predicate:
    return lambda x: x[:, -1] == value


def _no_repeats(x: np.ndarray) -> np.ndarray:
    return (np.diff(np.sort(x, axis=1), axis=1) != 0).all(axis=1)


def _majority(x: np.ndarray) -> np.ndarray:
    """Boyer-Moore vote over columns: the only possible majority token, then its count."""
    candidate, lead = x[:, 0].copy(), np.ones(len(x), dtype=np.int16)
    for j in range(1, x.shape[1]):
        column = x[:, j]
        empty = lead == 0
        candidate = np.where(empty, column, candidate)
        lead += np.where(empty | (column == candidate), 1, -1).astype(np.int16)
    return (x == candidate[:, None]).sum(axis=1) * 2 > x.shape[1]


def _first_equals_last(x: np.ndarray) -> np.ndarray:
    return x[:, 0] == x[:, -1]


def _rise_then_fall(d: np.ndarray) -> np.ndarray:
    up = d > 0
    return (d != 0).all(axis=1) & up[:, 0] & ~up[:, -1] & (up[:, 1:] <= up[:, :-1]).all(axis=1)


def _mountain(x: np.ndarray) -> np.ndarray:
    return _rise_then_fall(_steps(x))


def _valley(x: np.ndarray) -> np.ndarray:
    return _rise_then_fall(-_steps(x))


def _zigzag(x: np.ndarray) -> np.ndarray:
    s = np.sign(_steps(x))
    return (s[:, 1:] * s[:, :-1] == -1).all(axis=1)


def _two_distinct(x: np.ndarray) -> np.ndarray:
    return (np.diff(np.sort(x, axis=1), axis=1) != 0).sum(axis=1) == 1


def _period_3(x: np.ndarray) -> np.ndarray:
    return (x[:, 3:] == x[:, :-3]).all(axis=1)


def _double_letter(x: np.ndarray) -> np.ndarray:
    return (x[:, 1:] == x[:, :-1]).any(axis=1)


# Generators: (rng, n, vocab, L) -> int64 [n, L], every row a positive.


def _uniform(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return rng.integers(0, v, size=(n, length), dtype=np.int64)


def _gen_all_same(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return np.repeat(rng.integers(0, v, size=(n, 1), dtype=np.int64), length, axis=1)


def _gen_palindrome(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    half = _uniform(rng, n, v, (length + 1) // 2)
    return np.concatenate([half, half[:, : length // 2][:, ::-1]], axis=1)


def _gen_ascending(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return np.sort(_uniform(rng, n, v, length), axis=1)


def _gen_descending(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return _gen_ascending(rng, n, v, length)[:, ::-1].copy()


def _two_tokens(rng: np.random.Generator, n: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, v, size=n, dtype=np.int64)
    return a, (a + rng.integers(1, v, size=n, dtype=np.int64)) % v


def _gen_alternating(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    a, b = _two_tokens(rng, n, v)
    return np.where(np.arange(length) % 2 == 0, a[:, None], b[:, None])


def _gen_contains(gram: tuple[int, ...]) -> Generator:
    def generate(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
        x = _uniform(rng, n, v, length)
        at = rng.integers(0, length - len(gram) + 1, size=n)
        rows = np.arange(n)
        for offset, value in enumerate(gram):
            x[rows, at + offset] = value
        return x

    return generate


def _gen_at(column: int, value: int) -> Generator:
    def generate(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
        x = _uniform(rng, n, v, length)
        x[:, column] = value
        return x

    return generate


def _gen_no_repeats(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return rng.random((n, v)).argsort(axis=1)[:, :length].astype(np.int64)


def _gen_majority(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    x = _uniform(rng, n, v, length)
    winner = rng.integers(0, v, size=(n, 1), dtype=np.int64)
    k = rng.integers(length // 2 + 1, length + 1, size=(n, 1))
    rank = rng.random((n, length)).argsort(axis=1).argsort(axis=1)
    return np.where(rank < k, winner, x)


def _gen_first_equals_last(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    x = _uniform(rng, n, v, length)
    x[:, -1] = x[:, 0]
    return x


def _distinct_below(rng: np.random.Generator, top: np.ndarray, v: int, k: int) -> np.ndarray:
    """k distinct values below ``top`` (per row), ascending."""
    keys = rng.random((len(top), v))
    keys[np.arange(v)[None, :] >= top[:, None]] = 2.0
    return np.sort(keys.argsort(axis=1)[:, :k], axis=1)


def _gen_mountain(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    peaks = np.array([p for p in range(1, length - 1) if max(p, length - 1 - p) <= v - 1])
    where = rng.choice(peaks, size=n)
    x = np.empty((n, length), dtype=np.int64)
    for p in peaks:
        rows = np.flatnonzero(where == p)
        low = max(p, length - 1 - p)
        top = rng.integers(low, v, size=len(rows))
        x[rows, :p] = _distinct_below(rng, top, v, p)
        x[rows, p] = top
        x[rows, p + 1 :] = _distinct_below(rng, top, v, length - 1 - p)[:, ::-1]
    return x


def _gen_valley(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return v - 1 - _gen_mountain(rng, n, v, length)


def _gen_zigzag(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    x = rng.integers(0, v - 1, size=(n, length), dtype=np.int64)
    for i in range(1, length, 2):
        floor = x[:, i - 1] if i + 1 >= length else np.maximum(x[:, i - 1], x[:, i + 1])
        x[:, i] = floor + 1 + (rng.random(n) * (v - 1 - floor)).astype(np.int64)
    flip = rng.random((n, 1)) < 0.5
    return np.where(flip, v - 1 - x, x)


def _gen_two_distinct(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    a, b = _two_tokens(rng, n, v)
    use_b = rng.random((n, length)) < 0.5
    pair = rng.random((n, length)).argsort(axis=1)[:, :2]
    rows = np.arange(n)
    use_b[rows, pair[:, 0]] = False
    use_b[rows, pair[:, 1]] = True
    return np.where(use_b, b[:, None], a[:, None])


def _gen_period_3(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    return np.tile(_uniform(rng, n, v, 3), (1, length // 3 + 1))[:, :length]


def _gen_double_letter(rng: np.random.Generator, n: int, v: int, length: int) -> np.ndarray:
    x = _uniform(rng, n, v, length)
    at = rng.integers(0, length - 1, size=n)
    rows = np.arange(n)
    x[rows, at + 1] = x[rows, at]
    return x


# Exact pool sizes (Python ints: vocab**seq_len overflows int64 at the top of the range).


def _count_avoiding(gram: tuple[int, ...], v: int, length: int) -> int:
    """Sequences that do not contain ``gram`` contiguously, by a KMP automaton."""
    m = len(gram)

    def advance(state: int, value: int) -> int:
        seen = gram[:state] + (value,)
        return next(k for k in range(min(len(seen), m), -1, -1) if seen[len(seen) - k :] == gram[:k])

    table = [[advance(state, value) for value in range(v)] for state in range(m)]
    counts = [1] + [0] * (m - 1)
    for _ in range(length):
        nxt = [0] * m
        for state, c in enumerate(counts):
            for target in table[state]:
                if target < m:
                    nxt[target] += c
        counts = nxt
    return sum(counts)


def _count_mountain(v: int, length: int) -> int:
    return sum(math.comb(h, p) * math.comb(h, length - 1 - p) for p in range(1, length - 1) for h in range(v))


def _count_zigzag(v: int, length: int) -> int:
    ends = [1] * v
    for step in range(1, length):
        if step % 2:
            ends = [sum(ends[:top]) for top in range(v)]
        else:
            ends = [sum(ends[top + 1 :]) for top in range(v)]
    return 2 * sum(ends)


def _count_majority(v: int, length: int) -> int:
    return v * sum(math.comb(length, k) * (v - 1) ** (length - k) for k in range(length // 2 + 1, length + 1))


def pattern_library(space: PatternSpace) -> dict[str, Pattern]:
    """Every pattern usable in ``space``, in library order (the order of every names list).

    Patterns that would have no positives, no negatives, or the same positives as
    another pattern at this vocabulary and length are left out; see ``_catalog``.
    """
    return {
        name: p for name, p in _catalog(space).items() if p.problem(space.vocab_size, space.seq_len) is None
    }


def _catalog(space: PatternSpace) -> dict[str, Pattern]:
    """Every pattern, usable in ``space`` or not, with names resolved from its tokens."""
    gram = tuple(token(c) for c in space.trigram)
    start, end = token(space.start_token), token(space.end_token)
    patterns = [
        Pattern("all_same", "every token is the same", _all_same, _gen_all_same, lambda v, n: v),
        Pattern(
            "palindrome",
            "the sequence reads the same backwards",
            _palindrome,
            _gen_palindrome,
            lambda v, n: v ** ((n + 1) // 2),
            min_seq_len=4,
        ),
        Pattern(
            "sorted_ascending",
            "no token is smaller than the one before it",
            _sorted_ascending,
            _gen_ascending,
            lambda v, n: math.comb(v + n - 1, n),
        ),
        Pattern(
            "sorted_descending",
            "no token is larger than the one before it",
            _sorted_descending,
            _gen_descending,
            lambda v, n: math.comb(v + n - 1, n),
        ),
        Pattern(
            "alternating",
            "two different tokens alternate, as in ABABABA",
            _alternating,
            _gen_alternating,
            lambda v, n: v * (v - 1),
        ),
        Pattern(
            f"contains_{space.trigram}",
            f"{space.trigram} appears somewhere in the sequence",
            _contains(gram),
            _gen_contains(gram),
            lambda v, n: v**n - _count_avoiding(gram, v, n),
        ),
        Pattern(
            f"starts_with_{space.start_token}",
            f"the first token is {space.start_token}",
            _starts_with(start),
            _gen_at(0, start),
            lambda v, n: v ** (n - 1),
        ),
        Pattern(
            f"ends_with_{space.end_token}",
            f"the last token is {space.end_token}",
            _ends_with(end),
            _gen_at(-1, end),
            lambda v, n: v ** (n - 1),
        ),
        Pattern(
            "no_repeats",
            "no token occurs twice",
            _no_repeats,
            _gen_no_repeats,
            lambda v, n: math.perm(v, n),
            min_vocab=lambda n: n,
        ),
        Pattern(
            "majority",
            "one token fills more than half of the positions",
            _majority,
            _gen_majority,
            _count_majority,
            min_vocab=lambda n: 2 if n % 2 == 0 else 3,
        ),
        Pattern(
            "first_equals_last",
            "the first and the last token are the same",
            _first_equals_last,
            _gen_first_equals_last,
            lambda v, n: v ** (n - 1),
        ),
        Pattern(
            "mountain",
            "the tokens strictly rise to a peak inside the sequence, then strictly fall",
            _mountain,
            _gen_mountain,
            _count_mountain,
            min_vocab=lambda n: n // 2 + 1,
        ),
        Pattern(
            "valley",
            "the tokens strictly fall to a trough inside the sequence, then strictly rise",
            _valley,
            _gen_valley,
            _count_mountain,
            min_vocab=lambda n: n // 2 + 1,
        ),
        Pattern(
            "zigzag",
            "the tokens go up and down in turn, as in ACBDAC",
            _zigzag,
            _gen_zigzag,
            _count_zigzag,
            min_vocab=3,
        ),
        Pattern(
            "two_distinct",
            "exactly two different tokens occur",
            _two_distinct,
            _gen_two_distinct,
            lambda v, n: math.comb(v, 2) * (2**n - 2),
        ),
        Pattern(
            "period_3",
            "the sequence repeats its first three tokens, as in ABCABCA",
            _period_3,
            _gen_period_3,
            lambda v, n: v**3,
            min_seq_len=5,
        ),
        Pattern(
            "double_letter",
            "some token is immediately repeated",
            _double_letter,
            _gen_double_letter,
            lambda v, n: v**n - v * (v - 1) ** (n - 1),
        ),
    ]
    return {p.name: p for p in patterns}


def selectable(space: PatternSpace) -> tuple[str, ...]:
    """The names a batch draws from, in library order (assumes a valid selection)."""
    library = pattern_library(space)
    if space.names is None:
        return tuple(name for name in library if name not in space.exclude)
    chosen = set(space.names)
    return tuple(name for name in library if name in chosen)


def validate_selection(space: PatternSpace) -> None:
    """Reject a pattern space no batch could be built from; cheap (no enumeration).

    Messages start with the offending field, which the config layer turns into
    ``patterns.<field>: ...``.
    """
    catalog = _catalog(space)
    v, n = space.vocab_size, space.seq_len
    if space.names is not None:
        if not space.names:
            raise ValueError("names: at least one pattern is needed (or leave it out for all)")
        for name in space.names:
            if name not in catalog:
                raise ValueError(f"names: unknown pattern {name!r}; known: {', '.join(catalog)}")
            problem = catalog[name].problem(v, n)
            if problem is not None:
                raise ValueError(f"names: pattern {name!r} {problem}")
        twice = sorted({name for name in space.names if space.names.count(name) > 1})
        if twice:
            raise ValueError(f"names: {', '.join(repr(t) for t in twice)} listed twice")
    for name in space.exclude:
        if name not in catalog:
            raise ValueError(f"exclude: unknown pattern {name!r}; known: {', '.join(catalog)}")
    available = len(selectable(space))
    if space.per_batch.min < 1:
        raise ValueError("per_batch.min: must be at least 1")
    if space.per_batch.max > available:
        raise ValueError(
            f"per_batch.max: {space.per_batch.max} is more than the {available} selectable patterns"
        )
    for field in ("train_size", "val_size", "benchmark_size"):
        size = getattr(space, field)
        if size // 2 < space.per_batch.max:
            raise ValueError(
                f"{field}: {size} leaves fewer than one positive per pattern; "
                f"needs at least {2 * space.per_batch.max} (2 * per_batch.max)"
            )
