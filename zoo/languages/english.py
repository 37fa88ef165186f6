"""A small English PCFG (the reference's) with its variants as parameters.

Rules (``EnglishConfig``; c = np_conj, c' = vp_conj, r = relative_clauses, q = prepositions)::

    S  → NP VP                          1
    NP → Adj N                          (1 − c − r − q) · 2/3    (base: .50)
       | Pro                            (1 − c − r − q) · 1/3    (base: .25)
       | NP Conj NP                     c                        (base: .25)
       | NP RC                          r                        (base: 0)
       | NP PP                          q                        (base: 0)
    VP → V                              (1 − c' − q) · 25/85     (base: .25)
       | V NP                           (1 − c' − q) · 35/85     (base: .35)
       | VP Adv                         (1 − c' − q) · 25/85     (base: .25)
       | VP Conj VP                     c'                       (base: .15)
       | VP PP                          q                        (base: 0)
    RC → Rel VP                         1
    PP → P NP                           1

With ``transitivity`` the verb class splits: ``VP → Vi`` takes the ``V`` rule's weight and
``VP → Vt NP`` the ``V NP`` rule's. Word classes (``words_per_class`` words each, default 10):
N, V (or Vi and Vt), Adj, Pro, Adv, Conj, P; Rel has 3 words (that, which, who). Within a class
the word weights are one Dirichlet(``word_alpha``) draw seeded by ``word_seed``: near uniform.
The vocabulary holds every class whether or not a variant uses it, so it depends only on
``words_per_class`` and ``transitivity``.

Labels (from the derivation: the grammar is ambiguous, so they are not functions of the words):
``pos`` (the word's class), ``parent`` (the nonterminal whose rule produced it), ``depth``
(of its class symbol; S is 0), ``clause`` (0: the main clause; relative clauses 1, 2, ... in
order of their first word). All are -1 at BOS and EOS, except ``pos`` (bos, eos).

Validator: a deterministic pushdown recognizer with one token of lookahead, O(length). Its
stack holds the open constituents (NP or VP levels) that could still take a right-hand
modifier. Every constituent here is complete as soon as it could be, and modifiers attach
only at right edges, so a token that can continue several open levels is attached to the
deepest one of the kind it needs: that keeps the most levels open, and any continuation
legal from a shallower attachment stays legal. ``Conj`` looks one token ahead: an NP starts
with Adj or Pro, a VP with a verb. A finite automaton cannot do this: relative clauses make
the language non-regular (an ``Adv … Conj Adj N … Adv`` alternation must not outnumber the
open relative clauses). Agreement with nltk's chart parser is tested on valid and
corrupted sentences.
"""

from __future__ import annotations

import numpy as np

from zoo.languages.base import Language, LabelSpec, counts, place
from zoo.languages.grammar import EOS, Derivation, Grammar, Rule, WordClass

WORDS = {
    "N": "dog cat bird fish horse child farmer teacher king river",
    "V": "sees chases likes finds helps sleeps runs walks sings waits",
    "Vt": "sees chases likes finds helps knows takes calls meets follows",
    "Vi": "sleeps runs walks sings waits laughs falls swims smiles cries",
    "Adj": "big small red old young happy sad quick lazy bright",
    "Pro": "he she it they we you someone everyone nobody somebody",
    "Adv": "quickly slowly often never always rarely quietly loudly today here",
    "Conj": "and or but yet so nor then while because although",
    "P": "in on with near under over from to by behind",
    "Rel": "that which who",
}
NONTERMINALS = ("S", "NP", "VP", "RC", "PP")
_CODE = {  # one character per class, for the recognizer
    "N": "n", "V": "v", "Vt": "t", "Vi": "i", "Adj": "a", "Pro": "p", "Adv": "d", "Conj": "c", "P": "e", "Rel": "r",
}


def _words(cls: str, n: int) -> tuple[str, ...]:
    base = WORDS[cls].split()
    if cls == "Rel":
        return tuple(base)
    return tuple(base[:n]) + tuple(f"{base[i % len(base)]}{i // len(base) + 1}" for i in range(len(base), n))


class English(Language):
    def _build(self) -> Grammar:
        c = self.config
        verbs = ("Vi", "Vt") if c.transitivity else ("V",)
        names = ["N", *verbs, "Adj", "Pro", "Adv", "Conj", "P", "Rel"]
        classes = []
        for i, name in enumerate(names):
            words = _words(name, c.words_per_class)
            rng = np.random.default_rng([c.word_seed, i])
            weights = rng.dirichlet(np.full(len(words), c.word_alpha))
            classes.append(WordClass(name, words, tuple(float(w) for w in weights)))
        np_rest = 1 - c.np_conj - c.relative_clauses - c.prepositions
        vp_rest = 1 - c.vp_conj - c.prepositions
        v_alone, v_obj = ("Vi",), ("Vt", "NP")
        if not c.transitivity:
            v_alone, v_obj = ("V",), ("V", "NP")
        rules = [
            Rule("S", ("NP", "VP"), 1.0),
            Rule("NP", ("Adj", "N"), np_rest * 2 / 3),
            Rule("NP", ("Pro",), np_rest / 3),
            Rule("NP", ("NP", "Conj", "NP"), c.np_conj),
            Rule("NP", ("NP", "RC"), c.relative_clauses),
            Rule("NP", ("NP", "PP"), c.prepositions),
            Rule("VP", v_alone, vp_rest * 25 / 85),
            Rule("VP", v_obj, vp_rest * 35 / 85),
            Rule("VP", ("VP", "Adv"), vp_rest * 25 / 85),
            Rule("VP", ("VP", "Conj", "VP"), c.vp_conj),
            Rule("VP", ("VP", "PP"), c.prepositions),
            Rule("RC", ("Rel", "VP"), 1.0),
            Rule("PP", ("P", "NP"), 1.0),
        ]
        return Grammar("english", "S", NONTERMINALS, tuple(classes), tuple(rules), frozenset({"RC"}))

    def _specs(self) -> tuple[LabelSpec, ...]:
        classes = tuple(wc.name for wc in self.grammar.classes)
        return (
            LabelSpec("pos", ("bos", "eos", *classes), "part of speech: the word's class"),
            LabelSpec("parent", NONTERMINALS, "nonterminal whose rule produced the word's class"),
            LabelSpec("depth", counts(self.cap + 2), "depth of the word's class symbol in the tree (S: 0)"),
            LabelSpec("clause", counts(self.cap), "clause holding the word: 0 main, then relative clauses in order"),
        )

    def _labels(self, der: Derivation, tokens: np.ndarray) -> dict[str, np.ndarray]:
        n_words, L = der.n_words, self.max_len
        return {
            "pos": place(np.where(der.word_class >= 0, der.word_class + 2, -1), n_words, L, bos=0, eos=1),
            "parent": place(der.parent, n_words, L),
            "depth": place(der.depth, n_words, L),
            "clause": place(der.clause, n_words, L),
        }

    def _accepts(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        codes = np.array([_CODE[wc.name] for wc in self.grammar.classes])
        cls = self.grammar.class_of_token[words]
        variant = self._variant()
        return np.array([recognize("".join(codes[row[:k]]), **variant) for row, k in zip(cls, n_words)], dtype=bool)

    def _variant(self) -> dict[str, bool]:
        c = self.config
        return {"rel": c.relative_clauses > 0, "prep": c.prepositions > 0, "np_conj": c.np_conj > 0,
                "vp_conj": c.vp_conj > 0}

    def _legal(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        g = self.grammar
        codes = [_CODE[wc.name] for wc in g.classes]
        cls = g.class_of_token[words]
        out = np.zeros((len(words), words.shape[1] + 1, len(self.vocab)), dtype=bool)
        for i, (row, k) in enumerate(zip(cls, n_words)):
            machine = Recognizer(**self._variant())
            for t in range(k + 1):
                for c, code in enumerate(codes):
                    if machine.copy().step(code):
                        out[i, t, g.word_first[c] : g.word_first[c] + len(g.classes[c].words)] = True
                out[i, t, EOS] = machine.complete
                if t == k or not machine.step(codes[row[t]]):
                    break
        return out


class Recognizer:
    """The pushdown recognizer, one class code (``_CODE``) at a time; ``copy`` forks it.

    ``Conj`` is resolved by the token after it (an NP starts with Adj or Pro, a VP with a
    verb), which is the one token of lookahead."""

    __slots__ = ("levels", "main", "expect", "push", "obj_ok", "rel", "prep", "np_conj", "vp_conj")

    def __init__(self, *, rel: bool, prep: bool, np_conj: bool, vp_conj: bool) -> None:
        self.levels: list[str] = []  # "n": an open NP, "v": an open VP
        self.main = False  # the main VP has started (the subject is closed)
        self.expect, self.push, self.obj_ok = "NP", True, False
        self.rel, self.prep, self.np_conj, self.vp_conj = rel, prep, np_conj, vp_conj

    def copy(self) -> Recognizer:
        other = object.__new__(Recognizer)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.levels = list(self.levels)
        return other

    @property
    def complete(self) -> bool:
        return self.expect == "done" and self.main

    def step(self, c: str) -> bool:
        """Read one class code; False when no sentence starts with what was read."""
        levels = self.levels
        if self.expect == "NP":
            if self.push:
                levels.append("n")
            if c == "a":
                self.expect = "N"
            elif c == "p":
                self.expect = "done"
            else:
                return False
            self.obj_ok = False
            return True
        if self.expect == "N":
            self.expect = "done"
            return c == "n"
        if self.expect == "VP":
            if self.push:
                levels.append("v")
            if c in "vi":
                self.expect, self.obj_ok = "done", c == "v"
            elif c == "t":
                self.expect, self.push, self.obj_ok = "NP", True, False
            else:
                return False
            return True
        if self.expect == "conj":
            kind = "n" if c in "ap" and self.np_conj else "v" if c in "vit" and self.vp_conj else ""
            if not kind or kind not in levels:
                return False
            del levels[_deepest(levels, kind) + 1 :]
            self.expect, self.push = ("NP" if kind == "n" else "VP"), False
            return self.step(c)
        # the top constituent is complete
        if self.obj_ok and c in "ap":
            self.expect, self.push, self.obj_ok = "NP", True, False
            return self.step(c)  # the object NP starts with this token
        self.obj_ok = False
        if c == "d" and "v" in levels:
            del levels[_deepest(levels, "v") + 1 :]
        elif c == "e" and self.prep:
            self.expect, self.push = "NP", True
        elif c == "r" and self.rel and "n" in levels:
            del levels[_deepest(levels, "n") + 1 :]
            self.expect, self.push = "VP", True
        elif c == "c" and ((self.np_conj and "n" in levels) or (self.vp_conj and "v" in levels)):
            self.expect = "conj"  # some conjunct can follow: resolved by the next token
        elif c in "vit" and not self.main:
            levels.clear()
            self.main = True
            self.expect, self.push = "VP", True
            return self.step(c)  # the main VP starts with this token
        else:
            return False
        return True


def recognize(s: str, **variant: bool) -> bool:
    """Whether a string of class codes (``_CODE``) is a sentence; see the module docstring."""
    machine = Recognizer(**variant)
    return all(machine.step(c) for c in s) and machine.complete


def _deepest(levels: list[str], kind: str) -> int:
    return len(levels) - 1 - levels[::-1].index(kind)
