"""Probing models: activations in, one probe per layer (and controls) out, many models at once.

``probe_models`` takes ``ModelSpec``s (an architecture, weights, labelled sequences
and optionally the untrained twin's weights), collects every layer's activations,
and trains, in groups of ``config.models_per_group`` models, one batched computation
holding, for every model and layer: the probe on the real classes, the control
probe on shuffled labels, and the same two on the untrained twin. An MLP twin's input
layer is the model's (the same one-hot), so it is not trained twice.

Layers are numbered probe points, each reading one hookpoint (``activations.probe_points``):
an MLP's layer 0 is the one-hot input and layer ``l`` hidden layer ``l``; a transformer's
layer 0 is ``embed``, then each block's feed-forward hidden units and residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.readers.probes.activations import Layer, ProbePoint, collect_layers, default_layers, probe_points, resolve_layers
from zoo.readers.probes.config import ProbeConfig
from zoo.readers.probes.data import LabelledData, ProbeError, subsample
from zoo.readers.probes.train import (
    EpochCallback,
    FeatureSet,
    ProbeRun,
    ProbeWeights,
    control_labels,
    stratified_split,
    train_probes,
)
from zoo.runtime import resolve_device, torch_threads
from zoo.subjects.families import SubjectArchitecture

TRAINED, RANDOM = "trained", "random"
REAL, CONTROL = 0, 1


@dataclass(eq=False)
class ModelSpec:
    """A model to probe and the labelled sequences to probe it on."""

    architecture: SubjectArchitecture
    weights: np.ndarray
    data: LabelledData
    twin_weights: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    layers: list[Layer] | None = None  # overrides ``config.layers`` for this model (numbers or hookpoint names)


@dataclass(eq=False)
class LayerProbe:
    """The probes of one layer of one subject (trained model or untrained twin)."""

    layer: int
    hookpoint: str
    accuracy: float  # best validation accuracy (the best checkpoint's)
    final_accuracy: float
    best_epoch: int
    best: ProbeWeights
    final: ProbeWeights
    val_pred: np.ndarray  # [V] predictions of the best checkpoint on the validation split
    val_pred_final: np.ndarray
    history: dict[str, np.ndarray]  # per epoch: train_loss, train_accuracy, val_accuracy, val_loss, lr
    control_accuracy: float | None = None
    control_history: dict[str, np.ndarray] | None = None
    control_best_epoch: int | None = None

    @property
    def selectivity(self) -> float | None:
        return None if self.control_accuracy is None else self.accuracy - self.control_accuracy


@dataclass(eq=False)
class ModelProbes:
    """All probes of one model: per layer for the trained model, and for its untrained twin if asked."""

    spec: ModelSpec
    classes: tuple[str, ...]
    layers: list[int]
    train_idx: np.ndarray
    val_idx: np.ndarray
    trained: dict[int, LayerProbe]
    random: dict[int, LayerProbe] | None
    epochs: int
    points: dict[int, ProbePoint] = field(default_factory=dict)  # every probed layer's hookpoint and width

    def hookpoint(self, layer: int) -> str:
        return self.points[layer].hookpoint

    @property
    def val_labels(self) -> np.ndarray:
        return self.spec.data.labels[self.val_idx]

    def best_layer(self, subject: str = TRAINED) -> int:
        """The layer with the best validation accuracy among the hidden layers probed (the earliest on ties);
        the input layer counts only when no hidden layer was probed."""
        probes = self.trained if subject == TRAINED else self.random
        candidates = [l for l in self.layers if l > 0 and l in probes] or [l for l in self.layers if l in probes]
        return max(candidates, key=lambda l: (probes[l].accuracy, -l))

    def per_layer(self, what: str = "accuracy", subject: str = TRAINED) -> dict[int, float | None]:
        probes = self.trained if subject == TRAINED else self.random
        return {l: getattr(probes[l], what) for l in self.layers if l in probes}


def check_layers(architecture: SubjectArchitecture, config: ProbeConfig, layers: list[Layer] | None = None) -> list[int]:
    """The layers to probe (``layers``, else ``config.layers``, else the default points) as layer numbers,
    or a ``ProbeError`` naming one the model does not have (numbers or hookpoint names)."""
    try:
        layers = config.layers if layers is None else layers
        if layers is None:
            return default_layers(architecture, config.include_input, config.site)
        if not layers:
            raise ProbeError(f"no layers to probe in {architecture.describe()}")
        return resolve_layers(architecture, layers, config.site)
    except ValueError as error:
        raise ProbeError(str(error)) from None


def shares_input(architecture: SubjectArchitecture, config: ProbeConfig) -> bool:
    """Whether layer 0 is the same for any weights (the MLP's one-hot input): twins and models on the same
    sequences probe it once."""
    return probe_points(architecture, config.site)[0].shared


def prepare(spec: ModelSpec, config: ProbeConfig) -> tuple[ModelSpec, list[int], np.ndarray, np.ndarray, list[np.ndarray]]:
    """Subsample, check, split; returns the spec (with its final data), layers, split and label vectors."""
    layers = check_layers(spec.architecture, config, spec.layers)
    data = subsample(spec.data, config.max_samples, config.split_seed)
    if len(data) == 0:
        raise ProbeError("no labelled sequences to probe")
    if data.tokens.ndim != 2 or data.tokens.shape[1] != spec.architecture.seq_len:
        raise ProbeError(
            f"sequences of shape {data.tokens.shape} do not fit {spec.architecture.describe()} "
            f"(seq_len {spec.architecture.seq_len})"
        )
    train_idx, val_idx = stratified_split(data.labels, config.val_fraction, config.split_seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ProbeError(f"{len(data)} labelled sequences are too few for a train/validation split")
    tasks = [data.labels]
    if config.control:
        tasks.append(control_labels(data.labels, train_idx, val_idx, config.control_seed))
    spec = ModelSpec(spec.architecture, spec.weights, data, spec.twin_weights, spec.meta, layers)
    return spec, layers, train_idx, val_idx, tasks


@dataclass(frozen=True)
class SetKey:
    model: int
    subject: str
    layer: int


@dataclass(eq=False)
class Prepared:
    """Models ready to train: final specs, layers, splits, feature sets and whose layer each set is."""

    specs: list[ModelSpec]
    layers: list[list[int]]
    splits: list[tuple[np.ndarray, np.ndarray]]
    sets: list[FeatureSet]
    keys: list[SetKey]
    input_alias: dict[int, int]  # model -> the model whose input-layer probes it shares (same sequences)


def feature_sets(specs: list[ModelSpec], config: ProbeConfig) -> Prepared:
    """Activations of every model (and twin) as feature sets, with a key saying whose layer each is.

    MLPs given the very same ``LabelledData`` object share their input layer (layer 0 is the
    one-hot of the sequences, whatever the weights): it is probed once, and an MLP twin's is the
    model's. A transformer's layer 0 (its embedding) depends on the weights: every model and twin
    probes its own.
    """
    prepared = [prepare(spec, config) for spec in specs]
    shared = [shares_input(spec.architecture, config) for spec in specs]
    first_with: dict[int, int] = {}
    alias: dict[int, int] = {}
    for i, spec in enumerate(specs):
        owner = first_with.setdefault(id(spec.data), i)
        if owner != i and shared[i] and shared[owner] and 0 in prepared[i][1] and 0 in prepared[owner][1]:
            alias[i] = owner

    def skipped(i: int, subject: str, layer: int) -> bool:  # the same one-hot input as a model already in the group
        return layer == 0 and shared[i] and (subject == RANDOM or i in alias)

    archs, weights, tokens, wanted, owners = [], [], [], [], []
    for i, (spec, layers, _, _, _) in enumerate(prepared):
        subjects = [(TRAINED, spec.weights)]
        if config.random_twin and spec.twin_weights is not None:
            subjects.append((RANDOM, spec.twin_weights))
        for subject, w in subjects:
            archs.append(spec.architecture), weights.append(w), tokens.append(spec.data.tokens)
            wanted.append([l for l in layers if not skipped(i, subject, l)])
            owners.append((i, subject))
    with torch_threads(config.threads):
        acts = collect_layers(
            archs, weights, tokens, wanted, config.site, config.activation_chunk, resolve_device(config.device, "device")
        )
    sets, keys = [], []
    for (i, subject), layers_acts in zip(owners, acts):
        spec, layers, train_idx, val_idx, tasks = prepared[i]
        for layer in layers:
            if skipped(i, subject, layer):
                continue
            sets.append(FeatureSet(layers_acts[layer], tasks, len(spec.data.classes), train_idx, val_idx))
            keys.append(SetKey(i, subject, layer))
    return Prepared(
        [p[0] for p in prepared], [p[1] for p in prepared], [(p[2], p[3]) for p in prepared], sets, keys, alias
    )


def _history(run: ProbeRun, f: int, task: int) -> dict[str, np.ndarray]:
    return {
        "train_loss": run.train_loss[:, f, task],
        "train_accuracy": run.train_accuracy[:, f, task],
        "val_accuracy": run.val_accuracy[:, f, task],
        "val_loss": run.val_loss[:, f, task],
        "lr": run.lr[:, f, task],
    }


def _layer_probe(run: ProbeRun, f: int, layer: int, hookpoint: str, control: bool) -> LayerProbe:
    return LayerProbe(
        layer=layer,
        hookpoint=hookpoint,
        accuracy=float(run.best_accuracy[f, REAL]),
        final_accuracy=float(run.final_accuracy[f, REAL]),
        best_epoch=int(run.best_epoch[f, REAL]),
        best=run.best[f][REAL],
        final=run.final[f][REAL],
        val_pred=run.val_pred[f][REAL],
        val_pred_final=run.val_pred_final[f][REAL],
        history=_history(run, f, REAL),
        control_accuracy=float(run.best_accuracy[f, CONTROL]) if control else None,
        control_history=_history(run, f, CONTROL) if control else None,
        control_best_epoch=int(run.best_epoch[f, CONTROL]) if control else None,
    )


def probe_group(specs: list[ModelSpec], config: ProbeConfig, on_epoch: EpochCallback | None = None) -> list[ModelProbes]:
    """Every probe of ``specs`` as one batched computation."""
    prep = feature_sets(specs, config)
    run = train_probes(prep.sets, config, on_epoch)
    results = []
    for i, spec in enumerate(prep.specs):
        all_points = probe_points(spec.architecture, config.site)
        points = {l: all_points[l] for l in prep.layers[i]}
        trained: dict[int, LayerProbe] = {}
        random: dict[int, LayerProbe] | None = {} if (config.random_twin and spec.twin_weights is not None) else None
        for f, key in enumerate(prep.keys):
            if key.model == i:
                probe = _layer_probe(run, f, key.layer, points[key.layer].hookpoint, config.control)
                (trained if key.subject == TRAINED else random)[key.layer] = probe
        results.append(
            ModelProbes(spec, spec.data.classes, prep.layers[i], *prep.splits[i], trained, random, config.epochs, points)
        )
    for i, owner in prep.input_alias.items():
        results[i].trained[0] = results[owner].trained[0]
    for result in results:
        if result.random is not None and 0 in result.trained and result.points[0].shared:
            result.random[0] = result.trained[0]
    return results


def probe_models(specs: list[ModelSpec], config: ProbeConfig) -> list[ModelProbes]:
    """Probe every model, ``config.models_per_group`` models per batched computation."""
    if not specs:
        raise ProbeError("no models to probe")
    out: list[ModelProbes] = []
    size = config.models_per_group
    for start in range(0, len(specs), size):
        out += probe_group(specs[start : start + size], config)
    return out


def probe_model(spec: ModelSpec, config: ProbeConfig) -> ModelProbes:
    return probe_models([spec], config)[0]
