"""``bench/gpu.sh``'s measurements: the population trainer and ``zoo generate`` on a GPU, one JSON.

Written for the first CUDA machine the project gets, which may be lent for minutes: every
figure is measured within a time budget (a measurement that would overrun stops between
populations and says so), and a step that fails records its error in the JSON instead of
losing the others. ``--dry-run`` runs every step at toy size on the CPU (CUDA graphs are then
run uncaptured), so a test can keep the script working on machines without a GPU.

What it measures:

- ``trainer``: models/hour of the population trainer alone (``zoo.subjects.fit``) at 1k, 10k
  and 100k models, populations sized to the device's memory (``population_size: auto``), with
  and without CUDA graphs. A graph captures one epoch of a population (a fixed-shape bucket:
  the same batch shapes every epoch) and replays it for the next epochs. Each population
  runs ``epochs`` epochs; the first (which creates the step buffers and, with graphs, is
  followed by the capture) is timed apart from the rest, and ``models_per_hour`` counts a
  model as set-up + first epoch + ``training.epochs - 1`` later epochs: every model running
  all its epochs, which early stopping only shortens. The data of ``distinct`` planned
  batches is shared round-robin (planning 100k batches costs about 17 CPU-minutes, and the
  trainer's speed does not depend on which tokens it reads); architectures, learning rates,
  initializations and data orders are each model's own. ``trainer_full`` trains the 1k
  models to the end (early stopping, dropping stopped models), the figure without projection.
- ``generate``: models/hour of ``zoo generate`` (``zoo.factory.runner.generate``, what the
  CLI calls) end to end, planning, training, scoring, signatures and shards included, with
  one actor per GPU and with four fractional actors per GPU (``num_gpus_per_worker: 0.25``),
  on one Ray started beforehand (Ray's start is not counted; actors' start is).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from zoo.atomic import write_json_atomic
from zoo.bench import _sync as sync
from zoo.config import ZooConfig, _merge, parse_config
from zoo.factory.plan import clean_job, plan_batch
from zoo.runtime import resolve_device
from zoo.subjects import fit
from zoo.subjects.families import sample_part
from zoo.subjects.families.base import SubjectJob
from zoo.subjects.population import auto_population_size, init_population
from zoo.subjects.train import bytes_per_model, plan_groups, stack_data, train_subjects

SIZES = (1_000, 10_000, 100_000)
# --dry-run: toy data and models, so every step runs in seconds on a laptop CPU
DRY_RECIPE = {
    "patterns": {"train_size": 128, "val_size": 32, "benchmark_size": 64},
    "architecture": {"width": {"min": 6, "max": 10}},
    "training": {"epochs": 3},
    "corruption": {"degraded_per_batch": 2},
}
DRY_SIZES = (6, 12, 24)


class Deadline:
    """The measurement budget: seconds left, and whether a step may still start."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def trainer_jobs(config: ZooConfig, models: int, distinct: int) -> list[SubjectJob]:
    """``models`` clean jobs of ``config``'s space: the data of planned batch ``i % distinct``, and
    an architecture, a learning rate and seeds of each model's own (drawn as ``plan_batch`` draws them)."""
    data = [clean_job(plan_batch(config, i)) for i in range(min(models, distinct))]
    space, rates = config.patterns, config.training.lr
    jobs = []
    for i in range(models):
        rng = np.random.default_rng([config.seed, i])
        _, architecture = sample_part(config.architecture, space.vocab_size, space.seq_len, rng)
        lr = float(np.exp(rng.uniform(np.log(rates.min), np.log(rates.max))))
        init_seed, order_seed = (int(s) for s in rng.integers(0, 2**63 - 1, size=2))
        jobs.append(replace(data[i % len(data)], architecture=architecture, lr=lr, init_seed=init_seed, order_seed=order_seed))
    return jobs


def train_epochs(run: fit._Run, config, epochs: int, graphs: bool) -> tuple[float, float, bool]:
    """``epochs`` epochs of ``run``, validation after each: ``(first epoch s, later epochs s, captured)``.

    The first epoch runs eagerly (on a side stream with graphs, as capture wants); with
    ``graphs`` on CUDA its steps are then captured once and replayed each later epoch, the
    epoch's data order copied into the captured rows first. Without CUDA the same steps run
    uncaptured.
    """
    device = run.pop.device
    start = time.perf_counter()
    rows = run.epoch_rows(0)
    captured = graphs and device.type == "cuda"
    if captured:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            run.run_steps(rows, config)
        torch.cuda.current_stream(device).wait_stream(side)
    else:
        run.run_steps(rows, config)
    run.validate(config)
    graph = None
    if captured:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run.run_steps(rows, config)
    sync(device)
    first = time.perf_counter() - start
    for epoch in range(1, epochs):
        rows.copy_(run.epoch_rows(epoch))
        if graph is not None:
            graph.replay()
        else:
            run.run_steps(rows, config)
        run.validate(config)
    sync(device)
    return first, time.perf_counter() - start - first, captured


def measure_trainer(config: ZooConfig, jobs: list[SubjectJob], device, epochs: int, graphs: bool,
                    deadline: Deadline) -> dict:
    """Train ``jobs`` population by population for ``epochs`` epochs; models/hour projected to
    ``training.epochs`` epochs each (see the module docstring)."""
    training = config.training
    size = auto_population_size(training, device, max(bytes_per_model(j) for j in jobs))
    groups = plan_groups([j.architecture for j in jobs], size)
    setup = first = later = 0.0
    trained = populations = 0
    captured = False
    for indices in groups:
        if deadline.left() <= 0:
            break
        group = [jobs[i] for i in indices]
        sync(device)
        start = time.perf_counter()
        pop = init_population([j.architecture for j in group], [j.init_seed for j in group], device)
        run = fit._Run(pop, stack_data(group, device), [j.lr for j in group], [j.order_seed for j in group])
        sync(device)
        setup += time.perf_counter() - start
        f, rest, captured = train_epochs(run, training, epochs, graphs)
        first, later, trained, populations = first + f, later + rest, trained + len(group), populations + 1
        del run, pop
        if device.type == "cuda":
            torch.cuda.empty_cache()  # a graph's private pool, the data of the last population
    per_later = later / max(epochs - 1, 1)
    projected = setup + first + per_later * (training.epochs - 1)
    return {
        "models": len(jobs), "models_trained": trained, "partial": trained < len(jobs),
        "population_size": size, "populations": populations, "cuda_graphs": captured,
        "epochs_timed": epochs, "setup_s": setup, "first_epoch_s": first, "later_epoch_s": per_later,
        "models_per_hour": 3600 * trained / projected if trained else None,
    }


def measure_full(config: ZooConfig, jobs: list[SubjectJob], device) -> dict:
    """Train ``jobs`` to the end as the factory does (early stopping, stopped models dropped)."""
    sync(device)
    start = time.perf_counter()
    groups = train_subjects(jobs, config.training, device)
    sync(device)
    seconds = time.perf_counter() - start
    epochs = [int(e) for g in groups for e in g.result.epochs]
    return {"models": len(jobs), "seconds": seconds, "models_per_hour": 3600 * len(jobs) / seconds,
            "mean_epochs": sum(epochs) / len(epochs)}


def measure_generate(config: ZooConfig, workers: int, gpus_per_worker: float, cpus_per_worker: float,
                     batches: int, per_shard: int, scratch: Path) -> dict:
    """One ``zoo generate`` run into a fresh folder on the Ray this process started."""
    from rich.console import Console

    from zoo.factory.runner import generate

    run_config = parse_config(_merge(config.model_dump(mode="json"), {
        "batches": batches, "storage": {"batches_per_shard": per_shard},
        "runtime": {"workers": workers, "num_gpus_per_worker": gpus_per_worker,
                    "num_cpus_per_worker": cpus_per_worker, "torch_threads": 1},
    }), ZooConfig)
    out = Path(tempfile.mkdtemp(dir=scratch))
    try:
        summary = generate(run_config, out, console=Console(quiet=True))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"workers": workers, "num_gpus_per_worker": gpus_per_worker, "batches": batches,
            "batches_per_shard": per_shard, "models": summary.models, "kept": summary.kept,
            "seconds": summary.seconds, "models_per_hour": 3600 * summary.models_per_second}


def environment(device: torch.device) -> dict:
    """What the figures were measured on."""
    import os
    import platform

    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "cpus": os.cpu_count(), "cuda": torch.version.cuda}
    if device.type == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def attempt(report: dict, key: str, deadline: Deadline, needs_s: float, measure, *args) -> None:
    """Run ``measure(*args)`` into ``report[key]``: skipped when under ``needs_s`` of budget is left,
    its error recorded (and printed) when it fails, so the other measurements still come back."""
    if deadline.left() < needs_s:
        report[key] = {"skipped": f"under {needs_s:.0f} s of the budget left"}
        return
    start = time.monotonic()
    try:
        report[key] = measure(*args)
    except Exception as error:  # noqa: BLE001 (a first run on new hardware: keep what the others measure)
        traceback.print_exc()
        report[key] = {"error": f"{type(error).__name__}: {error}"}
    print(f"bench_gpu: {key}: {time.monotonic() - start:.1f} s: {json.dumps(report[key])}", file=sys.stderr, flush=True)


def run(dry_run: bool, budget_s: float, epochs: int, distinct: int, tests: dict) -> dict:
    """Every measurement, in order of what matters most when the budget runs short."""
    config = parse_config(DRY_RECIPE if dry_run else {}, ZooConfig)
    device = resolve_device("auto")
    if device.type != "cuda" and not dry_run:
        raise SystemExit("bench_gpu: torch sees no CUDA device (use --dry-run to exercise the steps on the CPU)")
    deadline = Deadline(budget_s)
    sizes = DRY_SIZES if dry_run else SIZES
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    report: dict = {"dry_run": dry_run, "environment": environment(device), "tests": tests, "budget_s": budget_s,
                    "trainer": {}, "generate": {}}
    trainer = report["trainer"]
    jobs = trainer_jobs(config, sizes[1], distinct)  # the largest size's jobs when it comes (seconds to draw)
    needs = 5 if dry_run else 30
    for graphs in (False, True):  # warm-up: CUDA's context, cuBLAS, the allocator; not reported
        measure_trainer(config, jobs[:8], device, 2, graphs, deadline)
    for size in sizes:
        for graphs in (False, True):
            if size == sizes[2] and len(jobs) < size:
                jobs = trainer_jobs(config, size, distinct)
            # the largest without graphs may take half of what is left, so that the graphs get their turn
            share = Deadline(deadline.left() / 2) if size == sizes[2] and not graphs else deadline
            attempt(trainer, f"{size}{'_graphs' if graphs else ''}", deadline, needs,
                    measure_trainer, config, jobs[:size], device, epochs, graphs, share)
        if size == sizes[1]:  # before the largest, which may take what is left of the budget
            attempt(report, "generate", deadline, 2 * needs, measure_both_generates, config, gpus, dry_run)
            attempt(report, "trainer_full", deadline, needs, measure_full, config, jobs[: sizes[0]], device)
    report["seconds"] = budget_s - deadline.left()
    return report


def measure_both_generates(config: ZooConfig, gpus: int, dry_run: bool) -> dict:
    """``zoo generate`` with one actor per GPU, then four per GPU, on one Ray started here."""
    import ray

    if dry_run:  # no GPU: the same two layouts on CPU actors, tiny
        gpus, share, per_shard, cpus = 1, 0.0, 2, 0.5
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR")
    else:
        share, per_shard, cpus = 0.25, 128, 1.0
        ray.init(include_dashboard=False, logging_level="ERROR")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the trainer's measurements' cache, for the actors
    scratch = Path(tempfile.mkdtemp(prefix="zoo-bench-gpu-"))
    layouts = {"one_actor_per_gpu": (gpus, 1.0 if share else 0.0), "four_actors_per_gpu": (4 * gpus, share)}
    try:
        return {
            name: measure_generate(config, workers, gpus_each, cpus, 2 * workers * per_shard, per_shard, scratch)
            for name, (workers, gpus_each) in layouts.items()
        }
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds the measurements may take (default 420)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs each population trains when timed (default 3)")
    parser.add_argument("--distinct", type=int, default=256, help="planned batches whose data the models share (default 256)")
    parser.add_argument("--tests-rc", type=int, help="exit status of the gpu tests bench/gpu.sh ran")
    parser.add_argument("--tests-log", help="their output (its last line goes into the JSON)")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.distinct < 1 or args.budget_s <= 0:
        parser.error("--epochs must be at least 2, --distinct at least 1, --budget-s positive")
    tests = {"rc": args.tests_rc}
    if args.tests_log and Path(args.tests_log).is_file():
        lines = [line for line in Path(args.tests_log).read_text().splitlines() if line.strip()]
        tests["summary"] = lines[-1] if lines else ""
    report = run(args.dry_run, args.budget_s, args.epochs, args.distinct, tests)
    write_json_atomic(args.out, report)
    print(f"bench_gpu: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
