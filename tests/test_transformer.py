"""The transformer family: padding, the sequential reference, GroupMax, config errors, zoos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.config import ConfigError, TrainingConfig, parse_config
from zoo.runtime import torch_threads
from zoo.subjects.families import get_family
from zoo.subjects.families.transformer import Architecture
from zoo.subjects.train import SubjectJob
from zoo.subjects.transformer_module import build_model, flatten_model, group_max, init_weights
from zoo.subjects.transformer_train import train_group, train_reference

FAMILY = get_family("transformer")
CPU = torch.device("cpu")
# Population and reference after a few AdamW steps (weights move by about 0.02): float32
# rounding of a batched product against a single one, amplified a little by Adam.
TOLERANCE = 5e-5



@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as a factory worker: two oversubscribe a shared 2-core machine badly."""
    with torch_threads(1):
        yield


def arch(layers, d, heads, ffn="dense", m=4, k=0, bias=True) -> Architecture:
    return Architecture(layers, d, heads, ffn, m, k, bias, 7, 7)


MIXED = {
    "dense": [arch(1, 8, 1), arch(2, 16, 2), arch(2, 16, 4), arch(1, 12, 2)],
    "sparse": [arch(2, 8, 2, "sparse", 8, 2), arch(2, 16, 4, "sparse", 8, 4), arch(1, 12, 1, "sparse", 4, 3)],
    "sparse_low_rank": [arch(2, 16, 2, "sparse_low_rank", 8, 4), arch(1, 24, 4, "sparse_low_rank", 4, 6)],
    "no_bias": [arch(2, 8, 2, bias=False), arch(1, 16, 4, bias=False)],
}


def jobs_for(archs, samples=64, lr=3e-3, seed=1) -> list[SubjectJob]:
    rng = np.random.default_rng(seed)
    jobs = []
    for i, a in enumerate(archs):
        tokens = rng.integers(0, 7, (samples, 7))
        labels = (tokens[:, 0] == tokens[:, -1]).astype(np.float32)
        jobs.append(SubjectJob(a, i, 100 + i, lr * (1 + i / 4), tokens, labels, tokens[:24], labels[:24]))
    return jobs


CONFIG = TrainingConfig(epochs=2, batch_size=16, weight_decay=0.01)


@pytest.mark.parametrize("kind", sorted(MIXED))
def test_padding_models_of_different_sizes_into_one_population_changes_nothing(kind):
    jobs = jobs_for(MIXED[kind])
    pop, result = train_group(jobs, CONFIG, CPU)
    together = FAMILY.weights(pop)
    for i, job in enumerate(jobs):
        alone_pop, alone_result = train_group([job], CONFIG, CPU)
        np.testing.assert_allclose(together[i], FAMILY.weights(alone_pop)[0], atol=TOLERANCE)
        assert result.epochs[i] == alone_result.epochs[0]
        assert np.abs(together[i] - init_weights(job.architecture, job.init_seed)).max() > 1e-3  # it trained


@pytest.mark.parametrize("kind", sorted(MIXED))
def test_population_agrees_with_the_sequential_reference(kind):
    config = TrainingConfig(epochs=4, batch_size=16, weight_decay=0.01, patience=1, min_delta=0.0)
    jobs = jobs_for(MIXED[kind], lr=2e-2)  # a high rate and patience 1: models stop at different epochs
    pop, result = train_group(jobs, config, CPU)
    weights = FAMILY.weights(pop)
    for i, job in enumerate(jobs):
        model, epochs, loss = train_reference(
            job.architecture, init_weights(job.architecture, job.init_seed), job.train_tokens, job.train_labels,
            job.val_tokens, job.val_labels, config, job.lr, job.order_seed,
        )  # fmt: skip
        assert result.epochs[i] == epochs
        assert result.val_loss[i] == pytest.approx(loss, abs=1e-5)
        reference = flatten_model(model)
        keep = ~key_biases(job.architecture)
        np.testing.assert_allclose(weights[i][keep], reference[keep], atol=TOLERANCE)
        tokens = torch.as_tensor(job.val_tokens)
        with torch.no_grad():
            torch.testing.assert_close(FAMILY.build_module(job.architecture, weights[i])(tokens), model(tokens), atol=1e-4, rtol=0)


def key_biases(a: Architecture) -> np.ndarray:
    """The key biases' entries: softmax ignores them, so their true gradient is zero and Adam turns
    float rounding there into steps of the learning rate's size; they are left out of the comparison."""
    mask = np.zeros(a.n_params, dtype=bool)
    for e in a.layout():
        if e.name.endswith("attn.qkv.bias"):
            mask[e.offset + a.d_model : e.offset + 2 * a.d_model] = True
    return mask


def test_group_max_keeps_exactly_k_units_and_decodes_from_them_only():
    a = arch(1, 16, 2, "sparse", 8, 4)
    model = build_model(a, init_weights(a, 3))
    tokens = torch.randint(0, 7, (32, 7))
    points = model.activations(tokens)
    post = points["blocks.0.ffn.post"]
    assert post.shape == (32, a.d_hidden)
    groups = post.view(32, a.k, a.group_size)
    assert ((groups > 0).sum(-1) <= 1).all() and (post > 0).sum(1).max() <= a.k
    values, indices = group_max(points["blocks.0.ffn.pre"], a.k)
    torch.testing.assert_close(post, torch.zeros_like(post).scatter(-1, indices, values))
    decoder = model.blocks[0].ffn.decoder
    torch.testing.assert_close(decoder(values, indices), post @ decoder.weight + decoder.bias, atol=1e-6, rtol=1e-5)


def test_sparse_low_rank_runs_through_a_rank_d_over_8_bottleneck():
    a = arch(2, 32, 4, "sparse_low_rank", 4, 8)
    shapes = dict(a.parameter_shapes())
    assert shapes["blocks.0.ffn.down_proj.weight"] == (4, 32)
    assert shapes["blocks.0.ffn.encoder.weight"] == (128, 4)
    assert shapes["blocks.0.ffn.decoder.weight"] == (128, 4)
    assert shapes["blocks.0.ffn.up_proj.weight"] == (32, 4)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"d_model": [30], "heads": [4]}, "architecture.heads: d_model 30 is not divisible by 4 heads"),
        ({"d_model": [16], "ffn": ["sparse"], "expansion": 4, "k": 80}, "architecture.k: 80 is larger than the hidden width 64"),
        ({"d_model": [16], "ffn": ["sparse"], "expansion": 4, "k": 5}, "architecture.k: 5 does not divide the hidden width 64"),
        ({"d_model": [20], "heads": [1], "ffn": ["sparse_low_rank"]}, "architecture.d_model: 20 is not divisible by 8"),
        ({"layers": {"min": 1, "max": 5}}, "architecture.layers: must lie in 1..4"),
        ({"depth": 2}, "architecture.depth: unknown key"),
    ],
)
def test_a_bad_transformer_space_is_one_line_naming_the_field(space, message):
    with pytest.raises(ConfigError) as error:
        parse_config({"architecture": {"family": "transformer", **space}})
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_mixture_names_each_family_and_a_bad_share_is_one_line():
    config = parse_config(
        {"architecture": [{"share": 0.5, "space": {"family": "mlp"}}, {"share": 0.5, "space": {"family": "transformer"}}]}
    )
    assert [s.family for s in config.spaces()] == ["mlp", "transformer"]
    with pytest.raises(ConfigError, match=r"^architecture\.1\.share: "):
        parse_config({"architecture": [{"share": 1, "space": {"family": "mlp"}}, {"share": 0, "space": {"family": "transformer"}}]})


def test_clean_transformers_learn_the_pattern_task():
    """The shipped recipe's model (2 blocks, d_model 32, 4 heads, dense) on three easy patterns, 2,000
    training sequences, 15 epochs at lr 3e-3..5e-3: mean clean benchmark accuracy 0.978 when written."""
    import yaml

    from zoo.config import _merge, shipped_config
    from zoo.factory.batch import benchmark_scores
    from zoo.factory.plan import clean_job, plan_batch

    recipe = yaml.safe_load(shipped_config("zoo/transformer.yaml").read_text())
    config = parse_config(_merge(recipe, {
        "patterns": {"names": ["starts_with_A", "ends_with_G", "contains_ABC"], "per_batch": {"min": 2, "max": 2},
                     "train_size": 2000, "val_size": 200, "benchmark_size": 200},
        "training": {"epochs": 15, "lr": {"min": 0.003, "max": 0.005}},
    }))  # fmt: skip
    plans = [plan_batch(config, b) for b in range(3)]
    accuracies = []
    for group in FAMILY.train([clean_job(p) for p in plans], config.training, CPU):
        accuracies += list(benchmark_scores(FAMILY, group.population, [plans[i] for i in group.indices]).accuracy)
    assert np.mean(accuracies) >= 0.95


MIXED_ZOO = {
    "batches": 8,
    "architecture": [
        {"share": 0.5, "space": {"family": "mlp", "width": {"min": 6, "max": 10}}},
        {"share": 0.5, "space": {"family": "transformer", "d_model": [8, 16], "heads": [1, 2],
                                 "ffn": ["dense", "sparse"], "expansion": 4}},
    ],
    "patterns": {"train_size": 100, "val_size": 40, "benchmark_size": 100},
    "training": {"epochs": 2},
    "corruption": {"degraded_per_batch": 2, "min_degradation": 0.0},
    "storage": {"batches_per_shard": 4},
}  # fmt: skip


def test_a_mixed_zoo_generates_loads_and_verifies(tmp_path):
    import zoo
    from zoo.factory.plan import plan_batch
    from zoo.subjects.evaluate import score
    from zoo.subjects.families import architecture_of

    z = zoo.generate(MIXED_ZOO, tmp_path / "zoo", workers=0, quiet=True)
    assert zoo.verify(tmp_path / "zoo") == []
    rows = list(z.records())
    assert {r["family"] for r in rows} == {"mlp", "transformer"}
    for index, row in enumerate(rows):
        arch = architecture_of(row["architecture"])
        family = get_family(arch.family)
        assert len(row["clean_signature"]) == len(row["neuron_kind"]) == sum(s.width for s in family.signature_sites(arch))
        if arch.family != "transformer":
            continue
        assert set(row["neuron_kind"]) == {"ffn", "resid", "output"}
        plan = plan_batch(z.config, row["batch_id"])
        with torch.no_grad():
            out = z.load_model(index)(torch.as_tensor(plan.data.benchmark.tokens)).numpy()
        scores = score(out[None], plan.data.benchmark.pattern[None], len(plan.patterns))
        assert float(scores.accuracy[0]) == pytest.approx(row["metrics"]["clean_accuracy"], abs=1e-6)


def test_a_mixed_zoo_is_the_same_on_two_ray_workers_as_in_process(tmp_path, ray_session):
    import zoo
    from zoo.factory.schema import content_hash

    alone = zoo.generate(MIXED_ZOO, tmp_path / "alone", workers=0, quiet=True)
    spread = zoo.generate(MIXED_ZOO, tmp_path / "spread", workers=2, quiet=True)
    assert content_hash(spread.table()) == content_hash(alone.table())
    assert {r["family"] for r in spread.records(columns=["family"])} == {"mlp", "transformer"}


@pytest.mark.parametrize("scheme", ["int8", "ternary"])
def test_quantization_rounds_each_models_matrices_on_their_own_grid(scheme):
    from zoo.subjects.transformer_population import from_weights, is_matrix

    archs = MIXED["sparse"]
    pop = from_weights(archs, [init_weights(a, i) for i, a in enumerate(archs)])
    FAMILY.quantize_(pop, scheme)
    tokens = torch.randint(0, 7, (len(archs), 8, 7))
    out = FAMILY.logits(pop, tokens)
    for i, (a, w) in enumerate(zip(archs, FAMILY.weights(pop))):
        for e in a.layout():
            values = w[e.offset : e.offset + e.size]
            if is_matrix(e.name):
                levels = len(np.unique(np.abs(values)))
                assert levels <= (128 if scheme == "int8" else 2)
            elif e.name.endswith("ln1.weight"):
                assert np.all(values == 1.0)  # LayerNorm gains stay float
        with torch.no_grad():
            torch.testing.assert_close(out[i], FAMILY.build_module(a, w)(tokens[i]), atol=1e-5, rtol=1e-5)


def test_a_transformer_zoo_is_the_same_whoever_makes_it(tmp_path):
    import zoo

    recipe = {
        "batches": 2,
        "architecture": {"family": "transformer", "d_model": [8], "heads": [2], "layers": {"min": 1, "max": 2}},
        "patterns": {"train_size": 60, "val_size": 20, "benchmark_size": 40},
        "training": {"epochs": 2},
        "corruption": {"degraded_per_batch": 1, "min_degradation": 0.0},
        "storage": {"batches_per_shard": 1},
    }
    first = zoo.generate(recipe, tmp_path / "a", workers=0, quiet=True).to_pandas()
    second = zoo.generate(recipe, tmp_path / "b", workers=0, quiet=True).to_pandas()
    drop = ["timings"]
    for column in first.columns.drop(drop):
        assert first[column].astype(str).tolist() == second[column].astype(str).tolist(), column


@pytest.mark.parametrize("kind", sorted(MIXED))
def test_population_logits_and_hookpoints_equal_each_module(kind):
    from zoo.subjects.transformer_population import from_weights

    archs = MIXED[kind]
    weights = [init_weights(a, i) for i, a in enumerate(archs)]
    pop = from_weights(archs, weights)
    tokens = torch.randint(0, 7, (len(archs), 20, 7))
    out, points = FAMILY.logits(pop, tokens), FAMILY.activations(pop, tokens)
    for i, (a, w) in enumerate(zip(archs, weights)):
        module = FAMILY.build_module(a, w)
        with torch.no_grad():
            torch.testing.assert_close(out[i], module(tokens[i]), atol=1e-5, rtol=1e-5)
            own = module.activations(tokens[i])
        assert list(own) == list(FAMILY.hookpoints(a))
        for name, width in FAMILY.hookpoints(a).items():
            torch.testing.assert_close(points[name][i, :, :width], own[name], atol=1e-5, rtol=1e-5)


def test_bench_times_the_population_against_the_reference_on_the_same_models():
    from zoo.bench import run_bench

    config = parse_config({
        "architecture": {"family": "transformer", "d_model": [8], "heads": [2], "layers": {"min": 1, "max": 1}},
        "patterns": {"train_size": 64, "val_size": 16, "benchmark_size": 32},
        "training": {"epochs": 1, "lr": {"min": 1e-3, "max": 2e-3}},
    })  # fmt: skip
    result = run_bench(config, models=3, reference_models=2, threads=1, progress=False, family="transformer")
    assert result.models == 3 and result.reference_models == 2
    assert result.population_seconds > 0 and result.reference_seconds > 0 and result.speedup > 0
    assert result.population_accuracy == pytest.approx(result.reference_accuracy, abs=0.02)
