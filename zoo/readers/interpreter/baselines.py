"""The interpreter's two baselines and their ensemble: small MLPs on fixed features of a subject.

``weight_statistics`` reads order-free statistics of each layer's weights (for a family without
the MLP's layers, of each block's named parameters), ``output_only`` the subject's answers on the
probe set: what any reader can see without reading neurons. Both carry the interpreter's three
heads, so their figures sit beside its own in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zoo.config import ACTIVATIONS
from zoo.readers.interpreter.config import BaselineConfig
from zoo.readers.interpreter.data import Example, ZooSource, collate, one_hot
from zoo.readers.interpreter.metrics import Readout, sigmoid, softmax
from zoo.readers.interpreter.model import NEVER, subject_logits
from zoo.readers.interpreter.neurons import family_logits, has_token_space
from zoo.readers.interpreter.train import AdamW, Predictions

BASELINES = ("weight_statistics", "output_only")
ENSEMBLE = "interpreter+output_only"


def weight_statistics(examples: list[Example], max_layers: int, families: Sequence[str] = ()) -> np.ndarray:
    """Per layer (hidden layers up to ``max_layers``, then the head): 10 weight and 4 bias statistics,
    plus depth, log width and the activation: ``[n, 14 * (max_layers + 1) + 7]``; with more than one
    of ``families`` (a mixed zoo) a one-hot of the subject's family after them."""
    rows = []
    for e in examples:
        arch = e.architecture
        if arch.family != "mlp":
            rows.append(_family_row(e, max_layers))
            continue
        entries = arch.layout()
        slots = np.zeros((max_layers + 1, 15), dtype=np.float32)
        for layer in range(arch.n_layers + 1):
            w, b = entries[2 * layer], entries[2 * layer + 1]
            weights = e.degraded[w.offset : w.offset + w.size]
            bias = e.degraded[b.offset : b.offset + b.size]
            slot = max_layers if layer == arch.n_layers else min(layer, max_layers - 1)
            q = np.quantile(weights, [0.05, 0.25, 0.5, 0.75, 0.95])
            slots[slot] = [
                1.0, weights.mean(), weights.std(), weights.min(), weights.max(), np.abs(weights).mean(), *q,
                bias.mean(), bias.std(), bias.min(), bias.max(),
            ]
        act = np.zeros(len(ACTIVATIONS), dtype=np.float32)
        if arch.activation in ACTIVATIONS:
            act[ACTIVATIONS.index(arch.activation)] = 1.0
        rows.append(np.concatenate([slots.ravel(), [arch.n_layers / max_layers, np.log(max(arch.widths))], act]))
    table = np.asarray(rows, dtype=np.float32)
    if len(families) > 1 and rows:
        table = np.concatenate([table, np.array([[e.family == f for f in families] for e in examples], dtype=np.float32)], axis=1)
    return table


def _slot_stats(weights: np.ndarray, bias: np.ndarray) -> list[float]:
    q = np.quantile(weights, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(weights) else np.zeros(5)
    b = bias if len(bias) else np.zeros(1)
    w = weights if len(weights) else np.zeros(1)
    return [1.0, w.mean(), w.std(), w.min(), w.max(), np.abs(w).mean(), *q, b.mean(), b.std(), b.min(), b.max()]


def _family_row(example: Example, max_layers: int) -> np.ndarray:
    """The same row for a family without the MLP's layer layout, by named parameter: block ``i``'s tensors
    (``blocks.{i}.*``) fill slot ``i``, the rest (embeddings, final norm, head) the head's slot; matrices give
    the weight statistics, vectors the bias ones. Width is the model width; no activation."""
    arch = example.architecture
    parts: dict[int, tuple[list, list]] = {}
    for entry in arch.layout():
        values = example.degraded[entry.offset : entry.offset + entry.size]
        head, _, rest = entry.name.partition(".")
        slot = min(int(rest.split(".")[0]), max_layers - 1) if head == "blocks" and rest.split(".")[0].isdigit() else max_layers
        weights, biases = parts.setdefault(slot, ([], []))
        (weights if len(entry.shape) > 1 else biases).append(values)
    slots = np.zeros((max_layers + 1, 15), dtype=np.float32)
    for slot, (weights, biases) in parts.items():
        slots[slot] = _slot_stats(np.concatenate(weights or [np.zeros(0)]), np.concatenate(biases or [np.zeros(0)]))
    width = getattr(arch, "d_model", 1)
    return np.concatenate([slots.ravel(), [arch.n_layers / max_layers, np.log(width)], np.zeros(len(ACTIVATIONS))])


def output_logits(examples: list[Example], probe_tokens: np.ndarray, vocab_size: int, batch_size: int = 64) -> np.ndarray:
    """Each degraded subject's logits on the probe set: ``[n, n_probes]`` (MLPs in token space, as always;
    other families through their populations)."""
    out = np.zeros((len(examples), len(probe_tokens)), dtype=np.float32)
    mlp = [i for i, e in enumerate(examples) if has_token_space(e.architecture)]
    other = [i for i in range(len(examples)) if i not in set(mlp)]
    x = one_hot(probe_tokens, vocab_size)
    with torch.no_grad():
        for start in range(0, len(mlp), batch_size):
            rows = mlp[start : start + batch_size]
            batch = collate([examples[i] for i in rows])
            out[rows] = subject_logits(batch, batch.degraded, x).numpy()
    if other:
        out[other] = family_logits([examples[i].architecture for i in other], [examples[i].degraded for i in other], probe_tokens)
    return out


@dataclass
class BaselineModel:
    """A small MLP with the interpreter's three heads, on fixed features."""

    net: torch.nn.Module
    mean: np.ndarray
    std: np.ndarray
    undrawn: np.ndarray  # [V] bool: patterns the zoo never draws, which a baseline never names either

    @classmethod
    def fit(cls, features: np.ndarray, examples: list[Example], undrawn: np.ndarray, config: BaselineConfig, seed: int) -> BaselineModel:
        n_patterns = len(undrawn)
        torch.manual_seed(seed)
        mean, std = features.mean(0), features.std(0) + 1e-6
        x = torch.from_numpy((features - mean) / std).float()
        targets = torch.from_numpy(np.stack([e.targets for e in examples]))
        corrupted = torch.tensor([e.corrupted for e in examples])
        accuracy = torch.tensor([e.accuracy for e in examples], dtype=torch.float32)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], config.hidden),
            torch.nn.GELU(),
            torch.nn.Linear(config.hidden, config.hidden),
            torch.nn.GELU(),
            torch.nn.Linear(config.hidden, 2 * n_patterns + 1),
        )
        opt = AdamW(net.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
        for _ in range(config.epochs):
            out = net(x)
            loss = (
                F.binary_cross_entropy_with_logits(out[:, :n_patterns], targets)
                + F.cross_entropy(out[:, n_patterns : 2 * n_patterns], corrupted)
                + 10.0 * F.mse_loss(torch.sigmoid(out[:, -1]), accuracy)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        return cls(net.eval(), mean, std, undrawn)

    def outputs(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pattern-set and corrupted-pattern logits (``NEVER`` for undrawn patterns) and accuracy."""
        with torch.no_grad():
            out = self.net(torch.from_numpy((features - self.mean) / self.std).float()).numpy()
        k = len(self.undrawn)
        patterns, corrupted = out[:, :k], out[:, k : 2 * k]
        patterns[:, self.undrawn] = NEVER
        corrupted[:, self.undrawn] = NEVER
        return patterns, corrupted, sigmoid(out[:, -1])

    def probabilities(self, features: np.ndarray) -> Readout:
        patterns, corrupted, accuracy = self.outputs(features)
        return sigmoid(patterns), corrupted, accuracy


def ensemble(pred: Predictions, baseline: BaselineModel, features: np.ndarray, weight: float) -> Readout:
    """Set probabilities, corrupted-pattern log-probabilities and accuracy of the interpreter averaged with a baseline.

    The interpreter reads neuron signatures and the output-only baseline the subject's
    answers on the probes; they err on different models (the baseline names the corrupted
    pattern better at 90%+ corruption, the interpreter below), so their mean beats both.
    """
    patterns, corrupted, accuracy = baseline.outputs(features)
    pattern_probs = weight * pred.pattern_probs + (1.0 - weight) * sigmoid(patterns)
    corrupted = np.log(weight * softmax(pred.corrupted_logits) + (1.0 - weight) * softmax(corrupted) + 1e-12)
    return pattern_probs, corrupted, weight * pred.accuracy + (1.0 - weight) * accuracy


def readouts(pred: Predictions, features: dict[str, np.ndarray], baselines: dict[str, BaselineModel], weight: float) -> dict[str, Readout]:
    """Every reader's outputs on the same examples: the interpreter, the baselines, the ensemble."""
    out = {"interpreter": (pred.pattern_probs, pred.corrupted_logits, pred.accuracy)}
    for name, baseline in baselines.items():
        out[name] = baseline.probabilities(features[name])
    out[ENSEMBLE] = ensemble(pred, baselines["output_only"], features["output_only"], weight)
    return out


def feature_sets(source: ZooSource, examples: list[Example]) -> dict[str, np.ndarray]:
    """Both baselines' inputs for ``examples``: weight statistics, and the answers on the probe set."""
    spaces = source.config.spaces()
    families = sorted({space.family for space in spaces})
    return {
        "weight_statistics": weight_statistics(examples, max(s.layers.max for s in spaces), families),
        "output_only": output_logits(examples, source.probe.tokens, source.config.patterns.vocab_size),
    }
