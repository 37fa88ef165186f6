"""How coders read their streams: a data order per stream, padded stacks, and per-step batches.

Every stream has its own order, a fresh permutation of its training tokens each pass,
drawn from ``(data_seed, stream name)``: a coder sees the same batches whichever stack
it is trained in, and the per-SAE reference loop (``zoo.readers.sae.loop``) sees them too.
A step gathers one batch per stream (``[n_streams, B, D]``) and indexes it by each
coder's stream (``[S, B, D]``); coders on one stream share the batch.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from zoo.readers.sae.module import geometric_median
from zoo.readers.sae.spec import PreparedStream


def stream_seed(data_seed: int, name: str) -> int:
    return (int(data_seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


class StreamOrder:
    """Batches of token indices over ``n`` tokens: one permutation per pass, wrapping across passes."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self, batch: int) -> torch.Tensor:
        parts, need = [], batch
        while need:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.gen)
                self.pos = 0
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def pad_stack(arrays: list[np.ndarray], width: int, device: torch.device) -> torch.Tensor:
    """``[n, max tokens, width]`` float32, zero-padded in tokens and features."""
    out = torch.zeros(len(arrays), max(len(a) for a in arrays), width)
    for i, a in enumerate(arrays):
        out[i, : len(a), : a.shape[1]] = torch.from_numpy(a)
    return out.to(device)


def median_bias(prepared: PreparedStream, target: bool, tokens: int) -> torch.Tensor:
    """The geometric median of a stream's first ``tokens`` training rows (the target's, for transcoders)."""
    data = prepared.target_train if target else prepared.train
    return geometric_median(torch.from_numpy(data[:tokens]))


class Batches:
    """Per-step batches ``x [S, B, D_in]`` and ``y [S, B, D_out]`` for a stack's coders."""

    def __init__(
        self,
        streams: list[PreparedStream],
        stream_id: list[int],
        transcode: list[bool],
        D_in: int,
        D_out: int,
        data_seed: int,
        device: torch.device,
    ) -> None:
        self.orders = [StreamOrder(len(p.train), stream_seed(data_seed, p.stream.name)) for p in streams]
        self.x = pad_stack([p.train for p in streams], D_in, device)
        self.any_transcode = any(transcode)
        if self.any_transcode:
            targets = [p.target_train if p.target_train is not None else p.train for p in streams]
            self.y = pad_stack(targets, D_out, device)
        self.stream_id = torch.tensor(stream_id, device=device)
        self.single = len(streams) == 1
        self.transcode = torch.tensor(transcode, device=device)[:, None, None]
        self.D_in, self.D_out = D_in, D_out
        self.rows = torch.arange(len(streams), device=device)[:, None]

    def _by_coder(self, per_stream: torch.Tensor) -> torch.Tensor:
        if self.single:
            return per_stream.expand(len(self.stream_id), *per_stream.shape[1:])
        return per_stream[self.stream_id]

    def _as_output(self, x: torch.Tensor) -> torch.Tensor:
        if self.D_in >= self.D_out:
            return x[..., : self.D_out]
        return torch.nn.functional.pad(x, (0, self.D_out - self.D_in))

    def next(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.stack([order.next(batch) for order in self.orders]).to(self.x.device)
        x = self._by_coder(self.x[self.rows, idx])
        if not self.any_transcode:
            return x, x
        y = self._by_coder(self.y[self.rows, idx])
        return x, torch.where(self.transcode, y, self._as_output(x))
