"""``zoo tune interpreter``: settings validation and a two-trial ASHA sweep on the tiny zoo."""

from __future__ import annotations

import os

import pytest
import yaml

from interpreter_fixture import TINY_INTERPRETER, interp_zoo, mixed_zoo  # noqa: F401

from zoo.config import ConfigError


def _write(tmp_path, **settings):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(TINY_INTERPRETER))
    data = {
        "base": str(base),
        "overrides": {"epochs": 2},
        "space": {"optimizer.lr": {"loguniform": [0.001, 0.01]}, "model.latent": {"choice": [8, 16]}},
        "num_samples": 2,
        "grace_period": 1,
        "storage_path": str(tmp_path / "results"),
        "name": "sweep",
        **settings,
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_space_must_name_interpreter_fields(tmp_path):
    from zoo.readers.interpreter import InterpreterError
    from zoo.readers.interpreter.tune import load_tune_settings

    with pytest.raises(InterpreterError, match="space.model.widht"):
        load_tune_settings(_write(tmp_path, space={"model.widht": {"choice": [8]}}))
    with pytest.raises(ConfigError, match="space.optimizer.lr"):
        load_tune_settings(_write(tmp_path, space={"optimizer.lr": {"loguniform": [0.01, 0.001]}}))


def test_shipped_tune_config_is_valid():
    from zoo.readers.interpreter.tune import DEFAULT_TUNE_CONFIG, load_tune_settings

    settings, base = load_tune_settings(DEFAULT_TUNE_CONFIG)
    assert settings.space and base["epochs"] == settings.overrides["epochs"]


def test_sweep_reports_every_epoch_and_writes_the_best_config(ray_session, interp_zoo, tmp_path):
    from zoo.readers.interpreter.config import load_interpreter_config
    from zoo.readers.interpreter.tune import load_tune_settings, run_tune

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    settings, base = load_tune_settings(_write(tmp_path))
    result = run_tune(interp_zoo, settings, base, verbose=0)
    assert len(result.rows) == 2
    # training_iteration counts reports: a trial that ran both epochs reported after each
    assert max(row["epochs_run"] for row in result.rows) == 2
    assert all(1 <= row["epochs_run"] <= 2 for row in result.rows)
    # the layout every reader's sweep shares: <storage_path>/<name>/{results.csv, results.md, best_config.yaml}
    folder = tmp_path / "results" / "sweep"
    assert result.folder == folder and result.best_config_path == folder / "best_config.yaml"
    best = load_interpreter_config(folder / "best_config.yaml")
    assert best.model.latent == result.best["model.latent"]
    assert best.optimizer.lr == pytest.approx(result.best["optimizer.lr"])
    assert (folder / "results.md").is_file() and (folder / "results.csv").read_text().startswith("trial,best_val_objective,")


def test_a_sweep_runs_on_a_mixed_zoo(ray_session, mixed_zoo, tmp_path):  # noqa: F811
    """The same sweep over MLPs and transformers together: every trial trains and reports."""
    from zoo.readers.interpreter.tune import load_tune_settings, run_tune

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    settings, base = load_tune_settings(_write(tmp_path, num_samples=1, overrides={"epochs": 1}))
    result = run_tune(mixed_zoo, settings, base, verbose=0)
    assert len(result.rows) == 1 and result.rows[0]["epochs_run"] == 1
    assert result.best_config_path.is_file()
