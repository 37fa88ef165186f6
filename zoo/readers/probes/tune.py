"""A Ray Tune (ASHA) sweep of the probe recipe.

Every trial probes all layers of the clean models of the zoo's first
``models`` batches as one batched computation (one trial, a whole population of
probes: per-trial overhead is paid once), validates every epoch, and reports per
epoch ``val_accuracy`` (best layer per model, mean over models), ``val_loss``
(same layer) and ``best_val_accuracy`` (best so far). ASHA stops weak trials on
``metric``. The sweep ends with a table (``tune_results.csv``) and the best
trial's recipe as a ready-to-use probe config (``best_config.yaml``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from zoo.readers.probes.config import ProbeConfig, ProbeTuneConfig, SearchDimension
from zoo.readers.probes.data import ProbeError, open_zoo
from zoo.readers.probes.probe import ModelSpec, feature_sets
from zoo.readers.probes.train import train_probes

RESULTS_FILE = "tune_results.csv"
BEST_FILE = "best_config.yaml"


def trial_config(base: ProbeConfig, params: dict[str, Any]) -> ProbeConfig:
    """The recipe of a trial: ``base`` with the sampled hyperparameters, validated every epoch, no controls."""
    update: dict[str, Any] = {"control": False, "random_twin": False, "val_every": 1}
    for key in ("lr", "weight_decay", "epochs", "eps", "optimizer", "batch_size"):
        if key in params:
            update[key] = params[key]
    if "beta1" in params or "beta2" in params:
        update["betas"] = (float(params.get("beta1", base.betas[0])), float(params.get("beta2", base.betas[1])))
    scheduler = {}
    if "plateau_factor" in params:
        scheduler["factor"] = params["plateau_factor"]
    if "plateau_patience" in params:
        scheduler["patience"] = params["plateau_patience"]
    if scheduler:
        update["scheduler"] = base.scheduler.model_copy(update=scheduler)
    data = base.model_dump()
    data.update(update)
    return ProbeConfig.model_validate(data)


def _dimension(dim: SearchDimension):
    from ray import tune

    if dim.loguniform is not None:
        return tune.loguniform(*dim.loguniform)
    if dim.uniform is not None:
        return tune.uniform(*dim.uniform)
    if dim.randint is not None:
        return tune.randint(*dim.randint)
    return tune.choice(list(dim.choice))


def max_epochs(config: ProbeTuneConfig) -> int:
    dim = config.search_space.get("epochs")
    if dim is None:
        return config.probe.epochs
    if dim.choice is not None:
        return int(max(dim.choice))
    if dim.randint is not None:
        return int(dim.randint[1]) - 1
    return int((dim.uniform or dim.loguniform)[1])


def run_trial(params: dict, specs: list[ModelSpec], base: ProbeConfig, threads: int = 1) -> None:
    """One trial: the whole population of probes with ``params``; ``tune.report`` after every epoch."""
    import torch
    from ray import tune

    torch.set_num_threads(threads)
    params = dict(params)
    if "epochs" in params:
        params["epochs"] = int(round(params["epochs"]))
    config = trial_config(base, params)
    prep = feature_sets(specs, config)
    specs, sets, keys = prep.specs, prep.sets, prep.keys
    owners = np.array([key.model for key in keys])
    hidden = np.array([key.layer > 0 for key in keys])
    best_so_far = [-1.0]

    def report(epoch: int, info: dict) -> None:
        acc, loss = info["val_accuracy"][:, 0], info["val_loss"][:, 0]
        per_model_acc, per_model_loss = [], []
        for m in range(len(specs)):
            mine = np.flatnonzero((owners == m) & hidden) if ((owners == m) & hidden).any() else np.flatnonzero(owners == m)
            best = mine[np.argmax(acc[mine])]
            per_model_acc.append(acc[best])
            per_model_loss.append(loss[best])
        mean_acc = float(np.mean(per_model_acc))
        best_so_far[0] = max(best_so_far[0], mean_acc)
        tune.report(
            {
                "epoch": epoch,
                "val_accuracy": mean_acc,
                "val_loss": float(np.mean(per_model_loss)),
                "best_val_accuracy": best_so_far[0],
                "train_loss": float(np.mean(info["train_loss"][:, 0])),
            }
        )

    train_probes(sets, config, on_epoch=report)


@dataclass
class TuneOutcome:
    rows: list[dict]
    best: dict
    best_config: ProbeConfig
    out: Path


def tune_probes(
    data_dir: str | Path,
    config: ProbeTuneConfig,
    out: str | Path | None = None,
    num_samples: int | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> TuneOutcome:
    """Run the sweep on the zoo in ``data_dir``; write the table and the best config into ``out``."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from zoo.readers.probes.probe import prepare
    from zoo.readers.probes.zoo_probe import row_spec, zoo_layers

    out = Path(out if out is not None else config.out).resolve()
    zoo = open_zoo(data_dir)
    if zoo.n_rows == 0:
        raise ProbeError(f"{data_dir}: the zoo holds no records to probe")
    base = config.probe.model_copy(update={"random_twin": False, "control": False})
    firsts: dict[int, dict] = {}
    for row in zoo.rows():
        firsts.setdefault(int(row["batch_id"]), row)
    chosen = [firsts[b] for b in sorted(firsts)[: config.models]]
    specs = [zoo_layers(row_spec(zoo, row, "clean", base), base) for row in chosen]
    for spec in specs:  # fail here, in one line, not inside a trial
        prepare(spec, base)

    out.mkdir(parents=True, exist_ok=True)
    param_space = {name: _dimension(dim) for name, dim in config.search_space.items()}
    epochs = max_epochs(config)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=min(config.asha.grace_period, epochs),
        reduction_factor=config.asha.reduction_factor,
    )
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    try:
        threads = max(1, int(config.cpus_per_trial))
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, specs=specs, base=base, threads=threads),
            {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=config.metric,
                mode=config.mode,
                scheduler=scheduler,
                num_samples=num_samples or config.num_samples,
                search_alg=BasicVariantGenerator(random_state=config.seed),
            ),
            run_config=tune.RunConfig(storage_path=str(out / "ray_results"), name="probes", verbose=verbose),
        )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    errors = [str(r.error).splitlines()[0] for r in grid if r.error is not None]
    rows = []
    for result in grid:
        if result.error is not None or not result.metrics:
            continue
        metrics = result.metrics
        rows.append(
            {
                **{name: result.config.get(name) for name in config.search_space},
                "epochs_run": metrics.get("training_iteration"),
                "val_accuracy": metrics.get("val_accuracy"),
                "best_val_accuracy": metrics.get("best_val_accuracy"),
                "val_loss": metrics.get("val_loss"),
                "trial": Path(result.path).name if result.path else "",
            }
        )
    if not rows:
        raise ProbeError(f"every trial failed ({errors[0] if errors else 'no results'})")
    key = "best_val_accuracy" if config.metric == "val_accuracy" else "val_loss"
    rows.sort(key=lambda r: (r[key] if config.mode == "max" else -r[key]), reverse=True)
    best = rows[0]
    params = {name: best[name] for name in config.search_space}
    if "epochs" in params:
        params["epochs"] = int(round(params["epochs"]))
    best_config = trial_config(config.probe, params).model_copy(
        update={
            "control": config.probe.control,
            "random_twin": config.probe.random_twin,
            "val_every": config.probe.val_every,
        }
    )
    with open(out / RESULTS_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / BEST_FILE).write_text(
        f"# best of {len(rows)} trials ({key} {best[key]:.4f}); use with `zoo probe ... --config`\n"
        + yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False)
    )
    return TuneOutcome(rows, best, best_config, out)

