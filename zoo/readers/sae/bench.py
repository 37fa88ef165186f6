"""Benchmark: the SAE population trainer against a per-SAE loop, in one run.

    python -m zoo.readers.sae.bench                       # 64 TopK SAEs, d in {32, 64}, widths 4d and 8d
    python -m zoo.readers.sae.bench --batch-size 64 --json

Both train the same coders (``loop.train_loop``: one ``nn.Module`` + one ``torch.optim.Adam``
each, one after another; ``train_population``: stacked) on the same planted-dictionary
streams, for the same number of steps with the same batches, with early stopping off. The
figure is the throughput ratio (coder-steps per second); both held-out FVUs are reported
(they agree: the two compute the same thing). The population's time includes its one
held-out evaluation; both include initialization. ``bench_sae`` is what ``zoo bench`` can call.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np
import torch

from zoo.readers.sae.loop import train_loop
from zoo.readers.sae.metrics import fvu
from zoo.readers.sae.spec import SAESpec, TrainConfig, prepare
from zoo.readers.sae.synthetic import planted_dictionary
from zoo.readers.sae.train import train_population


def bench_specs(n_saes: int, dims, widths, ks, kind: str = "topk") -> list[SAESpec]:
    grid = list(itertools.product(dims, widths, ks))
    specs = []
    for seed in itertools.count():
        for d, w, k in grid:
            if len(specs) == n_saes:
                return specs
            specs.append(SAESpec(f"d{d}", latents=w * d, k=k, kind=kind, alpha=1.0, seed=seed))
    return specs


def bench_sae(
    n_saes: int = 64,
    dims=(32, 64),
    widths=(4, 8),
    ks=(8, 16),
    steps: int = 200,
    batch_size: int = 128,
    tokens: int = 20_000,
    val_tokens: int = 2_000,
    threads: int | None = 1,
    bucket: bool = True,
    kind: str = "topk",
    device: str = "cpu",
) -> dict:
    streams = [
        planted_dictionary(n_features=2 * d, d=d, tokens=tokens, val_tokens=val_tokens, active=4, seed=d).stream(f"d{d}")
        for d in dims
    ]
    specs = bench_specs(n_saes, dims, widths, ks, kind)
    config = TrainConfig(
        steps=steps, batch_size=batch_size, eval_every=steps, patience=None, val_tokens=val_tokens,
        threads=threads, bucket=bucket, device=device,
    )  # fmt: skip
    cpu = time.process_time()
    population = train_population(streams, specs, config)
    population_cpu = time.process_time() - cpu
    cpu = time.process_time()
    loop, loop_seconds = train_loop(streams, specs, config)
    loop_cpu = time.process_time() - cpu
    prepared = {s.name: prepare(s) for s in streams}
    loop_fvu = []
    with torch.no_grad():
        for spec, coder in zip(specs, loop):
            x = torch.from_numpy(prepared[spec.stream].val[:val_tokens])
            loop_fvu.append(fvu(x, coder(x)))
    pop_fvu = [c.metrics["fvu"] for c in population.coders]
    coder_steps = len(specs) * steps
    return {
        "saes": len(specs),
        "kind": kind,
        "dims": list(dims),
        "latents": sorted({s.latents for s in specs}),
        "ks": list(ks),
        "steps": steps,
        "batch_size": batch_size,
        "threads": torch.get_num_threads() if not threads else threads,
        "bucket": bucket,
        "device": device,
        "population_seconds": population.seconds,
        "loop_seconds": loop_seconds,
        "population_sae_steps_per_s": coder_steps / population.seconds,
        "loop_sae_steps_per_s": coder_steps / loop_seconds,
        "speedup": loop_seconds / population.seconds,
        # CPU time of this process (both sides include it the same way): steadier than wall time on a shared machine
        "population_cpu_seconds": population_cpu,
        "loop_cpu_seconds": loop_cpu,
        "cpu_speedup": loop_cpu / population_cpu,
        "population_fvu_mean": float(np.mean(pop_fvu)),
        "loop_fvu_mean": float(np.mean(loop_fvu)),
        "fvu_max_abs_diff": float(np.max(np.abs(np.array(pop_fvu) - np.array(loop_fvu)))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.readers.sae.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--saes", type=int, default=64)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8], help="latents as multiples of d")
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--kind", default="topk", choices=["topk", "batchtopk", "relu"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's setting)")
    parser.add_argument("--no-bucket", action="store_true", help="one padded stack instead of one per shape")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where both sides train")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = bench_sae(
        n_saes=args.saes, dims=args.dims, widths=args.widths, ks=args.ks, steps=args.steps,
        batch_size=args.batch_size, threads=args.threads, bucket=not args.no_bucket, kind=args.kind,
        device=args.device,
    )  # fmt: skip
    if args.json:
        print(json.dumps(out))
        return 0
    print(
        f"{out['saes']} {out['kind']} SAEs, d {out['dims']}, latents {out['latents']}, k {out['ks']}, "
        f"{out['steps']} steps of batch {out['batch_size']}, {out['threads']} thread(s), bucket={out['bucket']}"
    )
    print(f"population: {out['population_seconds']:.2f} s ({out['population_sae_steps_per_s']:.0f} SAE-steps/s), "
          f"held-out FVU {out['population_fvu_mean']:.4f}")  # fmt: skip
    print(f"per-SAE loop: {out['loop_seconds']:.2f} s ({out['loop_sae_steps_per_s']:.0f} SAE-steps/s), "
          f"held-out FVU {out['loop_fvu_mean']:.4f}")  # fmt: skip
    print(f"speedup {out['speedup']:.1f}x (CPU time: {out['cpu_speedup']:.1f}x); FVU max |diff| {out['fvu_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
