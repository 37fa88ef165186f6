"""PatternSampler: fixed-size, correctly labelled, deterministic batches and a stable probe set."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from zoo.config import IntRange, PatternSpace
from zoo.patterns.sampler import BatchData, LabelledSet, PatternSampler, ProbeSet, sampler_for

SIZES = {"train_size": 500, "val_size": 200, "benchmark_size": 500, "hard_negative_share": 0.3}


def space(**fields) -> PatternSpace:
    """The pattern space these tests were written for: small splits, a visible hard-negative share."""
    return PatternSpace(**{**SIZES, **fields})


DEFAULT = space()
TWO = ("all_same", "palindrome")
FIVE = ("all_same", "alternating", "contains_ABC", "majority", "double_letter")
LARGE_POOLS = ("palindrome", "contains_ABC", "mountain", "zigzag")


@pytest.fixture(scope="module")
def sampler() -> PatternSampler:
    return sampler_for(DEFAULT)


@pytest.fixture(scope="module")
def sampled() -> PatternSampler:
    """Sampling mode on a space too large to list."""
    return sampler_for(space(vocab_size=12, seq_len=10))


def splits(batch: BatchData) -> list[LabelledSet]:
    return [batch.train, batch.val, batch.benchmark]


def rows(tokens: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(r) for r in tokens.tolist()}


def check_attribution(s: PatternSampler, batch: BatchData, data: LabelledSet) -> None:
    """Each positive matches its pattern and no selected pattern with a smaller pool; negatives match none."""
    match = np.stack([s.library[n].predicate(data.tokens) for n in batch.patterns], axis=1)
    rank = [(s.pool_sizes[n], s.names.index(n)) for n in batch.patterns]
    for i, p in enumerate(data.pattern.tolist()):
        if p < 0:
            assert not match[i].any()
        else:
            assert match[i, p]
            assert not any(match[i, q] for q in range(len(rank)) if rank[q] < rank[p])


def one_token_from_positive(s: PatternSampler, names: tuple[str, ...], row: np.ndarray) -> bool:
    v = s.space.vocab_size
    variants = np.repeat(row[None, :], len(row) * v, axis=0)
    variants[np.arange(len(variants)), np.repeat(np.arange(len(row)), v)] = np.tile(np.arange(v), len(row))
    return any(s.library[n].predicate(variants).any() for n in names)


def test_same_seed_gives_identical_batches_even_from_a_new_sampler(sampler: PatternSampler) -> None:
    a, b = sampler.batch_data(FIVE, 7), PatternSampler(DEFAULT).batch_data(FIVE, 7)
    for x, y in zip(splits(a), splits(b)):
        assert np.array_equal(x.tokens, y.tokens) and np.array_equal(x.pattern, y.pattern)
        assert np.array_equal(x.hard, y.hard)


def test_different_seeds_give_different_batches(sampler: PatternSampler) -> None:
    a, b = sampler.batch_data(FIVE, 7), sampler.batch_data(FIVE, 8)
    assert not np.array_equal(a.train.tokens, b.train.tokens)


def test_batches_are_identical_in_another_process(sampler: PatternSampler) -> None:
    code = (
        "import hashlib; from zoo.config import PatternSpace; from zoo.patterns.sampler import sampler_for;"
        "b = sampler_for(PatternSpace(**%r)).batch_data(%r, 11);"
        "print(hashlib.sha256(b.benchmark.tokens.tobytes() + b.train.pattern.tobytes()).hexdigest())" % (SIZES, FIVE)
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    b = sampler.batch_data(FIVE, 11)
    assert other == hashlib.sha256(b.benchmark.tokens.tobytes() + b.train.pattern.tobytes()).hexdigest()


@pytest.mark.parametrize("names", [TWO, FIVE])
def test_split_sizes_do_not_depend_on_the_pattern_count(sampler: PatternSampler, names: tuple[str, ...]) -> None:
    batch = sampler.batch_data(names, 1)
    assert batch.patterns == names
    for data, size in zip(splits(batch), (500, 200, 500)):
        assert data.tokens.shape == (size, 7) and data.tokens.dtype == np.int64
        assert data.pattern.dtype == np.int64 and data.labels.dtype == np.float32
        assert data.labels.sum() == size // 2
        counts = np.bincount(data.pattern[data.pattern >= 0], minlength=len(names))
        assert counts.max() - counts.min() <= 1 and counts[0] == counts.max()


def test_patterns_come_back_in_library_order(sampler: PatternSampler) -> None:
    assert sampler.batch_data(("palindrome", "all_same"), 1).patterns == TWO


@pytest.mark.parametrize("names", [TWO, FIVE, LARGE_POOLS])
def test_labels_follow_the_predicates_and_the_smallest_pool_rule(sampler: PatternSampler, names) -> None:
    batch = sampler.batch_data(names, 3)
    for data in splits(batch):
        check_attribution(sampler, batch, data)
        assert np.array_equal(data.labels, (data.pattern >= 0).astype(np.float32))


def test_overlaps_go_to_the_smallest_pool(sampler: PatternSampler) -> None:
    batch = sampler.batch_data(("all_same", "palindrome"), 2)
    same = (batch.train.tokens == batch.train.tokens[:, :1]).all(axis=1)
    assert set(batch.train.pattern[same].tolist()) == {0}


def test_negatives_are_distinct_within_and_across_splits(sampler: PatternSampler) -> None:
    batch = sampler.batch_data(FIVE, 4)
    negatives = [d.tokens[d.pattern < 0] for d in splits(batch)]
    everything = np.concatenate(negatives)
    assert len(np.unique(everything, axis=0)) == len(everything)


@pytest.mark.parametrize("names", [TWO, FIVE])
def test_hard_negatives_share_and_shape(sampler: PatternSampler, names: tuple[str, ...]) -> None:
    batch = sampler.batch_data(names, 5)
    for data in splits(batch):
        negatives = data.pattern < 0
        assert not data.hard[~negatives].any()
        assert abs(data.hard.sum() / negatives.sum() - DEFAULT.hard_negative_share) < 0.02
        for row in data.tokens[data.hard]:
            assert one_token_from_positive(sampler, names, row)


def test_hard_negative_share_follows_the_config() -> None:
    s = sampler_for(space(vocab_size=5, seq_len=6, end_token="E", hard_negative_share=0.0))
    assert not s.batch_data(LARGE_POOLS, 1).train.hard.any()


def test_benchmark_positives_are_held_out_from_large_pools(sampler: PatternSampler) -> None:
    batch = sampler.batch_data(LARGE_POOLS, 6)
    for j in range(len(LARGE_POOLS)):
        bench = rows(batch.benchmark.tokens[batch.benchmark.pattern == j])
        fit = rows(batch.train.tokens[batch.train.pattern == j]) | rows(batch.val.tokens[batch.val.pattern == j])
        assert bench and not bench & fit


def test_pools_smaller_than_the_split_needs_are_still_partitioned() -> None:
    """alternating has 42 members: with holdout_min_pool 20 it is cut into disjoint parts that repeat."""
    s = PatternSampler(space(holdout_min_pool=20))
    batch = s.batch_data(("palindrome", "alternating"), 3)
    parts = [rows(d.tokens[d.pattern == 1]) for d in splits(batch)]
    assert (batch.train.pattern == 1).sum() == 125 and len(parts[0]) < 42
    assert not parts[2] & (parts[0] | parts[1]) and not parts[0] & parts[1]


def test_small_pool_pattern_trains_and_benchmarks_on_its_whole_pool(sampler: PatternSampler) -> None:
    batch = sampler.batch_data(FIVE, 8)
    for data in splits(batch):
        assert len(rows(data.tokens[data.pattern == 0])) == 7


def test_select_patterns_draws_k_in_range_from_the_allowed_names() -> None:
    allowed = ["zigzag", "all_same", "valley", "majority", "period_3", "no_repeats"]
    s = PatternSampler(space(names=allowed, per_batch=IntRange(min=2, max=4)))
    rng = np.random.default_rng(0)
    drawn = [s.select_patterns(rng) for _ in range(200)]
    assert {len(d) for d in drawn} == {2, 3, 4}
    assert set().union(*drawn) == set(allowed)
    assert all(list(d) == sorted(d, key=s.names.index) for d in drawn)
    again = np.random.default_rng(0)
    assert drawn[:5] == [s.select_patterns(again) for _ in range(5)]


def test_selection_whose_pattern_has_no_positives_of_its_own_is_refused() -> None:
    """At seq_len 3, first_equals_last is exactly all_same plus alternating."""
    tiny = space(vocab_size=4, seq_len=3, end_token="D", per_batch=IntRange(min=3, max=3))
    s = PatternSampler(tiny)
    with pytest.raises(ValueError, match="first_equals_last"):
        s.batch_data(("all_same", "alternating", "first_equals_last"), 0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        s.batch_data(s.select_patterns(rng), 0)


def test_unknown_pattern_is_refused(sampler: PatternSampler) -> None:
    with pytest.raises(ValueError, match="unknown pattern 'nope'"):
        sampler.batch_data(("all_same", "nope"), 0)


def test_probe_set_covers_every_pattern_and_negatives(sampler: PatternSampler) -> None:
    probe = sampler.probe_set(0)
    assert probe.names == tuple(sampler.library)
    counts = np.bincount(probe.pattern + 1, minlength=len(probe.names) + 1)
    assert counts[0] == DEFAULT.probe_negatives
    assert (counts[1:] == DEFAULT.probe_per_pattern).all()
    match = np.stack([p.predicate(probe.tokens) for p in sampler.library.values()], axis=1)
    assert not match[probe.pattern < 0].any()
    rank = [(sampler.pool_sizes[n], i) for i, n in enumerate(probe.names)]
    for i, p in enumerate(probe.pattern.tolist()):
        if p >= 0:
            assert match[i, p] and not any(match[i, q] for q in range(len(rank)) if rank[q] < rank[p])


def test_probes_match_only_their_own_pattern_where_the_pool_allows(sampler: PatternSampler) -> None:
    """265 sorted_ascending sequences match no other selectable pattern (most others start with A or end with G)."""
    probe = sampler.probe_set(0)
    match = np.stack([sampler.library[n].predicate(probe.tokens) for n in sampler.selectable], axis=1)
    own = probe.pattern == probe.names.index("sorted_ascending")
    assert own.sum() == DEFAULT.probe_per_pattern
    assert (match[own].sum(1) == 1).all()


def test_sampled_probes_also_match_only_their_own_pattern(sampled: PatternSampler) -> None:
    """Pools drawn (not listed) hold more candidates than probes, so the preference works there too."""
    probe = sampled.probe_set(0)
    match = np.stack([sampled.library[n].predicate(probe.tokens) for n in sampled.selectable], axis=1)
    own = probe.pattern == probe.names.index("sorted_ascending")
    assert (match[own].sum(1) == 1).all()


def test_default_patterns_are_not_nested_so_a_pattern_set_is_identifiable(sampler: PatternSampler) -> None:
    """No default pattern's positives lie inside another's: a model's answers can tell every pattern apart."""
    members = {n: set(sampler._backend.members[sampler.names.index(n)].tolist()) for n in sampler.selectable}
    nested = [(a, b) for a in members for b in members if a != b and members[a] <= members[b]]
    assert nested == []
    assert {"all_same", "first_equals_last"} <= set(sampler.names) - set(sampler.selectable)


def test_probe_set_hash_is_stable_and_follows_content(sampler: PatternSampler) -> None:
    probe = sampler.probe_set(0)
    again = PatternSampler(DEFAULT).probe_set(0)
    assert probe.hash == again.hash and len(probe.hash) == 64
    assert np.array_equal(probe.tokens, again.tokens)
    assert sampler.probe_set(1).hash != probe.hash


def test_probe_set_round_trips_through_arrow(sampler: PatternSampler) -> None:
    probe = sampler.probe_set(0)
    table = probe.to_arrow()
    assert table.column_names == ["tokens", "pattern", "pattern_name"]
    assert table.column("pattern_name")[0].as_py() == probe.names[probe.pattern[0]]
    back = ProbeSet.from_arrow(table)
    assert back.names == probe.names and back.hash == probe.hash
    assert np.array_equal(back.tokens, probe.tokens) and np.array_equal(back.pattern, probe.pattern)


def test_tampered_probe_table_is_refused(sampler: PatternSampler) -> None:
    table = sampler.probe_set(0).to_arrow()
    pattern = table.column("pattern").to_numpy().copy()
    pattern[0] = pattern[-1]
    tampered = table.set_column(1, table.schema.field("pattern"), pa.array(pattern, type=pa.int16()))
    with pytest.raises(ValueError, match="hash mismatch"):
        ProbeSet.from_arrow(tampered.replace_schema_metadata(table.schema.metadata))


def test_sampler_is_cached_per_space(sampler: PatternSampler) -> None:
    assert sampler_for(space()) is sampler
    assert sampler_for(space(seq_len=6)) is not sampler


def test_sampling_mode_pool_sizes_match_enumeration(sampler: PatternSampler) -> None:
    listed_too_big = PatternSampler(space(exhaustive_limit=1000))
    assert not listed_too_big.enumerated and sampler.enumerated
    assert listed_too_big.pool_sizes == sampler.pool_sizes


@pytest.mark.parametrize(
    "names",
    [("all_same", "alternating", "mountain"), ("no_repeats", "majority", "zigzag", "period_3", "double_letter")],
)
def test_sampling_mode_gives_valid_batches(sampled: PatternSampler, names: tuple[str, ...]) -> None:
    assert not sampled.enumerated
    batch = sampled.batch_data(names, 9)
    negatives = []
    for data, size in zip(splits(batch), (500, 200, 500)):
        assert data.tokens.shape == (size, 10) and data.labels.sum() == size // 2
        check_attribution(sampled, batch, data)
        assert abs(data.hard.sum() / (size - size // 2) - DEFAULT.hard_negative_share) < 0.02
        for row in data.tokens[data.hard][:20]:
            assert one_token_from_positive(sampled, names, row)
        negatives.append(data.tokens[data.pattern < 0])
    everything = np.concatenate(negatives)
    assert len(np.unique(everything, axis=0)) == len(everything)
    bench = rows(batch.benchmark.tokens[batch.benchmark.pattern == 2])
    assert bench and not bench & rows(batch.train.tokens[batch.train.pattern == 2])


def test_sampling_mode_is_deterministic_and_has_a_full_probe_set(sampled: PatternSampler) -> None:
    a, b = sampled.batch_data(FIVE, 1), sampled.batch_data(FIVE, 1)
    assert np.array_equal(a.train.tokens, b.train.tokens)
    probe = sampled.probe_set(0)
    assert (np.bincount(probe.pattern + 1)[1:] == DEFAULT.probe_per_pattern).all()
    assert probe.hash == PatternSampler(sampled.space).probe_set(0).hash
