"""docs/reference/ is generated from the code (`python -m zoo.reference`): it must be current,
complete and the same on every machine."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from zoo import reference

FIX = "the generated reference is stale: run `python -m zoo.reference` and commit docs/reference/"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return reference.generate()


def test_committed_reference_is_current(generated):
    stale = []
    for name, text in generated.items():
        path = reference.REFERENCE_DIR / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(str(path.relative_to(reference.REPO_ROOT)))
    assert not stale, f"{FIX} ({', '.join(stale)})"


def test_generation_is_deterministic_and_machine_independent(generated):
    assert reference.generate() == generated
    for name, text in generated.items():
        assert str(reference.REPO_ROOT) not in text, name
        assert not re.search(r" at 0x[0-9a-f]+", text), f"{name}: an object repr leaked into the reference"


def test_config_reference_lists_every_field_of_every_model(generated):
    from zoo.config import ZooConfig

    text = generated["config.md"]
    seen = set()
    pending = [ZooConfig]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        assert f"`{model.__module__}.{model.__name__}`" in text
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name}"
        pending += reference._nested_models(model)
    for title, _, roots in reference._config_sections():
        assert f"## {title}" in text
        for root in roots:
            assert f"`{root.__module__}.{root.__name__}`" in text
    titles = [title for title, _, _ in reference._config_sections()]
    assert {"Reader: interpreter", "Reader: probes"} <= set(titles)
    # an empty description shows as a dash, never as an empty cell
    assert "|  |" not in text


def test_records_reference_lists_every_column_with_its_type(generated):
    from zoo.factory.schema import COLUMN_DOCS, record_schema

    text = generated["records.md"]
    for field in record_schema(1):
        assert f"| `{field.name}` |" in text
        assert COLUMN_DOCS[field.name].split()[0] in text
    assert "fixed_size_list<item: float>[n_stats]" in text


def test_cli_reference_holds_every_command(generated):
    from zoo.cli import build_parser

    text = generated["cli.md"]
    for parser in reference._walk(build_parser()):
        assert f"## {parser.prog}\n" in text
        assert f"usage: {parser.prog}" in text


def test_check_mode_reports_stale_files_and_writes_nothing(tmp_path):
    assert reference.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.md", "config.md", "records.md"]
    assert reference.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "records.md").write_text("old\n")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    done = subprocess.run(
        [sys.executable, "-m", "zoo.reference", "--check", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "records.md" in done.stderr and "config.md" not in done.stderr
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
