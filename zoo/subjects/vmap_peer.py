"""The ensemble a PyTorch user would write instead of ``zoo.subjects.fit``: ``torch.func``.

``zoo bench --peer vmap`` trains the same models as the population trainer with this, for
a third throughput beside the population's and the sequential reference's. It is the
idiom of the PyTorch ensembling tutorial: the models' parameters stacked with
``torch.func.stack_module_state``, the per-model gradient from
``vmap(grad(loss))`` over ``functional_call``, and a textbook Adam over the stacked
tensors (``torch._foreach_*`` ops, a learning rate per model), with the same data,
data order, epochs, batch size and early stopping as the other two.

``vmap`` needs one module structure per call, so models are grouped by depth and
activation and padded to the group's widest, as a careful user would: padded weights
start at zero and their gradient is masked to zero, so they stay zero and the padded
models compute what the true-width ones do (to float rounding).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from zoo.config import TrainingConfig
from zoo.optim import BETAS, EPS
from zoo.subjects.families.mlp import Architecture
from zoo.subjects.mlp import SubjectMLP, build_model, flatten_model
from zoo.subjects.population import epoch_order, init_weights


class _OneHotMLP(SubjectMLP):
    """``SubjectMLP`` on one-hot inputs (``one_hot`` has no batching rule for ``vmap``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = x
        for layer in self.layers:
            h = self.activation(layer(h))
        return self.head(h).squeeze(-1)


def peer_groups(architectures: list[Architecture]) -> list[list[int]]:
    """Indices grouped by (depth, activation): one module structure per ``vmap``."""
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, arch in enumerate(architectures):
        groups[(arch.n_layers, arch.activation)].append(i)
    return [groups[key] for key in sorted(groups)]


def _padded(arch: Architecture, width: int) -> Architecture:
    return Architecture(arch.n_layers, (width,) * arch.n_layers, arch.activation, arch.vocab_size, arch.seq_len)


def _pad_state(model: SubjectMLP, into: nn.Module) -> dict[str, torch.Tensor]:
    """Copy a true-width model's parameters into the corner of a padded one; returns the 0/1 masks."""
    masks = {}
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, target in into.named_parameters():
            source = params[name]
            target.zero_()
            corner = tuple(slice(0, s) for s in source.shape)
            target[corner] = source
            masks[name] = torch.zeros_like(target)
            masks[name][corner] = 1.0
    return masks


def train_vmap(jobs: list, config: TrainingConfig, device: torch.device, epochs: int | None = None) -> list[np.ndarray]:
    """Train ``jobs`` (``zoo.subjects.train.SubjectJob``); their best-validation weights, in order."""
    out: list = [None] * len(jobs)
    for group in peer_groups([j.architecture for j in jobs]):
        for i, weights in zip(group, _train_group([jobs[i] for i in group], config, device, epochs)):
            out[i] = weights
    return out


def _train_group(jobs: list, config: TrainingConfig, device: torch.device, epochs: int | None) -> list[np.ndarray]:
    epochs = config.epochs if epochs is None else epochs
    width = max(max(j.architecture.widths) for j in jobs)
    template = _padded(jobs[0].architecture, width)
    models, masks = [], []
    for job in jobs:
        init = job.init if job.init is not None else init_weights(job.architecture, job.init_seed)
        padded = _OneHotMLP(template)
        masks.append(_pad_state(build_model(job.architecture, init), padded))
        models.append(padded.to(device))
    params, _ = stack_module_state(models)
    params = {k: p.detach() for k, p in params.items()}
    mask = {k: torch.stack([m[k] for m in masks]).to(device) for k in params}
    base = _OneHotMLP(template).to("meta")

    def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(functional_call(base, p, (x,)), y)

    per_model_grad = vmap(grad(loss))
    per_model_loss = vmap(loss)

    def one_hot(name: str) -> torch.Tensor:
        tokens = torch.as_tensor(np.stack([getattr(j, name) for j in jobs]), device=device).long()
        return F.one_hot(tokens, template.vocab_size).flatten(2).float()

    x, x_val = one_hot("train_tokens"), one_hot("val_tokens")
    y = torch.as_tensor(np.stack([j.train_labels for j in jobs]), device=device).float()
    y_val = torch.as_tensor(np.stack([j.val_labels for j in jobs]), device=device).float()
    n, s = y.shape
    names = list(params)
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    lr = torch.tensor([j.lr for j in jobs], dtype=torch.float32, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    best = {k: p.clone() for k, p in params.items()}
    best_loss = torch.full((n,), float("inf"), device=device)
    bad = torch.zeros(n, dtype=torch.long, device=device)
    seeds = [j.order_seed for j in jobs]
    beta1, beta2 = BETAS
    step = 0
    models_axis = torch.arange(n, device=device)[:, None]
    for epoch in range(epochs):
        order = torch.from_numpy(epoch_order(seeds, epoch, s)).to(device)
        xs, ys = x[models_axis, order], y[models_axis, order]
        rate = lr * active
        rates = {k: rate.view(n, *([1] * (p.dim() - 1))) for k, p in params.items()}
        for start in range(0, s, config.batch_size):
            grads = per_model_grad(params, xs[:, start : start + config.batch_size], ys[:, start : start + config.batch_size])
            g = [grads[k] * mask[k] for k in names]
            if config.weight_decay:
                g = [gi + config.weight_decay * params[k] for gi, k in zip(g, names)]
            step += 1
            ms, vs, ps = [m[k] for k in names], [v[k] for k in names], [params[k] for k in names]
            torch._foreach_mul_(ms, beta1)
            torch._foreach_add_(ms, g, alpha=1 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, g, g, value=1 - beta2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
            torch._foreach_add_(denom, EPS)
            updates = torch._foreach_div(ms, denom)
            for k, p, u in zip(names, ps, updates):
                p.addcmul_(u, rates[k], value=-1.0 / (1 - beta1**step))
        with torch.no_grad():
            val = per_model_loss(params, x_val, y_val)
        improved = (val < best_loss - config.min_delta) & active
        best_loss = torch.where(improved, val, best_loss)
        for k, p in params.items():
            best[k] = torch.where(improved.view(n, *([1] * (p.dim() - 1))), p, best[k])
        bad = torch.where(improved, 0, bad + 1)
        active &= bad < config.patience
        if not bool(active.any()):
            break
    return [_unpad({k: t[i].cpu() for k, t in best.items()}, job.architecture) for i, job in enumerate(jobs)]


def _unpad(state: dict[str, torch.Tensor], arch: Architecture) -> np.ndarray:
    model = SubjectMLP(arch)
    with torch.no_grad():
        for name, target in model.named_parameters():
            target.copy_(state[name][tuple(slice(0, s) for s in target.shape)])
    return flatten_model(model)
