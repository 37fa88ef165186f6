"""A run folder: SAEs trained on a zoo's subjects, and what eval and autointerp read back.

``train_run(data, out, recipe)`` reads the zoo (``zoo.open``), builds the corpus
(``corpus.pattern_corpus``: the probe set), collects every (subject, hookpoint) stream
(``subjects.collect_streams``), trains the recipe's grid on every stream as one population
(``train.train_population``) and writes::

    OUT/recipe.yaml     the recipe, every field
    OUT/run.json        zoo, corpus hash, split, subjects, streams (stream -> subject, hookpoint, width)
    OUT/saes/           the coders in sparsify's layout (store.save_population) and saes/index.json

``open_run(out)`` reopens it: the recipe, the zoo's corpus (checked against the stored hash),
the subjects, and the coders by label. Nothing is pickled; activations are recollected from
the zoo (deterministic) rather than stored.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from zoo.atomic import atomic_path
from zoo.readers.sae.config import SAERecipe
from zoo.readers.sae.corpus import Corpus, pattern_corpus, split_rows
from zoo.readers.sae.spec import SAEError, check_specs
from zoo.readers.sae.subjects import Subject, SubjectStreams, collect_streams, zoo_subjects

RUN_FILE = "run.json"
RECIPE_FILE = "recipe.yaml"
SAES = "saes"
FORMAT_VERSION = 1


def zoo_corpus(data: str | Path, recipe: SAERecipe) -> Corpus:
    """The recipe's corpus of the zoo at ``data``: its probe set, or one drawn the same way, larger."""
    from zoo.api import Zoo, ZooError
    from zoo.patterns.sampler import sampler_for

    try:
        zoo = Zoo(data)
        if getattr(zoo.config, "task", "patterns") != "patterns":  # language zoos: corpus.from_probe_corpus is ready
            raise SAEError(f"{data}: a {zoo.config.task} zoo; zoo sae reads pattern zoos until language corpora are wired in")
        if recipe.corpus == "probe_set":
            return pattern_corpus(zoo.config, zoo.probe_set)
    except ZooError as error:
        raise SAEError(str(error)) from None
    space = zoo.config.patterns.model_copy(
        update={"probe_per_pattern": recipe.corpus_per_pattern, "probe_negatives": recipe.corpus_negatives}
    )
    return pattern_corpus(zoo.config, sampler_for(space).probe_set(recipe.corpus_seed), "sampled")


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")


def train_run(data: str | Path, out: str | Path, recipe: SAERecipe, log=lambda line: None) -> dict:
    """Train the recipe's population on the zoo at ``data`` into ``out``; returns run.json's content."""
    from zoo.readers.sae.store import save_population
    from zoo.readers.sae.train import train_population

    out = Path(out)
    if (out / RUN_FILE).exists():
        raise FileExistsError(f"{out} already holds an SAE run ({RUN_FILE}); choose another --out")
    corpus = zoo_corpus(data, recipe)
    subjects = zoo_subjects(data, corpus, recipe.which, recipe.subjects, recipe.twins)
    start = time.perf_counter()
    streams = collect_streams(subjects, corpus, recipe.hookpoints, recipe.val_share, recipe.split_seed)
    collect_s = time.perf_counter() - start
    specs = [spec for s in streams.streams for spec in recipe.specs(s.name, s.d_in)]
    check_specs(streams.streams, specs)  # k larger than a width, ...: refused before training
    log(f"{len(subjects)} subjects, {len(streams.streams)} streams, {len(specs)} coders; "
        f"{len(streams.train_rows)} training and {len(streams.val_rows)} held-out rows")  # fmt: skip
    result = train_population(streams.streams, specs, recipe.train_config())
    out.mkdir(parents=True, exist_ok=True)
    save_population(result, out / SAES)
    with atomic_path(out / RECIPE_FILE) as tmp:
        Path(tmp).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    info = {
        "format_version": FORMAT_VERSION,
        "data": str(Path(data).absolute()) if "://" not in str(data) else str(data),
        "corpus": {"name": corpus.name, "hash": corpus.hash, "rows": len(corpus)},
        "split": {"val_share": recipe.val_share, "seed": recipe.split_seed,
                  "train_rows": len(streams.train_rows), "val_rows": len(streams.val_rows)},
        "which": recipe.which,
        "subjects": [{"id": s.id, "architecture": s.architecture.describe(), **s.meta} for s in subjects],
        "streams": {
            s.name: {"subject": streams.owner[s.name][0], "hookpoint": streams.owner[s.name][1], "width": s.d_in}
            for s in streams.streams
        },
        "coders": len(specs),
        "collect_seconds": collect_s,
        "train_seconds": result.seconds,
    }
    _write_json(out / RUN_FILE, info)
    return info


@dataclass(eq=False)
class Run:
    """A reopened run folder (see the module docstring)."""

    path: Path
    info: dict
    recipe: SAERecipe
    corpus: Corpus
    subjects: dict[str, Subject]
    index: list[dict]  # saes/index.json's rows: label, path, metrics
    _streams: SubjectStreams | None = field(default=None, repr=False)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        return split_rows(len(self.corpus), self.recipe.val_share, self.recipe.split_seed)

    def stream_of(self, label: str) -> tuple[Subject, str]:
        """The subject and hookpoint a coder reads."""
        cfg = json.loads((self.path / SAES / self._row(label)["path"] / "cfg.json").read_text())
        owner = self.info["streams"][cfg["zoo"]["spec"]["stream"]]
        return self.subjects[owner["subject"]], owner["hookpoint"]

    def cfg(self, label: str) -> dict:
        return json.loads((self.path / SAES / self._row(label)["path"] / "cfg.json").read_text())

    def coder(self, label: str):
        from zoo.readers.sae.store import load_coder

        return load_coder(self.path / SAES / self._row(label)["path"])

    def _row(self, label: str) -> dict:
        for row in self.index:
            if row["label"] == label:
                return row
        raise SAEError(f"{self.path}: no coder labelled {label!r}")

    def streams(self) -> SubjectStreams:
        """Every stream's activations, recollected from the zoo (the same rows and split as in training)."""
        if self._streams is None:
            hookpoints = sorted({s["hookpoint"] for s in self.info["streams"].values()})
            subjects = [self.subjects[sid] for sid in dict.fromkeys(s["subject"] for s in self.info["streams"].values())]
            self._streams = collect_streams(subjects, self.corpus, hookpoints, self.recipe.val_share, self.recipe.split_seed)
        return self._streams


def open_run(path: str | Path) -> Run:
    """Reopen a run folder; every problem is one ``SAEError`` line."""
    from zoo.config import ConfigError, load_config

    path = Path(path)
    if not (path / RUN_FILE).is_file() or not (path / SAES / "index.json").is_file():
        raise SAEError(f"{path} is not an SAE run (no {RUN_FILE} or {SAES}/index.json; zoo sae train writes them)")
    info = json.loads((path / RUN_FILE).read_text())
    if info.get("format_version") != FORMAT_VERSION:
        raise SAEError(f"{path}: run format {info.get('format_version')}, this zoo reads {FORMAT_VERSION}")
    try:
        recipe: SAERecipe = load_config(path / RECIPE_FILE, SAERecipe)  # type: ignore[assignment]
    except ConfigError as error:
        raise SAEError(str(error)) from None
    corpus = zoo_corpus(info["data"], recipe)
    if corpus.hash != info["corpus"]["hash"]:
        raise SAEError(f"{info['data']}: its corpus is not the one {path} was trained on (hash differs)")
    wanted = {s["id"] for s in info["subjects"]}
    subjects = {s.id: s for s in zoo_subjects(info["data"], corpus, info["which"], twins=recipe.twins) if s.id in wanted}
    if set(subjects) != wanted:
        raise SAEError(f"{info['data']}: subjects {sorted(wanted - set(subjects))} of {path} are missing from the zoo")
    index = json.loads((path / SAES / "index.json").read_text())["coders"]
    return Run(path, info, recipe, corpus, subjects, index)
