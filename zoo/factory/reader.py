"""Reading a zoo folder back, and checking it.

Readers trust the manifest, not the directory listing: a shard on disk that the
manifest does not list is a leftover of a killed run and is never read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.factory.manifest import MANIFEST_FILE, ManifestError, read_manifest, read_zoo_info
from zoo.factory.schema import META_PREFIX, record_schema, schema_problems, upgrade_table
from zoo.factory.shards import CONTENT_KEY, file_sha256, relative_name, shard_files, sort_records

_SORT_KEYS = ("batch_id", "pair_index")


def _ordered_entries(out_dir: str | Path) -> list[dict]:
    return sorted(read_manifest(out_dir), key=lambda entry: (min(entry["batches"]), entry["shard"]))


def shard_paths(out_dir: str | Path) -> list[Path]:
    """Manifest-listed shards in batch order (of each shard's first batch)."""
    return [Path(out_dir) / entry["shard"] for entry in _ordered_entries(out_dir)]


def _shared_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """Zoo-level metadata only: per-shard keys (the content hash) would make shards' schemas differ."""
    return {k: v for k, v in (schema.metadata or {}).items() if k != CONTENT_KEY and k.startswith(META_PREFIX.encode())}


def read_records(out_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Every listed record as one table sorted by (batch_id, pair_index), in the current schema
    (records of older schemas are upgraded as they are read; see ``upgrade_table``)."""
    paths = shard_paths(out_dir)
    if not paths:
        read_zoo_info(out_dir)
        schema = record_schema(0)
        return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
    wanted = None if columns is None else list(dict.fromkeys([*columns, *_SORT_KEYS]))
    tables = [upgrade_table(pq.read_table(path, columns=wanted)) for path in paths]
    metadata = _shared_metadata(tables[0].schema)
    table = pa.concat_tables([t.replace_schema_metadata(metadata) for t in tables])
    table = sort_records(table)
    return table if columns is None else table.select(list(columns))


def iter_batches(
    out_dir: str | Path, batch_size: int = 1024, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream listed records in batches of at most ``batch_size`` rows, shard by shard.

    Records of older schemas come in the current one (``upgrade_table``). Rows are sorted
    within a shard; shards come in order of their first batch,
    which is a global order unless shards cover interleaved batch ranges.
    """
    for path in shard_paths(out_dir):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            yield upgrade_table(pa.Table.from_batches([batch])).to_batches()[0]


def verify(out_dir: str | Path, progress=None) -> list[str]:
    """Every problem found, one line each naming the file; an empty list means the zoo is intact.

    ``progress(done, total, what)``, when given, is told each shard checked (``zoo.progress``)."""
    out_dir = Path(out_dir)
    try:
        read_zoo_info(out_dir)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    try:
        entries = read_manifest(out_dir)
    except ManifestError as error:
        return [str(error)]
    problems = _duplicate_batches(entries)
    for done, entry in enumerate(entries):
        if progress is not None:
            progress(done, len(entries), "checking shards")
        problems += _check_shard(out_dir / entry["shard"], entry)
    listed = {entry["shard"] for entry in entries}
    problems += [
        f"{path}: shard on disk but not in {MANIFEST_FILE}"
        for path in shard_files(out_dir)
        if relative_name(path) not in listed
    ]
    return problems


def _duplicate_batches(entries: list[dict]) -> list[str]:
    owners: dict[int, list[str]] = {}
    for entry in entries:
        for batch in entry["batches"]:
            owners.setdefault(int(batch), []).append(entry["shard"])
    counts = Counter(entry["shard"] for entry in entries)
    problems = [f"{MANIFEST_FILE}: shard {name} listed {n} times" for name, n in sorted(counts.items()) if n > 1]
    problems += [
        f"{MANIFEST_FILE}: batch {batch} listed {len(shards)} times ({', '.join(shards)})"
        for batch, shards in sorted(owners.items())
        if len(shards) > 1
    ]
    return problems


def _check_shard(path: Path, entry: dict) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing (listed in {MANIFEST_FILE})"]
    problems = []
    size = path.stat().st_size
    if size != entry["bytes"]:
        problems.append(f"{path}: {size} bytes on disk, {entry['bytes']} in {MANIFEST_FILE}")
    if file_sha256(path) != entry["sha256"]:
        problems.append(f"{path}: sha256 differs from {MANIFEST_FILE}")
    try:
        parquet = pq.ParquetFile(path)
        batch_ids = parquet.read(columns=["batch_id"]).column("batch_id").to_pylist()
    except (OSError, pa.ArrowException) as error:
        return [*problems, f"{path}: unreadable ({type(error).__name__}: {error})"]
    rows = parquet.metadata.num_rows
    if rows != entry["rows"]:
        problems.append(f"{path}: {rows} rows, {entry['rows']} in {MANIFEST_FILE}")
    problems += [f"{path}: schema mismatch: {problem}" for problem in schema_problems(parquet.schema_arrow)]
    stray = sorted(set(batch_ids) - {int(b) for b in entry["batches"]})
    if stray:
        problems.append(f"{path}: holds rows of batches {stray} not listed for it")
    return problems
