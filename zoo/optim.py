"""Adam for stacked parameters: many models' parameters in one tensor, a learning rate per model.

zoo trains populations, not single models: the subjects of a batch (``zoo.subjects.fit``),
every probe of a group (``zoo.readers.probes.train``), and the coming sparse
autoencoders each keep one tensor whose leading axis is the model. They all step it
with ``StackedAdam``, so that early stopping (a rate of 0), a plateau schedule per
probe, or a sweep over rates is a learning-rate tensor, not a loop over models.

ATen's fused Adam kernel takes one learning rate, so it runs at rate 1 into a zeroed
update buffer, which is then scaled by the rates (any shape that broadcasts against
the parameter: ``[N, 1]`` for a flat ``[N, P]`` population, ``[N, 1, C]`` for probes);
a model at rate 0 does not move. The update equals ``torch.optim.Adam``'s to float
rounding. Weight decay is either coupled (L2 added to the gradient, as
``torch.optim.Adam``) or decoupled (``torch.optim.AdamW``: the parameter shrinks by
``lr * weight_decay`` of itself); either way the rates scale it too.

One ``nn.Module`` trained on its own (the interpreter) does not need this: its rate is
a scalar, and it uses its own ``AdamW``.
"""

from __future__ import annotations

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class StackedAdam:
    """Adam over one stacked parameter tensor, stepped in place with per-model rates.

    ``m``, ``v`` and ``steps`` resume a state (a subset of the models keeps its moments
    when the stack is compacted); ``steps`` is a 0-d float32 tensor on the parameter's
    device, shared by every model of the stack.
    """

    def __init__(
        self,
        param: torch.Tensor,
        m: torch.Tensor | None = None,
        v: torch.Tensor | None = None,
        steps: torch.Tensor | None = None,
        *,
        betas: tuple[float, float] = BETAS,
        eps: float = EPS,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        self.param = param
        self.m = torch.zeros_like(param) if m is None else m
        self.v = torch.zeros_like(param) if v is None else v
        self.update = torch.zeros_like(param)
        self.steps = torch.zeros((), dtype=torch.float32, device=param.device) if steps is None else steps
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = decoupled

    @property
    def flat(self) -> torch.Tensor:
        """The parameter (a population's flat ``[N, P]`` weights)."""
        return self.param

    def step(self, grad: torch.Tensor, lr: torch.Tensor | float) -> None:
        """One update with gradient ``grad`` (shaped like the parameter) and rates ``lr`` (broadcastable)."""
        if self.weight_decay and not self.decoupled:
            grad = grad + self.weight_decay * self.param
        self.steps += 1
        self.update.zero_()
        torch._fused_adam_(
            [self.update], [grad], [self.m], [self.v], [], [self.steps],
            lr=1.0, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            amsgrad=False, maximize=False,
        )  # fmt: skip
        if self.weight_decay and self.decoupled:
            self.update.sub_(self.param, alpha=self.weight_decay)
        if isinstance(lr, torch.Tensor):
            self.param.addcmul_(self.update, lr)
        else:
            self.param.add_(self.update, alpha=lr)
