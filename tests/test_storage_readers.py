"""Every command that reads a zoo takes an ``s3://`` URI as it takes a folder (moto's S3 server on loopback).

``split`` and ``card`` write into the zoo there (split files, ``splits.json``, ``README.md``);
``publish --dry-run``, ``export``, ``probe``, ``interpret train/eval`` and ``tune interpreter``
read it; what they make equals what they make from a local folder holding the same zoo.
"""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from test_publish import token  # noqa: F401 (a well-formed HF_TOKEN)
from test_storage_s3 import BUCKET, keys, s3  # noqa: F401 (the loopback S3 server fixture)
from zoo.export.card import CARD_FILE, card_data_files
from zoo.export.publish import local_files
from zoo.export.splits import check_split_files, load_splits
from zoo.factory.runner import generate
from zoo.factory.schema import content_hash
from zoo.storage import resolve
from interpreter_fixture import TINY_INTERPRETER, interp_zoo  # noqa: F401
from zoo_fixture import TINY, run_cli, tiny_zoo, zoo_copy  # noqa: F401

SPLIT = ("--validation", "0.25", "--test", "0.25", "--rows-per-file", "3")


@pytest.fixture(scope="module")
def s3_tiny(s3):  # noqa: F811
    """The shared tiny zoo's config generated in-process straight to ``s3://``: its URI."""
    uri = f"s3://{BUCKET}/readers-tiny"
    in_process = TINY.model_copy(update={"runtime": TINY.runtime.model_copy(update={"workers": 0})})
    generate(in_process, uri, console=Console(quiet=True))
    return uri


def split_records(location) -> dict[str, str]:
    """Per split, the content hash of its split files' records, read through the store."""
    store = resolve(location)
    splits = load_splits(store)
    return {
        name: content_hash(pq.read_table([store.key(f["path"]) for f in files], filesystem=store.fs))
        for name, files in splits.files.items()
        if files
    }


def test_split_card_publish_and_export_on_s3_equal_a_folders(capsys, s3, s3_tiny, zoo_copy, tmp_path):  # noqa: F811
    for location in (s3_tiny, zoo_copy):
        assert run_cli(capsys, "split", location, *SPLIT)[0] == 0
        assert run_cli(capsys, "card", location)[0] == 0
    prefix = s3_tiny.removeprefix(f"s3://{BUCKET}/")
    stored = keys(s3, prefix)
    assert {"splits.json", CARD_FILE} <= set(stored) and any(k.startswith("splits/train/") for k in stored)
    remote, local = load_splits(s3_tiny), load_splits(zoo_copy)
    assert (remote.assignment, remote.rows) == (local.assignment, local.rows)
    check_split_files(s3_tiny, remote, hashes=True)
    assert split_records(s3_tiny) == split_records(zoo_copy)
    card = resolve(s3_tiny).read_bytes(CARD_FILE).decode()
    assert card_data_files(card) == card_data_files((zoo_copy / CARD_FILE).read_text())

    code, out, err = run_cli(capsys, "publish", s3_tiny, "--repo-id", "someone/tiny", "--dry-run")
    assert code == 0, err
    assert "nothing was uploaded" in out
    planned = {f.path_in_repo: f for f in local_files(s3_tiny)}
    assert set(planned) == {f.path_in_repo for f in local_files(zoo_copy)}
    train = load_splits(s3_tiny).files["train"][0]  # hashed where it lies, as splits.json has it
    assert (planned[train["path"]].size, planned[train["path"]].sha256) == (train["bytes"], train["sha256"])

    outputs = []
    for location, name in ((s3_tiny, "remote.jsonl"), (zoo_copy, "local.jsonl")):
        args = ("export", location, "--task", "classification", "--split", "train", "--out", tmp_path / name)
        assert run_cli(capsys, *args)[0] == 0
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1] and outputs[0]


def test_a_new_split_on_s3_replaces_the_files_of_the_old_one(capsys, s3, s3_tiny):  # noqa: F811
    """No rename on object storage: each split file is one PUT, and files the new splits.json does
    not list are deleted after it."""
    prefix = s3_tiny.removeprefix(f"s3://{BUCKET}/")
    assert run_cli(capsys, "split", s3_tiny, "--rows-per-file", "1", "--overwrite")[0] == 0
    many = [k for k in keys(s3, prefix) if k.startswith("splits/") and k.endswith(".parquet")]
    assert run_cli(capsys, "split", s3_tiny, "--rows-per-file", "1000", "--overwrite")[0] == 0
    few = [k for k in keys(s3, prefix) if k.startswith("splits/") and k.endswith(".parquet")]  # not pyarrow's folder markers
    splits = load_splits(s3_tiny)
    assert sorted(few) == sorted(f["path"] for files in splits.files.values() for f in files) and len(few) < len(many)
    check_split_files(s3_tiny, splits, hashes=True)


def test_probes_read_a_zoo_on_s3(capsys, s3_tiny, tmp_path):
    code, _, err = run_cli(capsys, "probe", "zoo", "--data", s3_tiny, "--out", tmp_path / "zoo", "--batches", "1",
                           "--epochs", "2", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "zoo" / "summary.json").read_text())["data"] == s3_tiny
    code, _, err = run_cli(capsys, "probe", "activations", "--data", s3_tiny, "--row", "0", "--out", tmp_path / "a.parquet")
    assert code == 0, err


def test_an_export_to_a_uri_is_refused_in_one_line(capsys, s3_tiny, tmp_path):
    code, _, err = run_cli(capsys, "export", s3_tiny, "--task", "classification", "--out", f"s3://{BUCKET}/x.jsonl")
    assert code == 2 and err.count("\n") == 1 and "--out" in err


def test_a_zoo_on_s3_publishes_from_the_store(capsys, s3, s3_tiny, token):  # noqa: F811
    """Files are read from the bucket; the object layout's manifest goes up as one manifest.jsonl."""
    from test_publish import FakeHub
    from zoo.export.publish import publish

    assert run_cli(capsys, "card", s3_tiny)[0] == 0  # current for the zoo's current splits
    hub = FakeHub()
    publish(s3_tiny, "someone/tiny", files_per_commit=3, with_shards=True, api=hub, log=lambda _: None)
    store = resolve(s3_tiny)
    shards = [name for name in hub.files if name.startswith("data/")]
    assert shards and all(hub.files[name] == store.read_bytes(name) for name in shards)
    lines = [json.loads(line) for line in hub.files["manifest.jsonl"].decode().splitlines()]
    assert sorted(e["shard"] for e in lines) == sorted(shards)
    assert hub.files["README.md"] == store.read_bytes("README.md")


# ---------------------------------------------------------------- the interpreter and its sweep


@pytest.fixture(scope="module")
def s3_interp(s3, interp_zoo):  # noqa: F811
    """The interpreter tests' zoo (shards, manifest.jsonl, splits.json) copied as it is to ``s3://``: its URI."""
    uri = f"s3://{BUCKET}/readers-interp"
    store = resolve(uri)
    pafs.copy_files(str(interp_zoo), store.root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs)
    return uri


def _interpreter_yaml(tmp_path, **overrides) -> str:
    path = tmp_path / "interpreter.yaml"
    path.write_text(yaml.safe_dump({**TINY_INTERPRETER, "epochs": 2, **overrides}))
    return str(path)


def test_an_interpreter_trained_and_evaluated_on_s3_equals_one_trained_on_the_folder(
    capsys, s3_interp, interp_zoo, tmp_path  # noqa: F811
):
    from safetensors.numpy import load_file

    config = _interpreter_yaml(tmp_path, baselines={"hidden": 8, "epochs": 2}, refine={"epochs": 0})
    runs = {}
    for name, location in (("remote", s3_interp), ("local", interp_zoo)):
        run = tmp_path / name
        code, _, err = run_cli(capsys, "interpret", "train", "--data", location, "--config", config, "--out", run, "--no-progress")
        assert code == 0, err
        code, _, err = run_cli(capsys, "interpret", "eval", "--run", run, "--data", location, "--split", "test")
        assert code == 0, err
        runs[name] = run
    remote, local = (load_file(str(runs[n] / "best.safetensors")) for n in ("remote", "local"))
    assert remote.keys() == local.keys() and all((remote[k] == local[k]).all() for k in local)
    described = json.loads((runs["remote"] / "config.json").read_text())["data"]
    assert described["zoo_dir"] == s3_interp  # the URI, for `zoo interpret edit` without --data
    reports = [json.loads((runs[n] / "report.json").read_text()) for n in ("remote", "local")]
    assert reports[0] == reports[1] and reports[0]["test"]


def test_an_interpreter_sweep_reads_a_zoo_on_s3(capsys, ray_session, s3_interp, tmp_path):
    """Trials run in Ray workers: they get the zoo's store (URI and endpoint), credentials from their environment."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    settings = {
        "base": _interpreter_yaml(tmp_path),
        "overrides": {"epochs": 1},
        "space": {"optimizer.lr": {"choice": [0.003]}},
        "num_samples": 1,
        "grace_period": 1,
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(settings))
    code, out, err = run_cli(capsys, "tune", "interpreter", "--data", s3_interp, "--config", tmp_path / "tune.yaml",
                             "--out", tmp_path / "sweep")  # fmt: skip
    assert code == 0, err
    rows = (tmp_path / "sweep" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial,best_val_objective,epochs_run") and len(rows) == 2
    assert f"on {s3_interp} " in (tmp_path / "sweep" / "best_config.yaml").read_text().splitlines()[0]
    assert "testing" not in out + err  # the fixture's credentials are never printed


def test_probe_and_sae_sweeps_read_a_zoo_on_s3(ray_session, s3_tiny, tmp_path, monkeypatch):
    """Their drivers read the zoo (``prepare``) and hand trials the models: the sweeps start and report."""
    from zoo.readers.probes.config import ProbeTuneConfig
    from zoo.readers.probes.tune import tune_probes
    from zoo.readers.sae.config import SAETuneConfig
    from zoo.readers.sae.tune import tune_sae

    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    probes = ProbeTuneConfig(overrides={"epochs": 1}, space={"lr": {"choice": [0.01]}}, models=1, num_samples=1, grace_period=1)
    outcome = tune_probes(s3_tiny, probes, out=tmp_path / "probes", verbose=0)
    assert len(outcome.rows) == 1 and outcome.rows[0]["epochs_run"] == 1
    sae = SAETuneConfig(overrides={"epochs": 1, "eval_every": 10, "patience": None}, space={"lr": {"choice": [1e-3]}},
                        models=1, num_samples=1, grace_period=1)  # fmt: skip
    outcome = tune_sae(s3_tiny, sae, out=tmp_path / "sae", verbose=0)
    assert len(outcome.rows) == 1 and outcome.rows[0]["epochs_run"] == 1
    assert f"on {s3_tiny} " in outcome.best_config_path.read_text().splitlines()[0]
