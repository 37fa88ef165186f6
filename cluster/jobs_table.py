"""A Ray head's jobs as a table (``cluster/local.sh status``), and whether a submission id is known.

``ray job list`` prints Python reprs of ``JobDetails``, one long line each; this prints one row
per job (id, status, start, run time, entrypoint) that fits the terminal, values folded, never cut.

    python cluster/jobs_table.py --address http://127.0.0.1:8265             # the table
    python cluster/jobs_table.py --address http://127.0.0.1:8265 --known ID  # exit 0 (prints its
                                                # status) if ID was submitted, 1 if not, 2 if the
                                                # head cannot be asked

``cluster/local.sh submit`` asks ``--known`` first, so a duplicate submission is refused in one
line before the working directory is uploaded (``ray job submit`` refuses it only after). The
token comes as for every Ray client: ``RAY_AUTH_MODE=token`` and ``~/.ray/auth_token``.
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table

UNKNOWN, CANNOT_ASK = 1, 2


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _took(start_ms: int | None, end_ms: int | None) -> str:
    if not start_ms:
        return "-"
    seconds = ((end_ms or time.time() * 1000) - start_ms) / 1000
    return f"{seconds:,.0f} s" if seconds < 3600 else f"{seconds / 3600:,.1f} h"


def jobs_table(jobs: list, address: str) -> Table:
    """One row per job (``JobDetails``: submission_id, status, start_time, end_time, entrypoint), oldest first."""
    table = Table(title=f"jobs on {address}")
    for column in ("submission id", "status", "started", "ran", "entrypoint"):
        table.add_column(column, overflow="fold")
    for job in sorted(jobs, key=lambda j: j.start_time or 0):
        status = getattr(job.status, "value", str(job.status))
        table.add_row(job.submission_id or job.job_id or "-", status, _when(job.start_time),
                      _took(job.start_time, job.end_time), job.entrypoint)  # fmt: skip
    if not jobs:
        table.add_row("-", "no jobs yet", "", "", "")
    return table


def known(client, submission_id: str) -> str | None:
    """The status of a submitted job, None when the head knows no job of that id."""
    try:
        info = client.get_job_info(submission_id)
    except RuntimeError as error:  # the SDK's 404: "Job ... does not exist"
        if "does not exist" in str(error) or "404" in str(error):
            return None
        raise
    return getattr(info.status, "value", str(info.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="the job server, e.g. http://127.0.0.1:8265")
    parser.add_argument("--known", metavar="ID", help="only say whether this submission id was submitted")
    args = parser.parse_args(argv)
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
        if args.known:
            status = known(client, args.known)
            if status is None:
                return UNKNOWN
            print(status)
            return 0
        jobs = client.list_jobs()
    except (ConnectionError, RuntimeError, ValueError) as error:
        print(f"{sys.argv[0]}: error: cannot ask {args.address}: {str(error).splitlines()[0][:200]}", file=sys.stderr)
        return CANNOT_ASK
    Console().print(jobs_table(jobs, args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
