"""Metrics of sparse coders, defined once (docs/guide/sae.md states them the same way).

- FVU (fraction of variance unexplained) = sum_t |y_t - yhat_t|^2 / sum_t |y_t - ybar|^2, with ybar the
  mean over the same tokens (about the mean, not about zero). For an SAE, y is its input.
- L0 = mean over tokens of the number of latents > 0.
- Dead fraction = share of a coder's latents that never exceed 0 on a window of tokens; the
  held-out metrics use the whole held-out stream (at most ``val_tokens`` tokens) as the
  window and report its size as ``dead_window``.
- Matched cosine: a one-to-one matching of two sets of unit directions (Hungarian, maximizing
  total cosine; or greedy) and the mean cosine of the matched pairs.
- Cross-seed overlap: over every pair of coders that differ only in seed, the mean matched
  cosine of their decoder rows and the share of matched pairs above ``threshold`` (0.7).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch

from zoo.readers.sae.spec import PreparedStream, TrainConfig


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def fvu(y, y_hat) -> float:
    y, y_hat = _np(y).astype(np.float64), _np(y_hat).astype(np.float64)
    return float(((y - y_hat) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum())


def l0(z) -> float:
    return float((_np(z) > 0).sum(axis=-1).mean())


def dead_fraction(z) -> float:
    """Share of latents (columns of ``z [tokens, m]``) that never fire on these tokens (the window)."""
    return float(1.0 - (_np(z) > 0).any(axis=0).mean())


def linear_sum_assignment(cost) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost one-to-one assignment (Hungarian, O(n^2 m); rectangular allowed)."""
    cost = np.asarray(cost, dtype=np.float64)
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: 1-based row assigned to column j (0: none)
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            masked = np.where(free, minv[1:], np.inf)
            j1 = int(masked.argmin()) + 1
            delta = masked[j1 - 1]
            cols = np.nonzero(used)[0]
            u[p[cols]] += delta
            v[cols] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    cols = np.nonzero(p[1:])[0]
    rows = p[1:][cols] - 1
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    return (cols, rows) if transposed else (rows, cols)


def greedy_assignment(score) -> tuple[np.ndarray, np.ndarray]:
    """A one-to-one assignment taking the highest remaining score first."""
    score = np.asarray(score, dtype=np.float64)
    flat = np.argsort(-score, axis=None, kind="stable")
    used_r, used_c = np.zeros(score.shape[0], bool), np.zeros(score.shape[1], bool)
    rows, cols = [], []
    for r, c in zip(*np.unravel_index(flat, score.shape)):
        if not used_r[r] and not used_c[c]:
            used_r[r] = used_c[c] = True
            rows.append(r)
            cols.append(c)
            if len(rows) == min(score.shape):
                break
    order = np.argsort(rows)
    return np.asarray(rows)[order], np.asarray(cols)[order]


def cosine_matrix(a, b) -> np.ndarray:
    a, b = _np(a).astype(np.float64), _np(b).astype(np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def match_directions(truth, learned, method: str = "hungarian") -> dict:
    """Match each row of ``truth [n, d]`` to a distinct row of ``learned [m, d]`` by cosine.

    Returns ``mean_cosine`` over the min(n, m) matched pairs, the pairs, and per truth row its
    best cosine with any learned row (``best_cosine``, not one-to-one).
    """
    cos = cosine_matrix(truth, learned)
    rows, cols = linear_sum_assignment(-cos) if method == "hungarian" else greedy_assignment(cos)
    matched = cos[rows, cols]
    return {
        "mean_cosine": float(matched.mean()),
        "rows": rows,
        "cols": cols,
        "cosines": matched,
        "best_cosine": cos.max(axis=1),
    }


def cross_seed_overlap(coders, threshold: float = 0.7) -> list[dict]:
    """Decoder overlap between coders that differ only in seed (``TrainedCoder``s: ``spec`` and ``weights``)."""
    groups = defaultdict(list)
    for coder in coders:
        groups[replace(coder.spec, seed=0, name=None, lr=coder.spec.lr)].append(coder)
    out = []
    for spec, members in groups.items():
        if len(members) < 2:
            continue
        cosines, shared = [], []
        for a, b in itertools.combinations(members, 2):
            match = match_directions(a.weights["W_dec"], b.weights["W_dec"])
            cosines.append(match["mean_cosine"])
            shared.append(float((match["cosines"] > threshold).mean()))
        out.append({
            "spec": replace(spec, seed=members[0].spec.seed).label.rsplit(".s", 1)[0],
            "seeds": [m.spec.seed for m in members],
            "mean_matched_cosine": float(np.mean(cosines)),
            "shared_fraction": float(np.mean(shared)),
            "threshold": threshold,
        })  # fmt: skip
    return out


class HeldOut:
    """A stack's held-out streams, evaluated in chunks with the inference rule, without gradients."""

    def __init__(self, stack, streams: list[PreparedStream], stream_id: list[int], config: TrainConfig, device) -> None:
        from zoo.readers.sae.data import pad_stack

        self.stack = stack
        lengths = [min(len(p.val), config.val_tokens) for p in streams]
        self.x = pad_stack([p.val[:n] for p, n in zip(streams, lengths)], stack.D_in, device)
        transcode = [s.transcode for s in stack.specs]
        self.any_transcode = any(transcode)
        self.transcode = torch.tensor(transcode, device=device)[:, None, None]
        if self.any_transcode:
            targets = [(p.target_val if p.target_val is not None else p.val)[:n] for p, n in zip(streams, lengths)]
            self.y = pad_stack(targets, stack.D_out, device)
        self.stream_id = torch.tensor(stream_id, device=device)
        V = self.x.shape[1]
        self.mask = (torch.arange(V, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]).float()
        self.tokens = torch.tensor(lengths, device=device, dtype=torch.float32)[self.stream_id]
        self.chunk = max(1, min(config.eval_batch, 2**23 // max(1, stack.S * stack.M)))
        with torch.no_grad():  # each coder's FVU denominator on its evaluated tokens, in chunks, in float64
            total = torch.zeros(stack.S, dtype=torch.float64, device=device)
            squares = torch.zeros_like(total)
            sums = torch.zeros(stack.S, stack.D_out, dtype=torch.float64, device=device)
            for start in range(0, V, self.chunk):
                cols = slice(start, start + self.chunk)
                y = self._targets(cols).double() * self.mask[self.stream_id, cols].double()[..., None]
                sums += y.sum(dim=1)
                squares += y.pow(2).sum(dim=(1, 2))
            tokens = self.tokens.double()
            total = squares - sums.pow(2).sum(dim=1) / tokens
            self.total_var = total.float()

    def _targets(self, cols: slice) -> torch.Tensor:
        x = self.x[self.stream_id, cols]
        D_in, D_out = self.stack.D_in, self.stack.D_out
        as_out = x[..., :D_out] if D_in >= D_out else torch.nn.functional.pad(x, (0, D_out - D_in))
        if not self.any_transcode:
            return as_out
        return torch.where(self.transcode, self.y[self.stream_id, cols], as_out)

    @torch.no_grad()
    def evaluate(self) -> dict[str, torch.Tensor]:
        stack = self.stack
        S, V = stack.S, self.x.shape[1]
        sse = torch.zeros(S, device=self.x.device)
        l1, nnz = torch.zeros_like(sse), torch.zeros_like(sse)
        fired = torch.zeros(S, stack.M, dtype=torch.bool, device=self.x.device)
        for start in range(0, V, self.chunk):
            cols = slice(start, start + self.chunk)
            x = self.x[self.stream_id, cols]
            y = self._targets(cols)
            w = self.mask[self.stream_id, cols]
            if stack.kind == "topk":  # the sparse kernels: no dense [S, chunk, M] latents, no dense decode
                z, indices, out = stack.topk_forward(x)
                fired |= stack.fired(z, indices, w)
            else:
                z, _ = stack.select(stack.pre_acts(x), batch_rule=False)
                out = stack.decode(z, x)
                fired |= ((z > 0) & (w[..., None] > 0)).any(dim=1)
            e = (y - out) * stack.out_mask
            sse += (e.pow(2).sum(-1) * w).sum(1)
            l1 += (z.sum(-1) * w).sum(1)
            nnz += ((z > 0).sum(-1) * w).sum(1)
        fvu = sse / self.total_var
        objective = fvu + stack.alpha / stack.d_out_f * l1 / self.tokens
        dead = 1.0 - fired.sum(1) / stack.latents
        return {"fvu": fvu, "objective": objective, "l0": nnz / self.tokens, "dead_fraction": dead}

    def metrics(self) -> list[dict]:
        values = {name: t.tolist() for name, t in self.evaluate().items()}
        tokens = self.tokens.tolist()
        return [
            {**{name: values[name][i] for name in values}, "dead_window": int(tokens[i]), "val_tokens": int(tokens[i])}
            for i in range(self.stack.S)
        ]
