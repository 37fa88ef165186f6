"""A zoo written before subject families (record schema 1) keeps working with every command.

``tests/data/zoo-schema1`` was made by the code of 3f7c5e2 (the last schema-1 main):
4 batches, 8 records, MLPs of widths 6-8. Every test works on a private copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import zoo
from zoo.factory.schema import SCHEMA_VERSION, record_schema, version_of
from zoo_fixture import run_cli

SCHEMA1 = Path(__file__).parent / "data" / "zoo-schema1"


@pytest.fixture
def old_zoo(tmp_path) -> Path:
    return Path(shutil.copytree(SCHEMA1, tmp_path / "zoo"))


def test_the_fixture_is_a_schema_1_zoo():
    shard = zoo.open(SCHEMA1).shards[0]
    import pyarrow.parquet as pq

    assert version_of(pq.read_schema(shard)) == 1 < SCHEMA_VERSION
    assert json.loads((SCHEMA1 / "zoo.json").read_text())["schema_version"] == 1


def test_records_read_in_the_current_schema(old_zoo):
    table = zoo.open(old_zoo).table()
    assert table.schema.names == record_schema(len(zoo.open(old_zoo).signature_stats)).names
    for row in table.to_pylist():
        arch = json.loads(row["architecture"])
        assert arch["family"] == "mlp"
        assert row["neuron_kind"] == ["hidden"] * sum(arch["widths"]) + ["output"]
        assert len(row["neuron_kind"]) == len(row["neuron_layer"])


@pytest.mark.parametrize("columns", [["neuron_kind"], ["example_id", "neuron_kind", "architecture"], ["architecture"]])
def test_any_columns_read_in_the_current_schema(old_zoo, columns):
    z = zoo.open(old_zoo)
    full = z.table()
    assert z.table(columns=columns).to_pylist() == full.select(columns).to_pylist()
    assert list(z.records(columns=columns)) == full.select(columns).to_pylist()


def test_ray_data_reads_the_current_schema(old_zoo, ray_session):
    z = zoo.open(old_zoo)
    rows = z.to_ray_dataset(columns=["example_id", "neuron_kind"]).take_all()
    assert sorted(rows, key=lambda r: r["example_id"]) == sorted(
        z.table(columns=["example_id", "neuron_kind"]).to_pylist(), key=lambda r: r["example_id"]
    )


def test_streamed_records_equal_the_table(old_zoo):
    z = zoo.open(old_zoo)
    assert [r["example_id"] for r in z.records(columns=["example_id"])] == z.table().column("example_id").to_pylist()


def test_models_load_and_run(old_zoo):
    model = zoo.open(old_zoo).load_model(0, which="degraded")
    assert model(torch.zeros(3, 7, dtype=torch.long)).shape == (3,)


def test_probe_set_is_read_from_the_folder(old_zoo):
    z = zoo.open(old_zoo)
    assert z.probe_set.hash == z.table(columns=["probe_hash"]).column("probe_hash")[0].as_py()


def test_verify_and_inspect(old_zoo, capsys):
    assert zoo.verify(old_zoo) == []
    code, out, _ = run_cli(capsys, "inspect", old_zoo, "--json")
    assert code == 0 and json.loads(out)["rows"] == 8
    assert json.loads(out)["architectures"]["family"] == {"mlp": 8}


def test_split_card_export_and_publish_plan(old_zoo, tmp_path, capsys):
    assert run_cli(capsys, "split", old_zoo, "--validation", "0.25", "--test", "0.25")[0] == 0
    assert run_cli(capsys, "card", old_zoo)[0] == 0
    out = tmp_path / "m.jsonl"
    assert run_cli(capsys, "export", old_zoo, "--task", "modification", "--out", out)[0] == 0
    assert len(out.read_text().splitlines()) == 8
    assert run_cli(capsys, "publish", old_zoo, "--repo-id", "someone/old", "--dry-run")[0] == 0


def test_split_files_are_written_in_the_current_schema(old_zoo, capsys):
    import pyarrow.dataset as ds

    assert run_cli(capsys, "split", old_zoo, "--validation", "0.25", "--test", "0.25")[0] == 0
    table = ds.dataset(old_zoo / "splits", format="parquet").to_table()
    assert version_of(table.schema) == SCHEMA_VERSION and table.num_rows == 8


def test_probe_a_record(old_zoo, tmp_path, capsys):
    code, _, err = run_cli(capsys, "probe", "model", "--data", old_zoo, "--row", 0, "--out", tmp_path / "p", "--epochs", 2)
    assert code == 0, err
    assert (tmp_path / "p" / "metrics.csv").is_file()


def test_interpret_train_and_eval(old_zoo, tmp_path, capsys):
    from interpreter_fixture import TINY_INTERPRETER

    assert run_cli(capsys, "split", old_zoo, "--validation", "0.25", "--test", "0.25")[0] == 0
    config = tmp_path / "interp.yaml"
    config.write_text(yaml.safe_dump({**TINY_INTERPRETER, "epochs": 2}))
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "interpret", "train", "--data", old_zoo, "--config", config, "--out", run, "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(
        capsys, "interpret", "eval", "--run", run, "--data", old_zoo, "--split", "test", "--refine-epochs", 0, "--json"
    )
    assert code == 0, err
    assert np.isfinite(json.loads(out.strip().splitlines()[-1])["test"]["macro_f1"])
