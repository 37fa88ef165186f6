"""``zoo interpret {train,eval,edit}`` and ``zoo tune interpreter``: parse, call the library, print.

Bad input (a missing zoo or run, an unknown split or pattern, a config error) raises
``InterpreterError`` or ``ConfigError``, which ``zoo.cli`` prints as one line with exit
code 2.
"""

from __future__ import annotations

import argparse
import json


def _console():
    from rich.console import Console

    return Console()


def cmd_train(args: argparse.Namespace) -> int:
    from zoo.readers.interpreter.config import load_interpreter_config
    from zoo.readers.interpreter.train import train

    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.device is not None:
        overrides["device"] = args.device
    config = load_interpreter_config(args.config, overrides or None)
    console = _console()
    state = train(config, args.data, args.out, overwrite=args.overwrite, console=console, progress=not args.no_progress)
    criterion = config.select if state["history"] and "val_loss" in state["history"][-1] else "training loss"
    best = f"; best.safetensors is epoch {state['best_epoch']} (by {criterion})" if state.get("best_epoch") else ""
    if state.get("best_repair_epoch"):
        best += f", best_repair.safetensors epoch {state['best_repair_epoch']} (by validation repair loss)"
    console.print(f"{args.out}: {state['epoch']} epochs done{best}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from zoo.readers.interpreter.evaluate import evaluate, report_rows, split_names

    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    console = _console()
    report = evaluate(
        args.run, args.data, splits=splits, which=args.checkpoint, refine_epochs=args.refine_epochs, console=console
    )
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.table import Table

    table = Table(title=f"interpreter {args.run}")
    for column in ("split", "model", "exact match", "macro F1", "corrupted", "acc. MAE", "restored", "side effect"):
        if column in ("split", "model"):  # fold, not ellipsis: "interpreter" and "interpreter+output_only" must differ
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right")

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    for split in split_names(report):
        for name, f in report_rows(report, split):
            table.add_row(
                split, name, fmt(f["exact_match"]), fmt(f["macro_f1"]), fmt(f["corrupted_pattern_accuracy"]),
                fmt(f["accuracy_mae"]), fmt(f["repair_restored"]), fmt(f["repair_side_effect"]),
            )
    console.print(table)
    refined = [split for split in split_names(report) if "refined_repair" in report[split]]
    if refined:
        table = Table(title="repair refined on the named pattern set's data")
        for column in ("split", "start", "restored", "side effect", "negatives", "overall"):
            table.add_column(column, justify="left" if column in ("split", "start") else "right")
        for split in refined:
            for start, f in report[split]["refined_repair"].items():
                table.add_row(
                    split, start, fmt(f["repair_restored"]), fmt(f["repair_side_effect"]), fmt(f["negatives"]), fmt(f["accuracy"])
                )
        console.print(table)
    console.print(f"wrote {args.run}/report.md and {args.run}/report.json")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from zoo.readers.interpreter import InterpreterError
    from zoo.readers.interpreter.edit import edit, render_edit, render_survey, survey

    common = {"data_dir": args.data, "which": args.checkpoint, "refine_epochs": args.refine_epochs, "strength": args.strength}
    if args.sample is not None:
        if args.add or args.remove or args.save:
            raise InterpreterError("--sample draws its own edits: drop --add, --remove and --save")
        result = survey(args.run, sample=args.sample, split=args.split or "test", **common)
        render = render_survey
    else:
        if args.split:
            raise InterpreterError("--split goes with --sample; --model names its record")
        result = edit(args.run, args.model, add=args.add, remove=args.remove, save=args.save, **common)
        render = render_edit
    if args.json:
        print(json.dumps(result))
    else:
        render(result, _console())
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from zoo.readers.interpreter.tune import DEFAULT_TUNE_CONFIG, load_tune_settings, run_tune

    overrides = {}
    if args.num_samples is not None:
        overrides["num_samples"] = args.num_samples
    if args.storage is not None:
        overrides["storage_path"] = args.storage
    settings, base = load_tune_settings(args.config or DEFAULT_TUNE_CONFIG, overrides or None)
    if args.address:
        import ray

        ray.init(address=args.address)
    run_tune(args.data, settings, base, best_config_out=args.out, console=_console())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    interpret = subparsers.add_parser("interpret", help="the interpreter: read signatures, name patterns, repair weights")
    sub = interpret.add_subparsers(dest="interpret_command", required=True, parser_class=subparsers._parser_class)

    p = sub.add_parser("train", help="train (or resume) an interpreter on a zoo's train split")
    p.add_argument("--data", required=True, help="zoo folder (splits from its splits.json)")
    p.add_argument("--config", help="interpreter config YAML (default: configs/readers/interpreter.yaml)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, config.json; rerun to resume")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    p.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run per split, with baselines: RUN/report.md and RUN/report.json")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", help="comma list of splits (default: every non-empty split but train)")
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best",
        help="best: pattern heads from best.safetensors, repair from best_repair.safetensors (default); last: both from last",
    )
    p.add_argument(
        "--refine-epochs", type=int, metavar="N",
        help="override refine.epochs: also report repair refined by N epochs on the named pattern set's data",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("edit", help="add or remove a pattern by moving a model's latent, decode, and score it")
    p.add_argument("--run", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="record: example_id or row index in the zoo")
    which.add_argument("--sample", type=int, metavar="N", help="random edits of N records of --split, summed up")
    p.add_argument("--split", help="the split --sample draws from (default test)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--add", metavar="PATTERN")
    group.add_argument("--remove", metavar="PATTERN")
    p.add_argument("--data", help="zoo folder (default: the one the run was trained on)")
    p.add_argument("--strength", type=float, default=1.0, help="multiple of the pattern direction to move (default 1)")
    p.add_argument(
        "--checkpoint", choices=("best", "repair", "last"), default="best",
        help="repair: the epoch with the best validation repair loss (decodes better, reads patterns worse)",
    )
    p.add_argument(
        "--refine-epochs", type=int, metavar="N",
        help="train the edited model N epochs on the edited set's data (default: the run's refine.epochs; 0: the decoded edit alone)",
    )
    p.add_argument(
        "--save", metavar="FILE",
        help="write the edited weights (refined, when refining) as safetensors (architecture in the metadata)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_edit)


def register_tune(tune_subparsers: argparse._SubParsersAction) -> None:
    p = tune_subparsers.add_parser("interpreter", help="ASHA sweep of the interpreter's hyperparameters")
    p.add_argument("--data", required=True, help="zoo folder")
    p.add_argument("--config", help="sweep settings YAML (default: configs/tune/interpreter.yaml)")
    p.add_argument("--storage", help="override storage_path (local folder or cloud URI)")
    p.add_argument("--num-samples", type=int, help="override num_samples")
    p.add_argument("--out", help="where to write the best interpreter config (default: in the experiment folder)")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    p.set_defaults(func=cmd_tune)
