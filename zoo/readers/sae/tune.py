"""A Ray Tune (ASHA) sweep of the SAE recipe (``configs/tune/sae.yaml``): ``zoo tune sae``.

The sweep itself (YAML shape, ASHA, the Tuner, the results table and the output folder)
is ``zoo.readers.tune``'s, the same for every reader; this module gives it the SAEs' part.
The driver reads the zoo's first ``models`` subjects at the base recipe's hookpoints once
(``prepare``: what is read is fixed by the base, never sampled); every trial trains the
recipe's grid on every stream as one padded stack and reports after every evaluation round
(an "epoch": ``eval_every`` steps) the mean held-out ``val_fvu``, ``val_objective``,
``val_l0`` and ``val_dead_fraction`` over its coders. A trial trains one kind (a stack holds one).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from zoo.readers import tune as front
from zoo.readers.sae.config import DEFAULT_CONFIG, SAERecipe, SAETuneConfig
from zoo.readers.sae.spec import SAEError
from zoo.readers.tune import SweepResult


def _prepare(data_dir: Path, settings: SAETuneConfig, base: dict) -> dict:
    from zoo.readers.sae.run import zoo_corpus
    from zoo.readers.sae.subjects import collect_streams, zoo_subjects

    recipe: SAERecipe = front.trial_config(SWEEP, base, {})  # type: ignore[assignment]
    corpus = zoo_corpus(data_dir, recipe)
    subjects = zoo_subjects(data_dir, corpus, recipe.which, settings.models)
    streams = collect_streams(subjects, corpus, recipe.hookpoints, recipe.val_share, recipe.split_seed)
    for stream in streams.streams:  # refuse a grid that cannot be trained here, not inside a trial
        from zoo.readers.sae.spec import check_specs

        check_specs([stream], recipe.specs(stream.name, stream.d_in))
    return {"streams": streams.streams}


def _trainable(config: SAERecipe, trial: front.Trial, *, streams: list) -> None:
    from zoo.readers.sae.train import train_population

    if len(config.kinds) != 1:
        raise SAEError(f"a trial trains one kind, got kinds {config.kinds}")
    specs = [spec for s in streams for spec in config.specs(s.name, s.d_in)]

    def report(step: int, _labels: list[str], metrics: dict) -> None:
        trial.report({"epoch": step // config.eval_every, **{f"val_{k}": float(np.mean(v)) for k, v in metrics.items()}})

    train_population(streams, specs, dataclasses.replace(config.train_config(), bucket=False), on_eval=report)


SWEEP = front.Sweep(
    reader="sae",
    config_model=SAERecipe,
    default_base=DEFAULT_CONFIG,
    error=SAEError,
    trainable=_trainable,
    prepare=_prepare,
    command="zoo sae train ... --config",
)


def tune_sae(
    data_dir: str | Path,
    config: SAETuneConfig,
    out: str | Path | None = None,
    num_samples: int | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run the sweep on the zoo in ``data_dir`` (``zoo.readers.tune.sweep_with``); ``out``: the sweep's folder."""
    return front.sweep_with(SWEEP, data_dir, config, out, num_samples, address, verbose)
