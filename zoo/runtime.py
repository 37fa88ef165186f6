"""Where torch computes: the device a setting names, and the CPU threads it may use.

Every part of zoo that runs torch (the factory's trainers and actors, the probes,
the interpreter, the bench) takes its device from ``resolve_device`` and its thread
count from ``torch_threads``, so ``auto`` means the same everywhere and a thread
count set for one computation never leaks into the next one in the same process.
torch is imported on first use: the Ray driver and the CLI's fast paths never load it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class DeviceError(ValueError):
    """A device was asked for that this process cannot use."""


def resolve_device(device: str = "auto", setting: str = "training.device") -> torch.device:
    """``auto`` takes CUDA when present, so the same config runs on laptops and GPU nodes.

    ``setting`` names the config field in the error raised when ``cuda`` is asked for
    and torch sees no CUDA device.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{setting} is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


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
