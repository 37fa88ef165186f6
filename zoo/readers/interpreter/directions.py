"""Pattern directions in the interpreter's latent, and the edits the decoder learns to follow.

A pattern's direction is the mean latent of models trained on it minus the mean latent
of models that were not. ``zoo interpret edit`` moves a model's latent along one and
decodes; for that to change what the decoded model computes, the decoder is trained on
such moves (``loss.edit``): each training model's latent is moved to add a pattern it
lacks or remove one it has, and the decoded model is asked to answer the moved set on
the repair inputs. Training reads directions from ``LatentMeans`` (decayed means over
recent training models, since the encoder moves while it learns); ``edit`` recomputes
them over the whole training split with ``mean_difference``.
"""

from __future__ import annotations

import torch


def mean_difference(latent: torch.Tensor, has: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[V, L]`` mean latent with each pattern minus without it (0 where a side is empty), and ``[V, 2]`` counts."""
    with_sum, without_sum, counts = _sums(latent, has)
    return _difference(with_sum, without_sum, counts), counts


def _sums(latent: torch.Tensor, has: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed latents ``[V, L]`` with and without each pattern, and ``[V, 2]`` counts."""
    has = has.to(latent.dtype)
    return has.T @ latent, (1 - has).T @ latent, torch.stack([has.sum(0), (1 - has).sum(0)], dim=1)


def _difference(with_sum: torch.Tensor, without_sum: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    known = (counts > 0).all(1, keepdim=True)
    means = with_sum / counts[:, :1].clamp_min(1e-9) - without_sum / counts[:, 1:].clamp_min(1e-9)
    return torch.where(known, means, 0.0)


class LatentMeans:
    """Decayed sums of training latents with and without each pattern: the directions edits train on.

    ``decay`` per step: at 0.99 the means weigh about the last 100 steps' models.
    """

    def __init__(self, n_patterns: int, latent: int, decay: float = 0.99, device: torch.device | str = "cpu"):
        self.decay = decay
        self.with_sum = torch.zeros(n_patterns, latent, device=device)
        self.without_sum = torch.zeros(n_patterns, latent, device=device)
        self.counts = torch.zeros(n_patterns, 2, device=device)

    @torch.no_grad()
    def update(self, latent: torch.Tensor, has: torch.Tensor) -> None:
        for tensor, step in zip((self.with_sum, self.without_sum, self.counts), _sums(latent, has)):
            tensor.mul_(self.decay).add_(step)

    def directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[V, L]`` directions and ``[V]`` whether both sides of a pattern have been seen."""
        return _difference(self.with_sum, self.without_sum, self.counts), (self.counts > 0).all(1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"edit.with_sum": self.with_sum, "edit.without_sum": self.without_sum, "edit.counts": self.counts}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from a checkpoint; one written without edit training leaves the means empty."""
        for name, tensor in self.state_tensors().items():
            if name in tensors:
                tensor.copy_(tensors[name])


def sample_edits(has: torch.Tensor, editable: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One edit per model: ``pattern [B]`` and ``sign [B]`` (+1 add, -1 remove), or sign 0 where none is possible.

    Adds and removes are equally likely where both are possible; the pattern is uniform among
    the ``editable`` ones the model lacks (add) or has (remove).
    """
    has = has.bool().cpu()
    editable = editable.bool().cpu()[None, :]
    can_add, can_remove = ~has & editable, has & editable
    b = has.shape[0]
    coin = torch.rand(b, generator=generator) < 0.5
    add = torch.where(can_add.any(1) & can_remove.any(1), coin, can_add.any(1))
    choices = torch.where(add[:, None], can_add, can_remove).float()
    none = choices.sum(1) == 0
    pattern = torch.multinomial(choices + none[:, None].float(), 1, generator=generator).squeeze(1)
    sign = torch.where(add, 1.0, -1.0).masked_fill(none, 0.0)
    return pattern, sign


def edited_sets(has: torch.Tensor, pattern: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The pattern sets ``[B, V]`` the edits ask for."""
    out = has.clone().float()
    rows = torch.arange(has.shape[0], device=has.device)
    out[rows, pattern] = torch.where(sign > 0, 1.0, torch.where(sign < 0, 0.0, out[rows, pattern]))
    return out
