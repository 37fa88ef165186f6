"""A fault-tolerant pool of Ray actors, and the Ray connection every fan-out shares.

The factory (``zoo generate --workers N``) and every reader that fans out over a
zoo (``zoo probe zoo --workers N``) run their tasks here:

- ``ActorPool(cls, args, workers=N, ...)`` starts ``N`` actors of ``cls(*args)``
  and ``map_unordered(tasks)`` calls ``actor.<method>(task)`` on them, yielding
  ``(index, result)`` pairs as tasks finish (``index`` is the task's place in
  ``tasks``). Each actor holds at most ``in_flight_per_actor`` tasks; refs map
  back to their tasks.
- Only actors known to be up get tasks: each starts with a readiness call
  (``__ray_ready__``) in flight, and so does one whose task was lost. An actor
  that cannot be placed (its node is gone, the cluster is full) or is restarting
  holds no work while the others go on, and the driver never blocks on it.
- A task whose actor dies (``RayActorError``, a lost node, a lost object) goes
  back to the front of the queue, and the actor's slot waits until Ray has
  restarted it (``max_restarts``) or, dead for good, it is replaced. Only the
  task the actor was running when it died counts against its attempts (the ones
  queued behind it were innocent); a task that kills ``attempts`` workers fails
  the run (``TaskFailedError``), and so does a worker that fails to start
  ``attempts`` times in a row or no worker up for ``ready_timeout_s``
  (``WorkersUnavailableError``). Every task finishes exactly once.
- An error raised by a task itself is not a lost worker: it propagates.

``ray_connection(address)`` uses the Ray found in the process or connects to /
starts one and shuts it down afterwards; ``check_reachable(address)``
(``zoo.ray_address``) refuses, in one line and within seconds, an address where no
cluster answers, so a command can check it before it writes anything;
``check_resources`` fails fast, in one line, when no node can hold even one worker.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.ray_address import RayConnectionError, check_reachable, ray_endpoint  # noqa: F401 (re-exported)

TASK_ATTEMPTS = 3
"""A task whose worker dies this many times fails the run (a crash it causes itself, e.g. out of memory)."""
ACTOR_READY_TIMEOUT_S = 300.0
"""A run fails when no worker has been up for this long while tasks wait (e.g. no node can place one)."""
NODE_WAIT_S = 30.0
"""On a cluster we joined, how long to wait for a node that can hold one worker before failing."""
WAIT_TIMEOUT_S = 1.0

Log = Callable[[str], None]


class TaskFailedError(RuntimeError):
    """A task lost its worker ``TASK_ATTEMPTS`` times."""


class WorkersUnavailableError(ValueError):
    """No worker can run: no node fits one (e.g. a GPU asked for where there is none), or none starts."""


def lost_worker_errors() -> tuple[type[BaseException], ...]:
    """Failures of the worker, not of the task: the task is requeued."""
    from ray import exceptions as rex

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError")
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


# ---------------------------------------------------------------- the cluster


@contextlib.contextmanager
def ray_connection(address: str | None = None, log: Log | None = None) -> Iterator[None]:
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
    if log is not None:
        log(f"connecting to Ray at {target}" if target else "starting Ray")
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise RayConnectionError(f"cannot reach Ray at {target}: {str(error).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


def joined_cluster(address: str | None) -> bool:
    """Whether the run uses a cluster other nodes may still join (an address, or a ``ray job``)."""
    import ray

    return bool(address not in (None, "local") or os.environ.get("RAY_ADDRESS") or len(ray.nodes()) > 1)


def alive_node_resources() -> list[dict]:
    import ray

    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]


def describe_resources() -> str:
    nodes = alive_node_resources()
    cpus = sum(r.get("CPU", 0) for r in nodes)
    gpus = sum(r.get("GPU", 0) for r in nodes)
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPUs, {gpus:g} GPUs"


def check_resources(
    cpus: float,
    gpus: float,
    wait_s: float,
    log: Log,
    cpu_setting: str = "num_cpus_per_worker",
    gpu_setting: str = "num_gpus_per_worker",
) -> None:
    """Fail fast, with one line, when no node of the cluster can hold even one worker.

    The typical case is GPUs per worker on a machine without a GPU: Ray would keep
    the actors pending forever. On a cluster that was joined (not started here),
    nodes may still be coming up: wait ``wait_s`` first. ``cpu_setting`` and
    ``gpu_setting`` name the settings in the message.
    """

    def fits() -> bool:
        return any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive_node_resources())

    deadline = time.monotonic() + wait_s
    if not fits() and wait_s > 0:
        log(f"waiting up to {wait_s:.0f} s for a node with {cpus:g} CPU and {gpus:g} GPU free for one worker")
        while not fits() and time.monotonic() < deadline:
            time.sleep(1.0)
    if fits():
        return
    nodes = alive_node_resources()
    if gpus > 0 and not any(r.get("GPU", 0) > 0 for r in nodes):
        raise WorkersUnavailableError(
            f"{gpu_setting} is {gpus:g} but the Ray cluster has no GPU ({describe_resources()}); set it to 0 to run on CPUs"
        )
    raise WorkersUnavailableError(
        f"no node of the Ray cluster can hold one worker ({cpu_setting} {cpus:g}, "
        f"{gpu_setting} {gpus:g}; the cluster has {describe_resources()})"
    )


# ---------------------------------------------------------------- the pool


@dataclass
class _Slot:
    """One worker: its actor handle, and a readiness call in flight while the actor is not known to be up."""

    actor: object
    probe: object | None = None
    generation: int = 0
    in_flight: int = 0
    started: bool = False
    failed_starts: int = 0


@dataclass(frozen=True)
class _Flight:
    """A submitted task: which actor (slot and incarnation) runs it, and when it was submitted."""

    index: int  # the task's place in the caller's list
    slot: int
    generation: int
    seq: int


class ActorPool:
    """``workers`` actors of ``cls(*args)``, a bounded number of tasks each, lost tasks requeued.

    Use it as a context manager (the actors are killed at the end) and iterate
    ``map_unordered(tasks)``. ``describe(task)`` names a task in log lines and
    errors (``"batches 0-1"``); ``log`` gets one line per lost task and replaced
    worker; ``retries`` counts the requeued tasks.
    """

    def __init__(
        self,
        cls: type,
        args: Sequence[Any] = (),
        *,
        workers: int,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_restarts: int = 2,
        in_flight_per_actor: int = 2,
        method: str = "run",
        attempts: int = TASK_ATTEMPTS,
        ready_timeout_s: float = ACTOR_READY_TIMEOUT_S,
        describe: Callable[[Any], str] = str,
        log: Log | None = None,
    ):
        import ray

        if workers < 1:
            raise ValueError(f"an actor pool needs at least one worker, not {workers}")
        self.cls = ray.remote(cls)
        self.args = tuple(args)
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": max_restarts, "max_task_retries": 0}
        self.per_actor = in_flight_per_actor
        self.method = method
        self.attempts = attempts
        self.ready_timeout_s = ready_timeout_s
        self.describe = describe
        self.log = log if log is not None else (lambda line: None)
        self.retries = 0
        self.in_flight: dict[object, _Flight] = {}
        self.probes: dict[object, tuple[int, int]] = {}
        self._seq = 0
        self._culprits: dict[tuple[int, int], int] = {}
        self.slots = [_Slot(self._new_actor()) for _ in range(workers)]
        for index in range(workers):
            self._probe(index)
        self.none_ready_since: float | None = time.monotonic()

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------ the loop

    def map_unordered(self, tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Run every task once; yield ``(index in tasks, result)`` as they finish."""
        import ray

        lost = lost_worker_errors()
        queue = deque(range(len(tasks)))
        tries: dict[int, int] = {}
        while queue or self.in_flight:
            while queue and (slot := self._free_slot()) is not None:
                index = queue.popleft()
                self._submit(index, tasks[index], slot)
            if queue and not self.in_flight:
                self._check_stalled()
            ready, _ = ray.wait(self._refs(), num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in ready:
                if ref in self.probes:
                    slot = self.probes[ref][0]
                    if self._probed(ref) == "replaced":
                        self.log(f"worker {slot} is gone for good; worker replaced")
                    continue
                flight = self._pop(ref)
                try:
                    result = ray.get(ref)
                except lost as error:
                    self._requeue(flight, tasks[flight.index], error, queue, tries)
                    continue
                yield flight.index, result

    def _requeue(self, flight: _Flight, task: Any, error: Exception, queue: deque, tries: dict[int, int]) -> None:
        """Put a lost task back at the front of the queue; fail the run if it keeps killing its workers."""
        if self._to_blame(flight):
            tries[flight.index] = tries.get(flight.index, 0) + 1
            if tries[flight.index] >= self.attempts:
                raise TaskFailedError(
                    f"{self.describe(task)}: its worker died {tries[flight.index]} times while running it "
                    f"({type(error).__name__})"
                ) from error
        self.retries += 1
        queue.appendleft(flight.index)
        self._heal(flight)
        self.log(f"{self.describe(task)}: worker {flight.slot} lost ({type(error).__name__}); requeued")

    # ------------------------------------------------------------ actors and refs

    def _new_actor(self):
        return self.cls.options(**self.options).remote(*self.args)

    def _probe(self, index: int) -> None:
        slot = self.slots[index]
        slot.probe = slot.actor.__ray_ready__.remote()
        self.probes[slot.probe] = (index, slot.generation)

    def _refs(self) -> list:
        return [*self.in_flight, *self.probes]

    def ready_count(self) -> int:
        return sum(slot.probe is None for slot in self.slots)

    def _free_slot(self) -> int | None:
        ready = [i for i, slot in enumerate(self.slots) if slot.probe is None and slot.in_flight < self.per_actor]
        return min(ready, key=lambda i: self.slots[i].in_flight) if ready else None

    def _submit(self, index: int, task: Any, slot_index: int) -> None:
        slot = self.slots[slot_index]
        ref = getattr(slot.actor, self.method).remote(task)
        slot.in_flight += 1
        self._seq += 1
        self.in_flight[ref] = _Flight(index, slot_index, slot.generation, self._seq)

    def _pop(self, ref) -> _Flight:
        flight = self.in_flight.pop(ref)
        self.slots[flight.slot].in_flight -= 1
        return flight

    def _probed(self, ref) -> str | None:
        """A readiness call came back: ``"ready"``, ``"replaced"`` (the actor is dead for good) or None (stale).

        A worker that fails to start ``attempts`` times in a row fails the run
        (its constructor raises, or its runtime environment cannot be built).
        """
        import ray

        index, generation = self.probes.pop(ref)
        slot = self.slots[index]
        if slot.probe is not ref or slot.generation != generation:
            return None
        try:
            ray.get(ref)
        except lost_worker_errors() as error:
            slot.failed_starts += 0 if slot.started else 1  # a worker that was up and died is not a failed start
            if slot.failed_starts >= self.attempts:
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

    def _to_blame(self, flight: _Flight) -> bool:
        """Whether a lost task was the one its actor was running when it died.

        An actor runs its tasks in submission order, so of the tasks lost with one
        incarnation the earliest submitted was running; the others only queued
        behind it and do not count against their attempts. (Earlier tasks whose
        results arrived but are not yet collected finished: they are not lost.)
        """
        import ray

        key = (flight.slot, flight.generation)
        if key not in self._culprits:
            self._culprits[key] = flight.seq
            earlier = sorted(
                ((f.seq, ref) for ref, f in self.in_flight.items() if (f.slot, f.generation) == key and f.seq < flight.seq),
                key=lambda pair: pair[0],
            )
            for seq, ref in earlier:
                try:
                    ray.get(ref, timeout=0)
                except Exception:  # lost too (or not back yet, which for a dead actor means lost)
                    self._culprits[key] = seq
                    break
        return self._culprits[key] == flight.seq

    def _heal(self, flight: _Flight) -> None:
        """After a lost task: take the slot out of service until a readiness call says its actor is up again.

        Ray restarts the actor (``max_restarts``) where resources allow; if it is
        dead for good, the failed call replaces it (``_probed``). Never blocks: the
        other workers go on meanwhile. Only the first loss of an incarnation acts.
        """
        slot = self.slots[flight.slot]
        if flight.generation != slot.generation:
            return
        slot.generation += 1
        self._probe(flight.slot)
        if self.ready_count() == 0 and self.none_ready_since is None:
            self.none_ready_since = time.monotonic()

    def _check_stalled(self) -> None:
        """Fail instead of waiting forever when no worker has been up for ``ready_timeout_s``."""
        if self.none_ready_since is None or time.monotonic() - self.none_ready_since < self.ready_timeout_s:
            return
        cpus, gpus = self.options["num_cpus"], self.options["num_gpus"]
        raise WorkersUnavailableError(
            f"no worker started in {self.ready_timeout_s:.0f} s (each needs {cpus:g} CPU and {gpus:g} GPU; "
            f"the cluster has {describe_resources()})"
        )

    def shutdown(self) -> None:
        import ray

        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
