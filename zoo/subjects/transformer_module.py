"""A transformer subject as a standard ``nn.Module``, rebuilt from flat float32 weights (no pickle).

See ``zoo.subjects.families.transformer`` for the architecture, readout and hookpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.subjects.flat import flatten, load_flat
from zoo.subjects.families.transformer import Architecture

INIT_STD = 0.02
LN_EPS = 1e-5


def init_weights(arch: Architecture, seed: int) -> np.ndarray:
    """GPT-2's initialization, a pure function of the seed: matrices N(0, 0.02), the projections
    that write into the residual stream N(0, 0.02 / sqrt(2 n_layers)), biases 0, LayerNorm gains 1."""
    rng = np.random.default_rng(seed)
    residual_std = INIT_STD / math.sqrt(2 * arch.n_layers)
    writes_residual = (".attn.out.weight", ".ffn.down.weight", ".ffn.up_proj.weight")
    parts = []
    for name, shape in arch.parameter_shapes():
        size = int(np.prod(shape))
        if ".ln" in name or name.startswith("ln_f"):
            value = np.ones(size) if name.endswith("weight") else np.zeros(size)
        elif name.endswith("bias"):
            value = np.zeros(size)
        else:
            residual = name.endswith(writes_residual) or (name.endswith("ffn.decoder.weight") and not arch.rank)
            value = rng.normal(0.0, residual_std if residual else INIT_STD, size)
        parts.append(value.astype(np.float32))
    return np.concatenate(parts)


def group_max(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU, then the maximum of each of ``k`` contiguous groups: ``(values, unit indices)``, each ``[..., k]``."""
    groups = torch.relu(pre).unflatten(-1, (k, pre.shape[-1] // k))
    values, slot = groups.max(-1)
    return values, slot + torch.arange(k, device=pre.device) * groups.shape[-1]


class RowDecoder(nn.Module):
    """Decodes a sparse code from its active units only: the sum of their rows, weighted by their values."""

    def __init__(self, hidden: int, out: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden, out))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None

    def forward(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        lead = values.shape[:-1]
        out = F.embedding_bag(
            indices.reshape(-1, indices.shape[-1]), self.weight,
            per_sample_weights=values.reshape(-1, values.shape[-1]), mode="sum",
        ).view(*lead, -1)  # fmt: skip
        return out if self.bias is None else out + self.bias


class DenseFFN(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.up = nn.Linear(arch.d_model, arch.d_hidden, bias=arch.bias)
        self.down = nn.Linear(arch.d_hidden, arch.d_model, bias=arch.bias)

    def forward(self, x: torch.Tensor, points: dict | None = None, prefix: str = "") -> torch.Tensor:
        pre = self.up(x)
        post = F.gelu(pre)
        if points is not None:
            points[f"{prefix}.ffn.pre"], points[f"{prefix}.ffn.post"] = pre, post
        return self.down(post)


class GroupMaxFFN(nn.Module):
    """``sparse`` and ``sparse_low_rank``: exactly ``k`` hidden units active per token."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.k, inner = arch.k, arch.rank or arch.d_model
        self.down_proj = nn.Linear(arch.d_model, inner, bias=arch.bias) if arch.rank else None
        self.encoder = nn.Linear(inner, arch.d_hidden, bias=arch.bias)
        self.decoder = RowDecoder(arch.d_hidden, inner, arch.bias)
        self.up_proj = nn.Linear(inner, arch.d_model, bias=arch.bias) if arch.rank else None

    def forward(self, x: torch.Tensor, points: dict | None = None, prefix: str = "") -> torch.Tensor:
        h = self.down_proj(x) if self.down_proj is not None else x
        pre = self.encoder(h)
        values, indices = group_max(pre, self.k)
        if points is not None:
            points[f"{prefix}.ffn.pre"] = pre
            points[f"{prefix}.ffn.post"] = torch.zeros_like(pre).scatter(-1, indices, values)
        out = self.decoder(values, indices)
        return self.up_proj(out) if self.up_proj is not None else out


class Attention(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.n_heads = arch.n_heads
        self.qkv = nn.Linear(arch.d_model, 3 * arch.d_model, bias=arch.bias)
        self.out = nn.Linear(arch.d_model, arch.d_model, bias=arch.bias)

    def forward(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        """``x [B, T, d]`` -> ``[B, T, d]``, or ``[B, 1, d]`` for the last position only."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if last_only:  # the last query sees every position: no mask needed
            z = F.scaled_dot_product_attention(q[:, :, -1:], k, v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(z.transpose(1, 2).reshape(b, z.shape[2], d))


class Block(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(arch.d_model, eps=LN_EPS, bias=arch.bias)
        self.attn = Attention(arch)
        self.ln2 = nn.LayerNorm(arch.d_model, eps=LN_EPS, bias=arch.bias)
        self.ffn = DenseFFN(arch) if arch.ffn == "dense" else GroupMaxFFN(arch)

    def forward(self, x: torch.Tensor, last_only: bool = False, points: dict | None = None, prefix: str = ""):
        a = self.attn(self.ln1(x), last_only)
        x = (x[:, -1:] if last_only else x) + a
        if points is not None:
            points[f"{prefix}.attn.out"] = a
        return x + self.ffn(self.ln2(x), points, prefix)


class SubjectTransformer(nn.Module):
    """Token ids ``[batch, seq_len]`` (0 = A) -> ``[batch]`` logits, read at the last position."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        arch = self.architecture = architecture
        self.tok_emb = nn.Embedding(arch.vocab_size, arch.d_model)
        self.pos_emb = nn.Embedding(arch.seq_len, arch.d_model)
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.n_layers))
        self.ln_f = nn.LayerNorm(arch.d_model, eps=LN_EPS, bias=arch.bias)
        self.head = nn.Linear(arch.d_model, 1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.long()
        return self.tok_emb(tokens) + self.pos_emb.weight[: tokens.shape[1]]

    def _run(self, tokens: torch.Tensor, points: dict | None) -> torch.Tensor:
        x = self.embed(tokens)
        if points is not None:
            points["embed"] = x
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=i == last, points=points, prefix=f"blocks.{i}")
            if points is not None:
                points[f"blocks.{i}.resid"] = x
        out = self.head(self.ln_f(x[:, -1]))
        if points is not None:
            points["head"] = out
        return out.squeeze(-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run(tokens, None)

    def activations(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hookpoint of the family, read at the last position: ``[batch, width]``."""
        points: dict[str, torch.Tensor] = {}
        self._run(tokens, points)
        return {name: (v[:, -1] if v.dim() == 3 else v) for name, v in points.items()}


def build_model(architecture: Architecture | dict, weights: np.ndarray | torch.Tensor) -> SubjectTransformer:
    """Rebuild a model from its architecture and flat weights laid out by ``Architecture.layout``."""
    if not isinstance(architecture, Architecture):
        from zoo.subjects.families import require_family

        architecture = require_family(architecture, ("transformer",), "the transformer module")
    return load_flat(SubjectTransformer(architecture), architecture, weights)


def flatten_model(model: SubjectTransformer) -> np.ndarray:
    """The inverse of ``build_model``: the module's parameters as one float32 vector."""
    return flatten(model)
