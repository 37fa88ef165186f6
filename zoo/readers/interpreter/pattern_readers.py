"""Per-pattern readers: each pattern's state from the neurons and from the subject's answers.

Both share their weights across patterns (equivariant in the pattern axis), so what is
learned about one pattern's probes and signature columns transfers to the others.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.readers.interpreter.data import Batch


def pattern_columns(stats: list[str] | tuple[str, ...], names: list[str] | tuple[str, ...]) -> tuple[list[int], int]:
    """Signature columns holding each pattern's probe mean (-1 where absent) and the negatives' one.

    With ``activations: both`` the post-activation columns are used.
    """
    def find(name: str) -> int:
        for candidate in (f"pattern_mean:{name}", f"post:pattern_mean:{name}", f"pre:pattern_mean:{name}"):
            if candidate in stats:
                return list(stats).index(candidate)
        return -1

    return [find(n) for n in names], find("none")


class PatternAnswers(nn.Module):
    """Each pattern's answers read by weights shared across patterns (equivariant in the pattern axis).

    For pattern ``p``: quantiles, share answered yes and mean of the answers (asinh logits) on
    ``p``'s own probes, beside the same of the negatives and the mean of the first over every
    pattern with probes (DeepSets context: how many patterns the subject says yes to). Swapping two
    patterns' probes swaps their features and nothing else, so the reader cannot learn which
    patterns go together, only how an answered, a degraded and an absent pattern look.
    """

    QUANTILES = 9

    def __init__(self, probe_patterns: list[int], n_patterns: int, width: int, dropout: float):
        super().__init__()
        groups = [[i for i, q in enumerate(probe_patterns) if q == p] for p in range(n_patterns)]
        negatives = [i for i, q in enumerate(probe_patterns) if q < 0]
        longest = max([len(g) for g in groups] + [1])
        self.register_buffer("index", torch.tensor([g + [0] * (longest - len(g)) for g in groups], dtype=torch.long), persistent=False)
        self.register_buffer("count", torch.tensor([len(g) for g in groups], dtype=torch.long), persistent=False)
        self.register_buffer("negatives", torch.tensor(negatives or [0], dtype=torch.long), persistent=False)
        self.register_buffer("n_negatives", torch.tensor(len(negatives)), persistent=False)  # 0: summarized as zeros
        n = self.QUANTILES + 2
        self.mlp = nn.Sequential(nn.Linear(3 * n, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, width), nn.GELU())

    def summary(self, values: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Quantiles, share above zero and mean over the first ``count`` entries of the last axis: ``[..., Q + 2]``."""
        k = values.shape[-1]
        valid = torch.arange(k, device=values.device) < count[..., None]
        ranked = values.masked_fill(~valid, float("inf")).sort(-1).values
        q = torch.linspace(0, 1, self.QUANTILES, device=values.device)
        position = (q * (count[..., None] - 1).clamp_min(0)).round().long().expand(*values.shape[:-1], -1)
        quantiles = ranked.gather(-1, position).masked_fill(count[..., None] == 0, 0.0)
        keep = valid.to(values.dtype)
        n = count[..., None].clamp_min(1).to(values.dtype)
        share = ((values > 0).to(values.dtype) * keep).sum(-1, keepdim=True) / n
        mean = (values * keep).sum(-1, keepdim=True) / n
        return torch.cat([quantiles, share, mean], dim=-1)

    def forward(self, answers: torch.Tensor) -> torch.Tensor:
        """``[B, P, width]`` from the answers ``[B, R]`` (asinh of the output logit on every probe)."""
        b, p = answers.shape[0], self.index.shape[0]
        own = self.summary(answers[:, self.index], self.count.expand(b, -1))  # [B, P, Q + 2]
        present = (self.count > 0).to(answers.dtype)[None, :, None]
        context = (own * present).sum(1) / present.sum(1).clamp_min(1)
        negative = self.summary(answers[:, self.negatives], self.n_negatives.expand(b))
        features = torch.cat([own, negative[:, None].expand(-1, p, -1), context[:, None].expand(-1, p, -1)], dim=-1)
        return self.mlp(features) * present


class PatternReader(nn.Module):
    """Per-pattern states from the neurons, shared across patterns (equivariant in the pattern axis).

    For pattern ``p`` and neuron ``n`` a pair feature is made of the neuron's state and its
    response to ``p``'s probes (its signature column ``pattern_mean:p``, raw and relative
    to the negatives' column); pairs are pooled over the neurons by attention (order-free)
    and next to the output neuron's own pair, then joined with a pattern embedding, the
    answer reader's features for the pattern (when there is one) and the model latent.
    The same weights read every pattern's neurons, so what is learned about one
    pattern's columns transfers to the others.
    """

    def __init__(
        self,
        d: int,
        latent: int,
        n_patterns: int,
        columns: list[int],
        none_column: int,
        dropout: float,
        answer_width: int = 0,
        answers_per_pattern: bool = False,
    ):
        super().__init__()
        # joint answers [B, aw] are unpacked into one part per pattern; per-pattern answers [B, P, aw] share one map
        self.from_answers = nn.Linear(answer_width, (1 if answers_per_pattern else n_patterns) * d) if answer_width else None
        parts = 4 if answer_width else 3
        self.register_buffer("columns", torch.tensor([max(c, 0) for c in columns], dtype=torch.long), persistent=False)
        self.register_buffer("present", torch.tensor([c >= 0 for c in columns], dtype=torch.float32), persistent=False)
        self.none_column = none_column
        self.pair = nn.Sequential(nn.Linear(d + 3, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.score = nn.Linear(d, 1)
        self.emb = nn.Embedding(n_patterns, d)
        self.from_latent = nn.Linear(latent, d)
        self.mix = nn.Sequential(nn.LayerNorm(parts * d), nn.Linear(parts * d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))

    def forward(
        self, tokens: torch.Tensor, sig: torch.Tensor, batch: Batch, latent: torch.Tensor, answers: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, P, d]`` pattern states from token states ``[B, N, d]``, the normalized signature ``[B, N, S]``
        and the answer reader's features (``[B, answer_width]``, or ``[B, P, answer_width]`` per pattern)."""
        response = sig[..., self.columns] * self.present  # [B, N, P]
        none = sig[..., self.none_column : self.none_column + 1] if self.none_column >= 0 else torch.zeros_like(response[..., :1])
        relative = (response - none) * self.present
        is_out = batch.output.to(sig.dtype)[..., None].expand_as(response)
        b, n, p = response.shape
        pair_in = torch.cat(
            [tokens[:, None, :, :].expand(b, p, n, tokens.shape[-1]), torch.stack([response, relative, is_out], -1).transpose(1, 2)],
            dim=-1,
        )
        pairs = self.pair(pair_in)  # [B, P, N, d]
        scores = self.score(pairs).squeeze(-1).masked_fill(~batch.mask[:, None, :], float("-inf"))
        pooled = torch.einsum("bpn,bpnd->bpd", torch.softmax(scores, dim=-1), pairs)
        out_pair = (pairs * batch.output.to(sig.dtype)[:, None, :, None]).sum(2)
        parts = [pooled, out_pair, self.emb.weight[None].expand(b, -1, -1)]
        if self.from_answers is not None:
            parts.append(self.from_answers(answers).view(b, p, -1))
        state = torch.cat(parts, dim=-1)
        return self.mix(state) + self.from_latent(latent)[:, None, :]
