"""`zoo split`: splits by batch (and OOD hold-outs), stored beside the manifest, materialized as Parquet."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from zoo.export.splits import (
    SPLIT_NAMES,
    BatchFacts,
    SplitsError,
    assign,
    load_splits,
    options_from_cli,
    write_splits,
)
from zoo.factory.batch import produce_shard
from zoo.factory.manifest import Manifest
from zoo.factory.reader import read_records
from zoo_fixture import TINY, run_cli, tiny_zoo, zoo_copy  # noqa: F401

PATTERNS = ("palindrome", "sorted_ascending", "all_same", "alternating", "valley")


def facts_of(zoo_dir) -> dict[int, dict]:
    """Per batch: patterns, architecture and row count, from the records."""
    out: dict[int, dict] = {}
    for row in read_records(zoo_dir, columns=["batch_id", "patterns", "architecture"]).to_pylist():
        entry = out.setdefault(row["batch_id"], {"patterns": set(row["patterns"]), "arch": json.loads(row["architecture"]), "rows": 0})
        entry["rows"] += 1
    return out


def synthetic(n: int, offset: int = 0) -> dict[int, BatchFacts]:
    """Batches whose pattern sets repeat (pairs of five patterns), as a large zoo's do."""
    pairs = [(a, b) for i, a in enumerate(PATTERNS) for b in PATTERNS[i + 1 :]]
    return {b: BatchFacts(pairs[b % len(pairs)], 1 + b % 3, (20 + b % 10,), "relu") for b in range(offset, offset + n)}


def test_every_batch_is_in_one_split_and_split_files_hold_its_rows(zoo_copy):
    splits = write_splits(zoo_copy, options_from_cli(validation=0.25, test=0.25), rows_per_file=3)
    facts = facts_of(zoo_copy)
    listed = [b for name in SPLIT_NAMES for b in splits.batches(name)]
    assert sorted(listed) == sorted(Manifest.open(zoo_copy, zoo_id=splits.zoo_id, config_hash=TINY.content_hash()).done_batches())
    for name in SPLIT_NAMES:
        ids = [b for f in splits.files[name] for b in pq.read_table(zoo_copy / f["path"], columns=["batch_id"]).column("batch_id").to_pylist()]
        assert sorted(ids) == sorted(b for b in splits.batches(name) for _ in range(facts.get(b, {"rows": 0})["rows"]))
        assert all(f["rows"] <= 3 for f in splits.files[name])


def test_split_files_keep_the_records_intact(zoo_copy):
    splits = write_splits(zoo_copy, options_from_cli(validation=0.25, test=0.25))
    original = {row["example_id"]: row for row in read_records(zoo_copy).to_pylist()}
    copied = [row for name in SPLIT_NAMES for f in splits.files[name] for row in pq.read_table(zoo_copy / f["path"]).to_pylist()]
    assert len(copied) == len(original)
    for row in copied:
        assert row == original[row["example_id"]]


def test_each_requested_split_gets_records_even_in_a_tiny_zoo(zoo_copy):
    splits = write_splits(zoo_copy, options_from_cli(validation=0.1, test=0.1))
    assert all(splits.rows[name] > 0 for name in ("train", "validation", "test"))


def test_same_seed_gives_identical_files(tiny_zoo, tmp_path):
    import shutil

    texts = []
    for i in range(2):
        folder = shutil.copytree(tiny_zoo, tmp_path / f"z{i}")
        write_splits(folder, options_from_cli(seed=3, validation=0.25, test=0.25))
        texts.append({p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and "split" in str(p)})
    assert texts[0] == texts[1]


def test_seed_changes_the_assignment():
    a = assign(synthetic(200), options_from_cli(seed=0))
    b = assign(synthetic(200), options_from_cli(seed=1))
    assert a != b


def test_fractions_are_close_to_the_requested_ones():
    result = assign(synthetic(4000), options_from_cli(validation=0.1, test=0.2))
    shares = {name: sum(s == name for s in result.values()) / len(result) for name in ("validation", "test")}
    assert abs(shares["validation"] - 0.1) < 0.02 and abs(shares["test"] - 0.2) < 0.02


def test_a_grown_zoo_keeps_the_splits_of_its_old_batches():
    before = assign(synthetic(1000), options_from_cli())
    after = assign({**synthetic(1000), **synthetic(1000, offset=1000)}, options_from_cli())
    assert all(after[b] == split for b, split in before.items())


def test_pattern_set_grouping_keeps_each_set_in_one_split():
    result = assign(synthetic(300), options_from_cli(group="pattern_set", validation=0.2, test=0.2))
    homes: dict[tuple, set] = {}
    for batch, facts in synthetic(300).items():
        homes.setdefault(tuple(sorted(facts.patterns)), set()).add(result[batch])
    assert all(len(splits) == 1 for splits in homes.values())
    assert {s for splits in homes.values() for s in splits} == {"train", "validation", "test"}


def test_held_out_activation_goes_to_ood_architecture(zoo_copy):
    facts = facts_of(zoo_copy)
    activation = facts[min(facts)]["arch"]["activation"]
    splits = write_splits(zoo_copy, options_from_cli(ood_activations=activation, validation=0, test=0))
    for batch, fact in facts.items():
        assert (splits.split_of(batch) == "ood_architecture") == (fact["arch"]["activation"] == activation)


def test_held_out_widths_and_depths_go_to_ood_architecture(zoo_copy):
    facts = facts_of(zoo_copy)
    splits = write_splits(zoo_copy, options_from_cli(ood_widths="9-10", ood_depths="2", validation=0, test=0))
    for batch, fact in facts.items():
        held = fact["arch"]["n_layers"] == 2 or any(9 <= w <= 10 for w in fact["arch"]["widths"])
        assert (splits.split_of(batch) == "ood_architecture") == held


def test_held_out_combination_goes_to_ood_patterns(zoo_copy):
    facts = facts_of(zoo_copy)
    combo = sorted(facts[min(facts)]["patterns"])[:2]
    splits = write_splits(zoo_copy, options_from_cli(ood_patterns="+".join(combo), validation=0, test=0))
    for batch, fact in facts.items():
        assert (splits.split_of(batch) == "ood_patterns") == (set(combo) <= fact["patterns"])


def test_splits_json_records_the_options_and_reloads(zoo_copy):
    options = options_from_cli(seed=5, validation=0.2, test=0.3, ood_depths="2")
    written = write_splits(zoo_copy, options)
    data = json.loads((zoo_copy / "splits.json").read_text())
    assert data["options"] == options.model_dump(mode="json")
    loaded = load_splits(zoo_copy)
    assert loaded.assignment == written.assignment and loaded.options == options


def test_load_splits_refuses_a_zoo_that_grew_since(zoo_copy):
    write_splits(zoo_copy, options_from_cli())
    bigger = TINY.model_copy(update={"batches": 9})
    manifest = Manifest.open(zoo_copy, zoo_id=load_splits(zoo_copy).zoo_id, config_hash=TINY.content_hash())
    manifest.add(produce_shard(bigger, (8,), zoo_copy)[0])
    with pytest.raises(SplitsError, match="rerun `zoo split"):
        load_splits(zoo_copy)


def test_load_splits_without_a_split_says_how_to_make_one(tiny_zoo):
    with pytest.raises(SplitsError, match="run `zoo split"):
        load_splits(tiny_zoo)


def test_split_of_an_unknown_batch_raises(zoo_copy):
    splits = write_splits(zoo_copy, options_from_cli())
    with pytest.raises(SplitsError, match="batch 99"):
        splits.split_of(99)


def test_resplitting_with_other_options_needs_overwrite(capsys, zoo_copy):
    assert run_cli(capsys, "split", zoo_copy)[0] == 0
    before = (zoo_copy / "splits.json").read_text()
    code, _, err = run_cli(capsys, "split", zoo_copy, "--seed", "7")
    assert code == 2 and "--overwrite" in err and "seed" in err
    assert (zoo_copy / "splits.json").read_text() == before
    assert run_cli(capsys, "split", zoo_copy, "--seed", "7", "--overwrite")[0] == 0
    assert json.loads((zoo_copy / "splits.json").read_text())["options"]["seed"] == 7


def test_resplit_replaces_old_split_files(zoo_copy):
    write_splits(zoo_copy, options_from_cli(), rows_per_file=1)
    splits = write_splits(zoo_copy, options_from_cli(seed=1), overwrite=True)
    on_disk = sorted(str(p.relative_to(zoo_copy)) for p in (zoo_copy / "splits").rglob("*.parquet"))
    assert on_disk == sorted(f["path"] for files in splits.files.values() for f in files)


@pytest.mark.parametrize(
    "option, message",
    [
        (["--ood-activations", "swish"], "ood_activations"),
        (["--ood-activations", "gelu", "--ood-widths", "50-60"], "outside the config's widths"),
        (["--ood-depths", "3"], "outside the config's depths"),
        (["--ood-patterns", "palindrome+wobbly"], "wobbly"),
        (["--ood-widths", "wide"], "not a width"),
        (["--validation", "0.5", "--test", "0.5"], "nothing to train on"),
    ],
)
def test_bad_split_options_exit_2_with_one_line(capsys, zoo_copy, option, message):
    code, _, err = run_cli(capsys, "split", zoo_copy, *option)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (zoo_copy / "splits.json").exists()


def test_holding_out_everything_leaves_no_train_and_is_refused(capsys, zoo_copy):
    code, _, err = run_cli(capsys, "split", zoo_copy, "--ood-depths", "1,2")
    assert code == 2 and "left for train" in err
    assert not (zoo_copy / "splits").exists()


def test_held_out_family_sends_every_batch_of_it_and_only_it_to_ood_architecture():
    facts = synthetic(40)
    for batch in range(0, 40, 2):  # every other batch a transformer (no widths or activation of its own)
        facts[batch] = BatchFacts(facts[batch].patterns, 2, (), "", "transformer")
    for held, other in (("transformer", "mlp"), ("mlp", "transformer")):
        result = assign(facts, options_from_cli(ood_families=held))
        assert all((result[b] == "ood_architecture") == (f.family == held) for b, f in facts.items())
        assert {result[b] for b, f in facts.items() if f.family == other} == {"train", "validation", "test"}


def test_a_family_the_config_does_not_draw_is_refused_in_one_line(capsys, zoo_copy):
    code, _, err = run_cli(capsys, "split", zoo_copy, "--ood-families", "transformer")
    assert code == 2 and "not a family the config draws (mlp)" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "split", zoo_copy, "--ood-families", "mlp")
    assert code == 2 and "leaves no family to train on" in err


def test_splits_made_before_ood_families_existed_refresh_without_overwrite(zoo_copy):
    write_splits(zoo_copy, options_from_cli())
    data = json.loads((zoo_copy / "splits.json").read_text())
    del data["options"]["ood_families"]  # as an older zoo wrote it
    (zoo_copy / "splits.json").write_text(json.dumps(data))
    assert write_splits(zoo_copy, options_from_cli()).options.ood_families == []
