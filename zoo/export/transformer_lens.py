"""A dense transformer record as a TransformerLens ``HookedTransformer``, so existing hooks,
caches and SAE tools run on zoo subjects unchanged.

The zoo module and TransformerLens compute the same function: pre-LayerNorm blocks
(eps 1e-5, biased variance), causal attention scaled by ``1/sqrt(d_head)``, exact (erf)
GELU, learned positions, a final LayerNorm. Only the parameter names and shapes differ, so
the conversion is a re-indexing of the same numbers, nothing is refitted:

- ``tok_emb.weight [V, d]`` -> ``embed.W_E [V, d]``; ``pos_emb.weight [T, d]`` -> ``pos_embed.W_pos [T, d]``
  (``n_ctx`` is the record's ``seq_len``);
- ``attn.qkv.weight [3d, d]`` (rows: q, k, v, each head-major) -> ``attn.W_Q/W_K/W_V [H, d, d_head]``,
  ``attn.qkv.bias [3d]`` -> ``attn.b_Q/b_K/b_V [H, d_head]``;
- ``attn.out.weight [d, d]`` (columns head-major) -> ``attn.W_O [H, d_head, d]``, ``attn.out.bias`` -> ``attn.b_O``;
- ``ffn.up`` / ``ffn.down`` (``nn.Linear``, ``[out, in]``) -> ``mlp.W_in [d, 4d]`` / ``mlp.W_out [4d, d]``;
- ``ln1``, ``ln2``, ``ln_f`` -> ``ln1``, ``ln2``, ``ln_final`` (``w``, ``b``);
- a pattern zoo's one-logit ``head [1, d]`` -> ``unembed.W_U [d, 1]``, ``b_U [1]`` (``d_vocab_out`` 1);
  a language zoo's ``lm_head [V, d]`` -> ``unembed.W_U [d, V]``, ``b_U [V]``.

A record without biases gets zero biases (TransformerLens always has them). A pattern
subject reads the last position only; the ``HookedTransformer`` computes every position,
and its ``logits[:, -1, 0]`` is the zoo logit (the earlier positions are the same
network's readout of each prefix). A language model's logits ``[batch, T, V]`` are the
zoo module's at every position. ``HOOKS`` names the TransformerLens hook that holds each
zoo hookpoint.

GroupMax feed-forwards (``sparse``, ``sparse_low_rank``) have no TransformerLens
counterpart (its MLP is dense), so they are refused in one line rather than densified:
a dense ``W_out`` product over the zeros would be a different computation to hook.

TransformerLens is an optional extra (``pip install -e ".[lens]"``): 3.x, the last series
with ``HookedTransformer`` (4.0 replaced it by ``TransformerBridge``, which wraps a
Hugging Face model: a zoo subject would first have to become one, which is not done). The
state-dict functions need only torch.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from zoo.subjects.families import family_of, require_family
from zoo.subjects.families.transformer import Architecture
from zoo.subjects.transformer_module import LN_EPS, SubjectTransformer, flatten_model

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

INSTALL = "pip install 'transformer_lens>=3.9,<4'"

HOOKS: dict[str, str] = {
    "embed": "blocks.0.hook_resid_pre",
    "blocks.{i}.attn.out": "blocks.{i}.hook_attn_out",
    "blocks.{i}.ffn.pre": "blocks.{i}.mlp.hook_pre",
    "blocks.{i}.ffn.post": "blocks.{i}.mlp.hook_post",
    "blocks.{i}.resid": "blocks.{i}.hook_resid_post",
    "head": "unembed.hook_out",
}
"""Zoo hookpoint -> the TransformerLens hook holding it (a pattern subject's hookpoint is its last position)."""


class TransformerLensError(ValueError):
    """A record TransformerLens cannot hold, or TransformerLens 3.x missing: one line."""


def hook_names(arch: Architecture) -> dict[str, str]:
    """Every zoo hookpoint of ``arch`` (the family's names) -> its TransformerLens hook name."""
    per_block = [(z, t) for z, t in HOOKS.items() if "{i}" in z]
    names = {"embed": HOOKS["embed"]}
    for i in range(arch.n_layers):
        names.update((z.format(i=i), t.format(i=i)) for z, t in per_block)
    names["head"] = HOOKS["head"]
    return names


def _dense(architecture) -> Architecture:
    arch = require_family(architecture, ("transformer",), "TransformerLens export")
    if arch.ffn != "dense":
        raise TransformerLensError(
            f"TransformerLens has no {arch.ffn} (GroupMax) feed-forward: only dense transformer records convert"
        )
    return arch


def _head(arch: Architecture) -> str:
    """The module's name of the readout: ``head`` (one logit) or ``lm_head`` (next-token logits)."""
    return "lm_head" if getattr(arch, "head", "logit") == "next_token" else "head"


def hooked_transformer_config(architecture: Architecture | dict) -> dict:
    """The ``HookedTransformerConfig`` keyword arguments of a dense transformer architecture."""
    arch = _dense(architecture)
    return {
        "n_layers": arch.n_layers,
        "d_model": arch.d_model,
        "n_heads": arch.n_heads,
        "d_head": arch.d_head,
        "d_mlp": arch.d_hidden,
        "d_vocab": arch.vocab_size,
        "d_vocab_out": arch.vocab_size if _head(arch) == "lm_head" else 1,
        "n_ctx": arch.seq_len,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "eps": LN_EPS,
        "positional_embedding_type": "standard",
        "original_architecture": "zoo-transformer",
        "init_weights": False,
        "device": "cpu",
        "dtype": torch.float32,
    }


def to_transformer_lens_state_dict(architecture: Architecture | dict, weights: np.ndarray) -> dict[str, torch.Tensor]:
    """Flat zoo weights -> a state dict with TransformerLens's parameter names and shapes."""
    arch = _dense(architecture)
    module = family_of(arch).build_module(arch, weights)
    zoo = {name: value.detach().clone() for name, value in module.state_dict().items()}
    d, h, dh = arch.d_model, arch.n_heads, arch.d_head

    def bias(name: str, width: int) -> torch.Tensor:  # a no-bias record: TransformerLens's biases are zero
        return zoo.get(name, torch.zeros(width))

    state = {"embed.W_E": zoo["tok_emb.weight"], "pos_embed.W_pos": zoo["pos_emb.weight"]}
    for i in range(arch.n_layers):
        p = f"blocks.{i}"
        qkv_bias = bias(f"{p}.attn.qkv.bias", 3 * d).chunk(3)
        for part, w, b in zip("QKV", zoo[f"{p}.attn.qkv.weight"].chunk(3), qkv_bias):
            state[f"{p}.attn.W_{part}"] = w.view(h, dh, d).transpose(1, 2).contiguous()  # [H, d, d_head]
            state[f"{p}.attn.b_{part}"] = b.reshape(h, dh)
        state[f"{p}.attn.W_O"] = zoo[f"{p}.attn.out.weight"].T.reshape(h, dh, d).contiguous()  # [H, d_head, d]
        state[f"{p}.attn.b_O"] = bias(f"{p}.attn.out.bias", d)
        state[f"{p}.mlp.W_in"] = zoo[f"{p}.ffn.up.weight"].T.contiguous()  # [d, d_mlp]
        state[f"{p}.mlp.b_in"] = bias(f"{p}.ffn.up.bias", arch.d_hidden)
        state[f"{p}.mlp.W_out"] = zoo[f"{p}.ffn.down.weight"].T.contiguous()  # [d_mlp, d]
        state[f"{p}.mlp.b_out"] = bias(f"{p}.ffn.down.bias", d)
        for ln in ("ln1", "ln2"):
            state[f"{p}.{ln}.w"], state[f"{p}.{ln}.b"] = zoo[f"{p}.{ln}.weight"], bias(f"{p}.{ln}.bias", d)
    state["ln_final.w"], state["ln_final.b"] = zoo["ln_f.weight"], bias("ln_f.bias", d)
    head = _head(arch)
    state["unembed.W_U"], state["unembed.b_U"] = zoo[f"{head}.weight"].T.contiguous(), zoo[f"{head}.bias"]  # [d, 1 | V]
    return state


def from_transformer_lens_state_dict(architecture: Architecture | dict, state: dict[str, torch.Tensor]) -> np.ndarray:
    """The inverse of ``to_transformer_lens_state_dict``: flat zoo weights (biases a no-bias record
    lacks are dropped, so they must be zero for the round trip to be the same model)."""
    arch = _dense(architecture)
    d = arch.d_model
    s = {k: v.detach().cpu().float() for k, v in state.items()}
    zoo = {"tok_emb.weight": s["embed.W_E"], "pos_emb.weight": s["pos_embed.W_pos"]}
    for i in range(arch.n_layers):
        t = f"blocks.{i}"
        zoo[f"{t}.ln1.weight"], zoo[f"{t}.ln1.bias"] = s[f"{t}.ln1.w"], s[f"{t}.ln1.b"]
        zoo[f"{t}.attn.qkv.weight"] = torch.cat([s[f"{t}.attn.W_{p}"].transpose(1, 2).reshape(d, d) for p in "QKV"])
        zoo[f"{t}.attn.qkv.bias"] = torch.cat([s[f"{t}.attn.b_{p}"].reshape(d) for p in "QKV"])
        zoo[f"{t}.attn.out.weight"] = s[f"{t}.attn.W_O"].reshape(d, d).T
        zoo[f"{t}.attn.out.bias"] = s[f"{t}.attn.b_O"]
        zoo[f"{t}.ln2.weight"], zoo[f"{t}.ln2.bias"] = s[f"{t}.ln2.w"], s[f"{t}.ln2.b"]
        zoo[f"{t}.ffn.up.weight"], zoo[f"{t}.ffn.up.bias"] = s[f"{t}.mlp.W_in"].T, s[f"{t}.mlp.b_in"]
        zoo[f"{t}.ffn.down.weight"], zoo[f"{t}.ffn.down.bias"] = s[f"{t}.mlp.W_out"].T, s[f"{t}.mlp.b_out"]
    zoo["ln_f.weight"], zoo["ln_f.bias"] = s["ln_final.w"], s["ln_final.b"]
    zoo[f"{_head(arch)}.weight"], zoo[f"{_head(arch)}.bias"] = s["unembed.W_U"].T, s["unembed.b_U"]
    return np.concatenate([zoo[e.name].reshape(-1).numpy() for e in arch.layout()]).astype(np.float32)


def to_hooked_transformer(
    source: dict | SubjectTransformer, which: Literal["clean", "degraded"] = "clean"
) -> HookedTransformer:
    """A dense transformer record (a dict with ``architecture`` and ``{which}_weights``) or a zoo
    transformer module as a ``HookedTransformer`` with the same logits: ``[batch, T]`` token ids
    -> ``[batch, T, 1]`` with the pattern logit at ``[:, -1, 0]``, or a language model's ``[batch, T, V]``."""
    if isinstance(source, SubjectTransformer):
        arch, weights = source.architecture, flatten_model(source)
    else:
        if which not in ("clean", "degraded"):
            raise TransformerLensError(f"which must be 'clean' or 'degraded', not {which!r}")
        arch, weights = source["architecture"], np.asarray(source[f"{which}_weights"], dtype=np.float32)
    config, state = hooked_transformer_config(arch), to_transformer_lens_state_dict(arch, weights)
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise TransformerLensError(f"TransformerLens 3.x (HookedTransformer) is not installed: {INSTALL}") from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig(**config))
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )  # fmt: skip
    return model.eval()
