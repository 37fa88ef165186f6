"""`zoo bench` trains the same models both ways and reports one comparable JSON object."""

from __future__ import annotations

import json

import pytest

from zoo.cli import main

TINY = """
patterns: {train_size: 200, val_size: 60, benchmark_size: 100}
architecture: {layers: {min: 1, max: 2}, width: {min: 6, max: 10}}
training: {epochs: 4}
"""


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
