"""Manifest: resume, idempotence, torn lines, folder identity, stale-file cleanup."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from zoo.config import StorageConfig
from zoo.factory.manifest import (
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    ZooMismatchError,
    clean_stale,
    read_zoo_info,
)
from zoo.factory.reader import verify_shards
from zoo.factory.schema import SCHEMA_VERSION, example_record, record_schema, records_to_table
from zoo.factory.shards import write_shard

HASH = "abcdef0123456789"


def shard(out_dir, batches, pairs: int = 2):
    rows = [example_record(batch_id=b, pair_index=p, zoo_id="z") for b in batches for p in range(pairs)]
    return write_shard(out_dir, records_to_table(rows, record_schema(6)), batches, StorageConfig())


def manifest_lines(out_dir) -> list[str]:
    return (out_dir / MANIFEST_FILE).read_text().splitlines()


def test_open_creates_zoo_json(tmp_path):
    Manifest.open(tmp_path / "new", zoo_id="z", config_hash=HASH)
    info = read_zoo_info(tmp_path / "new")
    assert (info.zoo_id, info.config_hash, info.schema_version) == ("z", HASH, SCHEMA_VERSION)
    assert datetime.fromisoformat(info.created).tzinfo is not None


def test_read_zoo_info_without_zoo_json_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_zoo_info(tmp_path)


def test_reopen_resumes_finished_batches(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    manifest.add(shard(tmp_path, [3]))
    manifest.add(shard(tmp_path, [0, 1]))
    again = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    assert again.done_batches() == {0, 1, 3}
    assert [entry["batches"] for entry in again.entries()] == [[3], [0, 1]]


def test_other_config_hash_is_refused_in_one_line(tmp_path):
    Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    with pytest.raises(ZooMismatchError) as error:
        Manifest.open(tmp_path, zoo_id="z", config_hash="9" * 16)
    message = str(error.value)
    assert "\n" not in message
    assert all(part in message for part in (str(tmp_path), HASH, "9" * 16))


def test_zoo_mismatch_is_a_value_error():
    assert issubclass(ZooMismatchError, ValueError)


def test_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZooMismatchError, match="not a zoo folder"):
        Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    assert not (tmp_path / "zoo.json").exists()


def test_same_shard_twice_is_listed_once(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    info = shard(tmp_path, [0])
    assert manifest.add(info) is True
    assert manifest.add(shard(tmp_path, [0])) is False
    assert len(manifest_lines(tmp_path)) == 1
    assert (tmp_path / info.name).exists()


def test_overlapping_shard_is_skipped_and_its_file_kept_until_redundant(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    manifest.add(shard(tmp_path, [0]))
    overlapping = shard(tmp_path, [0, 1])
    assert manifest.add(overlapping) is False
    assert manifest.done_batches() == {0}
    assert (tmp_path / overlapping.name).exists()  # batch 1 is in no other shard: never deleted
    assert manifest.sweep() == []
    manifest.add(shard(tmp_path, [1]))
    assert manifest.sweep() == [overlapping.name]  # now redundant: moved aside, still not deleted
    assert not (tmp_path / overlapping.name).exists()
    assert (tmp_path / "orphans" / Path(overlapping.name).name).is_file()
    assert verify_shards(tmp_path) == []


def test_torn_last_line_is_dropped_on_open(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    manifest.add(shard(tmp_path, [0]))
    with open(tmp_path / MANIFEST_FILE, "a") as handle:
        handle.write('{"batches": [1], "shard": "shard-0000')
    reopened = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    assert reopened.done_batches() == {0}
    reopened.add(shard(tmp_path, [1]))
    assert [json.loads(line)["batches"] for line in manifest_lines(tmp_path)] == [[0], [1]]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    manifest.add(shard(tmp_path, [0]))
    path = tmp_path / MANIFEST_FILE
    path.write_text(path.read_text().rstrip("\n"))
    reopened = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    reopened.add(shard(tmp_path, [1]))
    assert Manifest.open(tmp_path, zoo_id="z", config_hash=HASH).done_batches() == {0, 1}


def test_damaged_middle_line_is_an_error_naming_the_line(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    manifest.add(shard(tmp_path, [0]))
    manifest.add(shard(tmp_path, [1]))
    path = tmp_path / MANIFEST_FILE
    path.write_text("{broken\n" + path.read_text())
    with pytest.raises(ManifestError, match=f"{MANIFEST_FILE}:1"):
        Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)


def test_killed_run_leftovers_are_cleaned_and_rerun_is_identical(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    manifest.add(shard(tmp_path, [0]))
    killed = shard(tmp_path, [1])
    line = json.dumps(killed.to_entry())
    with open(tmp_path / MANIFEST_FILE, "a") as handle:
        handle.write(line[: len(line) // 2])
    (tmp_path / f"{killed.name}.123-abcd.tmp").write_bytes(b"half a shard")

    reopened = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    removed = clean_stale(tmp_path)
    assert removed == [f"{killed.name}.123-abcd.tmp"]  # temporaries only: the unlisted shard is re-listed below
    assert reopened.done_batches() == {0}
    assert reopened.add(shard(tmp_path, [1])) is True
    assert reopened.entries()[-1] == killed.to_entry()
    assert verify_shards(tmp_path) == []


def test_clean_stale_keeps_listed_shards(tmp_path):
    manifest = Manifest.open(tmp_path, zoo_id="z", config_hash=HASH)
    info = shard(tmp_path, [0])
    manifest.add(info)
    assert clean_stale(tmp_path) == []
    assert (tmp_path / info.name).exists()
