"""Settings of the interpreter, as pydantic models (``configs/readers/interpreter.yaml``).

Same conventions as ``zoo.config``: unknown keys are errors, instances are frozen,
``load_config(path, InterpreterConfig)`` turns any problem into one line naming the field.

The defaults are the shipped recipe's values (``configs/readers/interpreter.yaml`` writes them
out). A run folder records the run version it was made at (``config.json``'s ``version``); a
run made before a default changed is read with the default it was made with, from the one
table ``DEFAULTS_BEFORE`` (``migrate_run_config``), so it resumes and evaluates as it trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from zoo.config import DEVICE_HELP, Device, Strict, load_or_default, shipped_config

DEFAULT_CONFIG = shipped_config("readers/interpreter.yaml")


class ModelConfig(Strict):
    """The encoder over neuron tokens, its heads and the repair decoder."""

    width: int = Field(64, ge=8, description="token embedding size")
    depth: int = Field(2, ge=1, description="encoder blocks (weight-graph messages + self-attention + MLP)")
    heads: int = Field(4, ge=1, description="attention heads of every encoder block (they must divide width)")
    latent: int = Field(32, ge=2, description="size of the pooled model latent read by the heads, the decoder and edits")
    mlp_ratio: int = Field(2, ge=1, description="hidden size of each block's MLP, as a multiple of width")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout probability in the encoder, the answer reader and the heads")
    use_weights: bool = Field(
        True,
        description="tokens carry their incoming weights, and blocks pass messages along the weight graph",
    )
    use_activation: bool = Field(True, description="tokens carry the subject's activation function")
    probe_activations: bool = Field(
        True,
        description="tokens carry the neuron's value on every probe of the zoo's probe set (computed from the "
        "weights: the signature before it is summarized)",
    )
    answer_width: int = Field(
        128,
        ge=0,
        description="width of the answer reader, which reads the output neuron's answers on the probe set (what the "
        "output-only baseline reads) into each pattern's state and the latent; 0: none (the default of runs before "
        "run version 2)",
    )
    answer_reader: Literal["joint", "per_pattern"] = Field(
        "per_pattern",
        description="per_pattern: each pattern's own probes, the negatives and the mean over patterns, read by weights "
        "shared across patterns (what it learns of one pattern transfers to the others and to unseen sets: it holds "
        "on unseen pattern pairs); joint: one MLP over all probes' answers (knows which probe is which, so it learns "
        "which patterns go together: +0.8 exact match on held-out batches, -13 on unseen pairs, docs/results); joint is the "
        "default of runs before run version 2",
    )
    decoder_width: int = Field(64, ge=8, description="token width of the repair decoder")
    decoder_rank: int = Field(32, ge=1, description="rank of the low-rank edge term of the weight decoder")
    decoder_depth: int = Field(
        1,
        ge=1,
        description="decoder blocks (weight-graph messages + self-attention + MLP) before it writes the change; "
        "2 reached the same repair loss (docs/results)",
    )
    decoder_passes: int = Field(
        1,
        ge=1,
        description="repair passes with the same weights: each pass after the first re-reads the subject as the last "
        "left it (its weights, probe values and answers) and adds a further change",
    )
    decoder_reads_corrupted: bool = Field(
        False,
        description="the decoder also reads the corrupted-pattern head's distribution, so it is told what to restore "
        "(a wash: docs/results)",
    )
    decoder_reads_edit: bool = Field(
        False,
        description="the decoder also reads an edit's move of the latent (zero for a repair), so edits need not pass "
        "through the latent's normalization; false in runs made before it existed",
    )
    decoder_reads_gradient: bool = Field(
        True,
        description="the decoder also reads the gradient of the named set's loss on the probe set at the subject's "
        "weights (order-free statistics per neuron) and takes a learned step along it per neuron: what refinement "
        "trains on, in one step (restores 0.708 / 0.704 against 0.691 / 0.678 without: docs/results); false is the "
        "default of runs before run version 2",
    )
    max_layers: int = Field(8, ge=1, description="deepest subject (hidden layers) the layer embedding covers")

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.width % self.heads:
            raise ValueError(f"heads: {self.heads} does not divide width {self.width}")
        return self


class LossConfig(Strict):
    """Weights of the loss terms; a zero weight switches a term off."""

    patterns: float = Field(1.0, ge=0.0, description="pattern set, multi-label BCE")
    corrupted: float = Field(1.0, ge=0.0, description="corrupted pattern, cross-entropy")
    accuracy: float = Field(1.0, ge=0.0, description="the degraded model's benchmark accuracy, MSE x 10")
    repair_weights: float = Field(
        0.01, ge=0.0, description="decoded vs clean weights, MSE in init-scale units (small: clean and degraded differ a lot)"
    )
    repair_function: float = Field(
        1.0, ge=0.0, description="decoded model's outputs vs the clean model's on the repair inputs (soft BCE)"
    )
    corrupted_emphasis: float = Field(
        4.0, ge=0.0, description="extra weight of the corrupted (or edited) pattern's sequences in the functional losses"
    )
    near_miss_emphasis: float = Field(
        0.0,
        ge=0.0,
        description="extra weight of the corrupted pattern's near misses (one token from its sequences, outside it) "
        "in the functional repair loss, so restoring it is not bought with its hard negatives (4: negatives +1 "
        "point, restored -0.8: docs/results); 0 in runs made before it existed",
    )
    edit: float = Field(
        0.0,
        ge=0.0,
        description="the decoder, given a latent moved along a pattern's direction, makes a model that answers the "
        "moved set (BCE on the repair inputs; for `zoo interpret edit`); 0: off, as in runs made before it existed, "
        "whose edits barely move (on 1,016 records it cost repair 0.61 -> 0.38: docs/results)",
    )


class OptimizerConfig(Strict):
    """The interpreter's optimizer and learning-rate schedule (per optimizer step)."""

    name: Literal["adamw"] = Field("adamw", description="the optimizer: AdamW (decoupled weight decay)")
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate, reached after the warmup")
    weight_decay: float = Field(0.05, ge=0.0, description="AdamW's decoupled weight decay")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="decay rate of the gradient's running mean")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="decay rate of the squared gradient's running mean")
    warmup_steps: int = Field(50, ge=0, description="optimizer steps of linear warmup from 0 to lr")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after the warmup: cosine decay to 5% of lr at the run's last step, or constant"
    )
    grad_clip: float = Field(1.0, ge=0.0, description="max gradient norm; 0 turns clipping off")


class DataConfig(Strict):
    """How records are read, and the repair inputs the functional losses are measured on."""

    cache: bool = Field(True, description="keep decoded records in memory after the first streamed pass (else re-stream)")
    shuffle_buffer: int = Field(2048, ge=1, description="rows shuffled together when streaming")
    read_rows: int = Field(256, ge=1, description="rows per Arrow record batch read from a shard")
    repair_per_pattern: int = Field(16, ge=1, description="repair inputs drawn from each library pattern")
    repair_random: int = Field(64, ge=0, description="uniformly random repair inputs")
    repair_near_misses: int = Field(
        8, ge=0, description="repair inputs per library pattern with one token changed (near misses, as hard negatives)"
    )
    repair_fresh: bool = Field(
        True,
        description="draw new repair inputs every training step (from the run seed and the step), so the decoder "
        "learns to write the patterns, not to answer one fixed set of sequences (within a point of the fixed set: "
        "docs/results); validation keeps the fixed set. False is the default of runs before run version 2",
    )
    train_split: str = Field("train", description="the zoo split (`zoo split`) the interpreter trains on")
    val_split: str = Field(
        "validation",
        description="the split that picks the best checkpoints and the set threshold (without records: the training loss picks)",
    )


class BaselineConfig(Strict):
    """The small classifiers of the weight-statistics and output-only baselines."""

    hidden: int = Field(128, ge=1, description="hidden units of each baseline's two-layer MLP")
    epochs: int = Field(400, ge=1, description="full-batch steps")
    lr: float = Field(3e-3, gt=0.0, description="AdamW learning rate of the baselines")
    weight_decay: float = Field(1e-3, ge=0.0, description="AdamW's decoupled weight decay of the baselines")
    ensemble_weight: float = Field(
        0.5, ge=0.0, le=1.0,
        description="the interpreter's share when its probabilities are averaged with the output-only baseline's "
        "(the report's 'interpreter+output_only' row); at 0.5, where both are sure and disagree, the surer one "
        "decides (chosen on validation of the 12,000-batch run: README)",
    )


class RefineConfig(Strict):
    """Evaluation only: repair refined by training on the data the zoo makes for the named pattern set
    (``zoo.readers.interpreter.refine``)."""

    epochs: int = Field(10, ge=0, description="epochs of refinement; 0 reports the decoder alone")
    train_size: int | None = Field(
        None, ge=1, description="training sequences per model, none from its benchmark set; None: the zoo's train_size"
    )
    lr_scale: float = Field(1.0, gt=0.0, description="multiple of the learning rate the subject was trained with")


class InterpreterConfig(Strict):
    """The interpreter: what it reads of a subject, how it is trained, and how it is evaluated."""

    seed: int = Field(0, ge=0, description="seed of the initialization, the data order and the fresh repair inputs")
    epochs: int = Field(
        20,
        ge=1,
        description="passes over the training split; the cosine schedule spans the run and the pattern heads and the "
        "decoder each keep their best epoch (best.safetensors, best_repair.safetensors), so a longer run costs time, "
        "not overfitting (on a 6,000-batch zoo 20 beat 12 on held-out batches and widths: docs/results)",
    )
    batch_size: int = Field(16, ge=1, description="records (degraded subjects) per training step")
    eval_batch_size: int = Field(64, ge=1, description="records per forward pass in validation and evaluation")
    device: Device = Field("auto", description=DEVICE_HELP)
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None keeps torch's default")
    select: Literal["exact_match", "loss"] = Field(
        "exact_match",
        description="what makes best.safetensors: the highest validation exact match at the set threshold "
        "evaluation will use (ties: the lower loss), or the lowest validation loss (training loss without a "
        "validation split); the repair terms make the loss rise once the decoder overfits while the pattern "
        "heads still improve. May change when a run resumes: the choice then starts afresh",
    )
    set_threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="the probability above which a pattern joins a predicted set (the corrupted "
        "head's pattern always does); None: chosen per reader (interpreter, baselines, ensemble) on the "
        "validation split from metrics.THRESHOLDS (in training: each epoch's validation exact match)",
    )
    model: ModelConfig = Field(ModelConfig(), description="the encoder over neuron tokens, its heads and the repair decoder")
    loss: LossConfig = Field(LossConfig(), description="weights of the loss terms")
    optimizer: OptimizerConfig = Field(OptimizerConfig(), description="optimizer and learning-rate schedule")
    data: DataConfig = Field(DataConfig(), description="reading records, and the repair inputs")
    baselines: BaselineConfig = Field(
        BaselineConfig(), description="the weight-statistics and output-only baselines evaluation compares against"
    )
    refine: RefineConfig = Field(RefineConfig(), description="evaluation only: repair refined by training on the named set")

    @model_validator(mode="after")
    def _edit_input_is_trained(self) -> InterpreterConfig:
        if self.model.decoder_reads_edit and not self.loss.edit:
            raise ValueError("model.decoder_reads_edit: only loss.edit trains the edit input; set loss.edit > 0 or turn it off")
        return self


DEFAULTS_BEFORE: dict[int, dict[str, object]] = {
    # run version 2: the defaults became the shipped recipe's values (configs/readers/interpreter.yaml)
    2: {
        "model.answer_width": 0,
        "model.answer_reader": "joint",
        "model.decoder_reads_gradient": False,
        "data.repair_fresh": False,
    },
}
"""Run version -> every field whose default changed in that version, with its default before it.

The one table of changed defaults: a run made at an older version and silent on a field (its
config.json predates the field) is read with the default it was trained with. Adding a row
here and bumping ``zoo.readers.interpreter.train.RUN_VERSION`` is how a default changes."""


def migrate_run_config(data: dict, version: int) -> dict:
    """A run's saved interpreter config (``config.json``'s ``interpreter``, made at run version
    ``version``) as this code must read it: every field whose default changed after ``version``
    and that the run does not set, at the default the run was made with. Returns a new mapping."""
    out = json.loads(json.dumps(data))  # a deep copy of plain JSON
    for changed_in, old in sorted(DEFAULTS_BEFORE.items()):
        if version >= changed_in:
            continue
        for dotted, value in old.items():
            *parents, leaf = dotted.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node.setdefault(leaf, value)
    return out


def load_interpreter_config(path: str | Path | None = None, overrides: dict | None = None) -> InterpreterConfig:
    """The config at ``path`` (default: ``configs/readers/interpreter.yaml``, else the built-in defaults)."""
    return load_or_default(path, DEFAULT_CONFIG, InterpreterConfig, overrides)  # type: ignore[return-value]
