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
    from zoo.readers.interpreter.evaluate import evaluate

    from zoo.progress import progress_bar

    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    console = _console()
    if args.json:  # stdout holds the JSON alone: the log goes to stderr
        from rich.console import Console

        console = Console(stderr=True)
    with progress_bar("evaluating", enabled=not args.json) as progress:
        report = evaluate(
            args.run, args.data, splits=splits, which=args.checkpoint, refine_epochs=args.refine_epochs,
            console=console, progress=progress,
        )
    if args.json:
        print(json.dumps(report))
        return 0
    for table in report_tables(report, args.run):
        console.print(table)
    console.print(f"wrote {args.run}/report.md and {args.run}/report.json")
    return 0


def report_tables(report: dict, run) -> list:
    """The evaluation report as rich tables that fit an 80-column terminal: how each reader reads the
    patterns, how the interpreter's decoded weights repair, and (when refined) the refined repairs.

    Figures never wrap (they keep their width; headers are short or two words on two lines); names
    fold rather than get cut ("interpreter" and "interpreter+output_only" must stay apart). The
    baselines do not repair, so repair figures are the interpreter's alone.
    """
    from rich.table import Table

    from zoo.readers.interpreter.evaluate import report_rows, split_names

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    def columns(table: Table, names: tuple[str, ...], text: tuple[str, ...]) -> None:
        for name in names:
            if name in text:
                table.add_column(name, overflow="fold")
            else:
                table.add_column(name, justify="right", no_wrap=True)

    splits = split_names(report)
    table = Table(
        title=f"interpreter {run}: reading the patterns",
        caption="corr. acc.: accuracy on the corrupted pattern; acc. MAE: error of the read accuracies",
    )
    columns(table, ("split", "reader", "exact\nmatch", "macro\nF1", "corr.\nacc.", "acc.\nMAE"), ("split", "reader"))
    for split in splits:
        rows = report_rows(report, split)
        for i, (name, f) in enumerate(rows):
            table.add_row(
                split if i == 0 else "", name, fmt(f["exact_match"]), fmt(f["macro_f1"]),
                fmt(f["corrupted_pattern_accuracy"]), fmt(f["accuracy_mae"]), end_section=i == len(rows) - 1,
            )
    tables = [table]

    table = Table(
        title="repair by the interpreter's decoded weights",
        caption="restored: share of the corrupted pattern's lost accuracy won back; side effect: accuracy drop "
        "on the other patterns; negatives, overall: accuracies",
    )
    columns(table, ("split", "restored", "side\neffect", "negatives", "overall"), ("split",))
    for split in splits:
        f = report[split]
        table.add_row(
            split, fmt(f["repair_restored"]), fmt(f["repair_side_effect"]),
            fmt(f.get("repair_negatives")), fmt(f.get("repair_accuracy")),
        )
    tables.append(table)

    refined = [split for split in splits if "refined_repair" in report[split]]
    if refined:
        table = Table(title="repair refined on the named pattern set's data")
        columns(table, ("split", "start", "restored", "side\neffect", "negatives", "overall"), ("split", "start"))
        for split in refined:
            starts = list(report[split]["refined_repair"].items())
            for i, (start, f) in enumerate(starts):
                table.add_row(
                    split if i == 0 else "", start, fmt(f["repair_restored"]), fmt(f["repair_side_effect"]),
                    fmt(f["negatives"]), fmt(f["accuracy"]), end_section=i == len(starts) - 1,
                )
        tables.append(table)
    return tables


def cmd_edit(args: argparse.Namespace) -> int:
    from zoo.readers.interpreter import InterpreterError
    from zoo.readers.interpreter.edit import edit, render_edit, render_survey, survey

    common = {"data_dir": args.data, "which": args.checkpoint, "refine_epochs": args.refine_epochs, "strength": args.strength}
    if args.sample is not None:
        if args.add or args.remove or args.save:
            raise InterpreterError("--sample draws its own edits: drop --add, --remove and --save")
        from zoo.progress import progress_bar

        with progress_bar("editing", enabled=not args.json) as progress:
            result = survey(args.run, sample=args.sample, split=args.split or "test", progress=progress, **common)
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
    run_tune(args.data, settings, base, out=args.out, address=args.address, console=_console())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    interpret = subparsers.add_parser(
        "interpret",
        help="the interpreter: read signatures, name patterns, repair weights",
        description="The interpreter: a model that reads a degraded subject model's weights and signatures, "
        "names its patterns and the corrupted one, and decodes repaired weights. `zoo interpret COMMAND "
        "--help` for a command's options.",
    )
    sub = interpret.add_subparsers(
        dest="interpret_command", required=True, parser_class=subparsers._parser_class, metavar="COMMAND"
    )

    p = sub.add_parser(
        "train",
        help="train (or resume) an interpreter on a zoo's train split",
        description="Train an interpreter on a zoo's train split (splits from its splits.json; `zoo split` "
        "first), selecting checkpoints on validation. Rerunning on the same run folder resumes.",
    )
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo); splits from its splits.json")
    p.add_argument("--config", help="interpreter config YAML (default: configs/readers/interpreter.yaml)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, config.json; rerun to resume")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    p.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a run per split, with baselines: RUN/report.md and RUN/report.json",
        description="Evaluate an interpreter run on a zoo's splits against two baselines (weight statistics, "
        "output only): pattern reading, corrupted-pattern accuracy and repair judged by the repaired models' "
        "behaviour, then (with refine.epochs > 0) repair refined on the named sets' data. Writes "
        "RUN/report.md, RUN/report.json and RUN/predictions/.",
    )
    p.add_argument("--run", required=True, help="run folder (zoo interpret train --out)")
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo); splits from its splits.json")
    p.add_argument("--split", help="comma list of splits (default: every non-empty split but train)")
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best",
        help="best: pattern heads from best.safetensors, repair from best_repair.safetensors; last: both from last",
    )
    p.add_argument(
        "--refine-epochs", type=int, metavar="N",
        help="override refine.epochs: also report repair refined by N epochs on the named pattern set's data",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "edit",
        help="add or remove a pattern by moving a model's latent, decode, and score it",
        description="Edit a record's degraded model through the interpreter's latent: move it along a "
        "pattern's direction (--add or --remove), decode weights and score them per pattern; or, with "
        "--sample N, survey random edits of N records.",
    )
    p.add_argument("--run", required=True, help="run folder (zoo interpret train --out)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="record: example_id or row index in the zoo")
    which.add_argument("--sample", type=int, metavar="N", help="random edits of N records of --split, summed up")
    p.add_argument("--split", help="the split --sample draws from (default: test)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--add", metavar="PATTERN", help="the pattern to add (one the model lacks)")
    group.add_argument("--remove", metavar="PATTERN", help="the pattern to remove (one the model has)")
    p.add_argument("--data", help="zoo folder or pyarrow.fs URI (default: the one the run was trained on)")
    p.add_argument("--strength", type=float, default=1.0, help="multiple of the pattern direction to move")
    p.add_argument(
        "--checkpoint", choices=("best", "repair", "last"), default="best",
        help="best: best.safetensors; repair: the epoch with the best validation repair loss (decodes better, "
        "reads patterns worse); last: the last epoch",
    )
    p.add_argument(
        "--refine-epochs", type=int, metavar="N",
        help="train the edited model N epochs on the edited set's data (default: the run's refine.epochs; 0: the decoded edit alone)",
    )
    p.add_argument(
        "--save", metavar="FILE",
        help="write the edited weights (refined, when refining) as safetensors (architecture in the metadata)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_edit)


def register_tune(tune_subparsers: argparse._SubParsersAction) -> None:
    p = tune_subparsers.add_parser(
        "interpreter",
        help="ASHA sweep of the interpreter's hyperparameters",
        description="Ray Tune (ASHA) sweep of the interpreter's hyperparameters on a zoo: trials train "
        "interpreters, report validation figures each epoch, and the best trial's config is written out.",
    )
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--config", help="sweep settings YAML (default: configs/tune/interpreter.yaml)")
    p.add_argument("--storage", help="override storage_path (local folder or cloud URI)")
    p.add_argument("--num-samples", type=int, help="override num_samples")
    p.add_argument(
        "--out", help="the sweep's folder: Tune's files, results.csv, results.md, best_config.yaml "
        "(default: the config's storage_path/name)"
    )
    p.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    p.set_defaults(func=cmd_tune)
