"""Probes of language zoos, and the readers that read pattern zoos only.

``zoo probe`` on a language zoo trains, per model, per hookpoint and per grammar-state label of
its probe corpus, a linear probe on every real token: which grammar state each hookpoint makes
linearly readable, per layer. Readers written for pattern records refuse a language zoo in one
line (exit 2) and write nothing.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_language_zoo import TINY_LANGUAGE_ZOO

import zoo
from zoo.cli import main
from zoo.readers.probes.config import load_probe_config
from zoo.readers.probes.data import ProbeError
from zoo.readers.probes.language import probe_language_zoo, sentence_split

LABELS = {
    "dyck": {"depth", "top", "kind"},
    "expr": {"role", "arity", "remaining", "depth"},
    "english": {"pos", "parent", "depth", "clause"},
}
RECIPE = {
    **TINY_LANGUAGE_ZOO,
    "name": "tiny-lm-probes",
    "batches": 3,
    "training": {"epochs": 6, "lr": {"min": 0.005, "max": 0.005}, "batch_size": 32},
    "language": {**TINY_LANGUAGE_ZOO["language"], "models_per_batch": 1, "assignment": "cycle", "probe_size": 96,
                 "grammars": [{"share": 1 / 3, "grammar": {"grammar": g, "max_len": 24}} for g in ("dyck", "expr", "english")]},
}  # fmt: skip


@pytest.fixture(scope="module")
def language_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm-probes") / "zoo"
    zoo.generate(RECIPE, out, workers=0, quiet=True)
    return out


@pytest.fixture(scope="module")
def probed(language_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm-probes") / "probes"
    summary = probe_language_zoo(language_zoo, out, load_probe_config(None, {"epochs": 30}), log=lambda line: None)
    with open(out / "probes.csv") as handle:
        rows = list(csv.DictReader(handle))
    return out, summary, rows


def test_every_label_of_each_grammar_is_probed_at_every_hookpoint(probed):
    _, summary, rows = probed
    assert summary["models"] == 3
    hookpoints = {"embed", "blocks.0.ffn.post", "blocks.0.resid"}
    for grammar, labels in LABELS.items():
        mine = [r for r in rows if r["grammar"].split()[0] == grammar]
        points = {r["hookpoint"] for r in mine}
        assert hookpoints <= points
        for point in points:
            assert {r["label"] for r in mine if r["hookpoint"] == point} == labels, (grammar, point)


def test_dyck_depth_is_read_far_above_chance_at_some_layer_and_not_by_the_control(probed):
    _, _, rows = probed
    depth = [r for r in rows if r["grammar"].startswith("dyck") and r["label"] == "depth"]
    best = max(depth, key=lambda r: float(r["accuracy"]))
    assert float(best["accuracy"]) >= float(best["chance"]) + 0.15, best
    assert float(best["accuracy"]) >= float(best["control_accuracy"]) + 0.15, best
    assert all(0.0 <= float(r["twin_accuracy"]) <= 1.0 for r in rows)
    # opening vs closing is the token itself: the embedding reads it exactly
    kind = next(r for r in rows if r["grammar"].startswith("dyck") and r["label"] == "kind" and r["hookpoint"] == "embed")
    assert float(kind["accuracy"]) >= 0.95


def test_the_summary_names_each_grammar_and_label(probed):
    out, summary, _ = probed
    text = (out / "summary.md").read_text()
    for grammar, labels in LABELS.items():
        assert f"## {grammar}" in text
        for label in labels:
            assert f"| {label} |" in text
    assert json.loads((out / "summary.json").read_text())["table"] == summary["table"]


def test_validation_sentences_are_held_out_whole_and_fixed_by_the_seed():
    split = sentence_split(10, 0.2, 0)
    assert split.sum() == 2 and (split == sentence_split(10, 0.2, 0)).all()
    assert 1 <= sentence_split(3, 0.01, 0).sum() <= 2


def test_zoo_probe_runs_the_language_path_and_refuses_what_it_cannot_do(language_zoo, tmp_path, capsys):
    assert main(["probe", "model", "--data", str(language_zoo), "--row", "0", "--out", str(tmp_path / "one"), "--epochs", "2"]) == 0
    assert "## dyck" in capsys.readouterr().out
    one = tmp_path / "resid"
    assert main(["probe", "model", "--data", str(language_zoo), "--row", "0", "--out", str(one), "--epochs", "2",
                 "--layers", "blocks.0.resid"]) == 0  # fmt: skip
    with open(one / "probes.csv") as handle:
        assert {r["hookpoint"] for r in csv.DictReader(handle)} == {"blocks.0.resid"}
    for args, message in [
        (["probe", "model", "--row", "0", "--which", "degraded"], "--which"),
        (["probe", "zoo", "--workers", "2"], "--workers"),
        (["probe", "model", "--row", "9"], "row 9 does not exist"),
        (["probe", "model", "--row", "0", "--layers", "blocks.7.resid"], "unknown hookpoint"),
    ]:
        out = tmp_path / "refused"
        assert main([*args[:2], "--data", str(language_zoo), "--out", str(out), *args[2:]]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(ProbeError, match="no records|batches"):
        probe_language_zoo(language_zoo, tmp_path / "none", load_probe_config(None, {"epochs": 1}), batches=0)


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{zoo}", "--task", "classification", "--out", "{out}/x.jsonl"],
        ["card", "{zoo}"],
        ["split", "{zoo}"],
        ["interpret", "train", "--data", "{zoo}", "--out", "{out}"],
        ["sae", "train", "--data", "{zoo}", "--out", "{out}"],
        ["probe", "activations", "--data", "{zoo}", "--row", "0", "--out", "{out}/a.parquet"],
    ],
)
def test_readers_of_pattern_zoos_refuse_a_language_zoo_in_one_line(language_zoo, tmp_path, capsys, command):
    before = sorted(p.name for p in language_zoo.iterdir())
    out = tmp_path / "out"
    assert main([c.format(zoo=language_zoo, out=out) for c in command]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "language zoo" in err, err
    assert not out.exists() and sorted(p.name for p in language_zoo.iterdir()) == before


def test_token_activations_do_not_depend_on_the_chunk(language_zoo):
    from zoo.readers.probes.language import (
        corpus_of,
        open_language_zoo,
        token_activations,
    )
    from zoo.subjects.families import architecture_of

    _, records, corpora = open_language_zoo(language_zoo)
    record = records[0]
    corpus = corpus_of(record, corpora)
    points = ["embed", "blocks.0.ffn.post", "blocks.0.resid"]
    whole = token_activations(architecture_of(record["architecture"]), record["weights"], corpus.tokens, points)
    chunked = token_activations(architecture_of(record["architecture"]), record["weights"], corpus.tokens, points, chunk=7)
    for point in points:
        assert whole[point].shape[:2] == corpus.tokens.shape
        np.testing.assert_allclose(whole[point], chunked[point], atol=1e-5)
