"""Ray Tune sweep of the interpreter's hyperparameters (``configs/tune/interpreter.yaml``).

Each trial trains with the same ``train`` function as ``zoo interpret train``, on the
same shards, and reports every epoch with ``ray.tune.report`` (with the run folder as
a checkpoint), so ASHA can stop the weak trials early. A trial restarted by Tune
resumes from its last reported checkpoint. When the sweep ends, the best trials are
printed as a table (and written as ``results.md``) and the best trial's full
interpreter config is written as YAML, ready for ``zoo interpret train --config``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from zoo.config import Strict, _merge, load_config, parse_config
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.config import DEFAULT_CONFIG, InterpreterConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TUNE_CONFIG = REPO_ROOT / "configs" / "tune" / "interpreter.yaml"


class Distribution(Strict):
    """One searched hyperparameter: exactly one of the fields."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    choice: list | None = None
    randint: tuple[int, int] | None = Field(None, description="integers in [low, high)")

    @model_validator(mode="after")
    def _one(self) -> Distribution:
        given = [k for k in ("loguniform", "uniform", "choice", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, choice, randint (got {', '.join(given) or 'none'})")
        for kind in ("loguniform", "uniform", "randint"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind}: low {bounds[0]} must be below high {bounds[1]}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: bounds must be positive")
        if self.choice is not None and not self.choice:
            raise ValueError("choice: at least one value is needed")
        return self

    def to_tune(self):
        from ray import tune

        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.randint is not None:
            return tune.randint(*self.randint)
        return tune.choice(list(self.choice))

    def example(self):
        """A value from the distribution (used to validate the space against the interpreter config)."""
        if self.loguniform is not None:
            return self.loguniform[0]
        if self.uniform is not None:
            return self.uniform[0]
        if self.randint is not None:
            return self.randint[0]
        return self.choice[0]


class TuneSettings(Strict):
    """A sweep: the base interpreter config, the searched fields, ASHA, resources and where results go."""

    base: str | None = Field(
        None, description="interpreter config the sampled values override (default: configs/readers/interpreter.yaml)"
    )
    overrides: dict = Field({}, description="fixed changes to the base config for every trial (e.g. fewer epochs)")
    space: dict[str, Distribution] = Field(..., description="dotted interpreter-config field -> distribution")
    metric: str = Field(
        "val_objective",
        description="a metric every epoch reports; val_objective sums the validation loss terms at unit weights, "
        "so trials that sample other loss weights compare fairly",
    )
    mode: Literal["min", "max"] = "min"
    num_samples: int = Field(16, ge=1)
    max_concurrent: int = Field(0, ge=0, description="trials at once; 0 lets Ray decide from the resources")
    grace_period: int = Field(2, ge=1, description="epochs every trial runs before ASHA may stop it")
    reduction_factor: float = Field(3.0, gt=1.0)
    cpus_per_trial: float = Field(1.0, gt=0.0)
    gpus_per_trial: float = Field(0.0, ge=0.0)
    storage_path: str = Field("tune-results", description="local folder (made absolute) or a cloud URI (s3://, gs://)")
    name: str = Field("interpreter", pattern=r"^[A-Za-z0-9_.-]+$")
    top: int = Field(5, ge=1, description="best trials shown in the table")
    seed: int | None = Field(0, description="seed of the search (None: random)")

    @model_validator(mode="after")
    def _space(self) -> TuneSettings:
        if not self.space:
            raise ValueError("space: at least one searched field is needed")
        return self


def _nest(dotted: dict) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _base_path(settings: TuneSettings, settings_path: Path | None) -> Path:
    if settings.base is None:
        return DEFAULT_CONFIG
    base = Path(settings.base)
    if base.is_absolute() or base.is_file():
        return base
    for root in ([settings_path.parent] if settings_path else []) + [REPO_ROOT]:
        if (root / base).is_file():
            return root / base
    return base


def base_config(settings: TuneSettings, settings_path: Path | None = None) -> dict:
    """The base interpreter config as a plain dict, with the fixed overrides applied and validated."""
    path = _base_path(settings, settings_path)
    if path.is_file():
        config = load_config(path, InterpreterConfig, settings.overrides)
    else:
        raise InterpreterError(f"base: interpreter config not found: {path}")
    return config.model_dump(mode="json")


def trial_config(base: dict, sampled: dict) -> InterpreterConfig:
    """The base config with a trial's sampled values (a nested dict) applied."""
    return parse_config(_merge(base, sampled), InterpreterConfig)  # type: ignore[return-value]


def load_tune_settings(path: str | Path, overrides: dict | None = None) -> tuple[TuneSettings, dict]:
    """Settings and the validated base config; every sampled field is checked against the interpreter config."""
    path = Path(path)
    settings: TuneSettings = load_config(path, TuneSettings, overrides)  # type: ignore[assignment]
    base = base_config(settings, path)
    for key, dist in settings.space.items():
        try:
            trial_config(base, _nest({key: dist.example()}))
        except ValueError as error:
            raise InterpreterError(f"{path}: space.{key}: {error}") from None
    return settings, base


def _trainable(sampled: dict, *, base: dict, data_dir: str, metric: str, mode: str):
    """One trial: the shared training loop, reporting each epoch to Tune with a checkpoint.

    Every report also carries ``best_<metric>`` (the best value so far in this trial),
    so the results table needs no result files (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``).
    """
    from ray import tune

    from zoo.readers.interpreter.train import copy_run, train

    config = trial_config(base, sampled)
    run_dir = Path(tempfile.mkdtemp(prefix="interpreter-trial-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            copy_run(Path(folder), run_dir)

    best: list[float] = []

    def report(epoch: int, metrics: dict, folder: Path) -> None:
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if metric in values:
            value = float(values[metric])
            best[:] = [value if not best else (min if mode == "min" else max)(best[0], value)]
            values[f"best_{metric}"] = best[0]
        with tempfile.TemporaryDirectory() as staging:
            copy_run(folder, Path(staging))
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(staging))

    train(config, data_dir, run_dir, progress=False, on_epoch=report)


def _storage(path: str) -> str:
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def run_tune(
    data_dir: str | Path,
    settings: TuneSettings,
    base: dict,
    *,
    best_config_out: str | Path | None = None,
    console=None,
    verbose: int = 1,
) -> dict:
    """Run the sweep; returns the best trial's metrics, config and the table rows."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from zoo.readers.interpreter.data import open_source

    data_dir = Path(data_dir).resolve()
    source = open_source(data_dir)
    if settings.metric.startswith("val_") and source.rows(base["data"]["val_split"]) == 0:
        raise InterpreterError(f"{data_dir}: the {base['data']['val_split']} split is empty, so {settings.metric} is never reported")
    max_epochs = int(base["epochs"])
    if "epochs" in settings.space:
        raise InterpreterError("space.epochs: epochs are ASHA's budget (max_t); set them in overrides")
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=min(settings.grace_period, max_epochs),
        reduction_factor=settings.reduction_factor,
    )
    param_space = _nest({key: dist.to_tune() for key, dist in settings.space.items()})
    search_alg = None
    if settings.seed is not None:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=settings.seed)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, base=base, data_dir=str(data_dir), metric=settings.metric, mode=settings.mode),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent or None,
        ),
        run_config=tune.RunConfig(name=settings.name, storage_path=_storage(settings.storage_path), verbose=verbose),
    )
    results = tuner.fit()
    rows = []
    for result in results:
        metrics = result.metrics or {}
        best_value = metrics.get(f"best_{settings.metric}")
        if best_value is None:
            continue
        rows.append(
            {
                "trial": "_".join(result.path.rstrip("/").rsplit("/", 1)[-1].split("_")[:4]),  # _trainable_<exp>_<n>
                settings.metric: float(best_value),
                "epochs": int(metrics.get("training_iteration", 0)),
                **{key: _dig(result.config, key) for key in settings.space},
            }
        )
    if not rows:
        errors = [str(r.error) for r in results if r.error is not None]
        raise InterpreterError("no trial reported " + settings.metric + (f" (first error: {errors[0][:300]})" if errors else ""))
    rows.sort(key=lambda r: r[settings.metric], reverse=settings.mode == "max")
    best = rows[0]
    sampled = _nest({key: best[key] for key in settings.space})
    best_config = trial_config(base, sampled)
    experiment = results.experiment_path
    target = best_config_out if best_config_out is not None else (
        Path(experiment) / "best_interpreter.yaml" if "://" not in experiment else Path(f"{settings.name}-best_interpreter.yaml")
    )
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(
        f"# Best of {len(rows)} trials of `zoo tune interpreter` on {data_dir} "
        f"({settings.metric} {best[settings.metric]:.4f}, {settings.mode})\n"
        + yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False)
    )
    table_md = _markdown(rows[: settings.top], settings)
    if "://" not in experiment:
        (Path(experiment) / "results.md").write_text(table_md)
    if console is not None:
        _print_table(rows[: settings.top], settings, console)
        console.print(f"best config written to {target}")
    return {"best": best, "rows": rows, "best_config": str(target), "experiment": experiment}


def _dig(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(rows: list[dict], settings: TuneSettings) -> str:
    columns = ["trial", settings.metric, "epochs", *settings.space]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _print_table(rows: list[dict], settings: TuneSettings, console) -> None:
    from rich.table import Table

    table = Table(title=f"best {len(rows)} trials by {settings.metric} ({settings.mode})")
    columns = ["trial", settings.metric, "epochs", *settings.space]
    for column in columns:
        table.add_column(column, justify="left" if column == "trial" else "right")
    for row in rows:
        table.add_row(*(_fmt(row[c]) for c in columns))
    console.print(table)
