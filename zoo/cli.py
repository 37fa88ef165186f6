"""The ``zoo`` command. Thin: parse arguments, call the library, print, exit.

User errors (bad config, bad paths, a folder that holds another zoo) are printed
as one line on stderr with exit code 2 and nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from zoo.config import ConfigError

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user: reported as one line, exit 2."""


def _fail(message: str) -> int:
    print(f"zoo: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other bad input
        self.exit(EXIT_USAGE, f"zoo: error: {message}\n")


def _load_zoo_config(args: argparse.Namespace):
    from zoo.config import ZooConfig, load_config

    overrides: dict = {}
    if getattr(args, "batches", None) is not None:
        overrides["batches"] = args.batches
    runtime = {k: v for k, v in (("workers", getattr(args, "workers", None)), ("address", getattr(args, "address", None))) if v is not None}
    if runtime:
        overrides["runtime"] = runtime
    if args.config is None:
        from zoo.config import parse_config

        return parse_config(overrides, ZooConfig)
    return load_config(args.config, ZooConfig, overrides)


def cmd_bench(args: argparse.Namespace) -> int:
    from zoo.bench import render_bench, run_bench

    config = _load_zoo_config(args)
    result = run_bench(
        config, models=args.models, threads=args.threads, progress=not args.json, reference_models=args.reference_models
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        render_bench(result, Console())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from zoo.factory.runner import generate

    config = _load_zoo_config(args)
    generate(config, Path(args.out), console=Console())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from zoo.factory.summary import render_summary, summarize

    summary = summarize(_existing_zoo(args.dir))
    if args.json:
        print(json.dumps(summary))
    else:
        render_summary(summary, Console())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from zoo.factory.reader import verify

    problems = verify(_existing_zoo(args.dir))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.dir}: every shard matches the manifest")
    return 0


def _existing_zoo(path: str) -> Path:
    folder = Path(path)
    if not (folder / "zoo.json").is_file():
        raise UsageError(f"{folder}: not a zoo folder (no zoo.json)")
    return folder


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="zoo config YAML (default: the built-in defaults)")
    parser.add_argument("--batches", type=int, help="override the config's batch count")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="A Ray-distributed model-zoo factory for interpretability research.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("generate", help="generate a zoo of clean/degraded model pairs")
    _add_run_options(p)
    p.add_argument("--out", required=True, help="output folder (resumed if it holds the same zoo)")
    p.add_argument("--workers", type=int, help="Ray actors (0: in-process, no Ray)")
    p.add_argument("--address", help="Ray cluster address (default: start an embedded local Ray)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("inspect", help="summarize a zoo folder")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="check every shard against the manifest")
    p.add_argument("dir")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="population trainer vs the sequential reference")
    _add_run_options(p)
    p.add_argument("--models", type=int, default=48, help="models the population trainer trains")
    p.add_argument(
        "--reference-models", type=int, default=None,
        help="models the sequential reference trains, the first of them (default: all; on a GPU, e.g. 48)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for both trainers (default 1: one core, as a factory worker)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Commands that live beside their library code (export, readers), added when present."""
    registers = []
    for module_name in ("zoo.export.commands", "zoo.readers.commands", "zoo.factory.commands"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        registers.append(module.register)
    return registers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, UsageError) as error:
        return _fail(str(error))
    except FileExistsError as error:
        return _fail(str(error))
    except ValueError as error:
        if type(error).__module__.startswith("zoo."):
            return _fail(str(error))
        raise


if __name__ == "__main__":
    sys.exit(main())
