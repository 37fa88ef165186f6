"""Atomic file writes: a temporary sibling, fsync, rename, fsync the folder.

Every file zoo writes goes through here, so a process killed at any moment leaves
either the old file or the new one, never half of one. Temporary names are
hidden (``.name.<pid>-<random>.tmp``) and unique per writer, so that readers and
dataset globs skip them and two writers never share one.

- ``atomic_path(path)``: a temporary path to write with any library (safetensors,
  Parquet, a CSV writer); it replaces ``path`` when the block ends without error.
- ``write_bytes_atomic``, ``write_text_atomic``, ``write_json_atomic``: the same for data in hand.
- ``keep_existing``: a writer that must not clobber a good file another writer put
  there first (shards, which two deliveries of one task may both write) links the
  new file into place, and replaces an existing one only when ``keep_existing``
  says it is not worth keeping.
- ``replace_dir(staging, target)``: a whole folder, built aside, swapped in.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (a folder: to make a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


KeepExisting = Callable[[Path], bool]


def commit_file(tmp: Path, path: Path, keep_existing: KeepExisting | None = None) -> None:
    """fsync ``tmp``, rename it over ``path``, fsync the folder.

    With ``keep_existing``, ``tmp`` is linked into place instead (no clobbering), and an
    existing ``path`` is replaced only where ``keep_existing(path)`` is false; a
    filesystem without hard links falls back to the rename.
    """
    fsync_path(tmp)
    if keep_existing is None:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except FileExistsError:
            if not keep_existing(path):
                os.replace(tmp, path)
        except OSError:
            os.replace(tmp, path)
    fsync_path(path.parent)


@contextmanager
def atomic_path(path: str | Path, keep_existing: KeepExisting | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        commit_file(tmp, path, keep_existing)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview, keep_existing: KeepExisting | None = None) -> None:
    with atomic_path(path, keep_existing) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data, indent: int | None = 2) -> None:
    """``data`` as JSON (``indent`` spaces, a final newline)."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


def replace_dir(staging: Path, target: Path) -> None:
    """Replace folder ``target`` by ``staging`` (two renames; the old one is removed after).

    Between the renames ``target`` is briefly absent; the old folder waits under a
    hidden ``.<name>-old-<random>.tmp`` name until the new one is in place.
    """
    staging.mkdir(exist_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}.tmp")
        target.rename(old)
    staging.rename(target)
    fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
