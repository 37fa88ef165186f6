"""`zoo export`: prompt/completion JSON Lines from a real tiny zoo, and answers parsed back into models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from zoo.export.prompts import (
    CompletionError,
    estimate_tokens,
    load_answer,
    parse_patterns,
    parse_sections,
    parse_weights,
)
from zoo.export.splits import options_from_cli, write_splits
from zoo.factory.manifest import Manifest
from zoo.factory.reader import read_records
from zoo.patterns.library import selectable
from zoo.factory.batch import zoo_identity
from zoo.config import dump_config
from zoo_fixture import TINY, run_cli, tiny_zoo, zoo_copy  # noqa: F401


def export(capsys, zoo_dir, out, *options) -> list[dict]:
    code, _, err = run_cli(capsys, "export", zoo_dir, "--out", out, *options)
    assert code == 0, err
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def records(tiny_zoo):
    return {row["example_id"]: row for row in read_records(tiny_zoo).to_pylist()}


@pytest.fixture(scope="module")
def exports(tiny_zoo, tmp_path_factory):
    """Modification exports in both layouts at precision 3, written through the library once."""
    from zoo.export.prompts import export_jsonl

    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for layout in ("separate", "interwoven"):
        path = folder / f"{layout}.jsonl"
        export_jsonl(tiny_zoo, path, task="modification", layout=layout, precision=3)
        out[layout] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def rounded(values, precision: int) -> np.ndarray:
    """The stored float32 values at ``precision`` decimals, as the text must hold them."""
    return np.round(np.asarray(values, dtype=np.float64), precision)


def prefixes(row) -> list[str]:
    return list(dict.fromkeys(entry["name"].rsplit(".", 1)[0] for entry in row["weight_layout"]))


@pytest.mark.parametrize("precision", [2, 5])
def test_completion_parses_to_clean_weights_rounded_at_precision(capsys, tiny_zoo, records, tmp_path, precision):
    lines = export(capsys, tiny_zoo, tmp_path / "m.jsonl", "--task", "modification", "--precision", precision)
    assert len(lines) == len(records)
    for line in lines:
        row = records[line["example_id"]]
        parsed = parse_weights(line["completion"], row["architecture"])
        expected = rounded(row["clean_weights"], precision).astype(np.float32)
        np.testing.assert_array_equal(parsed, expected)


def test_prompt_holds_degraded_weights_and_signature_rounded(exports, records):
    for line in exports["separate"]:
        row = records[line["example_id"]]
        sections = parse_sections(line["prompt"])
        weights = np.concatenate([sections[e["name"]].ravel() for e in row["weight_layout"]])
        np.testing.assert_array_equal(weights, rounded(row["degraded_weights"], 3))
        signature = np.concatenate([sections[f"{p}.signature"] for p in prefixes(row)])
        np.testing.assert_array_equal(signature, rounded(row["degraded_signature"], 3))


def test_interwoven_and_separate_hold_the_same_numbers(exports):
    for separate, interwoven in zip(exports["separate"], exports["interwoven"], strict=True):
        assert separate["example_id"] == interwoven["example_id"]
        a, b = parse_sections(separate["prompt"]), parse_sections(interwoven["prompt"])
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
        assert separate["completion"] == interwoven["completion"]


def test_interwoven_puts_every_layers_signature_right_after_its_weights(exports, records):
    for line in exports["interwoven"]:
        row = records[line["example_id"]]
        headers = [h.split()[1] for h in line["prompt"].splitlines() if h.startswith("### ")]
        expected = [name for p in prefixes(row) for name in (f"{p}.weight", f"{p}.bias", f"{p}.signature")]
        assert headers == expected
        sections = parse_sections(line["prompt"])
        widths = [*json.loads(row["architecture"])["widths"], 1]
        for prefix, width in zip(prefixes(row), widths, strict=True):
            assert sections[f"{prefix}.signature"].shape == (width, len(row["degraded_signature"][0]))


def test_prompt_names_the_corrupted_pattern_and_its_description(exports, records):
    from zoo.patterns.library import pattern_library

    library = pattern_library(TINY.patterns)
    for line in exports["separate"]:
        corrupted = records[line["example_id"]]["corrupted_pattern"]
        assert f"{corrupted} ({library[corrupted].description})" in line["prompt"]


def test_answer_loads_as_a_model_that_matches_the_clean_one(capsys, tiny_zoo, records, tmp_path):
    lines = export(capsys, tiny_zoo, tmp_path / "m.jsonl", "--task", "modification", "--precision", "6")
    tokens = torch.randint(0, TINY.patterns.vocab_size, (64, TINY.patterns.seq_len), generator=torch.Generator().manual_seed(0))
    for line in lines[:4]:
        row = records[line["example_id"]]
        with torch.no_grad():
            answer = load_answer(row, line["completion"])(tokens)
            clean = zoo.load_model(row, "clean")(tokens)
        assert torch.allclose(answer, clean, atol=1e-4)


@pytest.mark.parametrize("model, per", [("clean", "batch"), ("degraded", "record")])
def test_classification_completion_is_the_pattern_set(capsys, tiny_zoo, records, tmp_path, model, per):
    lines = export(capsys, tiny_zoo, tmp_path / "c.jsonl", "--task", "classification", "--model", model)
    expected = {row["batch_id"] for row in records.values()} if per == "batch" else set(records)
    assert len(lines) == len(expected)
    by_batch = {row["batch_id"]: sorted(row["patterns"]) for row in records.values()}
    for line in lines:
        batch = int(line["example_id"].split("/")[1])
        assert parse_patterns(line["completion"]) == by_batch[batch]
        question = line["prompt"].replace(", ".join(selectable(TINY.patterns)), "")  # the menu may say anything
        assert line["completion"] not in question


def test_messages_form_wraps_the_same_texts(capsys, tiny_zoo, tmp_path):
    plain = export(capsys, tiny_zoo, tmp_path / "p.jsonl", "--task", "modification", "--limit", "2")
    chat = export(capsys, tiny_zoo, tmp_path / "c.jsonl", "--task", "modification", "--limit", "2", "--messages")
    for p, c in zip(plain, chat, strict=True):
        assert c["prompt"] == [{"role": "user", "content": p["prompt"]}]
        assert c["completion"] == [{"role": "assistant", "content": p["completion"]}]


def test_length_table_is_printed(capsys, tiny_zoo, tmp_path):
    code, out, _ = run_cli(capsys, "export", tiny_zoo, "--task", "modification", "--out", tmp_path / "m.jsonl")
    assert code == 0
    for measure in ("prompt chars", "completion chars", "total tokens (est.)"):
        assert measure in out


def test_examples_over_max_chars_are_skipped_and_counted(capsys, tiny_zoo, records, tmp_path):
    full = export(capsys, tiny_zoo, tmp_path / "all.jsonl", "--task", "modification")
    totals = sorted(len(line["prompt"]) + len(line["completion"]) for line in full)
    limit = totals[len(totals) // 2]
    out = tmp_path / "short.jsonl"
    code, _, err = run_cli(capsys, "export", tiny_zoo, "--task", "modification", "--out", out, "--max-chars", limit)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    over = sum(t > limit for t in totals)
    assert code == 0
    assert len(kept) == len(totals) - over
    assert all(len(line["prompt"]) + len(line["completion"]) <= limit for line in kept)
    assert f"skipped {over} examples" in err


def test_nothing_under_max_chars_writes_nothing_and_exits_2(capsys, tiny_zoo, tmp_path):
    out = tmp_path / "none.jsonl"
    code, _, err = run_cli(capsys, "export", tiny_zoo, "--task", "modification", "--out", out, "--max-chars", 100)
    assert code == 2
    assert "over --max-chars 100" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(capsys, tiny_zoo, tmp_path):
    out = tmp_path / "m.jsonl"
    out.write_text("keep\n")
    code, _, err = run_cli(capsys, "export", tiny_zoo, "--task", "modification", "--out", out)
    assert code == 2 and "already exists" in err
    assert out.read_text() == "keep\n"
    code, _, _ = run_cli(capsys, "export", tiny_zoo, "--task", "modification", "--out", out, "--overwrite")
    assert code == 0 and out.read_text() != "keep\n"


@pytest.mark.parametrize("option", [["--task", "repair"], ["--task", "modification", "--layout", "diagonal"]])
def test_unknown_task_or_layout_exits_2(capsys, tiny_zoo, tmp_path, option):
    code, _, err = run_cli(capsys, "export", tiny_zoo, "--out", tmp_path / "x.jsonl", *option)
    assert code == 2 and "invalid choice" in err and len(err.strip().splitlines()) == 1


def test_empty_zoo_is_refused(capsys, tmp_path):
    zoo_id, config_hash = zoo_identity(TINY)
    Manifest.open(tmp_path / "empty", zoo_id=zoo_id, config_hash=config_hash)
    (tmp_path / "empty" / "config.yaml").write_text(dump_config(TINY))
    import pyarrow.parquet as pq

    from zoo.factory.batch import probe_set

    pq.write_table(probe_set(TINY).to_arrow(), tmp_path / "empty" / "probe.parquet")
    code, _, err = run_cli(capsys, "export", tmp_path / "empty", "--task", "modification", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "holds no records" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_unverified_zoo_is_refused(capsys, zoo_copy, tmp_path):
    shard = sorted(zoo_copy.glob("data/shard-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "export", zoo_copy, "--task", "modification", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "does not verify" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.jsonl").exists()


def test_export_of_a_split_holds_only_its_batches(capsys, zoo_copy, records, tmp_path):
    splits = write_splits(zoo_copy, options_from_cli(validation=0.25, test=0.25))
    lines = export(capsys, zoo_copy, tmp_path / "t.jsonl", "--task", "modification", "--split", "test")
    batches = {records[line["example_id"]]["batch_id"] for line in lines}
    assert batches == set(splits.batches("test"))
    assert len(lines) == splits.rows["test"]


def test_split_option_without_splits_exits_2(capsys, tiny_zoo, tmp_path):
    code, _, err = run_cli(capsys, "export", tiny_zoo, "--task", "modification", "--split", "test", "--out", tmp_path / "x")
    assert code == 2 and "zoo split" in err


# ---------------------------------------------------------------- the parser on its own


def _answer(records) -> tuple[dict, str]:
    from zoo.export.prompts import weights_text

    row = next(iter(records.values()))
    return row, weights_text(row["clean_weights"], row["weight_layout"], 3)


def test_parser_names_a_missing_tensor(records):
    row, text = _answer(records)
    truncated = text[: text.index("### head.bias")]
    with pytest.raises(CompletionError, match="no section head.bias"):
        parse_weights(truncated, row["architecture"])


def test_parser_names_a_tensor_with_too_few_numbers(records):
    row, text = _answer(records)
    lines = text.splitlines()
    damaged = "\n".join([lines[0], lines[1].rsplit(" ", 1)[0], *lines[2:]])
    with pytest.raises(CompletionError, match="layers.0.weight holds"):
        parse_weights(damaged, row["architecture"])


def test_parser_ignores_text_around_the_answer(records):
    row, text = _answer(records)
    chatty = "Here are the repaired weights:\n" + text + "\nI hope this helps."
    np.testing.assert_array_equal(parse_weights(chatty, row["architecture"]), parse_weights(text, row["architecture"]))


def test_parse_patterns_refuses_unknown_names():
    assert parse_patterns("palindrome, all_same") == ["all_same", "palindrome"]
    with pytest.raises(CompletionError, match="unknown"):
        parse_patterns("palindrome, wobbly", known=["palindrome"])


def test_token_estimate_counts_digit_groups_and_symbols():
    assert estimate_tokens("-0.123") == 4
    assert estimate_tokens("0.1234 7") == 5


def test_zoo_without_config_yaml_is_refused(capsys, zoo_copy, tmp_path):
    (zoo_copy / "config.yaml").unlink()
    code, _, err = run_cli(capsys, "export", zoo_copy, "--task", "modification", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "config.yaml" in err


def test_not_a_zoo_folder_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", tmp_path, "--task", "modification", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "not a zoo folder" in err
