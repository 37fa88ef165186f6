"""``zoo.pool.ActorPool``: tasks of a worker that dies are requeued and every task finishes exactly once.

"Finishes" is the pool's word: each task's result is yielded exactly once. A task may *run*
more than once, but only where its worker died before its result came back (it ran on the
process that died, or its reply was lost with it): side effects of a task must bear that,
as the factory's shards do (a shard delivered twice is listed once).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zoo.pool import ActorPool, TaskFailedError


def marking_worker(marks: Path, crash_on: int | None, crashes: int) -> type:
    """An actor whose ``run(i)`` leaves ``done-<i>-<pid>`` and returns ``i * i``; its process dies on task
    ``crash_on`` (before finishing it), ``crashes`` times in all (counted by ``crash-*`` files)."""

    class MarkingWorker:
        def run(self, i: int) -> int:
            if i == crash_on and len(list(marks.glob("crash-*"))) < crashes:
                (marks / f"crash-{len(list(marks.glob('crash-*')))}-{os.getpid()}").touch()
                os._exit(1)
            if i == -1:
                raise ValueError("a task's own error")
            (marks / f"done-{i}-{os.getpid()}").touch()
            return i * i

    return MarkingWorker


def finished(marks: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in marks.glob("done-*"))


def runs_on(marks: Path, i: int) -> list[int]:
    """The processes that ran task ``i`` to its end."""
    return [int(p.name.split("-")[2]) for p in marks.glob(f"done-{i}-*")]


@pytest.mark.parametrize("max_restarts", [1, 0])  # restarted by Ray, or dead for good and replaced
def test_a_task_whose_worker_dies_is_requeued_and_every_task_finishes_exactly_once(ray_session, tmp_path, max_restarts):
    tasks = list(range(8))
    lines: list[str] = []
    with ActorPool(
        marking_worker(tmp_path, crash_on=3, crashes=1), workers=2, max_restarts=max_restarts,
        describe=lambda i: f"task {i}", log=lines.append,
    ) as pool:  # fmt: skip
        results = list(pool.map_unordered(tasks))
    crashes = list(tmp_path.glob("crash-*"))
    assert len(crashes) == 1
    dead = int(crashes[0].name.split("-")[2])
    assert sorted(index for index, _ in results) == tasks  # each finished (yielded) exactly once
    assert all(result == tasks[index] ** 2 for index, result in results)
    assert sorted(set(finished(tmp_path))) == tasks  # each ran to its end
    for i in tasks:  # a second run only where the first was on the process that died
        pids = runs_on(tmp_path, i)
        assert len(pids) == 1 or (len(pids) == 2 and dead in pids), (i, pids, dead)
    assert pool.retries >= 1 and any("task 3: worker" in line and "requeued" in line for line in lines)
    if max_restarts == 0:
        assert any("worker replaced" in line for line in lines)


def test_a_task_that_keeps_killing_its_workers_fails_the_run(ray_session, tmp_path):
    with pytest.raises(TaskFailedError, match="task 0: its worker died 2 times"):
        with ActorPool(
            marking_worker(tmp_path, crash_on=0, crashes=100), workers=1, max_restarts=0, attempts=2,
            describe=lambda i: f"task {i}",
        ) as pool:  # fmt: skip
            list(pool.map_unordered([0, 1]))


def test_an_error_of_the_task_itself_is_raised_not_retried(ray_session, tmp_path):
    with pytest.raises(ValueError, match="a task's own error"):
        with ActorPool(marking_worker(tmp_path, crash_on=None, crashes=0), workers=1) as pool:
            list(pool.map_unordered([0, -1, 1]))
    assert pool.retries == 0
