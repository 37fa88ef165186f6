"""SAEs on a zoo's subjects: activations at hookpoints, spliced evaluation, the CLI, autointerp, Tune."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zoo.config import CONFIGS, load_config
from zoo.readers.sae.config import SAERecipe, SAETuneConfig
from zoo.readers.sae.corpus import Corpus, Label, features, from_probe_corpus, split_rows
from zoo.readers.sae.spec import SAEError
from zoo_fixture import run_cli, tiny_zoo  # noqa: F401

FAST = "epochs: 3\neval_every: 20\nbatch_size: 32\n"
MIXED = {
    "batches": 6,
    "architecture": [
        {"share": 0.5, "space": {"family": "mlp", "width": {"min": 6, "max": 10}}},
        {"share": 0.5, "space": {"family": "transformer", "d_model": [8, 16], "heads": [1, 2],
                                 "ffn": ["dense", "sparse"], "expansion": 4, "layers": {"min": 1, "max": 2}}},
    ],
    "patterns": {"train_size": 100, "val_size": 40, "benchmark_size": 100},
    "training": {"epochs": 2},
    "corruption": {"degraded_per_batch": 1, "min_degradation": 0.0},
}  # fmt: skip


@pytest.fixture(scope="module")
def fast_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sae-recipe") / "fast.yaml"
    path.write_text(FAST)
    return path


@pytest.fixture(scope="module")
def trained_run(tiny_zoo, fast_recipe, tmp_path_factory) -> Path:  # noqa: F811
    from zoo.cli import main

    out = tmp_path_factory.mktemp("sae-run") / "run"
    assert main(["sae", "train", "--data", str(tiny_zoo), "--out", str(out), "--config", str(fast_recipe)]) == 0
    return out


@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory) -> Path:
    import zoo

    out = tmp_path_factory.mktemp("sae-mixed") / "zoo"
    zoo.generate(MIXED, out, workers=0, quiet=True)
    return out


# ---------------------------------------------------------------- corpora


def test_labels_are_read_at_each_sequences_last_token_or_at_every_real_token():
    tokens = np.array([[1, 2, 0], [3, 4, 5]])
    corpus = Corpus("c", tokens, {"state": Label(("a", "b", "c"), np.array([[0, 1, -1], [2, 0, 1]])),
                                  "kind": Label(("x", "y"), np.array([1, 0]))}, lengths=np.array([2, 3]))  # fmt: skip
    assert corpus.row_labels()["state"].tolist() == [1, 1]
    assert corpus.row_labels(per_token=True)["state"].tolist() == [0, 1, 2, 0, 1]
    assert corpus.row_labels(per_token=True)["kind"].tolist() == [1, 1, 0, 0, 0]
    matrix, names = features(corpus)
    assert names == ["state=b", "kind=x", "kind=y"]  # values that never occur get no column
    assert matrix.tolist() == [[True, False, True], [True, True, False]]


def test_a_language_probe_corpus_plugs_in_by_its_attributes():
    fake = SimpleNamespace(
        grammar="dyck", tokens=np.array([[0, 1, 2, 3]]), lengths=np.array([4]), hash="h",
        labels={"depth": np.array([[0, 1, 0, -1]])}, specs=[SimpleNamespace(name="depth", values=("0", "1"))],
    )  # fmt: skip
    corpus = from_probe_corpus(fake)
    assert corpus.name == "dyck.probe" and corpus.hash == "h"
    assert corpus.row_labels(per_token=True)["depth"].tolist() == [0, 1, 0, -1]


def test_the_split_is_disjoint_covers_every_row_and_refuses_a_single_row():
    train, val = split_rows(50, 0.2, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and sorted([*train, *val]) == list(range(50))
    with pytest.raises(SAEError, match="cannot be split"):
        split_rows(1, 0.2, 0)
    with pytest.raises(SAEError, match="empty"):
        Corpus("c", np.zeros((0, 3)))


def test_the_pattern_corpus_labels_every_probe_sequence(tiny_zoo):  # noqa: F811
    import zoo
    from zoo.readers.sae.corpus import pattern_corpus

    z = zoo.open(tiny_zoo)
    corpus = pattern_corpus(z.config, z.probe_set)
    assert corpus.hash == z.probe_set.hash and len(corpus) == len(z.probe_set.tokens)
    labels = corpus.row_labels()
    drawn = labels["pattern"] < len(z.probe_set.names)
    assert drawn.sum() == (z.probe_set.pattern >= 0).sum()
    # every sequence drawn for a pattern satisfies it
    for row in np.flatnonzero(drawn)[::17]:
        assert labels[f"matches:{z.probe_set.names[labels['pattern'][row]]}"][row] == 0
    assert (labels["token@0"] == corpus.tokens[:, 0]).all()


# ---------------------------------------------------------------- activations and splicing


def test_streams_are_the_subjects_activations_at_their_hookpoints(tiny_zoo):  # noqa: F811
    from zoo.readers.sae.run import zoo_corpus
    from zoo.readers.sae.subjects import collect_streams, zoo_subjects

    corpus = zoo_corpus(tiny_zoo, SAERecipe())
    subjects = zoo_subjects(tiny_zoo, corpus, "clean", limit=2)
    streams = collect_streams(subjects, corpus, ["layers.0.pre", "layers.0.post"])
    assert [s.name for s in streams.streams] == [f"{s.id}.layers.0.{p}" for s in subjects for p in ("pre", "post")]
    module = subjects[1].module()
    with torch.no_grad():
        expected = module.activations(torch.as_tensor(corpus.tokens))["layers.0.pre"].numpy()
    got = streams.streams[2]
    np.testing.assert_allclose(got.train, expected[streams.train_rows], atol=1e-6)
    np.testing.assert_allclose(got.val, expected[streams.val_rows], atol=1e-6)


def _architectures():
    from zoo.subjects.families.mlp import Architecture as MLP
    from zoo.subjects.families.transformer import Architecture as Transformer

    return [MLP(2, (8, 8), "gelu", 7, 7), Transformer(2, 16, 2, "dense", 4, 0, True, 7, 7),
            Transformer(1, 16, 2, "sparse", 4, 4, True, 7, 7)]  # fmt: skip


@pytest.mark.parametrize("arch", _architectures(), ids=lambda a: a.describe())
def test_a_splice_hook_sees_the_hookpoint_and_an_identity_splice_changes_nothing(arch):
    from zoo.readers.sae.splice import hook_site, run_with
    from zoo.subjects.families import get_family

    family = get_family(arch.family)
    module = family.build_module(arch, family.init_weights(arch, 0)).eval()
    tokens = torch.randint(0, 7, (6, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean, acts = module(tokens), module.activations(tokens)
        for hookpoint in family.hookpoints(arch):
            if hook_site(arch, hookpoint) is None:  # a sparse FFN's code feeds its decoder as (values, indices)
                assert arch.ffn != "dense" and hookpoint.endswith("ffn.post")
                continue
            seen: dict[str, torch.Tensor] = {}
            out = run_with(module, arch, hookpoint, tokens, lambda v, seen=seen: seen.setdefault("v", v))
            torch.testing.assert_close(out, clean)
            torch.testing.assert_close(seen["v"].reshape(acts[hookpoint].shape), acts[hookpoint])
            assert not torch.equal(run_with(module, arch, hookpoint, tokens, torch.zeros_like), clean)


def test_a_perfect_reconstruction_recovers_all_of_the_loss_and_a_zero_one_none():
    from zoo.readers.sae.splice import spliced_metrics
    from zoo.readers.sae.subjects import Subject
    from zoo.subjects.families import get_family

    arch = _architectures()[0]
    family = get_family(arch.family)
    subject = Subject("s", arch, family.init_weights(arch, 1))
    tokens = np.random.default_rng(0).integers(0, 7, (64, 7))
    targets = (tokens[:, 0] == tokens[:, -1]).astype(np.float32)
    mean = np.zeros(8, np.float32)
    perfect = spliced_metrics(subject, "layers.1.post", lambda v: v, tokens, mean, targets)
    assert perfect["ce_recovered_zero"] == pytest.approx(1.0) and perfect["kl_spliced"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["loss_spliced"] == pytest.approx(perfect["loss_clean"])
    ablated = spliced_metrics(subject, "layers.1.post", torch.zeros_like, tokens, mean, targets)
    assert ablated["ce_recovered_zero"] == pytest.approx(0.0) and ablated["kl_spliced"] > 0


# ---------------------------------------------------------------- the CLI end to end


def test_sae_train_eval_and_autointerp_run_end_to_end_on_a_tiny_zoo(trained_run, capsys):
    info = json.loads((trained_run / "run.json").read_text())
    index = json.loads((trained_run / "saes" / "index.json").read_text())["coders"]
    assert info["coders"] == len(index) == len(info["streams"])  # one coder per (subject, hookpoint) at this grid
    assert {s["hookpoint"] for s in info["streams"].values()} <= {"layers.0.post", "layers.1.post"}
    assert all(0 <= row["fvu"] < 1.0 and row["l0"] <= 4 for row in index)

    code, out, err = run_cli(capsys, "sae", "eval", "--run", trained_run, "--json")
    assert code == 0 and not err
    summary = json.loads(out)
    assert summary["coders"] == len(index) and summary["mean_kl_spliced"] >= 0
    rows = json.loads((trained_run / "eval.json").read_text())["coders"]
    for row in rows:
        assert np.isfinite([row["loss_clean"], row["loss_zero"], row["loss_spliced"]]).all()
    assert (trained_run / "eval.md").read_text().startswith("# SAE evaluation")

    code, out, err = run_cli(capsys, "autointerp", "--run", trained_run)
    assert code == 0 and "coverage" in out
    scored = json.loads((trained_run / "autointerp.json").read_text())
    assert scored["summary"]["coders"] == len(index) and scored["features"]
    assert all(0 <= row["coverage"] <= 1 for row in scored["coders"])


def test_a_saved_coder_reproduces_the_held_out_fvu_the_trainer_reported(trained_run):
    from zoo.readers.sae.metrics import fvu
    from zoo.readers.sae.run import open_run

    run = open_run(trained_run)
    streams = {s.name: s for s in run.streams().streams}
    for row in run.index[:3]:
        stream = streams[run.cfg(row["label"])["zoo"]["spec"]["stream"]]
        with torch.no_grad():
            recon = run.coder(row["label"])(torch.from_numpy(stream.val))
        assert fvu(stream.val, recon) == pytest.approx(row["fvu"], rel=1e-3, abs=1e-5)


def test_a_mixed_zoo_trains_on_both_families_and_splices_transformers(mixed_zoo, fast_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "sae", "train", "--data", mixed_zoo, "--out", out, "--config", fast_recipe)
    assert code == 0, err
    hookpoints = {s["hookpoint"] for s in json.loads((out / "run.json").read_text())["streams"].values()}
    assert "blocks.0.resid" in hookpoints and "layers.0.post" in hookpoints
    code, _, err = run_cli(capsys, "sae", "eval", "--run", out)
    assert code == 0, err
    rows = json.loads((out / "eval.json").read_text())["coders"]
    assert any(r["hookpoint"] == "blocks.0.resid" and np.isfinite(r["loss_spliced"]) for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hookpoint", "layers.9.post"], r"unknown hookpoint 'layers.9.post': the subjects have head, layers"),
        (["--hookpoint", "blocks.0.resid"], r"unknown hookpoint 'blocks.0.resid'"),  # a transformer's, not an MLP's
        (["--hookpoint", "layers.0.post/x"], r"argument --hookpoint: a hookpoint name is"),
        (["--config", "K"], r"k=100 must lie in 1\.\.\d+ \(the number of latents\)"),
        (["--subjects", "0"], r"subjects"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_zoo, tmp_path, capsys, args, message):  # noqa: F811
    (tmp_path / "k.yaml").write_text("k: [100]\nepochs: 1\n")
    args = [str(tmp_path / "k.yaml") if a == "K" else a for a in args]
    code, out, err = run_cli(capsys, "sae", "train", "--data", tiny_zoo, "--out", tmp_path / "run", *args)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_folder_that_is_not_a_zoo_or_not_a_run_is_refused_in_one_line(tmp_path, trained_run, tiny_zoo, capsys):  # noqa: F811
    for args in (["sae", "train", "--data", tmp_path, "--out", tmp_path / "r"], ["sae", "eval", "--run", tmp_path],
                 ["autointerp", "--run", tmp_path], ["sae", "train", "--data", tiny_zoo, "--out", trained_run]):  # fmt: skip
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and not out and len(err.strip().splitlines()) == 1, (args, err)


def test_the_jobs_entrypoint_trains_evaluates_and_scores(tiny_zoo, fast_recipe, tmp_path, capsys):  # noqa: F811
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
    import sae as job

    assert job.main(["--data", str(tiny_zoo), "--out", str(tmp_path / "run"), "--config", str(fast_recipe)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["coders"] > 0 and "ce_recovered_defined" in printed["eval"] and "mean_coverage" in printed["autointerp"]


# ---------------------------------------------------------------- recipes and Tune


def test_the_shipped_recipes_are_the_code_defaults_written_out():
    assert load_config(CONFIGS / "readers/sae.yaml", SAERecipe) == SAERecipe()
    assert load_config(CONFIGS / "tune/sae.yaml", SAETuneConfig) == SAETuneConfig()
    recipe = SAERecipe(kinds=["topk", "relu"], expansion=[2, 4], k=[2, 3], alpha=[0.5], seeds=[0, 1])
    specs = recipe.specs("s", 8)
    assert len(specs) == 2 * 2 * (2 + 1) and {s.latents for s in specs} == {16, 32}
    assert recipe.train_config().steps == recipe.epochs * recipe.eval_every


def test_a_tune_trial_reports_once_per_round(tiny_zoo):  # noqa: F811
    from zoo.readers.sae.tune import SWEEP, _prepare, _trainable
    from zoo.readers.tune import check_settings, trial_config

    settings = SAETuneConfig(overrides={"epochs": 3, "eval_every": 10, "patience": None}, models=2)
    base = check_settings(SWEEP, settings)
    context = _prepare(Path(tiny_zoo), settings, base)
    reports = []
    trial = SimpleNamespace(report=reports.append)
    _trainable(trial_config(SWEEP, base, {"kinds": ["relu"], "lr": 1e-3}), trial, **context)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert all(0 < r["val_fvu"] for r in reports) and "val_l0" in reports[0]


def test_tune_sae_runs_trials_through_ray_tune_and_writes_the_best_recipe(tiny_zoo, ray_session, tmp_path, monkeypatch):  # noqa: F811
    from zoo.readers.sae.tune import tune_sae

    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    config = SAETuneConfig(overrides={"epochs": 2, "eval_every": 10, "patience": None},
                           space={"lr": {"loguniform": [1e-3, 1e-2]}}, models=1, num_samples=2, grace_period=2)  # fmt: skip
    outcome = tune_sae(tiny_zoo, config, out=tmp_path / "tune", verbose=0)
    assert len(outcome.rows) == 2 and all(row["epochs_run"] == 2 for row in outcome.rows)
    with open(tmp_path / "tune" / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    best = load_config(tmp_path / "tune" / "best_config.yaml", SAERecipe)
    assert best.lr == pytest.approx(float(table[0]["lr"]))


def test_a_sampled_corpus_is_larger_and_drawn_from_the_zoos_pattern_space(tiny_zoo):  # noqa: F811
    from zoo.readers.sae.run import zoo_corpus

    probe = zoo_corpus(tiny_zoo, SAERecipe())
    sampled = zoo_corpus(tiny_zoo, SAERecipe(corpus="sampled", corpus_per_pattern=32, corpus_negatives=64))
    assert sampled.name == "sampled" and len(sampled) > len(probe) and sampled.hash != probe.hash
    assert set(sampled.labels) == set(probe.labels)


def test_a_run_whose_zoo_no_longer_gives_its_corpus_is_refused(trained_run, tmp_path, capsys):
    import shutil

    copy = Path(shutil.copytree(trained_run, tmp_path / "run"))
    info = json.loads((copy / "run.json").read_text())
    info["corpus"]["hash"] = "0" * 64
    (copy / "run.json").write_text(json.dumps(info))
    code, _, err = run_cli(capsys, "sae", "eval", "--run", copy)
    assert code == 2 and "its corpus is not the one" in err and len(err.strip().splitlines()) == 1


def test_twins_are_each_subjects_initial_weights_and_train_beside_it(tiny_zoo, tmp_path, capsys):  # noqa: F811
    from zoo.readers.sae.run import zoo_corpus
    from zoo.readers.sae.subjects import zoo_subjects
    from zoo.subjects.families import get_family

    corpus = zoo_corpus(tiny_zoo, SAERecipe())
    subjects = zoo_subjects(tiny_zoo, corpus, "clean", limit=2, twins=True)
    assert [s.id for s in subjects] == ["batch0.clean", "batch0.clean.twin", "batch1.clean", "batch1.clean.twin"]
    import zoo

    seed = zoo.open(tiny_zoo).row(0)["init_seed"]
    twin = subjects[1]
    np.testing.assert_array_equal(twin.weights, get_family(twin.architecture.family).init_weights(twin.architecture, seed))
    assert not np.array_equal(twin.weights, subjects[0].weights)
    (tmp_path / "twins.yaml").write_text(FAST + "twins: true\nsubjects: 1\n")
    code, _, err = run_cli(capsys, "sae", "train", "--data", tiny_zoo, "--out", tmp_path / "run", "--config", tmp_path / "twins.yaml")
    assert code == 0, err
    owners = {s["subject"] for s in json.loads((tmp_path / "run" / "run.json").read_text())["streams"].values()}
    assert owners == {"batch0.clean", "batch0.clean.twin"}
    assert run_cli(capsys, "autointerp", "--run", tmp_path / "run")[0] == 0
