"""SAE / transcoder populations: equality with a per-SAE loop, padding, hygiene, storage, controls, autointerp."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from zoo.readers.sae import (
    SAEError, SAESpec, Stream, TrainConfig, load_coder, load_population, save_population, train_population,
)  # fmt: skip
from zoo.readers.sae.autointerp import score_latents, summarize
from zoo.readers.sae.loop import train_loop
from zoo.readers.sae.metrics import cross_seed_overlap, fvu, linear_sum_assignment, match_directions
from zoo.readers.sae.synthetic import planted_dictionary

FAST = dict(batch_size=64, eval_every=10, patience=None, threads=1, bucket=False)
NAMES = ("encoder.weight", "encoder.bias", "W_dec", "b_dec")


def _streams():
    a = planted_dictionary(n_features=32, d=16, tokens=2000, val_tokens=400, seed=0)
    b = planted_dictionary(n_features=24, d=12, tokens=1500, val_tokens=300, seed=1)
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(16, 10))
    tc = Stream("tc", a.train, a.val, target_train=np.tanh(a.train @ proj), target_val=np.tanh(a.val @ proj))
    return [a.stream("a"), b.stream("b"), tc]


MIXED = [
    SAESpec("a", 64, k=4, seed=0),
    SAESpec("b", 48, k=6, seed=1, auxk=1 / 32),
    SAESpec("a", 32, k=3, seed=2, lr=1e-2),
    SAESpec("tc", 40, k=5, transcode=True, seed=0),
    SAESpec("tc", 40, k=5, transcode=True, skip=True, seed=0),
    SAESpec("a", 64, kind="relu", alpha=0.5, seed=0),
    SAESpec("b", 32, kind="relu", alpha=1.0, seed=3, auxk=0.1),
    SAESpec("a", 64, kind="batchtopk", k=4, seed=0),
    SAESpec("b", 24, kind="batchtopk", k=3, seed=0, auxk=0.1),
]


def _weights(coder) -> dict[str, torch.Tensor]:
    names = NAMES + (("W_skip",) if coder.spec.skip else ())
    return {n: coder.weights[n] for n in names}


def test_population_equals_per_sae_loop():
    streams = _streams()
    config = TrainConfig(steps=25, dead_tokens=150, **FAST)
    population = train_population(streams, MIXED, config)
    loop, _ = train_loop(streams, MIXED, config)
    for trained, module in zip(population.coders, loop):
        for name, value in _weights(trained).items():
            torch.testing.assert_close(value, module.get_parameter(name).detach(), atol=2e-5, rtol=1e-4)
        if trained.spec.kind == "batchtopk":
            assert trained.weights["threshold"] == pytest.approx(float(module.threshold), rel=1e-4)


def test_padding_streams_of_other_widths_changes_nothing():
    streams = _streams()
    config = TrainConfig(steps=20, **FAST)
    together = train_population(streams, MIXED, config)  # one stack per kind, padded to the widest stream
    for i, spec in enumerate(MIXED):
        alone = train_population(streams, [spec], config).coders[0]
        for name, value in _weights(alone).items():
            torch.testing.assert_close(together.coders[i].weights[name], value, atol=1e-5, rtol=1e-4)
        assert together.coders[i].metrics["fvu"] == pytest.approx(alone.metrics["fvu"], rel=1e-4, abs=1e-6)


def test_decoder_rows_stay_unit_norm_and_padding_stays_zero():
    from zoo.readers.sae.train import init_stack, train_step
    from zoo.optim import StackedAdam
    from zoo.readers.sae.spec import prepare

    streams = {s.name: prepare(s) for s in _streams()}
    specs = [s for s in MIXED if s.kind == "topk"]
    stack, batches, _ = init_stack(specs, streams, TrainConfig(), torch.device("cpu"))
    optimizers = {name: StackedAdam(p.detach()) for name, p in stack.params.items()}
    for _ in range(15):
        x, y = batches.next(32)
        train_step(stack, optimizers, x, y, None)
    W = stack.params["W_dec"].detach()
    for i, spec in enumerate(specs):
        d_out = 10 if spec.transcode else {"a": 16, "b": 12}[spec.stream]
        norms = W[i, : spec.latents, :d_out].norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
        assert W[i, spec.latents :].abs().max() == 0 if spec.latents < stack.M else True
        assert W[i, :, d_out:].abs().max() == 0 if d_out < stack.D_out else True


def test_save_load_round_trip_in_sparsify_layout(tmp_path):
    streams = _streams()
    result = train_population(streams, MIXED, TrainConfig(steps=15, **FAST))
    paths = save_population(result, tmp_path / "saes")
    assert sorted(load_population(tmp_path / "saes")) == sorted(c.spec.label for c in result.coders)
    raw = {s.name: torch.from_numpy(s.val) for s in streams}
    for trained, path in zip(result.coders, paths):
        from safetensors import safe_open

        with safe_open(str(path / "sae.safetensors"), framework="pt") as f:
            keys = set(f.keys())
        assert keys == set(NAMES) | ({"W_skip"} if trained.spec.skip else set())
        cfg = json.loads((path / "cfg.json").read_text())
        assert cfg["d_in"] == trained.d_in and cfg["num_latents"] == trained.spec.latents
        loaded = load_coder(path)
        x = raw[trained.spec.stream]
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode(x), trained.module().encode(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(loaded(x), trained.module()(x), atol=1e-5, rtol=1e-5)
            # the folded weights on raw activations equal the trained ones on standardized activations
            std = trained.module(standardized=True)
            z_std = std.encode(torch.from_numpy(trained.x_std(x.numpy())))
            torch.testing.assert_close(loaded.encode(x), z_std * trained.y_std.scale, atol=1e-4, rtol=1e-4)
            if trained.spec.kind in ("topk", "relu"):  # sparsify's own forward (sparse_coder.py) on these tensors
                torch.testing.assert_close(_sparsify_forward(path, x), loaded(x), atol=1e-5, rtol=1e-5)


def _sparsify_forward(path, x: torch.Tensor) -> torch.Tensor:
    """EleutherAI sparsify's ``SparseCoder.forward``: relu(encoder(x - b_dec)), top-k, embedding_bag decode."""
    from safetensors.torch import load_file

    cfg = json.loads((path / "cfg.json").read_text())
    t = load_file(str(path / "sae.safetensors"))
    inp = x if cfg["transcode"] else x - t["b_dec"]
    pre = torch.relu(torch.nn.functional.linear(inp, t["encoder.weight"], t["encoder.bias"]))
    acts, idx = pre.topk(cfg["k"], dim=-1, sorted=False)
    out = torch.nn.functional.embedding_bag(idx, t["W_dec"], per_sample_weights=acts, mode="sum") + t["b_dec"]
    if cfg["skip_connection"]:
        out = out + x @ t["W_skip"].mT
    return out


def test_bad_input_is_one_clear_value_error():
    streams = _streams()
    with pytest.raises(SAEError, match=r"k=80 must lie in 1\.\.64") as error:
        train_population(streams, [SAESpec("a", 64, k=80)], TrainConfig(steps=1))
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)
    with pytest.raises(SAEError, match="is empty") as error:
        Stream("empty", np.zeros((0, 8)), np.zeros((4, 8)))
    assert "\n" not in str(error.value)
    with pytest.raises(SAEError, match="unknown stream"):
        train_population(streams, [SAESpec("nope", 8, k=2)], TrainConfig(steps=1))
    with pytest.raises(SAEError, match="has no target"):
        train_population(streams, [SAESpec("a", 8, k=2, transcode=True)], TrainConfig(steps=1))
    with pytest.raises(SAEError, match="no SAEs"):
        train_population(streams, [], TrainConfig(steps=1))


def test_early_stopping_reads_the_held_out_stream_and_keeps_the_best():
    streams = _streams()[:1]
    specs = [SAESpec("a", 32, k=3, seed=0, lr=0.05), SAESpec("a", 32, k=3, seed=1, lr=1e-4)]
    config = TrainConfig(steps=400, batch_size=64, eval_every=10, patience=2, threads=1)
    result = train_population(streams, specs, config)
    fast, slow = result.coders
    assert fast.steps < 400  # stopped early
    assert fast.best_step <= fast.steps
    objective = np.array(result.history[0]["objective"])  # [evaluations, coders] on the held-out stream
    assert fast.metrics["objective"] == pytest.approx(objective[:, 0].min(), rel=1e-5)


@pytest.fixture(scope="module")
def planted_run():
    planted = planted_dictionary(n_features=32, d=16, tokens=12_000, val_tokens=3_000, active=2.0, seed=0)
    specs = [SAESpec("planted", 48, k=3, seed=s, lr=1e-2) for s in (0, 1)]
    config = TrainConfig(steps=1500, batch_size=256, eval_every=50, patience=4, threads=1)
    return planted, train_population([planted.stream()], specs, config)


def test_planted_dictionary_is_recovered_by_topk(planted_run):
    planted, result = planted_run
    for coder in result.coders:
        match = match_directions(planted.features, coder.weights["W_dec"])
        assert match["mean_cosine"] >= 0.9, match["mean_cosine"]
        assert coder.metrics["fvu"] < 0.3
    overlap = cross_seed_overlap(result.coders)
    assert len(overlap) == 1 and overlap[0]["seeds"] == [0, 1] and overlap[0]["mean_matched_cosine"] > 0.8


def test_autointerp_finds_the_planted_feature_and_not_a_shuffled_one():
    # k above the usual number of active features, so that every active feature can fire
    planted = planted_dictionary(n_features=24, d=32, tokens=10_000, val_tokens=3_000, active=1.5, magnitude=(1, 2))
    config = TrainConfig(steps=1000, batch_size=256, eval_every=50, patience=4, threads=1)
    coder = train_population([planted.stream()], [SAESpec("planted", 32, k=5, lr=1e-2)], config).coders[0]
    with torch.no_grad():
        acts = coder.module().encode(torch.from_numpy(planted.val)).numpy()
    match = match_directions(planted.features, coder.weights["W_dec"])
    scores = score_latents(acts, planted.val_labels)
    matched = scores.auroc[match["cols"], match["rows"]]  # each feature scored by the latent whose direction matches it
    assert matched.min() > 0.98 and np.median(matched) > 0.995
    summary = summarize(scores)
    assert summary["coverage"] == 1.0 and summary["assignment_auroc"] > 0.98
    best = np.array([row["latent"] for row in summary["per_feature"]])
    assert (best[match["rows"]] == match["cols"]).all()  # the recall view finds the matching latent
    shuffled = np.random.default_rng(0).permutation(planted.val_labels)  # token order shuffled: labels carry nothing
    noise = score_latents(acts, shuffled).auroc[match["cols"], match["rows"]]
    assert abs(np.mean(noise) - 0.5) < 0.03 and np.abs(noise - 0.5).max() < 0.1


def test_auroc_and_f1_match_their_definitions():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(300, 5)), 0)
    labels = rng.random((300, 3)) < 0.3
    scores = score_latents(acts, labels, n_thresholds=300)
    for l, f in itertools.product(range(5), range(3)):
        pos, neg = acts[labels[:, f], l], acts[~labels[:, f], l]
        u = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
        assert scores.auroc[l, f] == pytest.approx(u / (len(pos) * len(neg)), abs=1e-12)
        f1s = [2 * (labels[:, f] & (acts[:, l] >= t)).sum() / ((acts[:, l] >= t).sum() + labels[:, f].sum())
               for t in np.unique(acts[:, l][acts[:, l] > 0])]  # fmt: skip
        assert scores.f1[l, f] == pytest.approx(max(f1s), abs=1e-9)


def test_hungarian_matches_brute_force_and_fvu_is_about_the_mean():
    rng = np.random.default_rng(1)
    for n, m in [(4, 4), (3, 6), (6, 3)]:
        cost = rng.normal(size=(n, m))
        rows, cols = linear_sum_assignment(cost)
        if n <= m:
            best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
        else:
            best = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
        assert cost[rows, cols].sum() == pytest.approx(best)
    y = rng.normal(size=(100, 4)) + 10.0
    assert fvu(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(1.0)


def test_bench_runs_both_trainers_and_their_fvus_agree():
    from zoo.readers.sae.bench import bench_sae

    out = bench_sae(n_saes=4, dims=(8, 12), widths=(4,), ks=(2,), steps=5, batch_size=16, tokens=400, val_tokens=100)
    assert out["saes"] == 4 and out["speedup"] > 0
    assert out["fvu_max_abs_diff"] < 1e-4


def test_relu_objective_does_not_scale_with_batch_size():
    from zoo.readers.sae.module import SparseCoder

    coder = SparseCoder.from_spec(SAESpec("a", 32, kind="relu", alpha=3.0), 16, 16)
    x = torch.from_numpy(planted_dictionary(n_features=32, d=16, tokens=64, val_tokens=1).train)
    with torch.no_grad():
        small, *_ = coder.objective(x, x, alpha=3.0)
        large, *_ = coder.objective(torch.cat([x, x]), torch.cat([x, x]), alpha=3.0)  # same tokens, twice the batch
    assert large.item() == pytest.approx(small.item(), rel=1e-5)
