"""``zoo probe model|zoo|activations`` and ``zoo tune probes``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _layers(text: str) -> list[int | str]:
    """Comma-separated layer numbers and hookpoint names: ``1,2`` or ``layers.0.post,head``."""
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lstrip("-").isdigit():
            out.append(int(part))
        elif all(c.isalnum() or c in "._" for c in part):
            out.append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"layers must be comma-separated layer numbers or hookpoint names, not {text!r}"
            )
    if not out:
        raise argparse.ArgumentTypeError(f"layers: no layer numbers or hookpoint names in {text!r}")
    return out


def recipe_from_args(args: argparse.Namespace):
    """The probe recipe: ``--config`` (default ``configs/readers/probes.yaml``), then the command-line overrides."""
    from zoo.readers.probes.config import load_probe_config

    overrides = {}
    for name in ("epochs", "layers", "site", "max_samples", "device"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_probe_config(getattr(args, "config", None), overrides)


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="probe recipe YAML (default: configs/readers/probes.yaml, the tuned recipe; "
        "configs/readers/probes-reference.yaml is the reference)",
    )
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--site", choices=("post", "pre"), help="override the recipe's site: probe post- or pre-activations")
    p.add_argument(
        "--max-samples", dest="max_samples", type=int, metavar="N",
        help="override the recipe's max_samples: a stratified subsample of N of each model's sequences",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the recipe's device")


def is_language_zoo(data: str) -> bool:
    """Whether ``data`` is a language zoo (read by ``language``); a folder that does not open is left to the
    pattern path, which says why in one line."""
    from zoo.api import Zoo, ZooError

    try:
        return Zoo(data).config.task == "language"
    except (ZooError, ValueError, OSError):
        return False


def cmd_probe_language(args: argparse.Namespace, rows: list[int] | None) -> int:
    """``zoo probe model|zoo`` on a language zoo: per-token grammar-state probes per hookpoint (``language``)."""
    from zoo.readers.probes.data import ProbeError
    from zoo.readers.probes.language import probe_language_zoo

    if getattr(args, "which", "clean") != "clean":
        raise ProbeError("--which: language records hold one model (clean); there is no degraded one")
    if getattr(args, "workers", 0):
        raise ProbeError("--workers: language zoos are probed in-process (leave --workers out)")
    config = recipe_from_args(args)
    quiet = getattr(args, "json", False)
    log = (lambda line: None) if quiet else (lambda line: print(line, flush=True))  # noqa: E731
    summary = probe_language_zoo(args.data, args.out, config, rows=rows, batches=getattr(args, "batches", None), log=log)
    if quiet:
        print(json.dumps(summary))
    else:
        print((Path(args.out) / "summary.md").read_text())
    return 0


def cmd_probe_model(args: argparse.Namespace) -> int:
    from rich.console import Console

    from zoo.readers.probes.report import layer_label
    from zoo.readers.probes.zoo_probe import probe_row

    if is_language_zoo(args.data):
        return cmd_probe_language(args, [args.row])
    config = recipe_from_args(args)
    result, report = probe_row(args.data, args.row, args.out, config, args.which)
    console = Console()
    console.print(probe_table(result.layers, report))
    selectivity = "" if report["selectivity"] is None else f", selectivity {report['selectivity']:.3f}"
    console.print(
        f"best layer {layer_label(report['best_layer'])} ({report['best_hookpoint']}): accuracy {report['best_accuracy']:.3f}{selectivity} "
        f"-> {Path(args.out) / 'report.md'}",
        highlight=False,
        markup=False,
    )
    return 0


def probe_table(layers, report: dict):
    """Per layer: its hookpoint, probe accuracy, control, selectivity, the untrained twin's accuracy (values fold,
    never cut)."""
    from rich.table import Table

    from zoo.readers.probes.report import layer_label

    table = Table(title=f"probes of {report['model']['name']}")
    table.add_column("layer", justify="right", overflow="fold")
    table.add_column("hookpoint", overflow="fold", min_width=len("blocks.0.ffn.post"))
    for column in ("accuracy", "control", "selectivity", "twin"):
        table.add_column(column, justify="right", overflow="fold")
    twin = report.get("random_init", {}).get("per_layer_accuracy", {})
    hookpoints = report.get("hookpoints", {})
    for layer in layers:
        key = str(layer)
        values = (
            report["per_layer_accuracy"][key],
            report["per_layer_control_accuracy"][key],
            report["per_layer_selectivity"][key],
            twin.get(key),
        )
        table.add_row(layer_label(layer), hookpoints.get(key, ""), *("" if v is None else f"{v:.3f}" for v in values))
    return table


def cmd_probe_zoo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from zoo.readers.probes.zoo_probe import probe_zoo

    from zoo.progress import progress_bar

    if is_language_zoo(args.data):
        return cmd_probe_language(args, None)
    config = recipe_from_args(args)
    console = Console(stderr=args.json)  # with --json, stdout holds the JSON alone
    with progress_bar("probing", enabled=not args.json) as progress:
        summary = probe_zoo(
            args.data,
            args.out,
            config,
            workers=args.workers,
            address=args.address,
            batches=args.batches,
            gpus_per_worker=args.gpus_per_worker,
            log=lambda line: console.print(line, highlight=False, markup=False),
            progress=progress,
        )
    if args.json:
        print(json.dumps(summary))
        return 0
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(
        f"{summary['models']} models probed ({summary['clean_models']} clean, {summary['degraded_models']} degraded) "
        f"in {summary['seconds']:.1f} s; clean best layer: accuracy {f(summary['clean_best_accuracy_mean'])} "
        f"(min {f(summary['clean_best_accuracy_min'])}), selectivity {f(summary['clean_selectivity_mean'])}; "
        f"corrupted pattern lost inside {summary['degraded_lost_inside']}, at the output "
        f"{summary['degraded_lost_at_output']} -> {Path(args.out) / 'summary.md'}",
        highlight=False,
        markup=False,
    )
    return 0


def cmd_probe_activations(args: argparse.Namespace) -> int:
    from zoo.readers.probes.zoo_probe import cache_row_activations

    config = recipe_from_args(args)
    path = cache_row_activations(args.data, args.row, args.out, config, args.which)
    print(f"activations of row {args.row} ({args.which}) -> {path}")
    return 0


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Rows as a plain aligned text table (floats to 4 significant digits)."""
    cells = [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def cmd_tune_probes(args: argparse.Namespace) -> int:
    from rich.console import Console

    from zoo.readers.probes.config import load_probe_tune_config
    from zoo.readers.probes.tune import tune_probes
    from zoo.readers.tune import render

    config = load_probe_tune_config(args.config, {"storage_path": args.storage} if args.storage else None)
    outcome = tune_probes(args.data, config, out=args.out, num_samples=args.num_samples, address=args.address)
    render(outcome, Console())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    probe = subparsers.add_parser(
        "probe",
        help="linear probes of subject models' layers",
        description="Linear probes of subject models' layers: per layer, how well each pattern can be read "
        "from the activations, against a control task and an untrained twin. On a language zoo, `model` and `zoo` "
        "probe every token of the grammar's probe corpus for each grammar state (Dyck depth, top of stack, ...) "
        "per hookpoint. `zoo probe COMMAND --help` for a command's options.",
    )
    sub = probe.add_subparsers(dest="probe_command", required=True, parser_class=subparsers._parser_class, metavar="COMMAND")

    p = sub.add_parser(
        "model",
        help="probe every layer of one record's model; write checkpoints and a report",
        description="Probe every layer of one record's clean or degraded model; write the probes' "
        "checkpoints, report.md and report.json to --out.",
    )
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--row", type=int, required=True, help="record index (rows in batch, pair order)")
    p.add_argument("--which", choices=("clean", "degraded"), default="clean", help="which model of the record")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--layers", type=_layers,
        help="override the recipe's layers: comma-separated layer numbers (0 the input or embedding) or hookpoint "
        "names, e.g. 1,2 or layers.0.post,head (default: layer 0 and every hidden layer)",
    )
    _add_recipe_options(p)
    p.set_defaults(func=cmd_probe_model)

    p = sub.add_parser(
        "zoo",
        help="probe every clean and degraded model of a zoo and summarize",
        description="Probe every clean and degraded model of a zoo (in-process or on Ray actors) and write "
        "per-model results and summary.md to --out: where the clean models hold their patterns, and where the "
        "degraded ones lose the corrupted one.",
    )
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batches", type=int, metavar="N", help="only the first N batches (default: all)")
    p.add_argument("--workers", type=int, default=0, help="Ray actors (0: in-process)")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=float, default=0.0, help="GPUs each Ray actor asks for")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _add_recipe_options(p)
    p.set_defaults(func=cmd_probe_zoo)

    p = sub.add_parser(
        "activations",
        help="cache one record's activations at every layer to Parquet",
        description="Cache one record's model's activations at every layer, on its labelled sequences, to "
        "one Parquet file.",
    )
    p.add_argument("--data", required=True, help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--row", type=int, required=True, help="record index (rows in batch, pair order)")
    p.add_argument("--which", choices=("clean", "degraded"), default="clean", help="which model of the record")
    p.add_argument("--out", required=True, help="Parquet file to write")
    _add_recipe_options(p)
    p.set_defaults(func=cmd_probe_activations)


def register_tune(tune_subparsers: argparse._SubParsersAction) -> None:
    p = tune_subparsers.add_parser(
        "probes",
        help="Ray Tune (ASHA) sweep of the probe recipe",
        description="Ray Tune (ASHA) sweep of the probe recipe's hyperparameters on a zoo; prints the trials, "
        "best first, and writes the table and the best config.",
    )
    p.add_argument("--data", required=True, help="zoo folder")
    p.add_argument("--config", help="sweep YAML (default: configs/tune/probes.yaml)")
    p.add_argument(
        "--out", help="the sweep's folder: Tune's files, results.csv, results.md, best_config.yaml "
        "(default: the config's storage_path/name)"
    )
    p.add_argument("--storage", help="override storage_path (local folder or cloud URI)")
    p.add_argument("--num-samples", dest="num_samples", type=int, help="override the config's num_samples")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.set_defaults(func=cmd_tune_probes)
