"""Configuration: YAML files are instances of the pydantic models; bad input is one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main
from zoo.config import ConfigError, ZooConfig, load_config, parse_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "zoo").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_zoo_config_is_valid(path):
    assert load_config(path).name == path.stem  # read from the file, not the defaults


def test_default_yaml_spells_out_the_built_in_defaults():
    shipped = load_config(CONFIGS / "zoo" / "default.yaml")
    assert shipped.model_dump(exclude={"name", "batches"}) == ZooConfig().model_dump(exclude={"name", "batches"})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"patterns": {"per_batch": {"min": 5, "max": 2}}}, "patterns.per_batch: min (5) > max (2)"),
        ({"architecture": {"width": {"min": 40, "max": 25}}}, "architecture.width: min (40) > max (25)"),
        ({"patterns": {"names": ["nope"]}}, "patterns.names: unknown pattern 'nope'"),
        ({"patterns": {"vocab_size": 5}}, "patterns.end_token: token G is outside the vocabulary A..E"),
        ({"training": {"epochs": 0}}, "training.epochs: Input should be greater than or equal to 1"),
        ({"trainig": {}}, "trainig: unknown key"),
        ({"corruption": {"rate": {"min": 0.5, "max": 1.5}}}, "corruption.rate: must lie in (0, 1]"),
        ({"batches": 10**12}, "batches: Input should be less than or equal to 1000000000"),
        ({"seed": 2**64}, "seed: Input should be less than or equal to 9223372036854775807"),
        ({"training": {"lr": {"min": float("nan"), "max": 0.1}}}, "training.lr.min: Input should be a finite number"),
        ({"training": {"lr": {"min": 1e-3, "max": float("inf")}}}, "training.lr.max: Input should be a finite number"),
        ({"architecture": {"width": {"min": 4, "max": 10**6}}}, "architecture.width.max: at most 4096 units"),
        ({"architecture": {"layers": {"min": 1, "max": 100_000}}}, "architecture.layers.max: at most 16 hidden layers"),
        ({"patterns": {"train_size": 10**9}}, "patterns.train_size: Input should be less than or equal to 10000000"),
    ],
)
def test_bad_values_name_the_field(data, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_config_hash_ignores_runtime_and_batch_count():
    base = ZooConfig()
    assert base.content_hash() == ZooConfig(batches=99, runtime={"workers": 7}).content_hash()
    assert base.content_hash() != ZooConfig(seed=1).content_hash()


def test_cli_reports_a_bad_config_on_one_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batch_size: -3\n")
    assert main(["bench", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.batch_size" in err[0]


def test_cli_reports_invalid_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    assert main(["bench", "--config", str(bad)]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_cli_reports_a_missing_config(tmp_path, capsys):
    assert main(["bench", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
