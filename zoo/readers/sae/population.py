"""Many sparse coders of one kind as one batched computation: stacked, padded weights and masks.

A stack of ``S`` coders keeps ``W_enc [S, M, D_in]`` (``nn.Linear``'s layout), ``b_enc [S, 1, M]``, ``W_dec [S, M, D_out]``,
``b_dec [S, 1, D_out]`` and, when any is a skip transcoder, ``W_skip [S, D_in, D_out]``, where
``D_in``, ``D_out`` and ``M`` are the widest input, output and latent counts of the stack.
Each coder's weights come from ``module.init_weights`` at its true sizes and are zero-padded;
padded inputs are zero, padded latents are masked out of the activations, padded outputs
out of the error, so padded weights get no gradient and stay zero: a coder's training does
not depend on what it is stacked with. ``k`` differs per coder: the stack takes the top
``max k`` and masks ranks at or beyond each coder's own ``k``.

The forward pass, objective and AuxK term are those of ``module.SparseCoder``, batched with
``torch.baddbmm``; no Python loop runs over coders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.readers.sae.kernels import sparse_decode, topk_encode
from zoo.readers.sae.module import init_weights
from zoo.readers.sae.spec import SAESpec

EPS = torch.finfo(torch.float32).eps


@dataclass
class StepOutput:
    loss: torch.Tensor  # [S] the objective, summed for backward
    fvu: torch.Tensor  # [S]
    fired: torch.Tensor  # [S, M] bool: latents that fired on this batch (training rule)


class Stack:
    """The weights, masks and per-coder settings of one stacked population of a single kind."""

    def __init__(
        self,
        specs: list[SAESpec],
        d_in: list[int],
        d_out: list[int],
        device: torch.device,
        threshold_decay: float = 0.99,
    ) -> None:
        kinds = {spec.kind for spec in specs}
        if len(kinds) != 1:
            raise ValueError(f"a stack holds one kind, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.specs = specs
        self.device = device
        S = len(specs)
        D_in, D_out, M = max(d_in), max(d_out), max(s.latents for s in specs)
        self.S, self.D_in, self.D_out, self.M = S, D_in, D_out, M
        self.any_skip = any(s.skip for s in specs)
        W_enc = torch.zeros(S, M, D_in)
        W_dec = torch.zeros(S, M, D_out)
        W_skip = torch.zeros(S, D_in, D_out) if self.any_skip else None
        for i, (spec, di, do) in enumerate(zip(specs, d_in, d_out)):
            w = init_weights(spec, di, do)
            W_enc[i, : spec.latents, :di] = w["encoder.weight"]
            W_dec[i, : spec.latents, :do] = w["W_dec"]
        self.params: dict[str, torch.Tensor] = {
            "W_enc": W_enc,
            "b_enc": torch.zeros(S, 1, M),
            "W_dec": W_dec,
            "b_dec": torch.zeros(S, 1, D_out),
        }
        if W_skip is not None:
            self.params["W_skip"] = W_skip
        self.params = {name: p.to(device).requires_grad_() for name, p in self.params.items()}

        def col(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device)

        self.d_in = col(d_in, torch.long)
        self.d_out_f = col(d_out)
        self.latents = col([s.latents for s in specs], torch.long)
        self.lat_mask = (torch.arange(M, device=device) < self.latents[:, None]).float()[:, None, :]  # [S, 1, M]
        self.out_mask = (torch.arange(D_out, device=device) < col(d_out, torch.long)[:, None]).float()[:, None, :]
        self.skip_mask = col([1.0 if s.skip else 0.0 for s in specs])[:, None, None]
        self.is_sae = col([0.0 if s.transcode else 1.0 for s in specs])[:, None, None]
        self.k = col([s.k for s in specs], torch.long)
        self.K = int(self.k.max())
        self.rank_mask = (torch.arange(self.K, device=device) < self.k[:, None]).float()[:, None, :]  # [S, 1, K]
        self.alpha = col([s.alpha if s.kind == "relu" else 0.0 for s in specs])
        self.auxk = col([s.auxk for s in specs])
        self.k_aux = torch.clamp(col(d_out, torch.long) // 2, min=1)
        self.lr = col([s.learning_rate for s in specs])[:, None, None]
        self.threshold = torch.full((S,), float("nan"), device=device)
        self.threshold_decay = threshold_decay
        self.active = torch.ones(S, dtype=torch.bool, device=device)  # the trainer clears stopped coders

    # --- the forward pass -------------------------------------------------------------------
    def shift(self) -> torch.Tensor:
        """What an SAE subtracts from its input (its ``b_dec``); zero for transcoders."""
        b = self.params["b_dec"][..., : min(self.D_in, self.D_out)]
        if b.shape[-1] < self.D_in:
            b = F.pad(b, (0, self.D_in - b.shape[-1]))
        return b * self.is_sae

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        return F.relu(torch.baddbmm(p["b_enc"], x - self.shift(), p["W_enc"].mT)) * self.lat_mask

    def select(self, pre: torch.Tensor, batch_rule: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents ``[S, B, M]`` and, for BatchTopK's training rule, the smallest kept value per coder."""
        if self.kind == "topk":
            values, indices = pre.topk(self.K, dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, values * self.rank_mask), None
        if self.kind == "batchtopk":
            S, B, M = pre.shape
            if batch_rule:
                flat = pre.reshape(S, B * M)
                values, indices = flat.topk(self.K * B, dim=-1)
                kept = self.k * B
                mask = torch.arange(self.K * B, device=pre.device)[None, :] < kept[:, None]
                smallest = values.detach().gather(1, (kept - 1)[:, None]).squeeze(1)
                z = torch.zeros_like(flat).scatter(-1, indices, values * mask)
                return z.reshape(S, B, M), smallest
            threshold = torch.nan_to_num(self.threshold, nan=0.0)[:, None, None]
            return pre * (pre > threshold), None
        return pre, None

    def decode(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        out = torch.baddbmm(p["b_dec"], z, p["W_dec"])
        if self.any_skip:
            out = out + torch.bmm(x, p["W_skip"]) * self.skip_mask
        return out

    def objective(self, x: torch.Tensor, y: torch.Tensor, dead: torch.Tensor | None) -> StepOutput:
        """The training objective of every coder on its own batch (``x [S, B, D_in]``, ``y [S, B, D_out]``)."""
        if self.kind == "topk":
            return self._objective_topk(x, y, dead)
        pre = self.pre_acts(x)
        z, smallest = self.select(pre, batch_rule=True)
        if smallest is not None:
            self._update_threshold(smallest)
        e = (y - self.decode(z, x)) * self.out_mask
        total_var = (y - y.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))
        fvu = e.pow(2).sum(dim=(1, 2)) / total_var
        loss = fvu
        if self.kind == "relu":
            norms = self.params["W_dec"].norm(dim=-1)[:, None, :]
            loss = loss + self.alpha / self.d_out_f * (z * norms).sum(-1).mean(-1)
        if dead is not None and bool((self.auxk > 0).any()):
            loss = loss + self.auxk * self._auxk(pre, e, total_var, dead)
        return StepOutput(loss=loss, fvu=fvu.detach(), fired=(z.detach() > 0).any(dim=1))

    def topk_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TopK through the sparse kernels (``kernels.py``): kept values and latents ``[S, B, K]`` (ranks at or
        past a coder's own ``k`` are 0) and the output ``[S, B, D_out]``; the dense rule's values, less arithmetic."""
        p = self.params
        values, indices = topk_encode(x, self.shift(), p["W_enc"], p["b_enc"], self.K)
        values = values * self.rank_mask
        out = sparse_decode(values, indices, p["W_dec"]) + p["b_dec"]
        if self.any_skip:
            out = out + torch.bmm(x, p["W_skip"]) * self.skip_mask
        return values, indices, out

    def fired(self, values: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``[S, M]`` bool: latents with a positive kept value on some token (``weight [S, B]`` > 0: counted tokens)."""
        hits = values.detach() > 0
        if weight is not None:
            hits = hits & (weight[..., None] > 0)
        S = self.S
        counts = torch.zeros(S, self.M, device=values.device)
        return counts.scatter_add_(1, indices.reshape(S, -1), hits.float().reshape(S, -1)) > 0

    def _objective_topk(self, x: torch.Tensor, y: torch.Tensor, dead: torch.Tensor | None) -> StepOutput:
        """TopK with the sparse kernels (``topk_forward``)."""
        values, indices, out = self.topk_forward(x)
        e = (y - out) * self.out_mask
        total_var = (y - y.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))
        fvu = e.pow(2).sum(dim=(1, 2)) / total_var
        loss = fvu
        fired = self.fired(values, indices)
        if dead is not None and bool((self.auxk > 0).any()) and bool(dead.any()):
            pre = self.pre_acts(x)
            loss = loss + self.auxk * self._auxk(pre, e, total_var, dead)
        return StepOutput(loss=loss, fvu=fvu.detach(), fired=fired)

    def _auxk(self, pre: torch.Tensor, e: torch.Tensor, total_var: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        num_dead = dead.sum(dim=1)
        if int(num_dead.max()) == 0:
            return torch.zeros_like(total_var)
        scale = torch.clamp(num_dead / self.k_aux, max=1.0)
        kk = torch.minimum(self.k_aux, num_dead)
        values, indices = torch.where(dead[:, None, :], pre, -torch.inf).topk(int(kk.max()), dim=-1)
        keep = torch.arange(values.shape[-1], device=pre.device)[None, None, :] < kk[:, None, None]
        values = torch.where(keep, values, torch.zeros_like(values))
        e_hat = torch.bmm(torch.zeros_like(pre).scatter(-1, indices, values), self.params["W_dec"])
        return scale * ((e_hat - e.detach()) * self.out_mask).pow(2).sum(dim=(1, 2)) / total_var

    @torch.no_grad()
    def _update_threshold(self, smallest: torch.Tensor) -> None:
        decay = self.threshold_decay
        new = torch.where(torch.isnan(self.threshold), smallest, decay * self.threshold + (1 - decay) * smallest)
        self.threshold = torch.where(self.active, new, self.threshold)

    # --- the decoder constraint ---------------------------------------------------------------
    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        w = self.params["W_dec"]
        g = w.grad
        g.addcmul_(torch.linalg.vecdot(g, w)[..., None], w, value=-1.0)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        w = self.params["W_dec"]
        w /= w.norm(dim=-1, keepdim=True) + EPS

    # --- read-outs ----------------------------------------------------------------------------
    def weights(self, i: int, d_in: int, d_out: int) -> dict[str, torch.Tensor | float | None]:
        """Coder ``i``'s weights at its true sizes, in ``module.SparseCoder``'s names."""
        p = {name: t.detach() for name, t in self.params.items()}
        m = self.specs[i].latents
        return {
            "encoder.weight": p["W_enc"][i, :m, :d_in].cpu().clone(),
            "encoder.bias": p["b_enc"][i, 0, :m].cpu().clone(),
            "W_dec": p["W_dec"][i, :m, :d_out].cpu().clone(),
            "b_dec": p["b_dec"][i, 0, :d_out].cpu().clone(),
            "W_skip": p["W_skip"][i, :d_in, :d_out].T.contiguous().cpu() if self.specs[i].skip else None,
            "threshold": float(torch.nan_to_num(self.threshold[i], nan=0.0)),
        }
