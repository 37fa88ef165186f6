"""`ray job submit ... -- python jobs/generate.py --config configs/zoo/quickstart.yaml --out /abs/DIR`

Thin entrypoint: parse, then call the library. Under `ray job submit` the job's
environment names the cluster (RAY_ADDRESS), so `ray.init()` inside the runner
connects to the cluster the job was submitted to instead of starting a new one.
A rerun with the same --out resumes from the manifest.

In a Ray job the entrypoint runs inside a temporary copy of the working_dir, so
a relative --out would put the zoo there, out of sight and deleted with the
session: it is refused (exit 2, one line). Use an absolute path on storage every
node sees, or a URI.
"""

import os
import sys

from zoo.cli import main


def _out(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


def _in_ray_job() -> bool:
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by the job supervisor for the entrypoint


if __name__ == "__main__":
    args = sys.argv[1:]
    out = _out(args)
    if _in_ray_job() and out and "://" not in out and not os.path.isabs(out):
        print(
            f"zoo: error: --out {out}: give an absolute path (or a URI) in a Ray job; "
            "the job runs in a temporary copy of the working_dir",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(main(["generate", *args]))
