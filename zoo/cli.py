"""The ``zoo`` command. Thin: parse arguments, call the library, print, exit.

User errors (bad config, bad paths, a folder that holds another zoo, an --out that
is read-only, full or a file, a Ray address where nothing answers) are printed as
one line on stderr with exit code 2; a value given by a flag is named by the flag
(``--batches -1: ...``), not by the YAML field it overrides. Ctrl-C exits 130 with
one line (for ``generate``: how to resume).
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import shlex
import sys
from collections.abc import Callable

from rich.console import Console

from zoo.config import ConfigError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(ValueError):
    """Bad input from the user: reported as one line, exit 2."""


def _fail(message: str) -> int:
    print(f"zoo: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class HelpFormatter(argparse.HelpFormatter):
    """The one help formatter of the whole ``zoo`` tree: descriptions wrap by paragraph (blank lines
    kept; an indented line is kept as it is, for examples), and a flag's help ends in
    ``(default: ...)`` unless its default is None or off (a store_true flag) or the help text
    already says what the default is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith(" "):
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if "%(default)" in help or "(default" in help:
            return help
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return help
        if help.endswith(")"):  # "Ray actors (0: in-process)" -> "Ray actors (0: in-process; default: 0)"
            return f"{help[:-1]}; default: %(default)s)"
        return f"{help} (default: %(default)s)" if help else "(default: %(default)s)"


class _SubParsers(argparse._SubParsersAction):
    """Subcommands whose ``description`` defaults to their one-line ``help``, so that every
    ``zoo ... --help`` starts by saying what the command does."""

    def add_parser(self, name: str, **kwargs):
        if kwargs.get("description") is None and kwargs.get("help"):
            text = kwargs["help"]
            kwargs["description"] = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
        kwargs.setdefault("formatter_class", HelpFormatter)
        return super().add_parser(name, **kwargs)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubParsers)

    def error(self, message: str) -> None:  # one line, exit 2, as for every other bad input
        self.exit(EXIT_USAGE, f"zoo: error: {message}\n")


_FLAG_FIELDS = (("--batches", "batches", "batches"), ("--workers", "workers", "runtime.workers"),
                ("--address", "address", "runtime.address"))
"""(flag, argument, config field it overrides) of the run options."""


def _load_zoo_config(args: argparse.Namespace):
    from zoo.config import zoo_config_from

    given = {attr: getattr(args, attr, None) for _, attr, _ in _FLAG_FIELDS}
    try:
        return zoo_config_from(args.config, **given)
    except ConfigError as error:
        raise ConfigError(_flag_error(str(error), given)) from None


def _flag_error(message: str, given: dict) -> str:
    """A config error about a value a flag gave, said about the flag (``--batches -1: ...``), not the
    YAML field it overrides (which the user never typed)."""
    for flag, attr, field in _FLAG_FIELDS:
        if given[attr] is None:
            continue
        match = re.search(rf"(?:^|: ){re.escape(field)}: (.*)", message)
        if match:
            return f"{flag} {given[attr]}: {match.group(1)}"
    return message


def cmd_bench(args: argparse.Namespace) -> int:
    from zoo.bench import render_bench, run_bench

    transformer = args.family == "transformer"
    if transformer and args.config is None:
        args.config = "configs/zoo/transformer.yaml"
    config = _load_zoo_config(args)
    models = args.models if args.models is not None else (16 if transformer else 48)
    reference_models = args.reference_models
    if reference_models is None and transformer:
        reference_models = min(4, models)
    result = run_bench(
        config, models=models, threads=args.threads, progress=not args.json, reference_models=reference_models,
        family=args.family, peer=args.peer,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        render_bench(result, Console())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from zoo.factory.runner import generate

    config = _load_zoo_config(args)
    if args.address and config.runtime.workers > 0:
        from zoo.pool import check_reachable

        check_reachable(args.address, "--address")  # before anything is written, in seconds
    generate(config, args.out, console=Console())
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
    from zoo.progress import progress_bar

    if args.workers < 0:
        raise UsageError(f"--workers {args.workers}: must be 0 (in-process) or more")
    folder = _existing_zoo(args.dir)
    if args.repair:
        from zoo.factory.runner import repair

        repair(folder, console=Console(stderr=True), workers=args.workers)
    with progress_bar("verifying") as progress:
        problems = verify(folder, progress=progress)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.dir}: every shard matches the manifest")
    return 0


def _existing_zoo(path: str):
    from zoo.storage import resolve

    store = resolve(path)  # a folder or a pyarrow.fs URI
    if not store.is_file("zoo.json"):
        raise UsageError(f"{store.name}: not a zoo folder (no zoo.json)")
    return store


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="zoo config YAML (default: the built-in defaults)")
    parser.add_argument("--batches", type=int, help="override the config's batch count")


def build_parser() -> argparse.ArgumentParser:
    from zoo import __version__

    parser = _Parser(
        prog="zoo",
        description="A Ray-distributed model-zoo factory for interpretability research.\n\n"
        "Run `zoo COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"zoo {__version__}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser(
        "generate",
        help="generate a zoo of clean/degraded model pairs",
        description="Generate a zoo of clean/degraded model pairs: sample patterns and architectures, train each "
        "batch as one population, write Parquet shards and a manifest. Rerunning on the same folder with the "
        "same config resumes where it stopped.",
    )
    _add_run_options(p)
    p.add_argument(
        "--out", required=True,
        help="output folder or pyarrow.fs URI, e.g. s3://bucket/zoo (resumed if it holds the same zoo)",
    )
    p.add_argument("--workers", type=int, help="Ray actors (default: the config's runtime.workers; 0: in-process, no Ray)")
    p.add_argument("--address", help="Ray cluster address (default: the config's runtime.address, else an embedded local Ray)")
    p.set_defaults(func=cmd_generate, resumable=True)

    p = sub.add_parser(
        "inspect",
        help="summarize a zoo folder",
        description="Summarize a zoo folder: record, batch and shard counts, size, accuracy and degradation "
        "statistics, patterns and architectures.",
    )
    p.add_argument("dir", help="zoo folder or URI (holds zoo.json)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "verify",
        help="check every shard against the manifest",
        description="Check every shard against the manifest (size, sha256, row count, schema, batch ids); "
        "exit 1 listing the problems, if any. With --repair, first set aside manifest entries whose shard is "
        "missing, truncated, corrupt or listed twice and compute their batches again from the zoo's config.yaml.",
    )
    p.add_argument("dir", help="zoo folder or URI (holds zoo.json)")
    p.add_argument(
        "--repair", action="store_true",
        help="heal first: recompute the batches of every entry that does not match its shard (no shard is deleted)",
    )
    p.add_argument("--workers", type=int, default=0, help="Ray actors for --repair (0: in-process, no Ray)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "bench",
        help="population trainer vs the sequential reference",
        description="Time the population trainer against the sequential reference trainer on the same "
        "models, and compare their accuracies on the models both trained.",
    )
    _add_run_options(p)
    p.add_argument(
        "--family", choices=["mlp", "transformer"], default="mlp",
        help="subject family to bench (transformer: default config configs/zoo/transformer.yaml)",
    )
    p.add_argument(
        "--models", type=int, default=None, help="models the population trainer trains; with --family transformer, 16 (default: 48)"
    )
    p.add_argument(
        "--reference-models", type=int, default=None,
        help="models the sequential reference trains, the first of them (default: all; transformer: 4; on a GPU, e.g. 48)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for both trainers (default: 1, one core, as a factory worker)")
    p.add_argument(
        "--peer", choices=["vmap"], default=None,
        help="also train every model with a peer trainer: vmap, the torch.func ensemble (stack_module_state, vmap(grad))",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Commands that live beside their library code (export, readers), added when present."""
    registers = []
    for module_name in ("zoo.export.commands", "zoo.readers.commands", "zoo.factory.commands", "zoo.languages.commands"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        registers.append(module.register)
    return registers


def _interrupted(args: argparse.Namespace, argv: list[str]) -> int:
    if getattr(args, "resumable", False):
        line = f"interrupted; finished batches are kept: rerun `zoo {shlex.join(argv)}` to resume"
    else:
        line = "interrupted"
    print(f"zoo: {line}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _os_error(error: OSError) -> str:
    """One line for what the machine refused (read-only, full, a file in the way), naming the path."""
    where = f"{error.filename}: " if error.filename else ""
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}not writable (read-only, or no permission)"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}no space left on the device; free some and rerun the same command (finished work is kept)"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}a file is in the way where a folder is needed"
    return f"{where}{error.strerror or str(error).splitlines()[0]}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _interrupted(args, argv)
    except (ConfigError, UsageError) as error:
        return _fail(str(error))
    except FileExistsError as error:
        if error.filename and str(error).startswith("[Errno"):  # the OS's, not one of zoo's lines
            return _fail(_os_error(error))
        return _fail(str(error))
    except OSError as error:
        if type(error).__module__.startswith("zoo.") or error.errno is None:
            raise
        return _fail(_os_error(error))
    except ValueError as error:
        if type(error).__module__.startswith("zoo."):
            return _fail(str(error))
        raise


if __name__ == "__main__":
    sys.exit(main())
