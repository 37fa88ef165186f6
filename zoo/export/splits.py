"""Train/validation/test and out-of-distribution splits, assigned per batch.

A batch owns one pattern-set draw, one architecture draw and one initialization
(its clean model repeats in every pair), so the unit of assignment is the batch,
never the row: a clean model never sits in two splits. ``group="pattern_set"``
goes further and keeps every batch with the same pattern set in one split.

Out-of-distribution splits come first: a batch of a held-out subject family
(``ood_families``), or whose architecture uses a held-out activation, depth or width,
goes to ``ood_architecture``; otherwise a batch whose
pattern set contains a held-out combination goes to ``ood_patterns``. The rest is
split by a hash of ``(seed, group key)``: a group's split does not depend on the
other groups, so a zoo that grows keeps the assignment of the batches it had
(except in a tiny zoo, where a requested split that would be empty takes the
train group nearest to it).

``zoo split`` writes ``splits.json`` beside the manifest (the assignment, the
options, row counts and the split files) and materializes each split as Parquet
files under ``splits/<split>/``, copied from the shards: a shard holds several
batches, which may fall in different splits, and the Hugging Face dataset card
(and ``datasets``) needs files that hold exactly one split's rows.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from zoo.config import Activation, IntRange, Strict, parse_config
from zoo.export import SPLIT_NAMES
from zoo.export.common import ExportError, ZooFolder, open_zoo
from zoo.factory.manifest import read_manifest, read_zoo_info
from zoo.factory.reader import read_records
from zoo.factory.schema import META_PREFIX, upgrade_table
from zoo.atomic import replace_dir
from zoo.factory.shards import CONTENT_KEY, encoding_options, store_sha256
from zoo.storage import Store, resolve
from zoo.subjects.families import architecture_of

SPLITS_FILE = "splits.json"
SPLITS_DIR = "splits"
SPLITS_VERSION = 1
TARGET_FILE_BYTES = 200_000_000


class SplitsError(ExportError):
    """Missing, stale or damaged splits."""


class SplitOptions(Strict):
    """How a zoo is split; stored in ``splits.json`` so a split can be reproduced and checked."""

    seed: int = Field(0, ge=0, description="seed of the hash that assigns each group to a split")
    validation: float = Field(0.1, ge=0.0, lt=1.0, description="share of the (non-OOD) groups in validation")
    test: float = Field(0.1, ge=0.0, lt=1.0, description="share of the (non-OOD) groups in test")
    group: Literal["batch", "pattern_set"] = Field(
        "batch", description="the unit assigned to a split: each batch, or all batches with the same pattern set"
    )
    ood_families: list[str] = Field(
        [],
        description="held-out subject families (e.g. transformer): every batch of one goes to ood_architecture, so a "
        "reader trained on the other families is tested on a family it never saw",
    )
    ood_activations: list[Activation] = Field(
        [], description="held-out activations: a batch using one goes to ood_architecture"
    )
    ood_widths: list[IntRange] = Field([], description="held-out hidden widths (ranges): a batch in one goes to ood_architecture")
    ood_depths: list[int] = Field([], description="held-out depths (hidden layers): a batch of one goes to ood_architecture")
    ood_patterns: list[list[str]] = Field(
        [], description="held-out pattern combinations: a batch whose set holds one goes to ood_patterns"
    )

    @model_validator(mode="after")
    def _sane(self) -> SplitOptions:
        if self.validation + self.test >= 1.0:
            raise ValueError(f"validation + test: {self.validation} + {self.test} leaves nothing to train on")
        if any(depth < 1 for depth in self.ood_depths):
            raise ValueError("ood_depths: depths are at least 1")
        for combo in self.ood_patterns:
            if not combo:
                raise ValueError("ood_patterns: an empty combination would hold out every batch")
            if len(set(combo)) != len(combo):
                raise ValueError(f"ood_patterns: {'+'.join(combo)} names a pattern twice")
        return self

    def check_against(self, folder: ZooFolder) -> None:
        """Held-out values must be ones the zoo's config can draw, or they would hold out nothing."""
        from zoo.patterns.library import selectable

        drawn = sorted({space.family for space in folder.config.spaces()})
        for family in self.ood_families:
            if family not in drawn:
                raise ExportError(f"--ood-families: {family} is not a family the config draws ({', '.join(drawn)})")
        if self.ood_families and set(drawn) <= set(self.ood_families):
            raise ExportError(f"--ood-families: holding out {', '.join(drawn)} leaves no family to train on")
        mlps = folder.config.spaces("mlp")
        if not mlps and (self.ood_activations or self.ood_widths or self.ood_depths):
            raise ExportError("--ood-activations, --ood-widths and --ood-depths hold out mlp subjects; this zoo has none")
        activations = sorted({a for space in mlps for a in space.activations})
        for activation in self.ood_activations:
            if activation not in activations:
                raise ExportError(
                    f"--ood-activations: {activation} is not among the config's activations ({', '.join(activations)})"
                )
        low, high = min((s.width.min for s in mlps), default=0), max((s.width.max for s in mlps), default=0)
        for r in self.ood_widths:
            if r.max < low or r.min > high:
                raise ExportError(f"--ood-widths: {r.min}-{r.max} lies outside the config's widths {low}-{high}")
        shallow, deep = min((s.layers.min for s in mlps), default=0), max((s.layers.max for s in mlps), default=0)
        for depth in self.ood_depths:
            if not shallow <= depth <= deep:
                raise ExportError(f"--ood-depths: {depth} lies outside the config's depths {shallow}-{deep}")
        names = selectable(folder.config.patterns)
        for combo in self.ood_patterns:
            unknown = [name for name in combo if name not in names]
            if unknown:
                raise ExportError(f"--ood-patterns: {', '.join(unknown)} is not a pattern of this zoo ({', '.join(names)})")
            if len(combo) > folder.config.patterns.per_batch.max:
                raise ExportError(
                    f"--ood-patterns: {'+'.join(combo)} has more patterns than a batch draws "
                    f"({folder.config.patterns.per_batch.max})"
                )


def parse_int_ranges(text: str) -> list[dict]:
    """``"38-40,12"`` -> ``[{"min": 38, "max": 40}, {"min": 12, "max": 12}]``."""
    ranges = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            ranges.append({"min": int(low), "max": int(high or low)})
        except ValueError:
            raise ExportError(f"not a width or width range: {part!r} (write e.g. 38-40 or 12)") from None
    return ranges


def options_from_cli(
    *,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.1,
    group: str = "batch",
    ood_activations: str | None = None,
    ood_widths: str | None = None,
    ood_depths: str | None = None,
    ood_patterns: str | None = None,
    ood_families: str | None = None,
) -> SplitOptions:
    """Options from the command line's comma lists (``+`` joins patterns of one combination)."""
    def names(text: str | None) -> list[str]:
        return [item.strip() for item in (text or "").split(",") if item.strip()]

    try:
        depths = [int(d) for d in names(ood_depths)]
    except ValueError:
        raise ExportError(f"--ood-depths: not a list of integers: {ood_depths!r}") from None
    data = {
        "seed": seed,
        "validation": validation,
        "test": test,
        "group": group,
        "ood_families": names(ood_families),
        "ood_activations": names(ood_activations),
        "ood_widths": parse_int_ranges(ood_widths or ""),
        "ood_depths": depths,
        "ood_patterns": [[p.strip() for p in combo.split("+") if p.strip()] for combo in names(ood_patterns)],
    }
    return parse_config(data, SplitOptions)


# ---------------------------------------------------------------- assignment


@dataclass(frozen=True)
class BatchFacts:
    """What the assignment looks at in a batch (shared by all its rows)."""

    patterns: tuple[str, ...]
    n_layers: int
    widths: tuple[int, ...]
    activation: str
    family: str = "mlp"

    @classmethod
    def of_row(cls, row: dict) -> BatchFacts:
        """The facts of a record (any schema and family): patterns, family, and the depth, widths and
        activation where the family has them (the architecture OOD options read those)."""
        arch = architecture_of(row["architecture"]).to_dict()
        return cls(
            tuple(row["patterns"]), int(arch.get("n_layers", 0)), tuple(int(w) for w in arch.get("widths", ())),
            str(arch.get("activation", "")), str(arch["family"]),
        )


def ood_split(facts: BatchFacts, options: SplitOptions) -> str | None:
    """``ood_architecture``, ``ood_patterns`` or None (in distribution)."""
    if facts.family in options.ood_families:
        return "ood_architecture"
    if facts.family == "mlp" and (  # the architecture options describe MLPs (``check_against``)
        facts.activation in options.ood_activations
        or facts.n_layers in options.ood_depths
        or any(r.min <= w <= r.max for w in facts.widths for r in options.ood_widths)
    ):
        return "ood_architecture"
    held = set(facts.patterns)
    if any(set(combo) <= held for combo in options.ood_patterns):
        return "ood_patterns"
    return None


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"zoo-split:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(batches: Mapping[int, BatchFacts | None], options: SplitOptions) -> dict[int, str]:
    """Split name of every batch; ``None`` facts mark a batch that kept no pair (it goes by its id).

    Raises ``SplitsError`` when no batch with records is left for ``train``.
    """
    result: dict[int, str] = {}
    groups: dict[str, list[int]] = {}
    with_rows: set[str] = set()
    for batch, facts in batches.items():
        ood = ood_split(facts, options) if facts is not None else None
        if ood is not None:
            result[batch] = ood
            continue
        key = "+".join(sorted(facts.patterns)) if facts is not None and options.group == "pattern_set" else f"batch:{batch}"
        groups.setdefault(key, []).append(batch)
        if facts is not None:
            with_rows.add(key)
    units = {key: _unit(options.seed, key) for key in groups}
    split_of_group = {}
    for key, u in units.items():
        split_of_group[key] = "test" if u < options.test else "validation" if u < options.test + options.validation else "train"
    _fill_empty(split_of_group, units, with_rows, options)
    for key, members in groups.items():
        for batch in members:
            result[batch] = split_of_group[key]
    return result


def _fill_empty(split_of_group: dict[str, str], units: dict[str, float], with_rows: set[str], options: SplitOptions) -> None:
    """Small zoos: make train, then test, then validation (if requested) hold a group with records.

    A split that drew none takes the group nearest its band of the unit interval
    from the split with the most groups, as long as the donor keeps one or is less
    important (train > test > validation).
    """
    priority = ("train", "test", "validation")
    wanted = {"train": 1.0, "test": options.test, "validation": options.validation}
    band = {"test": 0.0, "validation": options.test, "train": options.test + options.validation}

    def members(name: str) -> list[str]:
        return [k for k in with_rows if split_of_group[k] == name]

    for name in priority:
        if wanted[name] <= 0 or members(name):
            continue
        donors = [
            n
            for n in priority
            if n != name and members(n) and (len(members(n)) > 1 or priority.index(n) > priority.index(name))
        ]
        if not donors:
            continue
        donor = max(donors, key=lambda n: (len(members(n)), priority.index(n)))
        pick = min(sorted(members(donor)), key=lambda k: (units[k] - band[name]) % 1.0)
        split_of_group[pick] = name
    if not members("train"):
        raise SplitsError(
            f"no batch with records is left for train ({len(with_rows)} in-distribution groups); "
            "hold out less or lower --validation/--test"
        )


def batch_facts(folder: ZooFolder) -> dict[int, BatchFacts | None]:
    """Every finished batch with the facts of its records (None when it kept no pair)."""
    table = read_records(folder.path, columns=["batch_id", "patterns", "architecture"])
    facts: dict[int, BatchFacts | None] = {batch: None for batch in folder.batches}
    for row in table.to_pylist():
        if facts.get(row["batch_id"]) is None:
            facts[row["batch_id"]] = BatchFacts.of_row(row)
    return facts


# ---------------------------------------------------------------- splits.json and split files


@dataclass(frozen=True)
class Splits:
    """A zoo's splits as ``splits.json`` holds them."""

    zoo_id: str
    options: SplitOptions
    assignment: dict[int, str]
    rows: dict[str, int]
    files: dict[str, list[dict]]

    def split_of(self, batch_id: int) -> str:
        try:
            return self.assignment[int(batch_id)]
        except KeyError:
            raise SplitsError(f"batch {batch_id} is not in {SPLITS_FILE}; rerun `zoo split`") from None

    def batches(self, name: str) -> list[int]:
        if name not in SPLIT_NAMES:
            raise SplitsError(f"unknown split {name!r}; splits are {', '.join(SPLIT_NAMES)}")
        return sorted(b for b, split in self.assignment.items() if split == name)

    def data_files(self) -> dict[str, list[str]]:
        """Per split with records, its Parquet files relative to the zoo folder, in row order."""
        return {name: [f["path"] for f in self.files.get(name, [])] for name in SPLIT_NAMES if self.rows.get(name)}

    def to_json(self) -> dict:
        return {
            "version": SPLITS_VERSION,
            "zoo_id": self.zoo_id,
            "options": self.options.model_dump(mode="json"),
            "batches": {name: self.batches(name) for name in SPLIT_NAMES},
            "rows": {name: self.rows.get(name, 0) for name in SPLIT_NAMES},
            "files": {name: self.files.get(name, []) for name in SPLIT_NAMES},
        }

    @classmethod
    def from_json(cls, data: dict) -> Splits:
        if data.get("version") != SPLITS_VERSION:
            raise SplitsError(f"{SPLITS_FILE} has version {data.get('version')}, this zoo reads {SPLITS_VERSION}")
        assignment = {int(b): name for name, batches in data["batches"].items() for b in batches}
        return cls(data["zoo_id"], parse_config(data["options"], SplitOptions), assignment, data["rows"], data["files"])


def load_splits(zoo_dir: str | Path | Store) -> Splits:
    """The zoo's splits (a folder or a URI); refuses a missing file and one made for other batches (a zoo that grew since)."""
    store = resolve(zoo_dir)
    zoo_dir, path = store.name, store.display(SPLITS_FILE)
    if not store.is_file(SPLITS_FILE):
        raise SplitsError(f"{zoo_dir}: no {SPLITS_FILE}; run `zoo split {zoo_dir}` first")
    try:
        splits = Splits.from_json(json.loads(store.read_bytes(SPLITS_FILE)))
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, ExportError):
            raise
        raise SplitsError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    zoo_id = read_zoo_info(store).zoo_id
    if splits.zoo_id != zoo_id:
        raise SplitsError(f"{path}: made for zoo {splits.zoo_id!r}, this folder holds {zoo_id!r}; rerun `zoo split {zoo_dir}`")
    listed = {int(b) for entry in read_manifest(store) for b in entry["batches"]}
    if set(splits.assignment) != listed:
        raise SplitsError(
            f"{path}: covers {len(splits.assignment)} batches, the manifest lists {len(listed)}; "
            f"rerun `zoo split {zoo_dir}`"
        )
    return splits


def check_split_files(zoo_dir: str | Path | Store, splits: Splits, *, hashes: bool = False) -> None:
    """Every split file exists with the size (and, with ``hashes``, the sha256) ``splits.json`` lists
    (a listed path that would leave the zoo is refused, never opened)."""
    store = resolve(zoo_dir)
    for files in splits.files.values():
        for entry in files:
            rel, path = entry["path"], store.display(entry["path"])
            if store.size(rel) != entry["bytes"]:
                raise SplitsError(f"{path}: missing or changed since `zoo split`; rerun it")
            if hashes and store_sha256(store, rel) != entry["sha256"]:
                raise SplitsError(f"{path}: sha256 differs from {SPLITS_FILE}; rerun `zoo split`")


def _shared_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    return {k: v for k, v in (schema.metadata or {}).items() if k != CONTENT_KEY and k.startswith(META_PREFIX.encode())}


class _SplitWriter:
    """Rows of one split, buffered and written as numbered Parquet files of at most ``rows_per_file`` rows,
    each one whole object under ``root`` (a folder of the zoo's store: the staging folder, or ``splits``)."""

    def __init__(self, name: str, root: str, folder: ZooFolder, rows_per_file: int):
        self.name, self.root, self.folder, self.rows_per_file = name, root, folder, rows_per_file
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.files: list[dict] = []

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        while self.buffered >= self.rows_per_file:
            self._flush(self.rows_per_file)

    def close(self) -> list[dict]:
        if self.buffered:
            self._flush(self.buffered)
        return self.files

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.buffer)
        head, rest = table.slice(0, rows), table.slice(rows)
        self.buffer, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows
        relative = f"{SPLITS_DIR}/{self.name}/{self.name}-{len(self.files):05d}.parquet"
        rel = f"{self.root}/{self.name}/{self.name}-{len(self.files):05d}.parquet"
        storage = self.folder.config.storage
        metadata = {**_shared_metadata(head.schema), f"{META_PREFIX}split".encode(): self.name.encode()}
        head = head.replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        pq.write_table(
            head,
            sink,
            compression=None if storage.compression == "none" else storage.compression,
            row_group_size=storage.row_group_rows,
            write_statistics=["batch_id", "pair_index"],
            **encoding_options(head),
        )
        data = sink.getvalue()
        self.folder.store.makedirs(posixpath.dirname(rel))
        self.folder.store.write_bytes(rel, data)  # fsynced (a folder) or one PUT (object storage)
        sha256 = hashlib.sha256(memoryview(data)).hexdigest()
        self.files.append({"path": relative, "rows": head.num_rows, "bytes": data.size, "sha256": sha256})


def _rows_per_file(folder: ZooFolder) -> int:
    per_row = sum(int(entry["bytes"]) for entry in folder.manifest) / max(len(folder), 1)
    return max(1, int(TARGET_FILE_BYTES // max(per_row, 1.0)))


def write_splits(
    zoo_dir: str | Path, options: SplitOptions, *, overwrite: bool = False, rows_per_file: int | None = None, progress=None
) -> Splits:
    """Assign every batch, write the split files, then ``splits.json`` (atomically, last).

    A ``splits.json`` made with other options is only replaced with ``overwrite``;
    with the same options the split is refreshed (a grown zoo keeps its old
    batches' splits). On a folder, split files are built in a temporary folder that
    replaces ``splits/`` whole; on object storage (no rename) each file is one PUT over
    its old self and files no longer listed are deleted after ``splits.json``. A crash
    leaves the old ``splits.json`` and files, or a ``splits.json`` whose listed files
    ``check_split_files`` finds changed. ``zoo_dir`` is a folder or a URI. ``progress(done,
    total, what)``, when given, is told each shard read (``zoo.progress``).
    """
    folder = open_zoo(zoo_dir, task="zoo split")
    store = folder.store
    options.check_against(folder)
    existing_path = store.display(SPLITS_FILE)
    if store.is_file(SPLITS_FILE) and not overwrite:
        try:  # read with today's defaults: a field added since (ood_families) is not a difference
            previous = parse_config(json.loads(store.read_bytes(SPLITS_FILE)).get("options"), SplitOptions).model_dump(mode="json")
        except (ValueError, TypeError, AttributeError):
            previous = None
        wanted = options.model_dump(mode="json")
        if previous != wanted:
            changed = [k for k in wanted if not isinstance(previous, dict) or previous.get(k) != wanted[k]]
            raise FileExistsError(
                f"{existing_path}: made with other options ({', '.join(changed) or 'unreadable'} differ); "
                "pass --overwrite to replace it"
            )
    if rows_per_file is not None and rows_per_file < 1:
        raise ExportError(f"--rows-per-file must be positive, not {rows_per_file}")
    assignment = assign(batch_facts(folder), options)
    if store.local:
        for leftover in store.local_path().glob(f".{SPLITS_DIR}-*.tmp"):  # a killed `zoo split` (one runs at a time)
            shutil.rmtree(leftover, ignore_errors=True)
    per_file = rows_per_file or _rows_per_file(folder)
    staging = f".{SPLITS_DIR}-{uuid.uuid4().hex[:8]}.tmp" if store.local else SPLITS_DIR
    try:
        writers = {name: _SplitWriter(name, staging, folder, per_file) for name in SPLIT_NAMES}
        lookup = np.vectorize(lambda b: SPLIT_NAMES.index(assignment[int(b)]), otypes=[np.int8])
        for done, shard in enumerate(folder.shard_keys):
            if progress is not None:
                progress(done, len(folder.shard_keys), "writing split files (shards read)")
            table = upgrade_table(pq.read_table(shard, filesystem=store.fs))
            if table.num_rows == 0:
                continue
            index = lookup(table.column("batch_id").to_numpy())
            for i, name in enumerate(SPLIT_NAMES):
                mask = index == i
                if mask.any():
                    writers[name].add(table.filter(pa.array(mask)))
        files = {name: writer.close() for name, writer in writers.items()}
        rows = {name: sum(f["rows"] for f in files[name]) for name in SPLIT_NAMES}
        splits = Splits(folder.info.zoo_id, options, assignment, rows, files)
        if store.local:
            replace_dir(store.local_path(staging), store.local_path(SPLITS_DIR))
        store.write_bytes(SPLITS_FILE, _dumps(splits.to_json()).encode())
        if not store.local:
            _delete_unlisted(store, splits)
    finally:
        if store.local:
            shutil.rmtree(store.local_path(staging), ignore_errors=True)
    return splits


def _delete_unlisted(store: Store, splits: Splits) -> None:
    """Object storage: remove split files of an earlier split that the new ``splits.json`` does not list."""
    listed = {entry["path"] for files in splits.files.values() for entry in files}
    for name in SPLIT_NAMES:
        for file in store.list(f"{SPLITS_DIR}/{name}"):
            if f"{SPLITS_DIR}/{name}/{file}" not in listed:
                store.delete(f"{SPLITS_DIR}/{name}/{file}")


def _dumps(data: dict) -> str:
    """JSON with a line per top-level key and per split, values compact (a zoo may have 100k batches)."""
    def value(v, indent: str) -> str:
        if isinstance(v, dict) and v and all(isinstance(x, (list, dict)) or x is None or isinstance(x, (int, float)) for x in v.values()):
            inner = ",\n".join(f"{indent}  {json.dumps(k)}: {json.dumps(x)}" for k, x in v.items())
            return "{\n" + inner + "\n" + indent + "}"
        return json.dumps(v)

    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {value(v, '  ')}" for k, v in data.items()) + "\n}\n"




def split_counts(splits: Splits) -> list[tuple[str, int, int, int]]:
    """``(split, batches, rows, files)`` for every split name."""
    return [(name, len(splits.batches(name)), splits.rows.get(name, 0), len(splits.files.get(name, []))) for name in SPLIT_NAMES]


__all__ = [
    "SPLIT_NAMES",
    "SPLITS_FILE",
    "BatchFacts",
    "SplitOptions",
    "Splits",
    "SplitsError",
    "assign",
    "check_split_files",
    "load_splits",
    "options_from_cli",
    "write_splits",
]

