"""A mixed zoo (MLPs and transformers) survives a killed driver: SIGKILL mid-run, rerun, and the
zoo is complete, every batch exactly once, its records equal to an undisturbed run's.

The resume machinery (manifest, immutable shards, the runner skipping listed batches) knows
nothing of families; this checks that nothing a transformer batch writes breaks that, e.g.
a plan or a seed that depends on which batches already ran.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from test_generate import cli, listed_batches
from test_generate import kill_once_listed as kill_driver

from zoo.cli import main
from zoo.config import load_config
from zoo.factory.plan import plan_batch
from zoo.factory.reader import read_records, verify
from zoo.factory.runner import generate
from zoo.factory.schema import content_hash

pytestmark = pytest.mark.slow

# One batch per shard, each a second or more on a shared core: long enough to be caught mid-run.
# Batches 0-2 and 7-9 draw MLPs, 3-6 transformers: the kill comes after the first transformer
# shard, so both families are finished before it and left for the rerun.
MIXED_KILL_ZOO = {
    "name": "mixed-killme",
    "batches": 10,
    "architecture": [
        {"share": 0.5, "space": {"family": "mlp", "width": {"min": 16, "max": 24}}},
        {"share": 0.5, "space": {"family": "transformer", "d_model": [16], "heads": [2], "layers": {"min": 1, "max": 2},
                                 "ffn": ["dense", "sparse"], "expansion": 4}},
    ],
    "patterns": {"train_size": 300, "val_size": 60},
    "training": {"epochs": 4},
    "corruption": {"degraded_per_batch": 2},
    "storage": {"batches_per_shard": 1},
}  # fmt: skip


def kill_once_listed(config_path, out, shards: int) -> None:
    """Run ``zoo generate`` in a subprocess and SIGKILL it once the manifest lists ``shards`` shards."""
    proc = cli("generate", "--config", str(config_path), "--out", str(out), "--workers", "0",
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_driver(proc, out, shards, timeout=180)
    assert proc.returncode == -signal.SIGKILL


def test_a_killed_driver_of_a_mixed_zoo_loses_nothing_and_the_rerun_completes(zoo_yaml, tmp_path):
    config_path = zoo_yaml("mixed-kill.yaml", **MIXED_KILL_ZOO)
    out = tmp_path / "out"
    config = load_config(config_path, overrides={"runtime": {"workers": 0}})
    family = [plan_batch(config, b).architecture.family for b in range(config.batches)]
    first_transformer = family.index("transformer")
    kill_once_listed(config_path, out, shards=first_transformer + 1)  # one batch per shard, made in order
    done = set(listed_batches(out))
    assert "transformer" in {family[b] for b in done}, "the kill came before any transformer shard was listed"
    assert {family[b] for b in range(config.batches) if b not in done} == {"mlp", "transformer"}

    assert main(["generate", "--config", str(config_path), "--out", str(out), "--workers", "0"]) == 0
    assert listed_batches(out) == list(range(MIXED_KILL_ZOO["batches"]))  # each batch exactly once
    assert verify(out) == []
    records = read_records(out)
    keys = list(zip(records.column("batch_id").to_pylist(), records.column("pair_index").to_pylist()))
    assert len(set(keys)) == len(keys) and {b for b, _ in keys} == set(range(config.batches))  # no record twice
    assert set(records.column("family").to_pylist()) == {"mlp", "transformer"}

    undisturbed = tmp_path / "undisturbed"
    generate(config, undisturbed)
    assert content_hash(records) == content_hash(read_records(undisturbed))
