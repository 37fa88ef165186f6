"""Editing a model through the interpreter's latent.

The direction of a pattern is the mean latent of the training models trained on it
minus the mean latent of those that were not. ``edit`` encodes one record's degraded
model, moves its latent along that direction (``+`` to add the pattern, ``-`` to
remove it), decodes weights from the moved latent, and measures the edited model's
accuracy per pattern on a clean benchmark set of the record's patterns plus the
edited one (built by the zoo's own sampler). Directions are cached in
``RUN/directions.safetensors`` for the checkpoint they were computed with.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.data import Example, SplitData, ZooSource, collate, from_tokens, open_source, read_row
from zoo.readers.interpreter.metrics import with_corrupted
from zoo.readers.interpreter.train import BEST_FILE, LAST_FILE, load_model, predict

DIRECTIONS_FILE = "directions.safetensors"


def _checkpoint_tag(run_dir: Path, which: str) -> str:
    path = run_dir / (BEST_FILE if which == "best" else LAST_FILE)
    if not path.is_file():
        path = run_dir / LAST_FILE
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def pattern_directions(run_dir: str | Path, model, source: ZooSource, config, which: str = "best") -> tuple[torch.Tensor, torch.Tensor]:
    """``[V, latent]`` mean-latent differences (with minus without each pattern) and ``[V, 2]`` counts."""
    run_dir = Path(run_dir)
    path = run_dir / DIRECTIONS_FILE
    tag = _checkpoint_tag(run_dir, which)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get("checkpoint") == tag:
                tensors = load_file(path)
                return tensors["directions"], tensors["counts"]
    data = SplitData(source, config.data.train_split, cache=False)
    pred = predict(model, data.batches(config.eval_batch_size), torch.device("cpu"))
    if not pred.examples:
        raise InterpreterError(f"{source.path}: no training records to find pattern directions in")
    latent = torch.from_numpy(pred.latent)
    has = torch.from_numpy(pred.targets).bool()
    directions = torch.zeros(has.shape[1], latent.shape[1])
    counts = torch.stack([has.sum(0), (~has).sum(0)], dim=1)
    for k in range(has.shape[1]):
        if counts[k, 0] and counts[k, 1]:
            directions[k] = latent[has[:, k]].mean(0) - latent[~has[:, k]].mean(0)
    save_file({"directions": directions, "counts": counts}, str(path), metadata={"checkpoint": tag})
    return directions, counts


def _benchmark(source: ZooSource, example: Example, extra: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """A clean benchmark set for the record's patterns plus ``extra`` (library order), from the zoo's sampler."""
    from zoo.patterns.sampler import sampler_for

    names = tuple(n for n in source.pattern_names if n in set(example.patterns) | {extra})
    seed = zlib.crc32(f"edit:{example.example_id}:{extra}".encode())
    try:
        data = sampler_for(source.config.patterns).batch_data(names, seed)
    except ValueError as error:
        raise InterpreterError(f"cannot build a benchmark set for {', '.join(names)}: {error}") from None
    return data.patterns, data.benchmark.tokens, data.benchmark.pattern


def _scores(architecture, weights: np.ndarray, tokens: np.ndarray, pattern: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    from zoo import load_model as load_subject
    from zoo.subjects.evaluate import score

    subject = load_subject({"architecture": architecture.to_dict(), "clean_weights": weights}, "clean")
    with torch.no_grad():
        logits = subject(torch.as_tensor(tokens)).numpy()
    s = score(logits[None], pattern[None], n)
    return s.pattern_accuracy[0], float(s.negative_accuracy[0])


def edit(
    run_dir: str | Path,
    model_ref: str,
    *,
    add: str | None = None,
    remove: str | None = None,
    strength: float = 1.0,
    data_dir: str | Path | None = None,
    which: str = "best",
    save: str | Path | None = None,
) -> dict:
    """Edit one record's degraded model along a pattern direction; per-pattern accuracies before and after."""
    if (add is None) == (remove is None):
        raise InterpreterError("give exactly one of --add PATTERN or --remove PATTERN")
    run_dir = Path(run_dir)
    model, config, description = load_model(run_dir, which)
    source = open_source(data_dir if data_dir is not None else description["data"]["zoo_dir"])
    if list(source.pattern_names) != list(description["data"]["pattern_names"]):
        raise InterpreterError(f"{source.path}: its pattern vocabulary differs from the one {run_dir} was trained on")
    pattern = add if add is not None else remove
    if pattern not in source.pattern_names:
        raise InterpreterError(f"unknown pattern {pattern!r}; the zoo's patterns are {', '.join(source.pattern_names)}")
    k = source.pattern_names.index(pattern)
    directions, counts = pattern_directions(run_dir, model, source, config, which)
    if not (counts[k, 0] and counts[k, 1]):
        raise InterpreterError(
            f"no direction for {pattern!r}: the training split has {int(counts[k, 0])} models with it "
            f"and {int(counts[k, 1])} without"
        )
    example = read_row(source, model_ref)
    sign = 1.0 if add is not None else -1.0
    batch = collate([example])
    with torch.no_grad():
        out = model(batch)
        moved = out.latent + sign * strength * directions[k][None, :]
        repaired = model.repair(batch, out)
        edited = model.repair(batch, out, latent=moved)
        after_patterns, after_corrupted, _ = model.heads(batch, out.tokens, moved, out.answers)
        before_sets = with_corrupted(out.patterns.numpy() > 0, out.corrupted.numpy())[0]  # as evaluation reads sets
        after_sets = with_corrupted(after_patterns.numpy() > 0, after_corrupted.numpy())[0]
    arch = example.architecture
    repaired_flat = from_tokens(repaired, [arch])[0]
    edited_flat = from_tokens(edited, [arch])[0]
    names, tokens, pattern_index = _benchmark(source, example, pattern)
    rows = {}
    results = {}
    for label, weights in (("degraded", example.degraded), ("repaired", repaired_flat), ("edited", edited_flat)):
        results[label] = _scores(arch, weights, tokens, pattern_index, len(names))
    for j, name in enumerate(names):
        rows[name] = {
            "trained_on": name in example.patterns,
            "corrupted": name == example.metrics["corrupted_pattern"],
            **{label: float(results[label][0][j]) for label in results},
        }
    if save is not None:
        save_file(
            {"weights": torch.from_numpy(edited_flat)},
            str(save),
            metadata={"architecture": json.dumps(arch.to_dict()), "source": example.example_id, "edit": f"{'+' if add else '-'}{pattern}"},
        )
    return {
        "model": example.example_id,
        "architecture": arch.describe(),
        "edit": ("add" if add is not None else "remove"),
        "pattern": pattern,
        "strength": strength,
        "patterns": list(example.patterns),
        "corrupted_pattern": example.metrics["corrupted_pattern"],
        "per_pattern_accuracy": rows,
        "negative_accuracy": {label: results[label][1] for label in results},
        "predicted_patterns": {
            "before": [n for n, p in zip(source.pattern_names, before_sets) if p],
            "after": [n for n, p in zip(source.pattern_names, after_sets) if p],
        },
        "saved": None if save is None else str(save),
    }


def render_edit(result: dict, console) -> None:
    from rich.table import Table

    sign = "+" if result["edit"] == "add" else "-"
    table = Table(title=f"{result['model']} ({result['architecture']}): {sign}{result['pattern']} x{result['strength']}")
    for column in ("pattern", "trained on", "degraded", "repaired", "edited"):
        table.add_column(column, justify="left" if column in ("pattern", "trained on") else "right")
    for name, row in result["per_pattern_accuracy"].items():
        mark = "yes (corrupted)" if row["corrupted"] else "yes" if row["trained_on"] else "no"
        table.add_row(name, mark, f"{row['degraded']:.3f}", f"{row['repaired']:.3f}", f"{row['edited']:.3f}")
    neg = result["negative_accuracy"]
    table.add_row("negatives", "", f"{neg['degraded']:.3f}", f"{neg['repaired']:.3f}", f"{neg['edited']:.3f}")
    console.print(table)
    console.print(
        f"interpreter reads: {', '.join(result['predicted_patterns']['before']) or '(none)'}; "
        f"after the edit: {', '.join(result['predicted_patterns']['after']) or '(none)'}"
    )
    if result["saved"]:
        console.print(f"edited weights written to {result['saved']}")
