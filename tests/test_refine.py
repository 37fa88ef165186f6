"""Repair refined on the named pattern set's data: what it trains on, what it restores, how eval reports it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interpreter_fixture import interp_run, interp_zoo, run_copy, tiny_config  # noqa: F401
from zoo_fixture import run_cli

from zoo.patterns.library import pattern_library
from zoo.patterns.sampler import LabelledSet
from zoo.readers.interpreter.config import RefineConfig
from zoo.readers.interpreter.data import open_source, stream
from zoo.readers.interpreter.evaluate import judge_repair
from zoo.readers.interpreter.metrics import nanmean
from zoo.readers.interpreter.refine import Plans, outside, refine, refine_job, sequence_keys

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def source(interp_zoo):
    return open_source(interp_zoo)


@pytest.fixture(scope="module")
def examples(source):
    return list(stream(source, None))


def _without_corrupted(example) -> list[str]:
    return [p for p in example.patterns if p != example.metrics["corrupted_pattern"]]


def test_outside_drops_held_out_sequences_and_fills_to_the_size():
    tokens = np.array([[0, 1], [1, 1], [2, 0], [1, 2]])
    split = LabelledSet(tokens=tokens, pattern=np.array([0, -1, 0, -1]))
    kept, labels = outside(split, np.array([[1, 1], [2, 0]]), 5, vocab_size=3)
    assert kept.tolist() == [[0, 1], [1, 2], [0, 1], [1, 2], [0, 1]]
    assert labels.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_refinement_data_is_the_named_sets_and_holds_no_benchmark_sequence(examples, source):
    plans = Plans(source.config)
    example = examples[0]
    named = _without_corrupted(example)
    job = refine_job(example, example.degraded, named, plans, RefineConfig(epochs=1, train_size=250), seed=0)
    bench = plans(example.batch_id).data.benchmark.tokens
    vocab = source.config.patterns.vocab_size
    assert len(job.train_tokens) == 250
    assert not np.isin(sequence_keys(job.train_tokens, vocab), sequence_keys(bench, vocab)).any()
    library = pattern_library(source.config.patterns)
    member = np.stack([library[p].predicate(job.train_tokens) for p in named], axis=1).any(1)
    assert (job.train_labels == member).all()


def test_refinement_may_hold_out_another_judge_than_the_records_benchmark_set(examples, source):
    """An edit is judged on a benchmark set of its own: that one stays out of the data."""
    plans = Plans(source.config)
    example = examples[0]
    config = RefineConfig(epochs=1, train_size=250)
    plain = refine_job(example, example.degraded, list(example.patterns), plans, config, seed=0)
    judge = plain.train_tokens[:50]
    job = refine_job(example, example.degraded, list(example.patterns), plans, config, seed=0, held_out=judge)
    vocab = source.config.patterns.vocab_size
    assert len(job.train_tokens) == 250
    assert not np.isin(sequence_keys(job.train_tokens, vocab), sequence_keys(judge, vocab)).any()


def test_refining_on_the_true_set_restores_the_corrupted_pattern_and_without_it_does_not(examples, source):
    plans = Plans(source.config)
    config = RefineConfig(epochs=10, train_size=300)
    starts = [e.degraded for e in examples]
    true = refine(examples, starts, [list(e.patterns) for e in examples], plans, config, CPU, seed=0)
    without = refine(examples, starts, [_without_corrupted(e) for e in examples], plans, config, CPU, seed=0)
    assert nanmean(judge_repair(examples, true, plans)[0]) > 0.6
    assert nanmean(judge_repair(examples, without, plans)[0]) < 0.2


def test_refinement_is_reproducible_and_leaves_a_model_with_no_named_pattern_unchanged(examples, source):
    plans = Plans(source.config)
    config = RefineConfig(epochs=2, train_size=100)
    sets = [list(e.patterns) for e in examples[:3]] + [[]]
    starts = [e.degraded for e in examples[:4]]
    once = refine(examples[:4], starts, sets, plans, config, CPU, seed=3)
    again = refine(examples[:4], starts, sets, plans, config, CPU, seed=3)
    for a, b in zip(once, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(once[0], starts[0])
    np.testing.assert_array_equal(once[3], starts[3])


def test_eval_reports_refined_repair_from_the_decoded_and_the_degraded_weights(run_copy, interp_zoo, capsys):
    run = run_copy
    code, out, err = run_cli(capsys, "interpret", "eval", "--run", run, "--data", interp_zoo, "--split", "test", "--refine-epochs", "3")
    assert code == 0, err
    assert "repair refined on the named pattern set" in out
    test = json.loads((run / "report.json").read_text())["test"]
    assert set(test["refined_repair"]) == {"decoded", "degraded"}
    for figures in test["refined_repair"].values():
        assert set(figures) == {"repair_restored", "repair_side_effect", "negatives", "accuracy", "accuracy_restored"}
        assert 0.0 <= figures["accuracy"] <= 1.0
    assert test["refined_repair"]["decoded"] != test["refined_repair"]["degraded"]
    assert any(row["refined_restored"] is not None for row in test["by_corruption_rate"])
    assert "## Repair refined on the named pattern set" in (run / "report.md").read_text()


def test_eval_without_refinement_reports_no_refined_repair(run_copy, interp_zoo):
    from zoo.readers.interpreter.evaluate import evaluate

    run = run_copy
    test = evaluate(run, interp_zoo, splits=["test"], refine_epochs=0)["test"]
    assert "refined_repair" not in test
    assert all("refined_restored" not in row for row in test["by_corruption_rate"])
    assert "Repair refined" not in (run / "report.md").read_text()


def test_a_negative_refine_epochs_is_one_line_and_exit_2(interp_run, interp_zoo, capsys):
    code, out, err = run_cli(capsys, "interpret", "eval", "--run", interp_run, "--data", interp_zoo, "--refine-epochs", "-1")
    assert code == 2
    assert "--refine-epochs" in err and len(err.strip().splitlines()) == 1
