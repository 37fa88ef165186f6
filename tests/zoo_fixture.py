"""A tiny real zoo for the export tests, built the way the runner builds one (about a second on 2 cores).

Import the fixtures into a test module: ``from zoo_fixture import tiny_zoo, zoo_copy  # noqa: F401``.
``tiny_zoo`` is shared and must not be written to; ``zoo_copy`` is a fresh copy per test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from zoo.config import ZooConfig, _merge, parse_config
from zoo.factory.runner import generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# The one tiny-zoo recipe every test builds from (seconds on 2 cores); tests override what they need.
RECIPE = {
    "batches": 8,
    "architecture": {"layers": {"min": 1, "max": 2}, "width": {"min": 6, "max": 10}},
    "patterns": {"train_size": 100, "val_size": 40, "benchmark_size": 100},
    "training": {"epochs": 3},
    "corruption": {"degraded_per_batch": 2, "min_degradation": 0.0},
    "storage": {"batches_per_shard": 2},
}


def tiny_recipe(**overrides) -> dict:
    """``RECIPE`` with nested overrides, e.g. ``tiny_recipe(training={"epochs": 5})``."""
    return _merge(RECIPE, overrides)


def tiny_config(**overrides) -> ZooConfig:
    return parse_config(tiny_recipe(**overrides), ZooConfig)


TINY = tiny_config()

_BUILT: dict[str, Path] = {}


def build_zoo(out: Path, config: ZooConfig = TINY) -> Path:
    """Every batch of ``config``, made by the runner in this process (no Ray): shards, manifest,
    config.yaml and probe.parquet."""
    in_process = config.model_copy(update={"runtime": config.runtime.model_copy(update={"workers": 0})})
    generate(in_process, out, console=Console(quiet=True))
    return out


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """The shared tiny zoo (built once per session, whichever module asks first). Read only."""
    if "tiny" not in _BUILT:
        _BUILT["tiny"] = build_zoo(tmp_path_factory.mktemp("tiny-zoo") / "zoo")
    return _BUILT["tiny"]


@pytest.fixture
def zoo_copy(tiny_zoo, tmp_path) -> Path:
    """A private copy of the tiny zoo that a test may write into."""
    return Path(shutil.copytree(tiny_zoo, tmp_path / "zoo"))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``zoo ARGS`` in-process: exit code, stdout, stderr."""
    from zoo.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
