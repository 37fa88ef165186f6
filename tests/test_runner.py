"""The runner: in-process and on Ray actors, resume, leftovers, lost workers, metrics."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

import zoo.factory.runner as runner
from zoo.config import ZooConfig, load_config
from zoo.factory.batch import probe_set, task_batches
from zoo.factory.manifest import LOCK_FILE, MANIFEST_FILE, ZooMismatchError, read_manifest
from zoo.factory.metrics import RunMetrics
from zoo.factory.reader import read_records, verify
from zoo.factory.runner import BatchWorker, RunSummary, TaskFailedError, ZooBusyError, generate
from zoo.factory.schema import content_hash
from zoo.patterns.sampler import ProbeSet

LOG_LINE = re.compile(r"batches \d+(-\d+)?: kept \d+, dropped \d+, \d+ models in [\d.]+ s \([\d.]+ models/s\)")


def run(config: ZooConfig, out: Path, **runtime) -> tuple[RunSummary, str]:
    """Generate quietly; the summary and everything printed."""
    if runtime:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update=runtime)})
    buffer = io.StringIO()
    summary = generate(config, out, console=Console(file=buffer, width=200))
    return summary, buffer.getvalue()


def records_hash(out: Path) -> str:
    return content_hash(read_records(out))


def listed_batches(out: Path) -> list[int]:
    return sorted(int(b) for entry in read_manifest(out) for b in entry["batches"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(ray_session, make_config, tmp_path_factory):
    """The tiny zoo generated with 0 (no Ray), 1 and 2 workers; metrics calls captured."""
    config = make_config()
    results = {}
    for workers in (0, 1, 2):
        calls: list[dict] = []
        original = RunMetrics.record

        def record(self, **kwargs):
            calls.append(kwargs)
            original(self, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(RunMetrics, "record", record)
            out = tmp_path_factory.mktemp(f"workers{workers}")
            summary, text = run(config, out, workers=workers)
        results[workers] = {"out": out, "summary": summary, "text": text, "metrics": calls, "config": config}
    return results


@pytest.mark.parametrize("workers", [1, 2])
def test_records_do_not_depend_on_workers(runs, workers):
    assert read_records(runs[0]["out"]).num_rows > 0
    assert records_hash(runs[workers]["out"]) == records_hash(runs[0]["out"])


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_one_shard_per_task(runs, workers):
    entries = read_manifest(runs[workers]["out"])
    assert sorted(tuple(e["batches"]) for e in entries) == task_batches(runs[workers]["config"])
    assert verify(runs[workers]["out"]) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_summary_counts_match_the_folder(runs, workers):
    summary, config, out = runs[workers]["summary"], runs[workers]["config"], runs[workers]["out"]
    entries = read_manifest(out)
    assert summary.batches == config.batches
    assert summary.batches_skipped == 0
    assert summary.shards == len(entries) == 3
    assert summary.kept == sum(e["rows"] for e in entries)
    assert summary.kept + summary.dropped == config.batches * config.corruption.degraded_per_batch
    assert summary.models == config.batches * (1 + config.corruption.degraded_per_batch)
    assert summary.bytes == summary.zoo_bytes == sum(e["bytes"] for e in entries)
    assert summary.models_per_second == pytest.approx(summary.models / summary.seconds)


@pytest.mark.parametrize("workers", [0, 2])
def test_one_log_line_per_task(runs, workers):
    lines = [line for line in runs[workers]["text"].splitlines() if LOG_LINE.search(line)]
    assert len(lines) == len(task_batches(runs[workers]["config"]))


def test_metrics_recorded_per_result_with_ray(runs):
    calls, summary = runs[2]["metrics"], runs[2]["summary"]
    assert len(calls) == summary.shards
    assert sum(c["models"] for c in calls) == summary.models
    assert sum(c["kept"] for c in calls) == summary.kept
    assert sum(c["bytes_"] for c in calls) == summary.bytes


def test_no_metrics_without_ray(runs):
    assert runs[0]["metrics"] == []


def test_folder_holds_resolved_config_and_probe_set(runs):
    out, config = runs[0]["out"], runs[0]["config"]
    assert load_config(out / runner.CONFIG_FILE) == config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"workers": 0})}
    )
    assert ProbeSet.from_arrow(pq.read_table(out / runner.PROBE_FILE)).hash == probe_set(config).hash


# ---------------------------------------------------------------- resume, leftovers, refusals (no Ray)


def test_second_run_trains_nothing(make_config, tmp_path):
    config = make_config(runtime={"workers": 0})
    run(config, tmp_path)
    before = snapshot(tmp_path)
    summary, _ = run(config, tmp_path)
    assert (summary.models, summary.batches, summary.batches_skipped) == (0, 0, config.batches)
    assert snapshot(tmp_path) == before


def test_leftovers_are_cleaned_and_the_zoo_completed(make_config, tmp_path):
    config = make_config(runtime={"workers": 0})
    run(config, tmp_path)
    expected = records_hash(tmp_path)
    manifest = tmp_path / MANIFEST_FILE
    first_line = manifest.read_bytes().splitlines(keepends=True)[0]
    manifest.write_bytes(first_line)  # as if killed after the first shard: the others are unlisted
    leftover = tmp_path / "shard-000002-000003-abc.parquet.123-deadbeef.tmp"
    leftover.write_bytes(b"half a shard")
    summary, _ = run(config, tmp_path)
    assert not leftover.exists()
    assert summary.batches == config.batches - len(json.loads(first_line)["batches"])
    assert listed_batches(tmp_path) == list(range(config.batches))
    assert verify(tmp_path) == []
    assert records_hash(tmp_path) == expected


def test_more_batches_extend_the_zoo(make_config, tmp_path):
    run(make_config(batches=5, runtime={"workers": 0}), tmp_path)  # last task is (4,) alone
    summary, _ = run(make_config(batches=6, runtime={"workers": 0}), tmp_path)
    assert summary.batches == 1
    assert listed_batches(tmp_path) == list(range(6))
    assert verify(tmp_path) == []


def test_another_zoos_folder_is_refused_untouched(make_config, tmp_path):
    run(make_config(runtime={"workers": 0}), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ZooMismatchError):
        run(make_config(seed=4, runtime={"workers": 0}), tmp_path)
    assert snapshot(tmp_path) == before


def test_a_folder_being_written_is_refused(make_config, tmp_path):
    config = make_config(batches=2, runtime={"workers": 0})
    run(config, tmp_path)
    with open(tmp_path / LOCK_FILE, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # another driver
        with pytest.raises(ZooBusyError):
            run(config.model_copy(update={"batches": 4}), tmp_path)
    assert listed_batches(tmp_path) == [0, 1]


def test_the_lock_is_taken_before_anything_is_written_on_a_file_never_replaced(make_config, tmp_path, monkeypatch):
    """A lock on zoo.json was taken after zoo.json was written, and an atomic rewrite (rename) would
    have swapped the locked inode: two first starts could both hold "the" lock."""
    import zoo.factory.manifest as manifest_module

    out = tmp_path / "zoo"
    held_while_writing = []
    write = manifest_module._write_zoo_info

    def write_zoo_info(store, info):
        with open(out / LOCK_FILE, "rb") as other:  # a second driver's try
            try:
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                held_while_writing.append(False)
            except BlockingIOError:
                held_while_writing.append(True)
        write(store, info)

    monkeypatch.setattr(manifest_module, "_write_zoo_info", write_zoo_info)
    config = make_config(batches=2, runtime={"workers": 0})
    run(config, out)
    inode = (out / LOCK_FILE).stat().st_ino
    run(config.model_copy(update={"batches": 4}), out)
    assert held_while_writing == [True]
    assert (out / LOCK_FILE).stat().st_ino == inode and (out / LOCK_FILE).stat().st_size == 0


def test_a_kill_while_zoo_json_is_first_written_leaves_nothing_that_blocks_a_rerun(zoo_yaml, tmp_path):
    """The driver is SIGKILLed at the rename that puts zoo.json in place: its temporary file and the
    lock file are left, which a rerun used to refuse as "not empty and not a zoo folder"."""
    import signal
    import subprocess
    import sys

    config_path = zoo_yaml("kill.yaml", batches=2)
    out = tmp_path / "zoo"
    killer = (
        "import os, signal, sys\n"
        "import zoo.atomic\n"
        "replace = os.replace\n"
        "def dying(src, dst):\n"
        "    if str(dst).endswith('zoo.json'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    replace(src, dst)\n"
        "zoo.atomic.os.replace = dying\n"
        "from zoo.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["generate", "--config", str(config_path), "--out", str(out), "--workers", "0"]
    killed = subprocess.run([sys.executable, "-c", killer, *args], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "zoo.json").exists() and any(p.name.startswith(".zoo.json.") for p in out.iterdir())
    summary, _ = run(load_config(config_path), out, workers=0)
    assert summary.batches == 2 and verify(out) == []
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


def test_in_process_tasks_use_the_configured_torch_threads(make_config, tmp_path, monkeypatch):
    seen = []
    produce = runner.produce_shard

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return produce(*args, **kwargs)

    monkeypatch.setattr(runner, "produce_shard", spy)
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    run(make_config(batches=4), tmp_path, workers=0, torch_threads=want)
    assert seen == [want, want]
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- lost workers (Ray)


def crashing_worker(marks: Path, crashes: int) -> type:
    """A BatchWorker whose process dies on the task holding batch 0, ``crashes`` times in all."""

    class CrashingWorker(BatchWorker):
        def run(self, batch_ids):
            if 0 in batch_ids and len(list(marks.glob("crash-*"))) < crashes:
                (marks / f"crash-{len(list(marks.glob('crash-*')))}").touch()
                os._exit(1)
            return BatchWorker.run(self, batch_ids)

    return CrashingWorker


def test_task_of_a_lost_worker_is_requeued(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BatchWorker", crashing_worker(tmp_path, crashes=1))
    summary, _ = run(runs[0]["config"], tmp_path / "out", workers=2, max_restarts=1)
    assert summary.retries >= 1
    assert listed_batches(tmp_path / "out") == list(range(6))
    assert records_hash(tmp_path / "out") == records_hash(runs[0]["out"])


def test_a_worker_dead_for_good_is_replaced(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BatchWorker", crashing_worker(tmp_path, crashes=1))
    summary, text = run(runs[0]["config"], tmp_path / "out", workers=1, max_restarts=0)
    assert "worker replaced" in text
    assert records_hash(tmp_path / "out") == records_hash(runs[0]["out"])


def test_a_task_that_keeps_killing_workers_fails_the_run(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BatchWorker", crashing_worker(tmp_path, crashes=100))
    with pytest.raises(TaskFailedError, match="batches 0-1"):
        run(runs[0]["config"], tmp_path / "out", workers=1, max_restarts=0)
    assert len(list(tmp_path.glob("crash-*"))) >= runner.TASK_ATTEMPTS  # queued tasks may crash a worker too
    assert 0 not in listed_batches(tmp_path / "out")
