"""The interpreter's optimizer: AdamW over its parameters, with its state as flat safetensors tensors."""

from __future__ import annotations

import torch

from zoo.readers.interpreter import InterpreterError


class AdamW:
    """Adam with decoupled weight decay, as ``torch.optim.AdamW`` computes it.

    Written out because ``torch.optim`` imports ``torch._dynamo`` on first use (seconds
    per process), and so that its state is a flat dict of tensors for safetensors.
    """

    def __init__(self, params, *, lr: float, betas: tuple[float, float], weight_decay: float, eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.weight_decay, self.eps = lr, betas, weight_decay, eps
        self.steps = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        bc1, bc2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                p.mul_(1 - self.lr * self.weight_decay)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.addcdiv_(m, (v / bc2).sqrt_().add_(self.eps), value=-self.lr / bc1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"optim.steps": torch.tensor(self.steps, dtype=torch.int64)}
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            out[f"optim.m.{i}"], out[f"optim.v.{i}"] = m, v
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "optim.steps" not in tensors:
            raise InterpreterError("checkpoint holds no optimizer state")
        self.steps = int(tensors["optim.steps"])
        for i, p in enumerate(self.params):
            if f"optim.m.{i}" not in tensors:  # a parameter added since the checkpoint (the last: kinds.table)
                continue
            self.m[i] = tensors[f"optim.m.{i}"].to(p.device)
            self.v[i] = tensors[f"optim.v.{i}"].to(p.device)

    def to(self, device: torch.device) -> AdamW:
        self.m = [m.to(device) for m in self.m]
        self.v = [v.to(device) for v in self.v]
        return self
