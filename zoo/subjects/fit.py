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
exact ``gelu`` and its backward cost 0.5 and 1 ns per element here), the epoch's data
order and Adam. ``zoo bench`` reports the population at about a third of its limit (the
time its ``bmm`` calls alone would take; ``MATMULS`` counts them); what was tried to close
the gap is in ``docs/results/2026-12-04-trainer-speed.md``.
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

# How the first layer's forward pass reads its one-hot inputs. "bmm" (the default): the
# one-hot matrix times the weights. "gather": each sample's pre-activation is the sum of
# the weight rows of its tokens and the bias row (one ``embedding_bag``: 8 rows added
# instead of a 50-long dot product per unit). The op alone is 3x faster at 7 tokens x 7
# letters, but a training epoch on one CPU core was no faster: the ``bmm`` it removes is a
# small share of a step, and the row indices' gather and copy cost about what it saves
# (docs/results/2026-12-04-trainer-speed.md). The two agree within float rounding (a test
# pins them within 1e-5). The first layer's weight gradient is a ``bmm`` either way: an
# ``index_add`` of the gradient rows measured 2.3x slower than the one-hot ``bmm``.
FIRST_LAYER = "bmm"

# When a Counter, the trainer counts every ``bmm`` and ``baddbmm`` it issues, training and
# validation: ``(models, m, k, n)`` -> calls, for an ``[models, m, k] x [models, k, n]``
# product (``zoo bench`` turns them into the trainer's limit).
MATMULS: Counter | None = None


@dataclass
class TrainData:
    """Each model's own data, already on the population's device."""

    x_train: torch.Tensor  # [N, S, D + 1] one-hot (see ``one_hot_inputs``), best as uint8: gathered per step
    y_train: torch.Tensor  # [N, S] float
    x_val: torch.Tensor  # [N, V, D + 1]
    y_val: torch.Tensor  # [N, V]


@dataclass
class TrainResult:
    epochs: np.ndarray  # [N] epochs each model trained before it stopped
    val_loss: np.ndarray  # [N] best validation loss, whose weights the population now holds


class StepBuffers:
    """Every tensor one training step writes, and every view of them it reads, for one batch size.

    Every activation buffer is a contiguous ``[N, B, H]`` tensor: an elementwise pass over
    a strided view (the ``[N, B, H]`` units of an ``[N, B, H + 1]`` buffer ending in a
    constant 1) ran 2.7x slower here. So the first layer takes its bias from the inputs'
    constant 1 (or the gather's bias row), deeper layers add theirs in ``baddbmm``, and a
    deeper layer's bias gradient is a sum over the batch beside its weights' ``bmm``.
    """

    def __init__(self, pop: Population, flat: torch.Tensor, batch: int, gather: bool = False) -> None:
        """``flat`` is the parameter (or the padded store of ``_Run``, whose row is a whole number
        of first-layer rows); ``gather`` takes the first layer's forward pass from ``feature_rows``."""
        n, width, depth = pop.size, pop.max_width, pop.n_layers
        new = dict(dtype=flat.dtype, device=flat.device)
        self.pop = pop
        self.gather = gather
        self.weights = pop.augmented(flat)
        self.w_units = [w[:, :-1] for w in self.weights]  # [N, H_in, H_out]: a block's weights
        self.w_bias = [w[:, -1:] for w in self.weights]  # [N, 1, H_out]: its bias
        self.w_head_units = self.w_units[-1].transpose(1, 2)  # [N, 1, H]
        self.b_head = self.w_bias[-1][:, :, 0]  # [N, 1]
        self.w_back = [w.transpose(1, 2) for w in self.w_units[:-1]]  # [N, H_out, H_in]
        self.x = torch.empty(n, batch, self.weights[0].shape[1], **new)  # one-hot, widened from bytes
        self.pre = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.units = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.g_pre = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.g_post = [torch.empty(n, batch, width, **new) for _ in range(depth)]
        self.grad = torch.zeros_like(flat)  # a padded store's tail is never written: it stays 0
        blocks = pop.blocks
        # bmm into a strided view runs one gemm per model: it is 2x faster to copy afterwards
        self.wgrad = [torch.empty(n, blocks[0].fan_in + 1, width, **new)]
        self.wgrad += [torch.empty(n, b.fan_in, b.fan_out, **new) for b in blocks[1:-1]]
        grad_blocks = pop.augmented(self.grad)
        self.wgrad_in_grad = [grad_blocks[0], *(g[:, :-1] for g in grad_blocks[1:-1])]
        self.bias_grad = [None, *(g[:, -1] for g in grad_blocks[1:-1])]  # [N, H_out]
        self.head_grad_units = grad_blocks[-1][:, :-1, 0]  # [N, H]
        self.head_grad_bias = grad_blocks[-1][:, -1]  # [N, 1]
        self.inputs_t = [self.x.transpose(1, 2), *(u.transpose(1, 2) for u in self.units[:-1])]
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
        if gather:  # the first block as ``[N * rows, width]`` rows, and the step's row indices
            rows = flat.shape[1] // width
            self.w_rows = torch.as_strided(flat, (n * rows, width), (width, 1))
            self.feature_rows = torch.empty(n * batch, pop.architectures[0].seq_len + 1, dtype=torch.int32, device=flat.device)
            per_bag = self.feature_rows.shape[1]
            self.bag_offsets = torch.arange(0, n * batch * per_bag, per_bag, dtype=torch.int32, device=flat.device)
            self.bag_scratch = [torch.empty(0, dtype=torch.int32, device=flat.device) for _ in range(3)]
        dims = [(b.fan_in + 1, b.fan_out) for b in blocks[:-1]]
        self.matmuls = [] if gather else [(n, batch, *dims[0])]
        self.matmuls += [(n, batch, k - 1, m) for k, m in dims[1:]]  # baddbmm
        self.matmuls += [(n, dims[0][0], batch, dims[0][1])]  # weight gradients
        self.matmuls += [(n, k - 1, batch, m) for k, m in dims[1:]]
        self.matmuls += [(n, batch, m, k - 1) for k, m in dims[1:]]  # input gradients

    def forward(self) -> torch.Tensor:
        """Logits ``[N, B]`` of the inputs in ``self.x``; fills ``pre`` and ``units``."""
        for layer in range(self.pop.n_layers):
            if layer > 0:
                torch.baddbmm(self.w_bias[layer], self.units[layer - 1], self.w_units[layer], out=self.pre[layer])
            elif self.gather:
                torch.ops.aten._embedding_bag_forward_only.out(
                    self.w_rows, self.feature_rows.view(-1), self.bag_offsets, False, 0, False, None, False, -1,
                    out0=self.pre[0].view(-1, self.pre[0].shape[2]), out1=self.bag_scratch[0],
                    out2=self.bag_scratch[1], out3=self.bag_scratch[2],
                )  # fmt: skip
            else:
                torch.bmm(self.x, self.weights[0], out=self.pre[0])
            for name, pre, units, _, _ in self.segment_views[layer]:
                activate(name, pre, out=units)
            for units, mask in self.sigmoid_masks[layer]:
                units.mul_(mask)
        out = None
        for layer, mask in self.pop.exits:
            w = self.w_head_units if mask is None else self.w_head_units * mask
            term = (self.units[layer] * w).sum(-1)
            out = term if out is None else out + term
        return out + self.b_head

    def gradients(self, y: torch.Tensor) -> torch.Tensor:
        """Gradient ``[N, P]`` of each model's mean BCE-with-logits loss on the batch in ``self.x``."""
        pop, top = self.pop, self.pop.n_layers - 1
        g_out = (torch.sigmoid(self.forward()) - y).mul_(1.0 / y.shape[1]).unsqueeze(-1)
        self.head_grad_units.zero_()
        torch.sum(g_out, 1, out=self.head_grad_bias)
        for layer in range(top, -1, -1):
            mask = pop.exit_masks.get(layer, False)
            if mask is not False:  # models that end here: the head's gradient, and the head's input gradient
                g = (self.units[layer] * g_out).sum(1)
                self.head_grad_units.add_(g if mask is None else g * mask[:, 0])
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
                torch.sum(self.g_pre[layer], 1, out=self.bias_grad[layer])
                torch.bmm(self.g_pre[layer], self.w_back[layer], out=self.g_post[layer - 1])
        return self.grad


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
        self.data = TrainData(_as_bytes(data.x_train), data.y_train, data.x_val, data.y_val)
        self.local_rows = _feature_rows(self.data.x_train, pop) if FIRST_LAYER == "gather" else None
        self.ids = torch.arange(n, device=device)
        self.order_seeds = np.asarray(order_seeds, dtype=np.uint64)
        self.lr = torch.as_tensor(np.asarray(lr, dtype=np.float32), device=device)[:, None]
        self._adopt(pop)
        self.best_flat = pop.flat.clone()
        self.best_loss = torch.full((n,), float("inf"), device=device)
        self.bad_epochs = torch.zeros(n, dtype=torch.long, device=device)
        self.active = torch.ones(n, dtype=torch.bool, device=device)
        self.epochs_run = torch.zeros(n, dtype=torch.long, device=device)
        self.final_epochs = torch.zeros(n, dtype=torch.long, device=device)
        self.final_loss = torch.full((n,), float("inf"), device=device)

    def _adopt(self, pop: Population, m=None, v=None, steps=None) -> None:
        """Train ``pop``'s models from a store whose rows are padded to a whole number of
        first-layer rows, so the first block of every model is one ``[N * rows, width]`` view
        (the gather's table); Adam steps the whole store (the tail's gradient is always 0)."""
        n, used = pop.size, pop.blocks[-1].end
        width = pop.blocks[0].fan_out
        row = -(-used // width) * width

        def padded(t: torch.Tensor | None) -> torch.Tensor:
            out = pop.flat.new_zeros(n, row)
            if t is not None:
                out[:, :used] = t
            return out

        self.store = padded(pop.flat)
        self.pop = Population(pop.architectures, self.store[:, :used])
        self.adam = StackedAdam(self.store, None if m is None else padded(m), None if v is None else padded(v), steps)
        self.buffers: dict[int, StepBuffers] = {}
        self.rows = None
        if self.local_rows is not None:  # global rows of the table: model i's rows start at i * row / width
            first = torch.arange(n, dtype=torch.int32, device=pop.device)[:, None, None] * (row // width)
            self.rows = (self.local_rows + first).view(-1, self.local_rows.shape[2])  # int32: 6x faster to gather

    def train_epoch(self, epoch: int, config: TrainingConfig) -> None:
        pop, flat, data = self.pop, self.store, self.data
        n, s = data.y_train.shape
        dim = data.x_train.shape[2]
        x_rows, y_rows = data.x_train.reshape(n * s, dim), data.y_train.reshape(n * s)
        rows = torch.from_numpy(epoch_order(self.order_seeds, epoch, s)).to(pop.device)
        rows = (rows + torch.arange(n, device=pop.device)[:, None] * s).view(-1)
        # each model's data in this epoch's order, gathered once: a step reads a slice of it
        x_epoch = x_rows.index_select(0, rows).view(n, s, dim)
        y_epoch = y_rows.index_select(0, rows).view(n, s)
        features = None if self.rows is None else self.rows.index_select(0, rows).view(n, s, -1)
        step_lr = self.lr * self.active[:, None]
        for start in range(0, s, config.batch_size):
            stop = min(start + config.batch_size, s)
            size = stop - start
            if size not in self.buffers:  # the last batch of an epoch may be smaller
                self.buffers[size] = StepBuffers(pop, flat, size, gather=self.rows is not None)
            step = self.buffers[size]
            step.x.copy_(x_epoch[:, start:stop])
            if step.gather:
                step.feature_rows.view(n, size, -1).copy_(features[:, start:stop])
            if MATMULS is not None:
                MATMULS.update(step.matmuls)
            g = step.gradients(y_epoch[:, start:stop])
            if config.weight_decay:
                g.add_(flat, alpha=config.weight_decay)
            self.adam.step(g, step_lr)

    def validate(self, config: TrainingConfig) -> None:
        """Early stopping: keep each model's best weights, stop it after ``patience`` epochs without gain."""
        with torch.no_grad():
            val = bce_per_model(forward(self.pop, self.data.x_val)[0], self.data.y_val)
        if MATMULS is not None:
            n, samples = self.data.y_val.shape
            MATMULS.update((n, samples, b.fan_in + 1, b.fan_out) for b in self.pop.blocks[:-1])
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
        used = self.pop.blocks[-1].end
        pop, (m, v, self.best_flat) = subset(
            self.pop, keep, self.adam.m[:, :used], self.adam.v[:, :used], self.best_flat)
        self.data = TrainData(*(t[keep] for t in (
            self.data.x_train, self.data.y_train, self.data.x_val, self.data.y_val)))
        if self.local_rows is not None:
            self.local_rows = self.local_rows[keep]
        self._adopt(pop, m, v, self.adam.steps)
        self.order_seeds = self.order_seeds[keep.cpu().numpy()]
        for name in ("ids", "lr", "best_loss", "bad_epochs", "active", "epochs_run"):
            setattr(self, name, getattr(self, name)[keep])


def _feature_rows(x_bytes: torch.Tensor, pop: Population) -> torch.Tensor | None:
    """``[N, S, L + 1]``: each training sample's one-hot features (row ``l * vocab + token`` of
    the first block per position) and the bias row; None where the inputs are not one token
    per position and a constant 1 (the first layer then stays a ``bmm``)."""
    arch = pop.architectures[0]
    vocab, length = arch.vocab_size, arch.seq_len
    n, s, dim = x_bytes.shape
    if dim != vocab * length + 1:
        return None
    one_hot = x_bytes[..., :-1].view(n, s, length, vocab)
    if not (bool((one_hot.sum(-1, dtype=torch.int32) == 1).all()) and bool((x_bytes[..., -1] == 1).all())):
        return None
    features = (one_hot.argmax(-1) + torch.arange(length, device=x_bytes.device) * vocab).int()
    bias = torch.full((n, s, 1), vocab * length, dtype=features.dtype, device=x_bytes.device)
    return torch.cat([features, bias], -1)


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
