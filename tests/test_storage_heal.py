"""Nothing lost, nothing poisoned: a manifest that does not match the files never deletes an
intact shard, no path from a manifest leaves the zoo, and a rerun (or `zoo verify --repair`)
heals a listed shard that is missing, truncated, corrupt or listed twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

import zoo
from zoo.cli import main
from zoo.factory.manifest import MANIFEST_FILE, read_manifest
from zoo.factory.reader import read_records, verify
from zoo.factory.runner import generate
from zoo.factory.schema import content_hash


def run(config, out):
    return generate(config, out, console=Console(quiet=True))


@pytest.fixture(scope="module")
def pristine(make_config, tmp_path_factory):
    """A finished tiny zoo (6 batches, 3 shards), generated once, and the hash of its records."""
    config = make_config(runtime={"workers": 0})
    out = tmp_path_factory.mktemp("pristine") / "zoo"
    run(config, out)
    assert verify(out) == []
    return config, out, content_hash(read_records(out))


@pytest.fixture
def copy(pristine, tmp_path):
    """A fresh copy of the pristine zoo at ``tmp_path/a/zoo`` (so ``../../x`` is ``tmp_path/x``)."""
    config, out, expected = pristine
    target = tmp_path / "a" / "zoo"
    shutil.copytree(out, target)
    return config, target, expected


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_FILE).read_text().splitlines()]


def write_lines(out: Path, entries: list[dict]) -> None:
    (out / MANIFEST_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))}


def assert_healed(out: Path, config, expected: str) -> None:
    assert verify(out) == []
    assert sorted(int(b) for e in read_manifest(out) for b in e["batches"]) == list(range(config.batches))
    assert content_hash(read_records(out)) == expected
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == sorted(Path(e["shard"]).name for e in read_manifest(out))


# ---------------------------------------------------------------- a manifest that lies never deletes a shard


def test_changed_character_in_a_shard_name_deletes_nothing_and_the_rerun_heals(copy):
    config, out, expected = copy
    before = shard_bytes(out)
    entries = lines(out)
    name = entries[1]["shard"]
    entries[1]["shard"] = name[:-9] + ("0" if name[-9] != "0" else "1") + name[-8:]  # one hex digit of the hash
    write_lines(out, entries)
    assert verify(out)  # the damage is seen
    summary = run(config, out)
    assert summary.batches == len(entries[1]["batches"])  # its batches ran again, nothing else did
    assert shard_bytes(out) == before  # the intact shard was kept (and re-listed), not deleted
    assert_healed(out, config, expected)
    assert "set_aside" in (out / "manifest-rejected.jsonl").read_text()  # the bad line is kept for inspection


@pytest.mark.parametrize("kind", ["climbing", "absolute"])
def test_a_path_outside_the_zoo_is_never_opened_nor_deleted(copy, tmp_path, kind):
    config, out, expected = copy
    outside = tmp_path / "x"
    shutil.copy(out / lines(out)[0]["shard"], outside)  # a readable shard outside the zoo: poison if read
    entries = lines(out)
    entries[0]["shard"] = "../../x" if kind == "climbing" else str(outside)
    write_lines(out, entries)
    with pytest.raises(zoo.ZooError, match="not a shard name inside data/") as error:
        zoo.open(out)
    assert "\n" not in str(error.value)
    assert any("not a shard name" in problem for problem in verify(out))
    run(config, out)
    assert outside.is_file()
    assert_healed(out, config, expected)


def test_a_line_for_a_missing_shard_with_a_real_ones_batches_loses_nothing(copy):
    config, out, expected = copy
    before = shard_bytes(out)
    entries = lines(out)
    ghost = dict(entries[2], shard="data/shard-000004-000005-0123456789ab.parquet", content="0123456789ab" + "0" * 52)
    write_lines(out, [*entries[:2], ghost, entries[2]])  # the ghost claims batches 4-5 first
    run(config, out)
    assert shard_bytes(out) == before
    assert_healed(out, config, expected)


# ---------------------------------------------------------------- a rerun heals damaged shards


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt", "duplicated"])
def test_a_rerun_heals_a_damaged_listed_shard(copy, damage):
    config, out, expected = copy
    entries = lines(out)
    path = out / entries[1]["shard"]
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "corrupt":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        write_lines(out, [*entries, entries[1]])
    assert verify(out)
    summary = run(config, out)
    assert summary.batches == (0 if damage == "duplicated" else len(entries[1]["batches"]))
    assert_healed(out, config, expected)
    if damage != "duplicated":
        assert len(lines(out)) == len(entries)


def test_zoo_verify_repair_heals_and_exits_0(copy, capsys):
    config, out, expected = copy
    entries = lines(out)
    (out / entries[0]["shard"]).unlink()
    data = bytearray((out / entries[2]["shard"]).read_bytes())
    data[len(data) // 3] ^= 0x01
    (out / entries[2]["shard"]).write_bytes(bytes(data))
    assert main(["verify", str(out)]) == 1
    capsys.readouterr()
    assert main(["verify", "--repair", str(out)]) == 0
    assert "every shard matches" in capsys.readouterr().out
    assert_healed(out, config, expected)


def test_readers_report_a_damaged_row_count_in_one_line(copy):
    _, out, _ = copy
    entries = lines(out)
    entries[0]["rows"] += 1
    write_lines(out, entries)
    with pytest.raises(zoo.ZooError) as error:
        zoo.open(out).table()
    assert "rows" in str(error.value) and "\n" not in str(error.value)


def test_an_intact_rerun_writes_nothing(copy):
    config, out, _ = copy
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert run(config, out).batches == 0
    assert {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_an_edited_checksum_is_re_described_from_the_intact_shard(copy):
    config, out, expected = copy
    before = shard_bytes(out)
    entries = lines(out)
    entries[0]["sha256"] = "f" * 64
    write_lines(out, entries)
    assert verify(out)
    assert run(config, out).batches == 0  # the shard holds the entry's records: nothing to recompute
    assert shard_bytes(out) == before
    assert_healed(out, config, expected)


def test_the_object_layout_heals_on_a_local_folder_too(make_config, pristine, tmp_path, monkeypatch):
    """The object-storage protocol (one manifest/<shard>.json per shard) run on a local folder."""
    from zoo.factory.manifest import Manifest

    config = make_config(runtime={"workers": 0})
    out = tmp_path / "zoo"
    opened = Manifest.open
    monkeypatch.setattr(Manifest, "open", classmethod(lambda cls, *a, **k: opened(*a, **{**k, "layout": "objects"})))
    run(config, out)
    assert not (out / MANIFEST_FILE).exists() and len(list((out / "manifest").glob("*.json"))) == 3
    expected = content_hash(read_records(out))
    assert expected == pristine[2]  # the same records as the line-per-shard layout
    entry = sorted((out / "manifest").glob("*.json"))[1]
    (out / json.loads(entry.read_text())["shard"]).unlink()
    (out / "manifest" / "shard-000000-000001-000000000000.json").write_text(
        json.dumps({**json.loads(entry.read_text()), "shard": "../../x"})
    )
    assert len(verify(out)) == 2
    run(config, out)
    assert_healed(out, config, expected)
    assert not (out / "manifest" / "shard-000000-000001-000000000000.json").exists()
