"""The population trainer: the same algorithm as one nn.Module per model, only batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.config import TrainingConfig
from zoo.subjects.families.mlp import Architecture
from zoo.subjects.mlp import build_model, flatten_model
from zoo.subjects import fit
from zoo.subjects.fit import TrainData, train_population
from zoo.subjects.population import from_weights, init_population, init_weights, logits, one_hot_inputs, to_weights
from zoo.subjects.reference import train_reference
from zoo.subjects.train import SubjectJob, plan_groups, train_group, train_subjects

V, L, S, VAL = 5, 5, 120, 40
ARCHS = [
    Architecture(1, (6,), "relu", V, L),
    Architecture(2, (9, 9), "gelu", V, L),
    Architecture(3, (7, 7, 7), "sigmoid", V, L),
    Architecture(2, (5, 5), "tanh", V, L),
    Architecture(1, (8,), "leaky_relu", V, L),
]
CONFIG = TrainingConfig(epochs=6, batch_size=32, patience=3)


def first_equals_last(tokens: np.ndarray) -> np.ndarray:
    return tokens[:, 0] == tokens[:, -1]


def make_jobs(archs=ARCHS, seed=0, rule=first_equals_last, lr=0.01) -> list[SubjectJob]:
    rng = np.random.default_rng(seed)
    jobs = []
    for i, arch in enumerate(archs):
        tokens = rng.integers(0, V, (S + VAL, L))
        labels = rule(tokens).astype(np.float32)
        jobs.append(
            SubjectJob(arch, init_seed=100 + i, order_seed=200 + i, lr=lr, train_tokens=tokens[:S],
                       train_labels=labels[:S], val_tokens=tokens[S:], val_labels=labels[S:])
        )
    return jobs


def train_weights(jobs, config=CONFIG, size=64) -> list[np.ndarray]:
    out: list = [None] * len(jobs)
    for group in train_subjects(jobs, config.model_copy(update={"population_size": size}), torch.device("cpu")):
        for slot, i in enumerate(group.indices):
            out[i] = to_weights(group.population)[slot]
    return out


def test_population_matches_the_sequential_reference():
    jobs = make_jobs()
    batched = train_weights(jobs)
    for job, weights in zip(jobs, batched):
        model, _, _ = train_reference(job.architecture, init_weights(job.architecture, job.init_seed),
                                      job.train_tokens, job.train_labels, job.val_tokens, job.val_labels,
                                      CONFIG, job.lr, job.order_seed)
        np.testing.assert_allclose(flatten_model(model), weights, atol=1e-5)


def test_same_population_is_bit_identical():
    jobs = make_jobs()
    for a, b in zip(train_weights(jobs), train_weights(jobs)):
        assert np.array_equal(a, b)


def test_other_batching_agrees_within_tolerance():
    """Population size and order change the float reduction order, not the model: within 1e-5."""
    jobs = make_jobs()
    together = train_weights(jobs, size=64)
    alone = train_weights(jobs, size=1)
    reversed_ = train_weights(jobs[::-1], size=64)[::-1]
    for a, b, c in zip(together, alone, reversed_):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)


def test_weights_round_trip_through_padding():
    weights = [init_weights(a, 7 + i) for i, a in enumerate(ARCHS)]
    pop = from_weights(ARCHS, weights)
    for a, b in zip(weights, to_weights(pop)):
        assert np.array_equal(a, b)


def test_population_logits_equal_the_rebuilt_modules():
    jobs = make_jobs()
    archs = [j.architecture for j in jobs]
    weights = train_weights(jobs)
    pop = from_weights(archs, weights)
    tokens = torch.as_tensor(np.stack([j.val_tokens for j in jobs]))
    batched = logits(pop, one_hot_inputs(tokens, V))
    for i, (arch, w) in enumerate(zip(archs, weights)):
        module = build_model(arch, w)
        out = module(tokens[i])
        assert out.shape == (VAL,)
        torch.testing.assert_close(out, batched[i], atol=1e-5, rtol=0)


def test_padded_parameters_stay_zero_after_training():
    jobs = make_jobs()
    pop = init_population([j.architecture for j in jobs], [j.init_seed for j in jobs])
    padding = pop.flat == 0
    before = pop.flat.clone()
    data = TrainData(
        one_hot_inputs(torch.as_tensor(np.stack([j.train_tokens for j in jobs])), V),
        torch.as_tensor(np.stack([j.train_labels for j in jobs])),
        one_hot_inputs(torch.as_tensor(np.stack([j.val_tokens for j in jobs])), V),
        torch.as_tensor(np.stack([j.val_labels for j in jobs])),
    )
    train_population(pop, data, CONFIG, [0.01] * len(jobs), [j.order_seed for j in jobs])
    assert (pop.flat[padding] == 0).all()
    assert not torch.equal(pop.flat[~padding], before[~padding])  # the real parameters did train


def test_early_stopping_freezes_a_model():
    """A model that stopped does not move however long the others go on."""
    job = make_jobs()[1]
    stuck = SubjectJob(**{**job.__dict__, "lr": 1e-9})  # never improves by min_delta: stops after patience
    config = TrainingConfig(epochs=8, batch_size=32, patience=2, min_delta=1e-3)
    short = train_subjects([stuck, job], config, torch.device("cpu"))[0]
    longer = train_subjects([stuck, job], config.model_copy(update={"epochs": 20}), torch.device("cpu"))[0]
    slot = short.indices.index(0)
    assert short.result.epochs[slot] == 3
    assert longer.result.epochs[slot] == 3
    assert np.array_equal(to_weights(short.population)[slot], to_weights(longer.population)[slot])


def test_dropping_stopped_models_leaves_every_model_as_it_was(monkeypatch):
    """Stopped models leave the computation: here the widest and the deepest go first, so the
    others go on re-padded narrower and shallower, and the dropped ones keep their best epoch."""
    widest, deepest = 1, 2  # gelu of width 9; sigmoid of depth 3
    jobs = make_jobs()
    for i in (widest, deepest):  # a high rate overfits soon: stopped early, best epoch not the last
        jobs[i] = SubjectJob(**{**jobs[i].__dict__, "lr": 0.3})
    config = TrainingConfig(epochs=12, batch_size=32, patience=2, min_delta=0.0)
    layouts = []
    compact = fit._Run.compact

    def spy(run, out):
        compact(run, out)
        layouts.append((run.pop.n_layers, run.pop.max_width))

    monkeypatch.setattr(fit._Run, "compact", spy)
    dropped = train_group(jobs, config, torch.device("cpu"))
    monkeypatch.setattr(fit, "COMPACT_SHARE", 2.0)  # never drop
    kept = train_group(jobs, config, torch.device("cpu"))
    assert any(depth < 3 and width < 9 for depth, width in layouts)
    assert max(dropped[1].epochs[[widest, deepest]]) < 12
    np.testing.assert_array_equal(dropped[1].epochs, kept[1].epochs)
    for a, b in zip(to_weights(dropped[0]), to_weights(kept[0])):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_stopped_model_is_rolled_back_to_its_best_epoch():
    job = make_jobs(lr=0.1)[1]  # a high rate overfits soon, so the best epoch is not the last
    config = TrainingConfig(epochs=30, batch_size=32, patience=2, min_delta=0.0)
    group = train_subjects([job], config, torch.device("cpu"))[0]
    model = build_model(job.architecture, to_weights(group.population)[0])
    with torch.no_grad():
        val = torch.nn.functional.binary_cross_entropy_with_logits(
            model(torch.as_tensor(job.val_tokens)), torch.as_tensor(job.val_labels))
    assert group.result.epochs[0] < 30
    assert val.item() == pytest.approx(float(group.result.val_loss[0]), abs=1e-5)


def test_groups_hold_one_depth_and_mix_activations_up_to_the_size_limit():
    archs = ARCHS * 3  # six models of depth 1 (relu, leaky_relu), six of depth 2, three of depth 3
    groups = plan_groups(archs, max_size=6)
    assert sorted(i for g in groups for i in g) == list(range(15))
    assert [len(g) for g in groups] == [6, 6, 3]
    assert all(len({archs[i].n_layers for i in g}) == 1 for g in groups)
    assert len({archs[i].activation for i in groups[0]}) == 2


def test_a_depth_over_the_size_limit_splits_into_near_equal_chunks():
    assert [len(g) for g in plan_groups(ARCHS * 3, max_size=4)] == [3, 3, 3, 3, 3]


def test_mixed_depths_in_one_population_train_like_separate_ones():
    """Populations padded to a deeper model (inference, callers' own groupings) stay exact."""
    jobs = make_jobs()
    together = [train_group(jobs, CONFIG, torch.device("cpu"))]
    apart = [train_group([job], CONFIG, torch.device("cpu")) for job in jobs]
    for slot, (pop, _) in enumerate(apart):
        np.testing.assert_allclose(to_weights(together[0][0])[slot], to_weights(pop)[0], atol=1e-5, rtol=0)


def test_training_learns_a_simple_rule():
    jobs = make_jobs(rule=lambda t: (t[:, 1] == 0) | (t[:, 3] == 2), lr=0.03)
    config = TrainingConfig(epochs=40, batch_size=32, patience=40)
    group = train_subjects(jobs[:2], config, torch.device("cpu"))[0]
    tokens = torch.as_tensor(np.stack([jobs[i].train_tokens for i in group.indices]))
    labels = np.stack([jobs[i].train_labels for i in group.indices])
    accuracy = ((logits(group.population, one_hot_inputs(tokens, V)).numpy() > 0) == (labels > 0)).mean(1)
    assert (accuracy > 0.9).all()


def test_one_hot_inputs_refuse_a_token_outside_the_vocabulary():
    np.testing.assert_array_equal(one_hot_inputs(torch.tensor([[1, 0]]), 2).numpy(), [[0, 1, 1, 0, 1]])
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 2\)"):
        one_hot_inputs(torch.tensor([[1, 2]]), 2)


def test_training_inputs_must_be_one_hot():
    """They are held as bytes: anything else would be truncated."""
    job = make_jobs()[0]
    pop = init_population([job.architecture], [job.init_seed])
    x = one_hot_inputs(torch.as_tensor(job.train_tokens[None]), V) * 0.5
    x_val = one_hot_inputs(torch.as_tensor(job.val_tokens[None]), V)
    data = TrainData(x, torch.as_tensor(job.train_labels[None]), x_val, torch.as_tensor(job.val_labels[None]))
    with pytest.raises(ValueError, match="one-hot"):
        train_population(pop, data, CONFIG, [0.01], [job.order_seed])


def test_population_trains_bit_for_bit_the_weights_it_trained_before():
    """Zoo records must not change between versions: a reordered sum (1e-7 apart after one
    step) grows over training into different models. ``tests/data/population_before_2026-12-04.npz``
    holds the weights this trainer gave these models before 2026-12-04."""
    from pathlib import Path

    before = np.load(Path(__file__).parent / "data" / "population_before_2026-12-04.npz")
    for i, weights in enumerate(train_weights(make_jobs())):
        np.testing.assert_array_equal(weights, before[f"arr_{i}"])
