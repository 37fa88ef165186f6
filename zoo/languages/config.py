"""Config models of the languages: one per grammar, a union discriminated on ``grammar``.

``LanguageConfig`` is what a language task's ``grammars`` list holds (``LanguageTask``, the
``language:`` block of ``ZooConfig``). ``parse_language`` validates a mapping and raises ``ConfigError``
with one line naming the field, e.g. ``p_nest: Input should be less than 1``,
``grammar: unknown grammar 'dyk'; known: dyck, expr, english`` or
``max_len: 3 is shorter than the shortest expr sentence with BOS and EOS (3 tokens)``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, ValidationError, model_validator

from zoo.config_types import ConfigError, Strict, format_validation_error

GRAMMARS = ("dyck", "expr", "english")


class _LanguageBase(Strict):
    max_len: int = Field(
        64, ge=3, le=512, description="tokens per sequence, BOS and EOS included; longer derivations are rejected"
    )

    def _check_rules(self) -> None:
        """Checks a grammar's parameters need before its rules can be built (raise ``ValueError``)."""

    @model_validator(mode="after")
    def _fits(self):
        from zoo.languages import language_for

        self._check_rules()

        shortest = language_for(self).grammar.min_words + 2
        if self.max_len < shortest:
            raise ValueError(
                f"max_len: {self.max_len} is shorter than the shortest {self.grammar} sentence "
                f"with BOS and EOS ({shortest} tokens)"
            )
        return self


class DyckConfig(_LanguageBase):
    """Dyck-k: ``S → S S (p_concat) | Bracket_i ((1 − p_concat)/k each)``;
    ``Bracket_i → o_i S c_i (p_nest) | o_i c_i``."""

    grammar: Literal["dyck"] = Field("dyck", description="which grammar: dyck")
    k: int = Field(2, ge=1, le=16, description="bracket types")
    p_nest: float = Field(0.3, gt=0.0, lt=1.0, description="probability that a bracket pair encloses a nested S")
    p_concat: float = Field(0.3, ge=0.0, lt=1.0, description="probability of S → S S (concatenation)")


class ExprConfig(_LanguageBase):
    """Expr: ``Expr → OpExpr (p_op) | Digit``;
    ``OpExpr → UnOp Expr | BinOp Expr Expr | TernOp Expr Expr Expr`` (a third each)."""

    grammar: Literal["expr"] = Field("expr", description="which grammar: expr")
    n_digits: int = Field(10, ge=1, le=100, description="operand tokens (digits 0..n_digits-1)")
    n_ops: int = Field(3, ge=1, le=26, description="operator tokens per arity (unary, binary, ternary)")
    p_op: float = Field(0.4, gt=0.0, lt=1.0, description="probability that an Expr is an operator expression")
    postfix: bool = Field(False, description="operators after their operands (default: prefix, operators first)")


class EnglishConfig(_LanguageBase):
    """The small English PCFG and its variants (see ``zoo.languages.english`` for the rule set)."""

    grammar: Literal["english"] = Field("english", description="which grammar: english")
    np_conj: float = Field(0.25, ge=0.0, lt=1.0, description="probability of NP → NP Conj NP (others rescaled)")
    vp_conj: float = Field(0.15, ge=0.0, lt=1.0, description="probability of VP → VP Conj VP (others rescaled)")
    relative_clauses: float = Field(
        0.0, ge=0.0, lt=1.0, description="probability of NP → NP RC, RC → Rel VP (0: none, the base grammar)"
    )
    prepositions: float = Field(
        0.0, ge=0.0, lt=1.0, description="probability of NP → NP PP and of VP → VP PP, PP → P NP (0: none)"
    )
    transitivity: bool = Field(
        False, description="split verbs into intransitive Vi (VP → Vi) and transitive Vt (VP → Vt NP)"
    )
    words_per_class: int = Field(10, ge=2, le=50, description="words in each open class (N, V, Adj, Pro, Adv, Conj, P)")
    word_alpha: float = Field(
        100.0, gt=0.0, description="Dirichlet concentration of word weights within a class (large: near uniform)"
    )
    word_seed: int = Field(0, ge=0, description="seed of the Dirichlet draw of word weights (part of the grammar)")

    def _check_rules(self) -> None:
        for field, rest in (("np_conj", ("relative_clauses", "prepositions")), ("vp_conj", ("prepositions",))):
            total = getattr(self, field) + sum(getattr(self, r) for r in rest)
            if total >= 1.0:
                raise ValueError(f"{field}: with {' and '.join(rest)} it leaves no probability for the base rules")


def describe_language(config) -> str:
    """A short label of a grammar and the parameters that set it apart from its defaults,
    e.g. ``dyck p_nest=0.5`` or ``expr postfix`` (``zoo inspect`` groups by it)."""
    defaults = type(config)()
    changed = [
        name for name in type(config).model_fields
        if name not in ("grammar", "max_len") and getattr(config, name) != getattr(defaults, name)
    ]  # fmt: skip
    parts = [config.grammar]
    for name in changed:
        value = getattr(config, name)
        parts.append(name if value is True else f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    if config.grammar == "dyck" and "p_nest" not in changed:
        parts.append(f"p_nest={config.p_nest:g}")
    return " ".join(parts)


def _grammar_tag(value) -> str:
    name = value.get("grammar") if isinstance(value, dict) else getattr(value, "grammar", None)
    return f"~{name}" if name in GRAMMARS else "~unknown"


LanguageConfig = Annotated[
    Union[  # noqa: UP007
        Annotated[DyckConfig, Tag("~dyck")],
        Annotated[ExprConfig, Tag("~expr")],
        Annotated[EnglishConfig, Tag("~english")],
    ],
    Discriminator(
        _grammar_tag,
        custom_error_type="unknown_grammar",
        custom_error_message=f"grammar: unknown grammar; known: {', '.join(GRAMMARS)}",
    ),
]


class GrammarShare(Strict):
    """One grammar of a language zoo (with its parameters) and the share of batches drawn from it."""

    share: float = Field(gt=0.0, le=1.0, description="share of batches trained on this grammar; the list's shares sum to 1")
    grammar: LanguageConfig = Field(
        description="the grammar and its parameters: {grammar: dyck | expr | english, ...} (zoo.languages.config)"
    )


class LanguageTask(Strict):
    """A language zoo: transformers trained by next-token loss on formal languages (``zoo.languages``).

    Per batch a grammar is drawn by share, then an architecture from ``architecture`` (the
    transformer family) and a learning rate; ``models_per_batch`` models (own initialization
    and data order, same data) are trained on it. ``patterns`` and ``corruption`` are not read."""

    grammars: list[GrammarShare] = Field(min_length=1, description="the grammars batches draw from, with shares")
    assignment: Literal["draw", "cycle"] = Field(
        "draw",
        description="draw: each batch draws its grammar by share; cycle: batch b trains grammar b mod len(grammars) "
        "(every grammar equally often, even in a small zoo; the shares must then be equal)",
    )
    models_per_batch: int = Field(
        2, ge=1, le=1024, description="models trained per batch on the same sampled corpus (own seeds): one record each"
    )
    train_size: int = Field(2000, ge=2, le=10_000_000, description="training sentences sampled per batch")
    val_size: int = Field(
        256, ge=2, le=1_000_000, description="validation sentences per batch (early stopping, loss, legal-next accuracy)"
    )
    generations: int = Field(
        128, ge=128, le=100_000, description="sentences each model samples from BOS at temperature 1 to measure validity"
    )
    reference_size: int = Field(
        2048, ge=128, le=1_000_000, description="grammar sentences the generated length distribution is compared with"
    )
    probe_size: int = Field(
        256, ge=8, le=100_000, description="sentences of each grammar's fixed probe corpus (signatures are read on it)"
    )

    @model_validator(mode="after")
    def _shares(self) -> LanguageTask:
        total = sum(part.share for part in self.grammars)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"grammars: the shares sum to {total:g}, not 1")
        if self.assignment == "cycle" and max(p.share for p in self.grammars) - min(p.share for p in self.grammars) > 1e-9:
            raise ValueError("assignment: cycle trains every grammar equally often; give them equal shares")
        return self


def parse_language(data: dict) -> DyckConfig | ExprConfig | EnglishConfig:
    """Validate one grammar's mapping; ``ConfigError`` with one line naming the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"language config must be a mapping, got {type(data).__name__}")
    if "grammar" not in data:
        raise ConfigError(f"grammar: missing; known: {', '.join(GRAMMARS)}")
    if data.get("grammar") not in GRAMMARS:
        raise ConfigError(f"grammar: unknown grammar {data.get('grammar')!r}; known: {', '.join(GRAMMARS)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def _adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(LanguageConfig)


_ADAPTER = _adapter()
