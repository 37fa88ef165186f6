"""Upload a zoo folder to a Hugging Face dataset repository, resumably.

What goes up: the card (``README.md``), ``config.yaml``, ``zoo.json``,
``probe.parquet``, ``splits.json`` and the data files the card lists: the split
files when the zoo was split (they hold every record exactly once, so the shards
would only double the upload; ``with_shards`` adds them and the manifest), the
shards and ``manifest.jsonl`` otherwise.

The plan compares the local files with the repository's listing (LFS files by
sha256, plain git files by blob id), so a rerun after an interruption uploads only
what is missing or changed. Data files go up in commits of at most
``files_per_commit`` files; the small metadata files (card last) go in a final
commit, so the card never points at files that are not there yet.

The token comes from ``huggingface_hub.get_token()`` (``HF_TOKEN`` or the login
file) and is checked before anything else; it is never printed, and any error
text that reaches the user has it masked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zoo.export.card import CARD_FILE, card_data_files, data_files
from zoo.export.common import CONFIG_FILE, PROBE_FILE, ExportError, open_zoo
from zoo.export.splits import SPLITS_FILE, load_splits
from zoo.factory.manifest import MANIFEST_FILE, ZOO_FILE
from zoo.storage import Store

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
TOKEN_SHAPE = re.compile(r"^hf_[A-Za-z0-9_]{20,}$")
FILES_PER_COMMIT = 50
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"


class PublishError(ExportError):
    """A publish that cannot start: bad repo id, no or malformed token, offline, local files not ready."""


@dataclass(frozen=True)
class LocalFile:
    """A file to publish, with the two hashes the Hub may report for it.

    ``local_path`` is a ``Path`` for a zoo in a folder, the URI for one on object storage
    (read through ``store``); ``data`` holds a file made for the upload (the manifest of a
    zoo on object storage, as one ``manifest.jsonl``)."""

    path_in_repo: str
    local_path: Path | str
    size: int
    sha256: str
    git_sha1: str
    metadata: bool = False
    store: Store | None = field(default=None, compare=False, repr=False)
    data: bytes | None = field(default=None, compare=False, repr=False)

    def source(self):
        """What ``CommitOperationAdd`` uploads: a path, the bytes, or an open file on the store."""
        if self.data is not None:
            return self.data
        if self.store is None or self.store.local:
            return str(self.local_path)
        return io.BufferedReader(self.store.open_input(self.path_in_repo))  # the Hub client takes BufferedIOBase


@dataclass(frozen=True)
class RemoteFile:
    """One entry of the repository's file listing (``HfApi.list_repo_tree``): LFS files carry a sha256."""

    path: str
    size: int
    sha256: str | None = None
    blob_id: str | None = None


@dataclass
class UploadPlan:
    """What a publish does: files already there, the commits to make, remote data files no longer local."""

    repo_id: str
    present: list[LocalFile] = field(default_factory=list)
    commits: list[list[LocalFile]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    delete_stale: bool = False
    remote_checked: bool = True
    remote_note: str = ""

    @property
    def uploads(self) -> list[LocalFile]:
        return [f for commit in self.commits for f in commit]

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.uploads)


def hashes(path: Path) -> tuple[str, str]:
    """``(sha256, git blob sha1)`` of a file, read once."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def _digests(blocks: Iterable[bytes], size: int) -> tuple[str, str]:
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode())
    for block in blocks:
        sha256.update(block)
        sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def _local(store: Store, relative: str, metadata: bool) -> LocalFile:
    """A zoo file to publish, hashed where it lies (a folder or object storage), read once."""
    if store.local:
        path = Path(store.display(relative))
        return LocalFile(relative, path, path.stat().st_size, *hashes(path), metadata, store)
    size = store.size(relative)
    if size is None:
        raise PublishError(f"{store.display(relative)}: missing")
    with store.fs.open_input_stream(store.key(relative)) as handle:
        digests = _digests(iter(lambda: handle.read(1 << 20), b""), size)
    return LocalFile(relative, store.display(relative), size, *digests, metadata, store)


def _made(store: Store, relative: str, data: bytes) -> LocalFile:
    return LocalFile(relative, store.display(relative), len(data), *_digests([data], len(data)), True, store, data)


def _is_data_path(path: str) -> bool:
    return path.endswith(".parquet") and (path.startswith("splits/") or path.startswith("data/shard-"))


def is_same(local: LocalFile, remote: RemoteFile) -> bool:
    if remote.sha256:
        return remote.sha256 == local.sha256
    if remote.blob_id:
        return remote.blob_id == local.git_sha1
    return False


def plan_upload(
    local: Iterable[LocalFile],
    remote: Iterable[RemoteFile],
    *,
    repo_id: str = "",
    files_per_commit: int = FILES_PER_COMMIT,
    delete_stale: bool = False,
) -> UploadPlan:
    """Which local files are missing or changed in the repository, and how they are chunked into commits.

    Data files, in path order, fill commits of at most ``files_per_commit`` files;
    metadata files that need uploading make one last commit, the card at its end.
    Remote data files (``splits/**.parquet``, ``data/shard-*.parquet``) absent locally
    are ``stale``: left alone unless ``delete_stale``, in which case the final
    commit deletes them.
    """
    if files_per_commit < 1:
        raise PublishError(f"--files-per-commit must be at least 1, not {files_per_commit}")
    remote_by_path = {r.path: r for r in remote}
    local = list(local)
    plan = UploadPlan(repo_id, delete_stale=delete_stale)
    todo_data, todo_meta = [], []
    for item in sorted(local, key=lambda f: f.path_in_repo):
        there = remote_by_path.get(item.path_in_repo)
        if there is not None and is_same(item, there):
            plan.present.append(item)
        elif item.metadata:
            todo_meta.append(item)
        else:
            todo_data.append(item)
    plan.commits = [todo_data[i : i + files_per_commit] for i in range(0, len(todo_data), files_per_commit)]
    local_paths = {f.path_in_repo for f in local}
    plan.stale = sorted(p for p in remote_by_path if _is_data_path(p) and p not in local_paths)
    if todo_meta or (delete_stale and plan.stale):
        todo_meta.sort(key=lambda f: (f.path_in_repo == CARD_FILE, f.path_in_repo))
        for i in range(0, max(len(todo_meta), 1), files_per_commit):
            plan.commits.append(todo_meta[i : i + files_per_commit])
    return plan


def local_files(zoo_dir: str | Path, *, with_shards: bool = False) -> list[LocalFile]:
    """The files a publish uploads, after checking the zoo verifies and the card lists its data files."""
    folder = open_zoo(zoo_dir, task="zoo publish")
    store, root = folder.store, folder.path
    if not store.is_file(CARD_FILE):
        raise PublishError(f"{root}: no {CARD_FILE}; run `zoo card {root}` first")
    expected = data_files(folder)
    if card_data_files(store.read_bytes(CARD_FILE).decode(errors="replace")) != expected:
        raise PublishError(f"{store.display(CARD_FILE)}: lists other data files than the zoo has; rerun `zoo card {root}`")
    for name in (CONFIG_FILE, PROBE_FILE):
        if not store.is_file(name):
            raise PublishError(f"{root}: no {name} (zoo generate writes it)")
    meta = [ZOO_FILE, CONFIG_FILE, PROBE_FILE, CARD_FILE]
    split = store.is_file(SPLITS_FILE)
    data = [p for paths in expected.values() for p in paths]
    if split:
        meta.append(SPLITS_FILE)
    made = []
    if not split or with_shards:
        if store.is_file(MANIFEST_FILE) or store.local:
            meta.append(MANIFEST_FILE)
        else:  # the object layout (one entry per shard): the Hub gets the same entries as one manifest.jsonl
            made.append(_made(store, MANIFEST_FILE, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in folder.manifest).encode()))
        data += [name for name in folder.shard_names if name not in data]
    files = [_local(store, name, True) for name in meta] + made + [_local(store, name, False) for name in data]
    if split:
        listed = {f["path"]: f["sha256"] for entries in load_splits(store).files.values() for f in entries}
        for item in files:
            if item.path_in_repo in listed and listed[item.path_in_repo] != item.sha256:
                raise PublishError(f"{item.local_path}: differs from {SPLITS_FILE}; rerun `zoo split {root}`")
    return files


def redact(text: str, token: str | None) -> str:
    return text.replace(token, "hf_***") if token else text


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def resolve_token() -> str:
    """The Hugging Face token, or ``PublishError`` (never showing it) when it is missing or malformed."""
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception as error:  # an OIDC exchange that failed, say
        raise PublishError(f"could not get a Hugging Face token ({type(error).__name__}); {LOGIN_HINT}") from None
    if not token:
        raise PublishError(f"no Hugging Face token: {LOGIN_HINT}")
    if not os.environ.get("HF_OIDC_RESOURCE") and not TOKEN_SHAPE.match(token):
        raise PublishError(f"the Hugging Face token is malformed (tokens look like hf_...): {LOGIN_HINT}")
    return token


def remote_listing(api, repo_id: str) -> list[RemoteFile] | None:
    """The repository's files, [] if it does not exist yet."""
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = list(api.list_repo_tree(repo_id, repo_type="dataset", recursive=True))
    except RepositoryNotFoundError:
        return []
    return [
        RemoteFile(e.path, e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
        for e in entries
        if isinstance(e, RepoFile)
    ]


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id or ""):
        raise PublishError(f"--repo-id must look like USER/NAME, not {repo_id!r}")


def plan_publish(
    zoo_dir: str | Path,
    repo_id: str,
    *,
    files_per_commit: int = FILES_PER_COMMIT,
    with_shards: bool = False,
    delete_stale: bool = False,
    read_remote: bool = False,
) -> UploadPlan:
    """The dry run: the plan of a publish, made without the network and without writing anything.

    By default (and always for ``zoo publish --dry-run``) the repository is not read:
    the remote is taken as empty, so the plan is a full upload and says so; a real
    publish then uploads only what is missing. ``read_remote=True`` lists the
    repository instead (unless ``HF_HUB_OFFLINE``); when the listing fails, the remote
    is taken as empty and the plan says so.
    """
    check_repo_id(repo_id)
    files = local_files(zoo_dir, with_shards=with_shards)
    remote = []
    if not read_remote:
        note = (
            "the repository was not read (a dry run makes no network calls): planning a full upload; "
            "a publish uploads only what is missing or changed"
        )
    else:
        note = "offline: the repository was not read; planning a full upload"
    if read_remote and not _offline():
        from huggingface_hub import HfApi, get_token

        token = None
        try:
            token = get_token()
            listed = remote_listing(HfApi(token=token), repo_id)
            remote, note = listed, ""
        except Exception as error:
            note = f"the repository could not be read ({_one_line(f'{type(error).__name__}: {error}', token)}); planning a full upload"
    plan = plan_upload(files, remote, repo_id=repo_id, files_per_commit=files_per_commit, delete_stale=delete_stale)
    plan.remote_checked, plan.remote_note = not note, note
    return plan


class UploadFailed(RuntimeError):
    """The Hub refused or dropped a commit; rerunning uploads what is still missing."""


def publish(
    zoo_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    files_per_commit: int = FILES_PER_COMMIT,
    with_shards: bool = False,
    delete_stale: bool = False,
    log: Callable[[str], None] = print,
    api=None,
) -> UploadPlan:
    """Create the repository if needed and upload what is missing, commit by commit.

    ``api`` stands in for ``huggingface_hub.HfApi(token=...)`` (another endpoint,
    a test double); the token is still required and checked first.
    """
    check_repo_id(repo_id)
    token = resolve_token()
    if api is None and _offline():
        raise PublishError("HF_HUB_OFFLINE is set: nothing can be uploaded (--dry-run plans without the network)")
    files = local_files(zoo_dir, with_shards=with_shards)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token) if api is None else api
    try:
        user = api.whoami()
    except Exception as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, HfHubHTTPError) and status in (401, 403):
            raise PublishError(f"the Hub rejected the Hugging Face token ({status}): {LOGIN_HINT}") from None
        raise UploadFailed(_one_line(f"could not reach the Hub ({type(error).__name__}: {error})", token)) from None
    done = 0
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        plan = plan_upload(
            files, remote_listing(api, repo_id), repo_id=repo_id, files_per_commit=files_per_commit, delete_stale=delete_stale
        )
        log(
            f"{repo_id} (as {user.get('name', '?')}): {len(plan.present)} files already there, "
            f"{len(plan.uploads)} to upload in {len(plan.commits)} commits"
        )
        for i, commit in enumerate(plan.commits, start=1):
            operations = [CommitOperationAdd(f.path_in_repo, f.source()) for f in commit]
            if i == len(plan.commits) and delete_stale:
                operations += [CommitOperationDelete(path) for path in plan.stale]
            kind = "metadata and card" if commit and commit[0].metadata else "data files"
            api.create_commit(
                repo_id,
                operations=operations,
                commit_message=f"zoo publish: {kind} ({i}/{len(plan.commits)})",
                repo_type="dataset",
            )
            done = i
            log(f"commit {i}/{len(plan.commits)}: {len(commit)} files, {sum(f.size for f in commit):,} bytes")
    except Exception as error:
        message = _one_line(f"{type(error).__name__}: {error}", token)
        raise UploadFailed(f"upload stopped after {done} commits ({message}); rerun to upload the rest") from None
    return plan


def _one_line(text: str, token: str | None) -> str:
    lines = redact(text, token).strip().splitlines()
    return lines[0] if lines else ""
