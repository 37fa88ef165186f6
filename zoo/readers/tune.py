"""One Ray Tune (ASHA) front end for every reader's sweep: ``zoo tune interpreter``, ``zoo tune probes``.

A reader supplies a ``Sweep``: its config model, its shipped recipe, a ``prepare``
that checks the zoo on the driver and returns what every trial needs, and a
``trainable(config, trial, **context)`` that trains one trial and calls
``trial.report(metrics)`` after every epoch. The rest is here, the same for all:

**The YAML shape** (``TuneSettings``; a reader's subclass may add fields of its own and
set other defaults)::

    base: configs/readers/interpreter.yaml   # the reader recipe trials start from (default: the shipped one)
    overrides: {epochs: 12}                  # fixed changes to it, for every trial
    space:                                   # dotted recipe field -> exactly one distribution
      optimizer.lr: {loguniform: [0.0003, 0.003]}
      model.width: {choice: [32, 64, 96]}
    metric: val_objective                    # what ASHA compares: a value every epoch reports
    mode: min
    num_samples: 16
    max_concurrent: 0                        # trials at once; 0: as many as the resources allow
    grace_period: 2                          # epochs before ASHA may stop a trial
    reduction_factor: 3
    cpus_per_trial: 1                        # also each trial's torch threads
    gpus_per_trial: 0
    storage_path: runs/tune                  # local folder or cloud URI
    name: interpreter
    top: 5                                   # trials shown in the printed table and results.md
    seed: 0                                  # the search's seed (null: random)

Every sampled field is checked against the recipe before any trial starts. ``epochs``
is ASHA's budget (``max_t``): the base's epochs, or the largest the space can draw.
A sampled float for an integer field is rounded.

**The output layout**: one folder per sweep, ``<storage_path>/<name>/`` (``--out DIR``
names it directly), holding Tune's own files (trials, checkpoints, state) and

- ``results.csv``: every trial that reported, best first: ``trial``, ``best_<metric>``
  (the best value the trial reported), ``epochs_run`` (reports made), the sampled values;
- ``results.md``: the best ``top`` of them as a Markdown table;
- ``best_config.yaml``: the best trial's full recipe, ready for the reader's ``--config``.

With a cloud ``storage_path`` the three files go to the local folder ``<name>/``.

**The zoo** (``--data``) is a local folder or any ``pyarrow.fs`` URI (``s3://bucket/zoo``):
``prepare`` gets it as text (a folder made absolute, or the URI) and opens it through
``zoo.open``. A reader whose trials read the zoo themselves (the interpreter's) passes them
the opened zoo's ``zoo.storage.Store``: pickled, it carries the URI and the S3
endpoint (``AWS_ENDPOINT_URL``) but no credentials, which each trial takes from its own
node's standard chain (a local Ray's workers inherit this process's environment). Nothing
of the environment is put in Ray's ``runtime_env``, where it would be stored and shown.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from zoo.config import CONFIGS, Strict, _merge, load_config, parse_config

PACKAGE_ROOT = CONFIGS.parent  # a relative ``base: configs/...`` names a recipe shipped under it
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
BEST_FILE = "best_config.yaml"
BUDGET = "epochs"
"""The recipe field that is ASHA's budget: one report per epoch."""


class Distribution(Strict):
    """One searched field: exactly one of the keys."""

    loguniform: tuple[float, float] | None = Field(None, description="[low, high]: uniform in log space")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: uniform")
    choice: list | None = Field(None, description="one of these values, each as likely")
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
        """A value from the distribution (to check the space against the recipe)."""
        if self.loguniform is not None:
            return self.loguniform[0]
        if self.uniform is not None:
            return self.uniform[0]
        if self.randint is not None:
            return self.randint[0]
        return self.choice[0]

    def largest(self) -> float:
        """The largest value it can draw (for a numeric field)."""
        if self.choice is not None:
            return max(self.choice)
        if self.randint is not None:
            return self.randint[1] - 1
        return (self.loguniform or self.uniform)[1]


class TuneSettings(Strict):
    """A sweep: the base recipe, the searched fields, ASHA, resources and where the results go."""

    base: str | None = Field(None, description="the reader recipe the sampled values override (default: the shipped one)")
    overrides: dict = Field({}, description="fixed changes to the base recipe for every trial (e.g. fewer epochs)")
    space: dict[str, Distribution] = Field(..., description="dotted recipe field -> distribution")
    metric: str = Field("val_loss", description="what ASHA compares: a value every epoch reports")
    mode: Literal["min", "max"] = Field("min", description="whether the metric is minimized or maximized")
    num_samples: int = Field(16, ge=1, description="trials sampled from the space")
    max_concurrent: int = Field(0, ge=0, description="trials at once; 0 lets Ray decide from the resources")
    grace_period: int = Field(2, ge=1, description="epochs every trial runs before ASHA may stop it")
    reduction_factor: float = Field(3.0, gt=1.0, description="at each rung, ASHA keeps about 1 / this of the trials")
    cpus_per_trial: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each trial (also its torch threads)")
    gpus_per_trial: float = Field(0.0, ge=0.0, description="GPUs (or a fraction of one) Ray reserves for each trial")
    storage_path: str = Field(
        "runs/tune", description="local folder (made absolute) or a cloud URI (s3://, gs://); the sweep's folder is under it"
    )
    name: str = Field("sweep", pattern=r"^[A-Za-z0-9_.-]+$", description="the sweep's folder under storage_path")
    top: int = Field(5, ge=1, description="best trials shown in the table and results.md")
    seed: int | None = Field(0, description="seed of the search (None: random)")

    @model_validator(mode="after")
    def _space(self) -> TuneSettings:
        if not self.space:
            raise ValueError("space: at least one searched field is needed")
        return self

    @property
    def best_key(self) -> str:
        return f"best_{self.metric}"


@dataclass(frozen=True)
class Sweep:
    """What a reader gives the front end.

    - ``prepare(data, settings, base) -> context``: runs on the driver before any trial
      (checks the zoo, refuses in one line); ``data`` is the zoo's location as text (an
      absolute folder or a URI); ``context`` goes to every trial through the object store.
    - ``trainable(config, trial, **context)``: one trial of the recipe ``config``; it calls
      ``trial.report(metrics)`` after every epoch (``trial.restored()`` gives the folder of
      its last checkpoint when Tune restarts it).
    - ``trial_fixed``: recipe fields every trial uses but the best config does not keep
      (e.g. validation every epoch).
    """

    reader: str
    config_model: type[BaseModel]
    default_base: Path
    error: type[Exception]
    trainable: Callable[..., None]
    prepare: Callable[[str, TuneSettings, dict], dict] = lambda data, settings, base: {}
    trial_fixed: dict = field(default_factory=dict)
    command: str = ""  # how the best config is used (``zoo interpret train --config``), for its header line


# ---------------------------------------------------------------- settings and trial configs


def nest(dotted: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def dig(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _base_path(sweep: Sweep, settings: TuneSettings, settings_path: Path | None) -> Path:
    if settings.base is None:
        return sweep.default_base
    base = Path(settings.base)
    if base.is_absolute() or base.is_file():
        return base
    for root in ([settings_path.parent] if settings_path else []) + [PACKAGE_ROOT]:
        if (root / base).is_file():
            return root / base
    return base


def base_config(sweep: Sweep, settings: TuneSettings, settings_path: Path | None = None) -> dict:
    """The base recipe as a plain dict, with the fixed overrides applied and validated."""
    path = _base_path(sweep, settings, settings_path)
    if not path.is_file():
        raise sweep.error(f"base: {sweep.reader} config not found: {path}")
    return load_config(path, sweep.config_model, settings.overrides).model_dump(mode="json")


def as_drawn(base: dict, key: str, value):
    """A sampled value as the recipe takes it: a float for an integer field rounded (e.g. epochs from a uniform)."""
    current = dig(base, key)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        return int(round(value))
    return value


def trial_config(sweep: Sweep, base: dict, sampled: dict, fixed: bool = True) -> BaseModel:
    """The base recipe with a trial's sampled values (dotted keys); ``fixed``: with ``trial_fixed`` too."""
    data = _merge(base, nest({key: as_drawn(base, key, value) for key, value in sampled.items()}))
    if fixed:
        data = _merge(data, sweep.trial_fixed)
    return parse_config(data, sweep.config_model)


def load_settings(
    sweep: Sweep, path: str | Path, model: type[TuneSettings] = TuneSettings, overrides: dict | None = None
) -> tuple[TuneSettings, dict]:
    """The settings at ``path`` and the validated base recipe; every sampled field is checked against it."""
    path = Path(path)
    settings: TuneSettings = load_config(path, model, overrides)  # type: ignore[assignment]
    return settings, check_settings(sweep, settings, path)


def check_settings(sweep: Sweep, settings: TuneSettings, path: Path | None = None) -> dict:
    """The base recipe of ``settings``, after checking every sampled field against it."""
    base = base_config(sweep, settings, path)
    where = f"{path}: " if path is not None else ""
    for key, dist in settings.space.items():
        try:
            trial_config(sweep, base, {key: dist.example()})
        except ValueError as error:
            raise sweep.error(f"{where}space.{key}: {error}") from None
    return base


def max_epochs(settings: TuneSettings, base: dict) -> int:
    dist = settings.space.get(BUDGET)
    return int(base[BUDGET]) if dist is None else int(round(dist.largest()))


# ---------------------------------------------------------------- one trial (on a Ray worker)


class Trial:
    """What a reader's trainable reports to: ``report`` after every epoch, ``restored`` when resumed."""

    def __init__(self, metric: str, mode: str):
        self.metric, self.mode = metric, mode
        self.best: float | None = None

    def report(self, metrics: dict, checkpoint: Path | None = None) -> None:
        """Report an epoch's numeric ``metrics`` (with ``best_<metric>``, the best so far) and an optional
        checkpoint folder (copied by Tune before this returns)."""
        from ray import tune

        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.metric in values:
            value = float(values[self.metric])
            self.best = value if self.best is None else (min if self.mode == "min" else max)(self.best, value)
            values[f"best_{self.metric}"] = self.best
        if checkpoint is None:
            tune.report(values)
        else:
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        """The folder of the checkpoint this trial resumes from (None: a fresh start)."""
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)


def _run_trial(sampled: dict, *, sweep: Sweep, base: dict, metric: str, mode: str, threads: int, context: dict) -> None:
    from zoo.runtime import torch_threads

    config = trial_config(sweep, base, sampled)
    with torch_threads(threads):
        sweep.trainable(config, Trial(metric, mode), **context)


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """The trials that reported (best first), the best of them, its recipe, and where the files are."""

    rows: list[dict]
    best: dict
    best_config: BaseModel
    best_config_path: Path
    experiment: str  # Tune's experiment folder (a path or a URI)
    folder: Path  # the local folder of results.csv, results.md and best_config.yaml
    settings: TuneSettings


def _storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def data_location(data: str | Path) -> str:
    """The zoo's location as every process can use it: a local folder made absolute, a URI as given."""
    from zoo.storage import is_uri

    return str(data) if is_uri(data) else str(Path(data).expanduser().resolve())


def run_sweep(
    sweep: Sweep,
    data_dir: str | Path,
    settings: TuneSettings,
    base: dict,
    *,
    out: str | Path | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run the sweep on the zoo at ``data_dir`` (a folder or a URI); see the module docstring for what it writes.

    ``out``: the sweep's folder (instead of ``<storage_path>/<name>``). ``address``: the
    Ray cluster (default: the Ray of this process, else a local one, shut down after).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from zoo.pool import ray_connection

    data_dir = data_location(data_dir)
    if out is not None:
        out = Path(out).expanduser().resolve()
        settings = settings.model_copy(update={"storage_path": str(out.parent), "name": out.name})
    context = sweep.prepare(data_dir, settings, base)
    epochs = max_epochs(settings, base)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=min(settings.grace_period, epochs),
        reduction_factor=settings.reduction_factor,
    )
    param_space = {key: dist.to_tune() for key, dist in settings.space.items()}  # dotted keys: flat
    search_alg = BasicVariantGenerator(random_state=settings.seed) if settings.seed is not None else None
    with ray_connection(address):  # before with_parameters, which puts the context in the object store
        trainable = tune.with_resources(
            tune.with_parameters(
                _run_trial,
                sweep=sweep,
                base=base,
                metric=settings.metric,
                mode=settings.mode,
                threads=max(1, int(settings.cpus_per_trial)),
                context=context,
            ),
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
        grid = tuner.fit()
        experiment = str(grid.experiment_path)
        rows, errors = _rows(grid, settings, base)
    if not rows:
        first = f" (first error: {errors[0][:300]})" if errors else ""
        raise sweep.error(f"no trial reported {settings.metric}{first}")
    best = rows[0]
    best_config = trial_config(sweep, base, {key: best[key] for key in settings.space}, fixed=False)
    folder = Path(experiment) if "://" not in experiment else Path(settings.name).resolve()
    shown = data_dir.split("?", 1)[0].split("#", 1)[0]  # a URI's query may hold options, even keys: never written
    best_path = write_results(folder, rows, settings, best_config, shown, sweep.command)
    return SweepResult(rows, best, best_config, best_path, experiment, folder, settings)


def sweep_with(
    sweep: Sweep,
    data_dir: str | Path,
    settings: TuneSettings,
    out: str | Path | None = None,
    num_samples: int | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> SweepResult:
    """``run_sweep`` from settings alone: ``num_samples`` overrides theirs, and the base config is
    checked against every sampled field first (``check_settings``). A reader's ``tune_<name>`` is this."""
    if num_samples is not None:
        settings = settings.model_copy(update={"num_samples": num_samples})
    base = check_settings(sweep, settings)
    return run_sweep(sweep, data_dir, settings, base, out=out, address=address, verbose=verbose)


def _rows(grid, settings: TuneSettings, base: dict) -> tuple[list[dict], list[str]]:
    rows, errors = [], []
    for result in grid:
        if result.error is not None:  # the exception's own line closes Ray's traceback
            lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
            errors.append(lines[-1].strip() if lines else type(result.error).__name__)
        metrics = result.metrics or {}
        value = metrics.get(settings.best_key)
        if value is None:
            continue
        rows.append(
            {
                "trial": str(metrics.get("trial_id") or Path(result.path or "").name),
                settings.best_key: float(value),
                "epochs_run": int(metrics.get("training_iteration", 0)),
                **{key: as_drawn(base, key, result.config.get(key)) for key in settings.space},
            }
        )
    rows.sort(key=lambda r: r[settings.best_key], reverse=settings.mode == "max")
    return rows, errors


# ---------------------------------------------------------------- the files and the table


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def columns(settings: TuneSettings) -> list[str]:
    return ["trial", settings.best_key, "epochs_run", *settings.space]


def write_results(
    folder: Path, rows: list[dict], settings: TuneSettings, best_config: BaseModel, data_dir: str | Path, command: str = ""
) -> Path:
    """``results.csv``, ``results.md`` and ``best_config.yaml`` in ``folder``; returns the last one's path."""
    from zoo.atomic import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    names = columns(settings)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=names)
    writer.writeheader()
    writer.writerows({k: row[k] for k in names} for row in rows)
    write_text_atomic(folder / RESULTS_CSV, table.getvalue())
    write_text_atomic(folder / RESULTS_MD, markdown(rows[: settings.top], settings))
    best = rows[0]
    use = f"; use it with `{command}`" if command else ""
    header = f"# best of {len(rows)} trials on {data_dir} ({settings.best_key} {best[settings.best_key]:.4f}, {settings.mode}){use}\n"
    write_text_atomic(folder / BEST_FILE, header + yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False))
    return folder / BEST_FILE


def markdown(rows: list[dict], settings: TuneSettings) -> str:
    names = columns(settings)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in names) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table(result: SweepResult):
    """The best ``top`` trials as a rich table: a dotted field is headed by its last part where that
    is unambiguous, so headers stay narrow; values fold, never cut."""
    from rich.table import Table

    settings = result.settings
    names = columns(settings)
    leaves = [name.rsplit(".", 1)[-1] for name in names]
    shown = min(settings.top, len(result.rows))
    out = Table(title=f"best {shown} of {len(result.rows)} trials by {settings.metric} ({settings.mode})")
    for name, leaf in zip(names, leaves):
        header = leaf if leaves.count(leaf) == 1 else name
        out.add_column(header.replace("_", " "), justify="left" if name == "trial" else "right", overflow="fold")
    for row in result.rows[: settings.top]:
        out.add_row(*(_fmt(row[c]) for c in names))
    return out


def render(result: SweepResult, console) -> None:
    """The table, then where the files are."""
    console.print(table(result))
    console.print(f"best config: {result.best_config_path}", highlight=False, markup=False)
    console.print(f"all trials: {result.folder / RESULTS_CSV}", highlight=False, markup=False)
