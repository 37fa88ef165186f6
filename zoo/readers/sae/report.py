"""``zoo sae eval`` and ``zoo autointerp`` on a run folder: spliced metrics and ground-truth scores, JSON and Markdown.

- ``eval_run(run)``: per coder, its held-out reconstruction metrics (from training: FVU,
  L0, dead fraction) and the spliced ones (``splice.spliced_metrics`` on the held-out
  sequences: loss clean / zero / mean / spliced, CE recovered against zero- and
  mean-ablation, KL, accuracies). Writes ``eval.json`` and ``eval.md``.
- ``autointerp_run(run)``: per coder, every latent scored against every known feature of
  the corpus (``autointerp.score_latents`` / ``summarize``), and for comparison the raw
  neurons of the same hookpoint. Writes ``autointerp.json`` and ``autointerp.md``.

Features are scored on the recipe's ``autointerp_rows`` (held-out by default); a feature
that holds on none or all of those rows cannot be detected and is left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from zoo.atomic import atomic_path
from zoo.readers.sae.autointerp import score_latents, summarize
from zoo.readers.sae.corpus import features
from zoo.readers.sae.run import Run
from zoo.readers.sae.splice import spliced_metrics

RECON = ("fvu", "l0", "dead_fraction")
SPLICED = ("loss_clean", "loss_zero", "loss_spliced", "ce_recovered_zero", "ce_recovered_mean", "kl_spliced")
SCORES = ("coverage", "mean_best_f1", "assignment_auroc", "uniqueness", "absorption")


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def eval_run(run: Run, progress=None) -> dict:
    """Spliced evaluation of every coder of ``run``; writes eval.json and eval.md; returns the summary."""
    _, val_rows = run.split()
    tokens = run.corpus.tokens[val_rows]
    rows = []
    for entry in run.index:
        label = entry["label"]
        subject, hookpoint = run.stream_of(label)
        cfg = run.cfg(label)
        mean = np.asarray(cfg["zoo"]["input_stats"]["mean"], dtype=np.float32)
        targets = None if subject.targets is None else subject.targets[val_rows]
        spliced = spliced_metrics(subject, hookpoint, run.coder(label), tokens, mean, targets)
        rows.append({"label": label, "subject": subject.id, "hookpoint": hookpoint,
                     **{k: entry.get(k) for k in RECON}, **spliced})  # fmt: skip
        if progress is not None:
            progress()
    summary = {
        "coders": len(rows),
        **{f"mean_{k}": _mean(r[k] for r in rows) for k in RECON + SPLICED},
        **{f"median_{k}": _median(r[k] for r in rows) for k in RECON + SPLICED},
        "ce_recovered_defined": sum(r["ce_recovered_zero"] is not None for r in rows),
        "eval_rows": len(val_rows),
    }
    _write(run.path / "eval.json", json.dumps({"summary": summary, "coders": rows}, indent=1) + "\n")
    text = (
        f"# SAE evaluation: {run.path.name}\n\nZoo `{run.info['data']}`, {len(rows)} coders, spliced on the "
        f"{len(val_rows)} held-out sequences of the corpus. CE recovered = (L_ablated - L_spliced) / "
        "(L_ablated - L_clean), n/a where ablation changes the loss by less than 1e-6.\n\n"
        + markdown_table([{"statistic": s, **{k: summary[f"{s}_{k}"] for k in RECON + SPLICED}} for s in ("mean", "median")],
                         ["statistic", "fvu", "l0", "ce_recovered_zero", "ce_recovered_mean", "kl_spliced"])
        + "\n\n" + markdown_table(rows, ["label", *RECON, *SPLICED]) + "\n"
    )  # fmt: skip
    _write(run.path / "eval.md", text)
    return summary


def _score(acts: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    s = summarize(score_latents(acts, labels, names))
    return {k: s[k] for k in SCORES} | {"per_feature": s["per_feature"]}


def autointerp_run(run: Run, progress=None) -> dict:
    """Ground-truth scores of every coder's latents and of its hookpoint's neurons; writes autointerp.json/.md."""
    streams = run.streams()
    by_name = {s.name: s for s in streams.streams}
    train_rows, val_rows = run.split()
    use_all = run.recipe.autointerp_rows == "all"
    labels, names = features(run.corpus)
    rows_idx = np.arange(len(run.corpus)) if use_all else val_rows
    labels = labels[rows_idx]
    keep = (labels.sum(0) > 0) & (labels.sum(0) < len(rows_idx))
    labels, names = labels[:, keep], [n for n, k in zip(names, keep) if k]
    rows, neurons = [], {}
    for entry in run.index:
        label = entry["label"]
        cfg = run.cfg(label)
        stream = by_name[cfg["zoo"]["spec"]["stream"]]
        x = np.concatenate([stream.train, stream.val])[np.argsort(np.concatenate([train_rows, val_rows]))]
        x = x[rows_idx]
        with torch.no_grad():
            z = run.coder(label).encode(torch.from_numpy(x)).numpy()
        scores = _score(z, labels, names)
        if stream.name not in neurons:
            neurons[stream.name] = _score(x, labels, names)
        subject, hookpoint = run.stream_of(label)
        rows.append({"label": label, "subject": subject.id, "hookpoint": hookpoint, "stream": stream.name,
                     **{k: scores[k] for k in SCORES}, **{f"neurons_{k}": neurons[stream.name][k] for k in SCORES},
                     "per_feature": scores["per_feature"]})  # fmt: skip
        if progress is not None:
            progress()
    summary = {
        "coders": len(rows),
        "features": len(names),
        "rows": len(rows_idx),
        **{f"mean_{k}": _mean(r[k] for r in rows) for k in SCORES},
        **{f"mean_neurons_{k}": _mean(r[f"neurons_{k}"] for r in rows) for k in SCORES},
    }
    _write(run.path / "autointerp.json", json.dumps({"summary": summary, "features": names, "coders": rows}, indent=1) + "\n")
    columns = ["label", "coverage", "neurons_coverage", "mean_best_f1", "neurons_mean_best_f1", "assignment_auroc", "absorption"]
    text = (
        f"# Ground-truth autointerp: {run.path.name}\n\n{len(names)} features of corpus `{run.corpus.name}` "
        f"scored on {len(rows_idx)} {'' if use_all else 'held-out '}sequences; coverage: share of features with "
        "a latent at AUROC >= 0.9. `neurons_*`: the hookpoint's raw units scored the same way.\n\n"
        + markdown_table([summary], ["mean_coverage", "mean_neurons_coverage", "mean_mean_best_f1", "mean_neurons_mean_best_f1"])
        + "\n\n" + markdown_table(rows, columns) + "\n"
    )  # fmt: skip
    _write(run.path / "autointerp.md", text)
    return summary
