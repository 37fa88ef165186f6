"""Settings of the interpreter, as pydantic models (``configs/readers/interpreter.yaml``).

Same conventions as ``zoo.config``: unknown keys are errors, instances are frozen,
``load_config(path, InterpreterConfig)`` turns any problem into one line naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from zoo.config import Strict, load_or_default

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "readers" / "interpreter.yaml"


class ModelConfig(Strict):
    """The encoder over neuron tokens, its heads and the repair decoder."""

    width: int = Field(64, ge=8, description="token embedding size")
    depth: int = Field(2, ge=1, description="encoder blocks (weight-graph messages + self-attention + MLP)")
    heads: int = Field(4, ge=1)
    latent: int = Field(32, ge=2, description="size of the pooled model latent the heads and the decoder read")
    mlp_ratio: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
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
        0,
        ge=0,
        description="width of the answer reader, which reads the output neuron's answers on the probe set (what the "
        "output-only baseline reads) into each pattern's state and the latent; 0: none (runs made before it existed)",
    )
    answer_reader: Literal["joint", "per_pattern"] = Field(
        "joint",
        description="joint: one MLP over all probes' answers (knows which probe is which, so it learns which patterns "
        "go together); per_pattern: each pattern's own probes, the negatives and the mean over patterns, read by "
        "weights shared across patterns (what it learns of one pattern transfers to the others and to unseen sets); "
        "the default is joint because runs made before the choice existed read jointly",
    )
    decoder_width: int = Field(64, ge=8)
    decoder_rank: int = Field(32, ge=1, description="rank of the low-rank edge term of the weight decoder")
    decoder_depth: int = Field(
        1, ge=1, description="decoder blocks (weight-graph messages + self-attention + MLP) before it writes the change"
    )
    decoder_passes: int = Field(
        1,
        ge=1,
        description="repair passes with the same weights: each pass after the first re-reads the subject as the last "
        "left it (its weights, probe values and answers) and adds a further change",
    )
    decoder_reads_corrupted: bool = Field(
        False,
        description="the decoder also reads the corrupted-pattern head's distribution, so it is told what to restore",
    )
    decoder_reads_edit: bool = Field(
        False,
        description="the decoder also reads an edit's move of the latent (zero for a repair), so edits need not pass "
        "through the latent's normalization; false in runs made before it existed",
    )
    decoder_reads_gradient: bool = Field(
        False,
        description="the decoder also reads the gradient of the named set's loss on the probe set at the subject's "
        "weights (order-free statistics per neuron) and takes a learned step along it per neuron: what refinement "
        "trains on, in one step; false in runs made before it existed",
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
    repair_weights: float = Field(0.01, ge=0.0, description="decoded vs clean weights, MSE in init-scale units")
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
        "in the functional repair loss, so restoring it is not bought with its hard negatives; 0 in runs made "
        "before it existed",
    )
    edit: float = Field(
        0.0,
        ge=0.0,
        description="the decoder, given a latent moved along a pattern's direction, makes a model that answers the "
        "moved set (BCE on the repair inputs); 0: off, as in runs made before it existed, whose edits barely move",
    )


class OptimizerConfig(Strict):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(1.0, ge=0.0, description="max gradient norm; 0 turns clipping off")


class DataConfig(Strict):
    cache: bool = Field(True, description="keep decoded records in memory after the first pass (else re-stream)")
    shuffle_buffer: int = Field(2048, ge=1, description="rows shuffled together when streaming")
    read_rows: int = Field(256, ge=1, description="rows per Arrow record batch read from a shard")
    repair_per_pattern: int = Field(16, ge=1, description="repair inputs drawn from each library pattern")
    repair_random: int = Field(64, ge=0, description="uniformly random repair inputs")
    repair_near_misses: int = Field(
        8, ge=0, description="repair inputs per library pattern with one token changed (near misses, as hard negatives)"
    )
    repair_fresh: bool = Field(
        False,
        description="draw new repair inputs every training step (from the run seed and the step), so the decoder "
        "learns to write the patterns, not to answer one fixed set of sequences; validation keeps the fixed set. "
        "False in runs made before it existed",
    )
    train_split: str = "train"
    val_split: str = "validation"


class BaselineConfig(Strict):
    """The small classifiers of the weight-statistics and output-only baselines."""

    hidden: int = Field(128, ge=1)
    epochs: int = Field(400, ge=1, description="full-batch steps")
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1e-3, ge=0.0)
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
    seed: int = Field(0, ge=0)
    # the cosine schedule spans the run; the pattern heads and the decoder each keep their best
    # epoch (best.safetensors, best_repair.safetensors), so a longer run costs time, not overfitting:
    # on a 6,000-batch zoo 20 epochs beat 12 on held-out batches and widths, and matched it on
    # unseen pattern pairs (README)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
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
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    data: DataConfig = DataConfig()
    baselines: BaselineConfig = BaselineConfig()
    refine: RefineConfig = RefineConfig()

    @model_validator(mode="after")
    def _edit_input_is_trained(self) -> InterpreterConfig:
        if self.model.decoder_reads_edit and not self.loss.edit:
            raise ValueError("model.decoder_reads_edit: only loss.edit trains the edit input; set loss.edit > 0 or turn it off")
        return self


def load_interpreter_config(path: str | Path | None = None, overrides: dict | None = None) -> InterpreterConfig:
    """The config at ``path`` (default: ``configs/readers/interpreter.yaml``, else the built-in defaults)."""
    return load_or_default(path, DEFAULT_CONFIG, InterpreterConfig, overrides)  # type: ignore[return-value]
