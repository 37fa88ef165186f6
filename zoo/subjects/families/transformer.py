"""The transformer family: a tiny pre-LayerNorm decoder over the letter sequence -> one logit.

Token and learned position embeddings, ``n_layers`` blocks of causal multi-head attention
and a feed-forward (``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``), a final LayerNorm and
a linear head. Feed-forward kinds:

- ``dense``: Linear(d, 4d) -> GELU -> Linear(4d, d);
- ``sparse`` (GroupMax): Linear(d, m*d) -> ReLU -> the hidden units split into ``k``
  contiguous groups and only each group's maximum kept, so exactly ``k`` units are active
  per token; the decoder reads only those ``k`` rows of its ``[m*d, d]`` table
  (``F.embedding_bag`` with the winners' values as weights), never a dense product over zeros;
- ``sparse_low_rank``: the same around a rank ``d/8`` bottleneck: d -> d/8 -> m*d ->
  GroupMax -> d/8 -> d.

**Readout: one logit from the last position.** Attention is causal, so the last position is
the only one that has seen the whole sequence: it is a summary token that costs no extra
position, and it keeps the network an ordinary causal decoder (the formal-language issue
trains the same blocks as a language model). A learned summary token would add a position
and a parameter for nothing the last position cannot do. Since only the last position is
read, the last block computes its queries, attention output and feed-forward there only
(keys and values at every position): exactly the full computation's readout, at a fraction
of the last block's cost. The module and the population do the same. Tied embeddings have
nothing to tie to here: a one-logit head has no unembedding.

**Language models** (``Architecture.head = "next_token"``, language zoos): the same blocks read
at every position, with ``lm_head`` (d -> vocabulary, untied, with a bias) after ``ln_f`` in
place of ``head``; the populations are in ``zoo.subjects.transformer_lm``, the module in
``zoo.subjects.transformer_lm_module``. Their hookpoints are the same names, each
``[batch, T, width]`` at every position, ``head`` being the vocabulary logits; their
signature's output rows are one per vocabulary token.

**Hookpoints** (each read at the last position, the one the readout reads, so every
hookpoint is a ``[batch, width]`` vector per sequence): ``embed`` (d: token plus position
embedding), then per block ``blocks.{i}.attn.out`` (d: what attention adds to the residual
stream), ``blocks.{i}.ffn.pre`` and ``blocks.{i}.ffn.post`` (hidden width: the feed-forward's
pre-activation and its activation; for the sparse kinds the post value is the GroupMax code,
zero but for the k winners), ``blocks.{i}.resid`` (d: the residual stream after the block),
and ``head`` (the logit).

**Signature sites**: per block the feed-forward hidden units (kind ``ffn``: an elementwise
nonlinearity gives them a privileged basis, so a unit means the same across models) and
the residual stream after the block (kind ``resid``: what every later layer, the head and
the coming sparse autoencoders read), then the head (kind ``output``). Attention outputs
are hookpoints but not signature rows: within a head they can be rotated by ``W_V``/``W_O``
without changing the model, so their dimensions carry no meaning of their own, and their
contribution is already in the residual rows.

**Training** (``zoo.subjects.transformer_population``): AdamW with decoupled weight decay
(``training.weight_decay``, on matrices only: embeddings, projections, decoder tables, head;
not on biases or LayerNorm gains), gradients clipped to norm ``GRAD_CLIP`` by each model's
own norm, per-model learning rate (``training.lr``) and data order, early stopping on each
model's validation loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from zoo.config_types import IntRange, Strict
from zoo.subjects.families.base import Family, LayoutEntry, SignatureSite, SubjectArchitecture

if TYPE_CHECKING:
    import torch

FFNKind = Literal["dense", "sparse", "sparse_low_rank"]
HEADS: tuple[str, ...] = ("logit", "next_token")
"""``logit``: one logit from the last position (pattern zoos); ``next_token``: a causal language-model head
``lm_head`` (d -> vocabulary) at every position (language zoos, ``zoo.subjects.transformer_lm``)."""
FFN_KINDS: tuple[str, ...] = ("dense", "sparse", "sparse_low_rank")
DENSE_EXPANSION = 4
LOW_RANK_DIVISOR = 8
GRAD_CLIP = 1.0
"""Each model's gradient is scaled to at most this global norm per step (as ``clip_grad_norm_``)."""


class TransformerSpace(Strict):
    """Ranges a tiny decoder transformer's architecture is drawn from."""

    family: Literal["transformer"] = Field(
        "transformer", description="subject family: a pre-LayerNorm causal decoder transformer over the tokens"
    )
    layers: IntRange = Field(IntRange(min=2, max=2), description="number of transformer blocks (1-4), drawn uniformly")
    d_model: list[int] = Field(
        [32], description="model widths a model draws one of, uniformly (8-256; 32-128 is the intended range)"
    )
    heads: list[int] = Field(
        [4], description="attention head counts a model draws one of, uniformly (1-4; each must divide every d_model)"
    )
    ffn: list[FFNKind] = Field(
        ["dense"],
        description="feed-forward kinds a model draws one of, uniformly: dense (d -> 4d GELU -> d), sparse "
        "(GroupMax: d -> m*d ReLU, the max of each of k groups kept), sparse_low_rank (d -> d/8 -> m*d GroupMax -> d/8 -> d)",
    )
    expansion: int = Field(32, ge=1, le=64, description="sparse kinds: hidden units per model dimension, m (hidden width m*d_model)")
    k: int | None = Field(
        None,
        ge=1,
        description="sparse kinds: active hidden units per token (GroupMax groups); None: d_model/4 (32 at d_model 128)",
    )
    bias: bool = Field(True, description="biases in the projections and LayerNorms (the head always has one)")

    @model_validator(mode="after")
    def _sane(self) -> TransformerSpace:
        if not 1 <= self.layers.min <= self.layers.max <= 4:
            raise ValueError("layers: must lie in 1..4")
        if not self.d_model or any(not 8 <= d <= 256 for d in self.d_model):
            raise ValueError("d_model: each must lie in 8..256")
        if not self.heads or any(not 1 <= h <= 4 for h in self.heads):
            raise ValueError("heads: each must lie in 1..4")
        if not self.ffn:
            raise ValueError("ffn: at least one kind is needed")
        for d in self.d_model:
            for h in self.heads:
                if d % h:
                    raise ValueError(f"heads: d_model {d} is not divisible by {h} heads")
            if "sparse_low_rank" in self.ffn and d % LOW_RANK_DIVISOR:
                raise ValueError(f"d_model: {d} is not divisible by {LOW_RANK_DIVISOR} (sparse_low_rank's rank is d_model/8)")
            if any(kind != "dense" for kind in self.ffn):
                hidden, k = self.expansion * d, group_count(self.k, d)
                if k > hidden:
                    raise ValueError(f"k: {k} is larger than the hidden width {hidden} (expansion {self.expansion} x d_model {d})")
                if hidden % k:
                    raise ValueError(f"k: {k} does not divide the hidden width {hidden} into equal groups (d_model {d})")
        return self


def group_count(k: int | None, d_model: int) -> int:
    """GroupMax's active units per token: ``k``, or ``d_model / 4`` when unset."""
    return int(k) if k is not None else max(1, d_model // 4)


@dataclass(frozen=True)
class Architecture(SubjectArchitecture):
    """A decoder transformer over ``seq_len`` tokens of ``vocab_size`` with one logit."""

    n_layers: int
    d_model: int
    n_heads: int
    ffn: str
    expansion: int  # hidden units per model dimension (4 for dense)
    k: int  # GroupMax groups (active units per token); 0 for dense
    bias: bool
    vocab_size: int
    seq_len: int
    family: str = "transformer"
    head: str = "logit"  # see HEADS; left out of ``to_dict`` when "logit", so pattern records read as before

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known: {', '.join(HEADS)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by {self.n_heads} heads")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"unknown feed-forward kind {self.ffn!r}")
        if self.sparse and (self.k < 1 or self.d_hidden % self.k):
            raise ValueError(f"k {self.k} does not split the hidden width {self.d_hidden} into equal groups")

    @property
    def sparse(self) -> bool:
        return self.ffn != "dense"

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_hidden(self) -> int:
        return self.expansion * self.d_model

    @property
    def group_size(self) -> int:
        return self.d_hidden // self.k if self.sparse else 0

    @property
    def rank(self) -> int:
        """The low-rank bottleneck of ``sparse_low_rank`` (0 otherwise)."""
        return self.d_model // LOW_RANK_DIVISOR if self.ffn == "sparse_low_rank" else 0

    def parameter_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every parameter's name and shape, in ``nn.Module`` state-dict order."""
        d, v, b = self.d_model, self.vocab_size, self.bias
        out: list[tuple[str, tuple[int, ...]]] = [("tok_emb.weight", (v, d)), ("pos_emb.weight", (self.seq_len, d))]

        def linear(name: str, fan_in: int, fan_out: int, bias: bool = b) -> None:
            out.append((f"{name}.weight", (fan_out, fan_in)))
            if bias:
                out.append((f"{name}.bias", (fan_out,)))

        def norm(name: str) -> None:
            out.append((f"{name}.weight", (d,)))
            if b:
                out.append((f"{name}.bias", (d,)))

        for i in range(self.n_layers):
            p = f"blocks.{i}"
            norm(f"{p}.ln1")
            linear(f"{p}.attn.qkv", d, 3 * d)
            linear(f"{p}.attn.out", d, d)
            norm(f"{p}.ln2")
            if self.ffn == "dense":
                linear(f"{p}.ffn.up", d, self.d_hidden)
                linear(f"{p}.ffn.down", self.d_hidden, d)
            else:
                inner = self.rank or d
                if self.rank:
                    linear(f"{p}.ffn.down_proj", d, inner)
                linear(f"{p}.ffn.encoder", inner, self.d_hidden)
                out.append((f"{p}.ffn.decoder.weight", (self.d_hidden, inner)))  # a row per hidden unit
                if b:
                    out.append((f"{p}.ffn.decoder.bias", (inner,)))
                if self.rank:
                    linear(f"{p}.ffn.up_proj", inner, d)
        norm("ln_f")
        if self.head == "next_token":
            linear("lm_head", d, v, bias=True)
        else:
            linear("head", d, 1, bias=True)
        return out

    def layout(self) -> list[LayoutEntry]:
        entries, offset = [], 0
        for name, shape in self.parameter_shapes():
            entries.append(LayoutEntry(name, shape, offset))
            offset += int(np.prod(shape))
        return entries

    @property
    def n_outputs(self) -> int:
        """Width of the head: 1 logit, or one logit per vocabulary token."""
        return self.vocab_size if self.head == "next_token" else 1

    @property
    def n_neurons(self) -> int:
        return self.n_layers * (self.d_hidden + self.d_model) + self.n_outputs

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.head == "logit":
            del data["head"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(
            n_layers=int(data["n_layers"]),
            d_model=int(data["d_model"]),
            n_heads=int(data["n_heads"]),
            ffn=str(data["ffn"]),
            expansion=int(data["expansion"]),
            k=int(data["k"]),
            bias=bool(data["bias"]),
            vocab_size=int(data["vocab_size"]),
            seq_len=int(data["seq_len"]),
            family=str(data.get("family", "transformer")),
            head=str(data.get("head", "logit")),
        )

    def describe(self) -> str:
        ffn = self.ffn if not self.sparse else f"{self.ffn} m{self.expansion} k{self.k}"
        lm = " lm" if self.head == "next_token" else ""
        return f"{self.family}{lm} {self.n_layers}L d{self.d_model} h{self.n_heads} {ffn}"


def sample_architecture(space: TransformerSpace, vocab_size: int, seq_len: int, rng: np.random.Generator) -> Architecture:
    """Draw depth, width, heads and feed-forward kind uniformly from the space."""
    n_layers = int(rng.integers(space.layers.min, space.layers.max + 1))
    d_model = int(space.d_model[int(rng.integers(len(space.d_model)))])
    n_heads = int(space.heads[int(rng.integers(len(space.heads)))])
    ffn = str(space.ffn[int(rng.integers(len(space.ffn)))])
    dense = ffn == "dense"
    return Architecture(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        ffn=ffn,
        expansion=DENSE_EXPANSION if dense else space.expansion,
        k=0 if dense else group_count(space.k, d_model),
        bias=space.bias,
        vocab_size=vocab_size,
        seq_len=seq_len,
    )


class TransformerFamily(Family):
    name = "transformer"
    space = TransformerSpace
    architecture = Architecture

    def sample(self, space: TransformerSpace, vocab_size: int, seq_len: int, rng: np.random.Generator) -> Architecture:
        return sample_architecture(space, vocab_size, seq_len, rng)

    def init_weights(self, architecture: Architecture, seed: int) -> np.ndarray:
        from zoo.subjects.transformer_module import init_weights

        return init_weights(architecture, seed)

    def build_module(self, architecture: Architecture, weights: np.ndarray):
        if architecture.head == "next_token":
            from zoo.subjects.transformer_lm_module import build_lm

            return build_lm(architecture, weights)
        from zoo.subjects.transformer_module import build_model

        return build_model(architecture, weights)

    def hookpoints(self, architecture: Architecture) -> dict[str, int]:
        d = architecture.d_model
        points = {"embed": d}
        for i in range(architecture.n_layers):
            points[f"blocks.{i}.attn.out"] = d
            points[f"blocks.{i}.ffn.pre"] = architecture.d_hidden
            points[f"blocks.{i}.ffn.post"] = architecture.d_hidden
            points[f"blocks.{i}.resid"] = d
        points["head"] = architecture.n_outputs
        return points

    def signature_sites(self, architecture: Architecture) -> list[SignatureSite]:
        sites = []
        for i in range(architecture.n_layers):
            p = f"blocks.{i}"
            sites.append(SignatureSite(f"{p}.ffn", f"{p}.ffn.pre", f"{p}.ffn.post", architecture.d_hidden, i, "ffn"))
            sites.append(SignatureSite(f"{p}.resid", f"{p}.resid", f"{p}.resid", architecture.d_model, i, "resid"))
        width = architecture.n_outputs
        return [*sites, SignatureSite("head", "head", "head", width, architecture.n_layers, "output")]

    def train(self, jobs: list, config, device: torch.device, epochs: int | None = None) -> list:
        from zoo.subjects.transformer_train import train_subjects

        return train_subjects(jobs, config, device, epochs=epochs)

    def population(self, architectures: list, weights: list[np.ndarray], device: torch.device | str = "cpu"):
        from zoo.subjects.transformer_population import from_weights

        return from_weights(list(architectures), [np.asarray(w, dtype=np.float32) for w in weights], device)

    def population_key(self, architecture: Architecture) -> tuple:
        return (architecture.ffn, architecture.bias, architecture.vocab_size, architecture.seq_len, architecture.head)

    def logits(self, population, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, B]``; a language-model population (``head="next_token"``): ``[N, B, T, vocab]``."""
        if population.architectures[0].head == "next_token":
            return _lm_call(population, tokens, None)
        from zoo.subjects.transformer_population import logits

        return logits(population, tokens)

    def activations(self, population, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[N, B, width]`` at the last position; a language-model population: ``[N, B, T, width]``
        at every position (each model's hidden units in padded order: read true widths only)."""
        if population.architectures[0].head == "next_token":
            points: dict = {}
            _lm_call(population, tokens, points)
            return points
        from zoo.subjects.transformer_population import activations

        return activations(population, tokens)

    def quantize_(self, population, scheme: str) -> None:
        from zoo.subjects.transformer_population import quantize_

        quantize_(population, scheme)

    def weights(self, population) -> list[np.ndarray]:
        from zoo.subjects.transformer_population import to_weights

        return to_weights(population)


def _lm_call(population, tokens, points: dict | None):
    import torch

    from zoo.subjects.transformer_lm import lm_forward

    with torch.no_grad():
        return lm_forward(population, torch.as_tensor(tokens, device=population.device), points=points)


FAMILY = TransformerFamily()
