"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: starting Ray per test is slow and flaky."""
    ray = pytest.importorskip("ray")
    # address="local": always a fresh local Ray, never a cluster some other process started here
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


TINY_ZOO = {
    "name": "tiny",
    "seed": 3,
    "batches": 6,
    "patterns": {"train_size": 100, "val_size": 40, "benchmark_size": 100},
    "architecture": {"layers": {"min": 1, "max": 2}, "width": {"min": 8, "max": 12}},
    "training": {"epochs": 3},
    "corruption": {"degraded_per_batch": 2, "min_degradation": 0.0},
    "storage": {"batches_per_shard": 2},
}


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


@pytest.fixture(scope="session")
def make_config():
    """Build a tiny ``ZooConfig`` with nested overrides, e.g. ``make_config(batches=4, runtime={"workers": 0})``."""
    from zoo.config import ZooConfig, parse_config

    def make(**overrides) -> ZooConfig:
        return parse_config(_merge(TINY_ZOO, overrides), ZooConfig)

    return make


@pytest.fixture
def zoo_yaml(tmp_path):
    """Write a tiny zoo config (fast: 6 batches of 3 models, 2 batches per shard) as YAML; returns its path.

    Call it with nested overrides, e.g. ``zoo_yaml(batches=4, runtime={"workers": 0})``.
    """
    import yaml

    def write(filename: str = "zoo.yaml", **overrides) -> Path:
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(_merge(TINY_ZOO, overrides)))
        return path

    return write
