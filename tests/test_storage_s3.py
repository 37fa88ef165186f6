"""Zoos on object storage, against a real S3-compatible server on loopback (moto's, started here).

The tiny zoo is generated to ``s3://`` in-process and on Ray workers, read back by pyarrow,
pandas, Ray Data and ``datasets`` with the manifest's row count, and its records equal a
local run's; the commit protocol (immutable shard and entry objects) heals there as on disk.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import pytest

# Before any Ray starts in this session (collection runs first): Ray workers inherit these from the
# raylet, and the AWS SDK's standard chain then finds them. moto accepts any credentials.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
    os.environ.setdefault(_key, _value)

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

import pyarrow.parquet as pq  # noqa: E402
from rich.console import Console  # noqa: E402

import zoo  # noqa: E402
from zoo.cli import main  # noqa: E402
from zoo.factory.manifest import read_manifest  # noqa: E402
from zoo.factory.reader import read_records, verify  # noqa: E402
from zoo.factory.runner import generate  # noqa: E402
from zoo.factory.schema import content_hash  # noqa: E402
from zoo.storage import StorageError, check_relative, resolve  # noqa: E402

BUCKET = "zoo-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, ``AWS_ENDPOINT_URL`` pointing at it, one bucket; a boto3 client."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved
        server.stop()


def keys(client, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
    return sorted(item["Key"][len(prefix) + 1 :] for item in listing.get("Contents", []))


def run(config, out):
    return generate(config, out, console=Console(quiet=True))


@pytest.fixture(scope="module")
def local(make_config, tmp_path_factory):
    """The tiny zoo generated to a local folder, in-process: ``(config, folder, content hash)``, the reference.

    (How long S3 takes against this is a benchmark, ``python -m zoo.bench_storage``, not a test.)"""
    config = make_config(runtime={"workers": 0})
    out = tmp_path_factory.mktemp("local") / "zoo"
    run(config, out)
    return config, out, content_hash(read_records(out))


@pytest.fixture(scope="module")
def s3_zoo(s3, local):
    """The same zoo generated in-process straight to ``s3://``: its URI."""
    config = local[0]
    uri = f"s3://{BUCKET}/tiny-in-process"
    run(config, uri)
    return uri


# ---------------------------------------------------------------- storage


def test_paths_that_leave_the_root_are_refused():
    for bad in ("../x", "data/../../x", "/etc/passwd", "", "a//b", "s3://other/x", "C:/x", "a\\b", "./x"):
        with pytest.raises(StorageError):
            check_relative(bad)
    check_relative("data/shard-000000-000001-0123456789ab.parquet")


def test_uris_resolve_to_a_filesystem_and_a_root(tmp_path, s3):
    assert resolve(tmp_path).local and resolve(f"file://{tmp_path}").root == str(tmp_path)
    store = resolve(f"s3://{BUCKET}/a/b/?region=us-east-1&endpoint_override={os.environ['AWS_ENDPOINT_URL']}")
    assert (store.root, store.name) == (f"{BUCKET}/a/b", f"s3://{BUCKET}/a/b")  # no query in messages
    store = resolve(f"s3://{BUCKET}/x")
    store.write_bytes("y/z.txt", b"hello")
    assert store.read_bytes("y/z.txt") == b"hello" and store.list("y") == {"z.txt": 5}
    with pytest.raises(StorageError, match="not a path inside"):
        store.read_bytes("../escape")
    with pytest.raises(StorageError, match="give a bucket"):
        resolve("s3://")


# ---------------------------------------------------------------- generate to s3, read back everywhere


def test_the_tiny_zoo_on_s3_reads_back_everywhere_equal_to_a_local_run(s3, local, s3_zoo, ray_session):
    _, _, expected = local
    uri = s3_zoo
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    stored = keys(s3, prefix)
    assert "manifest.jsonl" not in stored  # the object layout: no appends on S3
    assert [k for k in stored if k.startswith("manifest/")] == [f"manifest/{k[5:-8]}.json" for k in stored if k.startswith("data/")]
    assert {"zoo.json", "config.yaml", "probe.parquet"} <= set(stored)
    assert verify(uri) == []
    rows = sum(entry["rows"] for entry in read_manifest(uri))
    opened = zoo.open(uri)
    assert len(opened) == rows > 0
    assert pq.read_table(opened.shard_keys, filesystem=opened.filesystem).num_rows == rows
    assert len(opened.to_pandas(columns=["example_id"])) == rows
    assert opened.to_hf_dataset(columns=["example_id", "batch_id"]).num_rows == rows
    assert opened.to_ray_dataset(columns=["example_id"]).count() == rows
    assert content_hash(read_records(uri)) == content_hash(opened.table()) == expected
    assert opened.probe_set.hash and opened.signature_stats


def test_ray_workers_write_shards_straight_to_s3(s3, local, ray_session):
    config, _, expected = local
    uri = f"s3://{BUCKET}/tiny-ray"
    summary = run(config.model_copy(update={"runtime": config.runtime.model_copy(update={"workers": 2})}), uri)
    assert summary.batches == config.batches and summary.workers == 2
    assert verify(uri) == []
    assert content_hash(read_records(uri)) == expected


def test_the_cli_generates_verifies_and_inspects_on_s3(s3, zoo_yaml, capsys):
    config_path = zoo_yaml("cli.yaml")
    uri = f"s3://{BUCKET}/tiny-cli"
    assert main(["generate", "--config", str(config_path), "--out", uri, "--workers", "0"]) == 0
    assert main(["verify", uri]) == 0
    capsys.readouterr()
    assert main(["inspect", uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == sum(e["rows"] for e in read_manifest(uri))
    assert main(["inspect", f"s3://{BUCKET}/nothing-here"]) == 2
    assert "not a zoo folder" in capsys.readouterr().err


# ---------------------------------------------------------------- the commit protocol on s3


def test_a_rerun_on_s3_writes_nothing(s3, local, s3_zoo):
    config = local[0]
    uri = s3_zoo
    prefix = uri.removeprefix(f"s3://{BUCKET}/")

    def etags():
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")["Contents"]
        return {item["Key"]: (item["ETag"], item["LastModified"]) for item in listing}

    before = etags()
    assert run(config, uri).batches == 0
    assert etags() == before


def test_damage_on_s3_is_healed_by_a_rerun_and_never_deletes_a_shard(s3, local):
    config, _, expected = local
    uri = f"s3://{BUCKET}/tiny-damaged"
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    run(config, uri)
    shards = [k for k in keys(s3, prefix) if k.startswith("data/")]
    s3.delete_object(Bucket=BUCKET, Key=f"{prefix}/{shards[0]}")  # a missing shard
    body = bytearray(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{shards[1]}")["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{shards[1]}", Body=bytes(body))  # a corrupt one
    entry = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest/{shards[2][5:-8]}.json")["Body"].read())
    poison = f"{prefix}/manifest/shard-000004-000005-{'0' * 12}.json"
    s3.put_object(Bucket=BUCKET, Key=poison, Body=json.dumps({**entry, "shard": "../../elsewhere"}).encode())
    with pytest.raises(zoo.ZooError, match="not a shard name"):
        zoo.open(uri)
    assert len(verify(uri)) >= 3
    summary = run(config, uri)
    assert summary.batches == 4  # the two damaged shards' batches, nothing else
    assert verify(uri) == []
    assert content_hash(read_records(uri)) == expected
    assert all(k in keys(s3, prefix) for k in shards)
    assert f"manifest/shard-000004-000005-{'0' * 12}.json" not in keys(s3, prefix)
    assert "manifest-rejected.jsonl" in keys(s3, prefix)


def test_a_zoo_of_the_line_layout_copied_to_s3_reads_and_resumes(s3, local):
    """Zoos written by the current layout (``manifest.jsonl``) keep reading, on S3 too."""
    config, out, expected = local
    uri = f"s3://{BUCKET}/tiny-copied"
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        body = "".join(lines[:2]).encode() if path.name == "manifest.jsonl" else path.read_bytes()
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(out)}", Body=body)
    assert len(zoo.open(uri)) == sum(json.loads(line)["rows"] for line in lines[:2])
    assert run(config, uri).batches == config.batches - sum(len(json.loads(line)["batches"]) for line in lines[:2])
    assert verify(uri) == []
    assert content_hash(read_records(uri)) == expected


def test_two_racing_drivers_on_s3_lose_duplicate_and_half_list_nothing(s3, local):
    """No lock on object storage: two drivers of one zoo at once write the same shard and entry objects."""
    import threading

    config, _, expected = local
    uri = f"s3://{BUCKET}/tiny-race"
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    errors = []

    def drive():
        try:
            run(config, uri)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=drive) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    stored = keys(s3, prefix)
    entries = read_manifest(uri)
    assert len(entries) == len({e["shard"] for e in entries}) == len([k for k in stored if k.startswith("data/")])
    assert sorted(b for e in entries for b in e["batches"]) == list(range(config.batches))
    assert content_hash(read_records(uri)) == expected
    # Racing writers may store one shard's records twice with different timings; the next run
    # re-describes such an entry from its intact shard instead of computing anything again.
    assert run(config, uri).batches == 0
    assert verify(uri) == []


KILL_ZOO = {
    "name": "killme",
    "batches": 12,
    "patterns": {"train_size": 300, "val_size": 60},
    "architecture": {"width": {"min": 16, "max": 24}},
    "training": {"epochs": 8},
    "corruption": {"degraded_per_batch": 3},
    "storage": {"batches_per_shard": 1},
}


@pytest.mark.slow
def test_a_driver_killed_mid_run_on_s3_loses_nothing_and_the_rerun_completes(s3, zoo_yaml, tmp_path):
    import signal
    import subprocess
    import sys

    from zoo.config import load_config

    config_path = zoo_yaml("kill.yaml", **KILL_ZOO)
    uri = f"s3://{BUCKET}/killed"
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "generate", "--config", str(config_path), "--out", uri, "--workers", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not any(k.startswith("manifest/") for k in keys(s3, prefix)):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= len(read_manifest(uri)) < KILL_ZOO["batches"]

    config = load_config(config_path, overrides={"runtime": {"workers": 0}})
    summary = run(config, uri)
    assert summary.batches_skipped + summary.batches == KILL_ZOO["batches"]
    assert sorted(b for e in read_manifest(uri) for b in e["batches"]) == list(range(KILL_ZOO["batches"]))
    assert verify(uri) == []
    undisturbed = tmp_path / "undisturbed"
    run(config, undisturbed)
    assert content_hash(read_records(uri)) == content_hash(read_records(undisturbed))


def test_an_actor_killed_mid_run_on_s3_then_a_rerun_lists_every_batch_once_equal_to_a_local_run(
    s3, local, ray_session, tmp_path, monkeypatch
):
    """The actor is SIGKILLed after its shard is stored but before the driver hears of it (an
    unlisted object on S3): the task is requeued, the new actor finds the intact shard and lists it;
    a rerun then writes nothing."""
    import signal

    import zoo.factory.runner as runner

    config, _, expected = local
    marks = tmp_path

    class DyingWorker(runner.BatchWorker):
        def run(self, batch_ids):
            result = runner.BatchWorker.run(self, batch_ids)
            if 2 in batch_ids and not any(marks.glob("killed-*")):
                (marks / f"killed-{os.getpid()}").touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return result

    monkeypatch.setattr(runner, "BatchWorker", DyingWorker)
    uri = f"s3://{BUCKET}/actor-killed"
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    ray_config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"workers": 2, "max_restarts": 1})})
    summary = run(ray_config, uri)
    assert list(marks.glob("killed-*")) and summary.retries >= 1
    assert run(ray_config, uri).batches == 0  # the rerun
    entries = read_manifest(uri)
    assert sorted(b for e in entries for b in e["batches"]) == list(range(config.batches))
    assert sorted(e["shard"] for e in entries) == [k for k in keys(s3, prefix) if k.startswith("data/")]
    assert verify(uri) == []
    assert content_hash(read_records(uri)) == expected
