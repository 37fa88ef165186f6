"""Formal languages: rule frequencies, validators (hand-written and against nltk), labels, configs."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.config_types import ConfigError
from zoo.languages import BOS, EOS, PAD, language_for, parse_language, probe_corpus
from zoo.languages.grammar import derive


def lang(**data):
    return language_for(parse_language(data))


def encode(language, sentence: str, max_len: int | None = None) -> np.ndarray:
    words = sentence.split()
    row = [BOS, *(language.grammar.token_of[w] for w in words), EOS]
    width = max_len or len(row)
    return np.array([row + [PAD] * (width - len(row))])


def corrupt(language, tokens: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random edit per sequence: substitute, delete, insert or swap a word."""
    out = tokens.copy()
    n_vocab = len(language.vocab)
    for i, k in enumerate(lengths):
        words = list(out[i, 1 : k - 1])
        op = rng.integers(4)
        at = int(rng.integers(len(words)))
        if op == 0:
            words[at] = int(rng.integers(3, n_vocab))
        elif op == 1 and len(words) > 1:
            del words[at]
        elif op == 2 and len(words) < tokens.shape[1] - 2:
            words.insert(at, int(rng.integers(3, n_vocab)))
        elif len(words) > 1:
            j = min(at + 1, len(words) - 1)
            words[at], words[j] = words[j], words[at]
        out[i] = PAD
        out[i, 0], out[i, 1 : len(words) + 1], out[i, len(words) + 1] = BOS, words, EOS
    return out


# --- rule frequencies ------------------------------------------------------------------------


def rule_frequencies(sample, grammar) -> list[tuple[str, float, float]]:
    totals = sample.rule_counts.sum(0)
    out = []
    for i, rule in enumerate(grammar.rules):
        same = [j for j, r in enumerate(grammar.rules) if r.lhs == rule.lhs]
        n = totals[same].sum()
        out.append((f"{rule.lhs} -> {' '.join(rule.rhs)}", totals[i] / max(n, 1), rule.prob, n))
    return out


@pytest.mark.parametrize(
    "data",
    [
        {"grammar": "dyck", "p_nest": 0.3},
        {"grammar": "dyck", "p_nest": 0.5, "k": 3},
        {"grammar": "expr"},
        {"grammar": "expr", "postfix": True},
        {"grammar": "english"},
        {"grammar": "english", "relative_clauses": 0.1, "prepositions": 0.1, "transitivity": True},
    ],
)
def test_rule_frequencies_match_the_stated_probabilities(data):
    language = lang(**data, max_len=256)  # a generous cap: conditioning on it barely biases the rules
    sample = language.sample(3000, seed=5)
    assert sample.acceptance > 0.97
    for name, seen, stated, n in rule_frequencies(sample, language.grammar):
        if n == 0:  # a nonterminal the variant never reaches (RC, PP in the base English grammar)
            continue
        # four binomial standard errors, plus 0.01 for the cap's conditioning
        assert abs(seen - stated) < 4 * np.sqrt(stated * (1 - stated) / n) + 0.01, (name, seen, stated, n)


def test_dyck_rule_frequencies_read_from_the_tokens():
    """Counted from the brackets alone: a pair is nested unless its close follows at once;
    S → S S is used (pairs − 1 − nested pairs) times."""
    language = lang(grammar="dyck", p_nest=0.3, max_len=256)
    sample = language.sample(3000, seed=1)
    opens = (sample.labels["kind"] == 1)
    closes_next = np.zeros_like(opens)
    closes_next[:, :-1] = opens[:, :-1] & (sample.labels["kind"][:, 1:] == 2)
    pairs, flat = opens.sum(), closes_next.sum()
    nested = pairs - flat
    concat = pairs - len(sample) - nested
    assert abs(nested / pairs - 0.3) < 0.02
    assert abs(concat / (concat + pairs) - 0.3) < 0.02
    top = sample.tokens[:, 1]  # bracket types split evenly
    assert abs((top == 3).mean() - 0.5) < 0.04


def test_expr_operator_share_and_arity_split_from_the_tokens():
    language = lang(grammar="expr", max_len=256)
    sample = language.sample(3000, seed=2)
    role, arity = sample.labels["role"], sample.labels["arity"]
    words = (role == 1) | (role == 2)
    assert abs((role == 2).sum() / words.sum() - 0.4) < 0.02  # every token is one Expr node
    ops = arity[role == 2]
    for a in (1, 2, 3):
        assert abs((ops == a).mean() - 1 / 3) < 0.03


def test_english_word_choice_is_near_uniform_and_seeded():
    language = lang(grammar="english")
    weights = [np.array(c.weights) for c in language.grammar.classes if len(c.words) == 10]
    assert all(abs(w.sum() - 1) < 1e-9 and w.min() > 0.05 and w.max() < 0.15 for w in weights)
    other = lang(grammar="english", word_seed=1)
    assert language.grammar.classes[0].weights != other.grammar.classes[0].weights
    sample = language.sample(4000, seed=0)
    nouns = language.grammar.classes[0]
    first = language.grammar.token_of[nouns.words[0]]
    counts = np.bincount(sample.tokens[sample.labels["pos"] == 2] - first, minlength=10)
    assert np.abs(counts / counts.sum() - np.array(nouns.weights)).max() < 0.02


# --- validators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"grammar": "dyck", "p_nest": 0.3},
        {"grammar": "dyck", "p_nest": 0.5, "k": 4},
        {"grammar": "expr"},
        {"grammar": "expr", "postfix": True, "n_ops": 2},
        {"grammar": "english"},
        {"grammar": "english", "relative_clauses": 0.2, "prepositions": 0.15},
        {"grammar": "english", "transitivity": True, "np_conj": 0.0, "relative_clauses": 0.2},
    ],
)
def test_every_sampled_sequence_validates(data):
    language = lang(**data, max_len=48)
    sample = language.sample(5000, seed=0)
    assert sample.lengths.max() <= 48
    assert language.validate(sample.tokens).all()
    assert ((sample.tokens > 0) == (np.arange(48)[None] < sample.lengths[:, None])).all()


INVALID = {
    "dyck": ["( ]", "(", ")", ") (", "( ) )", "( [ ) ]", "[ ( ] )"],
    "expr": ["b0 1", "1 2", "u0", "b0 1 2 3", "t0 1 2", "1 u0", "b0 b0 1 2"],
    "expr-postfix": ["1 b0", "1 2", "u0", "1 2 b0 3", "u0 1", "1 2 3 t0 4"],
    "english": [
        "dog sees", "big sees", "he", "he sees and", "he quickly sees", "he sees he he", "big dog big",
        "he and sees", "he sees that sees", "he in it sees", "sees he", "he sees and big",
    ],
}
VALID = {
    "dyck": ["( )", "( [ ] ) [ ]", "[ [ ( ) ] ]"],
    "expr": ["1", "u0 1", "b0 1 2", "t0 1 b1 2 3 u2 4"],
    "expr-postfix": ["1", "1 u0", "1 2 b0", "1 2 3 b1 4 u2 t0"],
    "english": ["he sees", "big dog sees it quickly", "he and she sees and runs", "old king sees big cat and it"],
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_hand_written_sequences(name):
    data = {"grammar": "expr", "postfix": True} if name == "expr-postfix" else {"grammar": name}
    language = lang(**data)
    for sentence in INVALID[name]:
        assert not language.validate(encode(language, sentence, 16))[0], sentence
    for sentence in VALID[name]:
        assert language.validate(encode(language, sentence, 16))[0], sentence


def test_english_variants_in_the_validator():
    rc = lang(grammar="english", relative_clauses=0.2, prepositions=0.1, transitivity=True)
    ok = ["he that sleeps sees it", "big dog in it sleeps", "he sleeps in it quickly", "he sees it that sleeps"]
    bad = ["he sees", "he sleeps it", "he sees it that", "he that sleeps", "he sleeps that sleeps"]
    for sentence in ok:
        assert rc.validate(encode(rc, sentence, 16))[0], sentence
    for sentence in bad:
        assert not rc.validate(encode(rc, sentence, 16))[0], sentence
    base = lang(grammar="english")  # no relative clauses or prepositions in the base grammar
    assert not base.validate(encode(base, "he that sees sees", 16))[0]
    assert not base.validate(encode(base, "he sees in it", 16))[0]


def test_framing_is_checked():
    language = lang(grammar="dyck")
    good = encode(language, "( )", 8)
    assert language.validate(good)[0]
    no_eos = good.copy()
    no_eos[0, 3] = PAD
    no_bos = good.copy()
    no_bos[0, 0] = PAD
    pad_inside = encode(language, "( )", 8)
    pad_inside[0, 1:4] = [PAD, 3, EOS]
    out_of_vocab = good.copy()
    out_of_vocab[0, 1] = len(language.vocab)
    after_eos = good.copy()
    after_eos[0, 4:] = 5  # ignored: generations may run on past EOS
    empty = np.array([[BOS, EOS, PAD]])
    checks = language.validate(np.concatenate([no_eos, no_bos, pad_inside, out_of_vocab, after_eos]))
    assert checks.tolist() == [False, False, False, False, True]
    assert not language.validate(empty)[0]


# --- the nltk oracle -------------------------------------------------------------------------


def oracle(language):
    nltk = pytest.importorskip("nltk")
    grammar = nltk.PCFG.fromstring(language.grammar.nltk_pcfg())
    parser = nltk.parse.chart.BottomUpLeftCornerChartParser(grammar)

    def accepts(words: list[str]) -> bool:
        if not words:
            return False
        chart = parser.chart_parse(words)
        return any(True for _ in chart.select(start=0, end=len(words), is_complete=True, lhs=grammar.start()))

    return accepts


@pytest.mark.parametrize(
    "data, n",
    [
        ({"grammar": "dyck", "p_nest": 0.4, "max_len": 20}, 1200),
        ({"grammar": "expr", "max_len": 20}, 1200),
        ({"grammar": "expr", "postfix": True, "max_len": 20}, 1200),
        ({"grammar": "english", "max_len": 16}, 500),
        ({"grammar": "english", "relative_clauses": 0.2, "prepositions": 0.15, "max_len": 16}, 500),
        ({"grammar": "english", "transitivity": True, "relative_clauses": 0.2, "max_len": 16}, 500),
    ],
)
def test_validators_agree_with_the_nltk_chart_parser(data, n):
    language = lang(**data)
    accepts = oracle(language)
    sample = language.sample(n, seed=11)
    bad = corrupt(language, sample.tokens, sample.lengths, np.random.default_rng(3))
    tokens = np.concatenate([sample.tokens, bad])
    ours = language.validate(tokens)
    theirs = np.array([accepts(w) for w in language.words(tokens)])
    assert theirs[:n].all()
    assert (ours == theirs).all(), [language.words(tokens[i : i + 1])[0] for i in np.flatnonzero(ours != theirs)[:5]]
    assert 0.05 < theirs[n:].mean() < 0.95  # the corrupted half holds both kinds


def test_nltk_viterbi_parser_agrees_on_a_few():
    nltk = pytest.importorskip("nltk")
    language = lang(grammar="english", relative_clauses=0.2, prepositions=0.1, max_len=12)
    parser = nltk.ViterbiParser(nltk.PCFG.fromstring(language.grammar.nltk_pcfg()))
    sample = language.sample(60, seed=4)
    tokens = np.concatenate([sample.tokens, corrupt(language, sample.tokens, sample.lengths, np.random.default_rng(0))])
    theirs = [any(True for _ in parser.parse(w)) for w in language.words(tokens)]
    assert language.validate(tokens).tolist() == theirs


# --- legal continuations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"grammar": "dyck", "k": 3},
        {"grammar": "expr"},
        {"grammar": "expr", "postfix": True},
        {"grammar": "english", "relative_clauses": 0.2, "prepositions": 0.1},
        {"grammar": "english", "transitivity": True, "vp_conj": 0.0},
    ],
)
def test_a_sequence_is_valid_iff_every_token_is_a_legal_continuation(data):
    language = lang(**data, max_len=24)
    sample = language.sample(400, seed=2)
    tokens = np.concatenate([sample.tokens, corrupt(language, sample.tokens, sample.lengths, np.random.default_rng(1))])
    lengths = (tokens > 0).sum(1)
    legal = language.legal_next(tokens)
    follows = np.take_along_axis(legal[:, :-1], tokens[:, 1:, None], 2)[..., 0]
    inside = np.arange(tokens.shape[1] - 1)[None, :] < (lengths - 1)[:, None]
    assert ((follows | ~inside).all(1) == language.validate(tokens)).all()
    assert not legal[np.arange(len(tokens)), lengths - 1].any()  # nothing after EOS


def test_legal_continuations_on_hand_worked_prefixes():
    dyck = lang(grammar="dyck")
    legal = dyck.legal_next(encode(dyck, "( [ ] ) ( ]", 10))[0]
    name = lambda row: sorted(dyck.vocab[v] for v in np.flatnonzero(row))  # noqa: E731
    assert name(legal[0]) == ["(", "["] and name(legal[2]) == ["(", "[", "]"] and name(legal[4]) == ["(", "<eos>", "["]
    assert name(legal[5]) == ["(", ")", "["] and not legal[6:].any()  # "]" does not close "(": nothing follows
    expr = lang(grammar="expr", postfix=True)
    legal = expr.legal_next(encode(expr, "1 2 b0"))[0]
    assert not legal[1, expr.grammar.token_of["b0"]] and legal[2, expr.grammar.token_of["b0"]]
    assert legal[3, EOS] and not legal[2, EOS]
    english = lang(grammar="english")
    legal = english.legal_next(encode(english, "big dog sees"))[0]

    def pos(row):
        classes = english.grammar.class_of_token[np.flatnonzero(row)]
        return {english.grammar.classes[c].name for c in classes if c >= 0}

    assert pos(legal[1]) == {"N"} and pos(legal[2]) == {"V", "Conj"} and legal[3, EOS]
    assert pos(legal[3]) == {"Adj", "Pro", "Adv", "Conj"}
    no_np_conj = lang(grammar="english", np_conj=0.0)
    legal = no_np_conj.legal_next(encode(no_np_conj, "he sees"))[0]
    conj = no_np_conj.grammar.token_of["and"]
    assert not legal[1, conj] and legal[2, conj]  # only a VP can be conjoined, and none is open after "he"


# --- labels ----------------------------------------------------------------------------------


def names(language, tokens, label):
    labels = language.annotate(tokens)
    values = next(s for s in language.specs if s.name == label).values
    return [values[v] if v >= 0 else None for v in labels[label][0]][: int((tokens[0] > 0).sum())]


def test_dyck_labels_on_a_hand_worked_example():
    language = lang(grammar="dyck")
    tokens = encode(language, "( [ ] ) [ ]", 10)
    assert names(language, tokens, "kind") == ["bos", "open", "open", "close", "close", "open", "close", "eos"]
    assert names(language, tokens, "depth") == ["0", "1", "2", "1", "0", "1", "0", "0"]
    assert names(language, tokens, "top") == ["none", "(", "[", "(", "none", "[", "none", "none"]
    assert language.annotate(tokens)["depth"][0, 8:].tolist() == [-1, -1]


def test_expr_labels_on_hand_worked_examples():
    prefix, postfix = lang(grammar="expr"), lang(grammar="expr", postfix=True)
    tokens = encode(prefix, "b0 u0 3 t0 1 2 5")
    assert names(prefix, tokens, "role")[1:-1] == ["operator", "operator", "operand", "operator"] + ["operand"] * 3
    assert names(prefix, tokens, "arity") == [None, "2", "1", "0", "3", "0", "0", "0", None]
    assert names(prefix, tokens, "remaining") == ["1", "2", "2", "1", "3", "2", "1", "0", "0"]
    assert names(prefix, tokens, "depth") == [None, "0", "1", "2", "1", "2", "2", "2", None]
    tokens = encode(postfix, "3 u0 1 2 5 t0 b0")  # the same tree
    assert names(postfix, tokens, "arity") == [None, "0", "1", "0", "0", "0", "3", "2", None]
    assert names(postfix, tokens, "remaining") == ["0", "1", "1", "2", "3", "4", "2", "1", "1"]
    assert names(postfix, tokens, "depth") == [None, "2", "1", "2", "2", "2", "1", "0", None]


@pytest.mark.parametrize("postfix", [False, True])
def test_expr_depth_matches_the_derivation(postfix):
    """Tree depth read from the tokens equals the sampler's: Expr and OpExpr alternate, so a
    node's class symbol sits at derivation depth 2·depth + 1."""
    language = lang(grammar="expr", postfix=postfix)
    der = derive(language.grammar, 2000, language.cap, np.random.default_rng(0))
    labels = language._annotate(np.where(der.word_class >= 0, der.words, 0), der.n_words, language.max_len)
    inside = der.word_class >= 0
    assert (labels["depth"][:, 1 : 1 + language.cap][inside] == (der.depth[inside] - 1) // 2).all()


def test_english_labels_on_hand_worked_derivations():
    """Sentences with one parse: their labels are fixed by the tree."""
    language = lang(grammar="english", relative_clauses=0.3)
    sample = language.sample(3000, seed=0)
    pos = language.specs[0].values
    want = {
        ("Adj", "N", "V"): (["NP", "NP", "VP"], ["2", "2", "2"], ["0", "0", "0"]),
        ("Pro", "Rel", "V", "V"): (["NP", "RC", "VP", "VP"], ["3", "3", "4", "2"], ["0", "1", "1", "0"]),
        ("Pro", "V", "Pro", "Rel", "V"): (
            ["NP", "VP", "NP", "RC", "VP"], ["2", "2", "4", "4", "5"], ["0", "0", "0", "1", "1"]),
    }
    seen = set()
    for row in range(len(sample)):
        classes = tuple(p for p in sample.label_names("pos", row)[1:-1])
        if classes in want:
            seen.add(classes)
            parent, depth, clause = want[classes]
            assert sample.label_names("parent", row)[1:-1] == parent
            assert sample.label_names("depth", row)[1:-1] == depth
            assert sample.label_names("clause", row)[1:-1] == clause
            assert sample.label_names("pos", row)[0] == "bos" and sample.label_names("parent", row)[0] is None
    assert seen == set(want)
    assert "Rel" in pos


def test_english_label_invariants():
    language = lang(grammar="english", relative_clauses=0.2, prepositions=0.1)
    sample = language.sample(3000, seed=3)
    spec = {s.name: s.values for s in sample.specs}
    pos, parent, depth = (sample.labels[k] for k in ("pos", "parent", "depth"))
    of = lambda values, name: values.index(name)  # noqa: E731
    assert set(parent[pos == of(spec["pos"], "Rel")]) == {of(spec["parent"], "RC")}
    assert set(parent[pos == of(spec["pos"], "P")]) == {of(spec["parent"], "PP")}
    assert set(parent[pos == of(spec["pos"], "Conj")]) == {of(spec["parent"], "NP"), of(spec["parent"], "VP")}
    adj = np.argwhere(pos == of(spec["pos"], "Adj"))
    assert (pos[adj[:, 0], adj[:, 1] + 1] == of(spec["pos"], "N")).all()
    assert (depth[adj[:, 0], adj[:, 1] + 1] == depth[adj[:, 0], adj[:, 1]]).all()
    assert depth.max() < len(spec["depth"]) and sample.labels["clause"].max() < len(spec["clause"])
    has_rel = (pos == of(spec["pos"], "Rel")).sum(1)
    assert (sample.labels["clause"].max(1) == has_rel).all()  # one clause per relative pronoun


def test_sampled_labels_have_the_token_shape_and_mark_padding():
    for data in ({"grammar": "dyck"}, {"grammar": "expr"}, {"grammar": "english"}):
        sample = lang(**data, max_len=32).sample(500, seed=0)
        pad = sample.tokens == PAD
        for name, values in sample.labels.items():
            assert values.shape == sample.tokens.shape
            assert (values[pad] == -1).all() and values.max() < len(sample.spec(name).values)


# --- determinism and the probe corpus --------------------------------------------------------


@pytest.mark.parametrize("grammar", ["dyck", "expr", "english"])
def test_sampling_is_a_function_of_config_n_and_seed(grammar):
    language = lang(grammar=grammar)
    a, b, c = language.sample(700, 9), language.sample(700, 9), language.sample(700, 10)
    assert (a.tokens == b.tokens).all() and all((a.labels[k] == b.labels[k]).all() for k in a.labels)
    assert not (a.tokens == c.tokens).all()


def test_probe_corpus_is_fixed_and_hashed():
    config = parse_language({"grammar": "english", "relative_clauses": 0.1})
    a, b = probe_corpus(config, seed=0), probe_corpus(config, seed=0)
    assert a.hash == b.hash and (a.tokens == b.tokens).all() and len(a) == 256
    assert set(a.labels) == {"pos", "parent", "depth", "clause"}
    assert probe_corpus(config, seed=1).hash != a.hash
    other = parse_language({"grammar": "english", "relative_clauses": 0.1, "word_seed": 1})
    assert probe_corpus(other, seed=0).hash != a.hash


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, field",
    [
        ({"grammar": "dyk"}, "grammar"),
        ({"k": 2}, "grammar"),
        ({"grammar": "dyck", "p_nest": 0.0}, "p_nest"),
        ({"grammar": "dyck", "p_nest": 1.0}, "p_nest"),
        ({"grammar": "dyck", "p_nest": 1.5}, "p_nest"),
        ({"grammar": "dyck", "max_len": 3}, "max_len"),
        ({"grammar": "expr", "max_len": 2}, "max_len"),
        ({"grammar": "english", "max_len": 3}, "max_len"),
        ({"grammar": "english", "np_conj": 0.5, "relative_clauses": 0.5}, "np_conj"),
        ({"grammar": "expr", "colour": 1}, "colour"),
        ({"grammar": "dyck", "k": 0}, "k"),
    ],
)
def test_bad_configs_give_one_line_naming_the_field(data, field):
    with pytest.raises(ConfigError) as error:
        parse_language(data)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{field}:" if field != "colour" else "colour"), message


def test_shortest_sentences_and_config_defaults():
    assert parse_language({"grammar": "dyck", "max_len": 4}).max_len == 4
    assert parse_language({"grammar": "expr", "max_len": 3}).max_len == 3
    assert lang(grammar="english", transitivity=True).grammar.min_words == 2
    dyck = parse_language({"grammar": "dyck"})
    assert (dyck.k, dyck.p_nest, dyck.p_concat, dyck.max_len) == (2, 0.3, 0.3, 64)
    models = (type(dyck), type(parse_language({"grammar": "english"})), type(parse_language({"grammar": "expr"})))
    fields = [f for model in models for f in model.model_fields.values()]
    assert all(f.description for f in fields)
