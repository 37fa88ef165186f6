"""``zoo export``, ``zoo split``, ``zoo card`` and ``zoo publish``: parse, call the library, print.

Bad input (an unverified or empty zoo, an existing output without
``--overwrite``, an unknown task, layout or split, a missing token) raises an
``ExportError`` or ``FileExistsError``, which ``zoo.cli`` prints as one line with
exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from zoo.export import LAYOUTS, MODELS, SPLIT_NAMES, TASKS


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.export.prompts import export_jsonl
    from zoo.progress import progress_bar

    with progress_bar("exporting") as progress:
        report = export_jsonl(
            args.dir,
            args.out,
            task=args.task,
            layout=args.layout,
            precision=args.precision,
            messages=args.messages,
            max_chars=args.max_chars,
            split=args.split,
            model=args.model,
            limit=args.limit,
            overwrite=args.overwrite,
            progress=progress,
        )
    console = Console()
    console.print(export_table(report, args.task, args.layout))
    if report.skipped:
        print(
            f"zoo: skipped {report.skipped:,} examples over --max-chars {args.max_chars:,} "
            f"(longest {report.longest_skipped:,} chars); none was truncated",
            file=sys.stderr,
        )
    print(f"wrote {report.written:,} examples to {report.path}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from zoo.export.splits import options_from_cli, split_counts, write_splits

    options = options_from_cli(
        seed=args.seed,
        validation=args.validation,
        test=args.test,
        group=args.group,
        ood_activations=args.ood_activations,
        ood_widths=args.ood_widths,
        ood_depths=args.ood_depths,
        ood_patterns=args.ood_patterns,
        ood_families=args.ood_families,
    )
    from zoo.progress import progress_bar

    with progress_bar("splitting") as progress:
        splits = write_splits(args.dir, options, overwrite=args.overwrite, rows_per_file=args.rows_per_file, progress=progress)
    Console().print(splits_table(args.dir, split_counts(splits)))
    return 0


def export_table(report, task: str, layout: str) -> Table:
    """Length statistics of an export (``ExportReport``); values fold, never cut, at any width."""
    table = Table(title=f"{task} / {layout}: {report.written:,} examples")
    table.add_column("length", overflow="fold")
    for stat in ("min", "mean", "p50", "p95", "max"):
        table.add_column(stat, justify="right", overflow="fold")
    for name, stats in report.stats().items():
        table.add_row(name, *(f"{stats[s]:,.0f}" if s in stats else "-" for s in ("min", "mean", "p50", "p95", "max")))
    return table


def splits_table(folder, counts) -> Table:
    """``(split, batches, records, files)`` rows as a table."""
    table = Table(title=f"splits of {folder}")
    for column in ("split", "batches", "records", "files"):
        table.add_column(column, justify="left" if column == "split" else "right", overflow="fold")
    for name, batches, rows, files in counts:
        table.add_row(name, f"{batches:,}", f"{rows:,}", f"{files:,}")
    return table


def cmd_card(args: argparse.Namespace) -> int:
    from zoo.export.card import write_card

    path = write_card(args.dir, repo_id=args.repo_id, license=args.license, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _print_plan(plan, console: Console | None = None) -> None:
    console = Console() if console is None else console
    if plan.remote_note:
        console.print(f"note: {plan.remote_note}")
    console.print(
        f"{plan.repo_id}: {len(plan.present)} files already there; {len(plan.uploads)} to upload "
        f"({plan.upload_bytes:,} bytes) in {len(plan.commits)} commits"
    )
    table = Table(title="plan")
    table.add_column("commit", justify="right", overflow="fold")
    table.add_column("file", overflow="fold")  # long split-file paths fold, never cut
    table.add_column("bytes", justify="right", overflow="fold")
    for i, commit in enumerate(plan.commits, start=1):
        for j, item in enumerate(commit):
            table.add_row(str(i) if j == 0 else "", item.path_in_repo, f"{item.size:,}", end_section=j == len(commit) - 1)
    console.print(table)
    if plan.stale:
        action = "deleted in the last commit" if plan.delete_stale else "left in place (--delete-stale removes them)"
        console.print(f"{len(plan.stale)} data files in the repository are not in the zoo: {action}")


def cmd_publish(args: argparse.Namespace) -> int:
    from zoo.export.publish import UploadFailed, plan_publish, publish

    options = {"files_per_commit": args.files_per_commit, "with_shards": args.with_shards, "delete_stale": args.delete_stale}
    if args.dry_run:
        _print_plan(plan_publish(args.dir, args.repo_id, **options))
        print("dry run: nothing was uploaded")
        return 0
    try:
        plan = publish(args.dir, args.repo_id, private=args.private, **options)
    except UploadFailed as error:
        print(f"zoo: error: {error}", file=sys.stderr)
        return 1
    print(f"published {len(plan.uploads)} files to https://huggingface.co/datasets/{args.repo_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write prompt/completion JSON Lines for language-model interpreters",
        description="Write prompt/completion JSON Lines (TRL SFTTrainer's format) for language-model "
        "interpreters: each record's weights and signatures as text, and the answer. The file appears only "
        "when complete; examples over --max-chars are skipped, never truncated.",
    )
    p.add_argument("dir", help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument(
        "--task", required=True, choices=TASKS,
        help="modification: a degraded model and its corrupted pattern in, the clean weights out; "
        "classification: a model in, its pattern names out",
    )
    p.add_argument("--layout", default="separate", choices=LAYOUTS, help="separate: signatures after all weights; interwoven: per layer")
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument("--messages", action="store_true", help="conversational form (lists of role/content messages)")
    p.add_argument("--precision", type=int, default=3, help="decimals per number (0-8)")
    p.add_argument("--max-chars", type=int, help="skip (never truncate) examples whose prompt+completion is longer")
    p.add_argument(
        "--split", choices=SPLIT_NAMES, metavar="SPLIT",
        help=f"only this split's records, one of {', '.join(SPLIT_NAMES)} (needs `zoo split`)",
    )
    p.add_argument("--model", default="clean", choices=MODELS, help="classification: which models of each record")
    p.add_argument("--limit", type=int, help="stop after this many examples")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "split",
        help="assign train/validation/test/OOD splits by batch and write split files",
        description="Assign every record to train, validation, test or an out-of-distribution split "
        "(held-out activations, widths, depths or pattern combinations), keeping each batch (or pattern set) "
        "in one split; write splits.json and one folder of Parquet files per split. Rerunning with the same "
        "options changes nothing.",
    )
    p.add_argument("dir", help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the assignment")
    p.add_argument("--validation", type=float, default=0.1, help="validation's share of in-distribution batches")
    p.add_argument("--test", type=float, default=0.1, help="test's share of in-distribution batches")
    p.add_argument("--group", default="batch", choices=("batch", "pattern_set"), help="unit kept in one split")
    p.add_argument("--ood-families", help="subject families, e.g. transformer -> ood_architecture (a family never seen in training)")
    p.add_argument("--ood-activations", help="comma list, e.g. gelu,tanh -> ood_architecture")
    p.add_argument("--ood-widths", help="widths or ranges, e.g. 38-40,12 -> ood_architecture")
    p.add_argument("--ood-depths", help="comma list of layer counts -> ood_architecture")
    p.add_argument("--ood-patterns", help="combinations, e.g. palindrome+sorted_ascending,majority -> ood_patterns")
    p.add_argument("--rows-per-file", type=int, help="records per split file (default: about 200 MB files)")
    p.add_argument("--overwrite", action="store_true", help="replace splits made with other options")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser(
        "card",
        help="write the Hugging Face dataset card (README.md)",
        description="Write the zoo's Hugging Face dataset card (README.md): front matter listing the data "
        "files per split, the generating config, the record columns, the pattern table, accuracy and "
        "degradation statistics, and a loading snippet.",
    )
    p.add_argument("dir", help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--repo-id", help="USER/NAME used in the card's loading snippet")
    p.add_argument("--license", default="apache-2.0", help="license named in the card's front matter")
    p.add_argument("--overwrite", action="store_true", help="replace a README.md that zoo card did not write")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser(
        "publish",
        help="upload the zoo to a Hugging Face dataset repository (resumable)",
        description="Upload the zoo (card, config, probe set, split files or shards) to a Hugging Face "
        "dataset repository, in commits of --files-per-commit files, the card last. A rerun after an "
        "interruption uploads only what is missing or changed. Needs a token (HF_TOKEN or `hf auth login`) "
        "and a current card (`zoo card`); --dry-run needs neither the token nor the network.",
    )
    p.add_argument("dir", help="zoo folder or pyarrow.fs URI (s3://bucket/zoo)")
    p.add_argument("--repo-id", required=True, help="USER/NAME")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument(
        "--dry-run", action="store_true",
        help="print the plan of a full upload; upload nothing, read no token, make no network calls",
    )
    p.add_argument("--files-per-commit", type=int, default=50, help="data files per commit")
    p.add_argument("--with-shards", action="store_true", help="also upload the shards and manifest of a split zoo")
    p.add_argument("--delete-stale", action="store_true", help="delete repository data files the zoo no longer has")
    p.set_defaults(func=cmd_publish)
