"""`zoo bench` trains the same models both ways and reports one comparable JSON object."""

from __future__ import annotations

import json

import pytest
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
