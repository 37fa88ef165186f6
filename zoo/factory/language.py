"""The language batch task: transformers trained by next-token loss on a formal language.

A pure function of ``(config, batch ids)`` like the pattern task (``zoo.factory.batch``):
per batch, a grammar drawn by share, an architecture and feed-forward kind from the
transformer space, a learning rate and, per model, initialization, data-order and
generation seeds; all from the batch seed. The batch's ``models_per_batch`` models train
on one sampled corpus; the batches of a task train as populations side by side (grouped
by token space, depth and feed-forward kind). Each model is then measured:

- ``val_loss``: padding-masked next-token cross-entropy on the batch's validation sentences;
- ``legal_accuracy``: share of validation targets whose arg-max prediction is a legal
  continuation of the prefix (``Language.legal_next``);
- ``validity``: share of ``generations`` samples from BOS (temperature 1, own seed) that the
  grammar's O(length) validator accepts;
- ``length_tv``: total-variation distance between the generated lengths (``max_len + 1``
  for a sample with no EOS) and the grammar's under the same cap (``reference_size``
  sentences drawn with the zoo seed);
- a signature over every real token of its grammar's fixed probe corpus.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import pyarrow as pa
import torch

from zoo.config import ZooConfig
from zoo.languages import LanguageProbes, language_for, probe_corpus
from zoo.subjects.families import get_family, sample_part
from zoo.subjects.families.base import SubjectJob


@dataclass(frozen=True)
class LanguagePlan:
    batch_id: int
    seed: int
    grammar_index: int
    architecture: object
    lr: float
    init_seeds: tuple[int, ...]
    order_seeds: tuple[int, ...]
    generation_seeds: tuple[int, ...]
    train_seed: int
    val_seed: int
    part: int | None

    def grammar(self, config: ZooConfig):
        return config.language.grammars[self.grammar_index].grammar


def plan_language_batch(config: ZooConfig, batch_id: int) -> LanguagePlan:
    """Every draw of a language batch, from its seed (``zoo.factory.plan.batch_seed``) alone."""
    from zoo.factory.plan import batch_seed

    task = config.language
    seed = batch_seed(config.seed, batch_id)
    rng = np.random.default_rng(seed)
    shares = np.array([g.share for g in task.grammars], dtype=np.float64)
    index = int(rng.choice(len(shares), p=shares / shares.sum()))  # drawn in either mode: the later draws stay put
    if task.assignment == "cycle":
        index = batch_id % len(shares)
    grammar = task.grammars[index].grammar
    vocab = len(language_for(grammar).vocab)
    part, arch = sample_part(config.architecture, vocab, grammar.max_len, rng)
    arch = replace(arch, head="next_token")
    lr_range = config.training_for(part).lr
    lr = float(np.exp(rng.uniform(np.log(lr_range.min), np.log(lr_range.max))))
    seeds = rng.integers(0, 2**63 - 1, size=(task.models_per_batch, 3))
    train_seed, val_seed = (int(s) for s in rng.integers(0, 2**63 - 1, size=2))
    return LanguagePlan(
        batch_id, seed, index, arch, lr, *(tuple(int(s) for s in seeds[:, k]) for k in range(3)), train_seed, val_seed, part
    )


@lru_cache(maxsize=16)
def _corpus(grammar, n: int, seed: int):
    return language_for(grammar).sample(n, seed)


def language_probes(config: ZooConfig) -> LanguageProbes:
    """The zoo's probe corpora, one per grammar of the task (grammar ``i`` drawn with seed ``zoo seed + i``)."""
    task = config.language
    return _probes(tuple(g.grammar for g in task.grammars), task.probe_size, config.seed)


@lru_cache(maxsize=8)
def _probes(grammars: tuple, size: int, seed: int) -> LanguageProbes:
    return LanguageProbes.of([probe_corpus(g, seed + i, size) for i, g in enumerate(grammars)])


@lru_cache(maxsize=16)
def grammar_lengths(grammar, n: int, seed: int) -> np.ndarray:
    """Tokens per sentence (BOS and EOS counted) of ``n`` sentences of the grammar: its length distribution."""
    return language_for(grammar).sample(n, seed ^ 0x6C656E).lengths


def length_tv(generated: np.ndarray, reference: np.ndarray, max_len: int) -> float:
    """Total-variation distance between two length samples over ``0 .. max_len + 1``."""
    bins = max_len + 2
    p = np.bincount(np.minimum(generated, bins - 1), minlength=bins) / max(len(generated), 1)
    q = np.bincount(np.minimum(reference, bins - 1), minlength=bins) / max(len(reference), 1)
    return float(0.5 * np.abs(p - q).sum())


def _jobs(config: ZooConfig, plan: LanguagePlan) -> list[SubjectJob]:
    task, grammar = config.language, plan.grammar(config)
    train, val = _corpus(grammar, task.train_size, plan.train_seed), _corpus(grammar, task.val_size, plan.val_seed)
    lengths, val_lengths = train.lengths.astype(np.float32), val.lengths.astype(np.float32)
    return [
        SubjectJob(plan.architecture, init, order, plan.lr, train.tokens, lengths, val.tokens, val_lengths)
        for init, order in zip(plan.init_seeds, plan.order_seeds)
    ]


@dataclass
class LanguageOutcome:
    weights: np.ndarray
    signature: np.ndarray
    metrics: dict
    signature_seconds: float


def _measure(config: ZooConfig, family, group, owners: list[LanguagePlan], slots: list[int]) -> list[LanguageOutcome]:
    """Loss, legal accuracy, validity, lengths and signature of one trained population."""
    from zoo.factory.signatures import language_signatures
    from zoo.subjects.transformer_lm import evaluate, generate, lengths_of

    task, pop = config.language, group.population
    grammars = [p.grammar(config) for p in owners]
    val = [_corpus(g, task.val_size, p.val_seed) for g, p in zip(grammars, owners)]
    tokens = torch.as_tensor(np.stack([v.tokens for v in val]), device=pop.device)
    legal = torch.as_tensor(np.stack([language_for(g).legal_next(v.tokens) for g, v in zip(grammars, val)]), device=pop.device)
    float_loss, legal_accuracy = evaluate(pop, tokens, legal)
    family.quantize_(pop, config.quantization)
    loss = float_loss
    if config.quantization != "none":
        loss, legal_accuracy = evaluate(pop, tokens, legal)
    seeds = [p.generation_seeds[s] for p, s in zip(owners, slots)]
    max_len = grammars[0].max_len
    generated = generate(pop, task.generations, seeds, max_len)
    probes = language_probes(config)
    start = time.perf_counter()
    corpus = np.stack([probes.corpora[p.grammar_index].tokens for p in owners])
    sigs = language_signatures(family, pop, corpus, config.signature)
    signature_seconds = (time.perf_counter() - start) / len(owners)
    weights = family.weights(pop)
    out = []
    for i, (plan, grammar) in enumerate(zip(owners, grammars)):
        lang, lengths = language_for(grammar), lengths_of(generated[i])
        reference = grammar_lengths(grammar, task.reference_size, config.seed)
        metrics = {
            "val_loss": float(loss[i]),
            "float_val_loss": float(float_loss[i]),
            "legal_accuracy": float(legal_accuracy[i]),
            "validity": float(lang.validate(generated[i]).mean()),
            "generations": int(task.generations),
            "unfinished": float((lengths > max_len).mean()),
            "generated_length_mean": float(lengths.mean()),
            "grammar_length_mean": float(reference.mean()),
            "length_tv": length_tv(lengths, reference, max_len),
            "epochs": int(group.result.epochs[i]),
            "lr": plan.lr,
        }
        out.append(LanguageOutcome(weights[i], sigs[i], metrics, signature_seconds))
    return out


def _train(config: ZooConfig, plans: list[LanguagePlan], device: torch.device) -> list[LanguageOutcome]:
    """Every model of ``plans``, plan by plan, model by model."""
    jobs, owner, slot = [], [], []
    for plan in plans:
        for k, job in enumerate(_jobs(config, plan)):
            jobs.append(job)
            owner.append(plan)
            slot.append(k)
    outcomes: list[LanguageOutcome | None] = [None] * len(jobs)
    by_recipe: dict[int | None, list[int]] = {}
    for i in range(len(jobs)):
        by_recipe.setdefault(owner[i].part, []).append(i)
    family = get_family("transformer")
    for part, members in by_recipe.items():
        for group in family.train([jobs[i] for i in members], config.training_for(part), device):
            indices = [members[i] for i in group.indices]
            measured = _measure(config, family, group, [owner[i] for i in indices], [slot[i] for i in indices])
            for index, outcome in zip(indices, measured):
                outcomes[index] = outcome
    return outcomes  # type: ignore[return-value]


def language_schema(config: ZooConfig) -> pa.Schema:
    from zoo.factory.batch import zoo_identity
    from zoo.factory.language_schema import LANGUAGE_SCHEMA_VERSION, language_record_schema
    from zoo.factory.schema import with_zoo_metadata
    from zoo.factory.signatures import language_stat_names

    stats = language_stat_names(config.signature)
    zoo_id, config_hash = zoo_identity(config)
    return with_zoo_metadata(
        language_record_schema(len(stats)), signature_stats=stats, zoo_id=zoo_id, config_hash=config_hash,
        probe_hash=language_probes(config).hash, schema_version=LANGUAGE_SCHEMA_VERSION,
    )  # fmt: skip


def run_language_task(config: ZooConfig, batch_ids: tuple[int, ...], device: torch.device):
    """Train and measure every model of ``batch_ids``: one record per model."""
    from zoo.factory.batch import TaskStats, zoo_identity
    from zoo.factory.language_schema import LANGUAGE_SCHEMA_VERSION
    from zoo.factory.schema import records_to_table

    start = time.perf_counter()
    plans = [plan_language_batch(config, b) for b in batch_ids]
    outcomes = _train(config, plans, device)
    zoo_id, config_hash = zoo_identity(config)
    probe_hash = language_probes(config).hash
    per, rows = config.language.models_per_batch, []
    total = time.perf_counter() - start
    for i, plan in enumerate(plans):
        arch, grammar = plan.architecture, plan.grammar(config)
        family = get_family(arch.family)
        for k in range(per):
            model = outcomes[i * per + k]
            rows.append({
                "zoo_id": zoo_id, "config_hash": config_hash, "probe_hash": probe_hash,
                "schema_version": LANGUAGE_SCHEMA_VERSION, "batch_id": plan.batch_id, "pair_index": k,
                "example_id": f"{zoo_id}/{plan.batch_id:06d}/{k}", "run_seed": config.seed, "batch_seed": plan.seed,
                "init_seed": plan.init_seeds[k], "order_seed": plan.order_seeds[k],
                "generation_seed": plan.generation_seeds[k], "family": arch.family, "architecture": arch.to_json(),
                "grammar": grammar.grammar, "grammar_config": json.dumps(grammar.model_dump(mode="json"), sort_keys=True),
                "quantization": config.quantization,
                "weight_layout": [{"name": e.name, "shape": list(e.shape), "offset": e.offset} for e in arch.layout()],
                "weights": model.weights, "neuron_layer": family.neuron_layers(arch),
                "neuron_kind": family.neuron_kinds(arch), "signature": list(model.signature), "metrics": model.metrics,
                "timings": {
                    "train_s": total / len(outcomes) - model.signature_seconds,
                    "signature_s": model.signature_seconds,
                    "total_s": total / len(outcomes),
                },
            })  # fmt: skip
    stats = TaskStats(tuple(batch_ids), len(outcomes), len(rows), 0, time.perf_counter() - start)
    return records_to_table(rows, language_schema(config)), stats
