"""Shard writing: atomic, deterministic names, idempotent, readable encodings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zoo.config import StorageConfig
from zoo.factory.schema import (
    COLUMN_DOCS,
    TIMINGS_TYPE,
    content_hash,
    example_record,
    record_schema,
    records_to_table,
    signature_stats_of,
    with_zoo_metadata,
)
from zoo.factory.shards import ShardInfo, encoding_options, file_sha256, write_shard

STATS = ["mean", "std", "min", "max", "frac_active", "pattern_mean"]
SCHEMA = with_zoo_metadata(
    record_schema(6), signature_stats=STATS, zoo_id="t", config_hash="c" * 16, probe_hash="p" * 16
)


def make_table(batches=(0, 1), pairs: int = 3, **kwargs) -> pa.Table:
    rows = [example_record(batch_id=b, pair_index=p, zoo_id="t", **kwargs) for b in batches for p in range(pairs)]
    return records_to_table(rows, SCHEMA)


def with_timings(table: pa.Table, seconds: float) -> pa.Table:
    row = {"train_s": seconds, "signature_s": seconds, "total_s": seconds}
    timings = pa.array([row] * table.num_rows, TIMINGS_TYPE)
    return table.set_column(table.schema.get_field_index("timings"), table.schema.field("timings"), timings)


def test_schema_documents_every_column_in_field_metadata():
    schema = record_schema(6)
    assert set(schema.names) == set(COLUMN_DOCS)
    assert all(schema.field(name).metadata[b"description"] == COLUMN_DOCS[name].encode() for name in schema.names)


def test_signature_stats_travel_in_schema_metadata():
    assert signature_stats_of(SCHEMA) == STATS


def test_records_to_table_rejects_missing_column():
    row = example_record()
    del row["metrics"]
    with pytest.raises(ValueError, match="metrics"):
        records_to_table([row], SCHEMA)


def test_records_round_trip_through_pylist():
    table = make_table()
    assert records_to_table(table.to_pylist(), SCHEMA).equals(table)


def test_content_hash_ignores_chunking_and_parquet_round_trip(tmp_path):
    table = make_table(batches=range(4))
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=5))
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=3)
    assert content_hash(chunked) == content_hash(table)
    assert content_hash(pq.read_table(tmp_path / "x.parquet")) == content_hash(table)


def test_content_hash_sees_one_changed_weight():
    table = make_table()
    rows = table.to_pylist()
    rows[2]["degraded_weights"][7] += 1e-3
    assert content_hash(records_to_table(rows, SCHEMA)) != content_hash(table)


def test_content_hash_is_stable_across_processes():
    code = (
        "from zoo.factory.schema import *\n"
        "rows = [example_record(batch_id=b, pair_index=p) for b in range(2) for p in range(3)]\n"
        "print(content_hash(records_to_table(rows, record_schema(6))))"
    )
    rows = [example_record(batch_id=b, pair_index=p) for b in range(2) for p in range(3)]
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == content_hash(records_to_table(rows, record_schema(6)))


def test_write_is_atomic_and_describes_the_file(tmp_path):
    info = write_shard(tmp_path, make_table(), [0, 1], StorageConfig())
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()] == [info.name]
    assert info.name == f"data/shard-000000-000001-{info.content[:12]}.parquet"
    assert info == ShardInfo(
        info.name, (0, 1), 6, file_sha256(tmp_path / info.name), (tmp_path / info.name).stat().st_size, info.content
    )


def test_same_content_twice_gives_one_file(tmp_path):
    first = write_shard(tmp_path, make_table(), [0, 1], StorageConfig())
    second = write_shard(tmp_path, make_table(), [1, 0], StorageConfig())
    assert second == first
    assert len(list((tmp_path / "data").iterdir())) == 1


def test_row_order_does_not_change_the_shard(tmp_path):
    table = make_table()
    first = write_shard(tmp_path / "a", table, [0, 1], StorageConfig())
    second = write_shard(tmp_path / "b", table.take(list(reversed(range(table.num_rows)))), [0, 1], StorageConfig())
    assert (first.name, first.sha256) == (second.name, second.sha256)


def test_different_timings_keep_name_and_existing_file(tmp_path):
    first = write_shard(tmp_path, with_timings(make_table(), 1.0), [0, 1], StorageConfig())
    second = write_shard(tmp_path, with_timings(make_table(), 9.0), [0, 1], StorageConfig())
    assert second.name == first.name
    assert second.sha256 == first.sha256 == file_sha256(tmp_path / first.name)
    assert pq.read_table(tmp_path / first.name).column("timings")[0]["train_s"].as_py() == 1.0


def test_damaged_file_under_the_same_name_is_replaced(tmp_path):
    info = write_shard(tmp_path, make_table(), [0, 1], StorageConfig())
    (tmp_path / info.name).write_bytes(b"garbage")
    again = write_shard(tmp_path, make_table(), [0, 1], StorageConfig())
    assert again == info
    assert pq.read_table(tmp_path / info.name).num_rows == 6


def test_rows_of_unlisted_batch_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[1\]"):
        write_shard(tmp_path, make_table(), [0], StorageConfig())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_wrong_schema_is_refused(tmp_path):
    with pytest.raises(ValueError, match="schema"):
        write_shard(tmp_path, make_table().drop(["metrics"]), [0, 1], StorageConfig())


def test_batch_without_rows_still_gets_a_shard(tmp_path):
    info = write_shard(tmp_path, make_table(batches=()), [5], StorageConfig())
    assert (info.name.startswith("data/shard-000005-000005-"), info.rows) == (True, 0)
    assert pq.read_table(tmp_path / info.name).num_rows == 0


def test_row_groups_follow_storage_config(tmp_path):
    info = write_shard(tmp_path, make_table(batches=range(4)), range(4), StorageConfig(row_group_rows=5))
    assert pq.ParquetFile(tmp_path / info.name).metadata.num_row_groups == 3


def test_float_columns_use_byte_stream_split_and_round_trip(tmp_path):
    table = make_table()
    info = write_shard(tmp_path, table, [0, 1], StorageConfig())
    metadata = pq.ParquetFile(tmp_path / info.name).metadata.row_group(0)
    encodings = {metadata.column(i).path_in_schema: metadata.column(i).encodings for i in range(metadata.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["clean_weights.list.element"]
    assert "BYTE_STREAM_SPLIT" in encodings["clean_signature.list.element.list.element"]
    back = pq.read_table(tmp_path / info.name)
    assert np.array_equal(
        back.column("clean_weights").combine_chunks().flatten().to_numpy(),
        table.column("clean_weights").combine_chunks().flatten().to_numpy(),
    )
    assert back.equals(table)


def test_int8_weights_are_dictionary_encoded():
    options = encoding_options(make_table(quantization="int8"))
    assert "clean_weights.list.element" in options["use_dictionary"]
    assert "clean_weights.list.element" not in options["use_byte_stream_split"]


def test_compression_follows_storage_config(tmp_path):
    info = write_shard(tmp_path, make_table(), [0, 1], StorageConfig(compression="snappy"))
    assert pq.ParquetFile(tmp_path / info.name).metadata.row_group(0).column(0).compression == "SNAPPY"
