"""Spliced evaluation: the subject's loss when a coder's reconstruction replaces a hookpoint's activation.

The subject runs as its ``nn.Module`` (``Family.build_module``) with one forward hook
that rewrites the hookpoint's value: ``hook_site`` says which submodule's output (or
input) carries it. A hookpoint is read where the readout reads (the last position), so
for a ``[batch, positions, width]`` tensor only the last position is replaced; a
``[batch, width]`` tensor is replaced whole. Four runs on the same rows:

- **clean**: no hook;
- **zero**: the activation set to 0 (zero-ablation);
- **mean**: set to its mean over the SAE's training rows (mean-ablation);
- **spliced**: set to the coder's reconstruction of it.

For pattern classifiers the loss is the classification loss (binary cross-entropy of the
logit against the subject's task targets; without targets, against the clean model's own
probabilities), and

    CE recovered = (L_ablated - L_spliced) / (L_ablated - L_clean)

for zero- and mean-ablation (None when ablation changes the loss by less than ``1e-6``:
the hookpoint does not matter to the subject and the ratio means nothing), and the KL of the
spliced output distribution from the clean one (per row, mean). Language models' splicing
(next-token loss, validity of generations) waits for language zoos: ``spliced_validity``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from zoo.readers.sae.spec import SAEError

Replace = Callable[[torch.Tensor], torch.Tensor]
MIN_GAP = 1e-6


def hook_site(architecture, hookpoint: str) -> tuple[str, str] | None:
    """``(submodule path, "output" | "input")`` whose value is ``hookpoint``; None where no module carries it."""
    family, parts = architecture.family, hookpoint.split(".")
    if family == "mlp":
        if hookpoint == "head":
            return "head", "output"
        i = int(parts[1])
        if parts[2] == "pre":
            return f"layers.{i}", "output"
        return (f"layers.{i + 1}" if i + 1 < architecture.n_layers else "head"), "input"
    if family == "transformer":
        if hookpoint == "head":
            return "head", "output"
        if hookpoint == "embed":
            return "blocks.0", "input"
        block, rest = f"blocks.{parts[1]}", ".".join(parts[2:])
        dense = architecture.ffn == "dense"
        sites = {"attn.out": (f"{block}.attn", "output"), "resid": (block, "output"),
                 "ffn.pre": (f"{block}.ffn.{'up' if dense else 'encoder'}", "output")}  # fmt: skip
        if dense:
            sites["ffn.post"] = (f"{block}.ffn.down", "input")
        return sites.get(rest)
    return None


def _rewrite(value: torch.Tensor, replace: Replace) -> torch.Tensor:
    if value.dim() == 3:
        out = value.clone()
        out[:, -1] = replace(value[:, -1])
        return out
    return replace(value)


def run_with(module, architecture, hookpoint: str, tokens: torch.Tensor, replace: Replace | None) -> torch.Tensor:
    """``module(tokens)`` with ``hookpoint``'s value rewritten by ``replace`` (None: the clean run)."""
    if replace is None:
        return module(tokens)
    site = hook_site(architecture, hookpoint)
    if site is None:
        raise SAEError(f"hookpoint {hookpoint!r} of {architecture.describe()} cannot be spliced (no module carries it)")
    path, where = site
    target = module.get_submodule(path)
    if where == "output":
        handle = target.register_forward_hook(lambda _m, _args, out: _rewrite(out, replace))
    else:
        handle = target.register_forward_pre_hook(lambda _m, args: (_rewrite(args[0], replace), *args[1:]))
    try:
        return module(tokens)
    finally:
        handle.remove()


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(F.binary_cross_entropy_with_logits(logits.double(), targets.double()))


def _kl(clean: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over rows of KL(Bernoulli(sigmoid clean) || Bernoulli(sigmoid other))."""
    p, lp, lq = torch.sigmoid(clean.double()), F.logsigmoid(clean.double()), F.logsigmoid(other.double())
    lp1, lq1 = F.logsigmoid(-clean.double()), F.logsigmoid(-other.double())
    return float((p * (lp - lq) + (1 - p) * (lp1 - lq1)).mean())


def _recovered(ablated: float, spliced: float, clean: float) -> float | None:
    gap = ablated - clean
    return None if abs(gap) < MIN_GAP else (ablated - spliced) / gap


@torch.no_grad()
def spliced_metrics(
    subject, hookpoint: str, coder, tokens: np.ndarray, train_mean: np.ndarray, targets: np.ndarray | None = None
) -> dict:
    """Loss clean / zero / mean / spliced, CE recovered (zero, mean), KL and accuracies on ``tokens [n, L]``."""
    module = subject.module().eval()
    arch = subject.architecture
    x = torch.as_tensor(tokens, dtype=torch.long)
    mean = torch.as_tensor(train_mean, dtype=torch.float32)
    clean = run_with(module, arch, hookpoint, x, None)
    y = torch.sigmoid(clean) if targets is None else torch.as_tensor(targets, dtype=torch.float64)
    runs = {
        "zero": run_with(module, arch, hookpoint, x, torch.zeros_like),
        "mean": run_with(module, arch, hookpoint, x, lambda v: mean.expand_as(v).to(v.dtype)),
        "spliced": run_with(module, arch, hookpoint, x, lambda v: coder(v).to(v.dtype)),
    }
    loss = {"clean": _loss(clean, y), **{name: _loss(out, y) for name, out in runs.items()}}
    accuracy = lambda out: float(((out > 0).double() == (y > 0.5).double()).double().mean())
    return {
        **{f"loss_{name}": value for name, value in loss.items()},
        "ce_recovered_zero": _recovered(loss["zero"], loss["spliced"], loss["clean"]),
        "ce_recovered_mean": _recovered(loss["mean"], loss["spliced"], loss["clean"]),
        "kl_spliced": _kl(clean, runs["spliced"]),
        "accuracy_clean": accuracy(clean),
        "accuracy_spliced": accuracy(runs["spliced"]),
        "eval_rows": len(x),
    }


def spliced_validity(subject, hookpoint: str, coder, language) -> float:
    """Share of a language model's generations that stay valid with the reconstruction spliced in.

    Waits for language zoos (a language-model head and a validator from ``zoo.languages``).
    """
    raise SAEError("spliced validity reads language zoos, which zoo cannot make yet (issue 28)")
