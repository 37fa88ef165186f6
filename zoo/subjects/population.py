"""Many subject MLPs as one batched computation.

A ``Population`` holds N models whose depths, widths and activations may differ:
every model is padded to the deepest and widest (a ``[N, 1, H]`` mask silences
padded units where the activation of 0 is not 0). Padded weights start at zero and
get no gradient, so they stay zero. Parameters live in one flat ``[N, P]`` tensor of
``[in + 1, out]`` blocks (the bias as the last row, for ``bmm`` on inputs that end
in a constant 1), so Adam is a few fused ops over the whole population and early
stopping is a per-model learning rate of 0.

The head is a dot product rather than a ``k=1`` ``bmm`` (3x cheaper) and biases ride
in the weight blocks. Training lives in ``zoo.subjects.fit``; this module holds the
layout, the forward pass used for inference, and conversion to and from per-model weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from zoo.config import TrainingConfig
from zoo.runtime import resolve_device  # noqa: F401  (re-exported: callers import it from here)
from zoo.subjects.families.mlp import Architecture


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


def padded_blocks(architectures: list[Architecture]) -> list[Block]:
    """The layout of a population of these models: padded to the deepest and the widest."""
    depth = max(a.n_layers for a in architectures)
    width = max(max(a.widths) for a in architectures)
    sizes = [architectures[0].in_features] + [width] * depth + [1]
    blocks, offset = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        blocks.append(Block(offset, fan_in, fan_out, offset + fan_in * fan_out))
        offset += fan_in * fan_out + fan_out
    return blocks


def relayout(flat: torch.Tensor, src: list[Block], dst: list[Block]) -> torch.Tensor:
    """Rows laid out by blocks ``src`` re-padded to blocks ``dst``, for models that fit both.

    Hidden layers pair up in order and the heads pair up; padding is zero on both sides,
    so only the overlap of each block pair is copied. Returns ``flat`` itself when the layouts agree.
    """
    if src == dst:
        return flat
    n = flat.shape[0]
    out = flat.new_zeros(n, dst[-1].end)
    for s, d in [*zip(src[:-1], dst[:-1]), (src[-1], dst[-1])]:
        fan_in, fan_out = min(s.fan_in, d.fan_in), min(s.fan_out, d.fan_out)
        source = flat[:, s.w_offset : s.end].view(n, s.fan_in + 1, s.fan_out)
        target = out[:, d.w_offset : d.end].view(n, d.fan_in + 1, d.fan_out)
        target[:, :fan_in, :fan_out] = source[:, :fan_in, :fan_out]
        target[:, -1, :fan_out] = source[:, -1, :fan_out]
    return out


@dataclass(frozen=True)
class Segment:
    """A run of consecutive models that share an activation."""

    activation: str
    start: int
    end: int


@dataclass
class Population:
    """N models padded to the deepest and widest among them.

    Widths are padded with zero units. A model of depth d leaves through the head at
    its own layer d (see ``_exits``); the deeper blocks it does not use stay zero.
    Activations are applied per run of models that share one, so callers should order
    models by activation (``plan_groups`` does, and gives training one depth per population).
    """

    architectures: list[Architecture]
    flat: torch.Tensor

    def __post_init__(self) -> None:
        if len({a.in_features for a in self.architectures}) != 1:
            raise ValueError("a population holds one input size (vocab_size * seq_len)")
        self.n_layers = max(a.n_layers for a in self.architectures)
        self.max_width = max(max(a.widths) for a in self.architectures)
        self.blocks = padded_blocks(self.architectures)
        self.segments = _segments([a.activation for a in self.architectures])
        self.sigmoid_segments = [seg for seg in self.segments if seg.activation == "sigmoid"]
        self.width_mask = self._width_masks()
        self.exits = self._exits()
        self.exit_masks = dict(self.exits)

    @property
    def size(self) -> int:
        return len(self.architectures)

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def _width_masks(self) -> list[torch.Tensor | None]:
        """Per hidden layer a ``[N, 1, H]`` 0/1 mask, or None where padded units are zero anyway.

        A padded unit has zero weights and bias, so its pre-activation is exactly 0; only an
        activation with ``act(0) != 0`` (sigmoid) needs the mask to keep it silent.
        """
        if not self.sigmoid_segments:
            return [None] * self.n_layers
        units = torch.arange(self.max_width, device=self.device)
        masks: list[torch.Tensor | None] = []
        for layer in range(self.n_layers):
            widths = torch.tensor(
                [a.widths[layer] if layer < a.n_layers else 0 for a in self.architectures], device=self.device
            )
            masks.append((units[None, :] < widths[:, None]).to(self.flat.dtype)[:, None, :])
        return masks

    def _exits(self) -> list[tuple[int, torch.Tensor | None]]:
        """Hidden layers the head reads from, with a ``[N, 1, 1]`` mask of the models that end there.

        A model shallower than the population leaves through the head at its own last
        layer; the deeper blocks it does not use are zero, receive zero gradient and stay zero.
        """
        depths = torch.tensor([a.n_layers for a in self.architectures], device=self.device)
        if bool((depths == self.n_layers).all()):
            return [(self.n_layers - 1, None)]
        return [
            (layer, (depths == layer + 1).to(self.flat.dtype)[:, None, None])
            for layer in range(self.n_layers)
            if bool((depths == layer + 1).any())
        ]

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


    def augmented(self, flat: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[N, in + 1, out]`` views: each block's weights with its bias as the last row.

        Inputs carry a constant 1 in their last feature, so one ``bmm`` applies weights and
        bias and one ``bmm`` gives both gradients.
        """
        flat = self.flat if flat is None else flat
        n = flat.shape[0]
        return [flat[:, b.w_offset : b.end].view(n, b.fan_in + 1, b.fan_out) for b in self.blocks]


def _segments(activations: list[str]) -> list[Segment]:
    segments, start = [], 0
    for i in range(1, len(activations) + 1):
        if i == len(activations) or activations[i] != activations[start]:
            segments.append(Segment(activations[start], start, i))
            start = i
    return segments


def _per_segment(segments: list[Segment], fn, *tensors: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``fn(activation, *slices, out=slice)`` for each run of models, written into ``out``."""
    for seg in segments:
        part = slice(seg.start, seg.end)
        fn(seg.activation, *(t[part] for t in tensors), out=out[part])
    return out


def activate(name: str, z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    nn_ops = torch._C._nn
    if name == "relu":
        return torch.clamp_min(z, 0.0, out=out) if out is not None else torch.relu(z)
    if name == "gelu":  # gelu's out= variant mishandles strided outputs (torch 2.13): copy instead
        return nn_ops.gelu(z) if out is None else out.copy_(nn_ops.gelu(z))
    if name == "tanh":  # 2 sigmoid(2z) - 1: ATen's tanh costs 6x its sigmoid on x86 (torch 2.13); abs error < 2e-7
        out = torch.add(z, z, out=out) if out is not None else z + z  # x + x: no scalar to wrap
        torch.sigmoid(out, out=out)
        return torch.add(out, out, out=out).sub_(1.0)
    if name == "sigmoid":
        return torch.sigmoid(z, out=out)
    if name == "leaky_relu":
        return nn_ops.leaky_relu(z, 0.01, out=out) if out is not None else nn_ops.leaky_relu(z, 0.01)
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(
    name: str, z: torch.Tensor, h: torch.Tensor, upstream: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``upstream * act'(z)`` with ATen's fused backward kernels (one pass instead of several)."""
    aten = torch.ops.aten
    if name == "relu":
        op, args = aten.threshold_backward, (upstream, h, 0)
    elif name == "leaky_relu":
        op, args = aten.leaky_relu_backward, (upstream, z, 0.01, False)
    elif name == "tanh":
        op, args = aten.tanh_backward, (upstream, h)
    elif name == "sigmoid":
        op, args = aten.sigmoid_backward, (upstream, h)
    elif name == "gelu":
        op, args = aten.gelu_backward, (upstream, z)
    else:
        raise ValueError(f"unknown activation {name!r}")
    return op(*args) if out is None else op.grad_input(*args, grad_input=out)


def _with_ones(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``[N, B, H + 1]`` buffer whose last feature is 1, and its ``[N, B, H]`` view to fill."""
    buffer = torch.empty(*z.shape[:-1], z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    buffer[..., -1] = 1.0
    return buffer, buffer[..., :-1]


def forward(
    pop: Population, x: torch.Tensor, flat: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits ``[N, B]`` for inputs ``x [N, B, D + 1]`` (see ``one_hot_inputs``).

    Also returns every hidden layer's pre-activations and its post-activations with
    the constant-1 feature appended (``[..., :-1]`` is the layer's output).
    """
    weights = pop.augmented(flat)
    h, pres, posts = x, [], []
    for layer, w in enumerate(weights[:-1]):
        z = torch.bmm(h, w)
        h, post = _with_ones(z)
        _per_segment(pop.segments, activate, z, out=post)
        if pop.width_mask[layer] is not None:
            for seg in pop.sigmoid_segments:
                post[seg.start : seg.end].mul_(pop.width_mask[layer][seg.start : seg.end])
        pres.append(z)
        posts.append(h)
    return head_logits(pop, posts, weights[-1].transpose(1, 2)), pres, posts


def head_logits(pop: Population, posts: list[torch.Tensor], w_head: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, B]``: each model's head ``w_head [N, 1, H + 1]`` read at its own last layer.

    A dot product per sample, cheaper than a ``k=1`` ``bmm``.
    """
    out = None
    for layer, mask in pop.exits:
        term = (posts[layer] * (w_head if mask is None else w_head * mask)).sum(-1)
        out = term if out is None else out + term
    return out


def one_hot_inputs(tokens: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[..., L]`` token ids -> ``[..., L * vocab + 1]``: the one-hot features the nn.Module
    computes, then a constant 1 that carries the first layer's bias."""
    tokens = tokens.long()
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got {int(tokens.min())}..{int(tokens.max())}")
    features = tokens + torch.arange(tokens.shape[-1], device=tokens.device) * vocab_size
    out = torch.zeros(*tokens.shape[:-1], tokens.shape[-1] * vocab_size + 1, dtype=dtype, device=tokens.device)
    out[..., -1] = 1.0
    return out.scatter_(-1, features, 1.0)


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
    # keys are distinct (splitmix64 is a bijection), so the faster unstable sort gives the stable order
    return np.argsort(keys, axis=1)


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
    blocks = padded_blocks(architectures)
    flat = np.zeros((len(architectures), blocks[-1].end), dtype=np.float32)
    for row, (arch, w) in enumerate(zip(architectures, weights)):
        sizes = arch.layer_sizes
        entries = arch.layout()
        for layer, block in enumerate(_own_blocks(blocks, arch)):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            we, be = entries[2 * layer], entries[2 * layer + 1]
            matrix = w[we.offset : we.offset + we.size].reshape(fan_out, fan_in).T
            padded = np.zeros((block.fan_in, block.fan_out), dtype=np.float32)
            padded[:fan_in, :fan_out] = matrix
            flat[row, block.w_offset : block.b_offset] = padded.ravel()
            flat[row, block.b_offset : block.b_offset + fan_out] = w[be.offset : be.offset + be.size]
    return Population(list(architectures), torch.from_numpy(flat).to(device))


def subset(pop: Population, rows: torch.Tensor, *like_flat: torch.Tensor) -> tuple[Population, list[torch.Tensor]]:
    """The models at ``rows`` as a population padded only to their own depth and width.

    ``like_flat`` are tensors laid out like ``pop.flat`` (Adam's moments, best weights);
    they come back laid out like the new population's.
    """
    architectures = [pop.architectures[i] for i in rows.tolist()]
    blocks = padded_blocks(architectures)
    moved = [relayout(t[rows], pop.blocks, blocks) for t in (pop.flat, *like_flat)]
    return Population(architectures, moved[0]), moved[1:]


def to_weights(pop: Population) -> list[np.ndarray]:
    """The inverse of ``from_weights``: each model's true-width weights in ``Architecture.layout`` order."""
    flat = pop.flat.detach().cpu().numpy()
    out = []
    for row, arch in enumerate(pop.architectures):
        sizes = arch.layer_sizes
        parts = []
        for layer, block in enumerate(_own_blocks(pop.blocks, arch)):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            padded = flat[row, block.w_offset : block.b_offset].reshape(block.fan_in, block.fan_out)
            parts.append(padded[:fan_in, :fan_out].T.ravel())
            parts.append(flat[row, block.b_offset : block.b_offset + fan_out])
        out.append(np.concatenate(parts).astype(np.float32))
    return out


def _own_blocks(blocks: list[Block], arch: Architecture) -> list[Block]:
    """The padded blocks a model of this depth uses: its hidden layers, then the shared head."""
    return [*blocks[: arch.n_layers], blocks[-1]]


def logits(pop: Population, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return forward(pop, x)[0]


def auto_population_size(config: TrainingConfig, device: torch.device, bytes_per_model: int) -> int:
    """Models per batched computation: fixed on CPU (cache-sized), memory-sized on a GPU."""
    if config.population_size != "auto":
        return int(config.population_size)
    if device.type != "cuda":
        return 32
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(64, min(65536, 0.5 * free // max(bytes_per_model, 1))))
