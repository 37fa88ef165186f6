"""`zoo generate` end to end: the CLI, bad input, a killed driver, and reading the zoo back."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

import zoo
from zoo.cli import main
from zoo.config import load_config
from zoo.factory.manifest import MANIFEST_FILE, read_manifest
from zoo.factory.reader import read_records, verify
from zoo.factory.runner import generate
from zoo.factory.schema import content_hash


def listed_batches(out: Path) -> list[int]:
    return sorted(int(b) for entry in read_manifest(out) for b in entry["batches"])

def kill_once_listed(proc: subprocess.Popen, out: Path, lines: int, timeout: float = 180) -> None:
    """SIGKILL the driver ``proc`` as soon as its manifest in ``out`` lists ``lines`` shards."""
    manifest = out / MANIFEST_FILE
    deadline = time.monotonic() + timeout
    try:
        while not (manifest.is_file() and manifest.read_bytes().count(b"\n") >= lines):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard listed in time"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()



def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, make_config):
    """The tiny zoo, made by `zoo generate --workers 0`."""
    folder = tmp_path_factory.mktemp("cli")
    config_path = folder / "zoo.yaml"
    config_path.write_text(yaml.safe_dump(make_config().model_dump(mode="json")))
    out = folder / "out"
    assert main(["generate", "--config", str(config_path), "--out", str(out), "--workers", "0"]) == 0
    return out


def shard_paths(out: Path) -> list[Path]:
    return [out / entry["shard"] for entry in read_manifest(out)]


# ---------------------------------------------------------------- reading the zoo back


def test_pyarrow_reads_every_listed_row(zoo_dir):
    entries = read_manifest(zoo_dir)
    assert sum(e["rows"] for e in entries) > 0
    assert [pq.read_table(zoo_dir / e["shard"]).num_rows for e in entries] == [e["rows"] for e in entries]


def test_pandas_reads_every_listed_row(zoo_dir):
    pd = pytest.importorskip("pandas")
    frames = [pd.read_parquet(path) for path in shard_paths(zoo_dir)]
    assert sum(len(f) for f in frames) == sum(e["rows"] for e in read_manifest(zoo_dir))


def test_ray_data_reads_every_listed_row(zoo_dir, ray_session):
    dataset = ray_session.data.read_parquet([str(p) for p in shard_paths(zoo_dir)])
    assert dataset.count() == sum(e["rows"] for e in read_manifest(zoo_dir))


@pytest.mark.parametrize("which", ["clean", "degraded"])
def test_a_record_loads_as_a_module_mapping_tokens_to_logits(zoo_dir, which):
    row = pq.read_table(shard_paths(zoo_dir)[0]).to_pylist()[0]
    arch = json.loads(row["architecture"])
    model = zoo.load_model(row, which=which)
    tokens = torch.randint(0, arch["vocab_size"], (5, arch["seq_len"]), dtype=torch.long)
    with torch.no_grad():
        logits = model(tokens)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


def test_clean_and_degraded_models_differ(zoo_dir):
    row = pq.read_table(shard_paths(zoo_dir)[0]).to_pylist()[0]
    tokens = torch.randint(0, json.loads(row["architecture"])["vocab_size"], (64, json.loads(row["architecture"])["seq_len"]))
    with torch.no_grad():
        assert not torch.equal(zoo.load_model(row, "clean")(tokens), zoo.load_model(row, "degraded")(tokens))


def test_inspect_json_counts_the_zoo(zoo_dir, capsys):
    assert main(["inspect", str(zoo_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == sum(e["rows"] for e in read_manifest(zoo_dir))
    assert summary["batches"] == 6
    assert sum(summary["corrupted"].values()) == summary["rows"]
    assert set(summary["corrupted"]) <= set(summary["patterns"])


def test_python_dash_m_zoo_is_the_cli(zoo_dir):
    done = subprocess.run([sys.executable, "-m", "zoo", "inspect", str(zoo_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["batches"] == 6


def test_verify_passes_an_intact_zoo(zoo_dir, capsys):
    assert main(["verify", str(zoo_dir)]) == 0
    assert capsys.readouterr().err == ""


def test_verify_names_a_shard_with_a_flipped_byte(zoo_dir, tmp_path, capsys):
    copy = tmp_path / "zoo"
    shutil.copytree(zoo_dir, copy)
    shard = shard_paths(copy)[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert str(shard) in err
    assert all(str(shard) in line for line in err.splitlines())


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


BAD_CONFIGS = {
    "missing file": (None, "config file not found"),
    "invalid yaml": ("patterns: {train_size: [1,\n", "invalid YAML"),
    "invalid value": ({"patterns": {"per_batch": {"min": 5, "max": 2}}}, "patterns.per_batch: min (5) > max (2)"),
    "unknown key": ({"training": {"epoch": 3}}, "training.epoch: unknown key"),
    "another zoo": ({"seed": 4}, "holds zoo"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, zoo_dir, tmp_path, make_config, capsys):
    content, expected = BAD_CONFIGS[case]
    out = tmp_path / "out"
    shutil.copytree(zoo_dir, out)  # an existing zoo: nothing in it may change
    config_path = tmp_path / "bad.yaml"
    if isinstance(content, str):
        config_path.write_text(content)
    elif isinstance(content, dict):
        data = make_config().model_dump(mode="json")
        for key, value in content.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) else value
        config_path.write_text(yaml.safe_dump(data))
    before = snapshot(out)
    code = main(["generate", "--config", str(config_path), "--out", str(out), "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("zoo: error: ")
    assert expected in lines[0]
    assert snapshot(out) == before


def test_bad_config_creates_no_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--config", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2
    assert not out.exists()


# ---------------------------------------------------------------- the process: pipes and SIGKILL


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], **kwargs)


def test_output_in_a_pipe_is_plain_text(zoo_yaml, tmp_path):
    proc = cli(
        "generate", "--config", str(zoo_yaml()), "--out", str(tmp_path / "out"), "--workers", "0",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "\x1b[" not in stdout
    assert [line.split(":")[0].split("] ")[1] for line in stdout.splitlines() if "models/s) ->" in line] == [
        "batches 0-1",
        "batches 2-3",
        "batches 4-5",
    ]
    assert "models trained" in stdout


KILL_ZOO = {
    "name": "killme",
    "batches": 40,
    "patterns": {"train_size": 300, "val_size": 60},
    "architecture": {"width": {"min": 16, "max": 24}},
    "training": {"epochs": 8},
    "corruption": {"degraded_per_batch": 3},
    "storage": {"batches_per_shard": 1},
}


def test_a_killed_driver_loses_nothing_and_the_rerun_completes(zoo_yaml, tmp_path):
    config_path = zoo_yaml("kill.yaml", **KILL_ZOO)
    out = tmp_path / "out"
    proc = cli("generate", "--config", str(config_path), "--out", str(out), "--workers", "0",
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_once_listed(proc, out, 1, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= len(read_manifest(out)) < KILL_ZOO["batches"]

    assert main(["generate", "--config", str(config_path), "--out", str(out), "--workers", "0"]) == 0
    assert listed_batches(out) == list(range(KILL_ZOO["batches"]))
    assert verify(out) == []
    undisturbed = tmp_path / "undisturbed"
    generate(load_config(config_path, overrides={"runtime": {"workers": 0}}), undisturbed)
    assert content_hash(read_records(out)) == content_hash(read_records(undisturbed))
