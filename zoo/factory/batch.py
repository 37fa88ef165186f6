"""The batch task: a pure function of ``(config, batch ids)`` that returns records.

Several batches run as one population (their clean and degraded models side by
side), which is what makes small models fast to train. The set of batches in a
task is fixed by the plan (``task_batches``), never by the number of workers, so
the records do not depend on how the run was spread out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from zoo.config import ZooConfig
from zoo.factory.plan import BatchPlan, clean_job, degraded_job, plan_batch
from zoo.factory.schema import SCHEMA_VERSION, record_schema, records_to_table, with_zoo_metadata
from zoo.factory.shards import ShardInfo, write_shard
from zoo.factory.signatures import signatures, stat_names
from zoo.patterns.sampler import ProbeSet, sampler_for
from zoo.runtime import resolve_device
from zoo.subjects.evaluate import Scores, score
from zoo.subjects.families import Family, get_family
from zoo.subjects.families.base import SubjectJob


@dataclass(frozen=True)
class TaskStats:
    """What a finished task reports to the driver (small: it travels through the object store)."""

    batches: tuple[int, ...]
    models: int
    kept: int
    dropped: int
    seconds: float


@dataclass
class ModelOutcome:
    """Everything measured about one trained model."""

    weights: np.ndarray
    signature: np.ndarray
    pattern_accuracy: np.ndarray
    negative_accuracy: float
    accuracy: float
    loss: float
    float_accuracy: float
    epochs: int
    signature_seconds: float = 0.0


def zoo_identity(config: ZooConfig) -> tuple[str, str]:
    """``(zoo_id, config_hash)``: the id names the zoo, the hash pins what made it."""
    config_hash = config.content_hash()
    return f"{config.name}-{config_hash[:8]}", config_hash


def probe_set(config: ZooConfig):
    """The zoo's fixed probe set: a ``ProbeSet`` of sequences per pattern, or, for a language zoo,
    ``LanguageProbes`` (one labelled corpus per grammar). Either has ``hash`` and ``to_arrow``."""
    if config.language is not None:
        from zoo.factory.language import language_probes

        return language_probes(config)
    return sampler_for(config.patterns).probe_set(config.seed)


def written_version(config: ZooConfig) -> int:
    """The record schema version the zoo's records are written in: 2 (pattern pairs) or 3 (language models)."""
    if config.language is not None:
        from zoo.factory.language_schema import LANGUAGE_SCHEMA_VERSION

        return LANGUAGE_SCHEMA_VERSION
    return SCHEMA_VERSION


def task_batches(config: ZooConfig, batches: int | None = None) -> list[tuple[int, ...]]:
    """The fixed partition of batch ids into tasks (one shard each)."""
    total = config.batches if batches is None else batches
    per = config.storage.batches_per_shard
    return [tuple(range(start, min(start + per, total))) for start in range(0, total, per)]


def zoo_schema(config: ZooConfig, probe: ProbeSet) -> pa.Schema:
    stats = stat_names(config.signature, probe.names)
    zoo_id, config_hash = zoo_identity(config)
    return with_zoo_metadata(
        record_schema(len(stats)),
        signature_stats=stats,
        zoo_id=zoo_id,
        config_hash=config_hash,
        probe_hash=probe.hash,
    )


def _train(config: ZooConfig, plans: list[BatchPlan], device: torch.device) -> list[ModelOutcome]:
    """Every model of ``plans`` as a ``ModelOutcome``: per plan, the clean one then the degraded ones."""
    if config.corruption.pairing == "scratch":
        jobs = [job for plan in plans for job in _scratch_jobs(plan)]
        return _measure(config, jobs, plans, device)
    clean = _measure(config, [clean_job(p) for p in plans], plans, device, per_plan=1)
    finetuned = [
        degraded_job(plan, c, init=clean[i].weights) for i, plan in enumerate(plans) for c in plan.corruptions
    ]
    degraded = _measure(
        config, finetuned, plans, device, per_plan=len(plans[0].corruptions), epochs=config.corruption.finetune_epochs
    )
    k = config.corruption.degraded_per_batch
    return [m for i in range(len(plans)) for m in (clean[i], *degraded[i * k : (i + 1) * k])]


def _scratch_jobs(plan: BatchPlan) -> list[SubjectJob]:
    return [clean_job(plan), *(degraded_job(plan, c) for c in plan.corruptions)]


def _measure(
    config: ZooConfig,
    jobs: list[SubjectJob],
    plans: list[BatchPlan],
    device: torch.device,
    per_plan: int | None = None,
    epochs: int | None = None,
) -> list[ModelOutcome]:
    """Train, score (before and after quantization) and fingerprint ``jobs``, in job order."""
    per_plan = len(jobs) // len(plans) if per_plan is None else per_plan
    owner = [plans[i // per_plan] for i in range(len(jobs))]
    probe = probe_set(config)
    outcomes: list[ModelOutcome | None] = [None] * len(jobs)
    by_recipe: dict[tuple[str, int | None], list[int]] = {}  # one family and one training recipe per call
    for i, job in enumerate(jobs):
        by_recipe.setdefault((job.architecture.family, owner[i].part), []).append(i)
    for (name, part), members_of in by_recipe.items():
        family = get_family(name)
        training = config.training_for(part)
        for group in family.train([jobs[i] for i in members_of], training, device, epochs=epochs):
            indices = [members_of[i] for i in group.indices]
            _measure_group(config, family, group, [owner[i] for i in indices], indices, probe, outcomes)
    return outcomes  # type: ignore[return-value]


def _measure_group(config, family: Family, group, owners: list[BatchPlan], indices, probe, outcomes) -> None:
    """Score a trained group (before and after quantization), fingerprint it, and file each outcome."""
    pop = group.population
    float_scores = benchmark_scores(family, pop, owners)
    family.quantize_(pop, config.quantization)
    scores = benchmark_scores(family, pop, owners) if config.quantization != "none" else float_scores
    start = time.perf_counter()
    sigs = signatures(family, pop, probe, config.signature)
    signature_seconds = (time.perf_counter() - start) / len(indices)
    weights = family.weights(pop)
    for slot, index in enumerate(indices):
        n_patterns = len(owners[slot].patterns)
        outcomes[index] = ModelOutcome(
            weights=weights[slot],
            signature=sigs[slot],
            pattern_accuracy=scores.pattern_accuracy[slot, :n_patterns],
            negative_accuracy=float(scores.negative_accuracy[slot]),
            accuracy=float(scores.accuracy[slot]),
            loss=float(scores.loss[slot]),
            float_accuracy=float(float_scores.accuracy[slot]),
            epochs=int(group.result.epochs[slot]),
            signature_seconds=signature_seconds,
        )


def benchmark_scores(family: Family, pop, plans: list[BatchPlan]) -> Scores:
    """Each model on its own batch's clean benchmark set (never on corrupted labels); ``plans[i]`` is model ``i``'s."""
    tokens = torch.as_tensor(np.stack([p.data.benchmark.tokens for p in plans]), device=pop.device)
    pattern = np.stack([p.data.benchmark.pattern for p in plans])
    out = family.logits(pop, tokens).cpu().numpy()
    return score(out, pattern, max(len(p.patterns) for p in plans))


def run_task(config: ZooConfig, batch_ids: tuple[int, ...], device: torch.device | None = None) -> tuple[pa.Table, TaskStats]:
    """Train, filter and fingerprint every model of ``batch_ids``; one record per kept pair
    (a language zoo: one record per model, ``zoo.factory.language``)."""
    device = resolve_device(config.training.device) if device is None else device
    if config.language is not None:
        from zoo.factory.language import run_language_task

        return run_language_task(config, batch_ids, device)
    start = time.perf_counter()
    plans = [plan_batch(config, b) for b in batch_ids]
    outcomes = _train(config, plans, device)
    train_seconds = time.perf_counter() - start
    probe = probe_set(config)
    schema = zoo_schema(config, probe)
    zoo_id, config_hash = zoo_identity(config)
    rows, dropped = [], 0
    per_plan = 1 + config.corruption.degraded_per_batch
    for i, plan in enumerate(plans):
        clean, degraded = outcomes[i * per_plan], outcomes[i * per_plan + 1 : (i + 1) * per_plan]
        for k, (corruption, model) in enumerate(zip(plan.corruptions, degraded)):
            drop = clean.pattern_accuracy - model.pattern_accuracy
            degradation = float(drop[corruption.pattern])
            if degradation < config.corruption.min_degradation:
                dropped += 1
                continue
            others = np.delete(drop, corruption.pattern)
            rows.append(
                _record(config, plan, k, corruption, clean, model, degradation, float(others.mean()), zoo_id, config_hash, probe.hash)
            )
    total = time.perf_counter() - start
    signature_seconds = sum(o.signature_seconds for o in outcomes) / len(plans)
    for row in rows:
        row["timings"] = {
            "train_s": train_seconds / len(plans) - signature_seconds,
            "signature_s": signature_seconds,
            "total_s": total / len(plans),
        }
    stats = TaskStats(tuple(batch_ids), len(outcomes), len(rows), dropped, total)
    return records_to_table(rows, schema), stats


def _record(config, plan, k, corruption, clean, model, degradation, side_effect, zoo_id, config_hash, probe_hash) -> dict:
    arch = plan.architecture
    family = get_family(arch.family)
    return {
        "zoo_id": zoo_id,
        "config_hash": config_hash,
        "probe_hash": probe_hash,
        "schema_version": SCHEMA_VERSION,
        "batch_id": plan.batch_id,
        "pair_index": k,
        "example_id": f"{zoo_id}/{plan.batch_id:06d}/{k}",
        "run_seed": config.seed,
        "batch_seed": plan.seed,
        "init_seed": plan.init_seed,
        "family": arch.family,
        "architecture": arch.to_json(),
        "patterns": list(plan.patterns),
        "corrupted_pattern": plan.patterns[corruption.pattern],
        "corruption_rate": corruption.rate,
        "quantization": config.quantization,
        "weight_layout": [{"name": e.name, "shape": list(e.shape), "offset": e.offset} for e in arch.layout()],
        "clean_weights": clean.weights,
        "degraded_weights": model.weights,
        "neuron_layer": family.neuron_layers(arch),
        "neuron_kind": family.neuron_kinds(arch),
        "clean_signature": list(clean.signature),
        "degraded_signature": list(model.signature),
        "metrics": {
            "clean_pattern_accuracy": clean.pattern_accuracy.tolist(),
            "degraded_pattern_accuracy": model.pattern_accuracy.tolist(),
            "clean_negative_accuracy": clean.negative_accuracy,
            "degraded_negative_accuracy": model.negative_accuracy,
            "clean_accuracy": clean.accuracy,
            "degraded_accuracy": model.accuracy,
            "clean_loss": clean.loss,
            "degraded_loss": model.loss,
            "degradation": degradation,
            "side_effect": side_effect,
            "clean_epochs": clean.epochs,
            "degraded_epochs": model.epochs,
            "clean_float_accuracy": clean.float_accuracy,
            "degraded_float_accuracy": model.float_accuracy,
        },
        "timings": None,
    }


def produce_shard(config: ZooConfig, batch_ids: tuple[int, ...], out_dir: str | Path) -> tuple[ShardInfo, TaskStats]:
    """Run a task and publish its shard; what actors call, so weights never cross the object store."""
    table, stats = run_task(config, batch_ids)
    return write_shard(out_dir, table, batch_ids, config.storage), stats
