"""Training a population: stacks of coders stepped together, early-stopped one by one on held-out streams.

``train_population(streams, specs, config)`` standardizes every stream with its training
statistics (``spec.Standardizer``: mean-centered, one scalar scale so that the mean squared
norm is the width), splits the specs into stacks (one per kind, and with ``bucket`` one per
padded shape ``(D_in, D_out, M)``), and trains each stack as one computation:

1. ``b_dec`` starts at the geometric median of the stream's first ``median_tokens`` tokens;
2. each step, every coder takes a batch of its own stream and the summed objective is
   back-propagated once; the gradient of each decoder row parallel to the row is removed,
   ``zoo.optim.StackedAdam`` steps every weight with the coder's own rate
   (``lr ∝ 1/sqrt(latents)`` unless the spec gives one; 0 once stopped), and decoder rows are
   renormalized to unit norm;
3. every ``eval_every`` steps the held-out objective (FVU, plus the L1 term for ReLU; no
   AuxK) of every coder is computed on its own held-out stream; a coder keeps its best
   weights, and stops after ``patience`` evaluations without a relative improvement of
   ``min_delta``. ``patience=None`` trains exactly ``steps`` steps and keeps the last weights.

Dead latents for AuxK are those that have not fired for ``dead_tokens`` training tokens
(default: one pass over the coder's stream). The final metrics (``metrics.py``) are taken on
the held-out stream with the inference rule.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from zoo.optim import StackedAdam
from zoo.readers.sae.data import Batches, median_bias, pad_stack
from zoo.readers.sae.module import SparseCoder
from zoo.readers.sae.population import Stack
from zoo.readers.sae.spec import PreparedStream, SAESpec, Standardizer, Stream, TrainConfig, check_specs, prepare
from zoo.runtime import resolve_device, torch_threads


@dataclass(eq=False)
class TrainedCoder:
    """One trained coder: its weights in standardized space, the stream statistics, and its metrics."""

    spec: SAESpec
    d_in: int
    d_out: int
    weights: dict
    x_std: Standardizer
    y_std: Standardizer
    metrics: dict
    best_step: int
    steps: int

    def module(self, standardized: bool = False) -> SparseCoder:
        """The coder as an ``nn.Module`` on raw activations (the statistics folded in), or on standardized ones."""
        from zoo.readers.sae.store import fold

        coder = SparseCoder(
            self.d_in, self.spec.latents, self.d_out, kind=self.spec.kind, k=self.spec.k,
            transcode=self.spec.transcode, skip=self.spec.skip,
        )  # fmt: skip
        coder.load_weights(self.weights if standardized else fold(self.weights, self.x_std, self.y_std, self.spec))
        return coder.eval()


@dataclass(eq=False)
class PopulationResult:
    coders: list[TrainedCoder]  # in the order of the specs
    seconds: float
    history: list[dict] = field(default_factory=list)  # per stack: {"labels", "steps", "objective" [E][S]}

    def table(self) -> list[dict]:
        return [{"label": c.spec.label, **c.metrics, "best_step": c.best_step, "steps": c.steps} for c in self.coders]


def train_population(streams: list[Stream], specs: list[SAESpec], config: TrainConfig | None = None) -> PopulationResult:
    config = config or TrainConfig()
    by_name = check_specs(list(streams), list(specs))
    device = resolve_device(config.device, "sae.device")
    prepared = {name: prepare(by_name[name]) for name in OrderedDict.fromkeys(s.stream for s in specs)}
    groups: dict[tuple, list[int]] = OrderedDict()
    for i, spec in enumerate(specs):
        p = prepared[spec.stream]
        key = (spec.kind,)
        if config.bucket:
            key += (p.stream.d_in, p.stream.d_out if spec.transcode else p.stream.d_in, spec.latents)
        groups.setdefault(key, []).append(i)
    coders: list[TrainedCoder | None] = [None] * len(specs)
    history = []
    start = time.perf_counter()
    with torch_threads(config.threads):
        for indices in groups.values():
            trained, hist = train_stack([specs[i] for i in indices], prepared, config, device)
            for i, coder in zip(indices, trained):
                coders[i] = coder
            history.append(hist)
    return PopulationResult(coders=coders, seconds=time.perf_counter() - start, history=history)


def _widths(specs: list[SAESpec], prepared: dict[str, PreparedStream]) -> tuple[list[int], list[int]]:
    d_in = [prepared[s.stream].stream.d_in for s in specs]
    d_out = [prepared[s.stream].stream.d_out if s.transcode else prepared[s.stream].stream.d_in for s in specs]
    return d_in, d_out


def init_stack(
    specs: list[SAESpec], prepared: dict[str, PreparedStream], config: TrainConfig, device: torch.device
) -> tuple[Stack, Batches, list[str]]:
    """A stack at its initial weights (``b_dec`` at the geometric medians) and its batch source."""
    d_in, d_out = _widths(specs, prepared)
    stack = Stack(specs, d_in, d_out, device, threshold_decay=config.threshold_decay)
    names = list(OrderedDict.fromkeys(s.stream for s in specs))
    medians: dict[tuple[str, bool], torch.Tensor] = {}
    with torch.no_grad():
        for i, spec in enumerate(specs):
            key = (spec.stream, spec.transcode)
            if key not in medians:
                medians[key] = median_bias(prepared[spec.stream], spec.transcode, config.median_tokens)
            stack.params["b_dec"][i, 0, : d_out[i]] = medians[key].to(device)
    batches = Batches(
        [prepared[n] for n in names], [names.index(s.stream) for s in specs], [s.transcode for s in specs],
        stack.D_in, stack.D_out, config.data_seed, device,
    )  # fmt: skip
    return stack, batches, names


def train_step(stack: Stack, optimizers: dict[str, StackedAdam], x: torch.Tensor, y: torch.Tensor, dead) -> torch.Tensor:
    """One step of every active coder; returns which latents fired ``[S, M]``."""
    out = stack.objective(x, y, dead)
    for p in stack.params.values():
        p.grad = None
    out.loss.sum().backward()
    stack.remove_parallel_grad()
    lr = stack.lr * stack.active[:, None, None]
    with torch.no_grad():
        for name, opt in optimizers.items():
            opt.step(stack.params[name].grad, lr)
    stack.normalize_decoder()
    return out.fired


def train_stack(
    specs: list[SAESpec], prepared: dict[str, PreparedStream], config: TrainConfig, device: torch.device
) -> tuple[list[TrainedCoder], dict]:
    from zoo.readers.sae.metrics import HeldOut

    stack, batches, names = init_stack(specs, prepared, config, device)
    held_out = HeldOut(stack, [prepared[n] for n in names], [names.index(s.stream) for s in specs], config, device)
    optimizers = {name: StackedAdam(p.detach()) for name, p in stack.params.items()}
    S, B = stack.S, config.batch_size
    lat_bool = stack.lat_mask[:, 0, :].bool()
    use_auxk = bool((stack.auxk > 0).any())
    window = [config.dead_tokens or len(prepared[s.stream].train) for s in specs]
    dead_tokens = torch.tensor(window, device=device)[:, None]
    since = torch.zeros(S, stack.M, dtype=torch.long, device=device)
    best = {name: p.detach().clone() for name, p in stack.params.items()}
    best_threshold = stack.threshold.clone()
    best_obj = torch.full((S,), float("inf"), device=device)
    best_step = torch.zeros(S, dtype=torch.long, device=device)
    stopped_at = torch.full((S,), config.steps, dtype=torch.long, device=device)
    bad = torch.zeros(S, dtype=torch.long, device=device)
    hist = {"labels": [s.label for s in specs], "steps": [], "objective": []}
    for step in range(1, config.steps + 1):
        x, y = batches.next(B)
        dead = ((since >= dead_tokens) & lat_bool) if use_auxk else None
        fired = train_step(stack, optimizers, x, y, dead)
        since = torch.where(fired, torch.zeros_like(since), since + B)
        if step % config.eval_every and step != config.steps:
            continue
        objective = held_out.evaluate()["objective"]
        hist["steps"].append(step)
        hist["objective"].append(objective.tolist())
        if config.patience is None:
            continue
        improved = (objective < best_obj * (1 - config.min_delta)) & stack.active
        with torch.no_grad():
            for name, p in stack.params.items():
                best[name] = torch.where(improved.view(-1, *[1] * (p.dim() - 1)), p.detach(), best[name])
        best_threshold = torch.where(improved, stack.threshold, best_threshold)
        best_obj = torch.where(improved, objective, best_obj)
        best_step = torch.where(improved, torch.full_like(best_step, step), best_step)
        bad = torch.where(improved, torch.zeros_like(bad), bad + stack.active.long())
        stop = stack.active & (bad >= config.patience)
        stopped_at = torch.where(stop, torch.full_like(stopped_at, step), stopped_at)
        stack.active = stack.active & ~stop
        if not bool(stack.active.any()):
            break
    if config.patience is not None:
        with torch.no_grad():
            for name, p in stack.params.items():
                p.copy_(best[name])
        stack.threshold = best_threshold
    else:
        best_step = torch.full_like(best_step, config.steps)
    metrics = held_out.metrics()
    d_in, d_out = _widths(specs, prepared)
    coders = []
    for i, spec in enumerate(specs):
        p = prepared[spec.stream]
        coders.append(
            TrainedCoder(
                spec=spec, d_in=d_in[i], d_out=d_out[i], weights=stack.weights(i, d_in[i], d_out[i]),
                x_std=p.x_std, y_std=p.y_std if spec.transcode else p.x_std, metrics=metrics[i],
                best_step=int(best_step[i]), steps=int(stopped_at[i]),
            )  # fmt: skip
        )
    return coders, hist


__all__ = ["PopulationResult", "TrainedCoder", "train_population", "pad_stack"]
