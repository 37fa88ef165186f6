"""``zoo job-id``: the Ray job submission id of a generation (see ``zoo.factory.submit``).

    ID=$(zoo job-id --config configs/zoo/quickstart.yaml --out /data/zoo-quickstart)
    ray job submit --submission-id "$ID" ... -- python jobs/generate.py \
        --config configs/zoo/quickstart.yaml --out /data/zoo-quickstart

Pass the same ``--config``, ``--batches`` and ``--out`` as to the job.
"""

from __future__ import annotations

import argparse


def cmd_job_id(args: argparse.Namespace) -> int:
    from zoo.config import zoo_config_from
    from zoo.factory.submit import submission_id

    config = zoo_config_from(args.config, batches=args.batches, workers=args.workers, address=args.address)
    print(submission_id(config, args.out))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "job-id",
        help="the `ray job submit --submission-id` of a generation (duplicates are refused)",
        description="Print the Ray job submission id of a generation: built from the zoo id, the batch count "
        "and a hash of the output folder, so that `ray job submit --submission-id` refuses a second job writing the same zoo. Pass the "
        "same --config, --batches and --out as to jobs/generate.py.",
    )
    p.add_argument("--config", help="zoo config YAML, as passed to jobs/generate.py")
    p.add_argument("--batches", type=int, help="override the config's batch count, as passed to jobs/generate.py")
    p.add_argument("--out", required=True, help="the output folder or URI as the job sees it")
    # Accepted so the job's own arguments can be passed as they are; where and how wide a
    # run is does not change what it writes, so they are not part of the id.
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_job_id)
