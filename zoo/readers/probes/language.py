"""Probing language zoos: which grammar state each hookpoint makes linearly readable, per layer.

A language record is one transformer trained on one grammar; its grammar's probe corpus
(``zoo.languages.probe.ProbeCorpus``, stored in ``probe.parquet``) labels every token with the
derivation's state (Dyck: depth, top of stack, open/close; Expr: role, arity, remaining arity,
depth; English: part of speech, parent, depth, clause). Every real token (label >= 0) of every
corpus sentence is one example; per model, per default probe point (``activations.probe_points``:
``embed``, then each block's ``ffn.post`` and ``resid``) and per label, a linear probe is trained,
beside a control probe on the labels shuffled within each split, all of a model's probes as one
batched computation (``train.train_probes``). Train and validation are split by sentence, so a
probe is never scored on a token whose sentence it saw. ``chance`` is the validation share of the
most common training value: what a probe that ignores the activations gets. The untrained twin
(the record's architecture at its init seed, ``twin``) says what the architecture reads before
training: ``embed`` holds the token and its position, from which some states follow by themselves.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from zoo.readers.probes.activations import default_layers, probe_points, resolve_layers
from zoo.readers.probes.config import ProbeConfig
from zoo.readers.probes.data import ProbeError
from zoo.readers.probes.train import FeatureSet, control_labels, train_probes
from zoo.subjects.families import architecture_of, get_family

COLUMNS = ("example_id", "batch_id", "init_seed", "grammar", "architecture", "weights", "grammar_config")
SUBJECTS = ("trained", "twin")
"""every record is probed twice: its weights, and its untrained twin (same architecture, its ``init_seed``)"""


def open_language_zoo(path: str | Path):
    """``(zoo, records, corpora)``: a language zoo, its records and its probe corpora; one-line ``ProbeError``s."""
    from zoo.api import Zoo, ZooError, require_task

    try:
        zoo = Zoo(path)
        require_task(zoo, "language", "zoo probe (language path)")
        records = zoo.table(columns=list(COLUMNS)).to_pylist()
        corpora = zoo.probe_set.corpora
    except ZooError as error:
        raise ProbeError(str(error)) from None
    return zoo, records, corpora


def corpus_of(record: dict, corpora) -> object:
    """The probe corpus of the record's grammar (same grammar and parameters)."""
    config = json.loads(record["grammar_config"])
    for corpus in corpora:
        if corpus.config == config:
            return corpus
    raise ProbeError(f"{record['example_id']}: no probe corpus for its grammar {record['grammar']} in probe.parquet")


def token_activations(architecture, weights: np.ndarray, tokens: np.ndarray, hookpoints: list[str],
                      chunk: int = 1024) -> dict[str, np.ndarray]:
    """``{hookpoint: [n, T, width]}`` of one language model on ``tokens [n, T]`` (every position),
    ``chunk`` sentences per forward pass."""
    family = get_family(architecture.family)
    pop = family.population([architecture], [np.asarray(weights, dtype=np.float32)], "cpu")
    widths = family.hookpoints(architecture)
    parts: dict[str, list[np.ndarray]] = {h: [] for h in hookpoints}
    with torch.no_grad():
        for start in range(0, len(tokens), chunk):
            points = family.activations(pop, torch.as_tensor(tokens[None, start : start + chunk], dtype=torch.long))
            for h in hookpoints:
                parts[h].append(points[h][0, :, :, : widths[h]].float().numpy())
    return {h: np.concatenate(p) for h, p in parts.items()}


def sentence_split(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """``[n]`` bool: which sentences are validation (at least one each side)."""
    order = np.random.default_rng([seed, 17]).permutation(n)
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    val = np.zeros(n, dtype=bool)
    val[order[:n_val]] = True
    return val


def wanted_layers(architecture, config: ProbeConfig) -> set[int]:
    """The recipe's ``layers`` (numbers or hookpoint names), or the default points (``include_input``: ``embed``)."""
    if config.layers is None:
        return set(default_layers(architecture, config.include_input, config.site))
    try:
        return set(resolve_layers(architecture, config.layers, config.site))
    except ValueError as error:
        raise ProbeError(str(error)) from None


def model_feature_sets(record: dict, corpus, config: ProbeConfig) -> tuple[list[FeatureSet], list[dict]]:
    """One ``FeatureSet`` per (subject, probe point, label) of one record, and what each one is
    (subjects: ``SUBJECTS``)."""
    architecture = architecture_of(record["architecture"])
    points = [p for p in probe_points(architecture, config.site) if p.layer in wanted_layers(architecture, config)]
    names = [p.hookpoint for p in points]
    weights = {"trained": np.asarray(record["weights"]), "twin": get_family(architecture.family).init_weights(architecture, int(record["init_seed"]))}
    acts = {s: token_activations(architecture, weights[s], corpus.tokens, names, config.activation_chunk) for s in SUBJECTS}
    val_sentence = sentence_split(len(corpus), config.val_fraction, config.split_seed)
    sets, meta = [], []
    for spec in corpus.specs:
        y_all = corpus.labels[spec.name]
        real = y_all >= 0  # [n, T]: tokens that have this label
        y = y_all[real]
        is_val = np.broadcast_to(val_sentence[:, None], real.shape)[real]
        train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        control = control_labels(y, train_idx, val_idx, config.control_seed)
        counts = np.bincount(y[train_idx], minlength=len(spec.values))
        chance = float(np.mean(y[val_idx] == counts.argmax())) if len(val_idx) else float("nan")
        for subject in SUBJECTS:
            for point in points:
                sets.append(FeatureSet(acts[subject][point.hookpoint][real], [y, control], len(spec.values), train_idx, val_idx))
                meta.append({"subject": subject, "layer": point.layer, "hookpoint": point.hookpoint, "label": spec.name,
                             "values": len(spec.values), "tokens": len(y), "chance": round(chance, 6)})  # fmt: skip
    return sets, meta


def probe_language_record(record: dict, corpus, config: ProbeConfig) -> list[dict]:
    """Per (probe point, label) of one record: probe accuracy, control, selectivity and chance."""
    from zoo.languages import parse_language
    from zoo.languages.config import describe_language

    sets, meta = model_feature_sets(record, corpus, config)
    run = train_probes(sets, config)
    architecture = architecture_of(record["architecture"])
    grammar = describe_language(parse_language(json.loads(record["grammar_config"])))
    twin = {(m["layer"], m["label"]): float(run.best_accuracy[i, 0]) for i, m in enumerate(meta) if m["subject"] == "twin"}
    rows = []
    for i, m in enumerate(meta):
        if m.pop("subject") == "twin":
            continue
        accuracy, control = float(run.best_accuracy[i, 0]), float(run.best_accuracy[i, 1])
        rows.append({
            "example_id": record["example_id"], "batch_id": int(record["batch_id"]), "grammar": grammar,
            "ffn": architecture.ffn, **m, "accuracy": round(accuracy, 6), "control_accuracy": round(control, 6),
            "selectivity": round(accuracy - control, 6), "above_chance": round(accuracy - m["chance"], 6),
            "twin_accuracy": round(twin[(m["layer"], m["label"])], 6),
        })  # fmt: skip
    return rows


def probe_language_zoo(data_dir: str | Path, out: str | Path, config: ProbeConfig, rows: list[int] | None = None,
                       batches: int | None = None, log=print) -> dict:
    """Probe every record of a language zoo (or the ``rows`` given, or those of its first ``batches`` batches);
    write ``probes.csv``, ``summary.md``, ``summary.json`` to ``out`` and return the summary."""
    _, records, corpora = open_language_zoo(data_dir)
    if not records:
        raise ProbeError(f"{data_dir}: the zoo holds no records to probe")
    if batches is not None:
        if batches < 1:
            raise ProbeError("batches: must be at least 1")
        kept = set(sorted({r["batch_id"] for r in records})[:batches])
        records = [r for r in records if r["batch_id"] in kept]
    if rows is not None:
        bad = [r for r in rows if not 0 <= r < len(records)]
        if bad:
            raise ProbeError(f"row {bad[0]} does not exist: {data_dir} holds {len(records)} records (rows 0-{len(records) - 1})")
        records = [records[r] for r in rows]
    start = time.perf_counter()
    results = []
    for i, record in enumerate(records):
        results += probe_language_record(record, corpus_of(record, corpora), config)
        log(f"[{i + 1}/{len(records)}] {record['example_id']} ({record['grammar']}) probed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "probes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    table = readability_table(results)
    summary = {"models": len(records), "seconds": round(time.perf_counter() - start, 2), "data": str(data_dir),
               "table": table, "recipe": config.model_dump(mode="json")}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(table, len(records)))
    return summary


def readability_table(results: list[dict]) -> list[dict]:
    """Per (grammar, label, hookpoint): mean probe accuracy, control and chance over the models probed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["grammar"], r["label"], r["layer"], r["hookpoint"])].append(r)
    table = []
    for (grammar, label, layer, hookpoint), items in sorted(groups.items()):
        means = {key: round(float(np.mean([r[key] for r in items])), 4)
                 for key in ("accuracy", "control_accuracy", "chance", "twin_accuracy")}  # fmt: skip
        table.append({"grammar": grammar, "label": label, "layer": layer, "hookpoint": hookpoint, "models": len(items),
                      "accuracy": means["accuracy"], "control": means["control_accuracy"], "chance": means["chance"],
                      "twin": means["twin_accuracy"]})  # fmt: skip
    return table


def markdown(table: list[dict], models: int) -> str:
    """Per grammar, a label x hookpoint table of mean probe accuracy, the untrained twin's in brackets
    (chance and control beside)."""
    lines = ["# Probes of a language zoo", "", f"- models probed: {models}",
             "- cell: mean validation accuracy of the linear probe on the trained model (on its untrained twin); "
             "`chance`: the most common value's share; `control`: the best control probe (shuffled labels) over "
             "the hookpoints", ""]  # fmt: skip
    for grammar in sorted({r["grammar"] for r in table}):
        rows = [r for r in table if r["grammar"] == grammar]
        points = sorted({(r["layer"], r["hookpoint"]) for r in rows})
        lines += [f"## {grammar}", "", "| label | chance | control | " + " | ".join(h for _, h in points) + " |",
                  "|---" * (3 + len(points)) + "|"]  # fmt: skip
        for label in dict.fromkeys(r["label"] for r in rows):
            cells = {(r["layer"], r["hookpoint"]): r for r in rows if r["label"] == label}
            first = next(iter(cells.values()))
            control = max(c["control"] for c in cells.values())
            lines.append(f"| {label} | {first['chance']:.3f} | {control:.3f} | "
                         + " | ".join(f"{cells[p]['accuracy']:.3f} ({cells[p]['twin']:.3f})" if p in cells else "" for p in points) + " |")
        lines.append("")
    return "\n".join(lines)
