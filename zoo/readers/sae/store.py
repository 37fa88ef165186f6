"""Saving and loading coders in EleutherAI sparsify's layout: one folder per coder, ``cfg.json`` + ``sae.safetensors``.

``sae.safetensors`` holds ``encoder.weight [m, d_in]``, ``encoder.bias [m]``, ``W_dec [m, d_out]``,
``b_dec [d_out]`` and, for skip transcoders, ``W_skip [d_out, d_in]`` (sparsify's
``SparseCoder`` names and shapes). ``cfg.json`` holds sparsify's fields (``activation``,
``expansion_factor``, ``normalize_decoder``, ``num_latents``, ``k``, ``multi_topk``,
``skip_connection``, ``transcode``, ``d_in``) and zoo's under ``"zoo"`` (kind, threshold,
stream statistics, metrics, spec); sparsify drops fields it does not know.

The saved weights act on raw activations: the stream standardization ``(x - mean) / scale``
is folded into the biases and ``encoder.weight`` (latents come out multiplied by the
output scale; which latents fire does not change). So sparsify's ``SparseCoder.load_from_disk``
computes exactly what zoo's ``load_coder`` does for TopK coders with ``d_out == d_in``. A ReLU
coder is saved with ``k = num_latents`` (top-all of a ReLU is the ReLU: sparsify computes it
exactly too); a BatchTopK coder's inference rule is a threshold, which sparsify has not got:
sparsify reads it as a per-token TopK with the same ``k``, zoo's loader uses the threshold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zoo.readers.sae.module import SparseCoder
from zoo.readers.sae.spec import SAEError, SAESpec, Standardizer

LAYOUT = "sparsify"
FORMAT_VERSION = 1


def fold(weights: dict, x_std: Standardizer, y_std: Standardizer, spec: SAESpec) -> dict:
    """Weights trained on standardized activations, rewritten to act on raw ones (see the module docstring)."""
    mu_in = torch.as_tensor(x_std.mean, dtype=torch.float32)
    mu_out = torch.as_tensor(y_std.mean, dtype=torch.float32)
    s_in, s_out = float(x_std.scale), float(y_std.scale)
    W, b_enc, b_dec = weights["encoder.weight"], weights["encoder.bias"], weights["b_dec"]
    out = dict(weights)
    out["threshold"] = s_out * float(weights.get("threshold") or 0.0)
    if not spec.transcode:  # s_in == s_out, mu_in == mu_out: pre' = s * pre
        out["encoder.bias"] = s_out * b_enc
        out["b_dec"] = s_out * b_dec + mu_out
        return out
    r = s_out / s_in
    out["encoder.weight"] = r * W
    out["encoder.bias"] = s_out * b_enc - r * (W @ mu_in)
    b = s_out * b_dec + mu_out
    if weights.get("W_skip") is not None:
        out["W_skip"] = r * weights["W_skip"]
        b = b - r * (weights["W_skip"] @ mu_in)
    out["b_dec"] = b
    return out


def _cfg(spec: SAESpec, d_in: int, d_out: int, threshold: float, zoo_extra: dict) -> dict:
    return {
        "activation": "topk",
        "expansion_factor": max(1, spec.latents // d_in),
        "normalize_decoder": True,
        "num_latents": spec.latents,
        "k": spec.latents if spec.kind == "relu" else spec.k,
        "multi_topk": False,
        "skip_connection": spec.skip,
        "transcode": spec.transcode,
        "d_in": d_in,
        "zoo": {
            "format_version": FORMAT_VERSION,
            "layout": LAYOUT,
            "kind": spec.kind,
            "k": spec.k,
            "alpha": spec.alpha,
            "threshold": threshold,
            "d_out": d_out,
            "spec": {
                name: getattr(spec, name)
                for name in ("stream", "latents", "kind", "k", "alpha", "seed", "transcode", "skip", "auxk", "lr")
                + ("name",)
            },
            "learning_rate": spec.learning_rate,
            **zoo_extra,
        },
    }


def save_coder(coder, path: str | Path) -> Path:
    """Write one ``TrainedCoder`` to ``path/cfg.json`` and ``path/sae.safetensors`` (raw-activation weights)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = fold(coder.weights, coder.x_std, coder.y_std, coder.spec)
    tensors = {name: weights[name].contiguous() for name in ("encoder.weight", "encoder.bias", "W_dec", "b_dec")}
    if weights.get("W_skip") is not None:
        tensors["W_skip"] = weights["W_skip"].contiguous()
    save_file(tensors, str(path / "sae.safetensors"))
    extra = {
        "input_stats": coder.x_std.to_json(),
        "output_stats": coder.y_std.to_json(),
        "metrics": coder.metrics,
        "best_step": coder.best_step,
        "steps": coder.steps,
    }
    cfg = _cfg(coder.spec, coder.d_in, coder.d_out, weights["threshold"], extra)
    (path / "cfg.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return path


def save_population(result, out: str | Path) -> list[Path]:
    """One folder per coder (named by its label) and ``index.json`` listing them with their metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [save_coder(c, out / c.spec.label) for c in result.coders]
    index = [{"path": p.name, **row} for p, row in zip(paths, result.table())]
    (out / "index.json").write_text(json.dumps({"layout": LAYOUT, "coders": index}, indent=1) + "\n")
    return paths


def load_coder(path: str | Path, device: str | torch.device = "cpu") -> SparseCoder:
    """A saved coder as a ``SparseCoder`` (``encode``/``decode``/``forward`` on raw activations)."""
    path = Path(path)
    cfg_path, weights_path = path / "cfg.json", path / "sae.safetensors"
    if not cfg_path.is_file() or not weights_path.is_file():
        raise SAEError(f"{path} is not a saved coder (needs cfg.json and sae.safetensors)")
    cfg = json.loads(cfg_path.read_text())
    tensors = load_file(str(weights_path))
    zoo = cfg.get("zoo", {})
    kind = zoo.get("kind", "topk")
    d_in = int(cfg["d_in"])
    latents, w_dec = tensors["encoder.weight"].shape[0], tensors["W_dec"]
    d_out = int(zoo.get("d_out", w_dec.shape[1]))
    coder = SparseCoder(
        d_in, latents, d_out, kind=kind, k=int(zoo.get("k", cfg["k"])), transcode=bool(cfg.get("transcode")),
        skip=bool(cfg.get("skip_connection")), threshold=float(zoo.get("threshold", 0.0)),
    )  # fmt: skip
    coder.load_weights(tensors)
    if not math.isfinite(float(coder.threshold)):
        raise SAEError(f"{path}: threshold is not finite")
    return coder.to(device).eval()


def load_population(out: str | Path) -> dict[str, SparseCoder]:
    """Every coder a ``save_population`` folder lists, by label."""
    index = json.loads((Path(out) / "index.json").read_text())
    return {row["label"]: load_coder(Path(out) / row["path"]) for row in index["coders"]}
