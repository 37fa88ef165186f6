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
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from zoo.optim import StackedAdam
from zoo.readers.sae.data import Batches, median_bias, pad_stack
from zoo.readers.sae.module import SparseCoder
from zoo.readers.sae.population import Stack
from zoo.readers.sae.spec import PreparedStream, SAESpec, Standardizer, Stream, TrainConfig, check_specs, prepare
from zoo.runtime import resolve_device, torch_threads

OnEval = Callable[[int, list[str], dict[str, list[float]]], None]
"""``(step, coder labels, {"fvu", "objective", "l0", "dead_fraction": one value per coder})``."""


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


def train_population(
    streams: list[Stream], specs: list[SAESpec], config: TrainConfig | None = None, on_eval: OnEval | None = None
) -> PopulationResult:
    """Train every spec on its stream; ``on_eval(step, labels, held-out metrics)`` after each stack's evaluations."""
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
            trained, hist = train_stack([specs[i] for i in indices], prepared, config, device, on_eval)
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


class EarlyStop:
    """Per coder: the best held-out objective so far, the weights, threshold and step that gave it, and who has stopped."""

    def __init__(self, stack: Stack, config: TrainConfig) -> None:
        S, device = stack.S, stack.device
        self.config = config
        self.best = {name: p.detach().clone() for name, p in stack.params.items()}
        self.threshold = stack.threshold.clone()
        self.objective = torch.full((S,), float("inf"), device=device)
        self.step = torch.zeros(S, dtype=torch.long, device=device)
        self.stopped_at = torch.full((S,), config.steps, dtype=torch.long, device=device)
        self.bad = torch.zeros(S, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, stack: Stack, objective: torch.Tensor, step: int) -> None:
        """Keep improved coders' weights; stop (``stack.active`` off) those out of patience."""
        config = self.config
        improved = (objective < self.objective * (1 - config.min_delta)) & stack.active
        for name, p in stack.params.items():
            self.best[name] = torch.where(improved.view(-1, *[1] * (p.dim() - 1)), p.detach(), self.best[name])
        self.threshold = torch.where(improved, stack.threshold, self.threshold)
        self.objective = torch.where(improved, objective, self.objective)
        self.step = torch.where(improved, torch.full_like(self.step, step), self.step)
        self.bad = torch.where(improved, torch.zeros_like(self.bad), self.bad + stack.active.long())
        stop = stack.active & (self.bad >= config.patience)
        self.stopped_at = torch.where(stop, torch.full_like(self.stopped_at, step), self.stopped_at)
        stack.active = stack.active & ~stop

    @torch.no_grad()
    def restore(self, stack: Stack) -> None:
        for name, p in stack.params.items():
            p.copy_(self.best[name])
        stack.threshold = self.threshold


def train_stack(
    specs: list[SAESpec],
    prepared: dict[str, PreparedStream],
    config: TrainConfig,
    device: torch.device,
    on_eval: OnEval | None = None,
) -> tuple[list[TrainedCoder], dict]:
    from zoo.readers.sae.metrics import HeldOut

    stack, batches, names = init_stack(specs, prepared, config, device)
    held_out = HeldOut(stack, [prepared[n] for n in names], [names.index(s.stream) for s in specs], config, device)
    optimizers = {name: StackedAdam(p.detach()) for name, p in stack.params.items()}
    B = config.batch_size
    lat_bool = stack.lat_mask[:, 0, :].bool()
    use_auxk = bool((stack.auxk > 0).any())
    window = [config.dead_tokens or len(prepared[s.stream].train) for s in specs]
    dead_tokens = torch.tensor(window, device=device)[:, None]
    since = torch.zeros(stack.S, stack.M, dtype=torch.long, device=device)
    early = EarlyStop(stack, config)
    hist = {"labels": [s.label for s in specs], "steps": [], "objective": []}
    for step in range(1, config.steps + 1):
        x, y = batches.next(B)
        dead = ((since >= dead_tokens) & lat_bool) if use_auxk else None
        fired = train_step(stack, optimizers, x, y, dead)
        since = torch.where(fired, torch.zeros_like(since), since + B)
        if step % config.eval_every and step != config.steps:
            continue
        evaluated = held_out.evaluate()
        if on_eval is not None:
            on_eval(step, hist["labels"], {name: t.tolist() for name, t in evaluated.items()})
        hist["steps"].append(step)
        hist["objective"].append(evaluated["objective"].tolist())
        if config.patience is not None:
            early.update(stack, evaluated["objective"], step)
            if not bool(stack.active.any()):
                break
    if config.patience is not None:
        early.restore(stack)
    best_step = early.step if config.patience is not None else torch.full_like(early.step, config.steps)
    metrics = held_out.metrics()
    d_in, d_out = _widths(specs, prepared)
    coders = []
    for i, spec in enumerate(specs):
        p = prepared[spec.stream]
        coders.append(
            TrainedCoder(
                spec=spec, d_in=d_in[i], d_out=d_out[i], weights=stack.weights(i, d_in[i], d_out[i]),
                x_std=p.x_std, y_std=p.y_std if spec.transcode else p.x_std, metrics=metrics[i],
                best_step=int(best_step[i]), steps=int(early.stopped_at[i]),
            )  # fmt: skip
        )
    return coders, hist


__all__ = ["PopulationResult", "TrainedCoder", "train_population", "pad_stack"]
