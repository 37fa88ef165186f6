"""The GPU path: what ``bench/gpu.sh`` checks on a CUDA machine, and that the script itself runs.

Tests marked ``gpu`` skip without CUDA (``bench/gpu.sh`` runs them with ``-m gpu``); the
others run everywhere: the epoch order the GPU computes, and the script's ``--dry-run``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_population import CONFIG, make_jobs

from zoo.subjects.fit import epoch_order_tensor, epoch_order_torch
from zoo.subjects.population import epoch_order, to_weights
from zoo.subjects.train import train_subjects

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SEEDS = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 12345678901234567], dtype=np.uint64)


def trained_weights(jobs, device: str) -> tuple[list[np.ndarray], list[int]]:
    """Each job's trained weights and epochs, in job order."""
    weights: list = [None] * len(jobs)
    epochs: list = [None] * len(jobs)
    for group in train_subjects(jobs, CONFIG, torch.device(device)):
        for slot, i in enumerate(group.indices):
            weights[i], epochs[i] = to_weights(group.population)[slot], int(group.result.epochs[slot])
    return weights, epochs


def test_the_epoch_order_torch_computes_is_numpy_s_bit_for_bit():
    """The GPU sorts its models' data orders itself; they must be the host's permutations, or records change."""
    for epoch, n in ((0, 1), (1, 777), (19, 5000)):
        torch_order = epoch_order_torch(torch.as_tensor(SEEDS.view(np.int64)), epoch, n)
        np.testing.assert_array_equal(torch_order.numpy(), epoch_order(SEEDS, epoch, n))


@pytest.mark.gpu
@needs_cuda
def test_the_epoch_order_on_the_gpu_is_the_host_s():
    on_gpu = epoch_order_tensor(SEEDS, 3, 5000, torch.device("cuda"))
    assert on_gpu.device.type == "cuda"
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), epoch_order(SEEDS, 3, 5000))


def test_the_gpu_bench_times_the_trainer_s_own_epochs():
    """``zoo.bench_gpu.train_epochs`` (uncaptured here) trains bit for bit what ``train_group`` trains."""
    from zoo.bench_gpu import train_epochs
    from zoo.subjects.fit import _Run
    from zoo.subjects.population import init_population
    from zoo.subjects.train import stack_data, train_group

    jobs, device = make_jobs(), torch.device("cpu")
    config = CONFIG.model_copy(update={"epochs": 4, "patience": 10})  # nobody stops: no compaction
    pop = init_population([j.architecture for j in jobs], [j.init_seed for j in jobs], device)
    run = _Run(pop, stack_data(jobs, device), [j.lr for j in jobs], [j.order_seed for j in jobs])
    *_, captured = train_epochs(run, config, 4, graphs=True)
    trained, _ = train_group(jobs, config, device)
    assert not captured
    assert torch.equal(run.best_flat, trained.flat)


@pytest.mark.gpu
@needs_cuda
def test_the_cuda_population_trains_what_the_cpu_one_trains():
    """Same models, same epochs; weights within 1e-4 (other kernels sum in another order)."""
    jobs = make_jobs()
    cpu, cpu_epochs = trained_weights(jobs, "cpu")
    cuda, cuda_epochs = trained_weights(jobs, "cuda")
    assert cuda_epochs == cpu_epochs
    for a, b in zip(cpu, cuda):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_a_captured_epoch_replays_what_the_eager_one_computes():
    """``bench/gpu.sh`` times the trainer with CUDA graphs too: they must train the same models."""
    from zoo.bench_gpu import train_epochs
    from zoo.subjects.fit import _Run
    from zoo.subjects.population import init_population
    from zoo.subjects.train import stack_data

    jobs, device = make_jobs(), torch.device("cuda")
    flats = []
    for graphs in (False, True):
        pop = init_population([j.architecture for j in jobs], [j.init_seed for j in jobs], device)
        run = _Run(pop, stack_data(jobs, device), [j.lr for j in jobs], [j.order_seed for j in jobs])
        *_, captured = train_epochs(run, CONFIG, 4, graphs)
        assert captured == graphs
        flats.append(run.pop.flat.cpu())
    torch.testing.assert_close(flats[0], flats[1], atol=1e-6, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_two_fractional_gpu_actors_share_one_gpu(ray_session, make_config, tmp_path):
    """``num_gpus_per_worker: 0.5``: Ray puts both actors on one GPU, each is held to half of
    its memory (``torch.cuda.set_per_process_memory_fraction``), and both train on it at once."""
    from zoo.factory.runner import BatchWorker

    ray = ray_session
    if ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("Ray sees no GPU")

    class Placed(BatchWorker):
        def placement(self) -> tuple[list, bool]:
            """The GPU ids Ray gave this actor, and whether it may allocate 60% of the device."""
            import ray as ray_here

            total = torch.cuda.get_device_properties(0).total_memory
            try:
                torch.empty(int(0.6 * total), dtype=torch.uint8, device="cuda")
                return ray_here.get_gpu_ids(), True
            except torch.cuda.OutOfMemoryError:
                return ray_here.get_gpu_ids(), False

    config = make_config(runtime={"num_gpus_per_worker": 0.5}, training={"device": "cuda"})
    actor = ray.remote(Placed).options(num_gpus=0.5, num_cpus=0.5)
    actors = [actor.remote(config, str(tmp_path)) for _ in range(2)]
    placements = ray.get([a.placement.remote() for a in actors], timeout=300)
    assert len(placements[0][0]) == 1 and placements[0][0] == placements[1][0]
    assert [may for _, may in placements] == [False, False]
    tasks = ray.get([a.run.remote((i,)) for i, a in enumerate(actors)], timeout=300)
    assert [stats.models for _, stats in tasks] == [3, 3]  # a clean and two degraded models each
    for a in actors:
        ray.kill(a)


@pytest.mark.slow
def test_the_gpu_script_runs_every_step_at_toy_size_on_the_cpu(tmp_path):
    """``bench/gpu.sh --dry-run``: the import check, the gpu tests (skipped here), and every
    measurement at toy size; the one JSON holds a figure for each."""
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["tests"]["rc"] == 0
    assert "skipped" in report["tests"]["summary"]  # no CUDA here: the gpu tests skip
    for key in ("6", "6_graphs", "12", "12_graphs", "24", "24_graphs"):
        assert report["trainer"][key]["models_trained"] == int(key.split("_")[0]), key
        assert report["trainer"][key]["models_per_hour"] > 0
    assert report["trainer_full"]["models_per_hour"] > 0
    for layout in ("one_actor_per_gpu", "four_actors_per_gpu"):
        assert report["generate"][layout]["models"] > 0 and report["generate"][layout]["models_per_hour"] > 0
    assert done.stderr.count("== bench/gpu.sh:") == 4  # three steps and the end
