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
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from zoo.atomic import atomic_path
from zoo.config import format_validation_error
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.config import InterpreterConfig, migrate_run_config
from zoo.readers.interpreter.data import (
    SplitData,
    ZooSource,
    collate,
    dump_json,
    one_hot,
    open_source,
)
from zoo.readers.interpreter.directions import LatentMeans
from zoo.readers.interpreter.model import Interpreter, pattern_columns
from zoo.readers.interpreter.optimizer import AdamW
from zoo.readers.interpreter.losses import Edits, RepairInputs, edit_loss, function_loss, losses, weight_loss
from zoo.runtime import resolve_device, torch_threads

from zoo.readers.interpreter.inference import OBJECTIVE_TERMS, Predictions, evaluate_loss, predict, quick_metrics, selection_score

# re-exported: the losses and the inference moved to their own modules
__all__ = [
    "OBJECTIVE_TERMS", "AdamW", "Edits", "Predictions", "RepairInputs", "edit_loss", "evaluate_loss", "function_loss", "losses", "predict",
    "quick_metrics", "selection_score", "weight_loss",
]

RUN_VERSION = 2  # 2: the config's defaults became the shipped recipe's (config.DEFAULTS_BEFORE reads older runs)
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
REPAIR_FILE = "best_repair.safetensors"
CHECKPOINTS = {"best": BEST_FILE, "repair": REPAIR_FILE, "last": LAST_FILE}

EpochHook = Callable[[int, dict, Path], None]
# may change when a run resumes: runtime settings, and what only evaluation uses
RUNTIME_FIELDS = ("device", "threads", "eval_batch_size", "select", "set_threshold", "baselines", "refine")


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
    model.load_weights({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
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
        model.load_weights({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
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
