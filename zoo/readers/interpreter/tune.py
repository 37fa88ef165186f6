"""Ray Tune sweep of the interpreter's hyperparameters (``configs/tune/interpreter.yaml``).

The sweep itself (YAML shape, ASHA, the Tuner, the results table and the output folder)
is ``zoo.readers.tune``'s, the same for every reader; this module gives it the
interpreter's part. Each trial trains with the same ``train`` function as ``zoo interpret
train``, on the same shards, and reports every epoch (with the run folder as a
checkpoint), so ASHA can stop the weak trials early. A trial restarted by Tune resumes
from its last reported checkpoint. When the sweep ends, the sweep's folder holds
``results.csv``, ``results.md`` and the best trial's full interpreter config as
``best_config.yaml``, ready for ``zoo interpret train --config``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from zoo.config import shipped_config
from zoo.readers import tune as front
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.config import DEFAULT_CONFIG, InterpreterConfig
from zoo.readers.tune import Distribution, SweepResult
from zoo.storage import Store

DEFAULT_TUNE_CONFIG = shipped_config("tune/interpreter.yaml")


class TuneSettings(front.TuneSettings):
    """A sweep of the interpreter (``zoo.readers.tune.TuneSettings``, with the interpreter's defaults)."""

    base: str | None = Field(
        None, description="interpreter config the sampled values override (default: configs/readers/interpreter.yaml)"
    )
    overrides: dict = Field(
        {"epochs": 12, "threads": 1},
        description="fixed changes to the base config for every trial; its epochs are ASHA's max_t (one report per epoch)",
    )
    space: dict[str, Distribution] = Field(
        default_factory=lambda: {
            "optimizer.lr": Distribution(loguniform=(3e-4, 3e-3)),
            "model.width": Distribution(choice=[32, 64, 96]),
            "model.depth": Distribution(choice=[1, 2, 3]),
            "model.latent": Distribution(choice=[16, 32, 64]),
            "loss.corrupted": Distribution(uniform=(0.5, 2.0)),
            "loss.repair_function": Distribution(uniform=(0.25, 2.0)),
        },
        description="dotted interpreter-config field -> distribution",
    )
    metric: str = Field(
        "val_objective",
        description="a metric every epoch reports; val_objective sums the validation loss terms at unit weights, "
        "so trials that sample other loss weights compare fairly",
    )
    name: str = Field("interpreter", pattern=r"^[A-Za-z0-9_.-]+$", description="the sweep's folder under storage_path")


def _prepare(data_dir: str, settings: front.TuneSettings, base: dict) -> dict:
    """Refuse, before any trial, a zoo whose validation split cannot report a ``val_`` metric.

    Trials get the zoo's ``Store`` (a folder or object storage; pickled without credentials)."""
    from zoo.readers.interpreter.data import open_source

    source = open_source(data_dir)
    if settings.metric.startswith("val_") and source.rows(base["data"]["val_split"]) == 0:
        raise InterpreterError(f"{data_dir}: the {base['data']['val_split']} split is empty, so {settings.metric} is never reported")
    return {"data_dir": source.store}


def _trainable(config: InterpreterConfig, trial: front.Trial, *, data_dir: Store) -> None:
    """One trial: the shared training loop, reporting each epoch to Tune with the run folder as a checkpoint."""
    from zoo.readers.interpreter.train import copy_run, train

    run_dir = Path(tempfile.mkdtemp(prefix="interpreter-trial-"))
    with trial.restored() as folder:
        if folder is not None:
            copy_run(folder, run_dir)

    def report(epoch: int, metrics: dict, folder: Path) -> None:
        with tempfile.TemporaryDirectory() as staging:
            copy_run(folder, Path(staging))
            trial.report(metrics, checkpoint=Path(staging))

    train(config, data_dir, run_dir, progress=False, on_epoch=report)


SWEEP = front.Sweep(
    reader="interpreter",
    config_model=InterpreterConfig,
    default_base=DEFAULT_CONFIG,
    error=InterpreterError,
    trainable=_trainable,
    prepare=_prepare,
    command="zoo interpret train --config",
)


def load_tune_settings(path: str | Path, overrides: dict | None = None) -> tuple[TuneSettings, dict]:
    """Settings and the validated base config; every sampled field is checked against the interpreter config."""
    return front.load_settings(SWEEP, path, TuneSettings, overrides)  # type: ignore[return-value]


def trial_config(base: dict, sampled: dict) -> InterpreterConfig:
    """The base config with a trial's sampled values (dotted keys) applied."""
    return front.trial_config(SWEEP, base, sampled)  # type: ignore[return-value]


def run_tune(
    data_dir: str | Path,
    settings: TuneSettings,
    base: dict,
    *,
    out: str | Path | None = None,
    address: str | None = None,
    console=None,
    verbose: int = 1,
) -> SweepResult:
    """Run the sweep (``zoo.readers.tune.run_sweep``); with a console, print the best trials and the files."""
    result = front.run_sweep(SWEEP, data_dir, settings, base, out=out, address=address, verbose=verbose)
    if console is not None:
        front.render(result, console)
    return result


__all__ = ["DEFAULT_TUNE_CONFIG", "SWEEP", "Distribution", "TuneSettings", "load_tune_settings", "run_tune", "trial_config"]
