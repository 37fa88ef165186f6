"""Expr: arithmetic-like expressions over digits, in prefix or postfix notation.

Rules (``ExprConfig``; reference: p_op 0.4, 10 digits, 3 operators per arity)::

    Expr   → OpExpr                     p_op
           | Digit                      1 − p_op
    OpExpr → UnOp Expr                  1/3      (postfix: Expr UnOp)
           | BinOp Expr Expr            1/3      (postfix: Expr Expr BinOp)
           | TernOp Expr Expr Expr      1/3      (postfix: Expr Expr Expr TernOp)

Tokens: digits ``0 .. n_digits-1``, then operators ``u0.. b0.. t0..`` (unary, binary, ternary).

Labels (functions of the tokens: the notation is unambiguous):

- ``role``: bos, operand, operator, eos;
- ``arity``: 0 for a digit, 1/2/3 for an operator (-1 at BOS/EOS);
- ``remaining``: prefix: operands still owed to finish the expression after the token
  (1 at BOS, 0 after the last word and at EOS); postfix: values on the evaluation stack
  after the token (0 at BOS, 1 at the end);
- ``depth``: depth of the token's node in the expression tree, root 0 (-1 at BOS/EOS).
  In postfix the depth of a token is fixed only by what follows it.

Validator: an arity counter (prefix: operands owed, never 0 before the end; postfix: the
stack height, never below an operator's arity, 1 at the end), one pass vectorized over the
sequences: O(length). Depth uses a stack of owed slots with a pointer to the deepest
operator still owing more than one operand, so each token is O(1) too.
"""

from __future__ import annotations

import numpy as np

from zoo.languages.base import Language, LabelSpec, counts, place, split_words
from zoo.languages.grammar import EOS, PAD, Derivation, Grammar, Rule, WordClass

ROLES = ("bos", "operand", "operator", "eos")
_OP_CLASSES = (("UnOp", "u", 1), ("BinOp", "b", 2), ("TernOp", "t", 3))


class Expr(Language):
    def _build(self) -> Grammar:
        c = self.config
        classes = [WordClass("Digit", tuple(str(i) for i in range(c.n_digits)), (1.0,) * c.n_digits)]
        rules = [Rule("Expr", ("OpExpr",), c.p_op), Rule("Expr", ("Digit",), 1 - c.p_op)]
        for name, prefix, arity in _OP_CLASSES:
            classes.append(WordClass(name, tuple(f"{prefix}{i}" for i in range(c.n_ops)), (1.0,) * c.n_ops))
            rhs = ("Expr",) * arity + (name,) if c.postfix else (name,) + ("Expr",) * arity
            rules.append(Rule("OpExpr", rhs, 1 / 3))
        notation = "postfix" if c.postfix else "prefix"
        return Grammar(f"expr-{notation}", "Expr", ("Expr", "OpExpr"), tuple(classes), tuple(rules))

    def _specs(self) -> tuple[LabelSpec, ...]:
        owed = "values on the stack after the token" if self.config.postfix else "operands still owed after the token"
        return (
            LabelSpec("role", ROLES, "operand (digit) or operator"),
            LabelSpec("arity", counts(3), "operands the token takes (0: a digit)"),
            LabelSpec("remaining", counts(self.cap), owed),
            LabelSpec("depth", counts(self.cap), "depth of the token's node in the expression tree (root 0)"),
        )

    @property
    def arity_of_token(self) -> np.ndarray:
        c = self.config
        table = np.zeros(len(self.vocab), dtype=np.int64)
        first = 3 + c.n_digits
        for _, _, arity in _OP_CLASSES:
            table[first : first + c.n_ops] = arity
            first += c.n_ops
        return table

    def _accepts(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        return self._count(self.arity_of_token[words], n_words)[0]

    def _count(self, arity: np.ndarray, n_words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(valid, remaining after each word, alive: the words so far start some sentence): the arity counter."""
        n, width = arity.shape
        ok = np.ones(n, dtype=bool)
        remaining = np.zeros((n, width), dtype=np.int64)
        alive = np.zeros((n, width), dtype=bool)
        postfix = self.config.postfix
        count = np.zeros(n, dtype=np.int64) if postfix else np.ones(n, dtype=np.int64)
        for t in range(width):
            live = t < n_words
            a = arity[:, t]
            if postfix:  # stack height: an operator needs its operands on the stack
                ok &= ~(live & (a > 0) & (count < a))
                count = np.where(live, count + 1 - a, count)
            else:  # operands owed: none left means the expression is finished
                ok &= ~(live & (count <= 0))
                count = np.where(live, count + a - 1, count)
            remaining[:, t] = count
            alive[:, t] = ok
        return ok & (count == (1 if postfix else 0)) & (n_words > 0), remaining, alive

    def _legal(self, words: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        n, width = words.shape
        arity = self.arity_of_token[words]
        _, remaining, alive = self._count(arity, n_words)
        read = (np.arange(1, width + 1)[None] <= n_words[:, None]) & alive
        reached = np.concatenate([np.ones((n, 1), bool), read], 1)
        start = 0 if self.config.postfix else 1
        count = np.concatenate([np.full((n, 1), start), remaining], 1)[:, :, None]
        legal = np.zeros((n, width + 1, len(self.vocab)), dtype=bool)
        token_arity = self.arity_of_token[None, None, 3:]
        if self.config.postfix:
            legal[:, :, 3:] = token_arity <= count
            legal[:, :, EOS] = count[:, :, 0] == 1
        else:
            legal[:, :, 3:] = count > 0
            legal[:, :, EOS] = count[:, :, 0] == 0
        return legal & reached[:, :, None]

    @staticmethod
    def _prefix_depth(arity: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        """Depth of each node of a valid prefix expression: open operators when it is read."""
        n, width = arity.shape
        rem = np.zeros((n, width + 1), dtype=np.int64)
        base = np.full((n, width + 2), -1, dtype=np.int64)  # base[p + 1]: deepest index <= p owing > 1
        sp = np.zeros(n, dtype=np.int64)
        depth = np.zeros((n, width), dtype=np.int64)
        rows = np.arange(n)
        for t in range(width):
            live = t < n_words
            depth[:, t] = sp
            a = arity[:, t]
            op = live & (a > 0)
            r = rows[op]
            p = sp[op]
            rem[r, p] = a[op]
            base[r, p + 1] = np.where(a[op] > 1, p, base[r, p])
            sp[op] += 1
            dig = live & (a == 0)
            r = rows[dig]
            q = base[r, sp[dig]]  # deepest open operator still owing more than this operand
            sp[dig] = q + 1
            has = q >= 0
            r, q = r[has], q[has]
            rem[r, q] -= 1
            base[r, q + 1] = np.where(rem[r, q] > 1, q, base[r, q])
        return depth

    def annotate(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Labels of valid framed sequences (garbage for invalid ones: check ``validate`` first)."""
        words, n_words, _ = split_words(tokens)
        return self._annotate(words, n_words, np.asarray(tokens).shape[-1])

    def _annotate(self, words: np.ndarray, n_words: np.ndarray, max_len: int) -> dict[str, np.ndarray]:
        arity = self.arity_of_token[words]
        _, remaining, _ = self._count(arity, n_words)
        if self.config.postfix:  # reversed postfix is prefix (children reversed): same depths
            width = words.shape[1]
            idx = np.clip(n_words[:, None] - 1 - np.arange(width)[None, :], 0, width - 1)
            rev = np.take_along_axis(arity, idx, 1)
            depth = np.take_along_axis(self._prefix_depth(rev, n_words), idx, 1)
        else:
            depth = self._prefix_depth(arity, n_words)
        post = self.config.postfix
        return {
            "role": place(np.where(arity > 0, 2, 1), n_words, max_len, bos=0, eos=3),
            "arity": place(arity, n_words, max_len),
            "remaining": place(remaining, n_words, max_len, bos=0 if post else 1, eos=1 if post else 0),
            "depth": place(depth, n_words, max_len),
        }

    def _labels(self, der: Derivation, tokens: np.ndarray) -> dict[str, np.ndarray]:
        words = np.where(der.word_class >= 0, der.words, PAD)
        return self._annotate(words, der.n_words, self.max_len)
