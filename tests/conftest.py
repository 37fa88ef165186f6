"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from zoo_fixture import _merge, tiny_recipe


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: starting Ray per test is slow and flaky."""
    ray = pytest.importorskip("ray")
    # address="local": always a fresh local Ray, never a cluster some other process started here
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


TINY_ZOO = tiny_recipe(name="tiny", seed=3, batches=6, architecture={"width": {"min": 8, "max": 12}})


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
