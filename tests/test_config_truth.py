"""One source of configuration truth: every field is described, the code's defaults are the
shipped recipes, old interpreter runs read with the defaults they were made with, and the
recipes ship with the package."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import types
import typing
import zipfile
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import zoo
from zoo.config import CONFIGS, ZooConfig, load_config, resolve_config_path
from zoo.readers.interpreter.config import DEFAULTS_BEFORE, InterpreterConfig, migrate_run_config
from zoo.readers.probes.config import ProbeConfig, ProbeTuneConfig

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- descriptions


def _zoo_modules() -> list[types.ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(zoo.__path__, "zoo.") if info.name != "zoo.__main__"]
    return [importlib.import_module(name) for name in sorted(names)]


def _nested_models(annotation) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type (unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _nested_models(arg)]


def _every_config_model() -> list[type[BaseModel]]:
    """Every pydantic model defined in zoo, and every model reachable from one through its fields."""

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    _zoo_modules()
    todo = [m for m in subclasses(BaseModel) if m.__module__.startswith("zoo.")]
    seen: dict[str, type[BaseModel]] = {}
    while todo:
        model = todo.pop()
        key = f"{model.__module__}.{model.__qualname__}"
        if key in seen:
            continue
        seen[key] = model
        for field in model.model_fields.values():
            todo += _nested_models(field.annotation)
    return [seen[key] for key in sorted(seen)]


def test_the_walk_reaches_every_config_module():
    names = {f"{m.__module__}.{m.__name__}" for m in _every_config_model()}
    for expected in (
        "zoo.config.ZooConfig",
        "zoo.config.PatternSpace",
        "zoo.config_types.IntRange",
        "zoo.subjects.families.mlp.MLPSpace",
        "zoo.export.splits.SplitOptions",
        "zoo.readers.interpreter.config.ModelConfig",
        "zoo.readers.probes.config.PlateauConfig",
        "zoo.readers.tune.Distribution",
    ):
        assert expected in names


def test_every_config_field_has_a_description():
    undescribed = [
        f"{model.__module__}.{model.__qualname__}.{name}"
        for model in _every_config_model()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undescribed == []


# ---------------------------------------------------------------- defaults are the shipped recipes


def _shipped(relative: str, model):
    return load_config(CONFIGS / relative, model)


def test_the_default_recipes_are_the_code_defaults_written_out():
    from zoo.readers.interpreter.tune import TuneSettings

    assert _shipped("readers/interpreter.yaml", InterpreterConfig) == InterpreterConfig()
    assert _shipped("readers/probes.yaml", ProbeConfig) == ProbeConfig()
    assert _shipped("tune/probes.yaml", ProbeTuneConfig) == ProbeTuneConfig()
    assert _shipped("tune/interpreter.yaml", TuneSettings) == TuneSettings()
    # a zoo's name and batch count are its identity and scale: default.yaml is the seed-scale zoo
    shipped = _shipped("zoo/default.yaml", ZooConfig)
    assert shipped.model_dump(exclude={"name", "batches"}) == ZooConfig().model_dump(exclude={"name", "batches"})


def _listed_at_default(written: dict, default: dict, prefix: str = "") -> list[str]:
    same = []
    for key, value in written.items():
        if isinstance(value, dict) and isinstance(default.get(key), dict):
            same += _listed_at_default(value, default[key], f"{prefix}{key}.")
        elif default.get(key) == value:
            same.append(prefix + key)
    return same


@pytest.mark.parametrize(
    ("relative", "model"),
    [("zoo/quickstart.yaml", ZooConfig), ("zoo/large.yaml", ZooConfig), ("readers/probes-reference.yaml", ProbeConfig)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_variant_recipe_lists_only_the_fields_it_changes(relative, model):
    written = yaml.safe_load((CONFIGS / relative).read_text())
    loaded = load_config(CONFIGS / relative, model).model_dump(mode="json")
    assert _listed_at_default(_as_loaded(written, loaded), model().model_dump(mode="json")) == []


def _as_loaded(written: dict, loaded: dict) -> dict:
    """The written keys with their validated values (``1e-3`` and ``0.001`` compare equal)."""
    return {
        key: _as_loaded(value, loaded[key]) if isinstance(value, dict) and isinstance(loaded[key], dict) else loaded[key]
        for key, value in written.items()
    }


# ---------------------------------------------------------------- the run-version migration

OLD = {"model.answer_width": 0, "model.answer_reader": "joint", "model.decoder_reads_gradient": False, "data.repair_fresh": False}


def _dig(config: BaseModel, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _without(data: dict, dotted_keys) -> dict:
    data = json.loads(json.dumps(data))
    for dotted in dotted_keys:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return data


def test_the_table_of_changed_defaults_is_the_shipped_recipes_change():
    from zoo.readers.interpreter.train import RUN_VERSION

    assert DEFAULTS_BEFORE == {2: OLD} and max(DEFAULTS_BEFORE) <= RUN_VERSION
    for dotted, old in OLD.items():
        assert _dig(InterpreterConfig(), dotted) != old  # each row is a default that changed


def test_a_version_1_config_without_the_changed_fields_reads_their_old_defaults():
    saved = _without(InterpreterConfig().model_dump(mode="json"), OLD)
    old = InterpreterConfig.model_validate(migrate_run_config(saved, 1))
    assert {dotted: _dig(old, dotted) for dotted in OLD} == OLD
    fresh = InterpreterConfig.model_validate(migrate_run_config(saved, 2))
    assert fresh == InterpreterConfig()
    # a field the old run did set keeps its value
    saved["model"]["answer_width"] = 16
    assert InterpreterConfig.model_validate(migrate_run_config(saved, 1)).model.answer_width == 16


def _write_run(folder: Path, interpreter: dict, version: int | None) -> Path:
    folder.mkdir(parents=True)
    description = {"interpreter": interpreter, "data": {}, "n_stats": 1}
    if version is not None:
        description["version"] = version
    (folder / "config.json").write_text(json.dumps(description))
    return folder


@pytest.mark.parametrize("version", [1, None], ids=["version_1", "no_version"])
def test_an_old_run_folder_loads_with_the_old_defaults(tmp_path, version):
    from zoo.readers.interpreter.train import RUN_VERSION, read_run, run_config

    saved = _without(InterpreterConfig().model_dump(mode="json"), OLD)
    run = _write_run(tmp_path / "run", saved, version)
    description = read_run(run)
    assert description["version"] == RUN_VERSION
    config = run_config(description, run)
    assert {dotted: _dig(config, dotted) for dotted in OLD} == OLD


def test_a_fresh_run_folder_loads_with_the_new_defaults(tmp_path):
    from zoo.readers.interpreter.train import RUN_VERSION, read_run, run_config

    saved = _without(InterpreterConfig().model_dump(mode="json"), OLD)
    run = _write_run(tmp_path / "run", saved, RUN_VERSION)
    assert run_config(read_run(run), run) == InterpreterConfig()


def test_a_run_from_newer_code_is_refused(tmp_path):
    from zoo.readers.interpreter import InterpreterError
    from zoo.readers.interpreter.train import RUN_VERSION, read_run

    run = _write_run(tmp_path / "run", {}, RUN_VERSION + 1)
    with pytest.raises(InterpreterError, match="run version"):
        read_run(run)


# ---------------------------------------------------------------- the recipes ship with the package


def test_the_shipped_recipes_live_in_the_package_and_configs_links_there():
    assert CONFIGS == Path(zoo.__file__).resolve().parent / "configs"
    assert (REPO / "configs").is_symlink() and os.readlink(REPO / "configs") == "zoo/configs"
    from zoo.readers.interpreter.config import DEFAULT_CONFIG
    from zoo.readers.interpreter.tune import DEFAULT_TUNE_CONFIG
    from zoo.readers.probes.config import DEFAULT_CONFIG as PROBES, DEFAULT_TUNE_CONFIG as PROBES_TUNE

    for path in (DEFAULT_CONFIG, DEFAULT_TUNE_CONFIG, PROBES, PROBES_TUNE):
        assert path.is_file() and CONFIGS in path.parents


def test_a_readme_recipe_path_finds_the_shipped_recipe_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("configs/zoo/quickstart.yaml") == CONFIGS / "zoo" / "quickstart.yaml"
    assert load_config("configs/zoo/quickstart.yaml").name == "quickstart"
    (tmp_path / "configs" / "zoo").mkdir(parents=True)  # a user's own file of that name comes first
    (tmp_path / "configs" / "zoo" / "quickstart.yaml").write_text("name: mine\n")
    assert load_config("configs/zoo/quickstart.yaml").name == "mine"


def test_a_built_wheel_carries_the_recipes_and_runs_outside_the_checkout(tmp_path):
    pytest.importorskip("setuptools")  # the build backend, used without an isolated (downloaded) one
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "zoo", source / "zoo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("zoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"zoo/configs/{p.relative_to(CONFIGS).as_posix()}" for p in CONFIGS.rglob("*.yaml")}
    assert shipped and shipped <= names
    assert {"zoo/configs/zoo/quickstart.yaml", "zoo/configs/readers/interpreter.yaml", "zoo/configs/tune/probes.yaml"} <= names

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)  # a pure-Python wheel, installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import zoo, zoo.config as c\n"
        "from zoo.readers.interpreter.config import load_interpreter_config\n"
        "from zoo.readers.probes.config import load_probe_config\n"
        "print(zoo.__file__)\n"
        "print(c.load_config('configs/zoo/quickstart.yaml').name)\n"
        "print(load_interpreter_config() == load_interpreter_config.__globals__['InterpreterConfig']())\n"
        "print(load_probe_config().lr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    ran = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, name, same, lr = ran.stdout.split()
    assert Path(where).is_relative_to(installed) and name == "quickstart" and same == "True" and lr == "0.02"
    assert "not found" not in ran.stderr
