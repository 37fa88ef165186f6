"""Per-record predictions of an evaluation, as one Parquet file per split.

``report.json`` holds a split's means; a researcher asking *which* models a reader gets
wrong, or trying another way to turn probabilities into sets, needs every record's
readout. ``RUN/predictions/SPLIT.parquet`` (each evaluated split, and the validation split
whenever the set thresholds are chosen on it) has one row per record, in the zoo's terms
(pattern names, not vocabulary indices), readable by pyarrow or pandas:

- the record: ``example_id``, ``batch_id``, ``corruption_rate``, ``patterns`` and
  ``corrupted_pattern`` (the truth) and ``accuracy`` (the degraded model's, on its benchmark);
- per reader R (``interpreter``, each baseline, ``interpreter+output_only``): ``R.set`` (the
  predicted set, as the report scores it), ``R.corrupted_pattern``, ``R.accuracy`` (the
  reader's estimate of the degraded model's accuracy), and
  ``R.pattern_probs`` / ``R.corrupted_probs`` over the zoo's pattern names (stored in the
  schema metadata under ``pattern_names``, beside ``checkpoint`` and each reader's ``thresholds``);
- per-model figures of the report (``repair_restored``, ``refined_restored``, ...; none for a
  validation split read only for the thresholds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo.atomic import atomic_path
from zoo.readers.interpreter.data import Example
from zoo.readers.interpreter.metrics import Readout, names_of, softmax


def _matrix(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def predictions_table(
    names: Sequence[str],
    examples: Sequence[Example],
    outputs: Mapping[str, Readout],
    sets: Mapping[str, np.ndarray],
    per_model: Mapping[str, np.ndarray],
    about: Mapping | None = None,
) -> pa.Table:
    """One row per example (in ``examples``' order, which every array follows); ``about`` (how the
    readouts were made: checkpoint, thresholds) joins ``pattern_names`` in the schema metadata, as JSON."""
    columns: dict[str, pa.Array] = {
        "example_id": pa.array([e.example_id for e in examples], pa.string()),
        "batch_id": pa.array([e.batch_id for e in examples], pa.int64()),
        "corruption_rate": pa.array([e.metrics["corruption_rate"] for e in examples], pa.float64()),
        "patterns": pa.array([list(e.patterns) for e in examples], pa.list_(pa.string())),
        "corrupted_pattern": pa.array([names[e.corrupted] for e in examples], pa.string()),
        "accuracy": pa.array([e.accuracy for e in examples], pa.float64()),
    }
    for reader, (probs, corrupted, accuracy) in outputs.items():
        columns[f"{reader}.set"] = pa.array(names_of(sets[reader], names), pa.list_(pa.string()))
        columns[f"{reader}.corrupted_pattern"] = pa.array([names[j] for j in corrupted.argmax(1)], pa.string())
        columns[f"{reader}.accuracy"] = pa.array(np.asarray(accuracy, dtype=np.float64))
        columns[f"{reader}.pattern_probs"] = _matrix(probs)
        columns[f"{reader}.corrupted_probs"] = _matrix(softmax(corrupted))
    for key, values in per_model.items():
        columns[key] = pa.array(np.asarray(values, dtype=np.float64), from_pandas=True)  # NaN -> null
    table = pa.table(columns)
    metadata = {"pattern_names": json.dumps(list(names))}
    metadata.update({key: json.dumps(value) for key, value in (about or {}).items()})
    return table.replace_schema_metadata(metadata)


def write_predictions(path: str | Path, table: pa.Table) -> None:
    """Write atomically: a killed evaluation leaves the previous file or none, never half of one."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_predictions(path: str | Path) -> tuple[pa.Table, list[str]]:
    """The table and the pattern names its probability columns are over."""
    table = pq.read_table(path)
    return table, json.loads(table.schema.metadata[b"pattern_names"])
