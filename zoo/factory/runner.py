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
- Only actors known to be up get tasks: each starts with a ``ping`` in flight,
  and so does one whose task was lost. An actor that cannot be placed (its node
  is gone, the cluster is full) or is restarting holds no work while the others
  finish the run, and the driver never blocks on it. A run where no node can
  hold one worker (``num_gpus_per_worker > 0`` without a GPU) fails at once with
  ``WorkersUnavailableError``; so does one where no worker has been up for
  ``ACTOR_READY_TIMEOUT_S``.

Durability: a manifest line is appended (and fsynced) only after its shard is
durable, so a driver killed at any moment loses nothing finished and a rerun on
the same folder resumes. Leftovers of the killed run (temporary files, shards
without a line) are removed before a run starts. A second driver on the same
folder is refused while the first holds it (an advisory lock on ``zoo.json``).

Besides shards, ``zoo.json`` and ``manifest.jsonl``, the folder holds the
resolved config of the latest run (``config.yaml``) and the zoo's probe set
(``probe.parquet``); read shards through the manifest (``zoo.factory.reader``),
not by globbing ``*.parquet``.

Notes:
- More batches later (same config, larger ``batches``) extend a zoo. If the old
  count was not a multiple of ``storage.batches_per_shard``, the new batches of
  the old last task run as a smaller task, and their floats may differ in the
  last bits from a fresh run with the new count (populations of another size).
- Actors write shards to ``out`` on their own node: on a multi-node cluster it
  must be a shared filesystem.
- The embedded Ray keeps its dashboard (http://127.0.0.1:8265, loopback only);
  tests start one Ray per session without it (``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from zoo.atomic import write_bytes_atomic
from zoo.config import ZooConfig, dump_config
from zoo.factory.batch import TaskStats, probe_set, produce_shard, task_batches, zoo_identity
from zoo.factory.manifest import CONFIG_FILE, PROBE_FILE, ZOO_FILE, Manifest, clean_stale
from zoo.factory.shards import ShardInfo

TASK_ATTEMPTS = 3
"""A task whose worker dies this many times fails the run (a crash it causes itself, e.g. out of memory)."""
ACTOR_READY_TIMEOUT_S = 300.0
"""A run fails when no worker has been up for this long while tasks wait (e.g. no node can place one)."""
NODE_WAIT_S = 30.0
"""On a cluster we joined, how long to wait for a node that can hold one worker before failing."""
WAIT_TIMEOUT_S = 1.0


class ZooBusyError(ValueError):
    """Another driver is generating into the same folder."""


class TaskFailedError(RuntimeError):
    """A task lost its worker ``TASK_ATTEMPTS`` times."""


class WorkersUnavailableError(ValueError):
    """No worker can run: no node fits one (e.g. a GPU asked for where there is none), or none starts."""


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


def generate(config: ZooConfig, out: str | Path, console: Console | None = None) -> RunSummary:
    """Generate (or resume) the zoo of ``config`` in ``out``; see the module docstring."""
    console = Console() if console is None else console
    start = time.perf_counter()
    out = Path(out)
    zoo_id, config_hash = zoo_identity(config)
    Manifest.open(out, zoo_id=zoo_id, config_hash=config_hash)  # refuses another zoo's folder, writes nothing then
    with _exclusive(out):
        manifest = Manifest.open(out, zoo_id=zoo_id, config_hash=config_hash)  # fresh, now that we own the folder
        clean_stale(out)
        done = manifest.done_batches()
        tasks = task_batches(config)
        pending = [rest for rest in (tuple(b for b in task if b not in done) for task in tasks) if rest]
        total = sum(len(task) for task in tasks)
        use_ray = bool(pending) and config.runtime.workers > 0
        with _ray_connection(config.runtime.address, console) if use_ray else contextlib.nullcontext():
            _write_config(out, config)
            _write_probe(out, config)
            tracker = _Tracker(console, manifest, zoo_id, total, skipped=total - sum(map(len, pending)), start=start)
            if not pending:
                tracker.log(f"{zoo_id}: all {total} batches are in {out}; nothing to do")
            else:
                with tracker:
                    if use_ray:
                        _run_ray(config, out, pending, tracker)
                    else:
                        _run_local(config, out, pending, tracker)
        summary = tracker.summary(out, config.runtime.workers)
    render_run_summary(summary, console)
    return summary


# ---------------------------------------------------------------- folder setup


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an advisory lock on ``zoo.json`` for the run; released by the kernel even on SIGKILL."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / ZOO_FILE, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZooBusyError(f"{out}: another `zoo generate` is writing this folder") from None
        except OSError:  # a filesystem without locks: go on unprotected
            pass
        yield


def _write_config(out: Path, config: ZooConfig) -> None:
    """The resolved config of the latest run (rewritten only when it changed: batches, runtime)."""
    path = out / CONFIG_FILE
    text = dump_config(config).encode()
    if not path.is_file() or path.read_bytes() != text:
        write_bytes_atomic(path, text)


def _write_probe(out: Path, config: ZooConfig) -> None:
    """The zoo's probe set, written once (it is pinned by the config hash)."""
    path = out / PROBE_FILE
    if path.is_file():
        return
    sink = pa.BufferOutputStream()
    pq.write_table(probe_set(config).to_arrow(), sink, compression="zstd")
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


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

    def summary(self, out: Path, workers: int) -> RunSummary:
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
    table.add_column("what")
    table.add_column("value", justify="right")
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


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_local(config: ZooConfig, out: Path, pending: list[tuple[int, ...]], tracker: _Tracker) -> None:
    with _torch_threads(config.runtime.torch_threads):
        for task in pending:
            tracker.finished(*produce_shard(config, task, out))


# ---------------------------------------------------------------- Ray


class BatchWorker:
    """A Ray actor that runs tasks and writes their shards; holds the config and a device, nothing heavy."""

    def __init__(self, config: ZooConfig, out: str):
        import torch

        torch.set_num_threads(config.runtime.torch_threads)
        gpus = config.runtime.num_gpus_per_worker
        if 0 < gpus < 1 and torch.cuda.is_available():
            # Fractional GPUs share a device without memory isolation.
            torch.cuda.set_per_process_memory_fraction(gpus)
        self.config = config
        self.out = out

    def ping(self) -> int:
        """The actor's process id; answering at all means the actor is up."""
        return os.getpid()

    def run(self, batch_ids: tuple[int, ...]) -> tuple[ShardInfo, TaskStats]:
        return produce_shard(self.config, tuple(batch_ids), self.out)


def _lost_worker_errors() -> tuple[type[BaseException], ...]:
    """Failures of the worker, not of the task: the task is requeued."""
    from ray import exceptions as rex

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError")
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


@dataclass
class _Slot:
    """One worker: its actor handle, and a ``ping`` in flight while the actor is not known to be up.

    Tasks go only to slots without a probe, so an actor that cannot be placed
    (its node is gone, the cluster is full) or is restarting holds no work
    while the others finish the run.
    """

    actor: object
    probe: object | None = None
    generation: int = 0
    in_flight: int = 0
    started: bool = False
    failed_starts: int = 0


@dataclass(frozen=True)
class _Flight:
    """A submitted task: which actor (slot and incarnation) runs it, and when it was submitted."""

    task: tuple[int, ...]
    index: int
    generation: int
    seq: int


class _ActorPool:
    """``n`` actors with a bounded number of tasks each, refs mapped back to their tasks."""

    def __init__(self, config: ZooConfig, out: Path, n: int):
        import ray

        runtime = config.runtime
        self.cls = ray.remote(BatchWorker)  # looked up at run time, so tests can swap the class
        self.config = config
        self.out = str(out.resolve())
        self.options = {
            "num_cpus": runtime.num_cpus_per_worker,
            "num_gpus": runtime.num_gpus_per_worker,
            "max_restarts": runtime.max_restarts,
            "max_task_retries": 0,
        }
        self.per_actor = runtime.in_flight_per_worker
        self.in_flight: dict[object, _Flight] = {}
        self.probes: dict[object, tuple[int, int]] = {}
        self._seq = 0
        self._culprits: dict[tuple[int, int], int] = {}
        self.slots = [_Slot(self._new_actor()) for _ in range(n)]
        for index in range(n):
            self._probe(index)
        self.none_ready_since: float | None = time.monotonic()

    def _new_actor(self):
        return self.cls.options(**self.options).remote(self.config, self.out)

    def _probe(self, index: int) -> None:
        slot = self.slots[index]
        slot.probe = slot.actor.ping.remote()
        self.probes[slot.probe] = (index, slot.generation)

    def refs(self) -> list:
        return [*self.in_flight, *self.probes]

    def ready_count(self) -> int:
        return sum(slot.probe is None for slot in self.slots)

    def free_slot(self) -> int | None:
        ready = [i for i, slot in enumerate(self.slots) if slot.probe is None and slot.in_flight < self.per_actor]
        return min(ready, key=lambda i: self.slots[i].in_flight) if ready else None

    def submit(self, task: tuple[int, ...], index: int) -> None:
        slot = self.slots[index]
        ref = slot.actor.run.remote(task)
        slot.in_flight += 1
        self._seq += 1
        self.in_flight[ref] = _Flight(task, index, slot.generation, self._seq)

    def pop(self, ref) -> _Flight:
        flight = self.in_flight.pop(ref)
        self.slots[flight.index].in_flight -= 1
        return flight

    def probed(self, ref) -> str | None:
        """A ping came back: ``"ready"``, ``"replaced"`` (the actor is dead for good) or None (stale).

        A worker that fails to start ``TASK_ATTEMPTS`` times in a row fails the run
        (its constructor raises, or its runtime environment cannot be built).
        """
        import ray

        index, generation = self.probes.pop(ref)
        slot = self.slots[index]
        if slot.probe is not ref or slot.generation != generation:
            return None
        try:
            ray.get(ref)
        except _lost_worker_errors() as error:
            slot.failed_starts += 0 if slot.started else 1  # a worker that was up and died is not a failed start
            if slot.failed_starts >= TASK_ATTEMPTS:
                first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                raise WorkersUnavailableError(
                    f"worker {index} failed to start {slot.failed_starts} times: {first}"
                ) from error
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
            slot.actor = self._new_actor()
            slot.started = False
            slot.generation += 1
            self._probe(index)
            return "replaced"
        slot.probe = None
        slot.started = True
        slot.failed_starts = 0
        self.none_ready_since = None
        return "ready"

    def to_blame(self, flight: _Flight) -> bool:
        """Whether a lost task was the one its actor was running when it died.

        An actor runs its tasks in submission order, so of the tasks lost with one
        incarnation the earliest submitted was running; the others only queued
        behind it and do not count against their attempts. (Earlier tasks whose
        results arrived but are not yet collected finished: they are not lost.)
        """
        import ray

        key = (flight.index, flight.generation)
        if key not in self._culprits:
            self._culprits[key] = flight.seq
            earlier = sorted(
                ((f.seq, ref) for ref, f in self.in_flight.items() if (f.index, f.generation) == key and f.seq < flight.seq),
                key=lambda pair: pair[0],
            )
            for seq, ref in earlier:
                try:
                    ray.get(ref, timeout=0)
                except Exception:  # lost too (or not back yet, which for a dead actor means lost)
                    self._culprits[key] = seq
                    break
        return self._culprits[key] == flight.seq

    def heal(self, flight: _Flight) -> None:
        """After a lost task: take the slot out of service until a ping says its actor is up again.

        Ray restarts the actor (``max_restarts``) where resources allow; if it is
        dead for good, the failed ping replaces it (``probed``). Never blocks: the
        other workers go on meanwhile. Only the first loss of an incarnation acts.
        """
        slot = self.slots[flight.index]
        if flight.generation != slot.generation:
            return
        slot.generation += 1
        self._probe(flight.index)
        if self.ready_count() == 0 and self.none_ready_since is None:
            self.none_ready_since = time.monotonic()

    def check_stalled(self) -> None:
        """Fail instead of waiting forever when no worker has been up for ``ACTOR_READY_TIMEOUT_S``."""
        if self.none_ready_since is None or time.monotonic() - self.none_ready_since < ACTOR_READY_TIMEOUT_S:
            return
        cpus, gpus = self.options["num_cpus"], self.options["num_gpus"]
        raise WorkersUnavailableError(
            f"no worker started in {ACTOR_READY_TIMEOUT_S:.0f} s (each needs {cpus:g} CPU and {gpus:g} GPU; "
            f"the cluster has {_describe_resources()})"
        )

    def shutdown(self) -> None:
        import ray

        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)


def _alive_node_resources() -> list[dict]:
    import ray

    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]


def _describe_resources() -> str:
    nodes = _alive_node_resources()
    cpus = sum(r.get("CPU", 0) for r in nodes)
    gpus = sum(r.get("GPU", 0) for r in nodes)
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPUs, {gpus:g} GPUs"


def _check_resources(runtime, wait_s: float, log) -> None:
    """Fail fast, with one line, when no node of the cluster can hold even one worker.

    The typical case is ``num_gpus_per_worker > 0`` on a machine without a GPU:
    Ray would keep the actors pending forever. On a cluster that was joined
    (not started here), nodes may still be coming up: wait ``wait_s`` first.
    """
    cpus, gpus = runtime.num_cpus_per_worker, runtime.num_gpus_per_worker

    def fits() -> bool:
        return any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in _alive_node_resources())

    deadline = time.monotonic() + wait_s
    if not fits() and wait_s > 0:
        log(f"waiting up to {wait_s:.0f} s for a node with {cpus:g} CPU and {gpus:g} GPU free for one worker")
        while not fits() and time.monotonic() < deadline:
            time.sleep(1.0)
    if fits():
        return
    nodes = _alive_node_resources()
    if gpus > 0 and not any(r.get("GPU", 0) > 0 for r in nodes):
        raise WorkersUnavailableError(
            f"runtime.num_gpus_per_worker is {gpus:g} but the Ray cluster has no GPU "
            f"({_describe_resources()}); set it to 0 to train on CPUs"
        )
    raise WorkersUnavailableError(
        f"no node of the Ray cluster can hold one worker (runtime.num_cpus_per_worker {cpus:g}, "
        f"runtime.num_gpus_per_worker {gpus:g}; the cluster has {_describe_resources()})"
    )


class RayConnectionError(ValueError):
    """``runtime.address`` names no reachable Ray cluster."""


@contextlib.contextmanager
def _ray_connection(address: str | None, console: Console) -> Iterator[None]:
    """Use the Ray found in this process, or connect/start one and shut it down afterwards.

    Without an address, ``ray.init()`` joins the cluster in ``RAY_ADDRESS`` (set by
    ``ray job submit``) or one started with ``ray start`` on this machine, else it
    starts an embedded local Ray, dashboard included.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS")
    console.print(f"connecting to Ray at {target}" if target else "starting Ray", highlight=False, markup=False)
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise RayConnectionError(f"cannot reach Ray at {target}: {str(error).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _joined_cluster(address: str | None) -> bool:
    """Whether the run uses a cluster other nodes may still join (an address, or a ``ray job``)."""
    import ray

    return bool(address not in (None, "local") or os.environ.get("RAY_ADDRESS") or len(ray.nodes()) > 1)


def _run_ray(config: ZooConfig, out: Path, pending: list[tuple[int, ...]], tracker: _Tracker) -> None:
    import ray

    from zoo.factory.metrics import RunMetrics

    lost = _lost_worker_errors()
    _check_resources(config.runtime, NODE_WAIT_S if _joined_cluster(config.runtime.address) else 0.0, tracker.log)
    tracker.metrics = RunMetrics(tracker.zoo_id)
    pool = _ActorPool(config, out, min(config.runtime.workers, len(pending)))
    queue = deque(pending)
    attempts: dict[tuple[int, ...], int] = {}
    try:
        while queue or pool.in_flight:
            while queue and (index := pool.free_slot()) is not None:
                pool.submit(queue.popleft(), index)
            if queue and not pool.in_flight:
                pool.check_stalled()
            ready, _ = ray.wait(pool.refs(), num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in ready:
                if ref in pool.probes:
                    index = pool.probes[ref][0]
                    if pool.probed(ref) == "replaced":
                        tracker.log(f"worker {index} is gone for good; worker replaced")
                    continue
                flight = pool.pop(ref)
                try:
                    info, stats = ray.get(ref)
                except lost as error:
                    _requeue(pool, flight, error, queue, attempts, tracker)
                    continue
                tracker.finished(info, stats)
    finally:
        pool.shutdown()


def _requeue(pool: _ActorPool, flight: _Flight, error: Exception, queue: deque, attempts: dict, tracker: _Tracker) -> None:
    """Put a lost task back at the front of the queue; fail the run if it keeps killing its workers."""
    task = flight.task
    if pool.to_blame(flight):
        attempts[task] = attempts.get(task, 0) + 1
        if attempts[task] >= TASK_ATTEMPTS:
            raise TaskFailedError(
                f"batches {_batch_range(task)}: its worker died {attempts[task]} times while running it "
                f"({type(error).__name__})"
            ) from error
    tracker.retries += 1
    queue.appendleft(task)
    pool.heal(flight)
    tracker.log(f"batches {_batch_range(task)}: worker {flight.index} lost ({type(error).__name__}); requeued")
