"""Many transformer subjects as one batched computation: stacked weights, one forward for all.

A ``TransformerPopulation`` holds N models of one feed-forward kind and one bias setting;
their depths, widths, head counts and sparse group counts may differ. Every parameter is
one stacked tensor ``[N, ...]`` padded to the largest model (``Pad``), laid out so that
matrix products are ``bmm``s (``[N, in, out]``). Padding changes nothing a model computes:

- padded model dimensions are zero in every embedding and projection; LayerNorm takes its
  mean and variance over each model's true dimensions (a ``[N, 1, D]`` mask) and its padded
  gains are zero, so padded dimensions stay exactly zero and get zero gradient;
- padded heads have zero query, key and value weights: they attend uniformly to zero values,
  and their output-projection rows are zero; each model's queries are scaled by its own
  ``1/sqrt(d_head)`` (attention runs at scale 1);
- padded hidden units and GroupMax groups have zero weights: ReLU gives 0, which never beats a
  true unit's value (all >= 0) and decodes to nothing;
- a model shallower than the population passes padded blocks through a ``[N, 1, 1]`` mask on
  each block's residual write (their biases would otherwise learn).

Attention folds the model dimension into the batch (``[N*B, H, T, d_head]``) and makes one
``scaled_dot_product_attention`` call per block. Training (autograd, AdamW, clipping, early
stopping) lives in ``zoo.subjects.transformer_train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from zoo.subjects.families.transformer import Architecture
from zoo.subjects.transformer_module import LN_EPS


@dataclass(frozen=True)
class Pad:
    """A population's padded sizes (or one model's true sizes): the shapes its tensors have."""

    d: int  # model width
    h: int  # heads
    dh: int  # head width
    f: int  # hidden units of the feed-forward (k * g for the sparse kinds)
    k: int  # GroupMax groups (0: dense)
    g: int  # units per group (0: dense)
    r: int  # low-rank bottleneck (0: none)
    layers: int

    @classmethod
    def of(cls, arch: Architecture) -> Pad:
        return cls(arch.d_model, arch.n_heads, arch.d_head, arch.d_hidden, arch.k, arch.group_size, arch.rank, arch.n_layers)

    @classmethod
    def covering(cls, archs: list[Architecture]) -> Pad:
        pads = [cls.of(a) for a in archs]
        pad = cls(*(max(getattr(p, name) for p in pads) for name in cls.__dataclass_fields__))
        if pad.k:  # GroupMax: groups padded to the most, each to the largest group
            pad = replace(pad, f=pad.k * pad.g)
        return pad

    @property
    def inner(self) -> int:
        return self.r or self.d


def _structure(name: str, p: Pad, vocab: int, seq_len: int) -> tuple[bool, tuple[int, ...]]:
    """How parameter ``name`` (state-dict name) is stored: ``(transposed, structured shape at sizes p)``.

    The module's tensor, transposed when the flag says so (``nn.Linear`` is ``[out, in]``, the
    population ``[in, out]``), reshaped to the structured shape, fills the leading corner of
    the population's padded tensor of the same structure.
    """
    leaf = name.split(".", 2)[-1] if name.startswith("blocks.") else name
    table = {
        "tok_emb.weight": (False, (vocab, p.d)),
        "pos_emb.weight": (False, (seq_len, p.d)),
        "attn.qkv.weight": (True, (p.d, 3, p.h, p.dh)),
        "attn.qkv.bias": (False, (3, p.h, p.dh)),
        "attn.out.weight": (True, (p.h, p.dh, p.d)),
        "ffn.up.weight": (True, (p.d, p.f)),
        "ffn.up.bias": (False, (p.f,)),
        "ffn.down.weight": (True, (p.f, p.d)),
        "ffn.down_proj.weight": (True, (p.d, p.r)),
        "ffn.down_proj.bias": (False, (p.r,)),
        "ffn.encoder.weight": (True, (p.inner, p.k, p.g)),
        "ffn.encoder.bias": (False, (p.k, p.g)),
        "ffn.decoder.weight": (False, (p.k, p.g, p.inner)),
        "ffn.decoder.bias": (False, (p.inner,)),
        "ffn.up_proj.weight": (True, (p.r, p.d)),
        "head.weight": (True, (p.d,)),
        "head.bias": (False, (1,)),
        "lm_head.weight": (True, (p.d, vocab)),
        "lm_head.bias": (False, (vocab,)),
    }
    return table.get(leaf, (False, (p.d,)))  # LayerNorm gains and biases, attn.out / ffn.down / up_proj biases


def is_matrix(name: str) -> bool:
    """Parameters that get weight decay and quantization: embeddings, projections, decoder tables, the head."""
    return name.endswith(".weight") and ".ln" not in name and not name.startswith("ln_f")


@dataclass
class TransformerPopulation:
    architectures: list[Architecture]
    params: dict[str, torch.Tensor]  # state-dict names -> [N, *padded structure]
    pad: Pad
    masks: dict[str, torch.Tensor | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        first = self.architectures[0]
        for a in self.architectures:
            if (a.ffn, a.bias, a.vocab_size, a.seq_len, a.head) != (first.ffn, first.bias, first.vocab_size, first.seq_len, first.head):
                raise ValueError("a transformer population holds one feed-forward kind, bias setting, token space and head")
        device, dtype = self.device, torch.float32
        d = torch.tensor([a.d_model for a in self.architectures], device=device)
        dh = torch.tensor([a.d_head for a in self.architectures], device=device, dtype=dtype)
        depth = torch.tensor([a.n_layers for a in self.architectures], device=device)
        self.d_true = d.to(dtype)[:, None, None]
        self.d_mask = (torch.arange(self.pad.d, device=device) < d[:, None]).to(dtype)[:, None, :] if bool((d < self.pad.d).any()) else None
        self.q_scale = (1.0 / dh.sqrt())[:, None, None, None, None]
        self.layer_masks = [
            (depth > i).to(dtype)[:, None, None] if bool((depth <= i).any()) else None for i in range(self.pad.layers)
        ]
        self.unit_index = self._unit_index()

    @property
    def size(self) -> int:
        return len(self.architectures)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def ffn(self) -> str:
        return self.architectures[0].ffn

    def _unit_index(self) -> torch.Tensor | None:
        """``[N, F]`` padded position of each model's hidden unit ``j`` (module order), where group sizes differ."""
        if not self.architectures[0].sparse or all(a.group_size == self.pad.g for a in self.architectures):
            return None
        rows = []
        for a in self.architectures:
            j = np.arange(self.pad.f)
            group, slot = j // a.group_size, j % a.group_size
            own = np.where(j < a.d_hidden, group * self.pad.g + slot, self.pad.f - 1)
            rows.append(own)
        return torch.as_tensor(np.stack(rows), device=self.device)

    def subset(self, rows: torch.Tensor, *like: dict[str, torch.Tensor]) -> tuple[TransformerPopulation, list[dict]]:
        """The models at ``rows`` (same padding); ``like`` are dicts shaped like ``params``, subset alike."""
        archs = [self.architectures[i] for i in rows.tolist()]
        pop = TransformerPopulation(archs, {n: t[rows] for n, t in self.params.items()}, self.pad)
        return pop, [{n: t[rows] for n, t in d.items()} for d in like]


def from_weights(
    architectures: list[Architecture], weights: list[np.ndarray], device: torch.device | str = "cpu", pad: Pad | None = None
) -> TransformerPopulation:
    """Pack flat per-model weights (``Architecture.layout``) into a padded population."""
    pad = Pad.covering(architectures) if pad is None else pad
    first = architectures[0]
    shapes = [n for n, _ in _deepest(architectures, pad).parameter_shapes()]
    params = {}
    for name in shapes:
        _, padded = _structure(name, pad, first.vocab_size, first.seq_len)
        params[name] = np.zeros((len(architectures), *padded), dtype=np.float32)
    for row, (arch, w) in enumerate(zip(architectures, weights)):
        own = Pad.of(arch)
        for entry in arch.layout():
            transposed, shape = _structure(entry.name, own, arch.vocab_size, arch.seq_len)
            value = np.asarray(w[entry.offset : entry.offset + entry.size]).reshape(entry.shape)
            value = (value.T if transposed else value).reshape(shape)
            params[entry.name][(row, *(slice(0, s) for s in shape))] = value
    return TransformerPopulation(list(architectures), {n: torch.from_numpy(t).to(device) for n, t in params.items()}, pad)


def _deepest(architectures: list[Architecture], pad: Pad) -> Architecture:
    """An architecture with every parameter name the population stores (its depth is the padded depth)."""
    return replace(max(architectures, key=lambda a: a.n_layers), n_layers=pad.layers)


def to_weights(pop: TransformerPopulation) -> list[np.ndarray]:
    """The inverse of ``from_weights``: each model's true-size weights in ``Architecture.layout`` order."""
    arrays = {n: t.detach().cpu().numpy() for n, t in pop.params.items()}
    out = []
    for row, arch in enumerate(pop.architectures):
        own, parts = Pad.of(arch), []
        for entry in arch.layout():
            transposed, shape = _structure(entry.name, own, arch.vocab_size, arch.seq_len)
            value = arrays[entry.name][(row, *(slice(0, s) for s in shape))]
            if transposed:
                value = value.reshape(entry.shape[::-1]).T
            parts.append(np.ascontiguousarray(value).ravel())
        out.append(np.concatenate(parts).astype(np.float32))
    return out


def init_population(architectures: list[Architecture], seeds: list[int], device: torch.device | str = "cpu") -> TransformerPopulation:
    from zoo.subjects.transformer_module import init_weights

    return from_weights(architectures, [init_weights(a, s) for a, s in zip(architectures, seeds)], device)


# ---- forward


def _layer_norm(pop: TransformerPopulation, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """LayerNorm over each model's true dimensions, with per-model gain and bias; ``x [N, M, D]``."""
    if pop.d_mask is None:
        h = F.layer_norm(x, x.shape[-1:], eps=LN_EPS)
    else:
        mean = (x * pop.d_mask).sum(-1, keepdim=True) / pop.d_true  # masked, so padded dimensions get no gradient
        centred = (x - mean) * pop.d_mask
        h = centred * torch.rsqrt((centred * centred).sum(-1, keepdim=True) / pop.d_true + LN_EPS)
    h = h * w[:, None]
    return h if b is None else h + b[:, None]


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x [N, M, in] @ w [N, in, ...out] (+ b)`` -> ``[N, M, out]``."""
    n = w.shape[0]
    w = w.reshape(n, x.shape[-1], -1)
    return torch.bmm(x, w) if b is None else torch.baddbmm(b.reshape(n, 1, -1), x, w)


def _attention(pop: TransformerPopulation, P: dict, prefix: str, h: torch.Tensor, batch: int, last_only: bool) -> torch.Tensor:
    n, pad = pop.size, pop.pad
    t = h.shape[1] // batch
    qkv = _linear(h, P[f"{prefix}.qkv.weight"], P.get(f"{prefix}.qkv.bias")).view(n, batch, t, 3, pad.h, pad.dh)
    q, k, v = (z.transpose(2, 3) for z in qkv.unbind(3))  # [N, B, H, T, dh]; unbind: no zero-filled backward
    q = q * pop.q_scale
    if last_only:
        q = q[:, :, :, -1:]
    fold = lambda z: z.reshape(n * batch, pad.h, z.shape[3], pad.dh)  # noqa: E731
    z = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), is_causal=not last_only, scale=1.0)
    tq = z.shape[2]
    z = z.view(n, batch, pad.h, tq, pad.dh).transpose(2, 3).reshape(n, batch * tq, pad.h * pad.dh)
    return _linear(z, P[f"{prefix}.out.weight"], P.get(f"{prefix}.out.bias"))


def _ffn(pop: TransformerPopulation, P: dict, prefix: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The feed-forward: ``(output [N, M, D], pre [N, M, F], post [N, M, F])`` (post lazily built for sparse kinds)."""
    if pop.ffn == "dense":
        pre = _linear(h, P[f"{prefix}.up.weight"], P.get(f"{prefix}.up.bias"))
        post = F.gelu(pre)
        return _linear(post, P[f"{prefix}.down.weight"], P.get(f"{prefix}.down.bias")), pre, post
    n, m, pad = pop.size, h.shape[1], pop.pad
    if pad.r:
        h = _linear(h, P[f"{prefix}.down_proj.weight"], P.get(f"{prefix}.down_proj.bias"))
    pre = _linear(h, P[f"{prefix}.encoder.weight"], P.get(f"{prefix}.encoder.bias"))
    values, slot = torch.relu(pre).view(n, m, pad.k, pad.g).max(-1)
    index = slot + (torch.arange(pad.k, device=h.device) * pad.g + torch.arange(n, device=h.device)[:, None, None] * pad.f)
    table = P[f"{prefix}.decoder.weight"].reshape(n * pad.f, pad.inner)
    out = F.embedding_bag(index.view(n * m, pad.k), table, per_sample_weights=values.view(n * m, pad.k), mode="sum")
    out = out.view(n, m, pad.inner)
    if f"{prefix}.decoder.bias" in P:
        out = out + P[f"{prefix}.decoder.bias"][:, None]
    if pad.r:
        out = _linear(out, P[f"{prefix}.up_proj.weight"], P.get(f"{prefix}.up_proj.bias"))
    return out, pre, (values, index - torch.arange(n, device=h.device)[:, None, None] * pad.f)


def forward(pop: TransformerPopulation, tokens: torch.Tensor, P: dict | None = None, points: dict | None = None) -> torch.Tensor:
    """Logits ``[N, B]`` of ``tokens [N, B, T]``; fills ``points`` with every hookpoint at the last position."""
    P = pop.params if P is None else P
    n, batch, t = tokens.shape
    pad = pop.pad
    one_hot = F.one_hot(tokens.long(), P["tok_emb.weight"].shape[1]).to(P["tok_emb.weight"].dtype)
    x = torch.bmm(one_hot.view(n, batch * t, -1), P["tok_emb.weight"]).view(n, batch, t, pad.d)
    x = (x + P["pos_emb.weight"][:, None, :t]).reshape(n, batch * t, pad.d)
    last_pos = lambda z: z.view(n, batch, -1, z.shape[-1])[:, :, -1]  # noqa: E731
    if points is not None:
        points["embed"] = last_pos(x)
    for i in range(pad.layers):
        p, last, mask = f"blocks.{i}", i == pad.layers - 1, pop.layer_masks[i]
        a = _attention(pop, P, f"{p}.attn", _layer_norm(pop, x, P[f"{p}.ln1.weight"], P.get(f"{p}.ln1.bias")), batch, last)
        if mask is not None:
            a = a * mask
        x = (last_pos(x) if last else x) + a
        f, pre, post = _ffn(pop, P, f"{p}.ffn", _layer_norm(pop, x, P[f"{p}.ln2.weight"], P.get(f"{p}.ln2.bias")))
        if mask is not None:
            f = f * mask
        x = x + f
        if points is not None:
            points[f"{p}.attn.out"] = last_pos(a)
            points[f"{p}.ffn.pre"] = last_pos(pre)
            if isinstance(post, tuple):  # the sparse code: the winners' values, zero elsewhere
                values, index = (last_pos(z) for z in post)
                post = torch.zeros_like(points[f"{p}.ffn.pre"]).scatter_(-1, index, values)
            points[f"{p}.ffn.post"] = last_pos(post)
            points[f"{p}.resid"] = last_pos(x)
    final = _layer_norm(pop, x, P["ln_f.weight"], P.get("ln_f.bias"))  # [N, B, D]: the last position only
    out = (final * P["head.weight"][:, None]).sum(-1) + P["head.bias"]
    if points is not None:
        points["head"] = out.unsqueeze(-1)
    return out


CHUNK = 128  # sequences per model per forward pass at inference: bounds the hidden activations' memory


def logits(pop: TransformerPopulation, tokens: torch.Tensor) -> torch.Tensor:
    """``tokens [N, B, T]`` -> ``[N, B]`` logits, without gradients."""
    tokens = torch.as_tensor(tokens, device=pop.device)
    with torch.no_grad():
        return torch.cat([forward(pop, tokens[:, s : s + CHUNK]) for s in range(0, tokens.shape[1], CHUNK)], dim=1)


def activations(pop: TransformerPopulation, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every hookpoint's ``[N, B, width]`` at the last position; each model's units come first, in module order."""
    tokens = torch.as_tensor(tokens, device=pop.device)
    chunks: list[dict] = []
    with torch.no_grad():
        for s in range(0, tokens.shape[1], CHUNK):
            points: dict[str, torch.Tensor] = {}
            forward(pop, tokens[:, s : s + CHUNK], points=points)
            chunks.append(points)
    out = {name: torch.cat([c[name] for c in chunks], dim=1) for name in chunks[0]}
    if pop.unit_index is not None:
        index = pop.unit_index[:, None, :].expand(-1, tokens.shape[1], -1)
        for name in out:
            if name.endswith((".ffn.pre", ".ffn.post")):
                out[name] = out[name].gather(-1, index)
    return out


def true_entries(pop: TransformerPopulation, name: str) -> torch.Tensor:
    """``[N]`` true (unpadded) entries of parameter ``name`` in each model (0 where a model lacks it)."""
    counts = []
    for a in pop.architectures:
        shapes = dict(a.parameter_shapes())
        counts.append(int(np.prod(shapes[name])) if name in shapes else 0)
    return torch.tensor(counts, dtype=torch.float32, device=pop.device)


def quantize_(pop: TransformerPopulation, scheme: str) -> None:
    """Round every matrix (``is_matrix``) per model and per tensor; biases and LayerNorm gains stay float."""
    if scheme == "none":
        return
    from zoo.subjects.quantize import quantize_weights

    for name, w in pop.params.items():
        if is_matrix(name):
            flat = w.view(pop.size, 1, -1)
            flat.copy_(quantize_weights(flat, scheme, true_entries(pop, name).clamp_min(1)[:, None, None]))

