"""The interpreter's Ray Tune sweep under `ray job submit` (a thin entrypoint: parse, call the library).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune_interpreter.py --data /shared/zoo --config configs/tune/interpreter.yaml \
        --storage s3://bucket/tune

On a multi-node cluster the storage path must be shared (a cloud URI or NFS) and the
zoo folder readable from every node.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/tune_interpreter.py")
    parser.add_argument("--data", required=True, help="zoo folder")
    parser.add_argument("--config", default="configs/tune/interpreter.yaml", help="sweep settings YAML")
    parser.add_argument("--storage", help="override storage_path (cloud URI on a cluster)")
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--out", help="the sweep's folder (default: storage_path/name): results.csv, results.md, best_config.yaml")
    args = parser.parse_args(argv)

    import ray
    from rich.console import Console

    from zoo.readers.interpreter.tune import load_tune_settings, run_tune

    overrides = {k: v for k, v in (("storage_path", args.storage), ("num_samples", args.num_samples)) if v is not None}
    settings, base = load_tune_settings(args.config, overrides or None)
    ray.init()  # inside `ray job submit` this joins the job's cluster
    result = run_tune(args.data, settings, base, out=args.out, console=Console())
    print(f"best trial: {result.best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
