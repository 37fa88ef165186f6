"""`zoo publish`: upload planning against a repository listing, the dry run, and token handling. No network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.export.card import write_card
from zoo.export.publish import LocalFile, RemoteFile, hashes, local_files, plan_upload
from zoo.export.splits import options_from_cli, write_splits
from zoo_fixture import run_cli, tiny_zoo, zoo_copy  # noqa: F401

DATA = [f"splits/train/train-{i:05d}.parquet" for i in range(7)]
META = ["README.md", "config.yaml", "probe.parquet", "splits.json", "zoo.json"]


def local(path: str, content: str = "x") -> LocalFile:
    return LocalFile(path, Path(path), len(content), f"sha-{path}-{content}", f"git-{path}-{content}", path in META)


def files(content: str = "x") -> list[LocalFile]:
    return [local(p, content) for p in DATA + META]


def listing(items: list[LocalFile]) -> list[RemoteFile]:
    """The Hub's view of ``items``: Parquet files in LFS (sha256), text files as git blobs (blob id)."""
    return [
        RemoteFile(f.path_in_repo, f.size, sha256=f.sha256, blob_id="lfs-pointer")
        if f.path_in_repo.endswith(".parquet")
        else RemoteFile(f.path_in_repo, f.size, blob_id=f.git_sha1)
        for f in items
    ]


@pytest.fixture
def ready_zoo(zoo_copy):
    write_splits(zoo_copy, options_from_cli(validation=0.25, test=0.25), rows_per_file=2)
    write_card(zoo_copy)
    return zoo_copy


def test_empty_repository_gets_everything_data_first_card_last():
    plan = plan_upload(files(), [], files_per_commit=3)
    assert sorted(f.path_in_repo for f in plan.uploads) == sorted(DATA + META)
    assert all(len(commit) <= 3 for commit in plan.commits)
    data_commits = [c for c in plan.commits if not c[0].metadata]
    assert [f.path_in_repo for c in data_commits for f in c] == sorted(DATA)
    assert plan.commits[-1][-1].path_in_repo == "README.md"
    assert all(not f.metadata for c in plan.commits[: len(data_commits)] for f in c)


def test_rerun_uploads_only_what_is_missing():
    present = files()[:4] + files()[8:10]
    plan = plan_upload(files(), listing(present), files_per_commit=50)
    expected = {f.path_in_repo for f in files()} - {f.path_in_repo for f in present}
    assert {f.path_in_repo for f in plan.uploads} == expected
    assert len(plan.present) == len(present)


def test_changed_files_are_uploaded_again():
    plan = plan_upload(files("new"), listing(files("old")))
    assert {f.path_in_repo for f in plan.uploads} == set(DATA + META)


def test_complete_repository_needs_no_commit():
    plan = plan_upload(files(), listing(files()))
    assert plan.commits == [] and len(plan.present) == len(DATA + META)


def test_a_listing_without_hashes_does_not_count_as_present():
    remote = [RemoteFile(f.path_in_repo, f.size) for f in files()]
    assert len(plan_upload(files(), remote).uploads) == len(DATA + META)


def test_remote_data_files_no_longer_local_are_stale_and_kept_unless_asked():
    remote = listing(files()) + [RemoteFile("splits/test/test-00000.parquet", 5, sha256="gone")]
    kept = plan_upload(files(), remote)
    assert kept.stale == ["splits/test/test-00000.parquet"] and kept.commits == []
    deleting = plan_upload(files(), remote, delete_stale=True)
    assert deleting.stale == kept.stale and len(deleting.commits) == 1


def test_git_blob_hash_matches_git(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    sha256, git_sha1 = hashes(path)
    assert git_sha1 == "f2ba8f84ab5c1bce84a7b441cb1959cfc7093b7f"  # git hash-object of "abc"
    assert sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_split_zoo_publishes_split_files_not_shards(ready_zoo):
    names = {f.path_in_repo for f in local_files(ready_zoo)}
    split_files = {str(p.relative_to(ready_zoo)) for p in (ready_zoo / "splits").rglob("*.parquet")}
    assert split_files <= names
    assert not any(name.startswith("data/shard-") for name in names)
    assert {"README.md", "config.yaml", "probe.parquet", "splits.json", "zoo.json"} <= names


def test_unsplit_zoo_publishes_shards_and_manifest(zoo_copy):
    write_card(zoo_copy)
    names = {f.path_in_repo for f in local_files(zoo_copy)}
    assert {f"data/{p.name}" for p in zoo_copy.glob("data/shard-*.parquet")} | {"manifest.jsonl"} <= names


def test_dry_run_prints_the_plan_and_touches_nothing(capsys, ready_zoo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = {p: p.stat().st_mtime_ns for p in ready_zoo.rglob("*")}
    code, out, _ = run_cli(capsys, "publish", ready_zoo, "--repo-id", "someone/tiny-zoo", "--dry-run", "--files-per-commit", "2")
    assert code == 0
    assert "nothing was uploaded" in out
    for item in local_files(ready_zoo):
        assert item.path_in_repo in out
    assert {p: p.stat().st_mtime_ns for p in ready_zoo.rglob("*")} == before


def test_publish_needs_a_current_card(capsys, ready_zoo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_splits(ready_zoo, options_from_cli(seed=4, validation=0.25, test=0.25), overwrite=True, rows_per_file=1)
    code, _, err = run_cli(capsys, "publish", ready_zoo, "--repo-id", "someone/tiny-zoo", "--dry-run")
    assert code == 2 and "rerun `zoo card" in err


def test_bad_repo_id_exits_2(capsys, ready_zoo):
    code, _, err = run_cli(capsys, "publish", ready_zoo, "--repo-id", "no-slash", "--dry-run")
    assert code == 2 and "USER/NAME" in err


def _publish_in_subprocess(zoo_dir: Path, home: Path, token: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update({"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", "publish", str(zoo_dir), "--repo-id", "someone/tiny-zoo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_token_is_a_clear_error(ready_zoo, tmp_path):
    result = _publish_in_subprocess(ready_zoo, tmp_path / "hf-home", token=None)
    assert result.returncode == 2
    assert result.stderr.strip() == "zoo: error: no Hugging Face token: log in with `hf auth login` or set HF_TOKEN"


def test_malformed_token_is_refused_and_never_shown(ready_zoo, tmp_path):
    secret = "not-a-token-but-secret-1234567890"
    result = _publish_in_subprocess(ready_zoo, tmp_path / "hf-home", token=secret)
    assert result.returncode == 2
    assert "token is malformed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert secret not in result.stdout + result.stderr


# ---------------------------------------------------------------- against an in-memory Hub


class FakeHub:
    """The Hub's side of ``HfApi`` in memory: repositories' files and the commits made (no network)."""

    def __init__(self, fail_on_commit: int | None = None):
        self.files: dict[str, bytes] = {}
        self.commits: list[list[str]] = []
        self.fail_on_commit = fail_on_commit

    def whoami(self):
        return {"name": "someone"}

    def create_repo(self, repo_id, repo_type, private, exist_ok):
        assert repo_type == "dataset" and exist_ok

    def list_repo_tree(self, repo_id, repo_type, recursive):
        import hashlib

        from huggingface_hub.hf_api import RepoFile
        from huggingface_hub.utils.sha import git_hash

        for path, data in self.files.items():
            if path.endswith(".parquet"):
                lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                yield RepoFile(path=path, size=len(data), oid="pointer", lfs=lfs)
            else:
                yield RepoFile(path=path, size=len(data), oid=git_hash(data))

    def create_commit(self, repo_id, operations, commit_message, repo_type):
        from types import SimpleNamespace

        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError

        if self.fail_on_commit == len(self.commits) + 1:
            self.fail_on_commit = None
            response = SimpleNamespace(status_code=502, headers={}, request=None)
            raise HfHubHTTPError("502 Server Error: Bad Gateway", response=response)
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as handle:  # a path, bytes or an open file (a zoo on object storage)
                    self.files[op.path_in_repo] = handle.read()
            else:
                self.files.pop(op.path_in_repo)
        self.commits.append([op.path_in_repo for op in operations])


TOKEN = "hf_" + "Q" * 34


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    return TOKEN


def test_publish_uploads_every_file_then_a_rerun_uploads_nothing(ready_zoo, token):
    from zoo.export.publish import publish

    hub, logged = FakeHub(), []
    publish(ready_zoo, "someone/tiny-zoo", files_per_commit=2, api=hub, log=logged.append)
    assert hub.files == {f.path_in_repo: f.local_path.read_bytes() for f in local_files(ready_zoo)}
    assert all(len(commit) <= 2 for commit in hub.commits) and hub.commits[-1][-1] == "README.md"
    first = len(hub.commits)
    plan = publish(ready_zoo, "someone/tiny-zoo", files_per_commit=2, api=hub, log=logged.append)
    assert plan.uploads == [] and len(hub.commits) == first
    assert not any(token in line for line in logged)


def test_interrupted_publish_resumes_with_only_what_is_missing(ready_zoo, token):
    from zoo.export.publish import UploadFailed, publish

    hub = FakeHub(fail_on_commit=2)
    with pytest.raises(UploadFailed, match="after 1 commits") as failure:
        publish(ready_zoo, "someone/tiny-zoo", files_per_commit=2, api=hub, log=lambda _: None)
    assert token not in str(failure.value)
    uploaded_first = set(hub.files)
    assert len(uploaded_first) == 2 and "README.md" not in uploaded_first
    publish(ready_zoo, "someone/tiny-zoo", files_per_commit=2, api=hub, log=lambda _: None)
    resumed = {path for commit in hub.commits[1:] for path in commit}
    assert resumed == {f.path_in_repo for f in local_files(ready_zoo)} - uploaded_first
