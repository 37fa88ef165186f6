"""Train transformer populations, and the sequential reference they are checked against.

Population training uses autograd over the stacked parameters (``transformer_population``):
each model's mean BCE loss on its own batch, summed over models, so every model gets the
gradient it would get alone. Then, per model and without a loop over models:

- the gradient is clipped to norm ``GRAD_CLIP`` by that model's own norm (a global clip
  over the stack would couple the models);
- AdamW (``zoo.optim.StackedAdam``, decoupled weight decay ``training.weight_decay`` on
  matrices only) steps it at the model's own learning rate, which is 0 once it stopped;
- after each epoch its validation loss decides early stopping (best weights kept,
  ``training.patience`` epochs without a gain of ``training.min_delta``); once a quarter of
  the rows have stopped they are dropped from the computation.

Each model sees its own data in its own order (``epoch_order`` of its seed), batch by batch.

The reference (``train_reference``) is one ``nn.Module`` and one ``torch.optim.AdamW`` per
model with ``clip_grad_norm_``, the same data, order, steps and stopping rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zoo.config import TrainingConfig
from zoo.optim import BETAS, EPS, StackedAdam
from zoo.subjects.families.transformer import GRAD_CLIP, Architecture
from zoo.subjects.fit import TrainResult
from zoo.subjects.population import epoch_order
from zoo.subjects.transformer_module import SubjectTransformer, build_model
from zoo.subjects.transformer_population import (
    CHUNK, TransformerPopulation, forward, from_weights, init_population, is_matrix,
)

COMPACT_SHARE = 1 / 4
CPU_POPULATION = 16


@dataclass
class TrainedGroup:
    indices: list[int]
    population: TransformerPopulation
    result: TrainResult


def plan_groups(architectures: list[Architecture], max_size: int) -> list[list[int]]:
    """Chunks of at most ``max_size`` models of one feed-forward kind, bias setting, depth, token space
    and head, by width (a pattern zoo has one token space and head, so it groups by the first three)."""
    kinds: dict[tuple, list[int]] = {}
    for i, a in enumerate(architectures):
        kinds.setdefault((a.ffn, a.bias, a.n_layers, a.vocab_size, a.seq_len, a.head), []).append(i)
    chunks = []
    for key in sorted(kinds):
        order = sorted(kinds[key], key=lambda i: (architectures[i].d_model, architectures[i].d_head, architectures[i].k, i))
        parts = -(-len(order) // max_size)
        chunks += [order[k * len(order) // parts : (k + 1) * len(order) // parts] for k in range(parts)]
    return chunks


def population_size(config: TrainingConfig, device: torch.device, architectures: list[Architecture]) -> int:
    if config.population_size != "auto":
        return int(config.population_size)
    if device.type != "cuda":
        return CPU_POPULATION
    free, _ = torch.cuda.mem_get_info(device)
    per_model = max(64 * a.seq_len * (a.n_layers * (8 * a.d_model + 3 * a.d_hidden)) * 4 + 16 * a.n_params for a in architectures)
    return int(max(16, min(4096, 0.3 * free // per_model)))


def bce_per_model(logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit, y, reduction="none").mean(1)


@dataclass(frozen=True)
class Objective:
    """What a population is trained on: each model's loss ``[N]`` on a training batch (with gradients)
    and on its whole validation set (without), from tokens ``[N, B, T]`` and labels ``[N, B]``."""

    train_loss: Callable[[TransformerPopulation, torch.Tensor, torch.Tensor], torch.Tensor]
    val_loss: Callable[[TransformerPopulation, torch.Tensor, torch.Tensor], torch.Tensor]


def _chunked_logits(pop: TransformerPopulation, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([forward(pop, x[:, s : s + CHUNK]) for s in range(0, x.shape[1], CHUNK)], dim=1)


PATTERN = Objective(
    train_loss=lambda pop, x, y: bce_per_model(forward(pop, x), y),
    val_loss=lambda pop, x, y: bce_per_model(_chunked_logits(pop, x), y),
)
"""Pattern classification: one logit per sequence, mean binary cross-entropy per model."""


def objective_for(architectures: list[Architecture]) -> Objective:
    """The objective of a population's head: ``PATTERN``, or next-token cross-entropy (``transformer_lm``)."""
    if architectures[0].head == "next_token":
        from zoo.subjects.transformer_lm import NEXT_TOKEN

        return NEXT_TOKEN
    return PATTERN


def _shaped(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


class _Run:
    """The models still training: their population, data, optimizer and early-stopping state."""

    def __init__(self, pop: TransformerPopulation, jobs: list, config: TrainingConfig, objective: Objective = PATTERN) -> None:
        device = pop.device
        self.pop = pop
        self.objective = objective
        for t in pop.params.values():
            t.requires_grad_(True)
        self.ids = torch.arange(pop.size, device=device)
        self.x = torch.as_tensor(np.stack([j.train_tokens for j in jobs]), device=device).long()
        self.y = torch.as_tensor(np.stack([j.train_labels for j in jobs]), device=device).float()
        self.x_val = torch.as_tensor(np.stack([j.val_tokens for j in jobs]), device=device).long()
        self.y_val = torch.as_tensor(np.stack([j.val_labels for j in jobs]), device=device).float()
        self.seeds = np.asarray([j.order_seed for j in jobs], dtype=np.uint64)
        self.lr = torch.as_tensor(np.asarray([j.lr for j in jobs], dtype=np.float32), device=device)
        self.adams = {
            name: StackedAdam(t, weight_decay=config.weight_decay if is_matrix(name) else 0.0, decoupled=True)
            for name, t in pop.params.items()
        }
        self.best = {n: t.detach().clone() for n, t in pop.params.items()}
        self.best_loss = torch.full((pop.size,), float("inf"), device=device)
        self.bad = torch.zeros(pop.size, dtype=torch.long, device=device)
        self.active = torch.ones(pop.size, dtype=torch.bool, device=device)
        self.epochs_run = torch.zeros(pop.size, dtype=torch.long, device=device)

    def train_epoch(self, epoch: int, batch_size: int) -> None:
        n, s = self.x.shape[:2]
        order = torch.from_numpy(epoch_order(self.seeds, epoch, s)).to(self.pop.device)
        rows = torch.arange(n, device=order.device)[:, None]
        x, y = self.x[rows, order], self.y[rows, order]
        lr = self.lr * self.active
        names = list(self.pop.params)
        leaves = [self.pop.params[name] for name in names]
        for start in range(0, s, batch_size):
            loss = self.objective.train_loss(self.pop, x[:, start : start + batch_size], y[:, start : start + batch_size]).sum()
            grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():
                norm = torch.stack([g.square().flatten(1).sum(1) for g in grads]).sum(0).sqrt()
                coef = (GRAD_CLIP / (norm + 1e-6)).clamp(max=1.0)
                for name, g in zip(names, grads):
                    g.mul_(_shaped(coef, g))
                    self.adams[name].step(g, _shaped(lr, g))

    def validate(self, min_delta: float, patience: int) -> None:
        with torch.no_grad():
            val = self.objective.val_loss(self.pop, self.x_val, self.y_val)
            self.epochs_run += self.active
            improved = (val < self.best_loss - min_delta) & self.active
            self.best_loss = torch.where(improved, val, self.best_loss)
            for name, t in self.pop.params.items():
                self.best[name] = torch.where(_shaped(improved, t), t, self.best[name])
            self.bad = torch.where(improved, 0, self.bad + 1)
            self.active &= self.bad < patience

    def retire(self, out: TransformerPopulation, rows: torch.Tensor, epochs: torch.Tensor, losses: torch.Tensor) -> None:
        ids = self.ids[rows]
        with torch.no_grad():
            for name, t in out.params.items():
                t[ids] = self.best[name][rows]
        epochs[ids], losses[ids] = self.epochs_run[rows], self.best_loss[rows]

    def compact(self, out: TransformerPopulation, epochs: torch.Tensor, losses: torch.Tensor) -> None:
        """Retire the stopped models and go on with the others."""
        self.retire(out, ~self.active, epochs, losses)
        keep = self.active.nonzero().squeeze(1)
        with torch.no_grad():
            moments = [{n: a.m for n, a in self.adams.items()}, {n: a.v for n, a in self.adams.items()}]
            pop, (m, v, best) = self.pop.subset(keep, *moments, self.best)
        for t in pop.params.values():
            t.requires_grad_(True)
        self.adams = {
            n: StackedAdam(pop.params[n], m[n], v[n], a.steps, weight_decay=a.weight_decay, decoupled=True)
            for n, a in self.adams.items()
        }
        self.pop, self.best = pop, best
        self.seeds = self.seeds[keep.cpu().numpy()]
        for name in ("ids", "x", "y", "x_val", "y_val", "lr", "best_loss", "bad", "active", "epochs_run"):
            setattr(self, name, getattr(self, name)[keep])


def train_population(
    pop: TransformerPopulation, jobs: list, config: TrainingConfig, epochs: int | None = None, objective: Objective | None = None
) -> TrainResult:
    """Train ``pop`` (models in ``jobs`` order) in place; at the end each model holds its best-validation weights.

    ``objective`` defaults to the one of the population's head (``objective_for``)."""
    out = TransformerPopulation(pop.architectures, {n: t.detach().clone() for n, t in pop.params.items()}, pop.pad)
    run = _Run(pop, jobs, config, objective_for(pop.architectures) if objective is None else objective)
    epochs = config.epochs if epochs is None else epochs
    final_epochs = torch.zeros(pop.size, dtype=torch.long, device=pop.device)
    final_loss = torch.full((pop.size,), float("inf"), device=pop.device)
    for epoch in range(epochs):
        run.train_epoch(epoch, config.batch_size)
        run.validate(config.min_delta, config.patience)
        stopped = int((~run.active).sum())
        if stopped == len(run.ids):
            break
        if stopped >= COMPACT_SHARE * len(run.ids) and epoch + 1 < epochs:
            run.compact(out, final_epochs, final_loss)
    run.retire(out, torch.ones_like(run.active), final_epochs, final_loss)
    pop.params = out.params
    return TrainResult(epochs=final_epochs.cpu().numpy(), val_loss=final_loss.cpu().numpy())


def train_group(jobs: list, config: TrainingConfig, device: torch.device, epochs: int | None = None):
    archs = [j.architecture for j in jobs]
    if all(j.init is not None for j in jobs):
        pop = from_weights(archs, [j.init for j in jobs], device)
    else:
        pop = init_population(archs, [j.init_seed for j in jobs], device)
    return pop, train_population(pop, jobs, config, epochs)


def train_subjects(jobs: list, config: TrainingConfig, device: torch.device, epochs: int | None = None, on_group=None) -> list[TrainedGroup]:
    """Train every job, in populations of one feed-forward kind and depth (see ``plan_groups``)."""
    if not jobs:
        return []
    archs = [j.architecture for j in jobs]
    trained = []
    for indices in plan_groups(archs, population_size(config, device, archs)):
        pop, result = train_group([jobs[i] for i in indices], config, device, epochs)
        trained.append(TrainedGroup(indices, pop, result))
        if on_group is not None:
            on_group(len(indices))
    return trained


def train_reference(
    architecture: Architecture,
    init: np.ndarray,
    train_tokens: np.ndarray,
    train_labels: np.ndarray,
    val_tokens: np.ndarray,
    val_labels: np.ndarray,
    config: TrainingConfig,
    lr: float,
    order_seed: int,
    epochs: int | None = None,
) -> tuple[SubjectTransformer, int, float]:
    """One model, one ``torch.optim.AdamW``: returns it at its best validation loss, epochs run and that loss."""
    model = build_model(architecture, init)
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if is_matrix(n)], "weight_decay": config.weight_decay},
            {"params": [p for n, p in named if not is_matrix(n)], "weight_decay": 0.0},
        ],
        lr=lr, betas=BETAS, eps=EPS,
    )  # fmt: skip
    x, y = torch.as_tensor(train_tokens).long(), torch.as_tensor(train_labels, dtype=torch.float32)
    x_val, y_val = torch.as_tensor(val_tokens).long(), torch.as_tensor(val_labels, dtype=torch.float32)
    best_loss, best_state, bad, epochs_run = float("inf"), None, 0, 0
    for epoch in range(config.epochs if epochs is None else epochs):
        order = torch.from_numpy(epoch_order([order_seed], epoch, len(y))[0])
        xs, ys = x[order], y[order]
        for start in range(0, len(ys), config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            logit = model(xs[start : start + config.batch_size])
            F.binary_cross_entropy_with_logits(logit, ys[start : start + config.batch_size]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
        epochs_run += 1
        with torch.no_grad():
            val = F.binary_cross_entropy_with_logits(model(x_val), y_val).item()
        if val < best_loss - config.min_delta:
            best_loss, bad = val, 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, epochs_run, best_loss
