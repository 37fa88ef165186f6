"""`zoo bench` trains the same models both ways and reports one comparable JSON object."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from zoo_fixture import tiny_recipe

from zoo import bench
from zoo.cli import main

TINY = yaml.safe_dump(tiny_recipe(patterns={"train_size": 200, "val_size": 60, "benchmark_size": 100}, training={"epochs": 4}))


def test_bench_json_has_the_documented_keys_and_agreeing_accuracies(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["bench", "--config", str(config), "--models", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("population_models_per_s", "reference_models_per_s", "speedup", "population_accuracy", "reference_accuracy"):
        assert key in result
    assert result["speedup"] == pytest.approx(result["population_models_per_s"] / result["reference_models_per_s"])
    assert abs(result["population_accuracy"] - result["reference_accuracy"]) < 0.01
    assert result["models"] == 6


def test_reference_can_train_a_subset_and_throughputs_stay_per_model(tmp_path, capsys, monkeypatch):
    """On a GPU the population trains thousands; the sequential reference is timed on a few."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    trained = []
    reference = bench._reference_logits
    monkeypatch.setattr(bench, "_reference_logits", lambda job, *a: trained.append(job) or reference(job, *a))
    assert main(["bench", "--config", str(config), "--models", "6", "--reference-models", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(trained) == 1 + 2  # the warm-up, then the first two models
    assert (result["models"], result["reference_models"]) == (6, 2)
    assert result["reference_models_per_s"] == pytest.approx(2 / result["reference_seconds"])
    assert result["population_models_per_s"] == pytest.approx(6 / result["population_seconds"])
    assert result["speedup"] == pytest.approx(result["population_models_per_s"] / result["reference_models_per_s"])
    assert abs(result["population_accuracy"] - result["reference_accuracy"]) < 0.01


@pytest.mark.parametrize("flags", [["--models", "0"], ["--models", "3", "--reference-models", "4"]])
def test_bench_refuses_impossible_counts_in_one_line(tmp_path, capsys, flags):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["bench", "--config", str(config), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error: bench: --") and "\n" not in err


def test_bench_with_the_vmap_peer_reports_three_trainers_and_the_limit(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["bench", "--config", str(config), "--models", "6", "--peer", "vmap", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["vmap_models_per_s"] == pytest.approx(6 / result["vmap_seconds"])
    assert abs(result["vmap_accuracy"] - result["reference_accuracy"]) < 0.01
    assert result["matmul_limit_seconds"] > 0
    assert result["population_share_of_limit"] == pytest.approx(result["matmul_limit_seconds"] / result["population_seconds"])
    assert main(["bench", "--config", str(config), "--models", "2", "--json"]) == 0
    assert "vmap_models_per_s" not in json.loads(capsys.readouterr().out)  # only with --peer


def test_the_vmap_peer_trains_what_the_reference_trains():
    """Grouped by depth and activation and padded to the widest, with the padding's gradient masked."""
    from test_population import CONFIG, make_jobs

    from zoo.subjects.families.mlp import Architecture
    from zoo.subjects.mlp import flatten_model
    from zoo.subjects.population import init_weights
    from zoo.subjects.reference import train_reference
    from zoo.subjects.vmap_peer import peer_groups, train_vmap

    archs = [Architecture(1, (6,), "relu", 5, 5), Architecture(1, (9,), "relu", 5, 5),
             Architecture(2, (5, 7), "sigmoid", 5, 5), Architecture(2, (7, 4), "sigmoid", 5, 5)]
    jobs = make_jobs(archs)
    assert peer_groups(archs) == [[0, 1], [2, 3]]
    for job, weights in zip(jobs, train_vmap(jobs, CONFIG, torch.device("cpu"))):
        model, _, _ = train_reference(job.architecture, init_weights(job.architecture, job.init_seed),
                                      job.train_tokens, job.train_labels, job.val_tokens, job.val_labels,
                                      CONFIG, job.lr, job.order_seed)
        np.testing.assert_allclose(flatten_model(model), weights, atol=1e-5)


def test_the_limit_counts_every_bmm_the_trainer_issues():
    from collections import Counter

    from test_population import CONFIG, make_jobs
    from torch.overrides import TorchFunctionMode

    from zoo.subjects import fit
    from zoo.subjects.train import train_group

    class CountBmm(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.bmm, torch.baddbmm):
                CountBmm.calls += 1
            return func(*args, **(kwargs or {}))

    counts = Counter()
    fit.MATMULS = counts
    try:
        with CountBmm():
            train_group(make_jobs(), CONFIG, torch.device("cpu"))
    finally:
        fit.MATMULS = None
    assert CountBmm.calls == sum(counts.values()) > 0
    assert bench.matmul_limit(counts, torch.device("cpu"), sample=0.01) > 0
