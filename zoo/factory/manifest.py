"""The manifest: which batches are finished, in which shard, with which checksum.

``OUT/zoo.json`` says which zoo a folder holds (written once, atomically);
``OUT/manifest.jsonl`` gets one fsynced line per durable shard. A line is the
only proof that a batch is done: a shard on disk without a line is a leftover of
a killed run and ``clean_stale`` removes it; the rerun recomputes it and, the
batch task being deterministic, writes the same file again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from zoo.atomic import write_json_atomic
from zoo.factory.schema import SCHEMA_VERSION
from zoo.factory.shards import ShardInfo, data_dir, fsync_dir, relative_name, shard_files

ZOO_FILE = "zoo.json"
MANIFEST_FILE = "manifest.jsonl"
CONFIG_FILE = "config.yaml"
"""The resolved config of the latest run, beside the shards."""
PROBE_FILE = "probe.parquet"
"""The zoo's probe set, beside the shards."""
ENTRY_KEYS = ("batches", "shard", "rows", "sha256", "bytes", "content")


class ZooMismatchError(ValueError):
    """The folder holds another zoo (or something that is not a zoo)."""


class ManifestError(ValueError):
    """The manifest is damaged beyond a torn last line."""


@dataclass(frozen=True)
class ZooInfo:
    """What ``zoo.json`` holds: the identity of the zoo in a folder."""

    zoo_id: str
    config_hash: str
    schema_version: int
    created: str


def read_zoo_info(out_dir: str | Path) -> ZooInfo:
    """The folder's zoo identity; a one-line ``FileNotFoundError`` if it has none."""
    path = Path(out_dir) / ZOO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: not a zoo folder (no {ZOO_FILE})")
    try:
        data = json.loads(path.read_text())
        return ZooInfo(str(data["zoo_id"]), str(data["config_hash"]), int(data["schema_version"]), str(data["created"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ZooMismatchError(f"{path}: unreadable ({type(error).__name__}: {error})") from None


def _write_zoo_info(out_dir: Path, info: ZooInfo) -> None:
    write_json_atomic(out_dir / ZOO_FILE, asdict(info))


def _parse_entry(line: str) -> dict:
    entry = json.loads(line)
    if not isinstance(entry, dict) or any(key not in entry for key in ENTRY_KEYS):
        raise ValueError(f"not a manifest entry (needs {', '.join(ENTRY_KEYS)})")
    return entry


def load_entries(out_dir: str | Path) -> tuple[list[dict], int | None]:
    """Parsed manifest lines, and the byte length of their valid prefix if a torn last line follows it.

    Only the final line may be damaged (a kill mid-append); damage anywhere else
    is a ``ManifestError`` naming the line.
    """
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        return [], None
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    entries: list[dict] = []
    good = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            entries.append(_parse_entry(line.decode()))
        except (ValueError, UnicodeDecodeError) as error:
            if any(rest.strip() for rest in lines[number:]):
                raise ManifestError(f"{path}:{number}: damaged line ({error})") from None
            return entries, good
        good += len(line) + 1
    complete = raw.endswith(b"\n") or not raw
    return entries, None if complete else len(raw)


def read_manifest(out_dir: str | Path) -> list[dict]:
    """The manifest's entries, read-only (a torn last line is ignored, not removed)."""
    return load_entries(out_dir)[0]


def _repair(path: Path, valid_length: int) -> None:
    """Drop a torn last line, or terminate a complete one, so the next append starts a fresh line."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        if valid_length < size:
            handle.truncate(valid_length)
        else:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        handle.flush()
        os.fsync(handle.fileno())


class Manifest:
    """The finished batches of one zoo folder; the only writer of ``manifest.jsonl``.

    One process (the driver) owns it. Appends are single fsynced lines, so a
    SIGKILL leaves at most a torn last line, which the next ``open`` removes.
    """

    def __init__(self, out_dir: Path, info: ZooInfo, entries: list[dict]):
        self.out_dir = out_dir
        self.info = info
        self._entries = entries
        self._by_batch: dict[int, str] = {}
        for entry in entries:
            for batch in entry["batches"]:
                self._by_batch.setdefault(int(batch), entry["shard"])

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_FILE

    @classmethod
    def open(cls, out_dir: str | Path, *, zoo_id: str, config_hash: str) -> Manifest:
        """Open a zoo folder for writing, creating it (and ``zoo.json``) when new.

        Refuses a folder holding another zoo, or holding files but no ``zoo.json``.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        info = cls._identity(out_dir, zoo_id, config_hash)
        entries, valid_length = load_entries(out_dir)
        if valid_length is not None:
            _repair(out_dir / MANIFEST_FILE, valid_length)
        return cls(out_dir, info, entries)

    @staticmethod
    def _identity(out_dir: Path, zoo_id: str, config_hash: str) -> ZooInfo:
        if not (out_dir / ZOO_FILE).exists():
            others = sorted(p.name for p in out_dir.iterdir())
            if others:
                raise ZooMismatchError(
                    f"{out_dir}: not empty and not a zoo folder (no {ZOO_FILE}; holds {', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''})"
                )
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            info = ZooInfo(zoo_id, config_hash, SCHEMA_VERSION, created)
            _write_zoo_info(out_dir, info)
            return info
        info = read_zoo_info(out_dir)
        if info.config_hash != config_hash or info.zoo_id != zoo_id:
            raise ZooMismatchError(
                f"{out_dir}: holds zoo {info.zoo_id!r} with config {info.config_hash}, "
                f"not zoo {zoo_id!r} with config {config_hash}; use another folder"
            )
        if info.schema_version != SCHEMA_VERSION:
            raise ZooMismatchError(
                f"{out_dir}: written with record schema v{info.schema_version}, this zoo writes v{SCHEMA_VERSION}"
            )
        return info

    def done_batches(self) -> set[int]:
        return set(self._by_batch)

    def entries(self) -> list[dict]:
        return [dict(entry) for entry in self._entries]

    def add(self, info: ShardInfo) -> bool:
        """List a durable shard; True if a line was appended.

        Idempotent: a shard whose batches are all listed already (a retried or
        duplicated delivery) is skipped, as is one that overlaps listed batches.
        A skipped shard's file is removed unless the manifest lists that very
        file, so the folder holds no unlisted shard.
        """
        listed = [b for b in info.batches if b in self._by_batch]
        if listed:
            if info.name not in self._by_batch.values():
                (self.out_dir / info.name).unlink(missing_ok=True)
            return False
        entry = info.to_entry()
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._entries.append(entry)
        for batch in info.batches:
            self._by_batch[batch] = info.name
        return True


def clean_stale(out_dir: str | Path) -> list[str]:
    """Remove leftovers of a killed run: temporary files and shards the manifest does not list.

    Call it before a run starts writing, never while one does (it would delete
    that run's temporary files).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    listed = {entry["shard"] for entry in read_manifest(out_dir)}
    stale = [p for folder in (out_dir, data_dir(out_dir)) for p in folder.glob("*.tmp") if p.is_file()]
    stale += [p for p in shard_files(out_dir) if relative_name(p) not in listed]
    for path in stale:
        path.unlink(missing_ok=True)
    for folder in {path.parent for path in stale}:
        fsync_dir(folder)
    return sorted(str(p.relative_to(out_dir)) for p in stale)
