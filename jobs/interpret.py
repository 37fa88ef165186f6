"""Train or evaluate the interpreter under `ray job submit` (a thin entrypoint: parse, call the library).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/interpret.py train --data /shared/zoo --out /shared/runs/interp --num-gpus 1

The work runs as one Ray task with the requested resources, so it lands on a node
that has them (a GPU worker); the zoo and run folders must be on storage that node
can read (NFS or a mounted bucket). Rerunning the same command resumes training.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/interpret.py")
    parser.add_argument("command", choices=("train", "eval"))
    parser.add_argument("--data", required=True, help="zoo folder")
    parser.add_argument("--out", help="run folder (train)")
    parser.add_argument("--run", help="run folder (eval; default: --out)")
    parser.add_argument("--config", help="interpreter config YAML (train)")
    parser.add_argument("--split", help="comma list of splits (eval)")
    parser.add_argument("--num-gpus", type=float, default=0.0)
    parser.add_argument("--num-cpus", type=float, default=1.0)
    args = parser.parse_args(argv)
    run_dir = args.run or args.out
    if run_dir is None:
        parser.error("--out (or --run) is required")

    import ray

    ray.init()  # inside `ray job submit` this joins the job's cluster

    @ray.remote(num_gpus=args.num_gpus, num_cpus=args.num_cpus)
    def work() -> str:
        from rich.console import Console

        if args.command == "train":
            from zoo.readers.interpreter.config import load_interpreter_config
            from zoo.readers.interpreter.train import train

            state = train(load_interpreter_config(args.config), args.data, run_dir, console=Console(), progress=False)
            return f"{run_dir}: {state['epoch']} epochs, best loss {state['best_val']}"
        from zoo.readers.interpreter.evaluate import evaluate

        splits = [s for s in (args.split or "").split(",") if s] or None
        evaluate(run_dir, args.data, splits=splits, console=Console())
        return f"wrote {run_dir}/report.md and {run_dir}/report.json"

    print(ray.get(work.remote()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
