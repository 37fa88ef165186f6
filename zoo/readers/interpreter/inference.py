"""The interpreter run over examples: its predictions, and the validation figures training selects on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zoo.readers.interpreter.config import InterpreterConfig
from zoo.readers.interpreter.data import Example, SplitData, from_tokens
from zoo.readers.interpreter.directions import LatentMeans
from zoo.readers.interpreter.losses import Edits, RepairInputs, losses
from zoo.readers.interpreter.metrics import SetSpace, choose_threshold, exact_match, macro_f1, mae, read_sets, top1
from zoo.readers.interpreter.model import Interpreter

OBJECTIVE_TERMS = ("patterns", "corrupted", "accuracy", "repair_function")

@dataclass
class Predictions:
    """Everything the interpreter says about a list of examples (numpy, in example order)."""

    examples: list[Example]
    pattern_probs: np.ndarray  # [n, V]
    corrupted_logits: np.ndarray  # [n, V]
    accuracy: np.ndarray  # [n]
    latent: np.ndarray  # [n, latent]
    repaired: list[np.ndarray] | None  # flat weights per example

    def pattern_sets(self, threshold: float = 0.5, space: SetSpace | None = None) -> np.ndarray:
        return read_sets(self.pattern_probs, self.corrupted_logits, threshold, space)

    @property
    def targets(self) -> np.ndarray:
        return np.stack([e.targets for e in self.examples]) if self.examples else np.zeros((0, self.pattern_probs.shape[1]))


def predict(
    model: Interpreter,
    batches,
    device: torch.device,
    *,
    repair: bool = False,
) -> Predictions:
    """Run the interpreter over ``(examples, batch)`` pairs (as ``SplitData.batches`` yields)."""
    model.eval()
    examples: list[Example] = []
    probs, corrupted, accuracy, latents, repaired = [], [], [], [], []
    with torch.no_grad():
        for chunk, batch in batches:
            batch = batch.to(device)
            out = model(batch)
            examples.extend(chunk)
            probs.append(torch.sigmoid(out.patterns).cpu().numpy())
            corrupted.append(out.corrupted.cpu().numpy())
            accuracy.append(out.accuracy.cpu().numpy())
            latents.append(out.latent.cpu().numpy())
            if repair:
                weights = model.repair(batch, out)
                decoded = from_tokens(weights, [e.architecture for e in chunk])
                repaired.extend(e.degraded.copy() if w is None else w for e, w in zip(chunk, decoded))  # None: not decoded

    def cat(parts: list[np.ndarray], width: int) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)

    v = model.n_patterns
    return Predictions(
        examples,
        cat(probs, v),
        cat(corrupted, v),
        np.concatenate(accuracy) if accuracy else np.zeros(0, dtype=np.float32),
        cat(latents, model.config.latent),
        repaired if repair else None,
    )


def quick_metrics(
    pred: Predictions, names: tuple[str, ...], threshold: float | None = None, space: SetSpace | None = None
) -> dict[str, float]:
    """Set figures at ``threshold``, or (None) at the one evaluation would choose on these predictions,
    sets brought into the zoo's ``space`` as evaluation does.

    Training selects ``best.safetensors`` on validation this way, so the checkpoint kept is
    the best at the set threshold the report will use, not at 0.5.
    """
    if not pred.examples:
        return {}
    truth = pred.targets
    if threshold is None:
        threshold = choose_threshold(pred.pattern_probs, pred.corrupted_logits, truth, space=space)
    sets = pred.pattern_sets(threshold, space)
    return {
        "set_threshold": threshold,
        "exact_match": exact_match(sets, truth),
        "macro_f1": macro_f1(sets, truth, names),
        "corrupted_accuracy": top1(pred.corrupted_logits, np.array([e.corrupted for e in pred.examples])),
        "accuracy_mae": mae(pred.accuracy, np.array([e.accuracy for e in pred.examples])),
    }


def evaluate_loss(
    model: Interpreter,
    data: SplitData,
    config: InterpreterConfig,
    inputs: RepairInputs,
    device: torch.device,
    means: LatentMeans | None = None,
) -> tuple[dict[str, float], Predictions]:
    """Mean loss terms and quick metrics over a split (no gradient); the edit term along ``means``' directions,
    with the same edits every call."""
    edits = None if means is None else Edits(means, torch.Generator().manual_seed(config.seed))
    model.eval()
    sums: dict[str, float] = {}
    total, rows = 0.0, 0
    examples, probs, corrupted, accuracy, latents = [], [], [], [], []
    with torch.no_grad():
        for chunk, batch in data.batches(config.eval_batch_size):
            batch = batch.to(device)
            loss, terms, out = losses(model, batch, config, inputs, every_term=True, edits=edits)
            n = len(chunk)
            total += float(loss) * n
            rows += n
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * n
            examples.extend(chunk)
            probs.append(torch.sigmoid(out.patterns).cpu().numpy())
            corrupted.append(out.corrupted.cpu().numpy())
            accuracy.append(out.accuracy.cpu().numpy())
            latents.append(out.latent.cpu().numpy())
    if not rows:
        return {}, Predictions([], np.zeros((0, model.n_patterns)), np.zeros((0, model.n_patterns)), np.zeros(0), np.zeros((0, 1)), None)
    pred = Predictions(examples, np.concatenate(probs), np.concatenate(corrupted), np.concatenate(accuracy), np.concatenate(latents), None)
    figures = {"loss": total / rows, **{f"loss_{k}": v / rows for k, v in sums.items()}}
    # the same sum whatever the configured weights, so runs with other loss weights compare (Tune's default metric)
    figures["objective"] = sum(figures[f"loss_{k}"] for k in OBJECTIVE_TERMS)
    return figures, pred


def selection_score(metrics: dict, select: str) -> tuple[float, float]:
    """Lower is better: ``(-exact match, loss)`` on validation, or ``(loss, 0)``; training loss without a validation split."""
    loss = metrics.get("val_loss", metrics["train_loss"])
    if select == "exact_match" and "val_exact_match" in metrics:
        return -metrics["val_exact_match"], loss
    return loss, 0.0
