"""The probing reader: planted features, checkpoints, reports, bad input, the zoo summary, Ray and Tune."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.cli import main
from zoo.config import ConfigError, ZooConfig, load_config
from zoo.readers.probes.activations import cache_activations, model_activations, read_activations
from zoo.readers.probes.checkpoint import load_probe
from zoo.readers.probes.config import ProbeConfig, ProbeTuneConfig
from zoo.readers.probes.data import LabelledData, ProbeError
from zoo.readers.probes.probe import ModelSpec, probe_model, probe_models
from zoo.readers.probes.train import FeatureSet, stratified_split, train_probes
from zoo.readers.probes.zoo_probe import probe_row, probe_zoo
from zoo.subjects.families.mlp import Architecture
from zoo.subjects.mlp import SubjectMLP, flatten_model
from zoo_fixture import build_zoo, tiny_config

CONFIGS = Path(__file__).parent.parent / "configs"

TINY = tiny_config(
    name="probe-tiny",
    batches=4,
    architecture={"width": {"min": 8, "max": 12}},
    patterns={"train_size": 300, "val_size": 60, "benchmark_size": 200},
    training={"epochs": 5},
)
FAST = ProbeConfig(epochs=6, val_every=2, lr=1e-2)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe-zoo") / "zoo"
    return build_zoo(out, TINY)


@pytest.fixture(scope="module")
def probed_row(tiny_zoo, tmp_path_factory):
    """Row 0's clean model probed with the fast recipe: (result, report, out folder)."""
    out = tmp_path_factory.mktemp("probe-row") / "out"
    result, report = probe_row(tiny_zoo, 0, out, FAST)
    return result, report, out


# ---------------------------------------------------------------- planted features

ARCH = Architecture(n_layers=2, widths=(4, 4), activation="relu", vocab_size=7, seq_len=7)


def planted_model() -> np.ndarray:
    """Layer 1, unit 0 fires iff the first token is A; nothing else reads the input; layer 2 is dead (all zero)."""
    model = SubjectMLP(ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.layers[0].weight[0, 0] = 1.0  # one-hot feature 0: position 0, token A
    return flatten_model(model)


def planted_data(position: int, n: int = 1000, seed: int = 0) -> LabelledData:
    """Random sequences, half of them with A at ``position``; class 0 = "A there", class 1 = none."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 7, size=(n, 7))
    has = rng.random(n) < 0.5
    tokens[has, position] = 0
    return LabelledData(tokens, np.where(has, 0, 1), (f"A_at_{position}", "none"))


PLANTED = ProbeConfig(epochs=20, val_every=5, lr=1e-2, random_twin=False)


@pytest.fixture(scope="module")
def planted():
    weights = planted_model()
    specs = [ModelSpec(ARCH, weights, planted_data(0)), ModelSpec(ARCH, weights, planted_data(5))]
    return probe_models(specs, PLANTED)


def test_planted_feature_is_read_near_perfectly_at_the_layer_that_computes_it(planted):
    assert planted[0].trained[1].accuracy >= 0.98
    assert planted[0].best_layer() == 1


def test_planted_feature_is_at_chance_in_a_layer_that_cannot_know_it(planted):
    assert abs(planted[0].trained[2].accuracy - 0.5) < 0.08  # dead layer
    assert abs(planted[1].trained[1].accuracy - 0.5) < 0.1  # layer 1 never reads position 5
    assert planted[1].trained[0].accuracy >= 0.98  # ... though the input has it


def test_shuffled_label_control_makes_selectivity_positive_only_where_the_feature_is(planted):
    layer1 = planted[0].trained[1]
    assert abs(layer1.control_accuracy - 0.5) < 0.1
    assert layer1.selectivity > 0.35
    assert abs(planted[0].trained[2].selectivity) < 0.1


def test_untrained_twin_is_probed_beside_the_model():
    weights = planted_model()
    twin = np.zeros_like(weights)  # a "random init" that knows nothing
    result = probe_model(ModelSpec(ARCH, weights, planted_data(0), twin), PLANTED.model_copy(update={"random_twin": True}))
    assert result.trained[1].accuracy >= 0.98
    assert abs(result.random[1].accuracy - 0.5) < 0.08
    assert result.random[0] is result.trained[0]  # the same one-hot input, probed once


# ---------------------------------------------------------------- the recipe's mechanics


def _feature_set(x: np.ndarray, labels: np.ndarray, n_classes: int = 2) -> FeatureSet:
    train, val = stratified_split(labels, 0.2, 0)
    return FeatureSet(x.astype(np.float32), [labels], n_classes, train, val)


def test_stratified_split_keeps_every_class_share():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    train, val = stratified_split(labels, 0.2, 0)
    assert np.bincount(labels[val]).tolist() == [100, 60, 40]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 1000


def test_weight_decay_shrinks_weights_but_not_biases():
    rng = np.random.default_rng(0)
    labels = (rng.random(1000) < 0.2).astype(np.int64)  # 80/20 prior: the bias must carry it
    x = rng.normal(size=(1000, 3))
    run = train_probes([_feature_set(x, labels)], ProbeConfig(epochs=30, lr=3e-2, weight_decay=50.0))
    probe = run.final[0][0]
    assert np.abs(probe.weight).max() < 0.05
    assert probe.bias[0] - probe.bias[1] > 1.0


def test_learning_rate_is_cut_by_the_plateau_factor_when_training_loss_stalls():
    x = np.ones((500, 2))  # nothing to learn beyond the prior: the loss stalls quickly
    labels = np.arange(500) % 2
    config = ProbeConfig(epochs=40, lr=1e-2, scheduler={"factor": 0.5, "patience": 0})
    lr = train_probes([_feature_set(x, labels)], config).lr[:, 0, 0]
    ratios = lr[1:] / lr[:-1]
    assert np.all(np.isclose(ratios, 1.0) | np.isclose(ratios, 0.5))
    assert lr[-1] < lr[0] * 0.5**3


def test_activations_are_standardized_so_their_scale_does_not_matter():
    data = planted_data(0, n=600)
    acts = model_activations(ARCH, planted_model(), data.tokens)[1]
    noise = np.random.default_rng(1).normal(size=acts.shape) * 0.1
    a = train_probes([_feature_set(acts + noise, data.labels)], FAST)
    b = train_probes([_feature_set((acts + noise) * 1000.0, data.labels)], FAST)
    assert np.array_equal(a.val_pred[0], b.val_pred[0])
    np.testing.assert_allclose(a.final[0][0].weight, b.final[0][0].weight, rtol=1e-3, atol=1e-4)


def test_layers_of_different_widths_and_class_counts_train_together_without_leaking():
    rng = np.random.default_rng(0)
    narrow = rng.normal(size=(400, 2))
    wide = rng.normal(size=(400, 9))
    labels3 = np.stack([wide[:, 4], wide[:, 7], -wide[:, 4] - wide[:, 7]]).argmax(0)  # 3 classes from 2 features
    labels2 = (narrow[:, 0] > 0).astype(np.int64)
    run = train_probes(
        [_feature_set(narrow, labels2), _feature_set(wide, labels3, 3)],
        ProbeConfig(epochs=40, lr=1e-2, weight_decay=0.0, val_every=5, batch_size=32),
    )
    assert run.final[0][0].weight.shape == (2, 2) and run.final[1][0].weight.shape == (9, 3)
    assert set(np.unique(run.val_pred[0])) <= {0, 1}  # a padded class is never predicted
    assert run.best_accuracy[0, 0] > 0.95 and run.best_accuracy[1, 0] > 0.9


# ---------------------------------------------------------------- outputs of one record


def test_checkpoints_load_back_and_give_the_same_predictions(probed_row):
    result, _, out = probed_row
    tokens = result.spec.data.tokens[result.val_idx]
    acts = model_activations(result.spec.architecture, result.spec.weights, tokens)
    for layer in result.layers:
        best, meta = load_probe(out / f"probe_layer_{layer}.safetensors")
        final, _ = load_probe(out / f"probe_layer_{layer}_final.safetensors")
        assert np.array_equal(best.predict(acts[layer]), result.trained[layer].val_pred)
        assert np.array_equal(final.predict(acts[layer]), result.trained[layer].val_pred_final)
        assert meta["classes"] == list(result.classes) and meta["layer"] == layer
        accuracy = float((best.predict(acts[layer]) == result.val_labels).mean())
        assert accuracy == pytest.approx(meta["val_accuracy"])


def test_report_json_names_the_best_layer_and_its_accuracy(probed_row):
    result, report, out = probed_row
    stored = json.loads((out / "report.json").read_text())
    assert set(stored["per_layer_accuracy"]) == {str(l) for l in result.layers}
    assert stored["best_accuracy"] == stored["per_layer_accuracy"][str(stored["best_layer"])]
    assert stored["best_layer"] >= 1  # a hidden layer, not the input
    expected = stored["best_accuracy"] - stored["per_layer_control_accuracy"][str(stored["best_layer"])]
    assert stored["selectivity"] == pytest.approx(expected, abs=1e-5)
    assert set(stored["random_init"]["per_layer_accuracy"]) == {str(l) for l in result.layers}


def test_metrics_csv_has_a_row_per_epoch_and_marks_the_best_checkpoint(probed_row):
    result, _, out = probed_row
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:7] == ["layer", "epoch", "train_loss", "train_accuracy", "val_accuracy", "best_accuracy", "is_best"]
    probe_rows = [r for r in rows if r["subject"] == "trained" and r["task"] == "probe"]
    assert len(probe_rows) == len(result.layers) * FAST.epochs
    for layer in result.layers:
        best = [r for r in probe_rows if int(r["layer"]) == layer and r["is_best"] == "true"]
        assert [int(r["epoch"]) for r in best] == [result.trained[layer].best_epoch]
        assert float(best[0]["val_accuracy"]) == pytest.approx(result.trained[layer].accuracy, abs=1e-5)
    validated = [r for r in probe_rows if r["val_accuracy"]]
    assert {int(r["epoch"]) for r in validated} == {2, 4, 6}


def test_markdown_report_shows_the_plot_classes_and_confusion_matrix(probed_row):
    result, report, out = probed_row
    text = (out / "report.md").read_text()
    assert "![per-layer accuracy](per_layer_accuracy.png)" in text
    assert "Confusion matrix" in text and all(name in text for name in result.classes)
    png = (out / "per_layer_accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200
    assert sum(map(sum, report["confusion"])) == len(result.val_idx)


def test_activations_cached_to_parquet_read_back_unchanged(tmp_path):
    data = planted_data(0, n=300)
    weights = planted_model()
    path = cache_activations(tmp_path / "acts.parquet", ARCH, weights, data.tokens, data.labels, {"m": 1}, chunk=128)
    labels, acts = read_activations(path)
    expected = model_activations(ARCH, weights, data.tokens)
    assert np.array_equal(labels, data.labels)
    assert len(acts) == len(expected) and all(np.array_equal(a, e) for a, e in zip(acts, expected))


# ---------------------------------------------------------------- bad input


def _matches(config: ZooConfig, names, data: LabelledData) -> np.ndarray:
    from zoo.patterns.library import pattern_library

    library = pattern_library(config.patterns)
    return np.stack([library[name].predicate(data.tokens) for name in names], axis=1)


def test_positives_matching_several_of_the_batch_patterns_are_left_out_unless_asked_for():
    from zoo.factory.plan import plan_batch
    from zoo.readers.probes.data import batch_data

    three = {"names": ["palindrome", "sorted_ascending", "starts_with_A"], "per_batch": {"min": 3, "max": 3}}
    config = ZooConfig(patterns=three)
    names = plan_batch(config, 0).patterns
    kept = batch_data(config, 0, ["train"], ambiguous="drop")
    filed = batch_data(config, 0, ["train"], ambiguous="smallest_pool")
    several = _matches(config, names, filed).sum(axis=1) > 1
    assert several.any() and len(filed) - len(kept) == several.sum()
    assert (_matches(config, names, kept).sum(axis=1) <= 1).all()
    positives = kept.labels < len(names)
    assert _matches(config, names, kept)[positives, kept.labels[positives]].all()


def test_a_pattern_nested_in_another_keeps_its_positives_rather_than_vanish():
    from zoo.factory.plan import plan_batch
    from zoo.readers.probes.data import batch_data

    config = ZooConfig(patterns={"names": ["all_same", "palindrome"], "per_batch": {"min": 2, "max": 2}})
    names = plan_batch(config, 0).patterns
    kept = batch_data(config, 0, ["train"], ambiguous="drop")
    all_same, palindrome = names.index("all_same"), names.index("palindrome")
    assert (kept.labels == all_same).any()
    assert _matches(config, names, kept)[kept.labels == palindrome].sum(axis=1).max() == 1


def test_the_recipe_decides_whether_ambiguous_positives_reach_the_probe(tiny_zoo):
    from zoo.readers.probes.data import open_zoo
    from zoo.readers.probes.zoo_probe import row_spec

    zoo = open_zoo(tiny_zoo)
    row = zoo.row(0)
    drop, keep = (FAST.model_copy(update={"ambiguous": mode}) for mode in ("drop", "smallest_pool"))
    filed = row_spec(zoo, row, "clean", keep).data
    several = (_matches(zoo.config, row["patterns"], filed).sum(axis=1) > 1).sum()
    assert several > 0
    assert len(filed) - len(row_spec(zoo, row, "clean", drop).data) == several


def test_empty_data_is_refused_in_one_line():
    empty = LabelledData(np.zeros((0, 7), dtype=np.int64), np.zeros(0, dtype=np.int64), ("p", "none"))
    with pytest.raises(ProbeError, match="no labelled sequences"):
        probe_model(ModelSpec(ARCH, planted_model(), empty), PLANTED)


def test_unknown_layer_is_refused_before_training():
    with pytest.raises(ProbeError, match="unknown layer 3: .* layers 0 \\(input\\) to 2"):
        probe_model(ModelSpec(ARCH, planted_model(), planted_data(0)), PLANTED.model_copy(update={"layers": [1, 3]}))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--row", "999"], "row 999 does not exist"),
        (["--row", "0", "--layers", "7"], "unknown layer 7"),
        (["--row", "0", "--epochs", "0"], "epochs"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_zoo, tmp_path, capsys, args, message):
    code = main(["probe", "model", "--data", str(tiny_zoo), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_probes_a_model_and_the_first_batch_of_a_zoo(tiny_zoo, tmp_path, capsys):
    recipe = ["--epochs", "2"]
    assert main(["probe", "model", "--data", str(tiny_zoo), "--row", "1", "--which", "degraded", "--out", str(tmp_path / "m"), *recipe]) == 0
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["model"]["which"] == "degraded" and report["model"]["row"] == 1
    assert "best layer" in capsys.readouterr().out
    assert main(["probe", "zoo", "--data", str(tiny_zoo), "--out", str(tmp_path / "z"), "--batches", "1", "--json", *recipe]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from zoo.factory.reader import read_records

    pairs = read_records(tiny_zoo, columns=["batch_id"]).column("batch_id").to_pylist().count(0)
    assert summary["clean_models"] == 1 and summary["degraded_models"] == pairs


def test_cli_refuses_a_folder_that_is_not_a_zoo(tmp_path, capsys):
    code = main(["probe", "zoo", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "not a zoo folder" in capsys.readouterr().err


def test_unknown_recipe_key_is_a_config_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("lr: 0.01\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate: unknown key"):
        load_config(path, ProbeConfig)


def test_the_reference_recipe_is_the_built_in_defaults_but_lr_and_weight_decay():
    # (the built-in defaults were the reference recipe until they became the shipped, tuned one)
    reference = load_config(CONFIGS / "readers/probes-reference.yaml", ProbeConfig)
    assert reference.model_copy(update={"lr": 0.02, "weight_decay": 0.0}) == ProbeConfig()
    assert (reference.optimizer, reference.lr, reference.betas, reference.weight_decay) == ("adam", 1e-3, (0.9, 0.95), 0.1)
    assert (reference.scheduler.factor, reference.scheduler.patience, reference.epochs, reference.val_every) == (0.75, 0, 50, 10)
    assert (reference.val_fraction, reference.batch_size) == (0.2, 200)


def test_commands_default_to_the_tuned_recipe_which_is_the_built_in_defaults_written_out():
    import argparse

    from zoo.readers.probes.commands import recipe_from_args

    tuned = recipe_from_args(argparse.Namespace(config=None, epochs=None))
    assert tuned == load_config(CONFIGS / "readers/probes.yaml", ProbeConfig) == ProbeConfig()
    assert (tuned.lr, tuned.weight_decay) == (0.02, 0.0)
    assert recipe_from_args(argparse.Namespace(config=None, epochs=3)).epochs == 3


def test_shipped_probe_tune_config_is_valid_and_writes_out_the_built_in_defaults():
    from zoo.readers.probes.tune import SWEEP
    from zoo.readers.tune import check_settings

    config = load_config(CONFIGS / "tune/probes.yaml", ProbeTuneConfig)
    assert config == ProbeTuneConfig()
    assert config.space and check_settings(SWEEP, config)["epochs"] == config.overrides["epochs"]


def test_probe_tune_space_must_name_recipe_fields():
    from zoo.readers.probes.tune import tune_probes

    with pytest.raises(ProbeError, match="space.lrr"):
        tune_probes(".", ProbeTuneConfig(space={"lrr": {"choice": [0.1]}}))
    with pytest.raises(ConfigError, match="mode"):
        load_config(CONFIGS / "tune/probes.yaml", ProbeTuneConfig, {"metric": "val_loss"})


# ---------------------------------------------------------------- across the zoo, Ray, Tune


@pytest.fixture(scope="module")
def zoo_summary(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-zoo-out")
    return probe_zoo(tiny_zoo, out, FAST, log=lambda line: None), out


def test_zoo_probe_covers_every_clean_and_degraded_model(tiny_zoo, zoo_summary):
    summary, out = zoo_summary
    from zoo.factory.reader import read_records

    rows = read_records(tiny_zoo, columns=["batch_id"]).column("batch_id").to_pylist()
    assert summary["clean_models"] == len(set(rows)) and summary["degraded_models"] == len(rows)
    with open(out / "degraded.csv") as handle:
        degraded = list(csv.DictReader(handle))
    assert len(degraded) == len(rows)
    assert {"clean_L1", "degraded_L1", "clean_output_accuracy", "degraded_output_accuracy", "lost"} <= set(degraded[0])


def test_zoo_summary_says_where_each_pattern_becomes_readable(zoo_summary):
    summary, out = zoo_summary
    with open(out / "readability.csv") as handle:
        table = list(csv.DictReader(handle))
    assert table and {"pattern", "readable_at_input", "median_first_layer", "mean_f1_in", "mean_f1_L1"} <= set(table[0])
    assert (out / "readability.png").read_bytes()[:4] == b"\x89PNG" and (out / "degraded.png").is_file()
    assert "Where each pattern becomes linearly readable" in (out / "summary.md").read_text()


def test_zoo_probe_on_ray_actors_matches_in_process(tiny_zoo, zoo_summary, ray_session, tmp_path):
    summary, out = zoo_summary
    config = FAST.model_copy(update={"models_per_group": 3})  # one model group per batch: several tasks
    in_process = probe_zoo(tiny_zoo, tmp_path / "local", config, log=lambda line: None)
    on_ray = probe_zoo(tiny_zoo, tmp_path / "ray", config, workers=2, log=lambda line: None)
    assert (tmp_path / "ray" / "probes.csv").read_text() == (tmp_path / "local" / "probes.csv").read_text()
    assert on_ray["models"] == in_process["models"] == summary["models"]


def test_zoo_probe_survives_a_worker_killed_mid_task(tiny_zoo, zoo_summary, ray_session, tmp_path, monkeypatch):
    """The fan-out is a ``zoo.pool.ActorPool``: the dead worker's task is requeued, each batch probed once."""
    from zoo.readers.probes import zoo_probe

    marks = tmp_path / "marks"
    marks.mkdir()

    class CrashingProbeWorker(zoo_probe.ProbeWorker):
        def run(self, batch_ids):
            import os

            if 0 in batch_ids and not (marks / "crashed").exists():
                (marks / "crashed").touch()
                os._exit(1)
            result = zoo_probe.ProbeWorker.run(self, batch_ids)
            (marks / f"done-{batch_ids[0]}-{os.getpid()}").touch()
            return result

    monkeypatch.setattr(zoo_probe, "ProbeWorker", CrashingProbeWorker)
    config = FAST.model_copy(update={"models_per_group": 3})  # one batch per task
    lines: list[str] = []
    on_ray = probe_zoo(tiny_zoo, tmp_path / "ray", config, workers=2, log=lines.append)
    assert (marks / "crashed").exists() and any("requeued" in line for line in lines)
    assert sorted({int(p.name.split("-")[1]) for p in marks.glob("done-*")}) == list(range(TINY.batches))
    assert on_ray["models"] == zoo_summary[0]["models"]
    probe_zoo(tiny_zoo, tmp_path / "local", config, log=lambda line: None)
    assert (tmp_path / "ray" / "probes.csv").read_text() == (tmp_path / "local" / "probes.csv").read_text()


def test_ray_job_entrypoint_probes_the_zoo_on_the_running_cluster(tiny_zoo, zoo_summary, ray_session, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_job", Path(__file__).parent.parent / "jobs/probe.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    recipe = tmp_path / "fast.yaml"
    recipe.write_text("epochs: 2\nval_every: 1\nrandom_twin: false\n")
    args = ["--data", str(tiny_zoo), "--out", str(tmp_path / "out"), "--config", str(recipe), "--workers", "2"]
    assert job.main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["models"] == zoo_summary[0]["models"] and (tmp_path / "out" / "summary.md").is_file()


def test_tune_sweep_runs_trials_through_ray_tune_and_writes_table_and_best_config(
    tiny_zoo, ray_session, tmp_path, monkeypatch
):
    from zoo.readers.probes.tune import tune_probes

    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    config = ProbeTuneConfig(
        overrides={"epochs": 2},
        space={"lr": {"loguniform": [1e-3, 1e-1]}, "weight_decay": {"choice": [0.0, 0.1]}},
        models=1,
        num_samples=2,
        grace_period=2,
    )
    outcome = tune_probes(tiny_zoo, config, out=tmp_path / "tune", verbose=0)
    assert len(outcome.rows) == 2 and all(row["epochs_run"] == 2 for row in outcome.rows)
    assert outcome.folder == tmp_path / "tune" and (tmp_path / "tune" / "results.md").is_file()
    with open(tmp_path / "tune" / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [float(r["best_val_accuracy"]) for r in table] == sorted((float(r["best_val_accuracy"]) for r in table), reverse=True)
    best = load_config(tmp_path / "tune" / "best_config.yaml", ProbeConfig)
    assert best.lr == pytest.approx(float(table[0]["lr"])) and best.weight_decay == float(table[0]["weight_decay"])
    assert best.control and best.val_every == ProbeConfig().val_every  # what trials fix is not the best recipe's


# ---------------------------------------------------------------- hookpoints and other families

MIXED_RECIPE = {
    "batches": 6,
    "architecture": [
        {"share": 0.5, "space": {"family": "mlp", "width": {"min": 6, "max": 10}}},
        {"share": 0.5, "space": {"family": "transformer", "d_model": [8, 16], "heads": [1, 2],
                                 "ffn": ["dense", "sparse"], "expansion": 4, "layers": {"min": 1, "max": 2}}},
    ],
    "patterns": {"train_size": 100, "val_size": 40, "benchmark_size": 100},
    "training": {"epochs": 2},
    "corruption": {"degraded_per_batch": 1, "min_degradation": 0.0},
    "storage": {"batches_per_shard": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory) -> Path:
    import zoo

    out = tmp_path_factory.mktemp("probe-mixed") / "zoo"
    zoo.generate(MIXED_RECIPE, out, workers=0, quiet=True)
    return out


def _families(path: Path) -> list[str]:
    from zoo.factory.reader import read_records

    return read_records(path, columns=["family"]).column("family").to_pylist()


def test_every_layer_carries_its_hookpoint_name():
    result = probe_model(ModelSpec(ARCH, planted_model(), planted_data(0)), PLANTED)
    assert {l: result.hookpoint(l) for l in result.layers} == {0: "input", 1: "layers.0.post", 2: "layers.1.post"}
    pre = probe_model(ModelSpec(ARCH, planted_model(), planted_data(0)), PLANTED.model_copy(update={"site": "pre", "layers": [2]}))
    assert pre.hookpoint(2) == "layers.1.pre" and pre.trained[2].hookpoint == "layers.1.pre"


def test_hookpoint_names_select_layers_beside_numbers():
    spec = ModelSpec(ARCH, planted_model(), planted_data(0))
    result = probe_model(spec, PLANTED.model_copy(update={"layers": ["layers.0.post", "head", 0]}))
    assert result.layers == [0, 1, 3] and result.hookpoint(3) == "head" and result.points[3].width == 1
    by_number = probe_model(ModelSpec(ARCH, planted_model(), planted_data(0)), PLANTED.model_copy(update={"layers": [0, 1]}))
    assert result.trained[1].accuracy == by_number.trained[1].accuracy  # the same probe, however it is named


def test_an_unknown_hookpoint_is_refused_in_one_line_naming_the_known_ones():
    spec = ModelSpec(ARCH, planted_model(), planted_data(0))
    with pytest.raises(ProbeError, match=r"unknown hookpoint 'layers.2.post': .* has input, layers.0.post, layers.1.post, head$"):
        probe_model(spec, PLANTED.model_copy(update={"layers": ["layers.2.post"]}))


def test_transformer_activations_are_the_modules_at_each_probe_point():
    from zoo.readers.probes.activations import collect_layers, probe_points
    from zoo.subjects.families import get_family
    from zoo.subjects.families.transformer import Architecture as TransformerArchitecture

    family = get_family("transformer")
    archs = [
        TransformerArchitecture(2, 16, 2, "dense", 4, 0, True, 7, 7),
        TransformerArchitecture(1, 8, 1, "dense", 4, 0, True, 7, 7),
        TransformerArchitecture(1, 8, 2, "sparse", 4, 2, True, 7, 7),
    ]
    weights = [family.init_weights(a, i) for i, a in enumerate(archs)]
    tokens = [np.random.default_rng(i).integers(0, 7, size=(40, 7)) for i in range(len(archs))]
    layers = [[p.layer for p in probe_points(a)] for a in archs]
    acts = collect_layers(archs, weights, tokens, layers, chunk=16)
    for arch, w, t, got in zip(archs, weights, tokens, acts):
        with torch.no_grad():
            own = family.build_module(arch, w).activations(torch.as_tensor(t))
        for point in probe_points(arch):
            np.testing.assert_allclose(got[point.layer], own[point.hookpoint].numpy(), atol=1e-5, rtol=1e-5)
    assert [p.hookpoint for p in probe_points(archs[1], "pre")] == ["embed", "blocks.0.ffn.pre", "blocks.0.resid", "head"]


def test_a_transformer_record_is_probed_at_its_hookpoints(mixed_zoo, tmp_path, capsys):
    families = _families(mixed_zoo)
    row = families.index("transformer")
    assert main(["probe", "model", "--data", str(mixed_zoo), "--row", str(row), "--out", str(tmp_path / "m"), "--epochs", "2"]) == 0
    assert "best layer" in capsys.readouterr().out
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    names = list(report["hookpoints"].values())
    assert names[0] == "embed" and names[1:3] == ["blocks.0.ffn.post", "blocks.0.resid"] and "head" not in names
    assert set(report["random_init"]["per_layer_accuracy"]) == set(report["hookpoints"])
    with open(tmp_path / "m" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["hookpoint"] for r in rows} == set(names)
    assert any(r["subject"] == "random" and r["hookpoint"] == "embed" for r in rows)  # a twin's embedding is its own
    _, meta = load_probe(tmp_path / "m" / "probe_layer_2.safetensors")
    assert meta["hookpoint"] == "blocks.0.resid" and meta["architecture"]["family"] == "transformer"

    code = main(["probe", "model", "--data", str(mixed_zoo), "--row", str(row), "--out", str(tmp_path / "n"),
                 "--epochs", "2", "--layers", "blocks.0.resid,embed", "--site", "pre"])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "n" / "report.json").read_text())["hookpoints"] == {"0": "embed", "2": "blocks.0.resid"}
    capsys.readouterr()
    code = main(["probe", "model", "--data", str(mixed_zoo), "--row", str(row), "--out", str(tmp_path / "o"), "--layers", "layers.0.post"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "unknown hookpoint 'layers.0.post'" in err and "embed, blocks.0.ffn.post, blocks.0.resid" in err


def test_a_mixed_zoo_is_probed_by_family(mixed_zoo, tmp_path, capsys):
    assert set(_families(mixed_zoo)) == {"mlp", "transformer"}
    code = main(["probe", "zoo", "--data", str(mixed_zoo), "--out", str(tmp_path / "z"), "--json", "--epochs", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["models"] == 2 * len(_families(mixed_zoo))
    with open(tmp_path / "z" / "probes.csv") as handle:
        rows = list(csv.DictReader(handle))
    hookpoints = {r["architecture"].split()[0]: set() for r in rows}
    for r in rows:
        hookpoints[r["architecture"].split()[0]].add(r["hookpoint"])
    assert {"input", "layers.0.post"} <= hookpoints["mlp"] and not any(h.startswith("blocks.") for h in hookpoints["mlp"])
    assert {"embed", "blocks.0.ffn.post", "blocks.0.resid"} <= hookpoints["transformer"]
    with open(tmp_path / "z" / "readability.csv") as handle:
        assert {r["family"] for r in csv.DictReader(handle)} == {"mlp", "transformer"}  # layer numbers differ by family


def test_a_transformer_records_activations_cache_names_their_hookpoints(mixed_zoo, tmp_path):
    from zoo.readers.probes.activations import read_hookpoints

    row = _families(mixed_zoo).index("transformer")
    assert main(["probe", "activations", "--data", str(mixed_zoo), "--row", str(row), "--out", str(tmp_path / "a.parquet")]) == 0
    labels, acts = read_activations(tmp_path / "a.parquet")
    names = read_hookpoints(tmp_path / "a.parquet")
    assert names[0] == "embed" and names[2] == "blocks.0.resid" and len(acts) == len(names)
    assert all(len(a) == len(labels) for a in acts)


def test_a_zoo_of_another_family_is_refused_in_one_line(tiny_zoo, monkeypatch):
    from zoo.readers.probes import activations
    from zoo.readers.probes.data import open_zoo

    monkeypatch.setattr(activations, "PROBED_FAMILIES", ("transformer",))
    with pytest.raises(ProbeError, match=r"^zoo probe reads transformer subjects; this zoo also holds \d+ mlp records$"):
        open_zoo(tiny_zoo)
