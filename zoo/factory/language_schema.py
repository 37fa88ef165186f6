"""The Arrow schema of a language-zoo record (record schema v3).

Versions number the record layouts in one sequence: v1 (MLP pattern pairs), v2 (family-tagged
pattern pairs; what pattern zoos still write) and v3, this one: one row per trained language
model, no (clean, degraded) pair. A zoo holds one layout; ``zoo.json`` and every record name
it, and ``schema.version_of`` tells them apart by the ``grammar`` column.
"""

from __future__ import annotations

import pyarrow as pa

LANGUAGE_SCHEMA_VERSION = 3

LANGUAGE_COLUMN_DOCS: dict[str, str] = {
    "zoo_id": "Name of the zoo this record belongs to.",
    "config_hash": "Hash of the zoo configuration that produced the record (runtime settings excluded).",
    "probe_hash": "Hash of the zoo's probe corpora (one per grammar); the signature is on this record's grammar's corpus.",
    "schema_version": "Version of this record schema (3: language records).",
    "batch_id": "Batch the model was trained in; grammar, architecture, learning rate and corpus are shared per batch.",
    "pair_index": "Index of the model within its batch (the name is shared with pattern records, which hold pairs).",
    "example_id": "Unique id of the record: zoo_id/batch_id (6 digits)/pair_index.",
    "run_seed": "Seed of the whole zoo run.",
    "batch_seed": "Seed of the batch, derived from the run seed and the batch id.",
    "init_seed": "Seed of the model's weight initialization.",
    "order_seed": "Seed of the model's data order (per epoch).",
    "generation_seed": "Seed of the uniforms the model's validity generations were sampled with.",
    "family": "Subject model family (transformer).",
    "architecture": "Architecture as family-tagged JSON (head next_token: a causal language-model head).",
    "grammar": "Grammar the model was trained on: dyck, expr or english.",
    "grammar_config": "The grammar's full parameters as JSON (zoo.languages.parse_language reads it back).",
    "quantization": "Quantization applied to the weights (none, int8, int4, ternary, binary).",
    "weight_layout": "Name, shape and offset of every parameter tensor in the flat weight vector.",
    "weights": "Flat float32 weights of the model, laid out as weight_layout says.",
    "neuron_layer": "Layer index of every neuron, parallel to the rows of the signature matrix.",
    "neuron_kind": "Kind of every neuron (ffn, resid, output), parallel to neuron_layer.",
    "signature": "Per-neuron activation statistics over every real token of the grammar's probe corpus.",
    "metrics": "Validation loss (float and after quantization), next-token accuracy on legal continuations, validity "
    "of sampled generations, their length distribution against the grammar's, epochs and learning rate.",
    "timings": "Seconds spent per model (training, signatures, total); excluded from the content hash.",
}

LANGUAGE_METRIC_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("val_loss", pa.float32(), "mean next-token cross-entropy (nats) on the batch's validation sentences, after quantization"),
    ("float_val_loss", pa.float32(), "the same before quantization"),
    ("legal_accuracy", pa.float32(), "share of validation targets where the most likely next token is a legal continuation"),
    ("validity", pa.float32(), "share of the sampled generations the grammar's validator accepts"),
    ("generations", pa.int32(), "generations sampled from BOS at temperature 1"),
    ("unfinished", pa.float32(), "share of generations with no EOS within max_len"),
    ("generated_length_mean", pa.float32(), "mean tokens of the generations (BOS and EOS counted; max_len + 1 if none)"),
    ("grammar_length_mean", pa.float32(), "mean tokens of the grammar's sentences under the length cap"),
    ("length_tv", pa.float32(), "total-variation distance between generated and grammar length distributions"),
    ("epochs", pa.int32(), "epochs trained (early stopping on validation loss)"),
    ("lr", pa.float32(), "AdamW learning rate"),
)
LANGUAGE_METRICS_TYPE = pa.struct([(name, typ) for name, typ, _ in LANGUAGE_METRIC_FIELDS])


def language_record_schema(n_stats: int) -> pa.Schema:
    from zoo.factory.schema import IDENTITY_TYPES, LAYOUT_TYPE, TIMINGS_TYPE, signature_type

    types: dict[str, pa.DataType] = {
        **IDENTITY_TYPES,
        "order_seed": pa.int64(),
        "generation_seed": pa.int64(),
        "family": pa.string(),
        "architecture": pa.string(),
        "grammar": pa.string(),
        "grammar_config": pa.string(),
        "quantization": pa.string(),
        "weight_layout": LAYOUT_TYPE,
        "weights": pa.list_(pa.float32()),
        "neuron_layer": pa.list_(pa.int16()),
        "neuron_kind": pa.list_(pa.string()),
        "signature": signature_type(n_stats),
        "metrics": LANGUAGE_METRICS_TYPE,
        "timings": TIMINGS_TYPE,
    }
    return pa.schema(
        [pa.field(name, typ, metadata={"description": LANGUAGE_COLUMN_DOCS[name]}) for name, typ in types.items()]
    )
