"""CLI commands of the readers: each reader package registers its own.

A reader package ``zoo.readers.<name>`` may define ``commands.register(subparsers)``
for its top-level command (``zoo interpret``, ``zoo probe``) and
``commands.register_tune(tune_subparsers)`` for its sweep (``zoo tune <name>``).
"""

from __future__ import annotations

import argparse
import importlib

READERS = ("interpreter", "probes", "sae")


def _reader_commands():
    for name in READERS:
        module_name = f"zoo.readers.{name}.commands"
        try:
            yield importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name not in (module_name, f"zoo.readers.{name}"):
                raise


def register(subparsers: argparse._SubParsersAction) -> None:
    modules = list(_reader_commands())
    for module in modules:
        if hasattr(module, "register"):
            module.register(subparsers)
    tuners = [m for m in modules if hasattr(m, "register_tune")]
    if tuners:
        tune = subparsers.add_parser(
            "tune",
            help="Ray Tune sweeps of a reader's hyperparameters",
            description="Ray Tune (ASHA) sweeps of a reader's hyperparameters: `zoo tune READER --help` "
            "for a reader's options.",
        )
        tune_sub = tune.add_subparsers(
            dest="reader", required=True, parser_class=subparsers._parser_class, metavar="READER"
        )
        for module in tuners:
            module.register_tune(tune_sub)
