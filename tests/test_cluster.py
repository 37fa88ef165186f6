"""Real Ray clusters, no mocks: `ray start --head` + `ray job submit`, Prometheus metrics, and failures.

- A head started with `ray start --head --block` on loopback ports in a short temporary
  folder, token authentication on; the tiny zoo submitted with `ray job submit` and
  `cluster/runtime_env.yaml`, checked against its manifest and the node's Prometheus
  endpoint; a duplicate submission refused. The head is stopped at the end by the ids
  of the processes it started (never `ray stop`: that stops every Ray on the machine,
  the session fixture's included).
- An actor's process SIGKILLed mid-run, the driver SIGKILLed mid-run (`--workers 2`),
  a node removed mid-run (`ray.cluster_utils.Cluster`): the zoo completes, every batch
  exactly once, records equal to an undisturbed run.
- Asking for a GPU where there is none fails at once with one line.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import zoo.factory.runner as runner
from zoo.cli import main
from zoo.config import ZooConfig, load_config
from zoo.factory.manifest import MANIFEST_FILE, read_manifest
from zoo.factory.reader import read_records, verify
from zoo.factory.runner import BatchWorker, WorkersUnavailableError, generate
from zoo.factory.schema import content_hash
from zoo.factory.submit import submission_id

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process handling reads /proc"),
]

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
METRIC_LINE = re.compile(r"^(ray_zoo_\w+)\{(.*)\} (\S+)$")

# One batch per task, about 0.25 s each on one idle core: long enough to be caught mid-task.
SLOW_TASKS = {
    "patterns": {"train_size": 2000, "val_size": 100, "benchmark_size": 100},
    "architecture": {"width": {"min": 16, "max": 24}},
    "training": {"epochs": 20, "patience": 50},
    "storage": {"batches_per_shard": 1},
}


# ---------------------------------------------------------------- helpers: processes, ports, folders


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        table[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def descendants(root: int | None, marker: str | None = None) -> set[int]:
    """``root`` (a live child of ours) and every process below it, plus those whose command line holds ``marker``."""
    table = _processes()
    found = {root} if root in table else set()
    if marker:
        found |= {pid for pid, (_, cmdline) in table.items() if marker in cmdline and pid != os.getpid()}
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def terminate(pids: set[int], grace_s: float = 10.0) -> None:
    """SIGTERM these processes (ours), then SIGKILL what is left after ``grace_s``."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_config(make_config, folder: Path, name: str, **overrides) -> Path:
    """The tiny zoo (``tests/conftest.py``) with overrides, as a YAML file."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(make_config(name=name, **overrides).model_dump(mode="json")))
    return path


def listed_batches(out: Path) -> list[int]:
    return sorted(int(b) for entry in read_manifest(out) for b in entry["batches"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Faults:
    """The zoo the failure tests make (10 tasks of one batch), and its records made undisturbed."""

    path: Path
    config: ZooConfig
    folder: Path

    @functools.cached_property
    def undisturbed(self) -> str:
        """Content hash of the records made in-process, without Ray, and without anything killed."""
        runtime = self.config.runtime.model_copy(update={"workers": 0})
        out = self.folder / "undisturbed"
        generate(self.config.model_copy(update={"runtime": runtime}), out, console=Console(file=io.StringIO()))
        return content_hash(read_records(out))


@pytest.fixture(scope="module")
def faults(make_config, tmp_path_factory) -> Faults:
    folder = tmp_path_factory.mktemp("faults")
    path = write_config(make_config, folder, "faults", batches=10, runtime={"workers": 2}, **SLOW_TASKS)
    return Faults(path, load_config(path), folder)


def assert_complete(out: Path, config: ZooConfig) -> None:
    """Every batch listed exactly once, every listed shard intact, no shard outside the manifest."""
    assert listed_batches(out) == list(range(config.batches))
    assert verify(out) == []
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == sorted(
        Path(e["shard"]).name for e in read_manifest(out)
    )


# ---------------------------------------------------------------- a head started with `ray start`


@dataclass
class Head:
    dashboard: str
    metrics: str
    gcs: str
    env: dict
    temp_dir: Path


def _http_status(url: str, token: str | None = None) -> int | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@pytest.fixture(scope="module")
def head():
    """`ray start --head --block` on loopback ports with token auth; stopped by pid afterwards."""
    temp_dir = Path(tempfile.mkdtemp(prefix="zoo-ray-", dir="/tmp"))  # short: Unix socket paths are limited
    gcs, dashboard, metrics, agent_listen, agent_grpc, runtime_env_agent, client, node_manager = free_ports(8)
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,  # this head's own token: ~/.ray/auth_token is neither read nor written
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in jobs
    }
    env.pop("RAY_ADDRESS", None)
    # --temp-dir: sessions, sockets and `ray_current_cluster` stay in this folder, so no
    # `ray.init()` elsewhere on the machine finds this head. Every port is picked here:
    # the defaults (6379, 8265, 52365, 10001, ...) may be taken by another Ray.
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115 (closed below)
    command = [
        RAY, "start", "--head", "--block", "--disable-usage-stats", "--port", str(gcs),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--metrics-export-port", str(metrics),
        "--dashboard-agent-listen-port", str(agent_listen), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env_agent), "--ray-client-server-port", str(client),
        "--node-manager-port", str(node_manager),
        "--num-cpus", "2", "--temp-dir", str(temp_dir),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while _http_status(f"{url}/api/jobs/", token) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the head did not start:\n{(temp_dir / 'head.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield Head(url, f"http://127.0.0.1:{metrics}/metrics", f"127.0.0.1:{gcs}", env, temp_dir)
    finally:
        terminate(descendants(proc.pid, marker=str(temp_dir)), grace_s=3)
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def zoo_metrics(url: str, run_id: str) -> dict[str, float]:
    """The zoo's series of one run on a Prometheus endpoint, summed over drivers (``WorkerId``)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and f'run_id="{run_id}"' in match.group(2):
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
    return values


def job_info(head: Head, job_id: str) -> dict:
    """The job server's record of a job (REST: ``GET /api/jobs/<id>``, with the token)."""
    request = urllib.request.Request(
        f"{head.dashboard}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {head.env['RAY_AUTH_TOKEN']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def job_submit(head: Head, job_id: str, config: Path, out: Path) -> subprocess.CompletedProcess:
    command = [
        RAY, "job", "submit", "--address", head.dashboard, "--submission-id", job_id,
        "--runtime-env", "cluster/runtime_env.yaml",
        "--", "python", "jobs/generate.py", "--config", str(config), "--out", str(out),
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO, env=head.env, capture_output=True, text=True, timeout=300)


def test_head_is_loopback_and_needs_the_token(head):
    assert _http_status(f"{head.dashboard}/api/jobs/") == 401
    assert _http_status(f"{head.dashboard}/api/jobs/", token="0" * 64) in (401, 403)
    assert _http_status(f"{head.dashboard}/api/jobs/", token=head.env["RAY_AUTH_TOKEN"]) == 200


def test_job_submit_makes_the_zoo_and_exports_its_metrics(head, make_config, tmp_path):
    config_path = write_config(make_config, tmp_path, "jobzoo", runtime={"workers": 2})
    config = load_config(config_path)
    out = tmp_path / "out"
    job_id = submission_id(config, out)
    done = job_submit(head, job_id, config_path, out)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]

    assert job_info(head, job_id)["status"] == "SUCCEEDED"
    assert_complete(out, config)
    entries = read_manifest(out)
    assert len([line for line in log.splitlines() if "models/s) ->" in line]) == len(entries)  # a line per task
    assert "models trained" in log  # the summary table

    zoo_id = json.loads((out / "zoo.json").read_text())["zoo_id"]
    kept = sum(e["rows"] for e in entries)
    expected = {
        "ray_zoo_models_trained_total": config.batches * (1 + config.corruption.degraded_per_batch),
        "ray_zoo_pairs_kept_total": kept,
        "ray_zoo_shards_written_total": len(entries),
        "ray_zoo_bytes_written_total": sum(e["bytes"] for e in entries),
    }
    dropped = config.batches * config.corruption.degraded_per_batch - kept
    if dropped:  # a counter never incremented has no series (Counter.inc refuses 0)
        expected["ray_zoo_pairs_dropped_total"] = dropped
    deadline = time.monotonic() + 30  # export is periodic
    while True:
        seen = zoo_metrics(head.metrics, zoo_id)
        if all(seen.get(name) == value for name, value in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {name: seen.get(name) for name in expected} == expected
    assert seen.get("ray_zoo_models_per_second", 0) > 0

    before = snapshot(out)
    again = job_submit(head, job_id, config_path, out)
    assert again.returncode != 0
    assert "already exists" in again.stdout + again.stderr
    assert snapshot(out) == before
    assert job_info(head, job_id)["status"] == "SUCCEEDED"  # the first job's record, untouched


def test_local_sh_refuses_a_duplicate_before_uploading_and_lists_jobs_as_a_table(head, make_config, tmp_path):
    """``ray job submit`` refuses a known submission id only after uploading the working directory;
    ``cluster/local.sh submit`` asks first. ``status`` prints one row per job. The Ray CLI needs
    ``RAY_AUTH_MODE=token`` against a head with token authentication, as the guide's commands say."""
    config_path = write_config(make_config, tmp_path, "dupzoo", batches=2, runtime={"workers": 0})
    out = tmp_path / "out"
    env = {**head.env, "DASHBOARD_PORT": head.dashboard.rsplit(":", 1)[1], "GCS_PORT": head.gcs.rsplit(":", 1)[1]}

    def local_sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "cluster/local.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    first = local_sh("submit", str(config_path), str(out))
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    job_id = submission_id(load_config(config_path), out)
    again = local_sh("submit", str(config_path), str(out))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].endswith(f"ray job delete --address {head.dashboard} {job_id}")
    assert "was submitted already (SUCCEEDED); nothing uploaded" in again.stderr
    assert "Uploading" not in again.stdout + again.stderr
    status = local_sh("status")
    assert status.returncode == 0 and "jobs on" in status.stdout
    row = next((line for line in status.stdout.splitlines() if job_id[:12] in line), "")
    assert "SUCCEEDED" in row and "Job(" not in status.stdout and "JobDetails" not in status.stdout
    without_mode = {key: value for key, value in head.env.items() if key != "RAY_AUTH_MODE"}
    listed = subprocess.run([RAY, "job", "list", "--address", head.dashboard], env=without_mode, capture_output=True, text=True, timeout=120)
    assert listed.returncode != 0  # hence `export RAY_AUTH_MODE=token` in the guide


# ---------------------------------------------------------------- an actor's process killed mid-run


def announcing_worker(marks: Path) -> type:
    """A BatchWorker that leaves ``run-<pid>-<first batch>`` in ``marks`` while it runs a task."""

    class AnnouncingWorker(BatchWorker):
        def run(self, batch_ids):
            mark = marks / f"run-{os.getpid()}-{batch_ids[0]}"
            mark.touch()
            try:
                return BatchWorker.run(self, batch_ids)
            finally:
                mark.unlink(missing_ok=True)

    return AnnouncingWorker


def kill_a_running_actor(marks: Path, out: Path, killed: list, stop: threading.Event) -> None:
    """Once a shard is listed, SIGKILL the process of an actor that is running an unlisted task."""
    manifest = out / MANIFEST_FILE
    while not stop.is_set():
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= 1:
            listed = set(listed_batches(out))
            for mark in marks.glob("run-*"):
                _, pid, batch = mark.name.split("-")
                if int(batch) not in listed and _alive(int(pid)):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append((int(pid), int(batch)))
                    return
        time.sleep(0.01)


def test_an_actor_killed_mid_run_costs_nothing(ray_session, faults, tmp_path, monkeypatch):
    config = faults.config
    marks, out = tmp_path / "marks", tmp_path / "out"
    marks.mkdir()
    monkeypatch.setattr(runner, "BatchWorker", announcing_worker(marks))
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_a_running_actor, args=(marks, out, killed, stop), daemon=True)
    killer.start()
    try:
        text = io.StringIO()
        summary = generate(config, out, console=Console(file=text, width=200))
    finally:
        stop.set()
        killer.join(10)
    assert killed, "no actor was caught running a task"
    assert summary.retries >= 1, text.getvalue()
    assert "lost" in text.getvalue()
    assert summary.batches == config.batches
    assert_complete(out, config)
    assert content_hash(read_records(out)) == faults.undisturbed


# ---------------------------------------------------------------- the driver killed mid-run (Ray workers)


def test_a_driver_killed_mid_run_with_ray_workers_loses_nothing(head, ray_session, faults, tmp_path):
    config_path, config = faults.path, faults.config
    out = tmp_path / "out"
    # A driver on the `ray start` head (its actors die with it: they are owned by the driver).
    command = [sys.executable, "-m", "zoo.cli", "generate", "--config", str(config_path), "--out", str(out),
               "--workers", "2", "--address", head.gcs]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=head.env, start_new_session=True
    )
    manifest = out / MANIFEST_FILE
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while not (manifest.is_file() and manifest.read_bytes().count(b"\n") >= 2):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard listed in time"
            time.sleep(0.01)
        family = descendants(proc.pid) - {proc.pid}  # children it may have started (none expected)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        terminate(family, grace_s=5)
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= len(read_manifest(out)) < config.batches

    # The rerun: on the session's Ray (a new driver, new actors), resuming from the manifest.
    assert main(["generate", "--config", str(config_path), "--out", str(out), "--workers", "2"]) == 0
    assert_complete(out, config)
    assert content_hash(read_records(out)) == faults.undisturbed


# ---------------------------------------------------------------- a node removed mid-run


NODE_LOSS_SCRIPT = r"""
import json, os, signal, sys, threading, time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

import zoo.factory.runner as runner
from zoo.config import load_config
from zoo.factory.manifest import read_manifest

config_path, out, marks = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
marks.mkdir(parents=True, exist_ok=True)


class AnnouncingWorker(runner.BatchWorker):
    def run(self, batch_ids):
        mark = marks / f"run-{ray.get_runtime_context().get_node_id()}-{os.getpid()}-{batch_ids[0]}"
        mark.touch()
        try:
            return runner.BatchWorker.run(self, batch_ids)
        finally:
            mark.unlink(missing_ok=True)


runner.BatchWorker = AnnouncingWorker
fast_health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": fast_health})
doomed = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
removed = []


def remove_when_busy():
    while True:
        listed = {b for e in read_manifest(out) for b in e["batches"]} if (out / "manifest.jsonl").is_file() else set()
        busy = [m for m in marks.glob(f"run-{doomed.node_id}-*") if int(m.name.rsplit("-", 1)[1]) not in listed]
        if listed and busy:
            # A machine lost: its Ray processes, and its worker processes (children of the raylet,
            # which `remove_node` leaves to exit on their own, finishing the task at hand first).
            cluster.remove_node(doomed, allow_graceful=False)
            for pid in {int(m.name.split("-")[2]) for m in marks.glob(f"run-{doomed.node_id}-*")} | {int(busy[0].name.split("-")[2])}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            removed.append(busy[0].name)
            return
        time.sleep(0.01)


threading.Thread(target=remove_when_busy, daemon=True).start()
summary = runner.generate(load_config(config_path), out)
deadline = time.monotonic() + 30  # the run may end before the GCS declares the node dead
while sum(n["Alive"] for n in ray.nodes()) > 1 and time.monotonic() < deadline:
    time.sleep(0.2)
print("SUMMARY " + json.dumps({**summary.to_dict(), "removed": removed, "nodes_alive": sum(n["Alive"] for n in ray.nodes())}))
ray.shutdown()
cluster.shutdown()
"""


def test_a_node_removed_mid_run_costs_only_its_tasks(faults, tmp_path):
    config_path, config = faults.path, faults.config
    out, marks = tmp_path / "out", tmp_path / "marks"
    script = tmp_path / "node_loss.py"
    script.write_text(NODE_LOSS_SCRIPT)
    # Its own temporary root: `Cluster` writes `<tmp>/ray/ray_current_cluster`, which every
    # `ray.init()` without an address on this machine would otherwise join (and it deletes the
    # file at the end, whoever wrote it).
    ray_tmp = Path(tempfile.mkdtemp(prefix="zoo-nl-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(config_path), str(out), str(marks)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        terminate(descendants(proc.pid, marker=str(ray_tmp)), grace_s=5)
        stdout, _ = proc.communicate()
        pytest.fail(f"the run did not finish after its node was removed:\n{stdout[-4000:]}")
    finally:
        terminate(descendants(None, marker=str(ray_tmp)), grace_s=5)  # anything of that cluster left
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, stdout[-4000:]
    summary = json.loads(next(line for line in stdout.splitlines() if line.startswith("SUMMARY "))[8:])
    assert summary["removed"], "the node was never removed"
    assert summary["retries"] >= 1, stdout[-4000:]
    assert summary["batches"] == config.batches
    assert summary["nodes_alive"] == 1
    assert_complete(out, config)
    assert content_hash(read_records(out)) == faults.undisturbed


# ---------------------------------------------------------------- devices


def test_a_gpu_asked_for_where_there_is_none_fails_at_once(ray_session, make_config, tmp_path):
    if ray_session.cluster_resources().get("GPU", 0):
        pytest.skip("this machine has a GPU")
    config = make_config(runtime={"workers": 1, "num_gpus_per_worker": 0.25})
    text = io.StringIO()
    with pytest.raises(WorkersUnavailableError, match="num_gpus_per_worker is 0.25 but the Ray cluster has no GPU"):
        generate(config, tmp_path / "out", console=Console(file=text))
    assert "waiting up to" not in text.getvalue()  # a cluster started here has no nodes still to come
    assert read_manifest(tmp_path / "out") == []


def test_more_workers_than_the_cluster_holds_still_finish(ray_session, make_config, tmp_path):
    """Actors that cannot be placed get no work; the others finish the run (no hang)."""
    cpus = int(ray_session.cluster_resources().get("CPU", 0))
    config = make_config(runtime={"workers": cpus + 1, "num_cpus_per_worker": 1})
    text = io.StringIO()
    summary = generate(config, tmp_path / "out", console=Console(file=text, width=200))
    assert summary.batches == config.batches, text.getvalue()
    assert_complete(tmp_path / "out", config)


def test_the_cli_says_so_in_one_line(ray_session, zoo_yaml, tmp_path, capsys):
    if ray_session.cluster_resources().get("GPU", 0):
        pytest.skip("this machine has a GPU")
    config = zoo_yaml(runtime={"workers": 1, "num_gpus_per_worker": 1})
    assert main(["generate", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no GPU" in err[0]


def test_submission_id_names_zoo_batches_and_output(make_config):
    config = make_config()
    assert submission_id(config, "/data/zoo") == submission_id(config, "/data/./zoo/")
    assert submission_id(config, "/data/zoo") != submission_id(config, "/data/other")
    assert submission_id(config, "/data/zoo") != submission_id(make_config(batches=12), "/data/zoo")
    assert submission_id(config, "/data/zoo") == submission_id(make_config(runtime={"workers": 7}), "/data/zoo")
    assert re.fullmatch(r"zoo-tiny-[0-9a-f]{8}-b6-[0-9a-f]{8}", submission_id(config, "/data/zoo"))


def test_job_id_command_prints_the_id(zoo_yaml, make_config, capsys):
    assert main(["job-id", "--config", str(zoo_yaml()), "--out", "/data/zoo"]) == 0
    assert capsys.readouterr().out.strip() == submission_id(make_config(), "/data/zoo")


def test_a_job_refuses_a_relative_out(tmp_path):
    """In a Ray job the entrypoint runs in a temporary copy of the working_dir: a relative --out would vanish."""
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}  # what the job supervisor sets
    done = subprocess.run(
        [sys.executable, "jobs/generate.py", "--config", "configs/zoo/quickstart.yaml", "--out", "zoo-out/x"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith("zoo: error: --out zoo-out/x: give an absolute path")
    assert not (REPO / "zoo-out" / "x").exists()


def test_the_job_upload_leaves_out_what_the_docs_commands_write(tmp_path):
    """A submission once uploaded 47 MB of zoo outputs, tune results and exports. Ray's own matcher
    (gitwildmatch, as for ``working_dir``) on the paths the README's and guides' commands write."""
    import yaml
    from ray._private.runtime_env.packaging import _get_excludes

    excludes = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())["excludes"]
    excluded = _get_excludes(tmp_path, excludes)
    outputs = [
        "zoo-quickstart/data/shard-000000-000003-4a2272340f01.parquet", "zoo-quickstart/zoo.json",
        "zoo-out/quickstart/manifest.jsonl", "zoo-mixed/probe.parquet", "zoo-default/splits/train/train-00000.parquet",
        "runs/interp/checkpoint-last.safetensors", "runs/tune/sweep/trial_0/result.json", "probes-zoo/summary.json",
        "probes-row0/report.md", "classify.jsonl", "repair.jsonl", "out/x/zoo.json", "model.pt",
        ".zoo.json.123-abcd.tmp",
    ]  # fmt: skip
    sources = ["zoo/cli.py", "jobs/generate.py", "configs/zoo/quickstart.yaml", "cluster/runtime_env.yaml", "pyproject.toml"]
    assert [p for p in outputs if not excluded(tmp_path / p)] == []
    assert [p for p in sources if excluded(tmp_path / p)] == []
