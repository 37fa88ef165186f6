"""The batch task: clean/degraded pairs, corruption, filtering, signatures and records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.factory.batch import probe_set, run_task
from zoo.factory.plan import batch_seed, clean_job, corrupt_labels, degraded_job, plan_batch
from zoo.factory.signatures import signatures, stat_names
from zoo.subjects.families import architecture_of
from zoo.subjects.families.mlp import FAMILY as MLP, Architecture
from zoo.subjects.population import from_weights, init_weights
from zoo_fixture import tiny_config

TINY = tiny_config(
    batches=4,
    patterns={"train_size": 200, "val_size": 60, "benchmark_size": 200},
    training={"epochs": 6},
    corruption={"degraded_per_batch": 3, "rate": {"min": 1.0, "max": 1.0}, "min_degradation": 0.1},
)


@pytest.fixture(scope="module")
def records():
    table, stats = run_task(TINY, (0, 1))
    return table.to_pylist(), stats


def test_batch_seeds_differ_by_id_and_run_seed():
    seeds = {batch_seed(0, b) for b in range(100)} | {batch_seed(1, b) for b in range(100)}
    assert len(seeds) == 200


def test_plan_is_a_pure_function_of_config_and_batch_id():
    a, b = plan_batch(TINY, 3), plan_batch(TINY, 3)
    assert (a.architecture, a.lr, a.init_seed, a.corruptions) == (b.architecture, b.lr, b.init_seed, b.corruptions)
    assert np.array_equal(a.data.train.tokens, b.data.train.tokens)


def test_clean_and_degraded_share_init_data_and_order():
    plan = plan_batch(TINY, 0)
    clean, degraded = clean_job(plan), degraded_job(plan, plan.corruptions[0])
    assert (clean.init_seed, clean.order_seed, clean.lr) == (degraded.init_seed, degraded.order_seed, degraded.lr)
    assert np.array_equal(clean.train_tokens, degraded.train_tokens)
    assert not np.array_equal(clean.train_labels, degraded.train_labels)


def test_corruption_flips_only_the_chosen_patterns_positives():
    plan = plan_batch(TINY, 1)
    corruption = plan.corruptions[0]
    split = plan.data.train
    flipped = split.labels != corrupt_labels(split, corruption, 0)
    assert flipped.any()
    assert (split.pattern[flipped] == corruption.pattern).all()
    assert (split.labels[flipped] == 1).all()


def test_corruption_rate_sets_the_share_flipped():
    plan = plan_batch(TINY, 1)
    split = plan.data.train
    half = type(plan.corruptions[0])(pattern=plan.corruptions[0].pattern, rate=0.5, seed=3)
    member = split.pattern == half.pattern
    share = (corrupt_labels(split, half, 0)[member] == 0).mean()
    assert 0.3 < share < 0.7


def test_pairs_under_the_threshold_are_dropped():
    strict = TINY.model_copy(update={"corruption": TINY.corruption.model_copy(update={"min_degradation": 1.01})})
    table, stats = run_task(strict, (0,))
    assert table.num_rows == 0
    assert stats.dropped == strict.corruption.degraded_per_batch


def test_every_kept_pair_meets_the_threshold(records):
    rows, stats = records
    assert rows and stats.kept == len(rows)
    assert stats.kept + stats.dropped == 2 * TINY.corruption.degraded_per_batch
    for row in rows:
        assert row["metrics"]["degradation"] >= TINY.corruption.min_degradation
        corrupted = row["patterns"].index(row["corrupted_pattern"])
        m = row["metrics"]
        assert m["clean_pattern_accuracy"][corrupted] - m["degraded_pattern_accuracy"][corrupted] == pytest.approx(
            m["degradation"], abs=1e-6
        )


def test_stored_metrics_are_those_of_the_rebuilt_model(records):
    rows, _ = records
    row = rows[0]
    plan = plan_batch(TINY, row["batch_id"])
    for which in ("clean", "degraded"):
        model = zoo.load_model(row, which=which)
        with torch.no_grad():
            out = model(torch.as_tensor(plan.data.benchmark.tokens)).numpy()
        accuracy = ((out > 0) == (plan.data.benchmark.labels > 0)).mean()
        assert accuracy == pytest.approx(row["metrics"][f"{which}_accuracy"], abs=1e-6)


def test_signature_has_a_row_per_neuron_and_a_column_per_statistic(records):
    rows, _ = records
    probe = probe_set(TINY)
    n_stats = len(stat_names(TINY.signature, probe.names))
    for row in rows:
        arch = architecture_of(row["architecture"])
        assert len(row["neuron_layer"]) == arch.n_neurons
        assert np.asarray(row["degraded_signature"]).shape == (arch.n_neurons, n_stats)


def test_batched_signature_equals_one_model_at_a_time():
    archs = [Architecture(2, (5, 5), "tanh", 7, 7), Architecture(1, (8,), "relu", 7, 7)]
    weights = [init_weights(a, i) for i, a in enumerate(archs)]
    probe = probe_set(TINY)
    together = signatures(MLP, from_weights(archs, weights), probe, TINY.signature)
    for arch, w, sig in zip(archs, weights, together):
        alone = signatures(MLP, from_weights([arch], [w]), probe, TINY.signature)[0]
        np.testing.assert_allclose(sig, alone, atol=1e-6)


def test_signature_mean_is_the_mean_activation_over_the_probe_set():
    arch = Architecture(1, (4,), "relu", 7, 7)
    w = init_weights(arch, 0)
    probe = probe_set(TINY)
    sig = signatures(MLP, from_weights([arch], [w]), probe, TINY.signature)[0]
    model = MLP.build_module(arch, w)
    with torch.no_grad():
        hidden = torch.relu(model.layers[0](model.encode(torch.as_tensor(probe.tokens))))
        out = model(torch.as_tensor(probe.tokens))
    np.testing.assert_allclose(sig[:4, 0], hidden.mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(sig[4, 0], out.mean().item(), atol=1e-5)
    assert list(MLP.neuron_layers(arch)) == [0, 0, 0, 0, 1]


def test_timings_measure_signatures_apart_from_training(records):
    rows, _ = records
    for row in rows:
        timings = row["timings"]
        assert 0 < timings["signature_s"] < timings["total_s"]
        assert timings["train_s"] + timings["signature_s"] <= timings["total_s"] + 1e-6
