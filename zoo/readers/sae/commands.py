"""``zoo sae train|eval``, ``zoo autointerp`` and ``zoo tune sae``: thin, over ``run``, ``report`` and ``tune``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _hookpoint(text: str) -> str:
    if not text or not all(c.isalnum() or c in "._" for c in text):
        raise argparse.ArgumentTypeError(f"a hookpoint name is letters, digits, dots and underscores, not {text!r}")
    return text


def recipe_from_args(args: argparse.Namespace):
    """The recipe: ``--config`` (default ``configs/readers/sae.yaml``), then the command-line overrides."""
    from zoo.readers.sae.config import load_recipe

    overrides = {name: getattr(args, name) for name in ("which", "subjects", "epochs", "device")
                 if getattr(args, name, None) is not None}  # fmt: skip
    if args.hookpoint:
        overrides["hookpoints"] = list(dict.fromkeys(args.hookpoint))
    return load_recipe(args.config, overrides)


def _print(args, summary: dict, line: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(line)


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cmd_train(args: argparse.Namespace) -> int:
    import sys

    from zoo.readers.sae.run import train_run

    recipe = recipe_from_args(args)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    info = train_run(args.data, args.out, recipe, log=log)
    rows = json.loads((Path(args.out) / "saes" / "index.json").read_text())["coders"]
    fvu = [r["fvu"] for r in rows]
    summary = {"coders": info["coders"], "streams": len(info["streams"]), "mean_fvu": sum(fvu) / len(fvu),
               "mean_l0": sum(r["l0"] for r in rows) / len(rows), "train_seconds": info["train_seconds"]}  # fmt: skip
    _print(args, summary, f"{summary['coders']} coders on {summary['streams']} streams in {info['train_seconds']:.1f} s: "
           f"held-out FVU {_f(summary['mean_fvu'])}, L0 {_f(summary['mean_l0'])} (means) -> {args.out}")  # fmt: skip
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from zoo.readers.sae.report import eval_run
    from zoo.readers.sae.run import open_run

    s = eval_run(open_run(args.run))
    _print(args, s, f"{s['coders']} coders spliced on {s['eval_rows']} held-out sequences: CE recovered (zero) "
           f"{_f(s['median_ce_recovered_zero'])}, (mean) {_f(s['median_ce_recovered_mean'])}, KL {_f(s['median_kl_spliced'])}, "
           f"FVU {_f(s['median_fvu'])} (medians) -> {Path(args.run) / 'eval.md'}")  # fmt: skip
    return 0


def cmd_autointerp(args: argparse.Namespace) -> int:
    from zoo.readers.sae.report import autointerp_run
    from zoo.readers.sae.run import open_run

    s = autointerp_run(open_run(args.run))
    _print(args, s, f"{s['coders']} coders against {s['features']} features on {s['rows']} sequences: coverage "
           f"{_f(s['mean_coverage'])} (neurons {_f(s['mean_neurons_coverage'])}), best F1 {_f(s['mean_mean_best_f1'])} "
           f"(neurons {_f(s['mean_neurons_mean_best_f1'])}) -> {Path(args.run) / 'autointerp.md'}")  # fmt: skip
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from zoo.readers.sae.config import load_tune_config
    from zoo.readers.sae.tune import tune_sae
    from zoo.readers.tune import render

    config = load_tune_config(args.config, {"storage_path": args.storage} if args.storage else None)
    render(tune_sae(args.data, config, out=args.out, num_samples=args.num_samples, address=args.address), Console())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sae = subparsers.add_parser(
        "sae", help="sparse autoencoders trained as populations on subjects' hookpoints",
        description="Sparse autoencoders on subject models' hookpoints: one per (subject, hookpoint) and recipe "
        "grid point, the whole population trained as one computation. `zoo sae COMMAND --help` for options.",
    )  # fmt: skip
    sub = sae.add_subparsers(dest="sae_command", required=True, parser_class=subparsers._parser_class, metavar="COMMAND")
    p = sub.add_parser(
        "train", help="train the recipe's SAEs on a zoo's subjects; write a run folder",
        description="Read the zoo's subjects at their hookpoints on its probe set and train the recipe's SAEs on "
        "every (subject, hookpoint) stream as one population; write recipe.yaml, run.json and saes/ to --out.",
    )  # fmt: skip
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--out", required=True, help="run folder to write (must not hold a run)")
    p.add_argument("--config", help="SAE recipe YAML (default: configs/readers/sae.yaml)")
    p.add_argument("--hookpoint", action="append", type=_hookpoint, metavar="NAME",
                   help="override the recipe's hookpoints: read NAME (repeat for several), e.g. layers.0.pre")  # fmt: skip
    p.add_argument("--which", choices=("clean", "degraded"), help="override the recipe's subjects: clean or degraded models")
    p.add_argument("--subjects", type=int, metavar="N", help="override the recipe: only the first N subjects")
    p.add_argument("--epochs", type=int, help="override the recipe's evaluation rounds")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the recipe's device")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "eval", help="spliced evaluation of a run's SAEs: CE loss recovered, KL",
        description="Splice every SAE's reconstruction into its subject at its hookpoint on the held-out "
        "sequences: loss clean, zero- and mean-ablated and spliced, CE recovered, KL; write eval.json and eval.md.",
    )  # fmt: skip
    p.add_argument("--run", required=True, help="run folder (zoo sae train --out)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_eval)
    p = subparsers.add_parser(
        "autointerp", help="score a run's SAE latents against the corpus's ground-truth features",
        description="Score every latent of a run's SAEs, and the raw neurons of each hookpoint, as detectors of "
        "every known feature of the corpus (AUROC, best-threshold F1); write autointerp.json and autointerp.md.",
    )  # fmt: skip
    p.add_argument("--run", required=True, help="run folder (zoo sae train --out)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_autointerp)


def register_tune(tune_subparsers: argparse._SubParsersAction) -> None:
    p = tune_subparsers.add_parser(
        "sae", help="Ray Tune (ASHA) sweep of the SAE recipe",
        description="Ray Tune (ASHA) sweep of the SAE recipe on a zoo's first subjects; prints the trials, best "
        "first, and writes the table and the best config.",
    )  # fmt: skip
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--config", help="sweep YAML (default: configs/tune/sae.yaml)")
    p.add_argument("--out", help="the sweep's folder (default: the config's storage_path/name)")
    p.add_argument("--storage", help="override storage_path (local folder or cloud URI)")
    p.add_argument("--num-samples", dest="num_samples", type=int, help="override the config's num_samples")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.set_defaults(func=cmd_tune)
