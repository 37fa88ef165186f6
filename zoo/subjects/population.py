"""Many subject MLPs as one batched computation.

A ``Population`` holds N models of one depth and activation whose hidden widths
may differ: every model is padded to the widest, and a ``[N, 1, H]`` mask zeroes
the padded units. Padded weights start at zero and get no gradient, so they stay
zero. Parameters live in one flat ``[N, P]`` tensor (``[in, out]`` blocks for
``baddbmm``), so Adam is a handful of fused ops over the whole population and
early stopping is a row mask.

Forward and backward are written out by hand: for these tiny models the autograd
tape costs more than the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zoo.config import TrainingConfig
from zoo.subjects.architecture import Architecture

def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, so the same config runs on laptops and GPU nodes."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


@dataclass(frozen=True)
class Block:
    """One linear layer's place in the padded flat parameter row."""

    w_offset: int
    fan_in: int
    fan_out: int
    b_offset: int

    @property
    def end(self) -> int:
        return self.b_offset + self.fan_out


def padded_blocks(in_features: int, max_width: int, n_layers: int) -> list[Block]:
    sizes = [in_features] + [max_width] * n_layers + [1]
    blocks, offset = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        blocks.append(Block(offset, fan_in, fan_out, offset + fan_in * fan_out))
        offset += fan_in * fan_out + fan_out
    return blocks


@dataclass
class Population:
    """N models of one depth and activation, padded to a common width."""

    architectures: list[Architecture]
    flat: torch.Tensor

    def __post_init__(self) -> None:
        first = self.architectures[0]
        for arch in self.architectures:
            if (arch.n_layers, arch.activation, arch.in_features) != (
                first.n_layers,
                first.activation,
                first.in_features,
            ):
                raise ValueError("a population holds one depth, activation and input size")
        self.n_layers = first.n_layers
        self.activation = first.activation
        self.max_width = max(max(a.widths) for a in self.architectures)
        self.blocks = padded_blocks(first.in_features, self.max_width, self.n_layers)
        self.mask = self._hidden_masks()

    @property
    def size(self) -> int:
        return len(self.architectures)

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def _hidden_masks(self) -> list[torch.Tensor | None]:
        """Per hidden layer a ``[N, 1, H]`` 0/1 mask, or None where padded units are zero anyway.

        A padded unit has zero weights and bias, so its pre-activation is exactly 0; only an
        activation with ``act(0) != 0`` (sigmoid) needs the mask to keep it silent.
        """
        masks: list[torch.Tensor | None] = []
        if self.activation != "sigmoid":
            return [None] * self.n_layers
        for layer in range(self.n_layers):
            widths = torch.tensor([a.widths[layer] for a in self.architectures], device=self.flat.device)
            if bool((widths == self.max_width).all()):
                masks.append(None)
            else:
                units = torch.arange(self.max_width, device=self.flat.device)
                masks.append((units[None, :] < widths[:, None]).to(self.flat.dtype)[:, None, :])
        return masks

    def params(self, flat: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(W [N, in, out], b [N, 1, out])`` views into ``flat`` for every layer, head last."""
        flat = self.flat if flat is None else flat
        n = flat.shape[0]
        return [
            (
                flat[:, b.w_offset : b.b_offset].view(n, b.fan_in, b.fan_out),
                flat[:, b.b_offset : b.end].view(n, 1, b.fan_out),
            )
            for b in self.blocks
        ]


def activate(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "gelu":
        return F.gelu(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, 0.01)
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(name: str, z: torch.Tensor, h: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """``upstream * act'(z)`` with ATen's fused backward kernels (one pass instead of several)."""
    aten = torch.ops.aten
    if name == "relu":
        return aten.threshold_backward(upstream, h, 0)
    if name == "leaky_relu":
        return aten.leaky_relu_backward(upstream, z, 0.01, False)
    if name == "tanh":
        return aten.tanh_backward(upstream, h)
    if name == "sigmoid":
        return aten.sigmoid_backward(upstream, h)
    if name == "gelu":
        return aten.gelu_backward(upstream, z)
    raise ValueError(f"unknown activation {name!r}")


def forward(
    pop: Population, x: torch.Tensor, flat: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits ``[N, B]`` for inputs ``x [N, B, D]``, plus every hidden layer's pre- and post-activations."""
    params = pop.params(flat)
    h, pres, posts = x, [], []
    for (w, b), mask in zip(params[:-1], pop.mask):
        z = torch.baddbmm(b, h, w)
        h = activate(pop.activation, z)
        if mask is not None:
            h = h * mask
        pres.append(z)
        posts.append(h)
    w, b = params[-1]
    return torch.baddbmm(b, h, w).squeeze(-1), pres, posts


def gradients(
    pop: Population, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Gradient ``[N, P]`` of each model's mean BCE-with-logits loss on its own minibatch."""
    logits, pres, posts = forward(pop, x, flat)
    params = pop.params(flat)
    g_out = ((torch.sigmoid(logits) - y) * (1.0 / x.shape[1])).unsqueeze(-1)
    inputs = [x, *posts]
    grads: list[torch.Tensor] = []
    upstream = g_out
    for layer in range(pop.n_layers, -1, -1):
        w, _ = params[layer]
        if layer < pop.n_layers:
            upstream = activation_grad(pop.activation, pres[layer], posts[layer], upstream)
        grads.append(upstream.sum(1))
        grads.append(torch.bmm(inputs[layer].transpose(1, 2), upstream).flatten(1))
        if layer > 0:
            upstream = torch.bmm(upstream, w.transpose(1, 2))
    return torch.cat(grads[::-1], dim=1)


def bce_per_model(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)


def one_hot_inputs(tokens: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[..., L]`` token ids -> ``[..., L * vocab]`` one-hot features, as the nn.Module computes them."""
    return F.one_hot(tokens.long(), vocab_size).flatten(-2).to(dtype)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def epoch_order(seeds: np.ndarray | list[int], epoch: int, n: int) -> np.ndarray:
    """Each model's sample order in an epoch, ``[N, n]``: a hash of (seed, epoch), not a shared RNG.

    Counter-based, so a model's order does not depend on which population it trains in.
    """
    seeds = np.asarray(seeds, dtype=np.uint64)
    with np.errstate(over="ignore"):
        stream = _splitmix64(_splitmix64(seeds) ^ np.uint64(epoch + 1))
        keys = _splitmix64(stream[:, None] + np.arange(n, dtype=np.uint64)[None, :])
    return np.argsort(keys, axis=1, kind="stable")


def init_population(
    architectures: list[Architecture], seeds: list[int], device: torch.device | str = "cpu"
) -> Population:
    """Each model drawn as ``nn.Linear`` would (uniform in ±1/sqrt(fan_in)) from its own seed."""
    weights = [init_weights(arch, seed) for arch, seed in zip(architectures, seeds)]
    return from_weights(architectures, weights, device)


def init_weights(arch: Architecture, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    for entry in arch.layout():
        fan_in = arch.layer_sizes[_layer_index(entry.name, arch)]
        bound = 1.0 / math.sqrt(fan_in)
        parts.append(rng.uniform(-bound, bound, size=entry.size).astype(np.float32))
    return np.concatenate(parts)


def _layer_index(name: str, arch: Architecture) -> int:
    return arch.n_layers if name.startswith("head") else int(name.split(".")[1])


def from_weights(
    architectures: list[Architecture], weights: list[np.ndarray], device: torch.device | str = "cpu"
) -> Population:
    """Pack flat per-model weights (``Architecture.layout``) into a padded population."""
    first = architectures[0]
    max_width = max(max(a.widths) for a in architectures)
    blocks = padded_blocks(first.in_features, max_width, first.n_layers)
    flat = np.zeros((len(architectures), blocks[-1].end), dtype=np.float32)
    for row, (arch, w) in enumerate(zip(architectures, weights)):
        sizes = arch.layer_sizes
        entries = arch.layout()
        for layer, block in enumerate(blocks):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            we, be = entries[2 * layer], entries[2 * layer + 1]
            matrix = w[we.offset : we.offset + we.size].reshape(fan_out, fan_in).T
            padded = np.zeros((block.fan_in, block.fan_out), dtype=np.float32)
            padded[:fan_in, :fan_out] = matrix
            flat[row, block.w_offset : block.b_offset] = padded.ravel()
            flat[row, block.b_offset : block.b_offset + fan_out] = w[be.offset : be.offset + be.size]
    return Population(list(architectures), torch.from_numpy(flat).to(device))


def to_weights(pop: Population) -> list[np.ndarray]:
    """The inverse of ``from_weights``: each model's true-width weights in ``Architecture.layout`` order."""
    flat = pop.flat.detach().cpu().numpy()
    out = []
    for row, arch in enumerate(pop.architectures):
        sizes = arch.layer_sizes
        parts = []
        for layer, block in enumerate(pop.blocks):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            padded = flat[row, block.w_offset : block.b_offset].reshape(block.fan_in, block.fan_out)
            parts.append(padded[:fan_in, :fan_out].T.ravel())
            parts.append(flat[row, block.b_offset : block.b_offset + fan_out])
        out.append(np.concatenate(parts).astype(np.float32))
    return out


@dataclass
class TrainData:
    """Each model's own data, already on the population's device."""

    x_train: torch.Tensor  # [N, S, D] float
    y_train: torch.Tensor  # [N, S] float
    x_val: torch.Tensor  # [N, V, D]
    y_val: torch.Tensor  # [N, V]


@dataclass
class TrainResult:
    epochs: np.ndarray  # [N] epochs each model trained before it stopped
    val_loss: np.ndarray  # [N] best validation loss, whose weights the population now holds


def train_population(
    pop: Population,
    data: TrainData,
    config: TrainingConfig,
    lr: np.ndarray | list[float],
    order_seeds: np.ndarray | list[int],
    epochs: int | None = None,
) -> TrainResult:
    """Adam with per-model learning rates and early stopping on validation loss; updates ``pop`` in place.

    A stopped model's learning rate is set to zero, so Adam's moments cannot move it;
    at the end every model is rolled back to its best-validation weights.
    """
    n, s = data.y_train.shape
    device, flat = pop.device, pop.flat
    epochs = config.epochs if epochs is None else epochs
    lr_t = torch.as_tensor(np.asarray(lr, dtype=np.float32), device=device)[:, None]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m, v = torch.zeros_like(flat), torch.zeros_like(flat)
    best_flat = flat.clone()
    best_loss = torch.full((n,), float("inf"), device=device)
    bad_epochs = torch.zeros(n, dtype=torch.long, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    epochs_run = torch.zeros(n, dtype=torch.long, device=device)
    dim = data.x_train.shape[2]
    row_base = torch.arange(n, device=device)[:, None] * s
    step = 0
    for epoch in range(epochs):
        order = torch.from_numpy(epoch_order(order_seeds, epoch, s)).to(device)
        rows = (order + row_base).view(-1)
        xs = data.x_train.reshape(n * s, dim).index_select(0, rows).view(n, s, dim)
        ys = data.y_train.reshape(-1).index_select(0, rows).view(n, s)
        step_lr = lr_t * active[:, None]
        for start in range(0, s, config.batch_size):
            g = gradients(pop, flat, xs[:, start : start + config.batch_size], ys[:, start : start + config.batch_size])
            if config.weight_decay:
                g = g.add(flat, alpha=config.weight_decay)
            step += 1
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = v.sqrt().div_(math.sqrt(1 - beta2**step)).add_(eps)
            flat.addcdiv_(m * (step_lr / (1 - beta1**step)), denom, value=-1.0)
        with torch.no_grad():
            val = bce_per_model(forward(pop, data.x_val, flat)[0], data.y_val)
        epochs_run += active
        improved = (val < best_loss - config.min_delta) & active
        best_loss = torch.where(improved, val, best_loss)
        best_flat = torch.where(improved[:, None], flat, best_flat)
        bad_epochs = torch.where(improved, 0, bad_epochs + 1)
        active &= bad_epochs < config.patience
        if not bool(active.any()):
            break
    pop.flat.copy_(best_flat)
    return TrainResult(epochs=epochs_run.cpu().numpy(), val_loss=best_loss.cpu().numpy())


def logits(pop: Population, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return forward(pop, x)[0]


def auto_population_size(config: TrainingConfig, device: torch.device, bytes_per_model: int) -> int:
    """Models per batched computation: fixed on CPU (cache-sized), memory-sized on a GPU."""
    if config.population_size != "auto":
        return int(config.population_size)
    if device.type != "cuda":
        return 64
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(64, min(65536, 0.5 * free // max(bytes_per_model, 1))))
