"""What every export command shares: the checked zoo folder, one-line errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

from zoo.api import Zoo, ZooError, require_task
from zoo.factory.manifest import CONFIG_FILE, PROBE_FILE, ZOO_FILE, ZooInfo, read_manifest, read_zoo_info  # noqa: F401 (re-exported)
from zoo.atomic import commit_file, temporary_path, write_text_atomic  # noqa: F401 (re-exported)



class ExportError(ValueError):
    """Bad input to an export command (export, split, card, publish): one line, exit 2."""


ZooFolder = Zoo  # what export commands are handed: a zoo that passed ``open_zoo``'s checks


def open_zoo(path: str | Path, *, require_rows: bool = True, task: str | None = None) -> Zoo:
    """Check a zoo folder before anything reads it or writes beside it.

    Refuses (``ExportError``, one line) a folder that ``zoo.open`` refuses (no ``zoo.json``,
    a missing or foreign ``config.yaml``), a zoo that does not verify (checksums, row
    counts, schema), unless ``require_rows`` is false a zoo without records and, when ``task``
    names the command (``"zoo export"``), a zoo that is not a pattern zoo (``zoo.api.require_task``).
    """
    try:
        zoo = Zoo(path)
        if task is not None:
            require_task(zoo, "patterns", task)
    except ZooError as error:
        raise ExportError(str(error)) from None
    problems = zoo.verify()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportError(f"{zoo.path}: the zoo does not verify: {problems[0]}{more}; run `zoo verify {zoo.path}`")
    if require_rows and len(zoo) == 0:
        raise ExportError(f"{zoo.path}: the zoo holds no records ({len(zoo.batches)} finished batches, none kept a pair)")
    return zoo


def refuse_existing(path: Path, overwrite: bool) -> None:
    """An output that exists is only replaced when the user said so."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    if path.is_dir():
        raise ExportError(f"{path}: is a folder, not a file")
