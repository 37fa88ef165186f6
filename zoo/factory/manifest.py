"""The manifest: which batches are finished, in which shard, with which checksum.

The commit protocol (it must hold on object storage, where there is no rename
and no append, as well as on a local folder):

1. ``zoo.json`` says which zoo a location holds; it is written once, whole.
2. A shard is one immutable file named by its batches and the hash of its
   records (``zoo.factory.shards``); it is complete before anything names it.
3. A finished shard is then committed by one small manifest entry naming it,
   with its batches, row count, byte size and sha256. On object storage each
   entry is its own immutable object, ``manifest/<shard>.json`` (one whole PUT:
   absent or complete, never torn, never appended to); on a local folder it is
   one fsynced line appended to ``manifest.jsonl`` (a kill leaves at most a torn
   last line, dropped on the next open). The manifest is the union of both, so
   a zoo written by either layout, or copied from a disk to a bucket and resumed
   there, reads the same.

Why this holds: an entry is the only proof that a batch is done and is written
only after its shard is durable, so a kill at any moment loses nothing finished.
An entry's name is a function of its shard's name, which is a function of the
records, so a retried task, a duplicate delivery or two racing drivers of the
same zoo write the same shard and the same entry again: the union holds it once,
never half of it. Nothing is ever renamed or appended to on object storage.

Trust, but check: an entry naming anything but a shard inside ``data/`` (a
changed name, ``../../x``, an absolute path) is never opened and never used to
delete anything. Before a run resumes, ``Manifest.heal`` checks every entry
against its shard (size and sha256): an entry whose shard is missing,
truncated, corrupt, or whose batches another entry already holds, is set aside
(its text kept in ``manifest-rejected.jsonl``) and its batches are computed
again, the task being deterministic. A shard is never deleted because of what
the manifest says: an unlisted shard is either re-listed by the rerun (same
records, same name) or, once every batch of its range is listed, moved to
``orphans/``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyarrow.fs import FileType

from zoo.factory.schema import SCHEMA_VERSION
from zoo.factory.shards import DATA_DIR, SHARD_NAME, ShardInfo, parse_shard_name, store_sha256, stored_shards
from zoo.storage import Store, StorageError, resolve

ZOO_FILE = "zoo.json"
LOCK_FILE = ".zoo.lock"
"""A local zoo's lock: created empty by the first run, never written, replaced or deleted (``flock`` on it)."""
MANIFEST_FILE = "manifest.jsonl"
"""The local layout's manifest: one line per finished shard."""
MANIFEST_DIR = "manifest"
"""The object-storage layout's manifest: one immutable ``<shard>.json`` per finished shard."""
REJECTED_FILE = "manifest-rejected.jsonl"
"""Entries set aside by a heal (kept for inspection, never read as the manifest)."""
ORPHANS_DIR = "orphans"
"""Unlisted shards whose batches are all listed elsewhere are moved here, never deleted."""
CONFIG_FILE = "config.yaml"
"""The resolved config of the latest run, beside the shards."""
PROBE_FILE = "probe.parquet"
"""The zoo's probe set, beside the shards."""
ENTRY_KEYS = ("batches", "shard", "rows", "sha256", "bytes", "content")
_HEX64 = re.compile(r"[0-9a-f]{64}")


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


def read_zoo_info(out_dir: str | Path | Store) -> ZooInfo:
    """The folder's zoo identity; a one-line ``FileNotFoundError`` if it has none."""
    store = resolve(out_dir)
    if not store.is_file(ZOO_FILE):
        raise FileNotFoundError(f"{store.name}: not a zoo folder (no {ZOO_FILE})")
    try:
        data = json.loads(store.read_bytes(ZOO_FILE))
        return ZooInfo(str(data["zoo_id"]), str(data["config_hash"]), int(data["schema_version"]), str(data["created"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ZooMismatchError(f"{store.display(ZOO_FILE)}: unreadable ({type(error).__name__}: {error})") from None


def _first_start_leftover(name: str) -> bool:
    """What a first start killed before ``zoo.json`` was in place can leave (the lock file, the
    temporary ``.zoo.json.<pid>-<random>.tmp``): a folder holding only these is still empty."""
    return name == LOCK_FILE or (name.startswith(f".{ZOO_FILE}.") and name.endswith(".tmp"))


def _write_zoo_info(store: Store, info: ZooInfo) -> None:
    store.write_bytes(ZOO_FILE, (json.dumps(asdict(info), indent=2) + "\n").encode())


# ---------------------------------------------------------------- entries


def entry_problem(entry: object) -> str | None:
    """Why ``entry`` is not a well-formed manifest entry naming a shard inside the zoo, or None."""
    if not isinstance(entry, dict) or any(key not in entry for key in ENTRY_KEYS):
        return f"not a manifest entry (needs {', '.join(ENTRY_KEYS)})"
    shard = entry["shard"]
    name = shard if isinstance(shard, str) and "/" not in shard else None  # a shard at the root (old layout)
    parsed = parse_shard_name(shard) or (parse_shard_name(f"{DATA_DIR}/{name}") if name else None)
    if parsed is None:
        return f"shard {str(shard)[:120]!r} is not a shard name inside {DATA_DIR}/ (shard-LO-HI-HASH.parquet)"
    batches = entry["batches"]
    if not isinstance(batches, list) or not batches or not all(type(b) is int for b in batches):
        return "batches must be a non-empty list of integers"
    lo, hi, prefix = parsed
    if min(batches) != lo or max(batches) != hi:
        return f"batches {min(batches)}-{max(batches)} do not match shard name {shard}"
    for key in ("rows", "bytes"):
        if type(entry[key]) is not int or entry[key] < 0:
            return f"{key} must be a non-negative integer"
    if not (isinstance(entry["sha256"], str) and _HEX64.fullmatch(entry["sha256"])):
        return "sha256 must be 64 hex digits"
    if not (isinstance(entry["content"], str) and _HEX64.fullmatch(entry["content"])) or entry["content"][:12] != prefix:
        return f"content hash does not match shard name {shard}"
    return None


def entry_object(shard: str) -> str:
    """The manifest object that commits shard ``shard`` (object layout)."""
    return f"{MANIFEST_DIR}/{posixpath.basename(shard).removesuffix('.parquet')}.json"


def _encode_entry(entry: dict) -> bytes:
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode()


@dataclass
class Listed:
    """One entry as found: where (``manifest.jsonl:3``, ``manifest/x.json``), its text, the parsed entry or why not."""

    where: str
    raw: bytes
    entry: dict | None
    problem: str | None


def _read_jsonl(store: Store) -> tuple[list[Listed], int | None]:
    """Lines of ``manifest.jsonl``, and the byte length of the valid prefix if a torn last line follows it.

    Only the final line may be unparseable (a kill mid-append); an unparseable line
    anywhere else is a ``ManifestError`` naming the line."""
    try:
        raw = store.read_bytes(MANIFEST_FILE)
    except FileNotFoundError:
        return [], None
    lines = raw.split(b"\n")
    found: list[Listed] = []
    good = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                entry = json.loads(line.decode())
            except (ValueError, UnicodeDecodeError) as error:
                if any(rest.strip() for rest in lines[number:]):
                    raise ManifestError(f"{store.display(MANIFEST_FILE)}:{number}: damaged line ({error})") from None
                return found, good
            found.append(Listed(f"{MANIFEST_FILE}:{number}", line, entry, entry_problem(entry)))
        good += len(line) + 1
    complete = raw.endswith(b"\n") or not raw
    return found, None if complete else len(raw)


def _read_objects(store: Store) -> list[Listed]:
    """The entries of ``manifest/`` (object layout), in name order."""
    found = []
    for name in sorted(store.list(MANIFEST_DIR)):
        if not name.endswith(".json"):
            continue
        rel = f"{MANIFEST_DIR}/{name}"
        try:
            raw = store.read_bytes(rel)
        except FileNotFoundError:  # set aside by a heal while we listed
            continue
        try:
            entry = json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as error:
            found.append(Listed(rel, raw, None, f"unreadable ({error})"))
            continue
        problem = entry_problem(entry)
        if problem is None and entry_object(entry["shard"]) != rel:
            problem = f"names shard {entry['shard']}, which is committed by {entry_object(entry['shard'])}"
        found.append(Listed(rel, raw, entry, problem))
    return found


def read_listing(out_dir: str | Path | Store) -> list[Listed]:
    """Every entry of the manifest (both layouts), well-formed or not, in commit order."""
    store = resolve(out_dir)
    return _read_jsonl(store)[0] + _read_objects(store)


def read_manifest(out_dir: str | Path | Store) -> list[dict]:
    """The manifest's entries, read-only (a torn last line is ignored, not removed).

    An entry that does not name a shard inside the zoo is a ``ManifestError`` (one
    line, naming it): a reader never opens a path a manifest made up."""
    store = resolve(out_dir)
    entries = []
    for item in read_listing(store):
        if item.problem is not None:
            raise ManifestError(f"{store.display(item.where)}: {item.problem}; `zoo verify --repair` heals it")
        entries.append(item.entry)
    return entries


def shard_rel(entry: dict) -> str:
    """The store path of an entry's shard (checked: inside the zoo)."""
    if entry_problem(entry) is not None:
        raise ManifestError(f"{str(entry.get('shard'))[:120]!r}: not a shard inside the zoo")
    return entry["shard"]


def _repair_jsonl(store: Store, valid_length: int) -> None:
    """Drop a torn last line, or terminate a complete one, so the next append starts a fresh line."""
    if not store.local:
        raw = store.read_bytes(MANIFEST_FILE)
        store.write_bytes(MANIFEST_FILE, raw[:valid_length].rstrip(b"\n") + b"\n" if valid_length else b"")
        return
    path = store.local_path(MANIFEST_FILE)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        if valid_length < size:
            handle.truncate(valid_length)
        else:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def check_entry(store: Store, entry: dict, sizes: dict[str, int] | None = None, checksum: bool = True) -> str | None:
    """Why a well-formed entry's shard does not match it (missing, size, sha256), or None."""
    rel = entry["shard"]
    size = sizes.get(rel) if sizes is not None else store.size(rel)
    if size is None:
        return "shard missing"
    if size != entry["bytes"]:
        return f"shard has {size} bytes, the entry {entry['bytes']}"
    if checksum and store_sha256(store, rel) != entry["sha256"]:
        return "shard's sha256 differs from the entry"
    return None


def _sizes(store: Store) -> dict[str, int]:
    """Sizes of shard files at the root (old layout) and in ``data/``, by manifest name."""
    root = {name: size for name, size in store.list("").items() if SHARD_NAME.fullmatch(name)}
    return {**root, **stored_shards(store)}


class Manifest:
    """The finished batches of one zoo; the only writer of its manifest.

    One process (the driver) owns it. ``layout``: ``"jsonl"`` (local folders:
    fsynced appends to ``manifest.jsonl``) or ``"objects"`` (object storage: one
    ``manifest/<shard>.json`` per shard); both are read, whatever is written.
    """

    def __init__(self, store: Store, info: ZooInfo, listing: list[Listed], layout: str):
        self.store = store
        self.info = info
        self.layout = layout
        self._listing = listing
        self._entries: list[dict] = []
        self._by_batch: dict[int, str] = {}
        for item in listing:
            if item.problem is None:
                self._take(item.entry)

    def _take(self, entry: dict) -> None:
        self._entries.append(entry)
        for batch in entry["batches"]:
            self._by_batch.setdefault(int(batch), entry["shard"])

    @property
    def out_dir(self) -> str:
        return self.store.name

    @property
    def path(self) -> Path | str:
        return self.store.local_path(MANIFEST_FILE) if self.store.local else self.store.display(MANIFEST_FILE)

    @classmethod
    def open(
        cls, out_dir: str | Path | Store, *, zoo_id: str, config_hash: str, layout: str | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> Manifest:
        """Open a zoo for writing, creating it (and ``zoo.json``) when new.

        Refuses a folder holding another zoo, or holding files but no ``zoo.json``.
        """
        store = resolve(out_dir)
        store.makedirs()
        info = cls._identity(store, zoo_id, config_hash, schema_version, create=True)
        lines, valid_length = _read_jsonl(store)
        if valid_length is not None:
            _repair_jsonl(store, valid_length)
        layout = layout or ("jsonl" if store.local else "objects")
        if layout not in ("jsonl", "objects"):
            raise ValueError(f"unknown manifest layout {layout!r}")
        return cls(store, info, lines + _read_objects(store), layout)

    @classmethod
    def check(cls, out_dir: str | Path | Store, *, zoo_id: str, config_hash: str, schema_version: int = SCHEMA_VERSION) -> None:
        """Refuse, writing nothing, a location ``open`` would refuse: a file, a folder holding another
        zoo, or one holding files but no ``zoo.json`` (a run checks this before it takes the lock)."""
        cls._identity(resolve(out_dir), zoo_id, config_hash, schema_version, create=False)

    @staticmethod
    def _identity(store: Store, zoo_id: str, config_hash: str, schema_version: int, *, create: bool) -> ZooInfo | None:
        if store.info().type == FileType.File:
            raise ZooMismatchError(f"{store.name}: is a file, not a folder (--out names the zoo's folder)")
        if not store.is_file(ZOO_FILE):
            others = [name for name in store.entries("") if not _first_start_leftover(name)]
            if not others:
                if not create:
                    return None
                created = datetime.now(timezone.utc).isoformat(timespec="seconds")
                info = ZooInfo(zoo_id, config_hash, schema_version, created)
                _write_zoo_info(store, info)
                return info
            if not store.is_file(ZOO_FILE):  # not one a racing driver of this zoo wrote meanwhile
                raise ZooMismatchError(
                    f"{store.name}: not empty and not a zoo folder (no {ZOO_FILE}; holds {', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''})"
                )
        info = read_zoo_info(store)
        if info.config_hash != config_hash or info.zoo_id != zoo_id:
            raise ZooMismatchError(
                f"{store.name}: holds zoo {info.zoo_id!r} with config {info.config_hash}, "
                f"not zoo {zoo_id!r} with config {config_hash}; use another folder"
            )
        if info.schema_version != schema_version:
            raise ZooMismatchError(
                f"{store.name}: written with record schema v{info.schema_version}, this zoo writes v{schema_version}"
            )
        return info

    def done_batches(self) -> set[int]:
        return set(self._by_batch)

    def entries(self) -> list[dict]:
        return [dict(entry) for entry in self._entries]

    # ---------------------------------------------------------------- healing

    def heal(self, checksum: bool = True) -> list[str]:
        """Check every entry against its shard and mend the manifest; returns one line per change.

        - An entry that is malformed, whose shard is missing or does not hold the
          entry's records (truncated, corrupt), or whose batches another entry
          already holds, is set aside: its batches become pending again.
        - An entry whose shard holds exactly its records but whose size or sha256
          differ (the entry was edited, or two racing writers stored the same
          records with different timings) is re-described from the shard.

        Writes nothing when every entry holds. Never deletes or moves a shard."""
        sizes = _sizes(self.store)
        kept: list[Listed] = []
        dropped: list[tuple[Listed, str]] = []
        fixed: list[Listed] = []
        owner: dict[int, str] = {}
        checked: dict[str, tuple[str | None, dict | None]] = {}
        for item in self._listing:
            problem = item.problem
            if problem is None:
                shard = item.entry["shard"]
                if shard not in checked:
                    checked[shard] = self._check(item.entry, sizes, checksum)
                problem, replacement = checked[shard]
                if problem is None and replacement is not None:
                    fixed.append(item)
                    item = Listed(item.where, _encode_entry(replacement), replacement, None)
            if problem is None:
                taken = sorted({int(b) for b in item.entry["batches"]} & owner.keys())
                if taken:
                    problem = f"batches {taken[:5]} already listed for {owner[taken[0]]}"
            if problem is not None:
                dropped.append((item, problem))
                continue
            kept.append(item)
            for batch in item.entry["batches"]:
                owner[int(batch)] = item.entry["shard"]
        if not dropped and not fixed:
            return []
        self._set_aside(kept, [item for item, _ in dropped], fixed)
        self._listing = kept
        self._entries, self._by_batch = [], {}
        for item in kept:
            self._take(item.entry)
        return [
            *(f"{self.store.display(item.where)}: size or sha256 differ from its intact shard; re-described" for item in fixed),
            *(f"{self.store.display(item.where)}: {problem}; set aside, its batches run again" for item, problem in dropped),
        ]

    def _check(self, entry: dict, sizes: dict[str, int], checksum: bool) -> tuple[str | None, dict | None]:
        """``(problem, None)`` for an entry that does not hold; ``(None, entry')`` for one to re-describe."""
        problem = check_entry(self.store, entry, sizes, checksum)
        if problem is None or problem == "shard missing":
            return problem, None
        from zoo.factory.shards import holds_records, read_shard_bytes

        data = read_shard_bytes(self.store, entry["shard"])
        if data is None or not holds_records(data, entry["content"]):
            return f"{problem} (the shard does not hold the entry's records)", None
        import hashlib

        import pyarrow as pa
        import pyarrow.parquet as pq

        if pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows != entry["rows"]:
            return f"{problem} (and its row count differs)", None
        return None, dict(entry, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    def _set_aside(self, kept: list[Listed], dropped: list[Listed], fixed: list[Listed]) -> None:
        """Keep the old text of dropped and re-described entries in ``manifest-rejected.jsonl``, then
        rewrite the manifest: ``manifest.jsonl`` whole, entry objects one by one."""
        try:
            previous = self.store.read_bytes(REJECTED_FILE)
        except FileNotFoundError:
            previous = b""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        lines = [
            json.dumps({"set_aside": stamp, "from": item.where, "text": item.raw.decode("utf-8", "replace").strip()})
            for item in [*dropped, *fixed]
        ]
        self.store.write_bytes(REJECTED_FILE, previous + "".join(line + "\n" for line in lines).encode())
        if any(item.where.startswith(f"{MANIFEST_FILE}:") for item in [*dropped, *fixed]):
            text = b"".join(item.raw.strip() + b"\n" for item in kept if item.where.startswith(f"{MANIFEST_FILE}:"))
            self.store.write_bytes(MANIFEST_FILE, text)
        for item in kept:
            if item.where.startswith(f"{MANIFEST_DIR}/") and any(old.where == item.where for old in fixed):
                self.store.write_bytes(item.where, item.raw)
        for item in dropped:
            if item.where.startswith(f"{MANIFEST_DIR}/") and not any(k.where == item.where for k in kept):
                self.store.delete(item.where)

    def sweep(self) -> list[str]:
        """Move to ``orphans/`` each unlisted shard in ``data/`` whose batch range is wholly listed (it is
        redundant: every one of its batches has a checked shard). Returns the shards moved."""
        listed = {entry["shard"] for entry in self._entries}
        moved = []
        for rel in sorted(stored_shards(self.store)):
            parsed = parse_shard_name(rel)
            if rel in listed or parsed is None:
                continue
            lo, hi, _ = parsed
            if all(batch in self._by_batch for batch in range(lo, hi + 1)):
                self.store.move(rel, f"{ORPHANS_DIR}/{posixpath.basename(rel)}")
                moved.append(rel)
        return moved

    # ---------------------------------------------------------------- committing

    def add(self, info: ShardInfo) -> bool:
        """Commit a durable shard; True if an entry was written.

        Idempotent: a shard whose batches are all listed already (a retried or
        duplicated delivery) is skipped, as is one that overlaps listed batches
        (its file stays; ``sweep`` moves it aside once it is redundant).
        """
        if any(b in self._by_batch for b in info.batches):
            return False
        entry = info.to_entry()
        problem = entry_problem(entry)
        if problem is not None:
            raise ManifestError(f"refusing to list {info.name}: {problem}")
        data = _encode_entry(entry)
        if self.layout == "objects":
            self.store.write_bytes(entry_object(info.name), data)
            where = entry_object(info.name)
        else:
            self._append(data)
            where = f"{MANIFEST_FILE}:+"
        self._listing.append(Listed(where, data, entry, None))
        self._take(entry)
        return True

    def _append(self, line: bytes) -> None:
        if not self.store.local:  # an old-layout zoo on object storage: rewrite the whole object
            try:
                previous = self.store.read_bytes(MANIFEST_FILE)
            except FileNotFoundError:
                previous = b""
            self.store.write_bytes(MANIFEST_FILE, previous + line)
            return
        fd = os.open(self.store.local_path(MANIFEST_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_stale(out_dir: str | Path | Store) -> list[str]:
    """Remove leftovers of a killed run: temporary files (``*.tmp``) of the zoo folder and its ``data/``.

    Shards are never removed here, listed or not: an unlisted one is re-listed by
    the rerun that computes the same records, or moved aside by ``Manifest.sweep``.
    Call it before a run starts writing, never while one does (it would delete
    that run's temporary files). Object storage has no temporary files.
    """
    store = resolve(out_dir)
    if not store.local or not store.local_path().is_dir():
        return []
    from zoo.atomic import fsync_path

    root = store.local_path()
    stale = [p for folder in (root, root / DATA_DIR, root / MANIFEST_DIR) for p in folder.glob("*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    for folder in {path.parent for path in stale}:
        fsync_path(folder)
    return sorted(str(p.relative_to(root)) for p in stale)


__all__ = [
    "CONFIG_FILE", "ENTRY_KEYS", "LOCK_FILE", "MANIFEST_DIR", "MANIFEST_FILE", "ORPHANS_DIR", "PROBE_FILE", "REJECTED_FILE",
    "ZOO_FILE", "Listed", "Manifest", "ManifestError", "StorageError", "ZooInfo", "ZooMismatchError",
    "check_entry", "clean_stale", "entry_object", "entry_problem", "read_listing", "read_manifest",
    "read_zoo_info", "shard_rel",
]
