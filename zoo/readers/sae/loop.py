"""The per-SAE reference: one ``nn.Module`` and one ``torch.optim.Adam`` per coder, trained one after another.

It reads the same standardized streams in the same order (``data.StreamOrder``), starts
from the same weights (``module.init_weights``, ``b_dec`` at the same geometric median),
applies the same decoder constraint and trains for exactly ``config.steps`` steps (no early
stopping). The population (``train.train_population`` with ``patience=None``) must match it
to float rounding; the benchmark (``bench.py``) times both.
"""

from __future__ import annotations

import time

import torch

from zoo.readers.sae.data import StreamOrder, median_bias, stream_seed
from zoo.readers.sae.module import SparseCoder
from zoo.readers.sae.spec import SAESpec, Stream, TrainConfig, check_specs, prepare
from zoo.runtime import resolve_device, torch_threads


def train_loop(
    streams: list[Stream], specs: list[SAESpec], config: TrainConfig | None = None
) -> tuple[list[SparseCoder], float]:
    """Coders in standardized space (as ``TrainedCoder.module(standardized=True)``), and the seconds it took."""
    config = config or TrainConfig()
    by_name = check_specs(list(streams), list(specs))
    prepared = {name: prepare(by_name[name]) for name in dict.fromkeys(s.stream for s in specs)}
    device = resolve_device(config.device, "sae.device")
    coders = []
    start = time.perf_counter()
    with torch_threads(config.threads):
        for spec in specs:
            p = prepared[spec.stream]
            x_all = torch.from_numpy(p.train).to(device)
            y_all = torch.from_numpy(p.target_train).to(device) if spec.transcode else x_all
            coder = SparseCoder.from_spec(spec, x_all.shape[1], y_all.shape[1])
            with torch.no_grad():
                coder.b_dec.copy_(median_bias(p, spec.transcode, config.median_tokens))
            coders.append(_fit(coder.to(device), spec, x_all, y_all, config, stream_seed(config.data_seed, spec.stream)))
        if device.type == "cuda":  # the queue drains before the clock stops
            torch.cuda.synchronize(device)
    return [c.cpu() for c in coders], time.perf_counter() - start


def _fit(coder: SparseCoder, spec: SAESpec, x_all, y_all, config: TrainConfig, seed: int) -> SparseCoder:
    optimizer = torch.optim.Adam(coder.parameters(), lr=spec.learning_rate)
    order = StreamOrder(len(x_all), seed)
    B = config.batch_size
    window = config.dead_tokens or len(x_all)
    since = torch.zeros(spec.latents, dtype=torch.long, device=x_all.device)
    threshold = None
    for _ in range(config.steps):
        idx = order.next(B).to(x_all.device)
        x, y = x_all[idx], y_all[idx]
        dead = since >= window if spec.auxk else None
        loss, _, fired, smallest = coder.objective(x, y, alpha=spec.alpha, auxk=spec.auxk, dead=dead)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        coder.remove_parallel_grad()
        optimizer.step()
        coder.normalize_decoder()
        with torch.no_grad():
            if smallest is not None:
                d = config.threshold_decay
                threshold = smallest if threshold is None else d * threshold + (1 - d) * smallest
                coder.threshold.fill_(threshold)
            since = torch.where(fired, torch.zeros_like(since), since + B)
    return coder.eval()
