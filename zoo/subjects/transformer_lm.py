"""Transformer populations as causal language models: next-token logits at every position.

The same blocks, padding and stacked parameters as ``transformer_population`` (a population
of ``head="next_token"`` architectures), read at every position instead of the last, with a
language-model head ``lm_head`` (d -> vocabulary) after the final LayerNorm. Sequences are
``<bos> w1 .. wm <eos> <pad>..`` (``zoo.languages``): left-aligned, so causal attention never
lets a real position see a pad, and no attention mask is needed; trailing pads are cut off
before a forward pass (``trim``), which changes nothing a real position computes.

- ``next_token_loss``: the pure masked loss, each model's mean cross-entropy over its
  non-pad targets (``NEXT_TOKEN`` is the training objective built on it);
- ``generate``: sampled continuations of BOS, each model drawing from its own seeded
  uniforms (inverse CDF), so a model's generations do not depend on its population;
- ``evaluate``: validation loss and next-token accuracy on legal continuations.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zoo.languages.grammar import BOS, EOS, PAD
from zoo.subjects.transformer_population import TransformerPopulation, _attention, _ffn, _layer_norm, _linear
from zoo.subjects.transformer_train import Objective

CHUNK = 64
"""Sequences per model per forward pass without gradients (bounds the activations' memory)."""


def trim(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens [..., T]`` cut after the last position any sequence uses (at least 2 positions kept)."""
    used = (tokens != PAD).flatten(0, -2).any(0)
    last = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return tokens[..., : max(last, 2)]


def lm_forward(pop: TransformerPopulation, tokens: torch.Tensor, P: dict | None = None, points: dict | None = None) -> torch.Tensor:
    """Logits ``[N, B, T, V]`` of ``tokens [N, B, T]`` at every position.

    ``points``, when given, receives every hookpoint as ``[N, B, T, width]`` (the sparse
    kinds' ``ffn.post`` as the dense GroupMax code, zero but for the k winners)."""
    P = pop.params if P is None else P
    n, batch, t = tokens.shape
    pad = pop.pad
    emb = P["tok_emb.weight"]
    rows = torch.arange(n, device=tokens.device)[:, None]
    x = emb[rows, tokens.reshape(n, batch * t).long()].view(n, batch, t, pad.d)
    x = (x + P["pos_emb.weight"][:, None, :t]).reshape(n, batch * t, pad.d)
    shaped = lambda z: z.view(n, batch, t, z.shape[-1])  # noqa: E731
    if points is not None:
        points["embed"] = shaped(x)
    for i in range(pad.layers):
        p, mask = f"blocks.{i}", pop.layer_masks[i]
        a = _attention(pop, P, f"{p}.attn", _layer_norm(pop, x, P[f"{p}.ln1.weight"], P.get(f"{p}.ln1.bias")), batch, False)
        if mask is not None:
            a = a * mask
        x = x + a
        f, pre, post = _ffn(pop, P, f"{p}.ffn", _layer_norm(pop, x, P[f"{p}.ln2.weight"], P.get(f"{p}.ln2.bias")))
        if mask is not None:
            f = f * mask
        x = x + f
        if points is not None:
            if isinstance(post, tuple):
                values, index = post
                post = torch.zeros_like(pre).scatter_(-1, index, values)
            points[f"{p}.attn.out"], points[f"{p}.ffn.pre"] = shaped(a), shaped(pre)
            points[f"{p}.ffn.post"], points[f"{p}.resid"] = shaped(post), shaped(x)
    final = _layer_norm(pop, x, P["ln_f.weight"], P.get("ln_f.bias"))
    logits = shaped(_linear(final, P["lm_head.weight"], P.get("lm_head.bias")))
    if points is not None:
        points["head"] = logits
    return logits


def next_token_terms(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(summed cross-entropy [N], target count [N])`` of ``logits [N, B, T-1, V]`` read from
    ``tokens [N, B, T]``: position ``t`` predicts ``tokens[..., t + 1]``; PAD targets count for nothing."""
    targets = tokens[..., 1:].long()
    mask = (targets != PAD).to(logits.dtype)
    ce = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none").view(targets.shape)
    return (ce * mask).flatten(1).sum(1), mask.flatten(1).sum(1)


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Each model's mean cross-entropy over its non-pad targets: ``[N]`` (see ``next_token_terms``)."""
    total, count = next_token_terms(logits, tokens)
    return total / count.clamp_min(1.0)


def _train_loss(pop: TransformerPopulation, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = trim(x)
    return next_token_loss(lm_forward(pop, x[..., :-1]), x)


def _val_loss(pop: TransformerPopulation, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(pop.size, device=x.device)
    count = torch.zeros(pop.size, device=x.device)
    for s in range(0, x.shape[1], CHUNK):
        chunk = trim(x[:, s : s + CHUNK])
        a, b = next_token_terms(lm_forward(pop, chunk[..., :-1]), chunk)
        total, count = total + a, count + b
    return total / count.clamp_min(1.0)


NEXT_TOKEN = Objective(train_loss=_train_loss, val_loss=_val_loss)
"""Language modelling: padding-masked next-token cross-entropy, a mean over each model's targets.
Labels are not read (the tokens are their own targets)."""


def evaluate(pop: TransformerPopulation, tokens: torch.Tensor, legal: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(loss [N], legal accuracy [N])`` on ``tokens [N, S, T]``.

    ``legal [N, S, T, V]`` (``Language.legal_next``) says which tokens may follow each prefix;
    legal accuracy is the share of real targets (non-pad) where the model's most likely next
    token is a legal one."""
    total = torch.zeros(pop.size, dtype=torch.float64)
    count = torch.zeros(pop.size, dtype=torch.float64)
    hits = torch.zeros(pop.size, dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, tokens.shape[1], CHUNK):
            chunk = trim(tokens[:, s : s + CHUNK])
            logits = lm_forward(pop, chunk[..., :-1])
            a, b = next_token_terms(logits, chunk)
            t = chunk.shape[-1] - 1
            ok = legal[:, s : s + CHUNK, :t].gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
            real = chunk[..., 1:] != PAD
            total, count = total + a.double().cpu(), count + b.double().cpu()
            hits += (ok & real).flatten(1).sum(1).double().cpu()
    return (total / count.clamp_min(1)).numpy(), (hits / count.clamp_min(1)).numpy()


def generation_uniforms(seeds: list[int], n: int, max_len: int) -> np.ndarray:
    """``[N, n, max_len - 1]`` uniforms in [0, 1): model ``i``'s draws come from ``seeds[i]`` alone."""
    return np.stack([np.random.default_rng([int(s), 0x67656E]).random((n, max_len - 1)) for s in seeds]).astype(np.float32)


def generate(pop: TransformerPopulation, n: int, seeds: list[int], max_len: int) -> np.ndarray:
    """``[N, n, max_len]`` int64: ``n`` samples of each model from BOS at temperature 1.

    A sample ends at its first EOS (PAD after it); one that reaches ``max_len`` without EOS
    stops there (the validator rejects it). Sampling is by inverse CDF on the model's own
    uniforms (``generation_uniforms``), so it is a pure function of the weights and the seed.
    Columns in which every model has ended are dropped from the next steps' forward passes."""
    device = pop.device
    u = torch.from_numpy(generation_uniforms(seeds, n, max_len)).to(device)
    out = torch.full((pop.size, n, max_len), PAD, dtype=torch.long, device=device)
    out[..., 0] = BOS
    done = torch.zeros((pop.size, n), dtype=torch.bool, device=device)
    with torch.no_grad():
        for t in range(1, max_len):
            live = (~done).any(0).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            for s in range(0, live.numel(), CHUNK):
                cols = live[s : s + CHUNK]
                logits = lm_forward(pop, out[:, cols, :t])[:, :, -1]
                cdf = torch.softmax(logits.float(), -1).cumsum(-1)
                nxt = (cdf < u[:, cols, t - 1, None]).sum(-1).clamp(max=logits.shape[-1] - 1)
                nxt = torch.where(done[:, cols], PAD, nxt)
                out[:, cols, t] = nxt
                done[:, cols] |= nxt == EOS
    return out.cpu().numpy()


def lengths_of(tokens: np.ndarray) -> np.ndarray:
    """Tokens up to and including the first EOS (BOS counted); ``T + 1`` where there is none."""
    is_eos = tokens == EOS
    return np.where(is_eos.any(-1), is_eos.argmax(-1) + 1, tokens.shape[-1] + 1)
