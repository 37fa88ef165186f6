"""A Ray Tune (ASHA) sweep of the probe recipe (``configs/tune/probes.yaml``).

The sweep itself (YAML shape, ASHA, the Tuner, the results table and the output folder)
is ``zoo.readers.tune``'s, the same for every reader; this module gives it the probes'
part. Every trial probes all layers of the clean models of the zoo's first ``models``
batches as one batched computation (one trial, a whole population of probes: per-trial
overhead is paid once), validates every epoch without controls or twins, and reports
per epoch ``val_accuracy`` (best layer per model, mean over models) and ``val_loss``
(same layer). The sweep's folder ends with ``results.csv``, ``results.md`` and the best
trial's recipe as ``best_config.yaml``, ready for ``zoo probe ... --config``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.readers import tune as front
from zoo.readers.probes.config import DEFAULT_CONFIG, ProbeConfig, ProbeTuneConfig
from zoo.readers.probes.data import ProbeError, open_zoo
from zoo.readers.probes.probe import ModelSpec, feature_sets
from zoo.readers.probes.train import train_probes
from zoo.readers.tune import SweepResult

RESULTS_FILE = front.RESULTS_CSV
BEST_FILE = front.BEST_FILE


def _prepare(data_dir: Path, settings: ProbeTuneConfig, base: dict) -> dict:
    """The clean model of each of the zoo's first ``settings.models`` batches, checked here, in one line."""
    from zoo.readers.probes.probe import prepare
    from zoo.readers.probes.zoo_probe import row_spec, zoo_layers

    zoo = open_zoo(data_dir)
    if zoo.n_rows == 0:
        raise ProbeError(f"{data_dir}: the zoo holds no records to probe")
    config: ProbeConfig = front.trial_config(SWEEP, base, {})  # type: ignore[assignment]
    firsts: dict[int, dict] = {}
    for row in zoo.rows():
        firsts.setdefault(int(row["batch_id"]), row)
    chosen = [firsts[b] for b in sorted(firsts)[: settings.models]]
    specs = [zoo_layers(row_spec(zoo, row, "clean", config), config) for row in chosen]
    for spec in specs:  # fail here, in one line, not inside a trial
        prepare(spec, config)
    return {"specs": specs}


def _trainable(config: ProbeConfig, trial: front.Trial, *, specs: list[ModelSpec]) -> None:
    """One trial: the whole population of probes with the trial's recipe; a report after every epoch."""
    prep = feature_sets(specs, config)
    specs, sets, keys = prep.specs, prep.sets, prep.keys
    owners = np.array([key.model for key in keys])
    hidden = np.array([key.layer > 0 for key in keys])

    def report(epoch: int, info: dict) -> None:
        acc, loss = info["val_accuracy"][:, 0], info["val_loss"][:, 0]
        per_model_acc, per_model_loss = [], []
        for m in range(len(specs)):
            mine = np.flatnonzero((owners == m) & hidden) if ((owners == m) & hidden).any() else np.flatnonzero(owners == m)
            best = mine[np.argmax(acc[mine])]
            per_model_acc.append(acc[best])
            per_model_loss.append(loss[best])
        trial.report(
            {
                "epoch": epoch,
                "val_accuracy": float(np.mean(per_model_acc)),
                "val_loss": float(np.mean(per_model_loss)),
                "train_loss": float(np.mean(info["train_loss"][:, 0])),
            }
        )

    train_probes(sets, config, on_epoch=report)


SWEEP = front.Sweep(
    reader="probes",
    config_model=ProbeConfig,
    default_base=DEFAULT_CONFIG,
    error=ProbeError,
    trainable=_trainable,
    prepare=_prepare,
    trial_fixed={"control": False, "random_twin": False, "val_every": 1},
    command="zoo probe ... --config",
)


def tune_probes(
    data_dir: str | Path,
    config: ProbeTuneConfig,
    out: str | Path | None = None,
    num_samples: int | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run the sweep on the zoo in ``data_dir`` (``zoo.readers.tune.sweep_with``); ``out``: the sweep's folder."""
    return front.sweep_with(SWEEP, data_dir, config, out, num_samples, address, verbose)
