"""The public API: `zoo.open` and its readers, `zoo.generate`, `zoo.verify`, `zoo.load_config`."""

from __future__ import annotations

import pydoc
import shutil

import pyarrow.parquet as pq
import pytest
import torch

import zoo
from zoo.factory.manifest import PROBE_FILE
from zoo_fixture import TINY, tiny_zoo, zoo_copy  # noqa: F401


def test_len_counts_the_manifest_rows(tiny_zoo):
    z = zoo.open(tiny_zoo)
    assert len(z) == z.table().num_rows == sum(e["rows"] for e in z.manifest) > 0
    assert z.config == TINY.model_copy(update={"runtime": z.config.runtime})


def test_records_stream_the_table_in_order(tiny_zoo):
    z = zoo.open(tiny_zoo)
    streamed = list(z.records(columns=["example_id", "batch_id"]))
    assert streamed == z.table(columns=["example_id", "batch_id"]).to_pylist()
    assert list(streamed[0]) == ["example_id", "batch_id"]


def test_a_split_holds_only_its_batches(zoo_copy, capsys):
    from zoo.export.splits import SplitOptions, load_splits, write_splits

    write_splits(zoo_copy, SplitOptions(validation=0.25, test=0.25))
    z = zoo.open(zoo_copy)
    assignment = load_splits(zoo_copy).assignment
    for split in ("train", "validation", "test"):
        batches = set(z.table(columns=["batch_id"], split=split).column("batch_id").to_pylist())
        assert batches and all(assignment[b] == split for b in batches)
        assert [r["batch_id"] for r in z.records(columns=["batch_id"], split=split)] == z.table(
            columns=["batch_id"], split=split
        ).column("batch_id").to_pylist()


def test_a_split_without_splits_json_is_one_line(tiny_zoo):
    with pytest.raises(zoo.ZooError, match="run `zoo split"):
        zoo.open(tiny_zoo).table(split="test")


def test_pandas_ray_and_datasets_see_every_record(tiny_zoo, ray_session):
    z = zoo.open(tiny_zoo)
    assert z.to_pandas().shape[0] == len(z)
    assert z.to_ray_dataset().count() == len(z)
    assert z.to_hf_dataset(columns=["example_id"])["example_id"] == z.table().column("example_id").to_pylist()


def test_a_row_by_index_is_that_record_of_the_stream(tiny_zoo):
    z = zoo.open(tiny_zoo)
    streamed = list(z.records(columns=["example_id"]))
    assert [z.row(i, columns=["example_id"]) for i in range(len(z))] == streamed


def test_load_model_by_index_equals_load_model_of_the_record(tiny_zoo):
    z = zoo.open(tiny_zoo)
    row = list(z.records())[2]
    tokens = torch.randint(0, 7, (9, 7))
    with torch.no_grad():
        torch.testing.assert_close(z.load_model(2, "degraded")(tokens), zoo.load_model(row, "degraded")(tokens))


def test_a_row_out_of_range_is_one_line(tiny_zoo):
    with pytest.raises(zoo.ZooError, match="does not exist"):
        zoo.open(tiny_zoo).load_model(10_000)


def test_the_probe_set_is_the_one_the_records_name(tiny_zoo):
    z = zoo.open(tiny_zoo)
    assert z.probe_set.hash == z.table(columns=["probe_hash"]).column("probe_hash")[0].as_py()
    assert z.probe_set.tokens.shape[1] == TINY.patterns.seq_len


def test_a_foreign_probe_set_is_refused(zoo_copy):
    from zoo.patterns.sampler import sampler_for

    other = sampler_for(TINY.patterns).probe_set(TINY.seed + 1)
    pq.write_table(other.to_arrow(), zoo_copy / PROBE_FILE)
    with pytest.raises(zoo.ZooError, match="not the one the records were fingerprinted on"):
        zoo.open(zoo_copy).probe_set


def test_a_zoo_with_no_shards_yet_reads_as_empty(zoo_copy, ray_session):
    (zoo_copy / "manifest.jsonl").unlink()
    shutil.rmtree(zoo_copy / "data")
    z = zoo.open(zoo_copy)
    assert len(z) == z.table().num_rows == z.to_ray_dataset(columns=["example_id"]).count() == 0
    assert list(z.records()) == [] and z.to_pandas().shape[0] == 0


def test_a_folder_that_is_no_zoo_is_one_line(tmp_path):
    with pytest.raises(zoo.ZooError, match="not a zoo folder"):
        zoo.open(tmp_path)


def test_verify_finds_a_damaged_shard(zoo_copy):
    assert zoo.verify(zoo_copy) == []
    shard = zoo.open(zoo_copy).shards[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any("sha256" in p for p in zoo.verify(zoo_copy))


def test_generate_makes_and_opens_a_zoo(tmp_path):
    z = zoo.generate(TINY.model_copy(update={"batches": 2}), tmp_path / "z", workers=0, quiet=True)
    assert isinstance(z, zoo.Zoo) and z.batches == (0, 1)
    again = zoo.generate(TINY.model_copy(update={"batches": 2}), tmp_path / "z", workers=0, quiet=True)
    assert again.manifest == z.manifest


def test_generate_refuses_a_bad_override_in_one_line(tmp_path):
    with pytest.raises(zoo.ConfigError, match="runtime.workers"):
        zoo.generate(TINY, tmp_path / "z", workers=-1)
    assert not (tmp_path / "z").exists()


def test_load_config_reads_a_shipped_recipe():
    config = zoo.load_config("configs/zoo/quickstart.yaml")
    assert config.name == "quickstart"


def test_pydoc_reads_as_a_usage_page():
    page = pydoc.render_doc(zoo, renderer=pydoc.plaintext)
    for verb in ("zoo.open(", "generate(", "verify(", "load_config(", "load_model("):
        assert verb in page
    assert all(hasattr(zoo, name) for name in zoo.__all__)


def test_copying_a_zoo_keeps_it_readable(tiny_zoo, tmp_path):
    copy = shutil.copytree(tiny_zoo, tmp_path / "elsewhere")
    assert len(zoo.open(copy)) == len(zoo.open(tiny_zoo))


def test_verify_checks_the_probe_set_against_the_records(zoo_copy):
    from zoo.patterns.sampler import sampler_for

    pq.write_table(sampler_for(TINY.patterns).probe_set(TINY.seed + 1).to_arrow(), zoo_copy / PROBE_FILE)
    assert any("not the probe set the records were fingerprinted on" in p for p in zoo.verify(zoo_copy))


def test_verify_checks_config_yaml_against_zoo_json(zoo_copy):
    (zoo_copy / "config.yaml").write_text("name: another\n")
    assert any("names zoo 'another'" in p for p in zoo.verify(zoo_copy))
    (zoo_copy / "config.yaml").unlink()
    (zoo_copy / PROBE_FILE).unlink()
    problems = zoo.verify(zoo_copy)
    assert any("config.yaml: missing" in p for p in problems) and any("probe.parquet: missing" in p for p in problems)
