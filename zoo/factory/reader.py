"""Reading a zoo back (a local folder or any ``pyarrow.fs`` URI), and checking it.

Readers trust the manifest, not the directory listing: a shard on disk that the
manifest does not list is a leftover of a killed run and is never read. They
check what they read against it (row counts always; size and sha256 in
``verify``) and report damage in one line (``ManifestError``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.factory.manifest import (
    CONFIG_FILE, MANIFEST_FILE, PROBE_FILE, ZOO_FILE, ManifestError, read_listing, read_manifest, read_zoo_info,
)
from zoo.factory.schema import READABLE_VERSIONS, META_PREFIX, record_schema, schema_problems, upgrade_table
from zoo.factory.shards import CONTENT_KEY, sort_records, stored_shards
from zoo.storage import Store, StorageError, resolve

_SORT_KEYS = ("batch_id", "pair_index")


def _ordered_entries(out_dir: str | Path | Store) -> list[dict]:
    return ordered(read_manifest(out_dir))


def ordered(entries: list[dict]) -> list[dict]:
    """Manifest entries in batch order (of each shard's first batch)."""
    return sorted(entries, key=lambda entry: (min(entry["batches"]), entry["shard"]))


def physical_columns(columns: Sequence[str] | None, version: int) -> list[str] | None:
    """The columns to read from a shard of schema ``version`` so that ``upgrade_table`` can give ``columns``.

    A schema-1 shard has no ``neuron_kind``: it is derived from ``architecture`` and ``neuron_layer``.
    """
    if columns is None or version >= 2 or "neuron_kind" not in columns:
        return None if columns is None else list(columns)
    return list(dict.fromkeys([*(c for c in columns if c != "neuron_kind"), "architecture", "neuron_layer"]))


def read_shard_records(store: Store, entry: dict, columns: Sequence[str] | None, version: int) -> pa.Table:
    """One listed shard's records, upgraded to the current schema, sorted, holding exactly ``columns``."""
    wanted = None if columns is None else list(dict.fromkeys([*columns, *_SORT_KEYS]))
    table = sort_records(upgrade_table(_read_shard(store, entry, physical_columns(wanted, version))))
    return table if columns is None else table.select(list(columns))


def shard_paths(out_dir: str | Path | Store) -> list:
    """Manifest-listed shards in batch order (of each shard's first batch): ``Path``s for a local
    folder, URIs (``s3://...``) for object storage (read those with ``shard_keys`` and the store's filesystem)."""
    store = resolve(out_dir)
    rels = [entry["shard"] for entry in _ordered_entries(store)]
    if store.local:
        return [Path(store.name) / rel for rel in rels]
    return [store.display(rel) for rel in rels]


def shard_keys(out_dir: str | Path | Store) -> list[str]:
    """Manifest-listed shards in batch order, as paths inside ``resolve(out_dir).fs``."""
    store = resolve(out_dir)
    return [store.key(entry["shard"]) for entry in _ordered_entries(store)]


def _shared_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """Zoo-level metadata only: per-shard keys (the content hash) would make shards' schemas differ."""
    return {k: v for k, v in (schema.metadata or {}).items() if k != CONTENT_KEY and k.startswith(META_PREFIX.encode())}


def _read_shard(store: Store, entry: dict, columns: list[str] | None) -> pa.Table:
    """One listed shard, its row count checked against the manifest (a one-line ``ManifestError``)."""
    rel = entry["shard"]
    try:
        table = pq.read_table(store.key(rel), filesystem=store.fs, columns=columns)
    except FileNotFoundError:
        raise ManifestError(f"{store.display(rel)}: missing (listed in the manifest); `zoo verify --repair` heals it") from None
    except (OSError, pa.ArrowException) as error:
        raise ManifestError(f"{store.display(rel)}: unreadable ({str(error).splitlines()[0][:200]})") from None
    if table.num_rows != entry["rows"]:
        raise ManifestError(f"{store.display(rel)}: {table.num_rows} rows, {entry['rows']} in the manifest")
    return table


def read_records(out_dir: str | Path | Store, columns: Sequence[str] | None = None) -> pa.Table:
    """Every listed record as one table sorted by (batch_id, pair_index), in the current schema
    (records of older schemas are upgraded as they are read; see ``upgrade_table``)."""
    store = resolve(out_dir)
    entries = _ordered_entries(store)
    if not entries:
        read_zoo_info(store)
        schema = record_schema(0)
        return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
    wanted = None if columns is None else list(dict.fromkeys([*columns, *_SORT_KEYS]))
    version = read_zoo_info(store).schema_version
    tables = [upgrade_table(_read_shard(store, entry, physical_columns(wanted, version))) for entry in entries]
    metadata = _shared_metadata(tables[0].schema)
    table = pa.concat_tables([t.replace_schema_metadata(metadata) for t in tables])
    table = sort_records(table)
    return table if columns is None else table.select(list(columns))


def iter_batches(
    out_dir: str | Path | Store, batch_size: int = 1024, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream listed records in batches of at most ``batch_size`` rows, shard by shard.

    Records of older schemas come in the current one (``upgrade_table``). Rows are sorted
    within a shard; shards come in order of their first batch,
    which is a global order unless shards cover interleaved batch ranges.
    """
    store = resolve(out_dir)
    read = physical_columns(columns, read_zoo_info(store).schema_version)
    for entry in _ordered_entries(store):
        parquet = pq.ParquetFile(store.open_input(entry["shard"]))
        if parquet.metadata.num_rows != entry["rows"]:
            raise ManifestError(
                f"{store.display(entry['shard'])}: {parquet.metadata.num_rows} rows, {entry['rows']} in the manifest"
            )
        for batch in parquet.iter_batches(batch_size=batch_size, columns=read):
            table = upgrade_table(pa.Table.from_batches([batch]))
            yield from (table if columns is None else table.select(list(columns))).combine_chunks().to_batches()


def verify(out_dir: str | Path | Store, progress=None) -> list[str]:
    """Every problem found, one line each naming the file; an empty list means the zoo is intact:
    ``zoo.json``, ``config.yaml`` and ``probe.parquet`` against each other and the records, then
    every shard (``verify_shards``)."""
    return verify_shards(out_dir, progress, identity=True)


def verify_shards(out_dir: str | Path | Store, progress=None, identity: bool = False) -> list[str]:
    """The manifest against the shards: checksums, sizes, rows, schema, duplicates, unlisted files.

    ``progress(done, total, what)``, when given, is told each shard checked (``zoo.progress``)."""
    try:
        store = resolve(out_dir)
        info = read_zoo_info(store)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    try:
        listing = read_listing(store)
    except (ManifestError, StorageError) as error:
        return [str(error)]
    problems = [f"{store.display(item.where)}: {item.problem}" for item in listing if item.problem is not None]
    entries = [item.entry for item in listing if item.problem is None]
    if identity:
        problems += _check_identity(store, info, ordered(entries))
    problems += _duplicate_batches(entries)
    for done, entry in enumerate(entries):
        if progress is not None:
            progress(done, len(entries), "checking shards")
        problems += _check_shard(store, entry)
    listed = {entry["shard"] for entry in entries}
    problems += [
        f"{store.display(rel)}: shard on disk but not in {MANIFEST_FILE}" for rel in sorted(stored_shards(store)) if rel not in listed
    ]
    return problems


def _check_identity(store: Store, info, entries: list[dict]) -> list[str]:
    """``zoo.json``'s schema version, ``config.yaml`` against ``zoo.json``, ``probe.parquet``
    against itself and against the probe set the records name."""
    import yaml

    from zoo.config import ConfigError, parse_config

    problems = []
    if info.schema_version not in READABLE_VERSIONS:
        problems.append(f"{store.display(ZOO_FILE)}: record schema v{info.schema_version}, not one this zoo reads")
    try:
        config = parse_config(yaml.safe_load(store.read_bytes(CONFIG_FILE).decode("utf-8")) or {})
        if not info.zoo_id.startswith(f"{config.name}-"):
            problems.append(f"{store.display(CONFIG_FILE)}: names zoo {config.name!r}, {ZOO_FILE} holds {info.zoo_id!r}")
    except FileNotFoundError:
        problems.append(f"{store.display(CONFIG_FILE)}: missing")
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as error:
        problems.append(f"{store.display(CONFIG_FILE)}: unreadable ({str(error).splitlines()[0]})")
    try:
        probe = probe_from_arrow(pq.read_table(store.key(PROBE_FILE), filesystem=store.fs))
    except FileNotFoundError:
        return [*problems, f"{store.display(PROBE_FILE)}: missing"]
    except (ValueError, OSError, pa.ArrowException) as error:
        return [*problems, f"{store.display(PROBE_FILE)}: {str(error).splitlines()[0]}"]
    for entry in entries[:1]:
        try:
            named = _read_shard(store, entry, ["probe_hash"]).column("probe_hash")
        except ManifestError:
            break  # the shard check reports it
        if len(named) and named[0].as_py() != probe.hash:
            problems.append(f"{store.display(PROBE_FILE)}: not the probe set the records were fingerprinted on")
    return problems


def probe_from_arrow(table: pa.Table):
    """A zoo's ``probe.parquet`` as what wrote it: a pattern ``ProbeSet`` or ``LanguageProbes``
    (one corpus per grammar); ``ValueError`` when damaged."""
    from zoo.languages.probe import LanguageProbes, is_language_probes
    from zoo.patterns.sampler import ProbeSet

    return LanguageProbes.from_arrow(table) if is_language_probes(table) else ProbeSet.from_arrow(table)


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


def _check_shard(store: Store, entry: dict) -> list[str]:
    path = store.display(entry["shard"])
    try:
        data = store.read_bytes(entry["shard"])
    except FileNotFoundError:
        return [f"{path}: missing (listed in {MANIFEST_FILE})"]
    problems = []
    if len(data) != entry["bytes"]:
        problems.append(f"{path}: {len(data)} bytes on disk, {entry['bytes']} in {MANIFEST_FILE}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        problems.append(f"{path}: sha256 differs from {MANIFEST_FILE}")
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
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
