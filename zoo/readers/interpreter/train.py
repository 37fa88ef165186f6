"""Training the interpreter: the loop, its losses, checkpoints and resume.

A run folder holds ``config.json`` (the interpreter config and what it read: zoo id,
pattern vocabulary, signature columns), ``last.safetensors`` (model and optimizer
state, written atomically after every epoch), ``state.json`` (epoch, step, history),
``best.safetensors`` (the model the ``select`` criterion chose: the pattern heads'
checkpoint) and ``best_repair.safetensors`` (the lowest validation functional repair
loss: the decoder keeps improving after the pattern heads overfit). Rerunning
``train`` on the same folder resumes after the last finished epoch; the learning-rate
schedule and the data order are functions of the step and epoch, so a resumed run
continues as the uninterrupted one would have.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from zoo.atomic import atomic_path
from zoo.config import format_validation_error
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.config import InterpreterConfig, migrate_run_config
from zoo.readers.interpreter.data import (
    Batch,
    Example,
    SplitData,
    Weights,
    ZooSource,
    collate,
    dump_json,
    from_tokens,
    one_hot,
    open_source,
    repair_inputs,
)
from zoo.readers.interpreter.directions import LatentMeans, edited_sets, sample_edits
from zoo.readers.interpreter.metrics import SetSpace, choose_threshold, exact_match, macro_f1, mae, read_sets, top1
from zoo.readers.interpreter.model import Interpreter, Output, pattern_columns, subject_logits
from zoo.runtime import resolve_device, torch_threads

RUN_VERSION = 2  # 2: the config's defaults became the shipped recipe's (config.DEFAULTS_BEFORE reads older runs)
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
REPAIR_FILE = "best_repair.safetensors"
CHECKPOINTS = {"best": BEST_FILE, "repair": REPAIR_FILE, "last": LAST_FILE}

EpochHook = Callable[[int, dict, Path], None]
OBJECTIVE_TERMS = ("patterns", "corrupted", "accuracy", "repair_function")
# may change when a run resumes: runtime settings, and what only evaluation uses
RUNTIME_FIELDS = ("device", "threads", "eval_batch_size", "select", "set_threshold", "baselines", "refine")


# ---------------------------------------------------------------- losses


@dataclass
class RepairInputs:
    """Inputs of the functional repair loss: one-hot ``x [R, D]``, membership and nearness ``[R, V]``
    (``data.repair_inputs``)."""

    x: torch.Tensor
    member: torch.Tensor
    near: torch.Tensor

    @classmethod
    def build(
        cls, source: ZooSource, config: InterpreterConfig, device: torch.device, step: int | None = None
    ) -> RepairInputs:
        """The fixed set (``step`` None), or training step ``step``'s own draw."""
        data = config.data
        seed = config.seed if step is None else (config.seed, step)
        tokens, member, near = repair_inputs(
            source.config, data.repair_per_pattern, data.repair_random, seed, data.repair_near_misses
        )
        x = one_hot(tokens, source.config.patterns.vocab_size)
        return cls(x.to(device), torch.from_numpy(member).to(device), torch.from_numpy(near).to(device))


def weight_loss(batch: Batch, delta: Weights) -> torch.Tensor:
    """MSE between the decoded and the true change (clean - degraded), in init-scale units."""
    scale = batch.fan_in.sqrt()
    first = batch.first[..., None].to(scale.dtype)
    edges = batch.edges.to(scale.dtype)
    mask = batch.mask.to(scale.dtype)
    err_in = ((delta.w_in - (batch.clean.w_in - batch.degraded.w_in)) * scale[..., None]).square() * first
    err_adj = ((delta.adj - (batch.clean.adj - batch.degraded.adj)) * scale[..., None]).square() * edges
    err_b = ((delta.bias - (batch.clean.bias - batch.degraded.bias)) * scale).square() * mask
    return (err_in.sum() + err_adj.sum() + err_b.sum()) / batch.n_weights.sum().clamp_min(1)


def function_loss(
    batch: Batch, repaired: Weights, inputs: RepairInputs, emphasis: float, near_emphasis: float = 0.0
) -> torch.Tensor:
    """Soft BCE of the repaired model's outputs against the clean model's, less the clean entropy (0 at a perfect
    repair); the corrupted pattern's sequences weigh ``1 + emphasis``, its near misses ``1 + near_emphasis``."""
    with torch.no_grad():
        target_logits = subject_logits(batch, batch.clean, inputs.x)
        target = torch.sigmoid(target_logits)
        floor = F.binary_cross_entropy_with_logits(target_logits, target, reduction="none")
        weight = 1.0 + emphasis * inputs.member[:, batch.corrupted].T + near_emphasis * inputs.near[:, batch.corrupted].T
    pred = subject_logits(batch, repaired, inputs.x)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") - floor
    return (loss * weight).sum() / weight.sum()


@dataclass
class Edits:
    """What the edit term draws on: the latent means its directions come from, and the generator of its edits."""

    means: LatentMeans
    generator: torch.Generator


def edit_loss(model: Interpreter, batch: Batch, out: Output, inputs: RepairInputs, edits: Edits, emphasis: float) -> torch.Tensor | None:
    """BCE of the model decoded from a latent moved along one pattern's direction, against the moved set's labels.

    Each model adds a pattern it lacks or removes one it has (``sample_edits``); the labels on the
    repair inputs are those of the edited set (a sequence is positive when it matches one of its
    patterns), the edited pattern's sequences weigh ``1 + emphasis``. Token states and the latent
    enter detached: edits teach the decoder to follow the directions, not the encoder to make them
    (the latent's normalization, shared with the heads, does learn from them). None while no
    pattern has been seen both with and without.
    """
    directions, known = edits.means.directions()
    if not bool(known.any()):
        return None
    pattern, sign = sample_edits(batch.targets, known & ~model.undrawn, edits.generator)
    pattern, sign = pattern.to(out.latent.device), sign.to(out.latent.device)
    moved = out.latent.detach() + sign[:, None] * directions[pattern]
    frozen = replace(out, latent=out.latent.detach(), tokens=out.tokens.detach(), corrupted=out.corrupted.detach())
    asked = edited_sets(batch.targets, pattern, sign).to(moved.dtype)
    edited = batch.degraded + model.decode(batch, frozen, moved, asked)
    labels = (asked @ inputs.member.T > 0).to(moved.dtype)
    weight = 1.0 + emphasis * inputs.member[:, pattern].T * (sign != 0).to(moved.dtype)[:, None]
    loss = F.binary_cross_entropy_with_logits(subject_logits(batch, edited, inputs.x), labels, reduction="none")
    return (loss * weight).sum() / weight.sum()


def losses(
    model: Interpreter,
    batch: Batch,
    config: InterpreterConfig,
    inputs: RepairInputs,
    *,
    every_term: bool = False,
    edits: Edits | None = None,
) -> tuple[torch.Tensor, dict[str, float], Output]:
    """Total loss, its terms and the heads' outputs.

    Terms with weight 0 are skipped unless ``every_term`` (evaluation reports them all); the
    edit term needs ``edits``.
    """
    w = config.loss
    out = model(batch)
    terms: dict[str, torch.Tensor] = {}
    if w.patterns or every_term:
        terms["patterns"] = F.binary_cross_entropy_with_logits(out.patterns, batch.targets)
    if w.corrupted or every_term:
        terms["corrupted"] = F.cross_entropy(out.corrupted, batch.corrupted)
    if w.accuracy or every_term:
        terms["accuracy"] = 10.0 * F.mse_loss(out.accuracy, batch.accuracy)
    if w.repair_weights or w.repair_function or every_term:
        repaired = model.repair(batch, out)
        if w.repair_weights or every_term:
            terms["repair_weights"] = weight_loss(batch, repaired - batch.degraded)
        if w.repair_function or every_term:
            terms["repair_function"] = function_loss(batch, repaired, inputs, w.corrupted_emphasis, w.near_miss_emphasis)
    if edits is not None and (w.edit or every_term):
        term = edit_loss(model, batch, out, inputs, edits, w.corrupted_emphasis)
        if term is not None:
            terms["edit"] = term
    weights = {
        "patterns": w.patterns,
        "corrupted": w.corrupted,
        "accuracy": w.accuracy,
        "repair_weights": w.repair_weights,
        "repair_function": w.repair_function,
        "edit": w.edit,
    }
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}, out


# ---------------------------------------------------------------- inference


@dataclass
class Predictions:
    """Everything the interpreter says about a list of examples (numpy, in example order)."""

    examples: list[Example]
    pattern_probs: np.ndarray  # [n, V]
    corrupted_logits: np.ndarray  # [n, V]
    accuracy: np.ndarray  # [n]
    latent: np.ndarray  # [n, latent]
    repaired: list[np.ndarray] | None  # flat weights per example

    def pattern_sets(self, threshold: float = 0.5, space: SetSpace | None = None) -> np.ndarray:
        return read_sets(self.pattern_probs, self.corrupted_logits, threshold, space)

    @property
    def targets(self) -> np.ndarray:
        return np.stack([e.targets for e in self.examples]) if self.examples else np.zeros((0, self.pattern_probs.shape[1]))


def predict(
    model: Interpreter,
    batches,
    device: torch.device,
    *,
    repair: bool = False,
) -> Predictions:
    """Run the interpreter over ``(examples, batch)`` pairs (as ``SplitData.batches`` yields)."""
    model.eval()
    examples: list[Example] = []
    probs, corrupted, accuracy, latents, repaired = [], [], [], [], []
    with torch.no_grad():
        for chunk, batch in batches:
            batch = batch.to(device)
            out = model(batch)
            examples.extend(chunk)
            probs.append(torch.sigmoid(out.patterns).cpu().numpy())
            corrupted.append(out.corrupted.cpu().numpy())
            accuracy.append(out.accuracy.cpu().numpy())
            latents.append(out.latent.cpu().numpy())
            if repair:
                weights = model.repair(batch, out)
                repaired.extend(from_tokens(weights, [e.architecture for e in chunk]))

    def cat(parts: list[np.ndarray], width: int) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)

    v = model.n_patterns
    return Predictions(
        examples,
        cat(probs, v),
        cat(corrupted, v),
        np.concatenate(accuracy) if accuracy else np.zeros(0, dtype=np.float32),
        cat(latents, model.config.latent),
        repaired if repair else None,
    )


def quick_metrics(
    pred: Predictions, names: tuple[str, ...], threshold: float | None = None, space: SetSpace | None = None
) -> dict[str, float]:
    """Set figures at ``threshold``, or (None) at the one evaluation would choose on these predictions,
    sets brought into the zoo's ``space`` as evaluation does.

    Training selects ``best.safetensors`` on validation this way, so the checkpoint kept is
    the best at the set threshold the report will use, not at 0.5.
    """
    if not pred.examples:
        return {}
    truth = pred.targets
    if threshold is None:
        threshold = choose_threshold(pred.pattern_probs, pred.corrupted_logits, truth, space=space)
    sets = pred.pattern_sets(threshold, space)
    return {
        "set_threshold": threshold,
        "exact_match": exact_match(sets, truth),
        "macro_f1": macro_f1(sets, truth, names),
        "corrupted_accuracy": top1(pred.corrupted_logits, np.array([e.corrupted for e in pred.examples])),
        "accuracy_mae": mae(pred.accuracy, np.array([e.accuracy for e in pred.examples])),
    }


def evaluate_loss(
    model: Interpreter,
    data: SplitData,
    config: InterpreterConfig,
    inputs: RepairInputs,
    device: torch.device,
    means: LatentMeans | None = None,
) -> tuple[dict[str, float], Predictions]:
    """Mean loss terms and quick metrics over a split (no gradient); the edit term along ``means``' directions,
    with the same edits every call."""
    edits = None if means is None else Edits(means, torch.Generator().manual_seed(config.seed))
    model.eval()
    sums: dict[str, float] = {}
    total, rows = 0.0, 0
    examples, probs, corrupted, accuracy, latents = [], [], [], [], []
    with torch.no_grad():
        for chunk, batch in data.batches(config.eval_batch_size):
            batch = batch.to(device)
            loss, terms, out = losses(model, batch, config, inputs, every_term=True, edits=edits)
            n = len(chunk)
            total += float(loss) * n
            rows += n
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * n
            examples.extend(chunk)
            probs.append(torch.sigmoid(out.patterns).cpu().numpy())
            corrupted.append(out.corrupted.cpu().numpy())
            accuracy.append(out.accuracy.cpu().numpy())
            latents.append(out.latent.cpu().numpy())
    if not rows:
        return {}, Predictions([], np.zeros((0, model.n_patterns)), np.zeros((0, model.n_patterns)), np.zeros(0), np.zeros((0, 1)), None)
    pred = Predictions(examples, np.concatenate(probs), np.concatenate(corrupted), np.concatenate(accuracy), np.concatenate(latents), None)
    figures = {"loss": total / rows, **{f"loss_{k}": v / rows for k, v in sums.items()}}
    # the same sum whatever the configured weights, so runs with other loss weights compare (Tune's default metric)
    figures["objective"] = sum(figures[f"loss_{k}"] for k in OBJECTIVE_TERMS)
    return figures, pred


def selection_score(metrics: dict, select: str) -> tuple[float, float]:
    """Lower is better: ``(-exact match, loss)`` on validation, or ``(loss, 0)``; training loss without a validation split."""
    loss = metrics.get("val_loss", metrics["train_loss"])
    if select == "exact_match" and "val_exact_match" in metrics:
        return -metrics["val_exact_match"], loss
    return loss, 0.0


# ---------------------------------------------------------------- run folder


def build_model(config: InterpreterConfig, data_info: dict) -> Interpreter:
    """An untrained interpreter shaped for a zoo (as ``ZooSource.describe`` or a run's config.json describes it)."""
    columns, none_column = pattern_columns(data_info["signature_stats"], data_info["pattern_names"])
    probes = one_hot(data_info["probe_tokens"], int(data_info["vocab_size"])) if data_info.get("probe_tokens") else None
    return Interpreter(
        config.model,
        n_stats=len(data_info["signature_stats"]),
        n_patterns=len(data_info["pattern_names"]),
        in_features=int(data_info["in_features"]),
        columns=columns,
        none_column=none_column,
        probe_inputs=probes,
        probe_patterns=data_info.get("probe_patterns"),
        probe_member=torch.tensor(data_info["probe_member"]) if data_info.get("probe_member") else None,
        drawn=[name in data_info.get("drawn", data_info["pattern_names"]) for name in data_info["pattern_names"]],
    )


def fresh_model(config: InterpreterConfig, source: ZooSource, train_data: SplitData) -> Interpreter:
    """An untrained interpreter whose input scales are set from the training subjects."""
    model = build_model(config, source.describe())
    model.set_normalization(*signature_normalization(train_data))
    if config.model.answer_width and not model.answers_per_pattern:
        model.set_answer_normalization(*answer_normalization(model, train_data))
    return model


def run_description(config: InterpreterConfig, source: ZooSource) -> dict:
    return {
        "version": RUN_VERSION,
        "interpreter": config.model_dump(mode="json"),
        "data": source.describe(),
        "n_stats": len(source.signature_stats),
    }


def read_run(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InterpreterError(f"{run_dir}: not an interpreter run (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise InterpreterError(f"{path}: unreadable ({error})") from None
    version = data.get("version", 1)  # runs before the version was recorded are version 1
    if not isinstance(version, int) or not 1 <= version <= RUN_VERSION:
        raise InterpreterError(f"{path}: run version {version}, this code reads 1 to {RUN_VERSION}")
    if version < RUN_VERSION:  # read as the current version: the defaults the run was made with, written in
        data["interpreter"] = migrate_run_config(data.get("interpreter", {}), version)
        data["version"] = RUN_VERSION
    return data


def run_config(description: dict, run_dir: str | Path) -> InterpreterConfig:
    """A run's config (``read_run``'s description, migrated to this run version); fields added since
    the run was made take their defaults, and those whose default changed, the old one."""
    try:
        return InterpreterConfig.model_validate(description["interpreter"])
    except ValidationError as error:
        raise InterpreterError(f"{Path(run_dir) / CONFIG_FILE}: {format_validation_error(error)}") from None


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """The file of checkpoint ``which`` (``best``, ``repair``, ``last``); ``repair`` falls back to
    ``best`` (runs made before it existed, runs without validation), ``best`` to ``last``."""
    run_dir = Path(run_dir)
    order = {"repair": ("repair", "best", "last"), "best": ("best", "last"), "last": ("last",)}[which]
    for name in order:
        if (run_dir / CHECKPOINTS[name]).is_file():
            return run_dir / CHECKPOINTS[name]
    raise InterpreterError(f"{run_dir}: no checkpoint yet (train first)")


def load_model(run_dir: str | Path, which: str = "best", device: torch.device | str = "cpu") -> tuple[Interpreter, InterpreterConfig, dict]:
    """The trained interpreter of a run (see ``checkpoint_path``), its config and run description."""
    run_dir = Path(run_dir)
    description = read_run(run_dir)
    config = run_config(description, run_dir)
    model = build_model(config, description["data"])
    path = checkpoint_path(run_dir, which)
    state = load_file(path)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.to(device).eval(), config, description


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_checkpoint(
    run_dir: Path, model: Interpreter, optimizer: AdamW, means: LatentMeans, state: dict, best: bool, best_repair: bool
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    epoch = {"epoch": str(state["epoch"])}
    _save_atomic({**tensors, **optimizer.state_tensors(), **means.state_tensors()}, run_dir / LAST_FILE, epoch)
    if best:
        _save_atomic(tensors, run_dir / BEST_FILE, epoch)
    if best_repair:
        _save_atomic(tensors, run_dir / REPAIR_FILE, epoch)
    dump_json(run_dir / STATE_FILE, state)


# ---------------------------------------------------------------- the loop


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
            self.m[i] = tensors[f"optim.m.{i}"].to(p.device)
            self.v[i] = tensors[f"optim.v.{i}"].to(p.device)

    def to(self, device: torch.device) -> AdamW:
        self.m = [m.to(device) for m in self.m]
        self.v = [v.to(device) for v in self.v]
        return self


def _lr(config: InterpreterConfig, step: int, total: int) -> float:
    opt = config.optimizer
    if opt.warmup_steps and step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    if opt.schedule == "constant":
        return opt.lr
    progress = min(1.0, (step - opt.warmup_steps) / max(1, total - opt.warmup_steps))
    return opt.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def signature_normalization(data: SplitData, limit: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-statistic mean and std of asinh(signature) over the real tokens of the first ``limit`` training rows."""
    rows = []
    for i, example in enumerate(data.examples()):
        rows.append(np.arcsinh(example.signature))
        if i + 1 >= limit:
            break
    if not rows:
        raise InterpreterError(f"split {data.split!r} of {data.source.path} holds no records to train on")
    values = np.concatenate(rows)
    return torch.from_numpy(values.mean(0)), torch.from_numpy(values.std(0))


def answer_normalization(model: Interpreter, data: SplitData, limit: int = 512, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-probe mean and std of the answers ``model.answers`` reads, over the first ``limit`` training rows."""
    examples = list(itertools.islice(data.examples(), limit))
    with torch.no_grad():
        parts = []
        for start in range(0, len(examples), chunk):
            batch = collate(examples[start : start + chunk])
            parts.append(model.answers(batch, model.probe_values(batch)))
    values = torch.cat(parts)
    return values.mean(0), values.std(0)


def _console_progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def prepare_run(run_dir: Path, config: InterpreterConfig, source: ZooSource, overwrite: bool) -> dict | None:
    """Create the run folder, or check that it holds this very run; returns the state to resume (None: fresh)."""
    description = run_description(config, source)
    if run_dir.exists() and overwrite:
        for name in (CONFIG_FILE, STATE_FILE, *CHECKPOINTS.values()):
            (run_dir / name).unlink(missing_ok=True)
    config_path = run_dir / CONFIG_FILE
    if config_path.is_file():
        stored = read_run(run_dir)
        stored["interpreter"] = run_config(stored, run_dir).model_dump(mode="json")
        fixed = {k: v for k, v in description["interpreter"].items() if k not in RUNTIME_FIELDS}
        if {k: v for k, v in stored["interpreter"].items() if k not in RUNTIME_FIELDS} != fixed:
            changed = [k for k in fixed if stored["interpreter"].get(k) != fixed[k]]
            raise InterpreterError(
                f"{run_dir}: holds a run with another config ({', '.join(changed)} differ); "
                "use another --out or pass --overwrite"
            )
        if stored["data"]["zoo_id"] != source.zoo_id:
            raise InterpreterError(f"{run_dir}: trained on zoo {stored['data']['zoo_id']}, not {source.zoo_id}; pass --overwrite")
        if stored["interpreter"] != description["interpreter"]:  # runtime settings only: record the new ones
            stored["interpreter"] = description["interpreter"]
            dump_json(config_path, stored)
        state_path = run_dir / STATE_FILE
        if state_path.is_file() and (run_dir / LAST_FILE).is_file():
            return json.loads(state_path.read_text())
        return None
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InterpreterError(f"{run_dir}: exists and is not an interpreter run; choose an empty or new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_json(config_path, description)
    return None


def train(
    config: InterpreterConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    console=None,
    progress: bool = True,
    on_epoch: EpochHook | None = None,
    source: ZooSource | None = None,
) -> dict:
    """Train (or resume) an interpreter on a zoo's train split; returns the final state (history included).

    ``on_epoch(epoch, metrics, run_dir)`` runs after each epoch's checkpoint is written
    (Ray Tune reports from it). ``config.threads`` holds while it runs.
    """
    with torch_threads(config.threads):
        return _train(
            config, data_dir, run_dir, overwrite=overwrite, console=console, progress=progress, on_epoch=on_epoch, source=source
        )


def _train(
    config: InterpreterConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    overwrite: bool,
    console,
    progress: bool,
    on_epoch: EpochHook | None,
    source: ZooSource | None,
) -> dict:
    run_dir = Path(run_dir)
    source = open_source(data_dir) if source is None else source
    device = resolve_device(config.device, "device")
    resume = prepare_run(run_dir, config, source, overwrite)
    kw = {"cache": config.data.cache, "read_rows": config.data.read_rows, "shuffle_buffer": config.data.shuffle_buffer}
    train_data = SplitData(source, config.data.train_split, **kw)
    val_data = SplitData(source, config.data.val_split, **kw)
    n_train = len(train_data)
    if n_train == 0:
        raise InterpreterError(f"{source.path}: split {config.data.train_split!r} holds no records")
    has_val = len(val_data) > 0

    torch.manual_seed(config.seed)
    if resume is None:
        model = fresh_model(config, source, train_data)
        state = {
            "epoch": 0, "step": 0, "best_val": None, "best_epoch": None, "select": config.select,
            "best_repair_val": None, "best_repair_epoch": None, "history": [],
        }
    else:
        model = build_model(config, source.describe())
        tensors = load_file(run_dir / LAST_FILE)
        model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
        state = resume
        if state.get("select", "loss") != config.select:  # another criterion: the next epoch starts the choice afresh
            state.update(best_val=None, select=config.select)
    model.to(device)
    optimizer = AdamW(
        model.parameters(),
        lr=config.optimizer.lr,
        betas=(config.optimizer.beta1, config.optimizer.beta2),
        weight_decay=config.optimizer.weight_decay,
    )
    means = LatentMeans(model.n_patterns, config.model.latent, device=device)
    if resume is not None:
        optimizer.load_state_tensors(tensors)
        means.load_state_tensors(tensors)
    inputs = RepairInputs.build(source, config, device)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    start_epoch = int(state["epoch"])
    if start_epoch >= config.epochs:
        return state

    bar = _console_progress(console) if progress else None
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("train", total=total_steps, completed=start_epoch * steps_per_epoch, status="")
    try:
        for epoch in range(start_epoch, config.epochs):
            epoch_seed = config.seed * 100_003 + epoch
            torch.manual_seed(epoch_seed)  # dropout: the same draws whether resumed or not
            model.train()
            started = time.perf_counter()
            sums: dict[str, float] = {}
            seen = 0
            edits = Edits(means, torch.Generator().manual_seed(epoch_seed))
            for chunk, batch in train_data.batches(config.batch_size, seed=epoch_seed):
                batch = batch.to(device)
                optimizer.lr = _lr(config, state["step"], total_steps)
                drawn = RepairInputs.build(source, config, device, state["step"]) if config.data.repair_fresh else inputs
                loss, terms, out = losses(model, batch, config, drawn, edits=edits if config.loss.edit else None)
                if config.loss.edit:
                    means.update(out.latent.detach(), batch.targets)
                optimizer.zero_grad()
                loss.backward()
                if config.optimizer.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
                optimizer.step()
                state["step"] += 1
                n = len(chunk)
                seen += n
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
                for name, value in terms.items():
                    sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0.0) + value * n
                if bar is not None:
                    bar.update(task, advance=1, description=f"epoch {epoch + 1}/{config.epochs}", status=f"loss {sums['loss'] / seen:.4f}")
            metrics = {"epoch": epoch + 1, "seconds": time.perf_counter() - started}
            metrics.update({f"train_{k}": v / max(seen, 1) for k, v in sums.items()})
            if has_val:
                figures, pred = evaluate_loss(model, val_data, config, inputs, device, means if config.loss.edit else None)
                metrics.update({f"val_{k}": v for k, v in figures.items()})
                quick = quick_metrics(pred, source.pattern_names, config.set_threshold, source.set_space)
                metrics.update({f"val_{k}": v for k, v in quick.items()})
            score = selection_score(metrics, config.select)
            best = state["best_val"] is None or score < tuple(state["best_val"])
            if best:
                state["best_val"], state["best_epoch"] = list(score), epoch + 1
            repair_loss = metrics.get("val_loss_repair_function")
            best_repair = repair_loss is not None and (
                state.get("best_repair_val") is None or repair_loss < state["best_repair_val"]
            )
            if best_repair:
                state["best_repair_val"], state["best_repair_epoch"] = repair_loss, epoch + 1
            state["epoch"] = epoch + 1
            state["history"].append(metrics)
            save_checkpoint(run_dir, model, optimizer, means, state, best, best_repair)
            if console is not None:
                shown = ", ".join(
                    f"{k.removeprefix('val_')} {v:.3f}" for k, v in metrics.items() if k.startswith("val_") and not k.startswith("val_loss_")
                )
                console.print(f"epoch {epoch + 1}: train loss {metrics['train_loss']:.4f}" + (f"; val {shown}" if shown else ""))
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics, run_dir)
    finally:
        if bar is not None:
            bar.stop()
    return state


def copy_run(src: Path, dst: Path) -> None:
    """Copy a run folder's files (checkpoint hand-over for Ray Tune)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, STATE_FILE, *CHECKPOINTS.values()):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
