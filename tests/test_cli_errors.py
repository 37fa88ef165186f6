"""What the machine or the user gets wrong is one line and an exit code, never a traceback.

A flag's bad value is named by the flag; a read-only, full or file ``--out``, and a Ray address
where no cluster answers, exit 2 before anything is written; Ctrl-C during ``generate`` exits
130 saying how to resume, and the rerun does.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.factory.manifest import read_manifest
from zoo.factory.reader import verify
from zoo_fixture import run_cli

SLOW_ZOO = {
    "batches": 12,
    "patterns": {"train_size": 300, "val_size": 60},
    "architecture": {"width": {"min": 16, "max": 24}},
    "training": {"epochs": 8},
    "corruption": {"degraded_per_batch": 3},
    "storage": {"batches_per_shard": 1},
}


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    ("flags", "said"),
    [(["--batches", "-1"], "--batches -1: "), (["--workers", "-1"], "--workers -1: "), (["--batches", "0"], "--batches 0: ")],
)
def test_a_flags_bad_value_is_named_by_the_flag_not_the_yaml_field(capsys, zoo_yaml, tmp_path, flags, said):
    for config in ([], ["--config", str(zoo_yaml())]):
        code, _, err = run_cli(capsys, "generate", *config, "--out", tmp_path / "zoo", *flags)
        assert code == 2 and one_line(err).startswith(f"zoo: error: {said}")
        assert "runtime.workers" not in err and "batches:" not in err
    assert not (tmp_path / "zoo").exists()


def test_a_file_given_as_out_is_refused_untouched(capsys, zoo_yaml, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    code, _, err = run_cli(capsys, "generate", "--config", zoo_yaml(), "--out", target, "--workers", "0")
    assert code == 2 and "is a file, not a folder" in one_line(err)
    assert target.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "zoo.yaml"]


def test_a_read_only_out_is_one_line(capsys, zoo_yaml, tmp_path, monkeypatch):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    if os.access(parent, os.W_OK):  # root writes anywhere: make the folder refuse as a read-only mount does
        mkdir = Path.mkdir

        def refusing(self, *args, **kwargs):
            if parent in self.parents:
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refusing)
    code, _, err = run_cli(capsys, "generate", "--config", zoo_yaml(), "--out", parent / "zoo", "--workers", "0")
    parent.chmod(0o755)
    assert code == 2 and one_line(err) == f"zoo: error: {parent / 'zoo'}: not writable (read-only, or no permission)"
    assert list(parent.iterdir()) == []


def test_a_full_disk_is_one_line_saying_the_rerun_resumes(capsys, zoo_yaml, tmp_path, monkeypatch):
    import zoo.factory.shards as shards

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(shards, "write_bytes_atomic", full)
    code, _, err = run_cli(capsys, "generate", "--config", zoo_yaml(), "--out", tmp_path / "zoo", "--workers", "0")
    assert code == 2 and "no space left on the device" in one_line(err) and "rerun" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_address_is_refused_within_seconds_before_anything_is_written(zoo_yaml, tmp_path):
    """Ray retries such an address for minutes (and zoo.json was written first); a port held by
    something that is not Ray (here a bare TCP listener) is refused too."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        for address in (f"127.0.0.1:{_free_port()}", f"127.0.0.1:{listener.getsockname()[1]}"):
            out = tmp_path / "zoo"
            start = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "zoo.cli", "generate", "--config", str(zoo_yaml()), "--out", str(out),
                 "--workers", "1", "--address", address],
                capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""},
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert one_line(done.stderr).startswith(f"zoo: error: --address {address}: no Ray cluster answers there")
            assert time.monotonic() - start < 60  # imports on a loaded 2-core machine; the check itself is 3 s at most
            assert not out.exists()
    finally:
        listener.close()


def test_ctrl_c_during_generate_exits_130_saying_how_to_resume_and_the_rerun_does(capsys, zoo_yaml, tmp_path):
    config = zoo_yaml("slow.yaml", **SLOW_ZOO)
    out = tmp_path / "zoo"
    args = ["generate", "--config", str(config), "--out", str(out), "--workers", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not (out / "manifest.jsonl").is_file() or not (out / "manifest.jsonl").read_text():
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert one_line(err) == f"zoo: interrupted; finished batches are kept: rerun `zoo {' '.join(args)}` to resume"
    kept = sum(len(e["batches"]) for e in read_manifest(out))
    assert 1 <= kept < SLOW_ZOO["batches"]
    code, out_text, _ = run_cli(capsys, *args)
    assert code == 0 and f"resuming: {kept} of {SLOW_ZOO['batches']} batches already done" in out_text
    assert verify(out) == []
