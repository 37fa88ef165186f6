"""A probabilistic context-free grammar as arrays, and its vectorized derivation sampler.

Every language in this package compiles to one ``Grammar``: nonterminals, word classes
(preterminals: a class emits one of its words), rules with probabilities, and a fixed
vocabulary ``<pad> <bos> <eos>`` followed by every class's words. The same object gives
the rule table the docs print, the grammar an nltk oracle parses with (``nltk_pcfg``),
the shortest sentence (``min_words``) and the expected one (``expected_words``).

``derive`` samples many derivations at once with a stack machine: each step pops one
symbol per live row, expands a nonterminal by a sampled rule (its right-hand side pushed
in reverse) or emits a word for a class. A row is abandoned as soon as the words emitted
plus the shortest yield of what is left on its stack exceed the cap, so rejection costs
only the part of a derivation that was drawn. Each expansion records the derivation state
of what it pushes (tree depth, parent nonterminal, clause), which becomes per-token labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


@dataclass(frozen=True)
class Rule:
    lhs: str
    rhs: tuple[str, ...]
    prob: float


@dataclass(frozen=True)
class WordClass:
    name: str
    words: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(eq=False)
class Grammar:
    """Nonterminals are indices ``[0, n_nt)``; word classes ``[n_nt, n_nt + n_classes)``."""

    name: str
    start: str
    nonterminals: tuple[str, ...]
    classes: tuple[WordClass, ...]
    rules: tuple[Rule, ...]
    clause_nonterminals: frozenset[str] = frozenset()
    """Nonterminals that open a new clause (the start symbol is clause 0)."""
    _arrays: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        names = [*self.nonterminals, *(c.name for c in self.classes)]
        if len(set(names)) != len(names):
            raise ValueError("symbol names must be distinct")
        self.symbols = tuple(names)
        self.index = {s: i for i, s in enumerate(names)}
        words = [w for c in self.classes for w in c.words]
        if len(set(words)) != len(words):
            raise ValueError("a word may belong to one class only")
        self.vocab = (*SPECIALS, *words)
        self.token_of = {w: i for i, w in enumerate(self.vocab)}
        self.rules = tuple(r for r in self.rules if r.prob > 0)
        for nt in self.nonterminals:
            total = sum(r.prob for r in self.rules if r.lhs == nt)
            if not np.isclose(total, 1.0):
                raise ValueError(f"rules of {nt} sum to {total}, not 1")
        self._compile()

    @property
    def n_nt(self) -> int:
        return len(self.nonterminals)

    def _compile(self) -> None:
        n_nt, n_rules = self.n_nt, len(self.rules)
        width = max(len(r.rhs) for r in self.rules)
        per_nt = [[i for i, r in enumerate(self.rules) if r.lhs == nt] for nt in self.nonterminals]
        most = max(len(p) for p in per_nt)
        self.rule_of = np.zeros((n_nt, most), dtype=np.int64)
        self.rule_cum = np.full((n_nt, most), 2.0)  # never reached: u < 1
        for a, ids in enumerate(per_nt):
            self.rule_of[a, : len(ids)] = ids
            self.rule_of[a, len(ids) :] = ids[-1]
            self.rule_cum[a, : len(ids)] = np.cumsum([self.rules[i].prob for i in ids])
            self.rule_cum[a, len(ids) - 1] = 2.0
        self.rhs = np.full((n_rules, width), -1, dtype=np.int64)
        self.rhs_len = np.array([len(r.rhs) for r in self.rules], dtype=np.int64)
        self.lhs = np.array([self.index[r.lhs] for r in self.rules], dtype=np.int64)
        for i, r in enumerate(self.rules):
            self.rhs[i, : len(r.rhs)] = [self.index[s] for s in r.rhs]
        most_words = max(len(c.words) for c in self.classes)
        self.word_cum = np.full((len(self.classes), most_words), 2.0)
        self.word_first = np.zeros(len(self.classes), dtype=np.int64)
        first = len(SPECIALS)
        for c, wc in enumerate(self.classes):
            w = np.asarray(wc.weights, dtype=float)
            self.word_cum[c, : len(w)] = np.cumsum(w / w.sum())
            self.word_cum[c, len(w) - 1] = 2.0
            self.word_first[c] = first
            first += len(wc.words)
        self.class_of_token = np.full(len(self.vocab), -1, dtype=np.int64)
        for c, wc in enumerate(self.classes):
            self.class_of_token[self.word_first[c] : self.word_first[c] + len(wc.words)] = c
        self.min_yield = self._min_yield()
        self.rhs_min = np.where(self.rhs >= 0, self.min_yield[np.maximum(self.rhs, 0)], 0).sum(1)
        opens = [nt in self.clause_nonterminals for nt in self.nonterminals]
        self.is_clause = np.array(opens + [False] * len(self.classes))

    def _min_yield(self) -> np.ndarray:
        big = 10**9
        y = np.array([big] * self.n_nt + [1] * len(self.classes), dtype=np.int64)
        for _ in range(len(self.symbols) + 1):
            for r in self.rules:
                a = self.index[r.lhs]
                y[a] = min(y[a], sum(int(y[self.index[s]]) for s in r.rhs))
        if (y >= big).any():
            raise ValueError("a nonterminal derives no finite sentence")
        return y

    @property
    def min_words(self) -> int:
        """Words in the shortest sentence (BOS and EOS not counted)."""
        return int(self.min_yield[self.index[self.start]])

    def mean_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``M[a, b]``: expected children ``b`` of one ``a``; ``w[a]``: expected words emitted directly."""
        m = np.zeros((self.n_nt, self.n_nt))
        w = np.zeros(self.n_nt)
        for r in self.rules:
            a = self.index[r.lhs]
            for s in r.rhs:
                b = self.index[s]
                if b < self.n_nt:
                    m[a, b] += r.prob
                else:
                    w[a] += r.prob
        return m, w

    def spectral_radius(self) -> float:
        """Below 1: derivations end with probability 1 and have a finite expected length."""
        return float(max(abs(np.linalg.eigvals(self.mean_matrix()[0]))))

    def expected_words(self) -> float:
        """Expected sentence length without a cap (inf where the grammar is not subcritical)."""
        if self.spectral_radius() >= 1:
            return float("inf")
        m, w = self.mean_matrix()
        return float(np.linalg.solve(np.eye(self.n_nt) - m, w)[self.index[self.start]])

    def nltk_pcfg(self) -> str:
        """The grammar in nltk's ``PCFG.fromstring`` notation (words quoted)."""
        lines = []
        for nt in [self.start, *(n for n in self.nonterminals if n != self.start)]:
            for r in self.rules:
                if r.lhs == nt:
                    lines.append(f"{nt} -> {' '.join(r.rhs)} [{r.prob!r}]")
        for c in self.classes:
            total = sum(c.weights)
            for word, weight in zip(c.words, c.weights):
                lines.append(f"{c.name} -> {_quote(word)} [{weight / total!r}]")
        return "\n".join(lines)

    def rule_table(self) -> list[tuple[str, str, float]]:
        return [(r.lhs, " ".join(r.rhs), r.prob) for r in self.rules]


def _quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True, eq=False)
class Derivation:
    """Accepted derivations, words left-aligned; every array is ``[n, cap]`` with -1 past the end."""

    words: np.ndarray
    """token ids of the words (PAD past the end)"""
    n_words: np.ndarray
    word_class: np.ndarray
    parent: np.ndarray
    """nonterminal whose rule produced the word's class symbol"""
    depth: np.ndarray
    """depth of the word's class symbol in the tree (start symbol: 0)"""
    clause: np.ndarray
    """ordinal of the innermost clause holding the word (0: the start symbol's)"""
    rule_counts: np.ndarray
    """``[n, n_rules]``: how often each rule was used"""
    drawn: int
    """derivations started to obtain these (rejection included)"""


_CHUNK = 8192  # rows per vectorized batch: small enough for the caches


def derive(g: Grammar, n: int, cap: int, rng: np.random.Generator) -> Derivation:
    """``n`` derivations of at most ``cap`` words, by rejection (rows over the cap are abandoned early)."""
    parts, got, drawn, rate = [], 0, 0, 1.0
    while got < n:
        want = n - got
        m = int(min(max(want / max(rate, 1e-3) * 1.1 + 16, 64), _CHUNK))
        batch, accepted = _derive_batch(g, m, cap, rng)
        drawn += m
        rate = max(accepted.mean(), 1e-4)
        if got == 0 and not accepted.any() and drawn > 100_000:
            raise ValueError(f"{g.name}: no derivation of at most {cap} words in {drawn} draws")
        keep = np.flatnonzero(accepted)[:want]
        if len(keep) == want:  # the rows after the last one kept were not needed
            drawn += int(keep[-1]) + 1 - m
        parts.append({k: v[keep] for k, v in batch.items()})
        got += len(keep)
    if not parts:  # n == 0
        parts.append({k: v[:0] for k, v in _derive_batch(g, 0, cap, rng)[0].items()})
    cat = {k: np.concatenate([p[k] for p in parts]).astype(np.int64) for k in parts[0]}
    return Derivation(**cat, drawn=drawn)


def _derive_batch(g: Grammar, m: int, cap: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    depth_cap = cap + int(g.rhs_len.max()) + 1
    sym = np.zeros((m, depth_cap), dtype=np.int32)
    s_depth = np.zeros((m, depth_cap), dtype=np.int32)
    s_parent = np.full((m, depth_cap), -1, dtype=np.int32)
    s_clause = np.zeros((m, depth_cap), dtype=np.int32)
    sym[:, 0] = g.index[g.start]
    sp = np.ones(m, dtype=np.int32)
    committed = np.full(m, g.min_yield[g.index[g.start]], dtype=np.int32)
    emitted = np.zeros(m, dtype=np.int32)
    clauses = np.ones(m, dtype=np.int32)
    alive = np.ones(m, dtype=bool)
    words = np.zeros((m, cap), dtype=np.int32)
    out = {k: np.full((m, cap), -1, dtype=np.int32) for k in ("word_class", "parent", "depth", "clause")}
    rule_counts = np.zeros((m, len(g.rules)), dtype=np.int32)
    width = g.rhs.shape[1]
    rows = np.arange(m)
    while True:
        act = rows[alive & (sp > 0)]
        if not len(act):
            break
        sp[act] -= 1
        top = sp[act]
        s = sym[act, top]
        d, par, cl = s_depth[act, top], s_parent[act, top], s_clause[act, top]
        nt = s < g.n_nt
        a = act[nt]
        if len(a):
            sa = s[nt]
            u = rng.random(len(a))
            r = g.rule_of[sa, (u[:, None] >= g.rule_cum[sa]).sum(1)]
            rule_counts[a, r] += 1  # one expansion per row and step: no repeats
            committed[a] += g.rhs_min[r] - g.min_yield[sa]
            over = committed[a] > cap
            alive[a[over]] = False
            # a clause symbol opens the next clause for its children
            cl_a = cl[nt]
            opens = g.is_clause[sa]
            if opens.any():
                cl_a = np.where(opens, clauses[a], cl_a)
                clauses[a] += opens
            base, n_rhs = sp[a], g.rhs_len[r]
            for j in range(width):
                put = j < n_rhs
                if not put.any():
                    continue
                at = base[put] + n_rhs[put] - 1 - j
                rr = a[put]
                sym[rr, at] = g.rhs[r[put], j]
                s_depth[rr, at] = d[nt][put] + 1
                s_parent[rr, at] = sa[put]
                s_clause[rr, at] = cl_a[put]
            sp[a] += n_rhs
        b = act[~nt]
        if len(b):
            c = s[~nt] - g.n_nt
            u = rng.random(len(b))
            token = g.word_first[c] + (u[:, None] >= g.word_cum[c]).sum(1)
            at = emitted[b]
            words[b, at] = token
            out["word_class"][b, at] = c
            out["parent"][b, at] = par[~nt]
            out["depth"][b, at] = d[~nt]
            out["clause"][b, at] = cl[~nt]
            emitted[b] += 1
    accepted = alive & (sp == 0)
    return {"words": words, "n_words": emitted, **out, "rule_counts": rule_counts}, accepted
