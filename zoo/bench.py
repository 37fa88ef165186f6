"""``zoo bench``: the population trainer against the sequential reference, in one run.

Both trainers get the same models (architecture, init, learning rate), the same
data and data order, epochs, batch size, early stopping and torch thread count;
the benchmark prints the ratio of their throughputs and the accuracy of each on
the clean benchmark sets, so a speedup that costs accuracy shows at once. It
also reports the population's limit: the time the ``bmm`` calls its trainer
issued would take at the peak this device reaches for their shapes (measured in
the same run), and the population's share of it. ``--peer vmap`` adds a third
trainer, the ``torch.func`` ensemble of ``zoo.subjects.vmap_peer``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from zoo.config import ZooConfig
from zoo.factory.plan import BatchPlan, clean_job, plan_batch
from zoo.runtime import resolve_device, torch_threads
from zoo.subjects.allocator import keep_freed_memory
from zoo.subjects.evaluate import score
from zoo.subjects.mlp import build_model
from zoo.subjects.population import auto_population_size, init_weights, logits, one_hot_inputs
from zoo.subjects.reference import train_reference
from zoo.subjects import fit
from zoo.subjects.train import SubjectJob, bytes_per_model, plan_groups, train_group, train_subjects

PEERS = ("vmap",)


class BenchError(ValueError):
    """A bench request that cannot run (the CLI prints it as one line)."""


@dataclass(frozen=True)
class BenchResult:
    models: int
    reference_models: int
    device: str
    threads: int
    population_seconds: float
    reference_seconds: float
    population_models_per_s: float
    reference_models_per_s: float
    speedup: float
    population_accuracy: float
    reference_accuracy: float
    train_gflop_per_s: float
    matmul_peak_gflop_per_s: float
    matmul_limit_seconds: float | None = None
    population_share_of_limit: float | None = None
    vmap_seconds: float | None = None
    vmap_models_per_s: float | None = None
    vmap_accuracy: float | None = None

    def to_dict(self) -> dict:
        """Every field; the peer's only when it ran, the limit's only where it was measured."""
        return {k: v for k, v in asdict(self).items() if v is not None or not k.startswith(("vmap_", "matmul_limit", "population_share"))}


def train_flops(job: SubjectJob, epochs: int) -> float:
    """Useful FLOPs of training one model: 6 per weight per training sample, 2 per validation sample."""
    sizes = job.architecture.layer_sizes
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return float(epochs) * weights * (6 * len(job.train_labels) + 2 * len(job.val_labels))


def matmul_peak(device: torch.device, size: int = 1024, seconds: float = 0.5) -> float:
    """Measured dense fp32 matmul GFLOP/s on ``device``: the ceiling the train step is compared to."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    _sync(device)
    return 2.0 * size**3 * runs / (time.perf_counter() - start) / 1e9


def matmul_limit(counts: Counter, device: torch.device, sample: float = 0.1) -> float:
    """Seconds the ``bmm`` calls in ``counts`` (``fit.MATMULS``: ``(models, m, k, n)`` -> calls)
    take when each shape runs on its own: the trainer's limit were every other op free.

    Each ``[m, k] x [k, n]`` shape is timed on contiguous fp32 operands at the most models any
    of its calls had, over ``sample`` of its calls (at least 3, after a warm-up); a call on
    fewer models is charged pro rata (the cost per model is flat in the population size here).
    ``zoo bench`` times each population's shapes right after it trains, so a change in the
    machine's load moves the limit and the population alike.
    """
    shapes: dict[tuple[int, int, int], list[int]] = {}
    for (models, m, k, n), calls in counts.items():
        entry = shapes.setdefault((m, k, n), [0, 0])
        entry[0] += models * calls
        entry[1] = max(entry[1], models)
    total = 0.0
    for (m, k, n), (model_calls, models) in shapes.items():
        a = torch.randn(models, m, k, device=device)
        b = torch.randn(models, k, n, device=device)
        out = torch.empty(models, m, n, device=device)
        torch.bmm(a, b, out=out)
        _sync(device)
        runs = max(3, round(sample * model_calls / models))
        start = time.perf_counter()
        for _ in range(runs):
            torch.bmm(a, b, out=out)
        _sync(device)
        total += model_calls * (time.perf_counter() - start) / runs / models
    return total


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer reads the work's time (CUDA and mps run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _benchmark_accuracy(plans: list[BatchPlan], model_logits: np.ndarray) -> float:
    pattern = np.stack([p.data.benchmark.pattern for p in plans])
    scores = score(model_logits, pattern, max(len(p.patterns) for p in plans))
    return float(scores.accuracy.mean())


def run_bench(
    config: ZooConfig,
    models: int = 48,
    threads: int | None = None,
    progress: bool = True,
    reference_models: int | None = None,
    family: str = "mlp",
    peer: str | None = None,
) -> BenchResult:
    """Train the clean model of batches ``0..models-1`` with both trainers and compare.

    The trainers take turns, one population's worth of models at a time, and the population
    trains each group twice, before and after the others' turn (its time is the mean), so a
    machine whose load changes during the run slows them alike. ``reference_models``
    limits the reference to the first of them (a GPU population of thousands would keep
    the sequential loop busy for hours; its throughput per model does not depend on how
    many it trains); accuracies are compared on the models both trained. ``family``
    ``transformer`` benches the transformer family instead (``zoo.bench_transformer``).
    ``peer`` ``vmap`` also trains every model with the ``torch.func`` ensemble
    (``zoo.subjects.vmap_peer``), in the same turns.
    """
    if peer is not None and peer not in PEERS:
        raise BenchError(f"bench: --peer must be one of {', '.join(PEERS)}, got {peer!r}")
    if peer is not None and family != "mlp":
        raise BenchError(f"bench: --peer {peer} runs with the MLP family only, not --family {family}")
    if models < 1:
        raise BenchError("bench: --models must be at least 1")
    reference_models = models if reference_models is None else reference_models
    if not 1 <= reference_models <= models:
        raise BenchError(f"bench: --reference-models must lie in [1, {models}], got {reference_models}")
    keep_freed_memory()  # before either trainer runs, so both get the same allocator
    with torch_threads(threads):
        if family == "transformer":
            from zoo.bench_transformer import run_transformer_bench

            return run_transformer_bench(config, models, progress, reference_models)
        return _run_bench(config, models, progress, reference_models, peer)


def _run_bench(config: ZooConfig, models: int, progress: bool, reference_models: int, peer: str | None = None) -> BenchResult:
    threads = torch.get_num_threads()
    device = resolve_device(config.training.device)
    plans = [plan_batch(config, i) for i in range(models)]
    jobs = [clean_job(p) for p in plans]
    size = auto_population_size(config.training, device, max(bytes_per_model(j) for j in jobs))

    # warm-up, both trainers: the first call pays one-off costs (the reference's first step about 2 s here)
    train_subjects(jobs[: min(4, models)], config.training, device, epochs=1)
    _reference_logits(jobs[0], plans[0], config.model_copy(update={"training": config.training.model_copy(update={"epochs": 1})}))
    if peer == "vmap":
        from zoo.subjects.vmap_peer import train_vmap

        train_vmap(jobs[: min(4, models)], config.training, device, epochs=1)
    population_logits = np.zeros((models, len(plans[0].data.benchmark.pattern)), dtype=np.float32)
    reference_logits = np.zeros_like(population_logits)
    vmap_logits = np.zeros_like(population_logits)
    population_seconds = reference_seconds = vmap_seconds = flops = limit = 0.0
    with Progress(transient=True, disable=not progress) as bar:
        total = models * (2 if peer else 1) + reference_models
        task = bar.add_task("population, the sequential reference" + (f", the {peer} peer" if peer else ""), total=total)
        for indices in plan_groups([j.architecture for j in jobs], size):
            def population_turn():
                """Train the group (it trains alike every time) and time it and its limit, each counted half."""
                nonlocal population_seconds, limit
                _sync(device)
                fit.MATMULS = matmuls = Counter()
                start = time.perf_counter()
                try:
                    trained = train_group([jobs[i] for i in indices], config.training, device)
                    _sync(device)
                finally:
                    fit.MATMULS = None
                population_seconds += (time.perf_counter() - start) / 2
                limit += matmul_limit(matmuls, device) / 2
                return trained

            pop, result = population_turn()
            flops += sum(train_flops(jobs[i], int(e)) for i, e in zip(indices, result.epochs))
            tokens = torch.as_tensor(np.stack([plans[i].data.benchmark.tokens for i in indices]), device=device)
            population_logits[indices] = logits(pop, one_hot_inputs(tokens, config.patterns.vocab_size)).cpu().numpy()
            bar.advance(task, len(indices))

            start = time.perf_counter()
            for i in (i for i in indices if i < reference_models):
                reference_logits[i] = _reference_logits(jobs[i], plans[i], config)
                bar.advance(task)
            reference_seconds += time.perf_counter() - start

            if peer == "vmap":
                _sync(device)
                start = time.perf_counter()
                trained = train_vmap([jobs[i] for i in indices], config.training, device)
                _sync(device)
                vmap_seconds += time.perf_counter() - start
                for i, weights in zip(indices, trained):
                    vmap_logits[i] = _module_logits(jobs[i], plans[i], weights)
                bar.advance(task, len(indices))
            population_turn()  # again after the others' turns: a load that changed meanwhile weighs on it too

    both = slice(0, reference_models)
    return bench_result(
        plans, models, reference_models, device, threads, flops,
        (population_seconds, population_logits), (reference_seconds, reference_logits),
        matmul_limit_seconds=limit,
        population_share_of_limit=limit / population_seconds,
        vmap_seconds=vmap_seconds if peer else None,
        vmap_models_per_s=models / vmap_seconds if peer else None,
        vmap_accuracy=_benchmark_accuracy(plans[both], vmap_logits[both]) if peer else None,
    )


def bench_result(plans, models: int, reference_models: int, device, threads: int, flops: float,
                 population: tuple[float, np.ndarray], reference: tuple[float, np.ndarray], **extra) -> BenchResult:
    """The figures both families' benches report: ``population`` and ``reference`` are
    ``(seconds, benchmark logits [models, samples])``; accuracies over the models both trained."""
    (population_seconds, population_logits), (reference_seconds, reference_logits) = population, reference
    both = slice(0, reference_models)
    return BenchResult(
        models=models,
        reference_models=reference_models,
        device=str(device),
        threads=threads,
        population_seconds=population_seconds,
        reference_seconds=reference_seconds,
        population_models_per_s=models / population_seconds,
        reference_models_per_s=reference_models / reference_seconds,
        speedup=(models / population_seconds) / (reference_models / reference_seconds),
        population_accuracy=_benchmark_accuracy(plans[both], population_logits[both]),
        reference_accuracy=_benchmark_accuracy(plans[both], reference_logits[both]),
        train_gflop_per_s=flops / population_seconds / 1e9,
        matmul_peak_gflop_per_s=matmul_peak(device),
        **extra,
    )


def _module_logits(job: SubjectJob, plan: BatchPlan, weights: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return build_model(job.architecture, weights)(torch.as_tensor(plan.data.benchmark.tokens)).numpy()


def _reference_logits(job: SubjectJob, plan: BatchPlan, config: ZooConfig) -> np.ndarray:
    model, _, _ = train_reference(
        job.architecture,
        init_weights(job.architecture, job.init_seed),
        job.train_tokens,
        job.train_labels,
        job.val_tokens,
        job.val_labels,
        config.training,
        job.lr,
        job.order_seed,
    )
    with torch.no_grad():
        return model(torch.as_tensor(plan.data.benchmark.tokens)).numpy()


def render_bench(result: BenchResult, console: Console) -> None:
    table = Table(title=f"zoo bench on {result.device}, {result.threads} torch threads")
    for column in ("trainer", "models", "seconds", "models/s", "benchmark accuracy"):
        table.add_column(column, justify="right" if column != "trainer" else "left", overflow="fold")
    table.add_row(
        "population", str(result.models), f"{result.population_seconds:.2f}",
        f"{result.population_models_per_s:.1f}", f"{result.population_accuracy:.3f}",
    )
    table.add_row(
        "sequential reference", str(result.reference_models), f"{result.reference_seconds:.2f}",
        f"{result.reference_models_per_s:.1f}", f"{result.reference_accuracy:.3f}",
    )
    if result.vmap_models_per_s is not None:
        table.add_row(
            "torch.func vmap ensemble", str(result.models), f"{result.vmap_seconds:.2f}",
            f"{result.vmap_models_per_s:.1f}", f"{result.vmap_accuracy:.3f}",
        )
    console.print(table)
    console.print(f"speedup: [bold]{result.speedup:.1f}x[/bold]")
    if result.vmap_models_per_s is not None:
        console.print(f"population vs the vmap ensemble: [bold]{result.population_models_per_s / result.vmap_models_per_s:.1f}x[/bold]")
    if result.matmul_limit_seconds is not None:
        console.print(
            f"limit: the population's own bmm calls take {result.matmul_limit_seconds:.2f} s at the measured peak "
            f"for their shapes; it trained in {result.population_seconds:.2f} s, "
            f"[bold]{100 * result.population_share_of_limit:.0f}%[/bold] of its limit"
        )
    console.print(f"population: {3600 * result.population_models_per_s:,.0f} models per hour of training")
    console.print(
        f"train step: {result.train_gflop_per_s:.1f} GFLOP/s useful, "
        f"{100 * result.train_gflop_per_s / result.matmul_peak_gflop_per_s:.0f}% of the measured "
        f"{result.matmul_peak_gflop_per_s:.0f} GFLOP/s fp32 matmul peak"
    )
