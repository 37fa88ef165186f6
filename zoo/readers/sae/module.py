"""One sparse coder as an ``nn.Module``: the loaded form, and the per-SAE reference that the population must equal.

Parameter names and shapes follow EleutherAI sparsify's ``SparseCoder``:
``encoder`` (``nn.Linear(d_in, m)``: ``encoder.weight [m, d_in]``, ``encoder.bias [m]``),
``W_dec [m, d_out]``, ``b_dec [d_out]`` and, for skip transcoders, ``W_skip [d_out, d_in]``.
As in sparsify, an SAE subtracts ``b_dec`` from its input before encoding; a transcoder
does not. The forward pass (one rule for every kind):

    pre = relu(encoder(x - b_dec))            # transcoders: relu(encoder(x))
    z   = select(pre)                         # TopK: the k largest per token
                                              # BatchTopK: training, the k*B largest of the batch;
                                              #            inference, pre > threshold
                                              # ReLU: pre itself
    out = z @ W_dec + b_dec (+ x @ W_skip.T)

``objective`` is the training loss, the same as the population's (``zoo.readers.sae.population``):
``FVU + alpha / d_out * mean_tokens(sum_j z_j * |W_dec_j|) + auxk * AuxK``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.readers.sae.kernels import sparse_decode, topk_encode
from zoo.readers.sae.spec import SAESpec


def init_weights(spec: SAESpec, d_in: int, d_out: int) -> dict[str, torch.Tensor]:
    """A spec's initial weights from its own seed, at its true sizes (sparsify's initialization).

    ``encoder.weight`` is ``nn.Linear``'s uniform(+-1/sqrt(d_in)); an SAE's decoder starts as
    the encoder's rows at unit norm; a transcoder's decoder starts at zero (it becomes unit
    norm after its first step); ``b_dec`` is set from the data (geometric median) by the trainer.
    """
    gen = torch.Generator().manual_seed(int(spec.seed))
    bound = 1.0 / d_in**0.5
    enc = (torch.rand(spec.latents, d_in, generator=gen) * 2 - 1) * bound
    if spec.transcode:
        dec = torch.zeros(spec.latents, d_out)
    else:
        dec = enc / (enc.norm(dim=1, keepdim=True) + torch.finfo(enc.dtype).eps)
    return {
        "encoder.weight": enc,
        "encoder.bias": torch.zeros(spec.latents),
        "W_dec": dec,
        "b_dec": torch.zeros(d_out),
        "W_skip": torch.zeros(d_out, d_in) if spec.skip else None,
    }


def geometric_median(x: torch.Tensor, iters: int = 64, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's iterations over the rows of ``x [n, d]`` (or ``[S, n, d]``: one median per stack entry)."""
    median = x.mean(dim=-2, keepdim=True)
    for _ in range(iters):
        w = 1.0 / (x - median).norm(dim=-1, keepdim=True).clamp_min(eps)
        new = (w * x).sum(dim=-2, keepdim=True) / w.sum(dim=-2, keepdim=True)
        if torch.allclose(new, median, atol=1e-7, rtol=0):
            median = new
            break
        median = new
    return median.squeeze(-2)


class SparseCoder(nn.Module):
    """An SAE or (skip) transcoder with ``encode`` (dense latents ``[..., m]``) and ``decode``."""

    def __init__(
        self,
        d_in: int,
        latents: int,
        d_out: int | None = None,
        *,
        kind: str = "topk",
        k: int = 8,
        transcode: bool = False,
        skip: bool = False,
        threshold: float = 0.0,
    ) -> None:
        super().__init__()
        d_out = d_in if d_out is None else d_out
        self.d_in, self.d_out, self.latents = d_in, d_out, latents
        self.kind, self.k, self.transcode = kind, int(k), transcode
        self.encoder = nn.Linear(d_in, latents)
        self.W_dec = nn.Parameter(torch.zeros(latents, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.W_skip = nn.Parameter(torch.zeros(d_out, d_in)) if skip else None
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @classmethod
    def from_spec(cls, spec: SAESpec, d_in: int, d_out: int) -> SparseCoder:
        coder = cls(d_in, spec.latents, d_out, kind=spec.kind, k=spec.k, transcode=spec.transcode, skip=spec.skip)
        coder.load_weights(init_weights(spec, d_in, d_out))
        return coder

    def load_weights(self, weights: dict[str, torch.Tensor | None]) -> None:
        with torch.no_grad():
            for name, value in weights.items():
                if value is None:
                    continue
                if name == "threshold":
                    self.threshold.fill_(float(value))
                else:
                    self.get_parameter(name).copy_(value)

    # --- the forward pass -------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.encoder(x if self.transcode else x - self.b_dec))

    def select(self, pre: torch.Tensor, batch_rule: bool = False) -> torch.Tensor:
        if self.kind == "topk":
            values, indices = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, values)
        if self.kind == "batchtopk":
            if batch_rule:
                flat = pre.reshape(-1)
                values, indices = flat.topk(self.k * pre.shape[0])
                return torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)
            return pre * (pre > self.threshold)
        return pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations ``[..., m]`` (inference rule: BatchTopK uses its threshold)."""
        return self.select(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        if self.W_skip is not None:
            out = out + x @ self.W_skip.T
        return out

    # --- training (the per-SAE reference) ---------------------------------------------------
    def objective(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        alpha: float = 0.0,
        auxk: float = 0.0,
        dead: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        """``(loss, fvu, fired [m], smallest kept value (BatchTopK) or None)`` on one batch, training rule.

        TopK uses the sparse kernels of ``kernels.py`` (sparsify's fused encoder and sparse
        decoder, batched); the other kinds decode densely.
        """
        smallest = None
        if self.kind == "topk":
            shift = x.new_zeros(self.d_in) if self.transcode else self.b_dec
            weight, bias = self.encoder.weight[None], self.encoder.bias[None, None]
            values, indices = topk_encode(x[None], shift[None, None], weight, bias, self.k)
            out = sparse_decode(values, indices, self.W_dec[None])[0] + self.b_dec
            hits = (values.detach() > 0).float().reshape(-1)
            fired = torch.zeros(self.latents, device=x.device).index_add_(0, indices.reshape(-1), hits) > 0
            pre = None
        else:
            pre = self.pre_acts(x)
            z = self.select(pre, batch_rule=True)
            out = self.decode(z)
            fired = (z.detach() > 0).any(dim=0)
            if self.kind == "batchtopk":
                smallest = float(z.detach().reshape(-1).topk(self.k * x.shape[0]).values[-1])
        if self.W_skip is not None:
            out = out + x @ self.W_skip.T
        e = y - out
        total_var = (y - y.mean(0)).pow(2).sum()
        fvu = e.pow(2).sum() / total_var
        loss = fvu
        if self.kind == "relu" and alpha:
            loss = loss + alpha / self.d_out * (z * self.W_dec.norm(dim=1)).sum(-1).mean()
        if auxk and dead is not None and int(dead.sum()) > 0:
            if pre is None:
                pre = self.pre_acts(x)
            num_dead = int(dead.sum())
            k_aux = max(1, self.d_out // 2)
            scale = min(num_dead / k_aux, 1.0)
            k_aux = min(k_aux, num_dead)
            values, indices = torch.where(dead, pre, -torch.inf).topk(k_aux, dim=-1)
            e_hat = torch.zeros_like(pre).scatter(-1, indices, values) @ self.W_dec
            loss = loss + auxk * scale * (e_hat - e.detach()).pow(2).sum() / total_var
        return loss, fvu, fired, smallest

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        g, w = self.W_dec.grad, self.W_dec.data
        g.addcmul_(torch.linalg.vecdot(g, w)[..., None], w, value=-1.0)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        w = self.W_dec.data
        w /= w.norm(dim=1, keepdim=True) + torch.finfo(w.dtype).eps
