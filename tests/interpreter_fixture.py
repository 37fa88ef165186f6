"""A tiny real zoo and a tiny trained interpreter, shared by the interpreter tests.

Import the fixtures into a test module:
``from interpreter_fixture import interp_zoo, interp_run, tiny_config  # noqa: F401``.
Both are built once per session and must not be written to; a test that writes into a run
(an evaluation's report, its predictions) takes ``run_copy``, a fresh copy of ``interp_run``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo_fixture import build_zoo
from zoo_fixture import tiny_config as tiny_zoo_config

ZOO = tiny_zoo_config(
    name="interp",
    architecture={"width": {"min": 8, "max": 12}},
    patterns={"train_size": 300, "val_size": 60, "benchmark_size": 200},
    training={"epochs": 5},
)

TINY_INTERPRETER = {
    "seed": 0,
    "epochs": 30,
    "batch_size": 4,
    "eval_batch_size": 16,
    "device": "cpu",
    "threads": 1,
    # decoder_reads_gradient and repair_fresh are pinned at their pre-run-version-2 defaults: the tiny run
    # stays as it was when the defaults became the shipped recipe's (the tests that need them set them)
    "model": {"width": 32, "depth": 1, "heads": 2, "latent": 16, "answer_width": 16, "answer_reader": "per_pattern", "decoder_width": 32, "decoder_rank": 8, "decoder_reads_gradient": False},
    "optimizer": {"lr": 0.003, "warmup_steps": 5},
    "data": {"repair_per_pattern": 4, "repair_random": 16, "repair_fresh": False},
    "baselines": {"hidden": 16, "epochs": 50},
}

_BUILT: dict[str, Path] = {}


def tiny_config(**overrides):
    from zoo.config import _merge, parse_config
    from zoo.readers.interpreter.config import InterpreterConfig

    return parse_config(_merge(TINY_INTERPRETER, overrides), InterpreterConfig)


@pytest.fixture(scope="session")
def interp_zoo(tmp_path_factory) -> Path:
    """8 batches, 16 records, stored splits (batch-grouped; every split but the OOD ones non-empty)."""
    if "zoo" not in _BUILT:
        from zoo.export.splits import SplitOptions, write_splits

        out = build_zoo(tmp_path_factory.mktemp("interp-zoo") / "zoo", ZOO)
        write_splits(out, SplitOptions(validation=0.15, test=0.15))
        _BUILT["zoo"] = out
    return _BUILT["zoo"]


@pytest.fixture(scope="session")
def interp_run(interp_zoo, tmp_path_factory) -> Path:
    """A tiny interpreter trained on the tiny zoo (a few seconds)."""
    if "run" not in _BUILT:
        from zoo.readers.interpreter.train import train

        run = tmp_path_factory.mktemp("interp-run") / "run"
        train(tiny_config(), interp_zoo, run, progress=False)
        _BUILT["run"] = run
    return _BUILT["run"]


@pytest.fixture
def run_copy(interp_run, tmp_path) -> Path:
    """A copy of ``interp_run`` this test may write to."""
    import shutil

    return Path(shutil.copytree(interp_run, tmp_path / "run"))


# A tiny mixed zoo: half the batches MLPs, half one-block transformers of width 8 (a few seconds to build).
MIXED_ZOO = tiny_zoo_config(
    name="interp-mixed",
    batches=10,
    architecture=[
        {"share": 0.5, "space": {"family": "mlp", "layers": {"min": 1, "max": 2}, "width": {"min": 8, "max": 12}}},
        {
            "share": 0.5,
            "space": {"family": "transformer", "layers": {"min": 1, "max": 1}, "d_model": [8], "heads": [2]},
            "training": {"epochs": 3, "lr": {"min": 0.003, "max": 0.003}, "weight_decay": 0.01},
        },
    ],
    patterns={"train_size": 300, "val_size": 60, "benchmark_size": 200},
    training={"epochs": 5},
)


@pytest.fixture(scope="session")
def mixed_zoo(tmp_path_factory) -> Path:
    """10 batches of both families, 20 records, stored splits (batch-grouped). Read only."""
    if "mixed" not in _BUILT:
        from zoo.export.splits import SplitOptions, write_splits

        out = build_zoo(tmp_path_factory.mktemp("interp-mixed") / "zoo", MIXED_ZOO)
        write_splits(out, SplitOptions(validation=0.2, test=0.2))
        _BUILT["mixed"] = out
    return _BUILT["mixed"]
