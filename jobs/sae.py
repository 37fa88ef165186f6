"""SAEs on a zoo's subjects as a Ray job: train the population, then splice and score it.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/sae.py --data /shared/zoo --out /shared/saes

The population trains in this process (one batched computation; give the job a GPU with
``--entrypoint-num-gpus 1`` and the recipe's ``device: auto`` uses it). Equivalent to
``zoo sae train``, ``zoo sae eval`` and ``zoo autointerp`` one after another; the zoo and the
output folder must be reachable from the node the job runs on.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="zoo folder")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--config", help="SAE recipe YAML (default: configs/readers/sae.yaml)")
    parser.add_argument("--skip-eval", action="store_true", help="train only")
    args = parser.parse_args(argv)

    from zoo.readers.sae.config import load_recipe
    from zoo.readers.sae.report import autointerp_run, eval_run
    from zoo.readers.sae.run import open_run, train_run

    info = train_run(args.data, args.out, load_recipe(args.config), log=lambda line: print(line, flush=True))
    out = {"coders": info["coders"], "train_seconds": info["train_seconds"]}
    if not args.skip_eval:
        run = open_run(args.out)
        out["eval"] = eval_run(run)
        out["autointerp"] = autointerp_run(run)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
