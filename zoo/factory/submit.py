"""A Ray job submission id derived from the run, so that a duplicate submission is refused.

``ray job submit --submission-id ID`` refuses an ID the cluster already knows
("Job with submission_id ... already exists"), whatever that job's state. The
id names what the job would write: the zoo (config hash), its batch count and
the output location, so:

- the same generation submitted twice (a retried CI step, a double click) is
  refused before anything runs, instead of two drivers racing for one folder;
- a larger ``--batches`` (extending the zoo) or another ``--out`` is a new job;
- after a failed or stopped job, ``ray job delete ID`` frees the id, and the
  resubmission resumes from the folder's manifest.

The output location is hashed as given (normalized, not resolved against the
local working directory): it is a path on the cluster, or a URI.
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path

from zoo.config import ZooConfig
from zoo.factory.batch import zoo_identity


def normalize_out(out: str | Path) -> str:
    """``out`` as the job sees it: URIs untouched, paths without ``.``/``..``/trailing slashes."""
    text = str(out)
    if "://" in text:
        return text.rstrip("/")
    return posixpath.normpath(text)


def submission_id(config: ZooConfig, out: str | Path, *, prefix: str = "zoo") -> str:
    """``<prefix>-<zoo_id>-b<batches>-<hash of out>``, e.g. ``zoo-quickstart-1a2b3c4d-b20-5e6f7a8b``."""
    zoo_id, _ = zoo_identity(config)
    where = hashlib.sha256(normalize_out(out).encode()).hexdigest()[:8]
    return f"{prefix}-{zoo_id}-b{config.batches}-{where}"
