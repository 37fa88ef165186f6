"""The interpreter network: neuron tokens -> encoder -> latent -> heads, and a repair decoder.

Every neuron of the degraded subject, of any family, is a token made of its signature row,
its kind and layer position (relative depth, first hidden / hidden / output, its site's
width; ``neurons``), its value on every probe, the subject's activation function where it
has one, and, for a family with a token space (the MLP), optionally its incoming weights (the first hidden
layer's input weights, order-free statistics of every other token's in- and outgoing
weights, its bias). Blocks alternate messages along the weight graph (``adj @ h``:
a neuron hears the neurons feeding it and those it feeds, weighted by the weights)
with self-attention over all tokens of a subject and an MLP. Nothing depends on the
order of the neurons inside a layer: permuting them (and the weights with them)
permutes the token states and leaves the pooled latent, the heads and the decoded
model's function unchanged. For a subject without a token space (a transformer) the weight
inputs, the messages and the decoder's change are masked to zero (``Interpreter.weight_gate``),
so a batch mixing families reads each MLP as a batch of MLPs would.

With ``answer_width`` an MLP also reads the output neuron's answers on the whole probe
set at once (asinh of the logits, standardized per probe over training subjects: what
the output-only baseline reads) into each pattern's state and into the latent. The
probe set is the zoo's, fixed, so this reader may know which probe is which; it sees
jointly what the per-pattern signature means average away. With ``answer_reader:
per_pattern`` the answers are read pattern by pattern instead (``PatternAnswers``):
weights shared across patterns, so nothing is learned about which patterns go together.

Heads read the latent: the pattern set (multi-label logits over the zoo's pattern
vocabulary), the corrupted pattern (logits), and the degraded model's accuracy. The
decoder reads each token's state plus the latent and predicts a change of the
degraded weights: first-layer input weights and biases per token, and every other
weight ``adj[j, i]`` from a low-rank product of the two tokens' states plus a
per-token rescaling of the existing weight. Its last layers start at zero, so an
untrained decoder returns the degraded model unchanged. With ``decoder_passes`` it repairs
in passes with the same weights, each reading the subject as the last one left it. With
``decoder_reads_gradient`` it also reads the gradient of the named set's loss on the probe
set (what refinement trains on) and takes a learned step along it per neuron: one step of a
learned optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import ACTIVATIONS
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.config import ModelConfig
from zoo.readers.interpreter.data import Batch, Weights
from zoo.readers.interpreter.neurons import KINDS, N_FIXED_KINDS
from zoo.readers.interpreter.token_forward import activation_runs, output_values, subject_logits, subject_values

from zoo.readers.interpreter.pattern_readers import PatternAnswers, PatternReader, pattern_columns

# re-exported from the modules they moved to
__all__ = ["PatternAnswers", "PatternReader", "activation_runs", "output_values", "pattern_columns", "subject_logits", "subject_values"]

N_POSITION = 5
N_WEIGHT_STATS = 11
N_GRADIENT_FEATURES = N_WEIGHT_STATS + 2
GRADIENT_FLOOR = 1e-4  # the gradient RMS below which a direction is not scaled up: the subject already answers the set


@dataclass
class Output:
    latent: torch.Tensor  # [B, latent]
    tokens: torch.Tensor  # [B, N, width] final token states
    patterns: torch.Tensor  # [B, V] logits
    corrupted: torch.Tensor  # [B, V] logits
    accuracy: torch.Tensor  # [B] in [0, 1]
    answers: torch.Tensor | None = None  # the answer reader's features: [B, answer_width], or [B, P, answer_width]


def _masked_stats(values: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
    """mean, std, max, min, rms over the last axis where ``keep`` (0 where nothing is kept)."""
    keep = keep.to(values.dtype)
    count = keep.sum(-1).clamp_min(1.0)
    mean = (values * keep).sum(-1) / count
    sq = (values.square() * keep).sum(-1) / count
    # clamped above 0: sqrt's gradient at 0 is infinite, and padding and one-weight tokens sit there
    # (a repair pass reads weights the decoder wrote, so gradients flow through these statistics)
    std = (sq - mean.square()).clamp_min(1e-12).sqrt()
    big = torch.finfo(values.dtype).max
    has = keep.sum(-1) > 0
    top = torch.where(keep > 0, values, -big).amax(-1)
    low = torch.where(keep > 0, values, big).amin(-1)
    return [mean, std, torch.where(has, top, 0.0), torch.where(has, low, 0.0), sq.clamp_min(1e-12).sqrt()]


def position_features(batch: Batch) -> torch.Tensor:
    """``[B, N, 5]``: relative depth, output, first hidden layer, log width, 1/depth."""
    depth = batch.n_layers[:, None].to(torch.float32)
    layer = batch.layer.clamp_min(0).to(torch.float32)
    rel = layer / depth
    is_out = batch.output.to(torch.float32)
    first = batch.first.to(torch.float32)
    feats = torch.stack([rel, is_out, first, torch.log(batch.width) / 4.0, (1.0 / depth).expand_as(rel)], dim=-1)
    return feats * batch.mask[..., None]


def weight_features(batch: Batch, weights: Weights) -> torch.Tensor:
    """``[B, N, 11]`` order-free summaries of a token's weights, in init-scale units.

    Incoming (input weights for the first layer, ``adj`` rows otherwise): mean, std,
    max, min, rms; outgoing (``adj`` columns): the same five; and the bias.
    """
    # a token's outgoing weights feed the next layer, whose fan-in is this layer's width
    return _token_stats(batch, weights, batch.fan_in.sqrt(), batch.width.sqrt())


def _token_stats(batch: Batch, weights: Weights, in_scale: torch.Tensor, out_scale: torch.Tensor) -> torch.Tensor:
    """``[B, N, 11]``: incoming stats x ``in_scale``, outgoing stats x ``out_scale``, bias x ``in_scale``."""
    edges = batch.edges
    first = batch.first
    incoming_adj = _masked_stats(weights.adj, edges)
    incoming_in = _masked_stats(weights.w_in, first[..., None].expand_as(weights.w_in))
    incoming = [torch.where(first, a, b) * in_scale for a, b in zip(incoming_in, incoming_adj)]
    outgoing = [s * out_scale for s in _masked_stats(weights.adj.transpose(1, 2), edges.transpose(1, 2))]
    bias = weights.bias * in_scale
    return torch.stack([*incoming, *outgoing, bias], dim=-1) * batch.weight_mask[..., None]


def named_sets(out: Output) -> torch.Tensor:
    """``[B, V]`` 0/1, detached: the patterns the heads name (probability above 1/2, and the corrupted head's pick).

    A fixed threshold, not the one evaluation chooses on validation after training: the decoder
    is trained on the sets it reads here.
    """
    named = (out.patterns.detach() > 0).to(out.patterns.dtype)
    return named.scatter(1, out.corrupted.detach().argmax(-1, keepdim=True), 1.0)


def named_set_gradient(
    batch: Batch, weights: Weights, x: torch.Tensor, member: torch.Tensor, named: torch.Tensor
) -> tuple[Weights, torch.Tensor]:
    """Where the named set's loss on the probes points: a direction in weight space and its token features.

    Each subject's probes ``x`` are labelled by its set ``named [B, V]`` (positive where a probe
    matches one of its patterns, ``member [R, V]``), as the zoo labels training data. The
    gradient of the mean BCE is taken in init-scale units (``v = w * sqrt(fan-in)``, where every
    weight starts alike) and divided by its RMS over the subject's weights, so the direction is
    O(1) however wrong the subject is; that RMS (log) and the loss join each token's statistics
    of its incoming, outgoing and bias gradient: ``[B, N, 13]``. Detached: an input, not a path
    for the repair loss.
    """
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (weights.w_in, weights.adj, weights.bias)]
        logits = subject_logits(batch, Weights(*leaves), x)
        labels = (named @ member.T > 0).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1)
        g_in, g_adj, g_bias = torch.autograd.grad(loss.sum(), leaves)
    scale = batch.fan_in.rsqrt() * batch.weight_mask  # dL/dv = dL/dw / sqrt(fan-in)
    first, edges = batch.first.to(scale.dtype), batch.edges.to(scale.dtype)
    g = Weights(g_in * (scale * first)[..., None], g_adj * scale[..., None] * edges, g_bias * scale)
    square = g.w_in.square().sum((1, 2)) + g.adj.square().sum((1, 2)) + g.bias.square().sum(-1)
    norm = (square / batch.n_weights.clamp_min(1)).sqrt().clamp_min(GRADIENT_FLOOR)
    direction = Weights(g.w_in / norm[:, None, None], g.adj / norm[:, None, None], g.bias / norm[:, None])
    ones = torch.ones_like(batch.fan_in)
    per_subject = torch.stack([norm.log(), loss.detach()], -1)[:, None, :].expand(-1, batch.mask.shape[1], -1)
    features = torch.cat([_token_stats(batch, direction, ones, ones), per_subject], -1)
    return direction, features * batch.weight_mask[..., None]


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.use_weights = config.use_weights
        if self.use_weights:
            self.ln_msg = nn.LayerNorm(d)
            self.msg_in = nn.Linear(d, d)
            self.msg_out = nn.Linear(d, d)
            self.msg_proj = nn.Linear(2 * d, d)
        self.ln_att = nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_ratio * d), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(config.mlp_ratio * d, d)
        )

    def forward(self, h: torch.Tensor, mask: torch.Tensor, adj: torch.Tensor | None, reads: torch.Tensor | None = None) -> torch.Tensor:
        """``reads [B, 1, 1]`` (None: every subject) gates the weight-graph messages to the subjects that have them."""
        if self.use_weights and adj is not None:
            x = self.ln_msg(h)
            incoming = torch.bmm(adj, self.msg_in(x))
            outgoing = torch.bmm(adj.transpose(1, 2), self.msg_out(x))
            message = self.msg_proj(torch.cat([incoming, outgoing], dim=-1))
            h = h + (message if reads is None else message * reads)
        x = self.ln_att(h)
        attended, _ = self.att(x, x, x, key_padding_mask=~mask, need_weights=False)
        h = h + attended
        return h + self.mlp(self.ln_mlp(h))


class NeuronKinds(nn.Module):
    """An embedding per neuron kind (``neurons.KINDS``) with the MLP's two kinds fixed at zero.

    The layer embedding already tells an MLP's hidden units from its output; the rows learned here
    are the other families' kinds (``ffn``, ``resid``, any other), which start at zero.
    """

    def __init__(self, d: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(len(KINDS) + 1 - N_FIXED_KINDS, d))

    def forward(self, batch: Batch) -> torch.Tensor | float:
        """``[B, N, d]``, or 0.0 for a batch with none but the MLP's kinds: the table then stays out of the graph
        (no gradient), so the optimizer and gradient clipping see what runs saw before kinds existed."""
        if batch.kind is None or not bool((batch.kind >= N_FIXED_KINDS).any()):
            return 0.0
        table = torch.cat([self.table.new_zeros(N_FIXED_KINDS, self.table.shape[1]), self.table])
        return table[batch.kind]


NEVER = -30.0  # the logit of a pattern the zoo never draws: finite, so BCE and softmax stay finite


class Interpreter(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        *,
        n_stats: int,
        n_patterns: int,
        in_features: int,
        columns: list[int] | None = None,
        none_column: int = -1,
        probe_inputs: torch.Tensor | None = None,
        probe_patterns: list[int] | None = None,
        probe_member: torch.Tensor | None = None,
        drawn: list[bool] | None = None,
    ):
        super().__init__()
        self.config = config
        # the patterns the zoo draws from: the interpreter never names another (not saved: it comes from the zoo)
        undrawn = torch.tensor([not d for d in drawn]) if drawn is not None else torch.zeros(n_patterns, dtype=torch.bool)
        self.register_buffer("undrawn", undrawn, persistent=False)
        self.n_stats, self.n_patterns, self.in_features = n_stats, n_patterns, in_features
        d, latent = config.width, config.latent
        self.register_buffer("sig_mean", torch.zeros(n_stats))
        self.register_buffer("sig_std", torch.ones(n_stats))
        self.sig_proj = nn.Linear(n_stats, d)
        self.pos_proj = nn.Linear(N_POSITION, d)
        self.layer_emb = nn.Embedding(config.max_layers + 1, d)  # hidden layer index; the last row: output
        self.act_emb = nn.Embedding(len(ACTIVATIONS) + 1, d) if config.use_activation else None
        if config.use_weights:
            self.in_proj = nn.Linear(in_features, d)
            self.wstat_proj = nn.Linear(N_WEIGHT_STATS, d)
        if config.probe_activations or config.answer_width or config.decoder_reads_gradient:
            if probe_inputs is None:
                raise InterpreterError(
                    "model.probe_activations, model.answer_width and model.decoder_reads_gradient need the zoo's "
                    "probe inputs (a run made by older code lacks them)"
                )
            self.register_buffer("probe_inputs", probe_inputs.float())
        if config.decoder_reads_gradient:
            if probe_member is None:
                raise InterpreterError(
                    "model.decoder_reads_gradient needs which patterns each probe matches (a run made by older code lacks it)"
                )
            self.register_buffer("probe_member", probe_member.float(), persistent=False)
        if config.probe_activations:
            self.probe_norm = nn.LayerNorm(probe_inputs.shape[0])
            self.probe_proj = nn.Linear(probe_inputs.shape[0], d)
        aw = config.answer_width
        if self.answers_per_pattern:
            if probe_patterns is None:
                raise InterpreterError(
                    "model.answer_reader per_pattern needs the zoo's probe labels (a run made by older code lacks them)"
                )
            self.answer_mlp = PatternAnswers(probe_patterns, n_patterns, aw, config.dropout)
        elif aw:
            self.register_buffer("answer_mean", torch.zeros(probe_inputs.shape[0]))
            self.register_buffer("answer_std", torch.ones(probe_inputs.shape[0]))
            self.answer_mlp = nn.Sequential(
                nn.Linear(probe_inputs.shape[0], aw), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(aw, aw), nn.GELU()
            )
        if aw:
            self.answer_latent = nn.Linear(aw, latent)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.ln_final = nn.LayerNorm(d)
        self.pool_query = nn.Linear(d, 1)
        self.to_latent = nn.Linear(3 * d, latent)
        self.ln_latent = nn.LayerNorm(latent)

        def head(out: int) -> nn.Module:
            return nn.Sequential(nn.Linear(latent, d), nn.GELU(), nn.Linear(d, out))

        self.reader = PatternReader(
            d, latent, n_patterns, columns or [-1] * n_patterns, none_column, config.dropout, aw, self.answers_per_pattern
        )
        self.pattern_head = nn.Linear(d, 1)
        self.corrupted_head = nn.Linear(d, 1)
        self.accuracy_head = head(1)
        # repair decoder
        dd, rank = config.decoder_width, config.decoder_rank
        self.dec_latent = nn.Linear(latent, d)
        self.dec_pattern = nn.Linear(n_patterns, d, bias=False) if config.decoder_reads_corrupted else None
        self.dec_edit = nn.Linear(latent, d, bias=False) if config.decoder_reads_edit else None
        self.dec_gradient = nn.Linear(N_GRADIENT_FEATURES, d) if config.decoder_reads_gradient else None
        self.dec_block = Block(config)
        # blocks past the first live apart, so checkpoints of one-block decoders load as they were saved
        self.dec_more = nn.ModuleList(Block(config) for _ in range(config.decoder_depth - 1))
        self.dec_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dd), nn.GELU(), nn.Linear(dd, dd), nn.GELU())
        self.dec_in = nn.Linear(dd, in_features)
        self.dec_bias = nn.Linear(dd, 1)
        self.dec_gate = nn.Linear(dd, 1)
        self.dec_p = nn.Linear(dd, rank)
        self.dec_q = nn.Linear(dd, rank)
        # per token, a step along the gradient for its input weights, incoming weights and bias
        self.dec_step = nn.Linear(dd, 3) if config.decoder_reads_gradient else None
        for layer in (self.dec_in, self.dec_bias, self.dec_gate, self.dec_q, self.dec_gradient, self.dec_step):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        if self.dec_edit is not None:
            nn.init.zeros_(self.dec_edit.weight)
        # created last, as a child module (its parameter comes last, after every earlier one, in the optimizer's
        # state of a run), at zero and drawing no random numbers: an MLP zoo's run trains as before kinds existed
        self.kinds = NeuronKinds(d)

    def weight_gate(self, batch: Batch) -> torch.Tensor | None:
        """``[B, 1, 1]`` 1 where the subject's family has the token-space reader; None when all have it."""
        reads = batch.reads_weights
        return None if bool(reads.all()) else reads.to(batch.signature.dtype)[:, None, None]

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """``load_state_dict`` that reads checkpoints made before ``kinds`` existed (it stays at zero)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"kinds.table"}:
            self.load_state_dict(state)  # raises with torch's own message

    # ------------------------------------------------------------ encoder and heads

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.sig_mean.copy_(mean)
        self.sig_std.copy_(std.clamp_min(1e-3))

    def set_answer_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.answer_mean.copy_(mean)
        self.answer_std.copy_(std.clamp_min(1e-3))

    def probe_values(self, batch: Batch) -> torch.Tensor | None:
        """Every neuron's value on every probe ``[B, R, N]`` (None when no part of the model reads them)."""
        if not (self.config.probe_activations or self.config.answer_width):
            return None
        values = subject_values(batch, batch.degraded, self.probe_inputs)
        if batch.site_values is None:
            return values
        return torch.where(batch.reads_weights[:, None, None], values, batch.site_values)

    @staticmethod
    def answers(batch: Batch, values: torch.Tensor) -> torch.Tensor:
        """asinh of the output logit on every probe ``[B, R]``, from ``probe_values``."""
        return torch.asinh(output_values(batch, values))

    @property
    def answers_per_pattern(self) -> bool:
        return bool(self.config.answer_width) and self.config.answer_reader == "per_pattern"

    def read_answers(self, batch: Batch, values: torch.Tensor | None) -> torch.Tensor | None:
        """The answer reader's features: ``[B, answer_width]`` jointly, ``[B, P, answer_width]`` per pattern."""
        if not self.config.answer_width:
            return None
        if self.answers_per_pattern:
            return self.answer_mlp(self.answers(batch, values))
        return self.answer_mlp((self.answers(batch, values) - self.answer_mean) / self.answer_std)

    def normalized_signature(self, batch: Batch) -> torch.Tensor:
        return (torch.asinh(batch.signature) - self.sig_mean) / self.sig_std * batch.mask[..., None]

    def embed(self, batch: Batch, values: torch.Tensor | None) -> torch.Tensor:
        sig = self.normalized_signature(batch)
        h = self.sig_proj(sig) + self.pos_proj(position_features(batch))
        hidden_index = batch.layer.clamp(0, self.config.max_layers - 1)
        index = torch.where(batch.output, self.config.max_layers, hidden_index)
        h = h + self.layer_emb(index) + self.kinds(batch)
        if self.act_emb is not None:
            act = torch.where(batch.activation < 0, len(ACTIVATIONS), batch.activation)
            h = h + self.act_emb(act)[:, None, :]
        if self.config.use_weights:
            w = batch.degraded
            scaled_in = w.w_in * batch.fan_in.sqrt()[..., None] * batch.first[..., None]
            read_in, read_stats = self.in_proj(scaled_in), self.wstat_proj(weight_features(batch, w))
            gate = self.weight_gate(batch)
            # an MLP-only batch adds them as runs before families did (same order: bit-identical runs)
            h = h + read_in + read_stats if gate is None else h + (read_in + read_stats) * gate
        if self.config.probe_activations:
            h = h + self.probe_proj(self.probe_norm(torch.asinh(values).transpose(1, 2)))
        return h * batch.mask[..., None]

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Token states ``[B, N, d]``, the latent ``[B, latent]`` and the answer reader's features."""
        adj = batch.degraded.adj if self.config.use_weights else None
        values = self.probe_values(batch)
        h = self.embed(batch, values)
        gate = self.weight_gate(batch)
        for block in self.blocks:
            h = block(h, batch.mask, adj, gate)
        x = self.ln_final(h)
        mask = batch.mask
        scores = self.pool_query(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        pooled = torch.einsum("bn,bnd->bd", attn, x)
        mean = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        out_token = (x * batch.output[..., None]).sum(1)  # the output logit's token: unique, so order-free
        latent = self.to_latent(torch.cat([pooled, mean, out_token], dim=-1))
        answers = self.read_answers(batch, values)
        if answers is not None:
            latent = latent + self.answer_latent(answers.mean(1) if self.answers_per_pattern else answers)
        return x, latent, answers

    def heads(
        self, batch: Batch, tokens: torch.Tensor, latent: torch.Tensor, answers: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pattern-set logits, corrupted-pattern logits and accuracy from token states, a latent and the
        answer reader's features."""
        z = self.ln_latent(latent)
        states = self.reader(tokens, self.normalized_signature(batch), batch, z, answers)
        return (
            self.pattern_head(states).squeeze(-1).masked_fill(self.undrawn, NEVER),
            self.corrupted_head(states).squeeze(-1).masked_fill(self.undrawn, NEVER),
            torch.sigmoid(self.accuracy_head(z).squeeze(-1)),
        )

    def forward(self, batch: Batch) -> Output:
        tokens, latent, answers = self.encode(batch)
        patterns, corrupted, accuracy = self.heads(batch, tokens, latent, answers)
        return Output(latent, tokens, patterns, corrupted, accuracy, answers)

    # ------------------------------------------------------------ repair decoder

    def decode(self, batch: Batch, out: Output, latent: torch.Tensor | None = None, named: torch.Tensor | None = None) -> Weights:
        """The change to the degraded weights (token space) that should make the clean model.

        ``latent`` overrides the encoder's (edits); with ``decoder_reads_edit`` the decoder also reads
        the move itself (``latent`` less the encoder's), which is zero for a plain repair. The
        corrupted-pattern distribution enters detached: the repair loss should not bend the head
        that names the pattern. With ``decoder_reads_gradient`` it reads, and steps along, the
        gradient of set ``named``'s loss (``[B, V]``; default: the set the heads name).
        """
        adj = batch.degraded.adj if self.config.use_weights else None
        moved = out.latent if latent is None else latent
        h = out.tokens + self.dec_latent(self.ln_latent(moved))[:, None, :]
        if self.dec_edit is not None and latent is not None:
            h = h + self.dec_edit(moved - out.latent)[:, None, :]
        if self.dec_pattern is not None:
            h = h + self.dec_pattern(torch.softmax(out.corrupted.detach(), dim=-1))[:, None, :]
        if self.dec_gradient is not None:
            named = named_sets(out) if named is None else named
            direction, features = named_set_gradient(batch, batch.degraded, self.probe_inputs, self.probe_member, named)
            h = h + self.dec_gradient(features)
        gate = self.weight_gate(batch)
        for block in (self.dec_block, *self.dec_more):
            h = block(h, batch.mask, adj, gate)
        u = self.dec_mlp(h)
        scale = batch.fan_in.rsqrt() * batch.weight_mask  # no change where the family has no token space
        first = batch.first.to(u.dtype)
        d_in = self.dec_in(u) * (scale * first)[..., None]
        d_bias = self.dec_bias(u).squeeze(-1) * scale
        p, q = self.dec_p(u), self.dec_q(u)
        low_rank = torch.bmm(p, q.transpose(1, 2)) / math.sqrt(p.shape[-1])
        gate = self.dec_gate(u)  # [B, N, 1]: rescales the token's incoming weights
        d_adj = (low_rank * scale[..., None] + gate * batch.degraded.adj) * batch.edges
        if self.dec_step is not None:  # descend: the direction is the loss's gradient, masked like the weights
            step = self.dec_step(u) * scale[..., None]
            d_in = d_in - step[..., :1] * direction.w_in
            d_adj = d_adj - step[..., 1:2] * direction.adj
            d_bias = d_bias - step[..., 2] * direction.bias
        return Weights(d_in, d_adj, d_bias)

    def repair(
        self, batch: Batch, out: Output | None = None, latent: torch.Tensor | None = None, named: torch.Tensor | None = None
    ) -> Weights:
        """Decoded (repaired) weights in token space; ``latent`` overrides the encoder's (an edit: one pass,
        toward set ``named`` where the decoder reads a gradient; None: each pass reads the set its heads name).

        With ``decoder_passes`` > 1 each further pass encodes the subject as the last pass left it and
        decodes a further change: it sees what the previous change did to the weights, the probe values
        and the answers (the stored signature stays the degraded model's: it is not recomputed).
        """
        out = self(batch) if out is None else out
        repaired = batch.degraded + self.decode(batch, out, latent, named)
        if latent is None:
            for _ in range(self.config.decoder_passes - 1):
                now = replace(batch, degraded=repaired)
                repaired = repaired + self.decode(now, self(now), named=named)
        return repaired
