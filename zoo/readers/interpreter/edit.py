"""Editing a model through the interpreter's latent.

The direction of a pattern is the mean latent of the training models trained on it
minus the mean latent of those that were not. ``edit`` encodes one record's degraded
model, moves its latent along that direction (``+`` to add the pattern, ``-`` to
remove it), decodes weights from the moved latent, and measures the edited model's
accuracy per pattern on a clean benchmark set of the record's patterns plus the
edited one (built by the zoo's own sampler). Directions are cached in
``RUN/directions.safetensors`` for the checkpoint they were computed with.

The decoder learned to repair, not to edit, so a move of the latent changes little (README).
``refine.epochs`` (as in evaluation) also trains the edited model on the data the zoo makes
for the edited set (the set the interpreter reads, with the pattern added or removed), and
the degraded model the same way: the control that shows what the decoded edit adds.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from zoo.atomic import atomic_path
from zoo.readers.interpreter import InterpreterError
from zoo.readers.interpreter.data import SPLITS, Example, SplitData, ZooSource, collate, from_tokens, open_source, read_row, stream
from zoo.readers.interpreter.directions import mean_difference
from zoo.readers.interpreter.metrics import SetSpace, names_of, read_sets
from zoo.readers.interpreter.refine import Plans, refine
from zoo.readers.interpreter.train import STATE_FILE, checkpoint_path, load_model, predict

DIRECTIONS_FILE = "directions.safetensors"


def _cache_tag(run_dir: Path, which: str, source: ZooSource) -> str:
    """What the cached directions were computed from: the checkpoint file and the zoo."""
    path = checkpoint_path(run_dir, which)
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}:{source.zoo_id}"


def pattern_directions(run_dir: str | Path, model, source: ZooSource, config, which: str = "best") -> tuple[torch.Tensor, torch.Tensor]:
    """``[V, latent]`` mean-latent differences (with minus without each pattern) and ``[V, 2]`` counts."""
    run_dir = Path(run_dir)
    path = run_dir / DIRECTIONS_FILE
    tag = _cache_tag(run_dir, which, source)
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
    directions, counts = mean_difference(torch.from_numpy(pred.latent), torch.from_numpy(pred.targets))
    with atomic_path(path) as tmp:
        save_file({"directions": directions, "counts": counts}, str(tmp), metadata={"checkpoint": tag})
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


def set_threshold(run_dir: Path, config) -> float:
    """The set threshold a run reads sets at: the config's, else the one training chose on validation
    for the heads' epoch (0.5 for a run trained without a validation split)."""
    if config.set_threshold is not None:
        return config.set_threshold
    path = run_dir / STATE_FILE
    state = json.loads(path.read_text()) if path.is_file() else {}
    epochs = {m["epoch"]: m for m in state.get("history", [])}
    return float(epochs.get(state.get("best_epoch"), {}).get("val_set_threshold", 0.5))


class Editor:
    """A run loaded for edits: its interpreter, the zoo it reads and the pattern directions (found once)."""

    def __init__(
        self, run_dir: str | Path, data_dir: str | Path | None = None, which: str = "best", refine_epochs: int | None = None
    ):
        if refine_epochs is not None and refine_epochs < 0:
            raise InterpreterError(f"--refine-epochs: must be 0 or more, got {refine_epochs}")
        self.run_dir = Path(run_dir)
        self.model, self.config, description = load_model(self.run_dir, which)
        self.epochs = self.config.refine.epochs if refine_epochs is None else refine_epochs
        self.source = open_source(data_dir if data_dir is not None else description["data"]["zoo_dir"])
        if list(self.source.pattern_names) != list(description["data"]["pattern_names"]):
            raise InterpreterError(f"{self.source.path}: its pattern vocabulary differs from the one {run_dir} was trained on")
        self.directions, self.counts = pattern_directions(self.run_dir, self.model, self.source, self.config, which)
        self.plans = Plans(self.source.config)
        self.threshold = set_threshold(self.run_dir, self.config)

    def read(self, pattern_logits: torch.Tensor, corrupted_logits: torch.Tensor, space: SetSpace | None) -> list[str]:
        """One model's pattern set at the run's threshold, brought into ``space`` when given."""
        probs = torch.sigmoid(pattern_logits).numpy()
        return names_of(read_sets(probs, corrupted_logits.numpy(), self.threshold, space), self.source.pattern_names)[0]

    def has_direction(self, pattern: str) -> bool:
        k = self.source.pattern_names.index(pattern)
        return bool(self.counts[k, 0] and self.counts[k, 1])

    def check(self, pattern: str) -> None:
        names = self.source.pattern_names
        if pattern not in names:
            raise InterpreterError(f"unknown pattern {pattern!r}; the zoo's patterns are {', '.join(names)}")
        if not self.has_direction(pattern):
            counts = self.counts[names.index(pattern)]
            raise InterpreterError(
                f"no direction for {pattern!r}: the training split has {int(counts[0])} models with it "
                f"and {int(counts[1])} without"
            )

    def __call__(self, example: Example, pattern: str, add: bool, strength: float = 1.0) -> tuple[dict, np.ndarray]:
        """The edit's figures (as ``edit`` returns them) and the final weights (refined when refining)."""
        self.check(pattern)
        epochs = self.epochs
        model, names_all = self.model, self.source.pattern_names
        k = names_all.index(pattern)
        batch = collate([example])
        with torch.no_grad():
            out = model(batch)
            before = self.read(out.patterns, out.corrupted, self.source.set_space)  # as eval reads it
            asked = [n for n in before if n != pattern] + ([pattern] if add else [])
            moved = out.latent + (1.0 if add else -1.0) * strength * self.directions[k][None, :]
            repaired = model.repair(batch, out)
            named = torch.tensor([[float(n in asked) for n in names_all]], dtype=out.latent.dtype, device=out.latent.device)
            edited = model.repair(batch, out, latent=moved, named=named)
            after_patterns, after_corrupted, _ = model.heads(batch, out.tokens, moved, out.answers)
            after = self.read(after_patterns, after_corrupted, None)  # the move itself: an add to a full set may show one more
        arch = example.architecture
        decoded = [from_tokens(w, [arch])[0] for w in (repaired, edited)]  # None: the decoder does not write this family
        candidates = {
            "degraded": example.degraded,
            "repaired": example.degraded if decoded[0] is None else decoded[0],
            "edited": example.degraded if decoded[1] is None else decoded[1],
        }
        names, tokens, pattern_index = _benchmark(self.source, example, pattern)
        if epochs:
            refined = refine(
                [example, example],
                [candidates["edited"], example.degraded],
                [asked, asked],
                self.plans,
                self.config.refine.model_copy(update={"epochs": epochs}),
                torch.device("cpu"),
                self.config.seed,
                held_out=tokens,
            )
            candidates.update(zip(("edited_refined", "degraded_refined"), refined))
        scores = {label: _scores(arch, weights, tokens, pattern_index, len(names)) for label, weights in candidates.items()}
        rows = {
            name: {
                "trained_on": name in example.patterns,
                "corrupted": name == example.metrics["corrupted_pattern"],
                **{label: float(scores[label][0][j]) for label in scores},
            }
            for j, name in enumerate(names)
        }
        result = {
            "model": example.example_id,
            "architecture": arch.describe(),
            "edit": "add" if add else "remove",
            "pattern": pattern,
            "strength": strength,
            "refine_epochs": epochs,
            "asked_set": [n for n in names_all if n in asked],
            "patterns": list(example.patterns),
            "corrupted_pattern": example.metrics["corrupted_pattern"],
            "per_pattern_accuracy": rows,
            "negative_accuracy": {label: scores[label][1] for label in scores},
            "predicted_patterns": {
                "before": before,
                "after": after,
            },
            "saved": None,
            "note": None if decoded[1] is not None else (
                f"the decoder does not write {arch.family} weights yet: repaired and edited are the degraded model, "
                "and the edit is the refinement on the asked set"
            ),
        }
        return result, np.asarray(candidates["edited_refined" if epochs else "edited"], dtype=np.float32)


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
    refine_epochs: int | None = None,
) -> dict:
    """Edit one record's degraded model along a pattern direction; per-pattern accuracies before and after.

    ``refine_epochs`` overrides the run's ``refine.epochs`` (0: the decoded edit alone).
    """
    if (add is None) == (remove is None):
        raise InterpreterError("give exactly one of --add PATTERN or --remove PATTERN")
    editor = Editor(run_dir, data_dir, which, refine_epochs)
    example = read_row(editor.source, model_ref)
    result, weights = editor(example, add if add is not None else remove, add is not None, strength)
    if save is not None:
        sign = "+" if add is not None else "-"
        metadata = {
            "architecture": json.dumps(example.architecture.to_dict()),
            "source": example.example_id,
            "edit": f"{sign}{result['pattern']}",
            "refine_epochs": str(result["refine_epochs"]),
        }
        with atomic_path(save) as tmp:
            save_file({"weights": torch.from_numpy(weights)}, str(tmp), metadata=metadata)
        result["saved"] = str(save)
    return result


def survey(
    run_dir: str | Path,
    *,
    sample: int,
    split: str = "test",
    strength: float = 1.0,
    data_dir: str | Path | None = None,
    which: str = "best",
    refine_epochs: int | None = None,
    progress=None,
) -> dict:
    """Random edits of up to ``sample`` records of a split, summed up per kind (add, remove) and weights.

    Each record adds a pattern it lacks or removes one it has (a coin where both are possible),
    uniform among the patterns with a direction. Its corrupted pattern is never removed: the
    degraded model already fails it, so the removal would be met for free. Seeded by the run's
    seed. Per kind and weights (degraded, repaired, edited, and when refining edited and
    degraded refined): the edited pattern's yes-rate on its positives, the share of edits met
    (yes-rate at least 0.5 for an add, below for a remove), the other benchmark patterns'
    yes-rate and the negatives' accuracy.
    """
    if sample < 1:
        raise InterpreterError(f"--sample: must be 1 or more, got {sample}")
    editor = Editor(run_dir, data_dir, which, refine_epochs)
    if split not in SPLITS:
        raise InterpreterError(f"--split: unknown split {split!r}; splits are {', '.join(SPLITS)}")
    rows = editor.source.rows(split)
    if rows == 0:
        raise InterpreterError(f"--split: split {split!r} of {editor.source.path} holds no records")
    rng = np.random.default_rng([editor.config.seed, 4243])
    order = {int(row): rank for rank, row in enumerate(rng.permutation(rows)[:sample])}
    chosen = sorted(((order[i], e) for i, e in enumerate(stream(editor.source, split)) if i in order), key=lambda pair: pair[0])
    picked: dict[str, list[dict]] = {"add": [], "remove": []}
    for done, (_, example) in enumerate(chosen):
        if progress is not None:  # zoo.progress: a bar in `zoo interpret edit --sample`
            progress(done, len(chosen), "editing records")
        lost = example.metrics["corrupted_pattern"]
        options = {
            "add": [p for p in editor.source.drawn if p not in example.patterns and editor.has_direction(p)],
            "remove": [p for p in example.patterns if p != lost and editor.has_direction(p)],
        }
        kinds = [kind for kind, patterns in options.items() if patterns]
        if not kinds:
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        pattern = options[kind][int(rng.integers(len(options[kind])))]
        picked[kind].append(editor(example, pattern, kind == "add", strength)[0])
    return {
        "split": split,
        "records": len(chosen),
        "strength": strength,
        "refine_epochs": editor.epochs,
        **{kind: summarize_edits(results, kind) for kind, results in picked.items()},
    }


def summarize_edits(results: list[dict], kind: str) -> dict:
    """Mean figures per weights over ``edit`` results of one kind (see ``survey``)."""
    summary: dict = {"records": len(results)}
    if not results:
        return summary
    for label in [label for label in COLUMNS if label in results[0]["negative_accuracy"]]:
        own = np.array([r["per_pattern_accuracy"][r["pattern"]][label] for r in results])
        others = [
            np.mean([row[label] for name, row in r["per_pattern_accuracy"].items() if name != r["pattern"]])
            for r in results
            if len(r["per_pattern_accuracy"]) > 1
        ]
        summary[label] = {
            "pattern": float(own.mean()),
            "met": float(((own >= 0.5) if kind == "add" else (own < 0.5)).mean()),
            "others": float(np.mean(others)) if others else None,
            "negatives": float(np.mean([r["negative_accuracy"][label] for r in results])),
        }
    return summary


COLUMNS = {
    "degraded": "degraded",
    "repaired": "repaired",
    "edited": "edited",
    "edited_refined": "edited, refined",
    "degraded_refined": "degraded, refined",
}
SHORT_COLUMNS = {
    "degraded": "degr.",
    "repaired": "rep.",
    "edited": "edit",
    "edited_refined": "edit\n+ref.",
    "degraded_refined": "degr.\n+ref.",
}


def render_edit(result: dict, console) -> None:
    from rich.table import Table

    sign = "+" if result["edit"] == "add" else "-"
    table = Table(
        title=f"{result['model']} ({result['architecture']}): {sign}{result['pattern']} x{result['strength']}",
        caption="share answered yes on each pattern's benchmark positives; negatives: share answered no. "
        "corr.: the corrupted pattern. degr.: degraded; rep.: repaired; edit: edited; +ref.: refined",
    )
    labels = [label for label in COLUMNS if label in result["negative_accuracy"]]
    # 80 columns: names fold (never cut), figures keep their width under short headers (see the caption)
    for column in ("pattern", "trained\non", "asked"):
        table.add_column(column, overflow="fold")
    for label in labels:
        table.add_column(SHORT_COLUMNS[label], justify="right", no_wrap=True)
    asked = set(result["asked_set"])
    for name, row in result["per_pattern_accuracy"].items():
        mark = "corr." if row["corrupted"] else "yes" if row["trained_on"] else "no"
        table.add_row(name, mark, "yes" if name in asked else "no", *(f"{row[label]:.3f}" for label in labels))
    neg = result["negative_accuracy"]
    table.add_row("negatives", "", "", *(f"{neg[label]:.3f}" for label in labels))
    console.print(table)
    console.print(
        f"interpreter reads: {', '.join(result['predicted_patterns']['before']) or '(none)'}; "
        f"after the edit: {', '.join(result['predicted_patterns']['after']) or '(none)'}"
    )
    if result["refine_epochs"]:
        console.print(
            f"refined: {result['refine_epochs']} epochs on the zoo's data for the asked set "
            f"({', '.join(result['asked_set']) or 'none'}); degraded, refined is the control"
        )
    if result.get("note"):
        console.print(result["note"])
    if result["saved"]:
        kind = "refined edited" if result["refine_epochs"] else "edited"
        console.print(f"{kind} weights written to {result['saved']}")


def render_survey(result: dict, console) -> None:
    from rich.table import Table

    table = Table(
        title=f"random edits of {result['records']} {result['split']} records"
        + (f", refined {result['refine_epochs']} epochs" if result["refine_epochs"] else ""),
        caption="pattern: share answered yes on the edited pattern's positives; met: edits that reach 0.5 "
        "(add) or stay below it (remove); others: the record's other patterns; negatives: share answered no",
    )
    for column in ("edit", "weights", "pattern", "met", "others", "negatives"):
        table.add_column(column, justify="left" if column in ("edit", "weights") else "right", overflow="fold")
    for kind in ("add", "remove"):
        summary = result[kind]
        if not summary["records"]:
            table.add_row(f"{kind} (0)", "no record allowed one", "-", "-", "-", "-")
        for label in [label for label in COLUMNS if label in summary]:
            figures = summary[label]
            table.add_row(
                f"{kind} ({summary['records']})",
                COLUMNS[label],
                *(f"{figures[key]:.3f}" if figures[key] is not None else "-" for key in ("pattern", "met", "others", "negatives")),
            )
    console.print(table)
