"""`zoo card`: the Hugging Face dataset card, and `datasets` loading every split it declares."""

from __future__ import annotations

import json

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import zoo  # noqa: E402
from zoo.export.card import MARKER, card_data_files, write_card  # noqa: E402
from zoo.export.splits import options_from_cli, write_splits  # noqa: E402
from zoo.factory.reader import read_records  # noqa: E402
from zoo.factory.schema import COLUMN_DOCS  # noqa: E402
from zoo_fixture import TINY, run_cli, tiny_zoo, zoo_copy  # noqa: E402,F401


@pytest.fixture(scope="module")
def split_zoo(tiny_zoo, tmp_path_factory):
    """A copy of the tiny zoo with OOD splits, several files per split, and its card."""
    import shutil

    folder = shutil.copytree(tiny_zoo, tmp_path_factory.mktemp("card") / "zoo")
    facts = read_records(folder, columns=["architecture"]).to_pylist()
    splits = write_splits(
        folder,
        options_from_cli(validation=0.2, test=0.2, ood_activations=json.loads(facts[0]["architecture"])["activation"]),
        rows_per_file=2,
    )
    write_card(folder)
    return folder, splits


def front_matter_files(folder) -> dict[str, list[str]]:
    return card_data_files((folder / "README.md").read_text())


def test_each_split_loads_with_its_row_count(split_zoo, tmp_path):
    folder, splits = split_zoo
    files = front_matter_files(folder)
    assert set(files) == {name for name, rows in splits.rows.items() if rows}
    for split, paths in files.items():
        ds = datasets.load_dataset(
            "parquet", data_files={split: [str(folder / p) for p in paths]}, split=split, cache_dir=str(tmp_path)
        )
        assert ds.num_rows == splits.rows[split]
        assert set(ds["batch_id"]) == set(splits.batches(split))


def test_the_folder_loads_through_the_cards_configs(split_zoo, tmp_path):
    folder, splits = split_zoo
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path))
    assert {name: ds.num_rows for name, ds in loaded.items()} == {n: r for n, r in splits.rows.items() if r}


def test_unsplit_zoo_is_one_train_split_of_every_shard(zoo_copy, tmp_path):
    write_card(zoo_copy)
    files = front_matter_files(zoo_copy)
    assert files == {"train": sorted(f"data/{p.name}" for p in zoo_copy.glob("data/shard-*.parquet"))}
    loaded = datasets.load_dataset(str(zoo_copy), split="train", cache_dir=str(tmp_path))
    assert loaded.num_rows == read_records(zoo_copy, columns=["batch_id"]).num_rows


def test_a_loaded_row_rebuilds_the_same_model(split_zoo, tmp_path):
    folder, _ = split_zoo
    ds = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path))
    row = ds[0]
    stored = {r["example_id"]: r for r in read_records(folder).to_pylist()}[row["example_id"]]
    tokens = torch.randint(0, TINY.patterns.vocab_size, (16, TINY.patterns.seq_len))
    with torch.no_grad():
        for which in ("clean", "degraded"):
            np.testing.assert_array_equal(zoo.load_model(row, which)(tokens), zoo.load_model(stored, which)(tokens))


def test_card_front_matter_has_the_hub_fields(split_zoo):
    import yaml

    text = (split_zoo[0] / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "apache-2.0"
    assert meta["task_categories"] and "interpretability" in meta["tags"]
    assert meta["size_categories"] == ["n<1K"]


def test_card_documents_every_column(split_zoo):
    text = (split_zoo[0] / "README.md").read_text()
    for name, doc in COLUMN_DOCS.items():
        assert f"| `{name}` |" in text and doc in text


def test_card_tables_patterns_with_descriptions_and_counts(split_zoo):
    from zoo.patterns.library import pattern_library, selectable

    folder, _ = split_zoo
    text = (folder / "README.md").read_text()
    records = read_records(folder, columns=["patterns"]).column("patterns").to_pylist()
    library = pattern_library(TINY.patterns)
    for name in selectable(TINY.patterns):
        pattern = library[name]
        count = sum(name in patterns for patterns in records)
        assert f"| `{name}` | {pattern.description} | {count:,} |" in text


def test_card_holds_config_statistics_and_usage(split_zoo):
    folder, _ = split_zoo
    text = (folder / "README.md").read_text()
    assert (folder / "config.yaml").read_text().strip() in text
    assert "| degradation of the corrupted pattern |" in text
    assert "zoo.load_model(row" in text and "load_dataset(" in text


def test_card_refuses_to_replace_a_hand_written_readme(capsys, zoo_copy):
    (zoo_copy / "README.md").write_text("# mine\n")
    code, _, err = run_cli(capsys, "card", zoo_copy)
    assert code == 2 and "--overwrite" in err
    assert (zoo_copy / "README.md").read_text() == "# mine\n"
    assert run_cli(capsys, "card", zoo_copy, "--overwrite")[0] == 0
    assert MARKER in (zoo_copy / "README.md").read_text()


def test_card_of_an_unverified_zoo_exits_2(capsys, zoo_copy):
    next(zoo_copy.glob("data/shard-*.parquet")).unlink()
    code, _, err = run_cli(capsys, "card", zoo_copy)
    assert code == 2 and "does not verify" in err
    assert not (zoo_copy / "README.md").exists()
