"""Records as prompt/completion text for language-model interpreters, and answers back into weights.

One format serves prompts and completions: every tensor is a section headed by
``### <name> [<shape>]`` followed by its numbers, one line per output neuron
(``nn.Linear`` orientation) or per neuron for signatures. Section names come
from the record's own ``weight_layout``: a layer's weights ``layers.0.weight``,
``layers.0.bias`` and its signature ``layers.0.signature`` share the prefix
``layers.0`` (the output layer is ``head``), so the interwoven layout cannot
lose a layer's signature to a naming mismatch.

Numbers are rounded to ``precision`` decimals (``np.round`` on the float64 value
of the stored float32, ``-0`` written as ``0``); ``parse_weights`` returns exactly
those rounded values, so an answer in this format loads with ``zoo.load_model``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from zoo.export import LAYOUTS, MODELS, TASKS
from zoo.export.common import ExportError, ZooFolder, commit_file, open_zoo, refuse_existing, temporary_path
from zoo.storage import is_uri
from zoo.subjects.families import UnsupportedFamily, require_families, require_family
from zoo.subjects.families.mlp import Architecture

Task = Literal["modification", "classification"]
Layout = Literal["separate", "interwoven"]
MAX_PRECISION = 8  # float32 * 10**8 is still exact in float64, so rounding stays exact

_HEADER = re.compile(r"^#{3}\s*(?P<name>[A-Za-z_][\w.]*)\s*\[(?P<shape>[\d,\sx]*)\]\s*:?\s*$")
_TOKEN_PIECES = re.compile(r"\d{1,3}|[A-Za-z]+|\n|[^\s\w]|_")


class CompletionError(ExportError):
    """Text that does not hold the expected tensors (a language model's answer, say)."""


# ---------------------------------------------------------------- numbers and sections


def rounded(values: np.ndarray | Sequence[float], precision: int) -> np.ndarray:
    """What the text holds for ``values``: float64, rounded to ``precision`` decimals, no negative zero."""
    return np.round(np.asarray(values, dtype=np.float64), precision) + 0.0


def _lines(matrix: np.ndarray, precision: int) -> str:
    """One line per row; ``matrix`` is already rounded."""
    matrix = np.atleast_2d(matrix)
    template = " ".join([f"%.{precision}f"] * matrix.shape[1])
    return "\n".join(template % tuple(row) for row in matrix.tolist())


def section(name: str, values: np.ndarray, shape: Sequence[int], precision: int) -> str:
    """``### name [shape]`` then the numbers: a row per output neuron (2-D) or a single line (1-D)."""
    shape = tuple(int(s) for s in shape)
    data = rounded(values, precision).reshape(shape if len(shape) > 1 else (1, -1))
    return f"### {name} [{', '.join(str(s) for s in shape)}]\n{_lines(data, precision)}"


def parse_sections(text: str) -> dict[str, np.ndarray]:
    """Every ``### name [shape]`` section of ``text`` as an array of that shape.

    A section's numbers run until the next header, a line starting with ``#``, or
    a line that is not all numbers (so chatter after an answer is ignored);
    blank lines are skipped. A section listed twice, or holding a different count
    of numbers than its shape says, is a ``CompletionError``.
    """
    sections: dict[str, tuple[tuple[int, ...], list[float]]] = {}
    current: list[float] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        header = _HEADER.match(stripped)
        if header:
            name = header["name"]
            if name in sections:
                raise CompletionError(f"section {name} appears twice")
            dims = [d for d in re.split(r"[,\sx]+", header["shape"]) if d]
            sections[name] = (tuple(int(d) for d in dims), [])
            current = sections[name][1]
            continue
        if not stripped:
            continue
        if current is None or stripped.startswith("#"):
            current = None
            continue
        try:
            current.extend(float(token) for token in stripped.split())
        except ValueError:
            current = None
    result = {}
    for name, (shape, numbers) in sections.items():
        expected = math.prod(shape)
        if len(numbers) != expected:
            raise CompletionError(f"section {name} holds {len(numbers)} numbers, its shape {list(shape)} needs {expected}")
        result[name] = np.asarray(numbers, dtype=np.float64).reshape(shape)
    return result


def parse_weights(text: str, architecture: Architecture | dict) -> np.ndarray:
    """The flat float32 weight vector (``Architecture.layout`` order) that ``text`` writes out.

    Every tensor of the architecture must be present with its exact shape; other
    sections (signatures, extra text) are ignored.
    """
    if not isinstance(architecture, Architecture):
        architecture = require_family(architecture, ("mlp",), "zoo export")
    sections = parse_sections(text)
    flat = np.empty(architecture.n_params, dtype=np.float32)
    for entry in architecture.layout():
        if entry.name not in sections:
            raise CompletionError(f"no section {entry.name} {list(entry.shape)} in the text")
        values = sections[entry.name]
        if tuple(values.shape) != tuple(entry.shape):
            raise CompletionError(f"section {entry.name} has shape {list(values.shape)}, the model needs {list(entry.shape)}")
        flat[entry.offset : entry.offset + entry.size] = values.ravel()
    return flat


def parse_patterns(text: str, known: Sequence[str] | None = None) -> list[str]:
    """A classification answer (``a, b, c``) as sorted, distinct pattern names."""
    names = sorted({name for name in re.split(r"[,\s]+", text.strip()) if name})
    if known is not None:
        unknown = [name for name in names if name not in set(known)]
        if unknown:
            raise CompletionError(f"unknown pattern names {unknown}")
    return names


def answer_row(row: dict, completion: str, which: Literal["clean", "degraded"] = "clean") -> dict:
    """A copy of ``row`` whose ``<which>_weights`` are the ones ``completion`` writes out."""
    if which not in ("clean", "degraded"):
        raise ValueError(f"which must be 'clean' or 'degraded', not {which!r}")
    return {**row, f"{which}_weights": parse_weights(completion, row["architecture"])}


def load_answer(row: dict, completion: str):
    """The ``torch.nn.Module`` a modification answer describes, ready to evaluate."""
    from zoo.factory.load import load_model

    return load_model(answer_row(row, completion), "clean")


def estimate_tokens(text: str) -> int:
    """A rough token count for BPE tokenizers that group up to three digits (GPT-4, Qwen style).

    Digit runs cost one token per three digits, words one per four letters, every
    other symbol and newline one. Tokenizers that split every digit (Llama 2,
    Mistral) need about 1.5-2x as many tokens for these number-heavy texts.
    """
    count = 0
    for piece in _TOKEN_PIECES.findall(text):
        count += math.ceil(len(piece) / 4) if piece[0].isalpha() else 1
    return count


# ---------------------------------------------------------------- building examples


@dataclass(frozen=True)
class PromptContext:
    """What every prompt of a zoo shares: signature column names and the pattern catalogue."""

    signature_stats: tuple[str, ...]
    descriptions: dict[str, str]
    candidates: tuple[str, ...]

    @classmethod
    def of(cls, folder: ZooFolder) -> PromptContext:
        from zoo.patterns.library import pattern_library, selectable

        library = pattern_library(folder.config.patterns)
        return cls(
            folder.signature_stats,
            {name: pattern.description for name, pattern in library.items()},
            selectable(folder.config.patterns),
        )


def _letters(n: int) -> str:
    return f"A-{chr(ord('A') + n - 1)}"


def describe_architecture(arch: dict) -> str:
    v, length = int(arch["vocab_size"]), int(arch["seq_len"])
    widths = ", ".join(str(w) for w in arch["widths"])
    return (
        f"Architecture: {arch['family']}; input {length} positions x {v} tokens one-hot = {length * v} features "
        f"(feature = position * {v} + token); hidden layers of width {widths} ({arch['activation']}); "
        "1 output logit (positive: the sequence has one of the patterns)."
    )


def _format_note(stats: Sequence[str], precision: int, signatures: bool = True) -> str:
    note = (
        f"Numbers have {precision} decimals. Each weight tensor is in nn.Linear orientation: "
        "one line per output neuron, one number per input."
    )
    if signatures:
        note += (
            " Each signature has one line per neuron of the layer, giving these statistics of the neuron's "
            f"activation on a fixed probe set: {' '.join(stats)}."
        )
    return note


def _prefixes(layout: Sequence[dict]) -> list[str]:
    """Layer prefixes (``layers.0`` ... ``head``) in layout order."""
    return list(dict.fromkeys(entry["name"].rsplit(".", 1)[0] for entry in layout))


def weight_sections(weights: np.ndarray, layout: Sequence[dict], precision: int) -> dict[str, list[str]]:
    """Per layer prefix, the sections of its tensors."""
    out: dict[str, list[str]] = {prefix: [] for prefix in _prefixes(layout)}
    for entry in layout:
        size = math.prod(entry["shape"])
        values = weights[entry["offset"] : entry["offset"] + size]
        out[entry["name"].rsplit(".", 1)[0]].append(section(entry["name"], values, entry["shape"], precision))
    return out


def signature_sections(signature: np.ndarray, neuron_layer: np.ndarray, layout: Sequence[dict], precision: int) -> dict[str, str]:
    """Per layer prefix, the signature section of its neurons (neuron layer i is the i-th prefix)."""
    prefixes = _prefixes(layout)
    layers = sorted(set(neuron_layer.tolist()))
    if layers != list(range(len(prefixes))):
        raise ExportError(f"neuron layers {layers} do not match the {len(prefixes)} layers of the weight layout")
    out = {}
    for index, prefix in enumerate(prefixes):
        rows = signature[neuron_layer == index]
        out[prefix] = section(f"{prefix}.signature", rows, rows.shape, precision)
    return out


def model_body(weights, signature, row: dict, layout: Layout, precision: int) -> str:
    """The weights and signature of one model in ``layout``."""
    weights = np.asarray(weights, dtype=np.float32)
    signature = np.asarray(signature, dtype=np.float32).reshape(len(row["neuron_layer"]), -1)
    w = weight_sections(weights, row["weight_layout"], precision)
    s = signature_sections(signature, np.asarray(row["neuron_layer"]), row["weight_layout"], precision)
    if layout == "separate":
        return "\n".join(
            ["## Weights", *(text for parts in w.values() for text in parts), "## Signatures", *s.values()]
        )
    if layout == "interwoven":
        return "\n".join(f"## Layer {prefix}\n" + "\n".join([*w[prefix], s[prefix]]) for prefix in w)
    raise ExportError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def weights_text(weights, layout: Sequence[dict], precision: int) -> str:
    """A model's weights alone, as a modification completion holds them (the same for both layouts)."""
    sections = weight_sections(np.asarray(weights, dtype=np.float32), layout, precision)
    return "\n".join(text for parts in sections.values() for text in parts)


def modification_example(row: dict, ctx: PromptContext, layout: Layout, precision: int) -> tuple[str, str]:
    """Prompt: the degraded model and which pattern to repair. Completion: the clean model's weights."""
    arch = require_family(row["architecture"], ("mlp",), "zoo export").to_dict()
    corrupted = row["corrupted_pattern"]
    prompt = "\n".join(
        [
            f"A small neural network classifies sequences of {arch['seq_len']} tokens over the alphabet "
            f"{_letters(int(arch['vocab_size']))}.",
            describe_architecture(arch),
            f"It was trained to detect these patterns: {', '.join(sorted(row['patterns']))}.",
            f"The training labels of one pattern were corrupted, so it no longer detects it: {corrupted} "
            f"({ctx.descriptions.get(corrupted, 'no description')}).",
            _format_note(ctx.signature_stats, precision),
            "",
            model_body(row["degraded_weights"], row["degraded_signature"], row, layout, precision),
            "",
            f"Task: repair the model so that it detects {corrupted} again and keeps its other behaviour. "
            "Answer with the weights of the repaired model, every tensor in the format above.",
            "",
        ]
    )
    return prompt, weights_text(row["clean_weights"], row["weight_layout"], precision)


def classification_example(
    row: dict, ctx: PromptContext, layout: Layout, precision: int, which: Literal["clean", "degraded"]
) -> tuple[str, str]:
    """Prompt: one model's weights and signature. Completion: its pattern set, comma-separated."""
    arch = require_family(row["architecture"], ("mlp",), "zoo export").to_dict()
    prompt = "\n".join(
        [
            f"A small neural network classifies sequences of {arch['seq_len']} tokens over the alphabet "
            f"{_letters(int(arch['vocab_size']))}: its logit is positive when the sequence has one of the "
            "patterns it was trained to detect.",
            describe_architecture(arch),
            _format_note(ctx.signature_stats, precision),
            "",
            model_body(row[f"{which}_weights"], row[f"{which}_signature"], row, layout, precision),
            "",
            "Task: which patterns was this model trained to detect? Answer with their names, comma-separated, "
            f"from: {', '.join(ctx.candidates)}.",
            "",
        ]
    )
    return prompt, ", ".join(sorted(row["patterns"]))


# ---------------------------------------------------------------- the export


@dataclass
class ExportReport:
    """What an export wrote: counts and per-example lengths (of what was written)."""

    path: Path
    written: int = 0
    skipped: int = 0
    shortest_skipped: int = 0
    longest_skipped: int = 0
    prompt_chars: list[int] = field(default_factory=list)
    completion_chars: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    total_tokens: list[int] = field(default_factory=list)

    def stats(self) -> dict[str, dict[str, float]]:
        """min, mean, p50, p95, max of each length measure."""
        measures = {
            "prompt chars": self.prompt_chars,
            "completion chars": self.completion_chars,
            "total chars": [p + c for p, c in zip(self.prompt_chars, self.completion_chars)],
            "prompt tokens (est.)": self.prompt_tokens,
            "total tokens (est.)": self.total_tokens,
        }
        out = {}
        for name, values in measures.items():
            a = np.asarray(values, dtype=np.float64)
            out[name] = (
                {"min": a.min(), "mean": a.mean(), "p50": np.median(a), "p95": np.percentile(a, 95), "max": a.max()}
                if a.size
                else {}
            )
        return out


def iter_examples(
    folder: ZooFolder,
    task: Task,
    layout: Layout,
    precision: int,
    *,
    split: str | None = None,
    model: str = "clean",
) -> Iterator[tuple[str, str, str]]:
    """``(example_id, prompt, completion)`` for every selected record, streaming shard by shard.

    Classification of ``clean`` models gives one example per batch (the clean
    model repeats in every pair of its batch); ``degraded`` one per record;
    ``both`` the two together.
    """
    from zoo.factory.reader import iter_batches

    if task not in TASKS:
        raise ExportError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if model not in MODELS:
        raise ExportError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if not 0 <= precision <= MAX_PRECISION:
        raise ExportError(f"precision must be between 0 and {MAX_PRECISION} decimals, not {precision}")
    keep = None
    if split is not None:
        from zoo.export.splits import load_splits

        keep = set(load_splits(folder.store).batches(split))
    ctx = PromptContext.of(folder)
    seen_clean: set[int] = set()
    for batch in iter_batches(folder.store, batch_size=64):
        for row in batch.to_pylist():
            if keep is not None and row["batch_id"] not in keep:
                continue
            if task == "modification":
                yield (row["example_id"], *modification_example(row, ctx, layout, precision))
                continue
            if model in ("clean", "both") and row["batch_id"] not in seen_clean:
                seen_clean.add(row["batch_id"])
                example_id = f"{row['zoo_id']}/{row['batch_id']:06d}/clean"
                yield (example_id, *classification_example(row, ctx, layout, precision, "clean"))
            if model in ("degraded", "both"):
                yield (row["example_id"], *classification_example(row, ctx, layout, precision, "degraded"))


def export_jsonl(
    zoo_dir: str | Path,
    out: str | Path,
    *,
    task: Task,
    layout: Layout = "separate",
    precision: int = 3,
    messages: bool = False,
    max_chars: int | None = None,
    split: str | None = None,
    model: str = "clean",
    limit: int | None = None,
    overwrite: bool = False,
    progress=None,
) -> ExportReport:
    """Write prompt/completion JSON Lines for TRL's ``SFTTrainer``; the file appears only when complete.

    ``progress(done, total, what)``, when given, counts the examples made (``zoo.progress``).

    Each line is ``{"prompt": str, "completion": str, "example_id": str}``, or with
    ``messages`` the conversational prompt-completion form
    ``{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}], ...}``.
    An example whose prompt plus completion exceeds ``max_chars`` characters is
    skipped, never truncated, and counted in the report; if no example is left,
    nothing is written and ``ExportError`` says why.
    """
    if is_uri(out):  # else a URI would become a local folder named "s3:"
        raise ExportError(f"--out: {out} is a URI; export writes a local .jsonl file (copy it to the store after)")
    out = Path(out)
    refuse_existing(out, overwrite)
    if max_chars is not None and max_chars < 1:
        raise ExportError(f"--max-chars must be positive, not {max_chars}")
    if limit is not None and limit < 1:
        raise ExportError(f"--limit must be positive, not {limit}")
    folder = open_zoo(zoo_dir, task="zoo export")
    try:
        require_families(folder.table(columns=["family"]).column("family").to_pylist(), ("mlp",), "zoo export")
    except UnsupportedFamily as error:
        raise ExportError(str(error)) from None
    report = ExportReport(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for example_id, prompt, completion in iter_examples(folder, task, layout, precision, split=split, model=model):
                if progress is not None and (report.written + report.skipped) % 64 == 0:
                    progress(report.written + report.skipped, limit, "writing examples")
                total = len(prompt) + len(completion)
                if max_chars is not None and total > max_chars:
                    report.skipped += 1
                    report.shortest_skipped = min(report.shortest_skipped or total, total)
                    report.longest_skipped = max(report.longest_skipped, total)
                    continue
                if messages:
                    line = {
                        "prompt": [{"role": "user", "content": prompt}],
                        "completion": [{"role": "assistant", "content": completion}],
                    }
                else:
                    line = {"prompt": prompt, "completion": completion}
                line["example_id"] = example_id
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                report.written += 1
                report.prompt_chars.append(len(prompt))
                report.completion_chars.append(len(completion))
                prompt_tokens = estimate_tokens(prompt)
                report.prompt_tokens.append(prompt_tokens)
                report.total_tokens.append(prompt_tokens + estimate_tokens(completion))
                if limit is not None and report.written >= limit:
                    break
        if report.written == 0:
            if report.skipped:
                raise ExportError(
                    f"all {report.skipped} examples are over --max-chars {max_chars} "
                    f"(the shortest has {report.shortest_skipped:,} chars); nothing written"
                )
            where = f"split {split!r} of " if split is not None else ""
            raise ExportError(f"no examples in {where}{folder.path}; nothing written")
        refuse_existing(out, overwrite)
        commit_file(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return report
