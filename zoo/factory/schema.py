"""The Arrow schema of a zoo record: the one place it is defined.

One row is one kept (degraded, clean) pair of a batch. Writers build tables with
``records_to_table``; shards, readers, exports and the dataset card all derive
from ``record_schema`` and ``COLUMN_DOCS``, so a column added here shows up
everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2
"""What pattern zoos write (one row per kept pair); language zoos write v3 (``language_schema``)."""
READABLE_VERSIONS = (1, 2, 3)
TIMING_COLUMNS: tuple[str, ...] = ("timings",)
META_PREFIX = "zoo."

COLUMN_DOCS: dict[str, str] = {
    "zoo_id": "Name of the zoo this record belongs to.",
    "config_hash": "Hash of the zoo configuration that produced the record (runtime settings excluded).",
    "probe_hash": "Hash of the fixed probe set the signatures were computed on.",
    "schema_version": "Version of this record schema.",
    "batch_id": "Batch the pair was produced in; clean model, pattern set and architecture are shared per batch.",
    "pair_index": "Index of the pair within its batch.",
    "example_id": "Unique id of the record: zoo_id/batch_id (6 digits)/pair_index.",
    "run_seed": "Seed of the whole zoo run.",
    "batch_seed": "Seed of the batch, derived from the run seed and the batch id.",
    "init_seed": "Seed of the weight initialization shared by the clean and degraded model.",
    "family": "Subject model family (e.g. mlp).",
    "architecture": "Architecture of both models as family-tagged JSON (the family's own fields: for mlp, depth, "
    "hidden widths, activation and input space); zoo.subjects.families.architecture_of reads it.",
    "patterns": "Patterns the clean model was trained to detect.",
    "corrupted_pattern": "Pattern whose labels were flipped to train the degraded model.",
    "corruption_rate": "Share of the corrupted pattern's training labels that were flipped.",
    "quantization": "Quantization applied to both models' weights (none, int8, int4, ternary, binary).",
    "weight_layout": "Name, shape and offset of every parameter tensor in the flat weight vectors.",
    "clean_weights": "Flat float32 weights of the clean model, laid out as weight_layout says.",
    "degraded_weights": "Flat float32 weights of the degraded model, laid out as weight_layout says.",
    "neuron_layer": "Layer index of every neuron, parallel to the rows of the signature matrices.",
    "neuron_kind": "Family-independent kind of every neuron (mlp: hidden, output), parallel to neuron_layer.",
    "clean_signature": "Per-neuron activation statistics of the clean model on the probe set.",
    "degraded_signature": "Per-neuron activation statistics of the degraded model on the probe set.",
    "metrics": "Accuracy, loss and epochs of both models (the task-generic core), and the pattern task's per-pattern "
    "accuracies, negatives, degradation and side effect, on clean benchmark sets.",
    "timings": "Seconds spent on the batch (training, signatures, total); excluded from the content hash.",
}

_METRIC_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("clean_pattern_accuracy", pa.list_(pa.float32())),
    ("degraded_pattern_accuracy", pa.list_(pa.float32())),
    ("clean_negative_accuracy", pa.float32()),
    ("degraded_negative_accuracy", pa.float32()),
    ("clean_accuracy", pa.float32()),
    ("degraded_accuracy", pa.float32()),
    ("clean_loss", pa.float32()),
    ("degraded_loss", pa.float32()),
    ("degradation", pa.float32()),
    ("side_effect", pa.float32()),
    ("clean_epochs", pa.int32()),
    ("degraded_epochs", pa.int32()),
    ("clean_float_accuracy", pa.float32()),
    ("degraded_float_accuracy", pa.float32()),
)

ARCHITECTURE_V1_TYPE = pa.struct(
    [
        ("family", pa.string()),
        ("n_layers", pa.int32()),
        ("widths", pa.list_(pa.int32())),
        ("activation", pa.string()),
        ("vocab_size", pa.int32()),
        ("seq_len", pa.int32()),
    ]
)
LAYOUT_TYPE = pa.list_(pa.struct([("name", pa.string()), ("shape", pa.list_(pa.int32())), ("offset", pa.int64())]))
METRICS_TYPE = pa.struct(list(_METRIC_FIELDS))
TIMINGS_TYPE = pa.struct([("train_s", pa.float32()), ("signature_s", pa.float32()), ("total_s", pa.float32())])


def signature_type(n_stats: int) -> pa.DataType:
    """A ``[n_neurons, n_stats]`` matrix: fixed inner size makes rows cheap to reshape."""
    return pa.list_(pa.list_(pa.float32(), n_stats))


# The columns every record starts with, in this order, whatever the task: who made it and from which seeds.
IDENTITY_TYPES: dict[str, pa.DataType] = {
    "zoo_id": pa.string(),
    "config_hash": pa.string(),
    "probe_hash": pa.string(),
    "schema_version": pa.int16(),
    "batch_id": pa.int64(),
    "pair_index": pa.int32(),
    "example_id": pa.string(),
    "run_seed": pa.int64(),
    "batch_seed": pa.int64(),
    "init_seed": pa.int64(),
}


def record_schema(n_stats: int, version: int = SCHEMA_VERSION) -> pa.Schema:
    """The record schema for signatures with ``n_stats`` statistics per neuron.

    ``version=1`` is the schema before families: ``architecture`` an MLP struct and no
    ``neuron_kind``; such zoos are still read (``upgrade_table``). ``version=3`` is the
    language-record layout (``zoo.factory.language_schema``).
    """
    if n_stats < 0:
        raise ValueError(f"n_stats must be >= 0, got {n_stats}")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"schema version {version} is not one this zoo reads ({READABLE_VERSIONS})")
    if version == 3:
        from zoo.factory.language_schema import language_record_schema

        return language_record_schema(n_stats)
    types: dict[str, pa.DataType] = {
        **IDENTITY_TYPES,
        "family": pa.string(),
        "architecture": pa.string() if version >= 2 else ARCHITECTURE_V1_TYPE,
        "patterns": pa.list_(pa.string()),
        "corrupted_pattern": pa.string(),
        "corruption_rate": pa.float32(),
        "quantization": pa.string(),
        "weight_layout": LAYOUT_TYPE,
        "clean_weights": pa.list_(pa.float32()),
        "degraded_weights": pa.list_(pa.float32()),
        "neuron_layer": pa.list_(pa.int16()),
        "neuron_kind": pa.list_(pa.string()),
        "clean_signature": signature_type(n_stats),
        "degraded_signature": signature_type(n_stats),
        "metrics": METRICS_TYPE,
        "timings": TIMINGS_TYPE,
    }
    if version < 2:
        del types["neuron_kind"]
    return pa.schema(
        [pa.field(name, typ, metadata={"description": COLUMN_DOCS[name]}) for name, typ in types.items()]
    )


def version_of(schema: pa.Schema) -> int:
    """The schema version a table was written with, read from its columns and their types."""
    if "grammar" in schema.names:
        return 3
    return 2 if pa.types.is_string(schema.field("architecture").type) else 1


def upgrade_table(table: pa.Table) -> pa.Table:
    """Records of any readable schema as the current one; current records come back unchanged.

    Schema 1 (MLP only): the ``architecture`` struct becomes family-tagged JSON, and
    ``neuron_kind`` is derived from the family's signature sites (when ``neuron_layer`` is
    read too). ``schema_version`` keeps the value the record was written with. Other
    subsets of columns come back as they are (``reader.physical_columns`` says what to read).
    """
    if "architecture" not in table.column_names or version_of(table.schema) >= 2:
        return table
    from zoo.subjects.families import architecture_of, get_family

    archs = [architecture_of(value) for value in table.column("architecture").to_pylist()]
    index = table.column_names.index("architecture")
    field = pa.field("architecture", pa.string(), metadata={"description": COLUMN_DOCS["architecture"]})
    table = table.set_column(index, field, pa.array([a.to_json() for a in archs], pa.string()))
    if "neuron_layer" in table.column_names and "neuron_kind" not in table.column_names:
        kinds = pa.array([get_family(a.family).neuron_kinds(a) for a in archs], pa.list_(pa.string()))
        meta = {"description": COLUMN_DOCS["neuron_kind"]}
        table = table.add_column(
            table.column_names.index("neuron_layer") + 1, pa.field("neuron_kind", kinds.type, metadata=meta), kinds
        )
    return table


def n_stats_of(schema: pa.Schema) -> int:
    """The signature width a schema was built with (read from its own column type)."""
    name = signature_column(schema)
    inner = schema.field(name).type.value_type
    if not pa.types.is_fixed_size_list(inner):
        raise ValueError(f"{name} has type {schema.field(name).type}, not a signature matrix")
    return inner.list_size


def signature_column(schema: pa.Schema) -> str:
    """The column holding a signature matrix: ``clean_signature`` (pattern pairs) or ``signature`` (language)."""
    return "signature" if "signature" in schema.names and "clean_signature" not in schema.names else "clean_signature"


def schema_problems(schema: pa.Schema) -> list[str]:
    """Differences in names and types from ``record_schema``; metadata and list item names are ignored."""
    try:
        expected = record_schema(n_stats_of(schema), version_of(schema))
    except (KeyError, ValueError) as error:
        return [f"no usable clean_signature column ({error})"]
    if schema.names != expected.names:
        return [f"columns {schema.names} differ from {expected.names}"]
    return [
        f"column {f.name} has type {f.type}, expected {e.type}"
        for f, e in zip(schema, expected)
        if not f.type.equals(e.type)
    ]


def with_zoo_metadata(
    schema: pa.Schema,
    *,
    signature_stats: Sequence[str],
    zoo_id: str,
    config_hash: str,
    probe_hash: str,
    schema_version: int = SCHEMA_VERSION,
) -> pa.Schema:
    """Attach what a reader needs to interpret the file on its own (signature column names above all)."""
    if len(signature_stats) != n_stats_of(schema):
        raise ValueError(f"{len(signature_stats)} signature stats for a signature of width {n_stats_of(schema)}")
    metadata = dict(schema.metadata or {})
    metadata.update(
        {
            f"{META_PREFIX}signature_stats".encode(): json.dumps(list(signature_stats)).encode(),
            f"{META_PREFIX}zoo_id".encode(): zoo_id.encode(),
            f"{META_PREFIX}config_hash".encode(): config_hash.encode(),
            f"{META_PREFIX}probe_hash".encode(): probe_hash.encode(),
            f"{META_PREFIX}schema_version".encode(): str(schema_version).encode(),
        }
    )
    return schema.with_metadata(metadata)


def signature_stats_of(schema: pa.Schema) -> list[str] | None:
    """Names of the signature statistics, if the schema carries zoo metadata."""
    raw = (schema.metadata or {}).get(f"{META_PREFIX}signature_stats".encode())
    return None if raw is None else json.loads(raw)


def records_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table from plain dicts (as ``Table.to_pylist`` gives them); every column is required."""
    for i, row in enumerate(rows):
        missing = [name for name in schema.names if name not in row]
        extra = [key for key in row if key not in schema.names]
        if missing or extra:
            raise ValueError(f"record {i}: missing columns {missing}, unknown columns {extra}")
    return pa.Table.from_pylist(rows, schema=schema)


def content_hash(table: pa.Table) -> str:
    """sha256 of the records' values, timings excluded.

    Canonical per column (names, types, validity and values, never buffers), so it
    does not depend on chunking, slicing, row-group layout or schema metadata, and
    a rerun that only took a different time yields the same hash.
    """
    digest = hashlib.sha256()
    kept = [name for name in table.column_names if name not in TIMING_COLUMNS]
    digest.update(json.dumps([table.num_rows, kept]).encode())
    for name in kept:
        column = table.column(name)
        digest.update(f"{name}:{_type_key(column.type)}".encode())
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        _digest_array(digest, array)
    return digest.hexdigest()


_BINARY_CHECKS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


def _type_key(typ: pa.DataType) -> str:
    """A type's text without list item names, which Parquet renames (item -> element)."""
    if pa.types.is_dictionary(typ):
        return _type_key(typ.value_type)
    if pa.types.is_struct(typ):
        return "struct<" + ",".join(f"{f.name}:{_type_key(f.type)}" for f in typ) + ">"
    if pa.types.is_fixed_size_list(typ):
        return f"fixed_size_list<{_type_key(typ.value_type)}>[{typ.list_size}]"
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return f"{'large_' if pa.types.is_large_list(typ) else ''}list<{_type_key(typ.value_type)}>"
    return str(typ)


def _digest_array(digest: "hashlib._Hash", array: pa.Array) -> None:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    digest.update(np.asarray(array.is_valid(), dtype=np.bool_).tobytes() if array.null_count else b"\x01")
    typ = array.type
    if pa.types.is_struct(typ):
        for i in range(typ.num_fields):
            _digest_array(digest, array.field(i))
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        lengths = array.value_lengths().fill_null(0)
        digest.update(np.asarray(lengths, dtype=np.int64).tobytes())
        _digest_array(digest, array.flatten())
    elif any(check(typ) for check in _BINARY_CHECKS):
        _digest_binary(digest, array.cast(pa.large_binary()))
    elif pa.types.is_boolean(typ):
        digest.update(np.asarray(array.fill_null(False), dtype=np.bool_).tobytes())
    else:
        filled = array.fill_null(0) if array.null_count else array
        digest.update(np.ascontiguousarray(filled.to_numpy(zero_copy_only=False)).tobytes())


def _digest_binary(digest: "hashlib._Hash", array: pa.LargeBinaryArray) -> None:
    """Lengths, then the bytes the (possibly sliced) array spans, read from its buffers."""
    array = array.fill_null(b"") if array.null_count else array
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    digest.update(np.diff(offsets).tobytes())
    data = array.buffers()[2]
    if len(array) and data is not None:
        digest.update(memoryview(data)[offsets[0] : offsets[-1]])


def example_record(
    *,
    batch_id: int = 0,
    pair_index: int = 0,
    n_stats: int = 6,
    widths: Sequence[int] = (32, 32),
    vocab_size: int = 7,
    seq_len: int = 7,
    patterns: Sequence[str] = ("palindrome", "sorted_ascending", "contains_trigram"),
    zoo_id: str = "example",
    seed: int | None = None,
    quantization: str = "none",
) -> dict:
    """One valid record with realistic shapes and random values, for tests, docs and writer benchmarks."""
    rng = np.random.default_rng(seed if seed is not None else batch_id * 1000 + pair_index)
    sizes = (vocab_size * seq_len, *widths, 1)
    layout, offset = [], 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        prefix = f"layers.{i}" if i < len(widths) else "head"
        for suffix, shape in (("weight", [fan_out, fan_in]), ("bias", [fan_out])):
            layout.append({"name": f"{prefix}.{suffix}", "shape": shape, "offset": offset})
            offset += int(np.prod(shape))
    clean = (rng.standard_normal(offset) * 0.2).astype(np.float32)
    degraded = clean + (rng.standard_normal(offset) * 0.05).astype(np.float32)
    n_neurons = sum(widths) + 1
    n_patterns = len(patterns)
    clean_acc = rng.uniform(0.9, 1.0, n_patterns).astype(np.float32)
    corrupted = int(rng.integers(n_patterns))
    degraded_acc = clean_acc.copy()
    degraded_acc[corrupted] = rng.uniform(0.0, 0.5)
    return {
        "zoo_id": zoo_id,
        "config_hash": "0" * 16,
        "probe_hash": "1" * 16,
        "schema_version": SCHEMA_VERSION,
        "batch_id": batch_id,
        "pair_index": pair_index,
        "example_id": f"{zoo_id}/{batch_id:06d}/{pair_index}",
        "run_seed": 0,
        "batch_seed": batch_id + 17,
        "init_seed": batch_id + 23,
        "family": "mlp",
        "architecture": json.dumps(
            {
                "n_layers": len(widths),
                "widths": list(widths),
                "activation": "relu",
                "vocab_size": vocab_size,
                "seq_len": seq_len,
                "family": "mlp",
            },
            separators=(",", ":"),
        ),
        "patterns": list(patterns),
        "corrupted_pattern": patterns[corrupted],
        "corruption_rate": float(rng.uniform(0.6, 1.0)),
        "quantization": quantization,
        "weight_layout": layout,
        "clean_weights": clean,
        "degraded_weights": degraded,
        "neuron_layer": [layer for layer, width in enumerate((*widths, 1)) for _ in range(width)],
        "neuron_kind": ["hidden"] * sum(widths) + ["output"],
        "clean_signature": rng.standard_normal((n_neurons, n_stats)).astype(np.float32).tolist(),
        "degraded_signature": rng.standard_normal((n_neurons, n_stats)).astype(np.float32).tolist(),
        "metrics": {
            "clean_pattern_accuracy": clean_acc.tolist(),
            "degraded_pattern_accuracy": degraded_acc.tolist(),
            "clean_negative_accuracy": 0.95,
            "degraded_negative_accuracy": 0.94,
            "clean_accuracy": float(clean_acc.mean()),
            "degraded_accuracy": float(degraded_acc.mean()),
            "clean_loss": 0.1,
            "degraded_loss": 0.4,
            "degradation": float(clean_acc[corrupted] - degraded_acc[corrupted]),
            "side_effect": 0.01,
            "clean_epochs": 20,
            "degraded_epochs": 18,
            "clean_float_accuracy": float(clean_acc.mean()),
            "degraded_float_accuracy": float(degraded_acc.mean()),
        },
        "timings": {"train_s": 0.5, "signature_s": 0.05, "total_s": 0.6},
    }
