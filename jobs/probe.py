"""Zoo-wide probing as a Ray job, spread over actors.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/probe.py --data /shared/zoo --out /shared/probes --workers 4

Inside a job ``ray.init()`` joins the job's cluster; the zoo folder and the output
folder must be reachable from every node (shared storage).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="zoo folder")
    parser.add_argument("--out", required=True, help="output folder for the summary")
    parser.add_argument("--config", help="probe recipe YAML (default: configs/readers/probes.yaml)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--batches", type=int, help="only the first N batches")
    parser.add_argument("--address", help="Ray address (default: the job's cluster)")
    args = parser.parse_args(argv)

    import ray

    from zoo.readers.probes.config import load_probe_config
    from zoo.readers.probes.zoo_probe import probe_zoo

    config = load_probe_config(args.config)
    if not ray.is_initialized():
        ray.init(address=args.address)
    summary = probe_zoo(
        args.data,
        args.out,
        config,
        workers=max(1, args.workers),
        batches=args.batches,
        gpus_per_worker=args.gpus_per_worker,
        log=lambda line: print(line, flush=True),
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "readability"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
