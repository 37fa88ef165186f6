"""The public API behind ``import zoo``: make a zoo, open one, read it, check it.

Every reader of a zoo (export, probes, the interpreter, users' notebooks) goes
through ``Zoo``. A zoo is a local folder or any ``pyarrow.fs`` URI
(``s3://bucket/prefix``, ``file://...``; see ``zoo.storage``). ``Zoo`` checks it once, trusts the manifest rather than the
directory listing, reads records of every schema version in the current one, and
takes the probe set from ``probe.parquet`` (checked against the records' hash)
instead of regenerating it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zoo.config import ConfigError, ZooConfig, _merge, load_config, parse_config
from zoo.factory.manifest import CONFIG_FILE, PROBE_FILE, ZOO_FILE, ManifestError, ZooInfo, read_manifest, read_zoo_info
from zoo.factory.reader import iter_batches, ordered, physical_columns, read_records, read_shard_records
from zoo.factory.reader import verify as _verify
from zoo.factory.schema import READABLE_VERSIONS, signature_column, signature_stats_of, upgrade_table
from zoo.storage import Store, StorageError, resolve

if TYPE_CHECKING:
    import pandas
    from torch import nn

    from zoo.patterns.sampler import ProbeSet

Which = Literal["clean", "degraded"]


class ZooError(ValueError):
    """A folder that is not a readable zoo, or a request it cannot answer: one line."""


class Zoo:
    """A zoo folder opened for reading.

    Attributes: ``path``, ``info`` (``zoo.json``: id, config hash, schema version),
    ``config`` (the ``ZooConfig`` that made it), ``manifest`` (one dict per finished
    shard). ``len(zoo)`` is the number of records. Records come sorted by
    ``(batch_id, pair_index)``; ``split=`` picks the batches ``zoo split`` assigned to a split.
    """

    def __init__(self, path: str | Path | Store):
        try:
            self.store: Store = resolve(path)
        except StorageError as error:
            raise ZooError(str(error)) from None
        # A local zoo keeps a Path (``zoo.path / "splits.json"``); a remote one is named by its URI.
        self.path = Path(self.store.name) if self.store.local else self.store.name
        try:
            if not self.store.is_file(ZOO_FILE):
                raise ZooError(f"{self.path}: not a zoo folder (no {ZOO_FILE})")
            self.info: ZooInfo = read_zoo_info(self.store)
            self.manifest: list[dict] = read_manifest(self.store)
        except ZooError:
            raise
        except (FileNotFoundError, ValueError) as error:
            raise ZooError(str(error)) from None
        config_path = self.store.display(CONFIG_FILE)
        if not self.store.is_file(CONFIG_FILE):
            raise ZooError(f"{self.path}: no {CONFIG_FILE} (zoo generate writes it beside the shards)")
        try:
            if self.store.local:
                self.config: ZooConfig = load_config(self.store.local_path(CONFIG_FILE))
            else:
                self.config = _config_from_text(self.store.read_bytes(CONFIG_FILE), config_path)
        except ConfigError as error:
            raise ZooError(str(error)) from None
        if self.info.schema_version not in READABLE_VERSIONS:
            raise ZooError(
                f"{self.path}: record schema v{self.info.schema_version}; this zoo reads v{', v'.join(map(str, READABLE_VERSIONS))}"
            )
        # The name, not the hash: a config read by newer code (new fields with defaults) hashes differently.
        if not self.info.zoo_id.startswith(f"{self.config.name}-"):
            raise ZooError(f"{config_path}: names zoo {self.config.name!r}, but {ZOO_FILE} holds {self.info.zoo_id!r}")

    def __len__(self) -> int:
        return sum(int(entry["rows"]) for entry in self.manifest)

    def __repr__(self) -> str:
        return f"Zoo({str(self.path)!r}, id={self.info.zoo_id!r}, records={len(self)})"

    @property
    def batches(self) -> tuple[int, ...]:
        """Every finished batch id (a batch that kept no pair is finished too)."""
        return tuple(sorted(int(b) for entry in self.manifest for b in entry["batches"]))

    @cached_property
    def _ordered(self) -> list[dict]:
        return ordered(self.manifest)

    @property
    def shards(self) -> list:
        """The manifest's shard files, in batch order (``Path``s; URIs for a zoo on object storage)."""
        rels = [entry["shard"] for entry in self._ordered]
        return [Path(self.store.name) / rel for rel in rels] if self.store.local else [self.store.display(r) for r in rels]

    @property
    def shard_names(self) -> list[str]:
        """The manifest's shards in batch order, as paths relative to the zoo (``data/shard-....parquet``)."""
        return [entry["shard"] for entry in self._ordered]

    @property
    def filesystem(self):
        """The ``pyarrow.fs.FileSystem`` the zoo lives on (pass it with ``shard_keys`` to any Arrow reader)."""
        return self.store.fs

    @property
    def shard_keys(self) -> list[str]:
        """The manifest's shards in batch order, as paths inside ``filesystem``."""
        return [self.store.key(entry["shard"]) for entry in self._ordered]

    @cached_property
    def signature_stats(self) -> tuple[str, ...]:
        """Column names of the signature matrices (e.g. ``mean``, ``pattern_mean:palindrome``)."""
        if not self.manifest:
            return ()
        schema = pq.read_schema(self.shard_keys[0], filesystem=self.store.fs)
        names = signature_stats_of(schema)
        width = schema.field(signature_column(schema)).type.value_type.list_size
        return tuple(names) if names else tuple(f"stat{i}" for i in range(width))

    @cached_property
    def probe_set(self) -> ProbeSet:
        """The fixed inputs every signature was computed on, from ``probe.parquet``.

        Refused when the file is missing or damaged, or when the records name another probe set.
        """
        from zoo.factory.reader import probe_from_arrow

        path = self.store.display(PROBE_FILE)
        if not self.store.is_file(PROBE_FILE):
            raise ZooError(f"{self.path}: no {PROBE_FILE} (zoo generate writes it beside the shards)")
        try:
            probe = probe_from_arrow(pq.read_table(self.store.key(PROBE_FILE), filesystem=self.store.fs))
        except (ValueError, OSError, pa.ArrowException) as error:
            raise ZooError(f"{path}: {error}") from None
        if self.manifest:
            recorded = pq.read_table(self.shard_keys[0], columns=["probe_hash"], filesystem=self.store.fs).column("probe_hash")
            if len(recorded) and recorded[0].as_py() != probe.hash:
                raise ZooError(
                    f"{path}: probe set {probe.hash[:12]} is not the one the records were fingerprinted on "
                    f"({recorded[0].as_py()[:12]})"
                )
        return probe

    def split_batches(self, split: str) -> set[int]:
        """The batches of one split: from ``splits.json`` where ``zoo split`` wrote one."""
        from zoo.export.splits import SPLITS_FILE, SplitsError, load_splits

        require_task(self, "patterns", "splits (`zoo split`)")
        if not self.store.is_file(SPLITS_FILE):
            raise ZooError(f"{self.path}: no {SPLITS_FILE}; run `zoo split {self.path}` first")
        try:
            assignment = load_splits(self.store).assignment
        except SplitsError as error:
            raise ZooError(str(error)) from None
        known = set(assignment.values())
        if split not in known:
            raise ZooError(f"unknown split {split!r}; this zoo's splits are {', '.join(sorted(known))}")
        return {int(batch) for batch, name in assignment.items() if name == split}

    def table(self, columns: Sequence[str] | None = None, split: str | None = None) -> pa.Table:
        """Every record (or one split's) as one Arrow table in the current schema."""
        table = _reading(read_records, self.store, columns=None if columns is None else list(dict.fromkeys([*columns, "batch_id"])))
        if split is not None:
            wanted = pa.array(sorted(self.split_batches(split)), pa.int64())
            table = table.filter(pc.is_in(table.column("batch_id"), value_set=wanted))
        return table if columns is None else table.select(list(columns))

    def records(self, columns: Sequence[str] | None = None, split: str | None = None) -> Iterator[dict]:
        """Stream records as dicts, shard by shard (memory holds one record batch at a time)."""
        wanted = None if split is None else pa.array(sorted(self.split_batches(split)), pa.int64())
        read = None if columns is None else list(dict.fromkeys([*columns, "batch_id"]))
        batches = iter_batches(self.store, batch_size=256, columns=read)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (ManifestError, OSError, pa.ArrowException) as error:
                raise ZooError(str(error).splitlines()[0]) from None
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("batch_id"), value_set=wanted))
            for row in batch.to_pylist():
                yield row if columns is None else {name: row[name] for name in columns}

    def to_pandas(self, columns: Sequence[str] | None = None, split: str | None = None) -> pandas.DataFrame:
        return self.table(columns, split).to_pandas()

    def to_ray_dataset(self, columns: Sequence[str] | None = None) -> Any:
        """A ``ray.data.Dataset`` over the manifest's shards (starts or joins Ray as Ray Data does)."""
        import ray.data

        if not self.manifest:
            return ray.data.from_arrow(self.table(columns))
        read = physical_columns(columns, self.info.schema_version)
        dataset = ray.data.read_parquet(self.shard_keys, filesystem=self.store.fs, columns=read)
        if self.info.schema_version < 2:
            dataset = dataset.map_batches(upgrade_table, batch_format="pyarrow")
            if columns is not None and read != list(columns):
                dataset = dataset.select_columns(list(columns))
        return dataset

    def to_hf_dataset(self, columns: Sequence[str] | None = None, split: str | None = None) -> Any:
        """An in-memory Hugging Face ``datasets.Dataset`` of the records (no cache files written)."""
        from datasets import Dataset
        from datasets.table import InMemoryTable

        table = self.table(columns, split)
        return Dataset(InMemoryTable(table.replace_schema_metadata(None)))

    def row(self, index: int, columns: Sequence[str] | None = None) -> dict:
        """Record ``index`` (0-based, in ``(batch_id, pair_index)`` order)."""
        count = len(self)
        if not 0 <= index < count:
            span = f"rows 0-{count - 1}" if count else "no rows"
            raise ZooError(f"row {index} does not exist: {self.path} holds {count} records ({span})")
        entries = self._ordered
        if any(max(a["batches"]) > min(b["batches"]) for a, b in zip(entries, entries[1:])):
            return self.table(columns).slice(index, 1).to_pylist()[0]  # interleaved shards: no shard-wise order
        start = 0
        for entry in entries:  # shards of disjoint batch ranges, in order: read only the one holding the row
            if index < start + entry["rows"]:
                table = _reading(read_shard_records, self.store, entry, columns, self.info.schema_version)
                return table.slice(index - start, 1).to_pylist()[0]
            start += entry["rows"]
        raise AssertionError("unreachable: index < len(self)")

    def load_model(self, row: int | dict, which: Which = "clean") -> nn.Module:
        """The clean or degraded model of a record (an index or a record dict) as a ``torch.nn.Module``."""
        from zoo.factory.load import load_model

        if which not in ("clean", "degraded"):
            raise ZooError(f"which must be 'clean' or 'degraded', not {which!r}")
        if self.info.schema_version == 3 and which != "clean":
            raise ZooError("a language zoo has one model per record and no degraded twin: which='clean'")
        if not isinstance(row, dict):
            weights = "weights" if self.info.schema_version == 3 else f"{which}_weights"  # v3: one model per record
            row = self.row(int(row), columns=["architecture", weights])
        return load_model(row, which)

    def verify(self) -> list[str]:
        """Every problem found (checksums, rows, schema), one line each; empty when intact."""
        return _verify(self.store)


def _config_from_text(data: bytes, where: str) -> ZooConfig:
    import yaml

    try:
        loaded = yaml.safe_load(data.decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{where}: invalid YAML") from None
    try:
        return parse_config(loaded)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _reading(read, *args, **kwargs):
    """Call a reader, turning damage it finds into a one-line ``ZooError``."""
    try:
        return read(*args, **kwargs)
    except (ValueError, OSError) as error:
        if isinstance(error, ZooError):
            raise
        raise ZooError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None


def require_task(zoo: Zoo, task: str, reader: str) -> None:
    """Refuse, in one line (``ZooError``), a zoo of another task than the ``task`` (``patterns`` or ``language``)
    that ``reader`` reads: pattern and language records have different columns, so a reader of one fails on the
    other with errors that do not say why."""
    if zoo.config.task != task:
        kind = {"patterns": "pattern"}.get
        raise ZooError(f"{zoo.path}: a {kind(zoo.config.task, zoo.config.task)} zoo; {reader} reads only {kind(task, task)} zoos")


def open(path: str | Path) -> Zoo:  # noqa: A001 (the verb users expect, as ray.data.read_* are)
    """Open a finished (or partly finished) zoo: a local folder or a ``pyarrow.fs`` URI (``s3://bucket/zoo``)."""
    return Zoo(path)


def verify(path: str | Path) -> list[str]:
    """Check every shard of a zoo against its manifest; returns the problems, one line each."""
    return _verify(path)


def generate(config: ZooConfig | str | Path | dict, out: str | Path, *, workers: int | None = None,
             quiet: bool = False) -> Zoo:
    """Generate (or resume) a zoo in ``out`` and open it.

    ``config`` is a ``ZooConfig``, a YAML path or a mapping; ``workers`` overrides
    ``runtime.workers`` (0 runs in this process without Ray).
    """
    from rich.console import Console

    from zoo.factory.runner import generate as run

    overrides = {} if workers is None else {"runtime": {"workers": workers}}
    if isinstance(config, (str, Path)):
        config = load_config(config, overrides=overrides)
    else:
        data = config.model_dump(mode="json") if isinstance(config, ZooConfig) else dict(config)
        config = parse_config(_merge(data, overrides))
    run(config, out, console=Console(quiet=quiet))
    return Zoo(out)
