"""The CLI as a person meets it: `--version`, every command's help, tables that fit 80 columns,
and a `zoo publish --dry-run` that makes no network calls."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import zoo
from zoo.cli import HelpFormatter, build_parser
from zoo.reference import _help_width, _walk
from zoo_fixture import run_cli, tiny_zoo, zoo_copy  # noqa: F401

WIDTH = 80
SCHEMA1_ZOO = Path(__file__).parent / "data" / "zoo-schema1"


# ---------------------------------------------------------------- --version and --help


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"zoo {zoo.__version__}\n"


def _parsers() -> list[argparse.ArgumentParser]:
    return list(_walk(build_parser()))


def test_the_tree_holds_every_command_and_sub_command():
    progs = {p.prog for p in _parsers()}
    for prog in ("zoo generate", "zoo interpret train", "zoo interpret eval", "zoo probe model", "zoo tune probes"):
        assert prog in progs


def test_every_command_has_a_description_and_every_flag_a_help():
    problems = []
    for parser in _parsers():
        if not (parser.description or "").strip():
            problems.append(f"{parser.prog}: no description")
        if parser.formatter_class is not HelpFormatter:
            problems.append(f"{parser.prog}: formatter {parser.formatter_class.__name__}, not zoo.cli.HelpFormatter")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if (choice.help or "").strip()}
                problems += [f"{parser.prog} {name}: no help line" for name in action.choices if name not in helped]
                continue
            if action.help is argparse.SUPPRESS:  # deliberately hidden (zoo job-id --workers)
                continue
            if not (action.help or "").strip():
                problems.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not problems, "\n".join(problems)


def test_help_shows_defaults_but_never_an_empty_one():
    with _help_width(WIDTH):
        texts = {parser.prog: " ".join(parser.format_help().split()) for parser in _parsers()}
    assert "(default: 48)" in texts["zoo bench"]
    assert "(default: best)" in texts["zoo interpret eval"]
    assert "(0: in-process; default: 0)" in texts["zoo probe zoo"]
    for prog, text in texts.items():
        assert "(default: None)" not in text and "(default: False)" not in text, prog
        assert "%(default)" not in text, prog


def test_help_fits_80_columns():
    with _help_width(WIDTH):
        for parser in _parsers():
            long = [line for line in parser.format_help().splitlines() if len(line) > WIDTH]
            assert not long, f"{parser.prog}: {long}"


def test_help_runs_for_every_command(capsys):
    for parser in _parsers():
        args = parser.prog.split()[1:] + ["--help"]
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(args)
        assert exit_.value.code == 0
        assert "usage: " + parser.prog in capsys.readouterr().out


# ---------------------------------------------------------------- tables at 80 columns


def _render(*renderables) -> str:
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    for item in renderables:
        console.print(item)
    return console.export_text()


def _assert_fits(text: str, *values: str) -> None:
    lines = text.splitlines()
    assert lines, "nothing rendered"
    assert max(len(line) for line in lines) <= WIDTH, "\n".join(line for line in lines if len(line) > WIDTH)
    assert "…" not in text, text
    for value in values:  # figures are never wrapped, folded or cut
        assert value in text, f"{value!r} not shown whole:\n{text}"


def _column(text: str, index: int) -> str:
    """Column ``index`` (0 the first) of a boxed table, its cells' lines joined: a folded value comes back whole."""
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│")]
    return "".join(cells[index].strip() for cells in rows if len(cells) > index)


LONG_OUT = "/data/some/rather/deeply/nested/folder/of/zoos/zoo-quickstart-with-a-long-name-1a2b3c4d"


def test_inspect_tables_fit(capsys):
    from zoo.factory.summary import render_summary

    stats = {"mean": 0.912, "min": 0.501, "p50": 0.934, "max": 1.0}
    summary = {
        "rows": 123_456_789, "batches": 1_234_567, "batches_with_rows": 1_234_500, "shards": 154_321,
        "models": 124_691_289, "bytes": 987_654_321_000, "bytes_per_model": 7_921.4,
        "patterns": {"sorted_descending": 12_345_678, "first_equals_last": 9_876_543, "contains_ABC": 5},
        "corrupted": {"sorted_descending": 1_234_567, "first_equals_last": 987_654},
        "degradation": stats, "clean_accuracy": stats, "degraded_accuracy": stats,
        "architectures": {
            "family": {"mlp": 123_456_789}, "n_layers": {"1": 41_000_000, "2": 41_000_000},
            "activation": {"leaky_relu": 24_000_000, "sigmoid": 24_000_000},
            "width": {"33-40": 100_000_000, "41-48": 23_456_789},
        },
        "quantization": {"ternary": 123_456_789},
    }
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    render_summary(summary, console)
    _assert_fits(console.export_text(), "123,456,789", "sorted_descending", "leaky_relu", "987,654.3 MB")
    if (SCHEMA1_ZOO / "zoo.json").is_file():  # the real command on a committed zoo
        code, out, err = run_cli(capsys, "inspect", SCHEMA1_ZOO)
        assert code == 0, err
        _assert_fits(out)


def test_bench_and_generate_tables_fit():
    from zoo.bench import BenchResult, render_bench
    from zoo.factory.runner import RunSummary, render_run_summary

    result = BenchResult(
        models=65_536, reference_models=48, device="cuda (NVIDIA H200)", threads=16, population_seconds=1234.56,
        reference_seconds=98.76, population_models_per_s=53.1, reference_models_per_s=0.5, speedup=106.2,
        population_accuracy=0.987, reference_accuracy=0.986, train_gflop_per_s=1234.5, matmul_peak_gflop_per_s=50_000.0,
    )
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    render_bench(result, console)
    _assert_fits(console.export_text(), "1234.56", "0.987", "65536")
    run = RunSummary(
        zoo_id="quickstart-1a2b3c4d5e6f7a8b", out=LONG_OUT, workers=64, batches_total=1_000_000, batches_skipped=12,
        batches=999_988, shards=125_000, kept=3_999_000, dropped=952, models=4_999_940, seconds=123_456.7,
        models_per_second=40.5, bytes=987_654_321_000, zoo_bytes=987_654_321_000, retries=3,
    )
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    render_run_summary(run, console)
    text = console.export_text()
    _assert_fits(text, "3,999,000", "987,654.32 MB")
    assert LONG_OUT in _column(text, 1)  # the long path folds, whole


def test_export_split_and_publish_tables_fit():
    from zoo.export.commands import _print_plan, export_table, splits_table
    from zoo.export.prompts import ExportReport
    from zoo.export.publish import LocalFile, UploadPlan

    report = ExportReport(
        Path("out.jsonl"), written=1_234_567,
        prompt_chars=[123_456, 2_345_678], completion_chars=[98_765, 1_234_567],
        prompt_tokens=[45_678, 876_543], total_tokens=[67_890, 1_234_567],
    )
    splits = splits_table(LONG_OUT, [("train", 800_000, 3_200_000, 640), ("ood_architecture", 50_000, 200_000, 40)])
    _assert_fits(_render(export_table(report, "modification", "interwoven"), splits), "2,345,678", "3,200,000", "ood_architecture")

    def local(path: str) -> LocalFile:
        return LocalFile(path, Path(path), 123_456_789, "sha", "git")

    files = [local(f"splits/ood_architecture/ood_architecture-{i:05d}-of-00040.parquet") for i in range(3)]
    plan = UploadPlan("someone/a-rather-long-zoo-repository-name", commits=[files, [local("README.md")]])
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    _print_plan(plan, console)
    text = console.export_text()
    _assert_fits(text, "123,456,789")
    assert "splits/ood_architecture/ood_architecture-00002-of-00040.parquet" in _column(text, 1)


def _report() -> dict:
    figures = {
        "exact_match": 0.123, "macro_f1": 0.456, "corrupted_pattern_accuracy": 0.789, "accuracy_mae": 0.012,
        "repair_restored": 0.345, "repair_side_effect": -0.012, "repair_negatives": 0.901, "repair_accuracy": 0.876,
    }
    baseline = dict(figures, repair_restored=None, repair_side_effect=None)
    refined = {"repair_restored": 0.5, "repair_side_effect": 0.011, "negatives": 0.9, "accuracy": 0.8}
    splits = ("validation", "test", "ood_architecture", "ood_patterns")
    report: dict = {s: dict(figures, refined_repair={"decoded": refined, "degraded": refined}) for s in splits}
    report["baselines"] = {name: {s: baseline for s in splits} for name in ("weight_statistics", "output_only")}
    report["ensembles"] = {"interpreter+output_only": {s: baseline for s in splits}}
    report["thresholds"] = {}
    return report


def test_interpreter_report_tables_fit():
    from zoo.readers.interpreter.commands import report_tables

    text = _render(*report_tables(_report(), "runs/interpreter-quickstart-with-a-long-name"))
    _assert_fits(text, "interpreter+output_only", "weight_statistics", "ood_architecture", "-0.012", "0.876")
    assert "repair refined on the named pattern set" in text


def test_interpreter_edit_and_survey_tables_fit():
    from zoo.readers.interpreter.edit import render_edit, render_survey

    labels = ["degraded", "repaired", "edited", "edited_refined", "degraded_refined"]
    names = ["sorted_descending", "sorted_ascending", "first_equals_last", "contains_ABC", "starts_with_A"]
    result = {
        "model": "quickstart-1a2b3c4d5e6f7a8b/000123/3", "architecture": "mlp 3x[48, 48, 48] leaky_relu",
        "edit": "add", "pattern": "first_equals_last", "strength": 1.0, "refine_epochs": 5, "asked_set": names[:3],
        "per_pattern_accuracy": {
            n: {"trained_on": i % 2 == 0, "corrupted": i == 0, **{label: 0.123 for label in labels}} for i, n in enumerate(names)
        },
        "negative_accuracy": {label: 0.987 for label in labels},
        "predicted_patterns": {"before": names[:2], "after": names[:3]},
        "saved": LONG_OUT + "/edited.safetensors",
    }
    summary = {"records": 12, **{label: {"pattern": 0.5, "met": 0.25, "others": 0.75, "negatives": 0.9} for label in labels}}
    survey = {"records": 12, "split": "ood_architecture", "refine_epochs": 5, "add": summary, "remove": {"records": 0}}
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    render_edit(result, console)
    render_survey(survey, console)
    _assert_fits(console.export_text(), "sorted_descending", "first_equals_last", "0.987", "0.250")


def test_tune_and_probe_tables_fit():
    from zoo.readers import tune as front
    from zoo.readers.interpreter.tune import Distribution, TuneSettings
    from zoo.readers.probes.commands import probe_table
    from zoo.readers.probes.config import ProbeTuneConfig

    def result(settings, rows):
        folder = Path(LONG_OUT) / "runs" / "tune" / settings.name
        return front.SweepResult(rows, rows[0], None, folder / front.BEST_FILE, str(folder), folder, settings)

    space = {name: Distribution(loguniform=(1e-4, 1e-2)) for name in ("optimizer.lr", "optimizer.weight_decay", "loss.repair", "model.dropout")}
    settings = TuneSettings(space=space)
    rows = [
        {"trial": f"1a2b3_{i:05d}", "best_val_objective": 1.23456, "epochs_run": 40, **{k: 0.000123456 for k in space}}
        for i in range(3)
    ]
    console = Console(width=WIDTH, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    front.render(result(settings, rows), console)
    _assert_fits(console.export_text())

    probes = ProbeTuneConfig()  # the shipped space: lr, weight_decay, epochs, betas, optimizer, scheduler.factor
    trials = [
        {"trial": f"1a2b3_{i:05d}", "best_val_accuracy": 0.000123456, "epochs_run": 100, **{k: 0.000123456 for k in probes.space}}
        for i in range(3)
    ]
    for trial in trials:
        trial["betas"] = [0.9, 0.999]
    layers = [0, 1, 2, 3]
    per_layer = {str(layer): 0.987 for layer in layers}
    report = {
        "model": {"name": "quickstart-1a2b3c4d5e6f7a8b/000123/3 (degraded)"},
        "per_layer_accuracy": per_layer, "per_layer_control_accuracy": per_layer, "per_layer_selectivity": per_layer,
        "random_init": {"per_layer_accuracy": per_layer},
    }
    _assert_fits(_render(front.table(result(probes, trials)), probe_table(layers, report)), "0.987")


# ---------------------------------------------------------------- zoo publish --dry-run


@pytest.fixture
def ready_zoo(zoo_copy):  # noqa: F811
    from zoo.export.card import write_card
    from zoo.export.splits import options_from_cli, write_splits

    write_splits(zoo_copy, options_from_cli(validation=0.25, test=0.25), rows_per_file=2)
    write_card(zoo_copy)
    return zoo_copy


def test_dry_run_on_a_closed_endpoint_offline_passes(ready_zoo, tmp_path):
    """As the issue asks: HF_ENDPOINT a closed port, HF_HUB_OFFLINE=1, no token: the plan is printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    done = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "publish", str(ready_zoo), "--repo-id", "someone/tiny-zoo", "--dry-run"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing was uploaded" in done.stdout
    assert "README.md" in done.stdout


def test_dry_run_opens_no_connection_even_online(ready_zoo, tmp_path, monkeypatch, capsys):
    """Not offline, a closed endpoint: still no socket is ever connected (the repository is not read)."""
    for name in [k for k in os.environ if k.startswith(("HF_", "HUGGING_FACE"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"no network in this test ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(None, host))
    code, out, err = run_cli(capsys, "publish", ready_zoo, "--repo-id", "someone/tiny-zoo", "--dry-run")
    assert code == 0, err
    assert attempts == []
    assert "nothing was uploaded" in out and "could not be read" not in out
    assert "makes no network calls" in " ".join(out.split())


# ---------------------------------------------------------------- progress bars


def test_progress_bar_is_hidden_off_a_terminal():
    from zoo.progress import no_progress, progress_bar

    with progress_bar("working") as progress:  # pytest's stderr is not a terminal
        assert progress is no_progress
    with progress_bar("working", enabled=False, console=Console(force_terminal=True, file=open(os.devnull, "w"))) as progress:  # noqa: SIM115
        assert progress is no_progress


def test_progress_bar_on_a_terminal_follows_phases_and_clears():
    import io

    from zoo.progress import no_progress, progress_bar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=WIDTH, color_system=None)
    with progress_bar("working", console=console) as progress:
        assert progress is not no_progress
        progress(0, None, "fitting the baselines")
        progress(3, 10, "test: refining from the decoded weights")
        progress(10, 10)
        progress(1, None, "test: scoring the repairs")
    text = out.getvalue()
    assert "test: scoring the repairs" in text  # drawn at least once (on stop), then cleared: transient
