"""Where torch computes: the device a setting names, and the CPU threads it may use.

Every part of zoo that runs torch (the factory's trainers and actors, the probes,
the interpreter, the bench) takes its device from ``resolve_device`` and its thread
count from ``torch_threads``, so ``auto`` means the same everywhere and a thread
count set for one computation never leaks into the next one in the same process.
torch is imported on first use: the Ray driver and the CLI's fast paths never load it.

``auto`` prefers CUDA, then Apple's ``mps`` (a laptop's GPU), then the CPU. On ``mps`` an op
torch has no kernel for runs on the CPU when ``PYTORCH_ENABLE_MPS_FALLBACK=1`` was set before
torch was imported (``import zoo`` sets it unless it is set already); torch's several-line
warning about it becomes one ``zoo: note:`` line per op (``note_cpu_fallbacks``).
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MPS_FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"
_FALLBACK = re.compile(r"operator '([^']+)' is not currently supported on the MPS backend")


class DeviceError(ValueError):
    """A device was asked for that this process cannot use."""


def pick_device(requested: str, cuda: bool, mps: bool, setting: str = "training.device") -> str:
    """The device type to use for ``requested`` given what torch sees (``cuda``, ``mps``: available).

    ``auto`` takes CUDA, else ``mps``, else the CPU, so the same config runs on GPU nodes,
    Apple laptops and anything else; ``cuda`` or ``mps`` asked for where it is absent is a
    ``DeviceError`` naming ``setting``.
    """
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise DeviceError(f"{setting} is 'cuda' but torch sees no CUDA device")
    if requested == "mps" and not mps:
        raise DeviceError(f"{setting} is 'mps' but torch sees no Apple GPU (mps)")
    return requested


def resolve_device(device: str = "auto", setting: str = "training.device") -> torch.device:
    """``device`` (``auto``, ``cpu``, ``cuda``, ``mps``) as a ``torch.device`` (see ``pick_device``)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    chosen = pick_device(device, torch.cuda.is_available(), mps is not None and mps.is_available(), setting)
    if chosen == "mps":
        note_cpu_fallbacks()
    return torch.device(chosen)


def fallback_note(message: str) -> str | None:
    """The one line for torch's warning that an op falls back from ``mps`` to the CPU; None for other warnings."""
    match = _FALLBACK.search(message)
    if match is None:
        return None
    return f"zoo: note: {match.group(1)} has no mps kernel in this torch; it runs on the CPU (slower)"


def note_cpu_fallbacks() -> None:
    """Show torch's mps-to-CPU fallback warnings as one ``fallback_note`` line each on stderr
    (torch warns once per op); every other warning is shown as before. Idempotent."""
    shown = warnings.showwarning
    if getattr(shown, "zoo_fallback_notes", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        note = fallback_note(str(message))
        if note is None:
            return shown(message, category, filename, lineno, file, line)
        print(note, file=sys.stderr)

    show.zoo_fallback_notes = True  # type: ignore[attr-defined]
    warnings.showwarning = show


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads, restoring the previous count afterwards.

    ``None`` or ``0`` leaves torch's setting as it is.
    """
    import torch

    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n and torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
