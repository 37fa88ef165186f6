"""Where a zoo lives: a local folder or any ``pyarrow.fs`` URI, behind one small interface.

``resolve(location)`` turns what a user typed (``/data/zoo``, ``file:///data/zoo``,
``s3://bucket/prefix``, ``gs://bucket/prefix``) into a ``Store``: a
``pyarrow.fs.FileSystem`` and the zoo's root inside it. Every module that touches
a zoo's files (the manifest, shards, readers, ``zoo.open``) goes through a
``Store`` with paths relative to the zoo's root, so the same code runs on a
laptop's disk and on object storage.

- Paths are relative, ``/``-separated and checked (``Store.key``): an absolute
  path, ``..``, a backslash or an empty part is refused, so no name read from a
  manifest ever reaches outside the zoo's root.
- ``write_bytes`` is atomic on both kinds of store: on a local folder a
  fsynced temporary sibling renamed into place (``zoo.atomic``); on object
  storage one whole-object PUT (an object is either absent or complete). There
  is no rename and no append on object storage, so writers that must hold there
  (the manifest's commit protocol, ``zoo.factory.manifest``) only ever create
  whole objects.
- S3: the endpoint comes from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
  for S3-compatible stores, the region from ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION``, and credentials from the AWS SDK's standard chain
  (environment, profile, instance role). They are never put in a message: a
  ``Store`` names itself by the URI as given, without its query string.
- A ``Store`` pickles (pyarrow filesystems do, without credentials taken from
  the chain), so Ray actors get the same store and use their own node's chain.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from zoo.atomic import write_bytes_atomic


class StorageError(ValueError):
    """A location that cannot be used as a zoo store, or a path that would leave it: one line."""


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` (a one-letter scheme is a Windows drive, not a URI)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum()


def _public(uri: str) -> str:
    """The URI without query or fragment (where options, and possibly secrets, go)."""
    return uri.split("?", 1)[0].split("#", 1)[0].rstrip("/")


def _s3_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    parts = urlsplit(uri)
    path = f"{parts.netloc}{parts.path}".rstrip("/")
    if parts.query:  # explicit options in the URI win over the environment
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    # Delayed open: a small object is one PutObject at close instead of a three-request multipart upload.
    options: dict = {"allow_delayed_open": True}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        endpoint_parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = endpoint_parts.netloc
        options["scheme"] = endpoint_parts.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    elif endpoint:
        options["region"] = "us-east-1"  # an S3-compatible store: no region lookup against AWS
    if "region" not in options:  # AWS itself: ask the bucket's region
        try:
            options["region"] = pafs.resolve_s3_region(parts.netloc)
        except (OSError, ValueError):
            pass
    return pafs.S3FileSystem(**options), path


@dataclass(frozen=True)
class Store:
    """A zoo's root in a filesystem. ``name`` is how messages show it (the path or URI as given)."""

    fs: pafs.FileSystem
    root: str
    name: str

    @property
    def local(self) -> bool:
        """A local folder: it has atomic rename, append and ``flock``."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def uri(self) -> str:
        """The location to hand to another process or tool (a local path stays a path)."""
        return self.root if self.local else self.name

    def key(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (relative to the root), refusing any path that would leave it."""
        if rel in ("", "."):
            return self.root
        check_relative(rel)
        return f"{self.root}/{rel}" if self.root else rel

    def display(self, rel: str = "") -> str:
        """``rel`` as messages name it: the local path as given, or the URI."""
        if not rel:
            return self.name
        if self.local:
            return str(Path(self.name) / rel)
        return f"{self.name}/{rel}"

    def local_path(self, rel: str = "") -> Path:
        """A local store's path of ``rel`` (for locks and appends, which only local folders have)."""
        if not self.local:
            raise StorageError(f"{self.display(rel)}: not a local path")
        return Path(self.key(rel))

    # ---------------------------------------------------------------- queries

    def info(self, rel: str = "") -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.key(rel))
        except OSError as error:
            raise StorageError(f"{self.display(rel)}: {_reason(error)}") from None

    def is_file(self, rel: str) -> bool:
        return self.info(rel).type == pafs.FileType.File

    def exists(self, rel: str = "") -> bool:
        return self.info(rel).type != pafs.FileType.NotFound

    def size(self, rel: str) -> int | None:
        info = self.info(rel)
        return info.size if info.type == pafs.FileType.File else None

    def list(self, rel: str = "") -> dict[str, int]:
        """Files directly inside folder ``rel``: name -> size (empty when the folder is absent)."""
        selector = pafs.FileSelector(self.key(rel), allow_not_found=True, recursive=False)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as error:
            raise StorageError(f"{self.display(rel)}: {_reason(error)}") from None
        return {posixpath.basename(i.path): i.size for i in infos if i.type == pafs.FileType.File}

    def entries(self, rel: str = "") -> list[str]:
        """Names of everything directly inside folder ``rel`` (files and folders)."""
        selector = pafs.FileSelector(self.key(rel), allow_not_found=True, recursive=False)
        try:
            return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(selector))
        except OSError as error:
            raise StorageError(f"{self.display(rel)}: {_reason(error)}") from None

    # ---------------------------------------------------------------- reading and writing

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.key(rel)) as handle:
                return handle.read()
        except FileNotFoundError:
            raise
        except OSError as error:
            raise StorageError(f"{self.display(rel)}: {_reason(error)}") from None

    def open_input(self, rel: str) -> pa.NativeFile:
        """A random-access file for ``pyarrow.parquet``."""
        return self.fs.open_input_file(self.key(rel))

    def write_bytes(self, rel: str, data: bytes | memoryview | pa.Buffer) -> None:
        """Create or replace ``rel`` atomically (readers see the old object or the new one, never a part)."""
        if self.local:
            write_bytes_atomic(self.key(rel), data)
            return
        try:
            with self.fs.open_output_stream(self.key(rel)) as handle:
                handle.write(data)
        except OSError as error:
            raise StorageError(f"{self.display(rel)}: {_reason(error)}") from None

    def delete(self, rel: str) -> None:
        """Remove file ``rel`` if it is there."""
        try:
            self.fs.delete_file(self.key(rel))
        except FileNotFoundError:
            pass
        except OSError as error:
            if self.exists(rel):
                raise StorageError(f"{self.display(rel)}: {_reason(error)}") from None

    def move(self, rel: str, to: str) -> None:
        """Rename on a local folder; copy then delete on object storage."""
        self.makedirs(posixpath.dirname(to))
        if self.local:
            os.replace(self.key(rel), self.key(to))
        else:
            self.fs.copy_file(self.key(rel), self.key(to))
            self.delete(rel)

    def makedirs(self, rel: str = "") -> None:
        """Create folder ``rel`` (a no-op on object storage, where folders are prefixes)."""
        if self.local:
            Path(self.key(rel)).mkdir(parents=True, exist_ok=True)


def check_relative(rel: str) -> None:
    """Refuse a path that is absolute, climbs (``..``), has an empty part or a backslash."""
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(part in ("", ".", "..") for part in parts)
        or is_uri(rel)
        or (len(parts[0]) >= 2 and parts[0][1] == ":")
    ):
        raise StorageError(f"{rel!r}: not a path inside the zoo")


def _reason(error: BaseException) -> str:
    """An error's first line, without anything that could be a credential."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:300]


def resolve(location: str | Path | Store) -> Store:
    """The ``Store`` of a local path or a ``pyarrow.fs`` URI (``s3://``, ``gs://``, ``file://``, ...)."""
    if isinstance(location, Store):
        return location
    text = os.fspath(location)
    if not is_uri(text):
        root = os.path.abspath(os.path.expanduser(text))
        return Store(pafs.LocalFileSystem(), root.rstrip("/") or "/", str(Path(text)))
    name = _public(text)
    scheme = text.split("://", 1)[0].lower()
    try:
        if scheme in ("s3", "s3a"):
            fs, root = _s3_filesystem(text if scheme == "s3" else "s3" + text[3:])
        else:
            fs, root = pafs.FileSystem.from_uri(text)
            root = root.rstrip("/")
    except (OSError, ValueError, pa.ArrowException) as error:
        raise StorageError(f"{name}: cannot open ({_reason(error)})") from None
    if isinstance(fs, pafs.LocalFileSystem):
        return Store(fs, root or "/", root or "/")
    if not root:
        raise StorageError(f"{name}: give a bucket (and a prefix), e.g. s3://bucket/zoo")
    return Store(fs, root, name)
