"""What every language shares: the sample it emits, its label vocabularies, framing, validation.

A sequence is ``<bos> w1 .. wm <eos>`` then ``<pad>`` up to ``max_len`` (``PAD = 0``,
``BOS = 1``, ``EOS = 2``, words from 3). Labels are integer arrays of the same shape, one
per named label; ``-1`` means "no label" (always at PAD; at BOS and EOS for properties of
a word, such as its part of speech or arity, while state labels, such as the depth after
the token, are defined there too). Each label's integer ``v`` names ``spec.values[v]``.

``validate`` reads model output as it comes: the first token must be BOS, the words run to
the first EOS (none: invalid) and must contain no special token; what follows that EOS
is ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from zoo.languages.grammar import BOS, EOS, PAD, Derivation, Grammar, derive


@dataclass(frozen=True)
class LabelSpec:
    """One per-token label: its name, the names of its integer values, what it means."""

    name: str
    values: tuple[str, ...]
    description: str


def counts(n: int) -> tuple[str, ...]:
    """Value names of a count label: ``"0" .. str(n)``."""
    return tuple(str(i) for i in range(n + 1))


@dataclass(frozen=True, eq=False)
class LanguageSample:
    """Sequences of one language with their per-token ground truth."""

    grammar: str
    vocab: tuple[str, ...]
    tokens: np.ndarray
    """int64 ``[n, max_len]``: BOS, words, EOS, PAD"""
    lengths: np.ndarray
    """tokens of each sequence, BOS and EOS included"""
    labels: dict[str, np.ndarray]
    specs: tuple[LabelSpec, ...]
    rule_counts: np.ndarray
    """``[n, n_rules]``: rule uses in each sequence's derivation (order: ``Grammar.rules``)"""
    drawn: int
    """derivations started to get these ``n`` (the rest exceeded the cap)"""

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def acceptance(self) -> float:
        return len(self) / max(self.drawn, 1)

    def spec(self, name: str) -> LabelSpec:
        return next(s for s in self.specs if s.name == name)

    def decode(self, row: int) -> list[str]:
        return [self.vocab[t] for t in self.tokens[row, : self.lengths[row]]]

    def label_names(self, name: str, row: int) -> list[str | None]:
        values = self.spec(name).values
        return [values[v] if v >= 0 else None for v in self.labels[name][row, : self.lengths[row]]]


def frame(words: np.ndarray, n_words: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``<bos> words <eos> <pad>..`` of width ``max_len`` from left-aligned words."""
    n = len(words)
    tokens = np.full((n, max_len), PAD, dtype=np.int64)
    tokens[:, 0] = BOS
    width = min(words.shape[1], max_len - 2)
    inside = np.arange(width)[None, :] < n_words[:, None]
    tokens[:, 1 : 1 + width] = np.where(inside, words[:, :width], PAD)
    tokens[np.arange(n), n_words + 1] = EOS
    return tokens, n_words + 2


def place(word_labels: np.ndarray, n_words: np.ndarray, max_len: int, bos: int = -1, eos: int = -1) -> np.ndarray:
    """Word-aligned labels ``[n, W]`` moved to token positions; ``bos``/``eos`` at the ends, -1 at PAD."""
    n = len(word_labels)
    out = np.full((n, max_len), -1, dtype=np.int64)
    width = min(word_labels.shape[1], max_len - 2)
    inside = np.arange(width)[None, :] < n_words[:, None]
    out[:, 1 : 1 + width] = np.where(inside, word_labels[:, :width], -1)
    out[:, 0] = bos
    out[np.arange(n), n_words + 1] = eos
    return out


def split_words(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(words [n, T-1], n_words, framed)``: words are PAD past each sequence's first EOS.

    ``framed`` is False where the first token is not BOS, there is no EOS, or a special
    token (PAD, BOS) comes before the first EOS."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim == 1:
        tokens = tokens[None, :]
    n, t = tokens.shape
    body = tokens[:, 1:] if t else tokens
    is_eos = body == EOS
    has_eos = is_eos.any(1)
    n_words = np.where(has_eos, is_eos.argmax(1), body.shape[1])
    inside = np.arange(body.shape[1])[None, :] < n_words[:, None]
    special = inside & (body < 3)
    framed = (tokens[:, 0] == BOS if t else np.zeros(n, bool)) & has_eos & ~special.any(1)
    words = np.where(inside, body, PAD)
    return words, n_words, framed


class Language(ABC):
    """A grammar with its sampler, labels and validator; built from a language config."""

    grammar: Grammar
    specs: tuple[LabelSpec, ...]

    def __init__(self, config) -> None:
        self.config = config
        self.max_len = int(config.max_len)
        self.grammar = self._build()
        self.specs = self._specs()

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.grammar.vocab

    @property
    def cap(self) -> int:
        """Most words in a sentence: ``max_len`` less BOS and EOS."""
        return self.max_len - 2

    def sample(self, n: int, seed: int) -> LanguageSample:
        """``n`` sentences of at most ``cap`` words, a pure function of (config, n, seed)."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6C616E67]))
        der = derive(self.grammar, int(n), self.cap, rng)
        tokens, lengths = frame(der.words, der.n_words, self.max_len)
        labels = self._labels(der, tokens)
        return LanguageSample(
            self.grammar.name, self.vocab, tokens, lengths, labels, self.specs, der.rule_counts, der.drawn
        )

    def validate(self, tokens: np.ndarray) -> np.ndarray:
        """bool ``[n]``: each sequence framed and in the language (see the module docstring)."""
        words, n_words, framed = split_words(tokens)
        inside = np.arange(words.shape[1])[None, :] < n_words[:, None]
        ok = framed & ~(inside & (words >= len(self.vocab))).any(1)
        if ok.any():
            ok[ok] = self._accepts(words[ok], n_words[ok])
        return ok

    def legal_next(self, tokens: np.ndarray) -> np.ndarray:
        """bool ``[n, T, V]``: token ``v`` may follow ``tokens[i, :t + 1]`` in some sentence.

        The length cap is ignored. From the first EOS on, and after a token that no sentence
        continues with, nothing is legal; rows not starting with BOS have nothing legal.
        This is what next-token accuracy on legal continuations reads."""
        tokens = np.asarray(tokens, dtype=np.int64)
        tokens = tokens[None, :] if tokens.ndim == 1 else tokens
        words, n_words, _ = split_words(tokens)
        inside = np.arange(words.shape[1])[None, :] < n_words[:, None]
        bad = inside & ((words < 3) | (words >= len(self.vocab)))
        n_words = np.where(bad.any(1), bad.argmax(1), n_words)  # read up to the first foreign token
        words = np.where(np.arange(words.shape[1])[None, :] < n_words[:, None], words, PAD)
        legal = self._legal(words, n_words)
        out = np.zeros((*tokens.shape, len(self.vocab)), dtype=bool)
        width = min(tokens.shape[1], legal.shape[1])
        out[:, :width] = legal[:, :width]
        out[tokens[:, 0] != BOS] = False
        return out

    def annotate(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Labels read from the tokens alone, where the grammar allows it (Dyck, Expr)."""
        raise NotImplementedError(
            f"{self.grammar.name} labels come from the derivation (the grammar is ambiguous): use sample().labels"
        )

    def words(self, tokens: np.ndarray) -> list[list[str]]:
        words, n_words, _ = split_words(tokens)
        return [[self.vocab[t] for t in row[:k]] for row, k in zip(words, n_words)]

    @abstractmethod
    def _build(self) -> Grammar: ...

    @abstractmethod
    def _specs(self) -> tuple[LabelSpec, ...]: ...

    @abstractmethod
    def _labels(self, der: Derivation, tokens: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _legal(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        """bool ``[n, W + 1, V]``: legal next tokens after BOS and ``j`` words (False past ``n_words``)."""

    @abstractmethod
    def _accepts(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        """bool ``[n]`` for left-aligned word ids (PAD past ``n_words``)."""
