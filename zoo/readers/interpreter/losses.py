"""The interpreter's training losses: pattern heads, accuracy, repair (weights and function) and edits.

The repair terms read and write token-space weights, so they count only subjects whose family
has a token space (``neurons.TOKEN_SPACE``): a transformer's rows weigh nothing in them, and
the heads' terms count every subject.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from zoo.readers.interpreter.config import InterpreterConfig
from zoo.readers.interpreter.data import Batch, Weights, ZooSource, one_hot, repair_inputs
from zoo.readers.interpreter.directions import LatentMeans, edited_sets, sample_edits
from zoo.readers.interpreter.model import Interpreter, Output, subject_logits


@dataclass
class RepairInputs:
    """Inputs of the functional repair loss: one-hot ``x [R, D]``, membership and nearness ``[R, V]``
    (``data.repair_inputs``)."""

    x: torch.Tensor
    member: torch.Tensor
    near: torch.Tensor

    @classmethod
    def build(
        cls, source: ZooSource, config: InterpreterConfig, device: torch.device, step: int | None = None
    ) -> RepairInputs:
        """The fixed set (``step`` None), or training step ``step``'s own draw."""
        data = config.data
        seed = config.seed if step is None else (config.seed, step)
        tokens, member, near = repair_inputs(
            source.config, data.repair_per_pattern, data.repair_random, seed, data.repair_near_misses
        )
        x = one_hot(tokens, source.config.patterns.vocab_size)
        return cls(x.to(device), torch.from_numpy(member).to(device), torch.from_numpy(near).to(device))


def weight_loss(batch: Batch, delta: Weights) -> torch.Tensor:
    """MSE between the decoded and the true change (clean - degraded), in init-scale units."""
    scale = batch.fan_in.sqrt()
    first = batch.first[..., None].to(scale.dtype)
    edges = batch.edges.to(scale.dtype)
    err_in = ((delta.w_in - (batch.clean.w_in - batch.degraded.w_in)) * scale[..., None]).square() * first
    err_adj = ((delta.adj - (batch.clean.adj - batch.degraded.adj)) * scale[..., None]).square() * edges
    err_b = ((delta.bias - (batch.clean.bias - batch.degraded.bias)) * scale).square() * batch.weight_mask
    return (err_in.sum() + err_adj.sum() + err_b.sum()) / batch.n_weights.sum().clamp_min(1)


def function_loss(
    batch: Batch, repaired: Weights, inputs: RepairInputs, emphasis: float, near_emphasis: float = 0.0
) -> torch.Tensor:
    """Soft BCE of the repaired model's outputs against the clean model's, less the clean entropy (0 at a perfect
    repair); the corrupted pattern's sequences weigh ``1 + emphasis``, its near misses ``1 + near_emphasis``."""
    with torch.no_grad():
        target_logits = subject_logits(batch, batch.clean, inputs.x)
        target = torch.sigmoid(target_logits)
        floor = F.binary_cross_entropy_with_logits(target_logits, target, reduction="none")
        weight = 1.0 + emphasis * inputs.member[:, batch.corrupted].T + near_emphasis * inputs.near[:, batch.corrupted].T
        if batch.token_space is not None and not bool(batch.token_space.all()):  # the decoder writes no other family
            weight = weight * batch.token_space.to(weight.dtype)[:, None]
    pred = subject_logits(batch, repaired, inputs.x)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") - floor
    return (loss * weight).sum() / weight.sum().clamp_min(1e-12)


@dataclass
class Edits:
    """What the edit term draws on: the latent means its directions come from, and the generator of its edits."""

    means: LatentMeans
    generator: torch.Generator


def edit_loss(model: Interpreter, batch: Batch, out: Output, inputs: RepairInputs, edits: Edits, emphasis: float) -> torch.Tensor | None:
    """BCE of the model decoded from a latent moved along one pattern's direction, against the moved set's labels.

    Each model adds a pattern it lacks or removes one it has (``sample_edits``); the labels on the
    repair inputs are those of the edited set (a sequence is positive when it matches one of its
    patterns), the edited pattern's sequences weigh ``1 + emphasis``. Token states and the latent
    enter detached: edits teach the decoder to follow the directions, not the encoder to make them
    (the latent's normalization, shared with the heads, does learn from them). None while no
    pattern has been seen both with and without.
    """
    directions, known = edits.means.directions()
    if not bool(known.any()):
        return None
    pattern, sign = sample_edits(batch.targets, known & ~model.undrawn, edits.generator)
    pattern, sign = pattern.to(out.latent.device), sign.to(out.latent.device)
    moved = out.latent.detach() + sign[:, None] * directions[pattern]
    frozen = replace(out, latent=out.latent.detach(), tokens=out.tokens.detach(), corrupted=out.corrupted.detach())
    asked = edited_sets(batch.targets, pattern, sign).to(moved.dtype)
    edited = batch.degraded + model.decode(batch, frozen, moved, asked)
    labels = (asked @ inputs.member.T > 0).to(moved.dtype)
    weight = 1.0 + emphasis * inputs.member[:, pattern].T * (sign != 0).to(moved.dtype)[:, None]
    loss = F.binary_cross_entropy_with_logits(subject_logits(batch, edited, inputs.x), labels, reduction="none")
    return (loss * weight).sum() / weight.sum()


def losses(
    model: Interpreter,
    batch: Batch,
    config: InterpreterConfig,
    inputs: RepairInputs,
    *,
    every_term: bool = False,
    edits: Edits | None = None,
) -> tuple[torch.Tensor, dict[str, float], Output]:
    """Total loss, its terms and the heads' outputs.

    Terms with weight 0 are skipped unless ``every_term`` (evaluation reports them all); the
    edit term needs ``edits``.
    """
    w = config.loss
    out = model(batch)
    terms: dict[str, torch.Tensor] = {}
    if w.patterns or every_term:
        terms["patterns"] = F.binary_cross_entropy_with_logits(out.patterns, batch.targets)
    if w.corrupted or every_term:
        terms["corrupted"] = F.cross_entropy(out.corrupted, batch.corrupted)
    if w.accuracy or every_term:
        terms["accuracy"] = 10.0 * F.mse_loss(out.accuracy, batch.accuracy)
    if w.repair_weights or w.repair_function or every_term:
        repaired = model.repair(batch, out)
        if w.repair_weights or every_term:
            terms["repair_weights"] = weight_loss(batch, repaired - batch.degraded)
        if w.repair_function or every_term:
            terms["repair_function"] = function_loss(batch, repaired, inputs, w.corrupted_emphasis, w.near_miss_emphasis)
    if edits is not None and (w.edit or every_term):
        term = edit_loss(model, batch, out, inputs, edits, w.corrupted_emphasis)
        if term is not None:
            terms["edit"] = term
    weights = {
        "patterns": w.patterns,
        "corrupted": w.corrupted,
        "accuracy": w.accuracy,
        "repair_weights": w.repair_weights,
        "repair_function": w.repair_function,
        "edit": w.edit,
    }
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}, out
