"""Progress bars for the commands that run longer than a few seconds.

Library functions take a plain callback, ``progress(done, total, what)`` (``total`` None
when unknown, ``what`` None to keep the last description), and know nothing of the
terminal. A command wraps one around a call::

    with progress_bar("evaluating", enabled=not args.json) as progress:
        report = evaluate(..., progress=progress)

The bar is rich's ``Progress``, transient, on stderr: it never mixes with what a command
prints on stdout, and it is hidden (the callback does nothing) when stderr is not a
terminal (a pipe, a log file, a test) or when the command is quiet.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

Progress = Callable[..., None]
"""``progress(done: int, total: int | None = None, what: str | None = None) -> None``."""


def no_progress(done: int, total: int | None = None, what: str | None = None) -> None:
    """The callback of a hidden bar: does nothing."""


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress_bar(description: str, *, enabled: bool = True, console=None) -> Iterator[Progress]:
    """A transient bar on stderr (or ``console``), yielded as a ``progress(done, total, what)`` callback."""
    from rich.console import Console

    console = Console(stderr=True) if console is None else console
    if not enabled or not console.is_terminal:
        yield no_progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # stdout printed while the bar shows goes above it when both are the terminal; into its
        # file, untouched, when stdout is redirected
        redirect_stdout=_isatty(sys.stdout),
    )
    with bar:
        current = {"what": description, "task": bar.add_task(description, total=None)}

        def update(done: int, total: int | None = None, what: str | None = None) -> None:
            if what is not None and what != current["what"]:  # a new phase: its own bar, time and estimate
                bar.remove_task(current["task"])
                current.update(what=what, task=bar.add_task(what, total=total, completed=done))
                return
            task = bar.tasks[[t.id for t in bar.tasks].index(current["task"])]
            if total != task.total:
                task.total = total  # rich's update() cannot set an unknown total back
            bar.update(current["task"], completed=done)

        yield update
