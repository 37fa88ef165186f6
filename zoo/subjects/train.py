"""Train any list of subject models: group them into populations, train each as one computation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zoo.config import TrainingConfig
from zoo.subjects.allocator import keep_freed_memory
from zoo.subjects.families.base import SubjectJob  # noqa: F401 (re-exported: the factory's job type)
from zoo.subjects.families.mlp import Architecture
from zoo.subjects.fit import TrainData, TrainResult, train_population
from zoo.subjects.population import Population, auto_population_size, from_weights, init_population, one_hot_inputs


@dataclass
class TrainedGroup:
    """A trained population and which jobs (by index into the caller's list) it holds."""

    indices: list[int]
    population: Population
    result: TrainResult


def plan_groups(architectures: list[Architecture], max_size: int) -> list[list[int]]:
    """Chunks of at most ``max_size`` indices, each of one depth, that waste little to padding.

    A population pays for its deepest and widest member in every model, so models are
    split by depth (a shallow model padded to a deeper one costs whole layers) and sorted
    by width within a depth; each depth is cut into chunks of near-equal size. Activations
    may mix (a run per activation costs a few cheap ops); within a chunk, models are
    ordered by activation to keep those runs few.
    """
    chunks = []
    for depth in sorted({a.n_layers for a in architectures}):
        order = sorted(
            (i for i, a in enumerate(architectures) if a.n_layers == depth),
            key=lambda i: (max(architectures[i].widths), i),
        )
        parts = -(-len(order) // max_size)
        chunks += [order[k * len(order) // parts : (k + 1) * len(order) // parts] for k in range(parts)]
    return [sorted(chunk, key=lambda i: (architectures[i].activation, i)) for chunk in chunks]


def bytes_per_model(job: SubjectJob) -> int:
    """Rough device memory of one model in a population: data, parameters, Adam state, activations."""
    arch, train, val = job.architecture, len(job.train_labels), len(job.val_labels)
    one_hot = arch.in_features + 1  # training inputs are held as bytes, validation inputs as floats
    return train * one_hot + 4 * (val * one_hot + (train + val) * 3 * sum(arch.widths) + 6 * arch.n_params)


def stack_data(jobs: list[SubjectJob], device: torch.device) -> TrainData:
    arch = jobs[0].architecture

    def stacked(name: str) -> torch.Tensor:
        return torch.as_tensor(np.stack([getattr(j, name) for j in jobs]), device=device)

    return TrainData(
        x_train=one_hot_inputs(stacked("train_tokens"), arch.vocab_size, torch.uint8),
        y_train=stacked("train_labels").float(),
        x_val=one_hot_inputs(stacked("val_tokens"), arch.vocab_size).contiguous(),
        y_val=stacked("val_labels").float(),
    )


def train_group(
    jobs: list[SubjectJob], config: TrainingConfig, device: torch.device, epochs: int | None = None
) -> tuple[Population, TrainResult]:
    archs = [j.architecture for j in jobs]
    if all(j.init is not None for j in jobs):
        pop = from_weights(archs, [j.init for j in jobs], device)
    else:
        pop = init_population(archs, [j.init_seed for j in jobs], device)
    result = train_population(
        pop,
        stack_data(jobs, device),
        config,
        lr=[j.lr for j in jobs],
        order_seeds=[j.order_seed for j in jobs],
        epochs=epochs,
    )
    return pop, result


def train_subjects(
    jobs: list[SubjectJob],
    config: TrainingConfig,
    device: torch.device,
    epochs: int | None = None,
    on_group=None,
) -> list[TrainedGroup]:
    """Train every job; the population size adapts to the device unless the config fixes it.

    ``on_group(n)``, when given, is called after each population with its ``n`` models (for a
    progress bar)."""
    if not jobs:
        return []
    if device.type == "cpu":
        keep_freed_memory()
    size = auto_population_size(config, device, max(bytes_per_model(j) for j in jobs))
    trained = []
    for indices in plan_groups([j.architecture for j in jobs], size):
        pop, result = train_group([jobs[i] for i in indices], config, device, epochs)
        trained.append(TrainedGroup(indices, pop, result))
        if on_group is not None:
            on_group(len(indices))
    return trained
