"""Reading a zoo back (pyarrow, pandas, Ray Data), verifying it, summarizing it."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from zoo.config import PatternSpace, StorageConfig
from zoo.factory.manifest import MANIFEST_FILE, Manifest
from zoo.factory.reader import iter_batches, read_records, shard_paths, verify
from zoo.factory.schema import example_record, record_schema, records_to_table
from zoo.factory.shards import ShardInfo, file_sha256, write_shard
from zoo.factory.summary import render_summary, summarize
from zoo.patterns.sampler import sampler_for

PAIRS = 3
PROBE = sampler_for(PatternSpace()).probe_set(0)


def rows_of(batch: int, pairs: int = PAIRS) -> list[dict]:
    patterns = ("palindrome", "sorted_ascending") if batch % 2 else ("palindrome", "contains_trigram", "alternating")
    widths = (32, 32) if batch % 2 else (27,)
    rows = [
        example_record(batch_id=batch, pair_index=p, zoo_id="z", patterns=patterns, widths=widths) for p in range(pairs)
    ]
    return [{**row, "probe_hash": PROBE.hash} for row in rows]


@pytest.fixture
def zoo_dir(tmp_path):
    """A finished zoo: batches 0..5 in four shards written out of order; batch 4 kept no pair."""
    manifest = Manifest.open(tmp_path, zoo_id="z-hhhh", config_hash="h" * 16)
    (tmp_path / "config.yaml").write_text("name: z\n")
    pq.write_table(PROBE.to_arrow(), tmp_path / "probe.parquet")
    for batches in ([5, 3], [0], [2, 1], [4]):
        rows = [row for b in batches for row in (rows_of(b, pairs=0 if b == 4 else PAIRS))]
        manifest.add(write_shard(tmp_path, records_to_table(rows, record_schema(6)), batches, StorageConfig()))
    return tmp_path


def add_entry(out_dir, info: ShardInfo) -> None:
    with open(out_dir / MANIFEST_FILE, "a") as handle:
        handle.write(json.dumps(info.to_entry()) + "\n")


def test_read_records_sorted_and_complete(zoo_dir):
    table = read_records(zoo_dir)
    keys = list(zip(table.column("batch_id").to_pylist(), table.column("pair_index").to_pylist()))
    assert keys == [(b, p) for b in (0, 1, 2, 3, 5) for p in range(PAIRS)]


def test_read_records_selects_columns(zoo_dir):
    table = read_records(zoo_dir, columns=["example_id"])
    assert table.column_names == ["example_id"]
    assert table.column("example_id")[0].as_py() == "z/000000/0"


def test_unlisted_shard_is_never_read(zoo_dir):
    write_shard(zoo_dir, records_to_table(rows_of(9), record_schema(6)), [9], StorageConfig())
    assert 9 not in read_records(zoo_dir, columns=["batch_id"]).column("batch_id").to_pylist()


def test_shard_paths_in_batch_order(zoo_dir):
    assert [p.name[6:12] for p in shard_paths(zoo_dir)] == ["000000", "000001", "000003", "000004"]


def test_iter_batches_streams_every_row(zoo_dir):
    batches = list(iter_batches(zoo_dir, batch_size=2, columns=["batch_id"]))
    assert max(b.num_rows for b in batches) == 2
    assert sum(b.num_rows for b in batches) == 5 * PAIRS


def test_pandas_reads_shards(zoo_dir):
    pd = pytest.importorskip("pandas")
    frame = pd.concat([pd.read_parquet(path) for path in shard_paths(zoo_dir)])
    assert len(frame) == 5 * PAIRS
    assert len(frame.iloc[0]["clean_signature"][0]) == 6


def test_ray_data_reads_shards(zoo_dir, ray_session):
    dataset = ray_session.data.read_parquet([str(p) for p in shard_paths(zoo_dir)])
    rows = dataset.select_columns(["example_id", "clean_signature"]).take_all()
    assert len(rows[0]["clean_signature"][0]) == 6
    assert sorted(row["example_id"] for row in rows) == sorted(read_records(zoo_dir).column("example_id").to_pylist())


def test_verify_accepts_intact_zoo(zoo_dir):
    assert verify(zoo_dir) == []


def test_verify_catches_flipped_byte(zoo_dir):
    path = shard_paths(zoo_dir)[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = verify(zoo_dir)
    assert any("sha256" in p and path.name in p for p in problems)


def test_verify_catches_missing_shard(zoo_dir):
    path = shard_paths(zoo_dir)[1]
    path.unlink()
    assert verify(zoo_dir) == [f"{path}: missing (listed in {MANIFEST_FILE})"]


def test_verify_catches_stray_shard(zoo_dir):
    stray = write_shard(zoo_dir, records_to_table(rows_of(9), record_schema(6)), [9], StorageConfig())
    assert verify(zoo_dir) == [f"{zoo_dir / stray.name}: shard on disk but not in {MANIFEST_FILE}"]


def test_verify_catches_edited_row_count(zoo_dir):
    path = zoo_dir / MANIFEST_FILE
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries[0]["rows"] += 1
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    problems = verify(zoo_dir)
    assert problems == [f"{zoo_dir / entries[0]['shard']}: {PAIRS * 2} rows, {PAIRS * 2 + 1} in {MANIFEST_FILE}"]


def test_verify_catches_batch_listed_twice(zoo_dir):
    first = json.loads((zoo_dir / MANIFEST_FILE).read_text().splitlines()[1])
    other = write_shard(zoo_dir, records_to_table(rows_of(0, pairs=1), record_schema(6)), [0], StorageConfig())
    add_entry(zoo_dir, other)
    assert [p for p in verify(zoo_dir) if "batch 0 listed 2 times" in p and first["shard"] in p]


def test_verify_catches_schema_mismatch(zoo_dir):
    path = zoo_dir / "shard-000007-000007-000000000000.parquet"
    table = records_to_table(rows_of(7), record_schema(6))
    pq.write_table(table.set_column(4, "batch_id", table.column("batch_id").cast(pa.int32())), path)
    add_entry(zoo_dir, ShardInfo(path.name, (7,), PAIRS, file_sha256(path), path.stat().st_size, "0" * 64))
    assert verify(zoo_dir) == [f"{path}: schema mismatch: column batch_id has type int32, expected int64"]


def test_verify_catches_unreadable_shard(zoo_dir):
    path = zoo_dir / "shard-000008-000008-000000000000.parquet"
    path.write_bytes(b"not parquet at all")
    add_entry(zoo_dir, ShardInfo(path.name, (8,), PAIRS, file_sha256(path), path.stat().st_size, "0" * 64))
    problems = verify(zoo_dir)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: unreadable")


def test_summary_counts(zoo_dir):
    summary = summarize(zoo_dir)
    assert (summary["rows"], summary["batches"], summary["batches_with_rows"], summary["shards"]) == (15, 6, 5, 4)
    assert summary["patterns"] == {"palindrome": 15, "sorted_ascending": 9, "alternating": 6, "contains_trigram": 6}
    assert sum(summary["corrupted"].values()) == 15
    assert summary["architectures"]["n_layers"] == {"2": 9, "1": 6}
    assert summary["architectures"]["width"] == {"25-32": 9 * 2 + 6}
    assert summary["bytes_per_model"] == pytest.approx(summary["bytes"] / (15 + 5))
    assert summary["degradation"]["min"] <= summary["degradation"]["p50"] <= summary["degradation"]["max"]
    json.dumps(summary)


def test_render_summary_prints_tables(zoo_dir):
    console = Console(record=True, width=100)
    render_summary(summarize(zoo_dir), console)
    text = console.export_text()
    assert "contains_trigram" in text and "degradation" in text and "bytes per model" in text
