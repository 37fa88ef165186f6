"""Dyck-k: balanced brackets of k types.

Rules (``DyckConfig``; the reference models: k 2, p_concat 0.3, p_nest 0.3 and 0.5)::

    S         → S S                 p_concat
              | Bracket_i           (1 − p_concat) / k   for each i
    Bracket_i → o_i S c_i           p_nest
              | o_i c_i             1 − p_nest

Tokens: ``( ) [ ] { } < >`` for the first four types, then ``(4 )4``, ...

Labels (all functions of the tokens, so ``annotate`` labels any valid sequence, a model's
generations included):

- ``kind``: bos, open, close, eos;
- ``depth``: brackets open after the token (0 at BOS and EOS);
- ``top``: the type of the innermost open bracket after the token (``none`` when none).

Validator: one pass over the positions, vectorized over the sequences, with a stack per
sequence (an int array and a pointer): O(length).
"""

from __future__ import annotations

import numpy as np

from zoo.languages.base import Language, LabelSpec, counts, place
from zoo.languages.grammar import EOS, PAD, Derivation, Grammar, Rule, WordClass

_PAIRS = ("()", "[]", "{}", "<>")
KINDS = ("bos", "open", "close", "eos")


def bracket_pair(i: int) -> tuple[str, str]:
    return (_PAIRS[i][0], _PAIRS[i][1]) if i < len(_PAIRS) else (f"({i}", f"){i}")


class Dyck(Language):
    def _build(self) -> Grammar:
        c = self.config
        k = c.k
        rules = [Rule("S", ("S", "S"), c.p_concat)]
        classes = []
        for i in range(k):
            rules.append(Rule("S", (f"B{i}",), (1 - c.p_concat) / k))
            rules.append(Rule(f"B{i}", (f"o{i}", "S", f"c{i}"), c.p_nest))
            rules.append(Rule(f"B{i}", (f"o{i}", f"c{i}"), 1 - c.p_nest))
        for i in range(k):
            o, cl = bracket_pair(i)
            classes += [WordClass(f"o{i}", (o,), (1.0,)), WordClass(f"c{i}", (cl,), (1.0,))]
        return Grammar(
            f"dyck-{k}", "S", ("S", *(f"B{i}" for i in range(k))), tuple(classes), tuple(rules)
        )

    def _specs(self) -> tuple[LabelSpec, ...]:
        k = self.config.k
        return (
            LabelSpec("kind", KINDS, "whether the token opens or closes a bracket"),
            LabelSpec("depth", counts(self.cap // 2), "brackets open after the token"),
            LabelSpec(
                "top", ("none", *(bracket_pair(i)[0] for i in range(k))),
                "innermost open bracket after the token (none: the stack is empty)",
            ),
        )

    def _bracket(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(type, is_open) of word tokens: token 3 + 2i opens type i, 4 + 2i closes it."""
        w = np.asarray(tokens) - 3
        return w // 2, (w % 2) == 0

    def _accepts(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        return self._scan(words, n_words)[0]

    def _scan(self, words: np.ndarray, n_words: np.ndarray):
        """(valid, depth, top + 1, alive): ``alive[:, t]``: no mismatch up to word t."""
        n, width = words.shape
        typ, kind = self._bracket(words)
        stack = np.zeros((n, width // 2 + 2), dtype=np.int64)
        sp = np.zeros(n, dtype=np.int64)
        ok = np.ones(n, dtype=bool)
        depth = np.zeros((n, width), dtype=np.int64)
        top = np.zeros((n, width), dtype=np.int64)
        alive = np.zeros((n, width), dtype=bool)
        rows = np.arange(n)
        limit = stack.shape[1] - 1
        for t in range(width):
            live = t < n_words
            opening = live & kind[:, t]
            closing = live & ~kind[:, t]
            at = np.minimum(sp, limit)
            stack[rows, at] = np.where(opening, typ[:, t], stack[rows, at])
            mismatch = closing & ((sp == 0) | (stack[rows, np.maximum(sp - 1, 0)] != typ[:, t]))
            ok &= ~mismatch & ~(opening & (sp >= limit))
            sp = np.clip(sp + opening - closing, 0, limit)
            depth[:, t] = sp
            top[:, t] = np.where(sp > 0, stack[rows, np.maximum(sp - 1, 0)] + 1, 0)
            alive[:, t] = ok
        return ok & (sp == 0) & (n_words > 0), depth, top, alive

    def _legal(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        n, width = words.shape
        _, depth, top, alive = self._scan(words, n_words)
        legal = np.zeros((n, width + 1, len(self.vocab)), dtype=bool)
        opens = 3 + 2 * np.arange(self.config.k)
        legal[:, 0, opens] = True
        reached = (np.arange(1, width + 1)[None, :] <= n_words[:, None]) & alive
        legal[:, 1:, opens] = reached[:, :, None]
        r, j = np.nonzero(reached & (depth > 0))
        legal[r, j + 1, 4 + 2 * (top[r, j] - 1)] = True  # the close of the innermost open bracket
        legal[:, 1:, EOS] = reached & (depth == 0)
        return legal

    def annotate(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Labels of valid framed sequences (garbage for invalid ones: check ``validate`` first)."""
        from zoo.languages.base import split_words

        words, n_words, _ = split_words(tokens)
        return self._annotate(words, n_words, np.asarray(tokens).shape[-1])

    def _annotate(self, words, n_words, max_len) -> dict[str, np.ndarray]:
        _, depth, top, _ = self._scan(words, n_words)
        opening = self._bracket(words)[1]
        return {
            "kind": place(np.where(opening, 1, 2), n_words, max_len, bos=0, eos=3),
            "depth": place(depth, n_words, max_len, bos=0, eos=0),
            "top": place(top, n_words, max_len, bos=0, eos=0),
        }

    def _labels(self, der: Derivation, tokens: np.ndarray) -> dict[str, np.ndarray]:
        words = np.where(der.word_class >= 0, der.words, PAD)
        return self._annotate(words, der.n_words, self.max_len)
