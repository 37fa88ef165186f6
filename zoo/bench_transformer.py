"""``zoo bench --family transformer``: transformer populations against one ``nn.Module`` + AdamW per model.

Both trainers get the same models (architecture, init, learning rate), the same data and
data order, epochs, batch size, clipping, weight decay, early stopping and torch threads;
they take turns one population at a time (see ``zoo.bench``). The reference trains the first
``reference_models`` of them; accuracies are compared on the models both trained.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.progress import Progress

from zoo.bench import BenchError, BenchResult, _sync, bench_result
from zoo.config import ZooConfig
from zoo.factory.plan import clean_job, plan_batch
from zoo.runtime import resolve_device
from zoo.subjects.families.transformer import Architecture
from zoo.subjects.transformer_module import init_weights
from zoo.subjects.transformer_population import logits
from zoo.subjects.transformer_train import plan_groups, population_size, train_group, train_reference


def train_flops(arch: Architecture, train: int, val: int, epochs: int) -> float:
    """Approximate useful FLOPs of training one model: 6 per weight a token uses per training token, 2 per
    validation token (attention scores and the last block's one-position shortcut left out)."""
    d, inner = arch.d_model, arch.rank or arch.d_model
    if arch.ffn == "dense":
        ffn = 2 * d * arch.d_hidden
    else:
        ffn = inner * arch.d_hidden + arch.k * inner + (2 * d * inner if arch.rank else 0)
    per_token = arch.n_layers * (4 * d * d + ffn) + arch.vocab_size * d
    return float(epochs) * per_token * arch.seq_len * (6 * train + 2 * val)


def run_transformer_bench(config: ZooConfig, models: int, progress: bool, reference_models: int) -> BenchResult:
    if not config.spaces("transformer") or config.spaces("mlp"):
        raise BenchError("bench --family transformer: the config's architecture must be a transformer space")
    threads = torch.get_num_threads()
    device = resolve_device(config.training.device)
    plans = [plan_batch(config, i) for i in range(models)]
    jobs = [clean_job(p) for p in plans]
    archs = [j.architecture for j in jobs]
    size = population_size(config.training, device, archs)
    one_epoch = config.training.model_copy(update={"epochs": 1})

    def reference(i: int, training=config.training) -> np.ndarray:
        job = jobs[i]
        model, _, _ = train_reference(
            job.architecture, init_weights(job.architecture, job.init_seed), job.train_tokens, job.train_labels,
            job.val_tokens, job.val_labels, training, job.lr, job.order_seed,
        )  # fmt: skip
        with torch.no_grad():
            return model(torch.as_tensor(plans[i].data.benchmark.tokens)).numpy()

    train_group(jobs[: min(2, models)], one_epoch, device)  # warm-up: one-off costs of both trainers
    reference(0, one_epoch)
    population_logits = np.zeros((models, len(plans[0].data.benchmark.pattern)), dtype=np.float32)
    reference_logits = np.zeros_like(population_logits)
    population_seconds = reference_seconds = flops = 0.0
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("transformer population, then the sequential reference", total=models + reference_models)
        for indices in plan_groups(archs, size):
            _sync(device)
            start = time.perf_counter()
            pop, result = train_group([jobs[i] for i in indices], config.training, device)
            _sync(device)
            population_seconds += time.perf_counter() - start
            flops += sum(
                train_flops(archs[i], len(jobs[i].train_labels), len(jobs[i].val_labels), int(e))
                for i, e in zip(indices, result.epochs)
            )
            tokens = torch.as_tensor(np.stack([plans[i].data.benchmark.tokens for i in indices]), device=device)
            population_logits[indices] = logits(pop, tokens).cpu().numpy()
            bar.advance(task, len(indices))
            start = time.perf_counter()
            for i in (i for i in indices if i < reference_models):
                reference_logits[i] = reference(i)
                bar.advance(task)
            reference_seconds += time.perf_counter() - start
    return bench_result(
        plans, models, reference_models, device, threads, flops,
        (population_seconds, population_logits), (reference_seconds, reference_logits),
    )
