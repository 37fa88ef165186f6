"""The pattern library: every predicate, generator, count and the selection validator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from zoo.config import ConfigError, IntRange, PatternSpace, ZooConfig, parse_config
from zoo.patterns.library import _catalog, pattern_library, selectable, validate_selection

DEFAULT = PatternSpace()


def seq(*texts: str) -> np.ndarray:
    """Letters to the int token array the predicates take: ``seq("ABA")`` is ``[[0, 1, 0]]``."""
    return np.array([[ord(c) - ord("A") for c in text] for text in texts], dtype=np.int64)


def enumerate_space(vocab: int, length: int) -> np.ndarray:
    codes = np.arange(vocab**length)
    return ((codes[:, None] // vocab ** np.arange(length - 1, -1, -1)) % vocab).astype(np.int8)


def small_space(vocab: int, length: int) -> PatternSpace:
    """A space with tokens that fit any vocabulary, built without the selection check."""
    return PatternSpace.model_construct(
        vocab_size=vocab, seq_len=length, trigram="ABA" if vocab < 3 else "ABC", start_token="A", end_token="B"
    )


EXAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "all_same": (["AAAAAAA", "GGGGGGG"], ["AAAAAAB", "BAAAAAA", "ABABABA"]),
    "palindrome": (["ABCDCBA", "AAAAAAA", "ABCCCBA"], ["ABCDCBB", "ABCDEFG", "BAAAAAA"]),
    "sorted_ascending": (["ABCDEFG", "AABBCCG", "AAAAAAA"], ["ABCDEGF", "GFEDCBA", "BAAAAAA"]),
    "sorted_descending": (["GFEDCBA", "GGFFAAA", "CCCCCCC"], ["ABCDEFG", "GFEDCAB", "AGGGGGG"]),
    "alternating": (["ABABABA", "GCGCGCG"], ["AAAAAAA", "ABABABB", "ABCABCA", "ABABABC"]),
    "contains_ABC": (["ABCAAAA", "GGGGABC", "AABCAAA"], ["ACBACBA", "ABDABDA", "CBACBAA", "AAAAAAA"]),
    "starts_with_A": (["AGGGGGG", "ABCDEFG"], ["BAAAAAA", "GAAAAAA"]),
    "ends_with_G": (["AAAAAAG", "GGGGGGG"], ["GGGGGGA", "AAAAAGF"]),
    "no_repeats": (["ABCDEFG", "GFEDCBA", "CAGBFDE"], ["ABCDEFA", "AABCDEF", "ABCDEGG"]),
    "majority": (["AAAABCD", "ABABABA", "GBGCGDG"], ["AAABBBC", "ABCDEFG", "AABBCCD"]),
    "first_equals_last": (["ABCDEFA", "GAAAAAG", "AAAAAAA"], ["ABCDEFG", "AAAAAAB"]),
    "mountain": (
        ["ABCDCBA", "ABCGFEA", "AGFEDCB", "ABCDEFA"],
        ["ABCDEFG", "GFEDCBA", "ABCCCBA", "ABACABA", "AABCBAA"],
    ),
    "valley": (["GFEAEFG", "DCBABCD", "GABCDEF"], ["GFEDCBA", "GFEEEFG", "GAGAGAG", "ABCDEFG"]),
    "zigzag": (["ACBDAFB", "CACADAG", "BABABAB"], ["ABCDEFG", "ACBDAFF", "ACBABCA", "AAAAAAA"]),
    "two_distinct": (["AAAAAAB", "ABABABA", "GGCCGGC"], ["AAAAAAA", "ABCABCA", "AABBCCA"]),
    "period_3": (["ABCABCA", "AABAABA", "GGGGGGG"], ["ABCABCB", "ABCBCAB", "ABABABA"]),
    "double_letter": (["AABCDEF", "ABCDEFF", "AAAAAAA"], ["ABCDEFG", "ABABABA", "ABCABCA"]),
}


@pytest.fixture(scope="module")
def default_members() -> dict[str, np.ndarray]:
    rows = np.asfortranarray(enumerate_space(DEFAULT.vocab_size, DEFAULT.seq_len))
    return {name: p.predicate(rows) for name, p in pattern_library(DEFAULT).items()}


def test_library_has_every_required_pattern_in_a_fixed_order() -> None:
    assert list(pattern_library(DEFAULT)) == list(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_predicate_on_hand_written_examples(name: str) -> None:
    positives, negatives = EXAMPLES[name]
    predicate = pattern_library(DEFAULT)[name].predicate
    assert predicate(seq(*positives)).tolist() == [True] * len(positives)
    assert predicate(seq(*negatives)).tolist() == [False] * len(negatives)


def test_names_follow_the_space_tokens() -> None:
    space = PatternSpace(start_token="C", end_token="B", trigram="BAD")
    library = pattern_library(space)
    assert {"starts_with_C", "ends_with_B", "contains_BAD"} <= set(library)
    assert library["contains_BAD"].predicate(seq("CCBADCC", "CCBACCC")).tolist() == [True, False]


def test_every_pattern_has_positives_and_negatives_on_the_default_space(default_members) -> None:
    for name, member in default_members.items():
        assert 0 < member.sum() < len(member), name


def test_no_two_patterns_share_a_positive_set_on_the_default_space(default_members) -> None:
    for (a, ma), (b, mb) in itertools.combinations(default_members.items(), 2):
        assert (ma != mb).any(), (a, b)


def test_counts_are_exact_on_the_default_space(default_members) -> None:
    library = pattern_library(DEFAULT)
    for name, member in default_members.items():
        assert library[name].count(DEFAULT.vocab_size, DEFAULT.seq_len) == member.sum(), name


@pytest.mark.parametrize("vocab,length", [(2, 5), (3, 4), (3, 6), (4, 5), (5, 3), (6, 4), (4, 8)])
def test_in_small_spaces_usable_patterns_are_counted_exactly_and_all_differ(vocab: int, length: int) -> None:
    space = small_space(vocab, length)
    rows = enumerate_space(vocab, length)
    members = {}
    for name, p in _catalog(space).items():
        member = p.predicate(rows)
        assert p.count(vocab, length) == member.sum(), name
        if name in pattern_library(space):
            members[name] = member
    for (a, ma), (b, mb) in itertools.combinations(members.items(), 2):
        assert (ma != mb).any(), (a, b)


def test_feasibility_rule_guarantees_positives_and_negatives_up_to_the_largest_space() -> None:
    for vocab in range(2, 27):
        for length in range(3, 25):
            for name, p in pattern_library(small_space(vocab, length)).items():
                assert 0 < p.count(vocab, length) < vocab**length, (name, vocab, length)


def test_infeasible_patterns_leave_the_library() -> None:
    space = PatternSpace(vocab_size=5, end_token="E")
    assert "no_repeats" not in pattern_library(space)
    assert "mountain" in pattern_library(space)
    assert "no_repeats" not in selectable(space)


@pytest.mark.parametrize("vocab,length", [(7, 7), (12, 10)])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_generator_makes_only_varied_positives(name: str, vocab: int, length: int) -> None:
    space = PatternSpace(vocab_size=vocab, seq_len=length)
    pattern = pattern_library(space)[name]
    x = pattern.generate(np.random.default_rng(0), 500, vocab, length)
    assert x.shape == (500, length) and x.dtype == np.int64
    assert x.min() >= 0 and x.max() < vocab
    assert pattern.predicate(x).all()
    assert len(np.unique(x, axis=0)) >= min(pattern.count(vocab, length), 50)


def test_generators_reach_every_member_of_a_small_pool() -> None:
    space = small_space(4, 5)
    rows = enumerate_space(4, 5)
    for name, p in pattern_library(space).items():
        size = p.count(4, 5)
        if size <= 100:
            seen = np.unique(p.generate(np.random.default_rng(1), 20_000, 4, 5), axis=0)
            assert len(seen) == size == p.predicate(rows).sum(), name


def test_validate_accepts_the_default_space() -> None:
    validate_selection(DEFAULT)
    assert len(selectable(DEFAULT)) >= DEFAULT.per_batch.max


@pytest.mark.parametrize(
    "overrides,start",
    [
        ({"names": ["nope"]}, "names: unknown pattern 'nope'; known: all_same, "),
        (
            {"vocab_size": 5, "end_token": "E", "names": ["no_repeats"]},
            "names: pattern 'no_repeats' needs vocab_size >= 7",
        ),
        ({"seq_len": 3, "names": ["palindrome", "all_same"]}, "names: pattern 'palindrome' needs seq_len >= 4"),
        ({"names": ["palindrome", "all_same", "palindrome"]}, "names: 'palindrome' listed twice"),
        ({"names": []}, "names: at least one pattern"),
        ({"per_batch": IntRange(min=2, max=14)}, "per_batch.max: 14 is more than the 10 selectable"),
        (
            {"names": ["all_same", "palindrome"], "per_batch": IntRange(min=2, max=3)},
            "per_batch.max: 3 is more than the 2",
        ),
        ({"per_batch": IntRange.model_construct(min=0, max=3)}, "per_batch.min: must be at least 1"),
        ({"val_size": 9}, "val_size: 9 leaves fewer than one positive per pattern"),
    ],
)
def test_validate_rejects_bad_selections(overrides: dict, start: str) -> None:
    with pytest.raises(ValueError) as error:
        validate_selection(DEFAULT.model_copy(update=overrides))
    assert str(error.value).startswith(start)


def test_config_layer_reports_the_pattern_field() -> None:
    with pytest.raises(ValidationError):
        ZooConfig(patterns={"names": ["nope"]})
    with pytest.raises(ConfigError, match=r"^patterns\.names: unknown pattern 'nope'"):
        parse_config({"patterns": {"names": ["nope"]}})
    with pytest.raises(ConfigError, match=r"^patterns\.per_batch\.max: "):
        parse_config({"patterns": {"names": ["all_same", "palindrome"]}})


def test_default_selection_leaves_out_the_excluded_patterns():
    space = PatternSpace()
    assert set(space.exclude) & set(selectable(space)) == set()
    assert "majority" in pattern_library(space)


def test_naming_a_pattern_overrides_the_exclusion():
    chosen = PatternSpace(names=["majority", "palindrome"], per_batch=IntRange(min=1, max=2))
    assert set(selectable(chosen)) == {"majority", "palindrome"}
