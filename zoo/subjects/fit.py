"""Train a ``Population``: the batched backward pass, Adam and per-model early stopping.

Forward and backward are written out by hand: for these tiny models the autograd
tape costs more than the arithmetic. For the same reason a step runs on buffers
and views made once per population (``StepBuffers``) rather than per step: at
32 models x 64 samples x 40 units, slicing and allocating cost as much as the
elementwise math, and a population takes about 1,600 steps.

Models stop at different epochs (clean models of the default config run 6 to 20 of
20), so stopped models are dropped from the computation as they accumulate rather
than carried at learning rate 0 until the last one stops.

Where the time goes (one CPU core, a 32-model population of one depth, batch 64):
over a third in ``bmm``, at about 75% of the core's fp32 peak at these shapes; the
rest in the activation passes (one op per run of models that share an activation;
exact ``gelu`` and its backward cost 0.5 and 1 ns per element here), Adam, and the
epoch's data gathered once in each model's order. ``zoo bench`` reports the population
at about a third of its limit (the time its ``bmm`` calls alone would take; ``MATMULS``
counts them). Levers that reorder the arithmetic were measured and left out: float
differences of 1e-7 grow over an epoch's steps into different trained models, so records
would change (``docs/results/2026-12-04-trainer-speed.md``); the levers kept keep the
bits (``docs/results/2026-12-04-trainer-levers.md``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zoo.config import TrainingConfig
from zoo.optim import StackedAdam
from zoo.subjects.population import (
    Population, activate, activation_grad, epoch_order, forward, head_logits, relayout, subset,
)

PopulationAdam = StackedAdam  # the name this module gave it first; Adam itself lives in zoo.optim

# When a Counter, the trainer counts every ``bmm`` it issues, training and validation:
# ``(models, m, k, n)`` -> calls, for an ``[models, m, k] x [models, k, n]`` product
# (``zoo bench`` turns them into the trainer's limit).
MATMULS: Counter | None = None


@dataclass
class TrainData:
    """Each model's own data, already on the population's device."""

    x_train: torch.Tensor  # [N, S, D + 1] one-hot (see ``one_hot_inputs``), best as uint8: gathered per epoch
    y_train: torch.Tensor  # [N, S] float
    x_val: torch.Tensor  # [N, V, D + 1]
    y_val: torch.Tensor  # [N, V]


@dataclass
class TrainResult:
    epochs: np.ndarray  # [N] epochs each model trained before it stopped
    val_loss: np.ndarray  # [N] best validation loss, whose weights the population now holds


class StepBuffers:
    """Every tensor one training step writes, and every view of them it reads, for one batch size.

    Hidden post-activations live in ``[N, B, H + 1]`` buffers whose last feature is a
    constant 1 (written once), so one ``bmm`` applies a layer's weights and bias and one
    ``bmm`` gives both gradients.
    """

    def __init__(self, pop: Population, flat: torch.Tensor, batch: int) -> None:
        n, width, depth = pop.size, pop.max_width, pop.n_layers
        new = dict(dtype=flat.dtype, device=flat.device)
        self.pop = pop
        self.weights = pop.augmented(flat)
        self.w_head = self.weights[-1].transpose(1, 2)  # [N, 1, H + 1]
        self.w_head_units = self.weights[-1][:, :-1].transpose(1, 2)  # [N, 1, H]
        self.w_back = [w[:, :-1].transpose(1, 2) for w in self.weights[:-1]]  # [N, H_out, H_in]
        self.x = torch.empty(n, batch, self.weights[0].shape[1], **new)  # widened from the epoch's one-hot bytes
        self.pre = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.post = [torch.empty(n, batch, width + 1, **new) for _ in range(depth)]
        for post in self.post:
            post[..., -1] = 1.0
        self.units = [post[..., :-1] for post in self.post]
        self.g_pre = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.g_post = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.grad = torch.empty_like(flat)
        self.wgrad = [torch.empty(n, b.fan_in + 1, b.fan_out, **new) for b in pop.blocks[:-1]]
        # bmm into a strided view runs one gemm per model: it is 2x faster to copy afterwards
        self.wgrad_in_grad = [self.grad[:, b.w_offset : b.end].view_as(w) for b, w in zip(pop.blocks, self.wgrad)]
        self.head_grad = self.grad[:, pop.blocks[-1].w_offset : pop.blocks[-1].end]
        self.inputs_t = [self.x.transpose(1, 2), *(p.transpose(1, 2) for p in self.post[:-1])]
        self.segment_views = [
            [
                (seg.activation, *(t[seg.start : seg.end] for t in (
                    self.pre[layer], self.units[layer], self.g_post[layer], self.g_pre[layer])))
                for seg in pop.segments
            ]
            for layer in range(depth)
        ]
        self.sigmoid_masks = [
            [(self.units[layer][s.start : s.end], mask[s.start : s.end]) for s in pop.sigmoid_segments]
            if mask is not None else []
            for layer, mask in enumerate(pop.width_mask)
        ]

    def forward(self) -> torch.Tensor:
        """Logits ``[N, B]`` of the inputs in ``self.x``; fills ``pre`` and ``post``."""
        h = self.x
        for layer, w in enumerate(self.weights[:-1]):
            torch.bmm(h, w, out=self.pre[layer])
            for name, pre, units, _, _ in self.segment_views[layer]:
                activate(name, pre, out=units)
            for units, mask in self.sigmoid_masks[layer]:
                units.mul_(mask)
            h = self.post[layer]
        return head_logits(self.pop, self.post, self.w_head)

    def gradients(self, y: torch.Tensor) -> torch.Tensor:
        """Gradient ``[N, P]`` of each model's mean BCE-with-logits loss on the batch in ``self.x``."""
        pop, top = self.pop, self.pop.n_layers - 1
        g_out = (torch.sigmoid(self.forward()) - y).mul_(1.0 / y.shape[1]).unsqueeze(-1)
        self.head_grad.zero_()
        for layer in range(top, -1, -1):
            mask = pop.exit_masks.get(layer, False)
            if mask is not False:  # models that end here: the head's gradient, and the head's input gradient
                g = (self.post[layer] * g_out).sum(1)
                self.head_grad.add_(g if mask is None else g * mask[:, 0])
                w = self.w_head_units if mask is None else self.w_head_units * mask
                if layer == top:
                    torch.mul(g_out, w, out=self.g_post[layer])
                else:
                    self.g_post[layer].addcmul_(g_out, w)
            for name, pre, units, g_post, g_pre in self.segment_views[layer]:
                activation_grad(name, pre, units, g_post, out=g_pre)
            torch.bmm(self.inputs_t[layer], self.g_pre[layer], out=self.wgrad[layer])
            self.wgrad_in_grad[layer].copy_(self.wgrad[layer])
            if layer > 0:
                torch.bmm(self.g_pre[layer], self.w_back[layer], out=self.g_post[layer - 1])
        return self.grad


def _step_matmuls(pop: Population, batch: int) -> list[tuple[int, int, int, int]]:
    """The ``bmm`` shapes of one training step (``StepBuffers.gradients``): per hidden layer the
    forward product and the weight gradient, and below the top layer the input gradient."""
    n, blocks = pop.size, pop.blocks[:-1]
    shapes = [(n, batch, b.fan_in + 1, b.fan_out) for b in blocks]
    shapes += [(n, b.fan_in + 1, batch, b.fan_out) for b in blocks]
    shapes += [(n, batch, b.fan_out, b.fan_in) for b in blocks[1:]]
    return shapes


def _signed(u: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return u - (1 << 64) if u >= 1 << 63 else u


def _shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """A logical right shift of int64 bits (``>>`` on int64 is arithmetic: it copies the sign)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _splitmix64_torch(x: torch.Tensor) -> torch.Tensor:
    """``population._splitmix64`` on int64 tensors: the same bits (int64 products wrap as uint64 ones do)."""
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shift_right(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shift_right(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shift_right(x, 31)


def epoch_order_tensor(seeds: np.ndarray, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """``epoch_order`` as an int64 ``[N, n]`` tensor on ``device``, the same permutation bit for bit.

    On a GPU the hash and the sort run there: sorting thousands of models' keys on the host
    costs seconds an epoch, more than the epoch's training. Keys compare as uint64; flipping
    their sign bit makes int64 order agree. Keys are distinct (splitmix64 is a bijection), so
    any sort gives the stable sort's order.
    """
    if device.type != "cuda":  # here numpy's sort is faster than torch's
        return torch.from_numpy(epoch_order(seeds, epoch, n)).to(device)
    return epoch_order_torch(torch.as_tensor(np.asarray(seeds, dtype=np.uint64).view(np.int64), device=device), epoch, n)


def epoch_order_torch(seeds: torch.Tensor, epoch: int, n: int) -> torch.Tensor:
    """``epoch_order`` computed by torch where ``seeds`` (int64 ``[N]``, uint64 bits) live."""
    device = seeds.device
    stream = _splitmix64_torch(_splitmix64_torch(seeds) ^ (epoch + 1))
    keys = _splitmix64_torch(stream[:, None] + torch.arange(n, dtype=torch.int64, device=device)[None, :])
    return torch.sort(keys ^ _signed(1 << 63), dim=1, stable=True).indices


def bce_per_model(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)


# Stopped models are dropped once they are this share of the rows: dropping copies the
# survivors' data and state, about what one epoch of the stopped models would cost.
COMPACT_SHARE = 1 / 8


class _Run:
    """The models of a population still training: their own population, data, Adam and early-stopping state.

    Row ``i`` here is model ``ids[i]`` of the population the caller passed in. Models that
    have stopped are dropped (``compact``), so a population does not pay for its stopped
    members until the last one stops; their best weights go back to the caller's
    population at once (``retire``).
    """

    def __init__(self, pop: Population, data: TrainData, lr: np.ndarray | list[float], order_seeds) -> None:
        n, device = pop.size, pop.device
        self.pop = pop
        self.data = TrainData(_as_bytes(data.x_train), data.y_train, data.x_val, data.y_val)
        self.ids = torch.arange(n, device=device)
        self.order_seeds = np.asarray(order_seeds, dtype=np.uint64)
        self.lr = torch.as_tensor(np.asarray(lr, dtype=np.float32), device=device)[:, None]
        self.adam = StackedAdam(pop.flat)
        self.best_flat = pop.flat.clone()
        self.best_loss = torch.full((n,), float("inf"), device=device)
        self.bad_epochs = torch.zeros(n, dtype=torch.long, device=device)
        self.active = torch.ones(n, dtype=torch.bool, device=device)
        self.epochs_run = torch.zeros(n, dtype=torch.long, device=device)
        self.buffers: dict[int, StepBuffers] = {}
        self.final_epochs = torch.zeros(n, dtype=torch.long, device=device)
        self.final_loss = torch.full((n,), float("inf"), device=device)

    def train_epoch(self, epoch: int, config: TrainingConfig) -> None:
        self.run_steps(self.epoch_rows(epoch), config)

    def epoch_rows(self, epoch: int) -> torch.Tensor:
        """``[N, S]`` int64: each model's epoch order as rows of its flattened training data."""
        n, s = self.data.y_train.shape
        rows = epoch_order_tensor(self.order_seeds, epoch, s, self.pop.device)
        rows += torch.arange(n, device=self.pop.device)[:, None] * s
        return rows

    def run_steps(self, rows: torch.Tensor, config: TrainingConfig) -> None:
        """One epoch's steps over ``rows`` (``epoch_rows``): device work only, no host round trip,
        so a CUDA graph can capture it (``zoo.bench_gpu``) once the buffers of both batch sizes exist."""
        pop, flat, data = self.pop, self.pop.flat, self.data
        n, s = data.y_train.shape
        dim = data.x_train.shape[2]
        # the epoch's data in each model's order, gathered once; a step reads a slice (the same values)
        order = rows.view(-1)
        x_epoch = data.x_train.reshape(n * s, dim).index_select(0, order).view(n, s, dim)
        y_epoch = data.y_train.reshape(n * s).index_select(0, order).view(n, s)
        step_lr = self.lr * self.active[:, None]
        for start in range(0, s, config.batch_size):
            end = min(start + config.batch_size, s)
            if end - start not in self.buffers:  # the last batch of an epoch may be smaller
                self.buffers[end - start] = StepBuffers(pop, flat, end - start)
            step = self.buffers[end - start]
            if MATMULS is not None:
                MATMULS.update(_step_matmuls(pop, end - start))
            step.x.copy_(x_epoch[:, start:end])
            g = step.gradients(y_epoch[:, start:end])
            if config.weight_decay:
                g.add_(flat, alpha=config.weight_decay)
            self.adam.step(g, step_lr)

    def validate(self, config: TrainingConfig) -> None:
        """Early stopping: keep each model's best weights, stop it after ``patience`` epochs without gain."""
        if MATMULS is not None:
            samples = self.data.x_val.shape[1]
            MATMULS.update((self.pop.size, samples, b.fan_in + 1, b.fan_out) for b in self.pop.blocks[:-1])
        with torch.no_grad():
            val = bce_per_model(forward(self.pop, self.data.x_val)[0], self.data.y_val)
        self.epochs_run += self.active
        improved = (val < self.best_loss - config.min_delta) & self.active
        self.best_loss = torch.where(improved, val, self.best_loss)
        self.best_flat = torch.where(improved[:, None], self.pop.flat, self.best_flat)
        self.bad_epochs = torch.where(improved, 0, self.bad_epochs + 1)
        self.active &= self.bad_epochs < config.patience

    def retire(self, out: Population, rows: torch.Tensor) -> None:
        """Give models ``rows`` their best weights in ``out`` and record their result."""
        ids = self.ids[rows]
        out.flat[ids] = relayout(self.best_flat[rows], self.pop.blocks, out.blocks)
        self.final_epochs[ids] = self.epochs_run[rows]
        self.final_loss[ids] = self.best_loss[rows]

    def compact(self, out: Population) -> None:
        """Retire the stopped models and go on with the others as a population of their own."""
        self.retire(out, ~self.active)
        keep = self.active.nonzero().squeeze(1)
        self.pop, (m, v, self.best_flat) = subset(self.pop, keep, self.adam.m, self.adam.v, self.best_flat)
        self.adam = StackedAdam(self.pop.flat, m, v, self.adam.steps)
        self.data = TrainData(*(t[keep] for t in (
            self.data.x_train, self.data.y_train, self.data.x_val, self.data.y_val)))
        self.order_seeds = self.order_seeds[keep.cpu().numpy()]
        for name in ("ids", "lr", "best_loss", "bad_epochs", "active", "epochs_run"):
            setattr(self, name, getattr(self, name)[keep])
        self.buffers = {}


def _as_bytes(one_hot: torch.Tensor) -> torch.Tensor:
    if one_hot.dtype == torch.uint8:
        return one_hot
    as_bytes = one_hot.to(torch.uint8)
    if not torch.equal(as_bytes.to(one_hot.dtype), one_hot):
        raise ValueError("x_train must be one-hot inputs (0/1; see one_hot_inputs)")
    return as_bytes


def train_population(
    pop: Population,
    data: TrainData,
    config: TrainingConfig,
    lr: np.ndarray | list[float],
    order_seeds: np.ndarray | list[int],
    epochs: int | None = None,
) -> TrainResult:
    """Adam with per-model learning rates and early stopping on validation loss; updates ``pop`` in place.

    A stopped model's learning rate is set to zero, so Adam's moments cannot move it,
    until enough models have stopped to drop them from the computation (``COMPACT_SHARE``).
    At the end every model holds its best-validation weights.
    """
    run = _Run(pop, data, lr, order_seeds)
    epochs = config.epochs if epochs is None else epochs
    for epoch in range(epochs):
        run.train_epoch(epoch, config)
        run.validate(config)
        stopped = int((~run.active).sum())
        if stopped == len(run.ids):
            break
        if stopped >= COMPACT_SHARE * len(run.ids) and epoch + 1 < epochs:
            run.compact(pop)
    run.retire(pop, torch.ones_like(run.active))
    return TrainResult(epochs=run.final_epochs.cpu().numpy(), val_loss=run.final_loss.cpu().numpy())
