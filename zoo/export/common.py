"""What every export command shares: the checked zoo folder, one-line errors, atomic writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from zoo.config import ZooConfig, load_config
from zoo.factory.manifest import CONFIG_FILE, PROBE_FILE, ZOO_FILE, ZooInfo, read_manifest, read_zoo_info  # noqa: F401 (re-exported)
from zoo.factory.reader import shard_paths, verify
from zoo.factory.schema import signature_stats_of
from zoo.atomic import commit_file, temporary_path, write_text_atomic  # noqa: F401 (re-exported)



class ExportError(ValueError):
    """Bad input to an export command (export, split, card, publish): one line, exit 2."""


@dataclass(frozen=True)
class ZooFolder:
    """A zoo folder that passed ``verify``, with the config it was generated from."""

    path: Path
    info: ZooInfo
    config: ZooConfig
    rows: int
    batches: tuple[int, ...]
    signature_stats: tuple[str, ...]

    @property
    def shards(self) -> list[Path]:
        return shard_paths(self.path)

    @property
    def shard_bytes(self) -> int:
        return sum(int(entry["bytes"]) for entry in read_manifest(self.path))


def open_zoo(path: str | Path, *, require_rows: bool = True) -> ZooFolder:
    """Check a zoo folder before anything reads it or writes beside it.

    Refuses (``ExportError``, one line) a folder without ``zoo.json``, a zoo that
    does not verify (checksums, row counts, schema), a missing or foreign
    ``config.yaml`` (another zoo's name), and, unless ``require_rows`` is false, a zoo without records.
    """
    folder = Path(path)
    if not (folder / ZOO_FILE).is_file():
        raise ExportError(f"{folder}: not a zoo folder (no {ZOO_FILE})")
    problems = verify(folder)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportError(f"{folder}: the zoo does not verify: {problems[0]}{more}; run `zoo verify {folder}`")
    info = read_zoo_info(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ExportError(f"{folder}: no {CONFIG_FILE} (zoo generate writes it beside the shards)")
    config = load_config(config_path)
    # The name, not the hash: a config read by newer code (new fields with defaults) hashes differently.
    if not info.zoo_id.startswith(f"{config.name}-"):
        raise ExportError(f"{config_path}: names zoo {config.name!r}, but {ZOO_FILE} holds {info.zoo_id!r}")
    entries = read_manifest(folder)
    rows = sum(int(entry["rows"]) for entry in entries)
    batches = tuple(sorted(int(b) for entry in entries for b in entry["batches"]))
    if require_rows and rows == 0:
        raise ExportError(f"{folder}: the zoo holds no records ({len(batches)} finished batches, none kept a pair)")
    stats: tuple[str, ...] = ()
    paths = shard_paths(folder)
    if paths:
        schema = pq.read_schema(paths[0])
        names = signature_stats_of(schema)
        width = schema.field("clean_signature").type.value_type.list_size
        stats = tuple(names) if names else tuple(f"stat{i}" for i in range(width))
    return ZooFolder(folder, info, config, rows, batches, stats)


def refuse_existing(path: Path, overwrite: bool) -> None:
    """An output that exists is only replaced when the user said so."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    if path.is_dir():
        raise ExportError(f"{path}: is a folder, not a file")
