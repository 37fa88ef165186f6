"""The Hugging Face dataset card (``README.md``) of a zoo folder.

YAML front matter (license, task categories, tags, size category, and ``configs``
whose ``data_files`` list, per split, the Parquet files holding that split's
rows), then the generating config, the schema with a sentence per column, the
pattern table, accuracy and degradation statistics, and a snippet that loads the
data with ``datasets`` and rebuilds a model with zoo.

Without ``splits.json`` every record is in one ``train`` split read straight from
the shards; with it, the splits' own files (``zoo split`` writes them).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import yaml

from zoo.export.common import CONFIG_FILE, ExportError, ZooFolder, open_zoo
from zoo.export.splits import SPLITS_FILE, check_split_files, load_splits, split_counts
from zoo.factory.schema import COLUMN_DOCS
from zoo.storage import Store, resolve

CARD_FILE = "README.md"
MARKER = "<!-- written by `zoo card`: rerunning it replaces this file -->"
LICENSE = "apache-2.0"
TAGS = ("interpretability", "model-zoo", "weight-space-learning", "synthetic", "neural-network-weights")


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    bounds += [(10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, name in bounds:
        if rows < bound:
            return name
    return "n>1B"


def data_files(folder: ZooFolder) -> dict[str, list[str]]:
    """Per split, the Parquet files (relative to the folder) that hold exactly its rows."""
    if folder.store.is_file(SPLITS_FILE):
        splits = load_splits(folder.store)
        check_split_files(folder.store, splits)
        return splits.data_files()
    return {"train": folder.shard_names}


def front_matter(folder: ZooFolder, files: dict[str, list[str]], license: str = LICENSE) -> dict:
    return {
        "license": license,
        "pretty_name": f"zoo {folder.info.zoo_id}",
        "task_categories": ["tabular-classification"],
        "tags": list(TAGS),
        "size_categories": [size_category(len(folder))],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": paths} for split, paths in files.items()],
            }
        ],
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _schema_section(folder: ZooFolder) -> str:
    schema = pq.read_schema(folder.shards[0]) if folder.shards else None
    rows = []
    for name, doc in COLUMN_DOCS.items():
        typ = str(schema.field(name).type) if schema is not None and name in schema.names else "-"
        rows.append([f"`{name}`", f"`{typ}`", doc])
    stats = ", ".join(f"`{s}`" for s in folder.signature_stats)
    return (
        "## Schema\n\nOne row per kept (degraded, clean) pair; the clean model repeats in every pair of its batch.\n\n"
        + _table(["column", "type", "description"], rows)
        + f"\n\nSignature columns, in order: {stats}.\n"
    )


def _patterns_section(folder: ZooFolder, summary: dict) -> str:
    from zoo.patterns.library import pattern_library, selectable

    library = pattern_library(folder.config.patterns)
    in_set, corrupted = summary["patterns"], summary["corrupted"]
    rows = []
    for name in selectable(folder.config.patterns):
        share = in_set.get(name, 0) / summary["rows"] if summary["rows"] else 0.0
        rows.append([f"`{name}`", library[name].description, f"{in_set.get(name, 0):,}", f"{share:.1%}", f"{corrupted.get(name, 0):,}"])
    return "## Patterns\n\n" + _table(["pattern", "description", "records with it", "share", "corrupted in"], rows) + "\n"


def _statistics_section(summary: dict) -> str:
    rows = [
        [label, *(_fmt(summary[key][s]) for s in ("mean", "min", "p50", "max"))]
        for label, key in (
            ("degradation of the corrupted pattern", "degradation"),
            ("clean model accuracy", "clean_accuracy"),
            ("degraded model accuracy", "degraded_accuracy"),
        )
    ]
    arch = summary["architectures"]
    lines = [
        "## Accuracy and degradation\n",
        "Accuracies are on clean held-out benchmark sets; degradation is the clean minus the degraded model's "
        "accuracy on the corrupted pattern.\n",
        _table(["metric", "mean", "min", "p50", "max"], rows),
        "",
        "## Architectures\n",
        _table(
            ["feature", "counts (records)"],
            [
                [feature.replace("_", " "), ", ".join(f"{value}: {count:,}" for value, count in arch[feature].items())]
                for feature in ("n_layers", "activation", "width")
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def _splits_section(folder: ZooFolder) -> str:
    if not folder.store.is_file(SPLITS_FILE):
        return (
            "## Splits\n\nNo split was made: every record is in `train`. `zoo split` assigns train, validation, "
            "test and out-of-distribution splits by batch.\n"
        )
    splits = load_splits(folder.store)
    rows = [[f"`{name}`", f"{batches:,}", f"{n:,}", str(files)] for name, batches, n, files in split_counts(splits)]
    options = yaml.safe_dump(splits.options.model_dump(mode="json"), sort_keys=False).strip()
    return (
        "## Splits\n\nAssigned by batch (a batch's pattern set, architecture draw and initialization stay in one "
        f"split), as `{SPLITS_FILE}` records; held-out architectures go to `ood_architecture`, held-out pattern "
        "combinations to `ood_patterns`.\n\n"
        + _table(["split", "batches", "records", "files"], rows)
        + f"\n\nOptions:\n\n```yaml\n{options}\n```\n"
    )


def _usage_section(folder: ZooFolder, repo_id: str | None, first_split: str) -> str:
    source = f'"{repo_id}"' if repo_id else '"path/to/this/folder"  # or the Hub repository id'
    space = folder.config.patterns
    return f"""## Usage

```python
from datasets import load_dataset
import torch
import zoo  # the package that made this dataset

ds = load_dataset({source}, split="{first_split}")
row = ds[0]
clean = zoo.load_model(row, "clean")        # a torch.nn.Module, rebuilt from the row's arrays
degraded = zoo.load_model(row, "degraded")
tokens = torch.randint(0, {space.vocab_size}, (4, {space.seq_len}))  # token ids, 0 = A
print(row["patterns"], row["corrupted_pattern"], clean(tokens), degraded(tokens))
```

`zoo export` turns the records into prompt/completion JSON Lines for language-model interpreters.
"""


def build_card(zoo_dir: str | Path | Store, *, repo_id: str | None = None, license: str = LICENSE) -> str:
    """The card's text for a verified zoo folder."""
    from zoo.factory.summary import summarize

    folder = open_zoo(zoo_dir, task="zoo card")
    files = data_files(folder)
    if not files:
        raise ExportError(f"{folder.path}: no split holds records")
    summary = summarize(folder.store)
    head = yaml.safe_dump(front_matter(folder, files, license), sort_keys=False, width=1000)
    config_text = folder.store.read_bytes(CONFIG_FILE).decode("utf-8", "replace").strip()
    intro = (
        f"# zoo {folder.info.zoo_id}\n\n"
        f"A model zoo made by zoo: {summary['rows']:,} (degraded, clean) pairs of small "
        f"{', '.join(summary['architectures']['family'])} classifiers from {summary['batches']:,} batches "
        f"({summary['models']:,} distinct models). Each clean model was trained to detect a set of sequence "
        "patterns; its degraded twin shares its initialization and data order but saw one pattern's labels "
        "flipped. Every model comes with its weights and a per-neuron activation signature on a fixed probe "
        f"set (`probe.parquet`, hash `{_probe_hash(folder)}`).\n\n"
        f"Config hash `{folder.info.config_hash}`, record schema v{folder.info.schema_version}.\n"
    )
    sections = [
        f"---\n{head}---",
        MARKER,
        intro,
        _splits_section(folder),
        f"## Generating config\n\n```yaml\n{config_text}\n```\n",
        _schema_section(folder),
        _patterns_section(folder, summary),
        _statistics_section(summary),
        _usage_section(folder, repo_id, next(iter(files))),
    ]
    return "\n".join(sections)


def _probe_hash(folder: ZooFolder) -> str:
    if not folder.shards:
        return "-"
    table = pq.read_table(folder.shard_keys[0], columns=["probe_hash"], filesystem=folder.filesystem)
    return table.column("probe_hash")[0].as_py()[:16]


def write_card(
    zoo_dir: str | Path | Store, *, repo_id: str | None = None, license: str = LICENSE, overwrite: bool = False
) -> Path | str:
    """Write ``README.md`` atomically (a folder or a URI); a README that ``zoo card`` did not write is only
    replaced with ``overwrite``. Returns where it went (a ``Path`` in a folder, else the URI)."""
    store = resolve(zoo_dir)
    text = build_card(store, repo_id=repo_id, license=license)
    path = Path(store.display(CARD_FILE)) if store.local else store.display(CARD_FILE)
    if store.is_file(CARD_FILE) and not overwrite and MARKER not in store.read_bytes(CARD_FILE).decode(errors="replace"):
        raise FileExistsError(f"{path}: exists and was not written by `zoo card` (pass --overwrite to replace it)")
    store.write_bytes(CARD_FILE, text.encode())  # fsynced and renamed into place, or one PUT
    return path


def card_data_files(text: str) -> dict[str, list[str]]:
    """The ``default`` config's data files, per split, as a card's front matter lists them."""
    if not text.startswith("---\n"):
        raise ExportError("the card has no YAML front matter")
    end = text.find("\n---", 4)
    if end < 0:
        raise ExportError("the card's YAML front matter is not closed")
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError:
        raise ExportError("the card's YAML front matter is not valid YAML") from None
    for config in meta.get("configs") or []:
        if config.get("config_name") == "default":
            out = {}
            for item in config.get("data_files") or []:
                paths = item.get("path")
                out[item["split"]] = [paths] if isinstance(paths, str) else list(paths)
            return out
    return {}
