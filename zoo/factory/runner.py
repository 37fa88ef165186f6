"""Running a zoo: the task plan, in-process or on Ray actors, into one folder.

``generate(config, out)`` runs every task of ``task_batches(config)`` that the
folder's manifest does not list yet and returns a ``RunSummary``. One task is a
fixed tuple of batch ids and becomes exactly one shard; the partition never
depends on the number of workers, so ``--workers 0``, ``1`` or ``8`` give the
same records.

- ``runtime.workers == 0``: the tasks run in this process, in order, without Ray
  (the debugging path).
- ``runtime.workers >= 1``: ``BatchWorker`` actors run the tasks and write the
  shards themselves (weights never cross the object store; the driver gets a
  ``ShardInfo`` and a ``TaskStats``). The driver keeps at most
  ``workers * in_flight_per_worker`` tasks in flight, requeues a task whose
  worker died (restarting or replacing the actor), and is the only writer of the
  manifest. Ray is used as found when it is already initialized (a test session,
  a ``ray job``, a notebook); otherwise ``ray.init(address=runtime.address)``
  connects to a cluster or starts an embedded local one, dashboard included,
  and shuts it down at the end.
- The actors are a ``zoo.pool.ActorPool`` (the fan-out every reader uses too):
  only actors known to be up get tasks, an actor that cannot be placed or is
  restarting holds no work while the others finish the run, and the driver never
  blocks on it. A run where no node can hold one worker (``num_gpus_per_worker >
  0`` without a GPU) fails at once with ``WorkersUnavailableError``; so does one
  where no worker has been up for ``ACTOR_READY_TIMEOUT_S``.

``out`` is a local folder or any ``pyarrow.fs`` URI (``s3://bucket/prefix``,
``file://...``; ``zoo.storage``): actors write shards straight to the store.

Durability: a manifest entry is committed only after its shard is durable
(``zoo.factory.manifest`` gives the protocol, which holds on object storage), so
a driver killed at any moment loses nothing finished and a rerun resumes.
Before a run starts, temporary files of a killed run are removed and every
entry is checked against its shard (size and sha256): an entry whose shard is
missing, truncated, corrupt or listed twice is set aside and its batches run
again; no shard is deleted. After a complete run, unlisted shards whose batches
are all listed move to ``orphans/``. A second driver on the same local folder is
refused while the first holds it (an advisory lock on ``.zoo.lock``, taken before
anything is written); object storage has no lock, but two racing drivers of one
zoo write the same shards and the same entries. Before the lock, nothing is
written while the location is refused (a file, another zoo, a folder of other
files) or the Ray address answers nothing.

Besides shards, ``zoo.json`` and ``manifest.jsonl``, the folder holds the
resolved config of the latest run (``config.yaml``) and the zoo's probe set
(``probe.parquet``); read shards through the manifest (``zoo.factory.reader``),
not by globbing ``*.parquet``.

Notes:
- More batches later (same config, larger ``batches``) extend a zoo. If the old
  count was not a multiple of ``storage.batches_per_shard``, the new batches of
  the old last task run as a smaller task, and their floats may differ in the
  last bits from a fresh run with the new count (populations of another size).
- Actors write shards to ``out`` from their own node: on a multi-node cluster it
  must be object storage (or a shared filesystem).
- The embedded Ray keeps its dashboard (http://127.0.0.1:8265, loopback only);
  tests start one Ray per session without it (``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from zoo.config import ZooConfig, dump_config
from zoo.factory.batch import TaskStats, probe_set, produce_shard, task_batches, written_version, zoo_identity
from zoo.factory.manifest import CONFIG_FILE, LOCK_FILE, PROBE_FILE, Manifest, clean_stale
from zoo.factory.shards import ShardInfo
from zoo.storage import Store, resolve
from zoo.pool import (  # noqa: F401  (the errors and limits are re-exported: callers import them from here)
    ACTOR_READY_TIMEOUT_S,
    NODE_WAIT_S,
    TASK_ATTEMPTS,
    ActorPool,
    RayConnectionError,
    TaskFailedError,
    WorkersUnavailableError,
    check_reachable,
    check_resources,
    joined_cluster,
    ray_connection,
)
from zoo.runtime import torch_threads


class ZooBusyError(ValueError):
    """Another driver is generating into the same folder."""


class RepairError(ValueError):
    """A zoo that ``repair`` cannot heal (no ``config.yaml`` to compute its batches from)."""


@dataclass(frozen=True)
class RunSummary:
    """What one ``generate`` call did (counts are of this run; ``zoo_bytes`` is the whole folder's)."""

    zoo_id: str
    out: str
    workers: int
    batches_total: int
    batches_skipped: int
    batches: int
    shards: int
    kept: int
    dropped: int
    models: int
    seconds: float
    models_per_second: float
    bytes: int
    zoo_bytes: int
    retries: int

    def to_dict(self) -> dict:
        return asdict(self)


def generate(config: ZooConfig, out: str | Path | Store, console: Console | None = None) -> RunSummary:
    """Generate (or resume) the zoo of ``config`` in ``out`` (a folder or a URI); see the module docstring."""
    console = Console() if console is None else console
    start = time.perf_counter()
    out = resolve(out)
    zoo_id, config_hash = zoo_identity(config)
    identity = {"zoo_id": zoo_id, "config_hash": config_hash, "schema_version": written_version(config)}
    Manifest.check(out, **identity)  # a file, another zoo, a folder of other files: refused, nothing written
    if config.runtime.workers > 0:
        check_reachable(config.runtime.address, "runtime.address")  # seconds, not Ray's minutes of retries
    with _exclusive(out):  # the lock first; then zoo.json, the manifest and shards
        manifest = Manifest.open(out, **identity)
        clean_stale(out)
        for line in manifest.heal():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        done = manifest.done_batches()
        tasks = task_batches(config)
        pending = [rest for rest in (tuple(b for b in task if b not in done) for task in tasks) if rest]
        total = sum(len(task) for task in tasks)
        use_ray = bool(pending) and config.runtime.workers > 0
        connect = ray_connection(config.runtime.address, lambda line: console.print(line, highlight=False, markup=False))
        with connect if use_ray else contextlib.nullcontext():
            _write_config(out, config)
            _write_probe(out, config)
            tracker = _Tracker(console, manifest, zoo_id, total, skipped=total - sum(map(len, pending)), start=start)
            if not pending:
                tracker.log(f"{zoo_id}: all {total} batches are in {out.name}; nothing to do")
            else:
                with tracker:
                    if use_ray:
                        _run_ray(config, out, pending, tracker)
                    else:
                        _run_local(config, out, pending, tracker)
            if manifest.done_batches() >= {b for task in tasks for b in task}:
                for rel in manifest.sweep():
                    tracker.log(f"{out.display(rel)}: unlisted and redundant (its batches are listed); moved to orphans/")
        summary = tracker.summary(out.name, config.runtime.workers)
    render_run_summary(summary, console)
    return summary


# ---------------------------------------------------------------- folder setup


@contextlib.contextmanager
def _exclusive(out: Store) -> Iterator[None]:
    """Hold an advisory lock on the folder's ``.zoo.lock`` for the run, taken before anything else is
    written; released by the kernel even on SIGKILL.

    The lock file is created empty and never written, replaced or deleted, so every driver locks the
    same inode (a lock on ``zoo.json`` would be lost when it is first written, by rename). Object
    storage has no lock: racing drivers there write identical shards and entries."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    if not out.local:
        yield
        return
    out.makedirs()
    fd = os.open(out.local_path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZooBusyError(f"{out.name}: another `zoo generate` is writing this folder") from None
        except OSError:  # a filesystem without locks: go on unprotected
            pass
        yield
    finally:
        os.close(fd)


def _write_config(out: Store, config: ZooConfig) -> None:
    """The resolved config of the latest run (rewritten only when it changed: batches, runtime)."""
    text = dump_config(config).encode()
    try:
        same = out.read_bytes(CONFIG_FILE) == text
    except FileNotFoundError:
        same = False
    if not same:
        out.write_bytes(CONFIG_FILE, text)


def _write_probe(out: Store, config: ZooConfig) -> None:
    """The zoo's probe set, written once (it is pinned by the config hash)."""
    if out.is_file(PROBE_FILE):
        return
    sink = pa.BufferOutputStream()
    pq.write_table(probe_set(config).to_arrow(), sink, compression="zstd")
    out.write_bytes(PROBE_FILE, sink.getvalue().to_pybytes())


# ---------------------------------------------------------------- progress, logging, metrics


def _batch_range(batches: tuple[int, ...]) -> str:
    lo, hi = min(batches), max(batches)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


class _Tracker:
    """Counts, the manifest, one log line per finished task, the progress bar and the Ray metrics."""

    def __init__(self, console: Console, manifest: Manifest, zoo_id: str, total: int, *, skipped: int, start: float):
        self.console = console
        self.manifest = manifest
        self.zoo_id = zoo_id
        self.total = total
        self.skipped = skipped
        self.start = start
        self.batches = self.shards = self.kept = self.dropped = self.models = self.bytes = self.retries = 0
        self.metrics = None
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TextColumn("kept {task.fields[kept]:,} dropped {task.fields[dropped]:,}"),
            TextColumn("{task.fields[rate]:.1f} models/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(zoo_id, total=total, completed=skipped, kept=0, dropped=0, rate=0.0)

    def __enter__(self) -> _Tracker:
        if self.skipped:
            self.log(f"resuming: {self.skipped} of {self.total} batches already done")
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.models / elapsed if elapsed > 0 else 0.0

    def log(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def finished(self, info: ShardInfo, stats: TaskStats) -> None:
        """A task's shard is durable: list it, count it, say so."""
        if not self.manifest.add(info):
            self.log(f"batches {_batch_range(info.batches)}: delivered twice, already listed")
            return
        self.batches += len(info.batches)
        self.shards += 1
        self.kept += stats.kept
        self.dropped += stats.dropped
        self.models += stats.models
        self.bytes += info.bytes
        task_rate = stats.models / stats.seconds if stats.seconds > 0 else 0.0
        self.log(
            f"[{self.skipped + self.batches}/{self.total}] batches {_batch_range(info.batches)}: "
            f"kept {stats.kept}, dropped {stats.dropped}, {stats.models} models in {stats.seconds:.2f} s "
            f"({task_rate:.1f} models/s) -> {info.name}"
        )
        rate = self.rate
        self.progress.update(self.task, advance=len(info.batches), kept=self.kept, dropped=self.dropped, rate=rate)
        if self.metrics is not None:
            self.metrics.record(
                models=stats.models,
                kept=stats.kept,
                dropped=stats.dropped,
                shards=1,
                bytes_=info.bytes,
                models_per_second=rate,
            )

    def summary(self, out: str, workers: int) -> RunSummary:
        seconds = time.perf_counter() - self.start
        return RunSummary(
            zoo_id=self.zoo_id,
            out=str(out),
            workers=workers,
            batches_total=self.total,
            batches_skipped=self.skipped,
            batches=self.batches,
            shards=self.shards,
            kept=self.kept,
            dropped=self.dropped,
            models=self.models,
            seconds=seconds,
            models_per_second=self.models / seconds if seconds > 0 else 0.0,
            bytes=self.bytes,
            zoo_bytes=sum(int(entry["bytes"]) for entry in self.manifest.entries()),
            retries=self.retries,
        )


def render_run_summary(summary: RunSummary, console: Console) -> None:
    table = Table(title=f"generated {summary.zoo_id}", show_header=False)
    table.add_column("what", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")  # fold, never cut: "out" may be a long path
    table.add_row("batches run", f"{summary.batches:,}")
    table.add_row("batches skipped (done before)", f"{summary.batches_skipped:,}")
    table.add_row("batches in zoo", f"{summary.batches_total:,}")
    table.add_row("shards written", f"{summary.shards:,}")
    table.add_row("pairs kept", f"{summary.kept:,}")
    table.add_row("pairs dropped", f"{summary.dropped:,}")
    table.add_row("models trained", f"{summary.models:,}")
    table.add_row("seconds", f"{summary.seconds:,.1f}")
    table.add_row("models/s", f"{summary.models_per_second:,.1f}")
    table.add_row("bytes written", f"{summary.bytes / 1e6:,.2f} MB")
    table.add_row("zoo bytes", f"{summary.zoo_bytes / 1e6:,.2f} MB")
    if summary.retries:
        table.add_row("tasks retried", f"{summary.retries:,}")
    table.add_row("workers", "in-process" if summary.workers == 0 else f"{summary.workers}")
    table.add_row("out", summary.out)
    console.print(table)


# ---------------------------------------------------------------- in-process


def _run_local(config: ZooConfig, out: Store, pending: list[tuple[int, ...]], tracker: _Tracker) -> None:
    with torch_threads(config.runtime.torch_threads):
        for task in pending:
            tracker.finished(*produce_shard(config, task, out))


# ---------------------------------------------------------------- Ray


class BatchWorker:
    """A Ray actor that runs tasks and writes their shards; holds the config and a device, nothing heavy."""

    def __init__(self, config: ZooConfig, out: Store | str):
        import torch

        gpus = config.runtime.num_gpus_per_worker
        if 0 < gpus < 1 and torch.cuda.is_available():
            # Fractional GPUs share a device without memory isolation.
            torch.cuda.set_per_process_memory_fraction(gpus)
        self.config = config
        self.out = resolve(out)

    def run(self, batch_ids: tuple[int, ...]) -> tuple[ShardInfo, TaskStats]:
        with torch_threads(self.config.runtime.torch_threads):
            return produce_shard(self.config, tuple(batch_ids), self.out)


def _run_ray(config: ZooConfig, out: Store, pending: list[tuple[int, ...]], tracker: _Tracker) -> None:
    """The tasks on ``BatchWorker`` actors of a ``zoo.pool.ActorPool`` (lost tasks requeued there)."""
    from zoo.factory.metrics import RunMetrics

    runtime = config.runtime
    check_resources(
        runtime.num_cpus_per_worker,
        runtime.num_gpus_per_worker,
        NODE_WAIT_S if joined_cluster(runtime.address) else 0.0,
        tracker.log,
        cpu_setting="runtime.num_cpus_per_worker",
        gpu_setting="runtime.num_gpus_per_worker",
    )
    tracker.metrics = RunMetrics(tracker.zoo_id)
    pool = ActorPool(
        BatchWorker,  # looked up at run time, so tests can swap the class
        (config, out),
        workers=min(runtime.workers, len(pending)),
        num_cpus=runtime.num_cpus_per_worker,
        num_gpus=runtime.num_gpus_per_worker,
        max_restarts=runtime.max_restarts,
        in_flight_per_actor=runtime.in_flight_per_worker,
        attempts=TASK_ATTEMPTS,
        describe=lambda task: f"batches {_batch_range(task)}",
        log=tracker.log,
    )
    try:
        with pool:
            for _, (info, stats) in pool.map_unordered(pending):
                tracker.finished(info, stats)
    finally:
        tracker.retries += pool.retries


# ---------------------------------------------------------------- repair


def repair(out: str | Path | Store, console: Console | None = None, workers: int = 0) -> list[str]:
    """Heal a zoo in place (``zoo verify --repair``): set aside manifest entries that do not hold,
    compute their batches again from the zoo's own ``config.yaml`` (tasks are deterministic) and
    move redundant unlisted shards to ``orphans/``. Returns what ``verify`` finds afterwards."""
    from zoo.config import ConfigError, parse_config
    from zoo.factory.reader import verify

    console = Console(quiet=True) if console is None else console
    store = resolve(out)
    try:
        text = store.read_bytes(CONFIG_FILE)
    except FileNotFoundError:
        raise RepairError(f"{store.name}: no {CONFIG_FILE}, so its batches cannot be computed again") from None
    import yaml

    try:
        data = yaml.safe_load(text.decode("utf-8")) or {}
        data.setdefault("runtime", {})["workers"] = workers
        config = parse_config(data)
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as error:
        raise ConfigError(f"{store.display(CONFIG_FILE)}: unreadable ({type(error).__name__})") from None
    except ConfigError as error:
        raise ConfigError(f"{store.display(CONFIG_FILE)}: {error}") from None
    generate(config, store, console=console)
    return verify(store)
