"""Linear probes of many layers of many models, trained as one batched computation.

A *feature set* is one layer's activations of one model, with its own train/val
split and ``K`` label vectors (task 0: the real classes; task 1: the control,
shuffled labels). Every (feature set, task) pair gets one probe: a linear layer
with a sigmoid per class, trained with BCE on one-hot targets and read by argmax.

All probes live in stacked tensors: weights ``[F, D, K * C]`` and biases
``[F, 1, K * C]`` where ``D`` and ``C`` are the widest layer and the largest class
count of the group. Narrower layers are zero-padded (padded features are zero, so
their weights get no gradient and weight decay keeps them at zero); missing
classes are masked out of the loss and the argmax. One ``baddbmm`` computes every
probe's logits on its own minibatch and one ``bmm`` every probe's weight gradient.

The optimizer is ``zoo.optim.StackedAdam``, with a learning rate per probe so
that ReduceLROnPlateau can act on each probe alone; weight decay touches the
weights, never the biases (coupled as in ``torch.optim.Adam``, or decoupled:
``adamw``). Activations are standardized with the training split's statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zoo.readers.probes.config import ProbeConfig
from zoo.optim import StackedAdam
from zoo.readers.probes.data import ProbeError
from zoo.runtime import resolve_device, torch_threads


@dataclass(eq=False)
class FeatureSet:
    """One layer of one model: activations ``x [N, d]``, ``K`` label vectors and a train/val split."""

    x: np.ndarray
    labels: list[np.ndarray]
    n_classes: int
    train_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def width(self) -> int:
        return int(self.x.shape[1])


@dataclass(eq=False)
class ProbeWeights:
    """A trained probe: ``logits = ((x - mean) / std) @ weight + bias``; ``weight`` is ``[d, C]``."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return z @ self.weight + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


@dataclass(eq=False)
class ProbeRun:
    """Everything the training of a group produced; arrays indexed ``[feature set][task]``."""

    best: list[list[ProbeWeights]]
    final: list[list[ProbeWeights]]
    best_epoch: np.ndarray  # [F, K] 1-based epoch whose weights are ``best``
    best_accuracy: np.ndarray  # [F, K] validation accuracy of ``best``
    final_accuracy: np.ndarray  # [F, K]
    train_loss: np.ndarray  # [E, F, K]
    train_accuracy: np.ndarray  # [E, F, K]
    val_accuracy: np.ndarray  # [E, F, K], NaN on epochs without validation
    val_loss: np.ndarray  # [E, F, K], NaN on epochs without validation
    lr: np.ndarray  # [E, F, K] learning rate used in each epoch
    val_pred: list[np.ndarray] = field(default_factory=list)  # per feature set [K, V]: best weights' predictions
    val_pred_final: list[np.ndarray] = field(default_factory=list)  # per feature set [K, V]

    @property
    def epochs(self) -> int:
        return int(self.train_loss.shape[0])


EpochCallback = Callable[[int, dict], None]


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices, each class split ``1 - val_fraction : val_fraction`` with a fixed seed.

    A class with at least two members puts at least one in each split.
    """
    rng = np.random.default_rng([seed, 11])
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(val_fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def control_labels(labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, seed: int) -> np.ndarray:
    """The control task: labels shuffled within each split, so class counts stay as they are."""
    rng = np.random.default_rng([seed, 13])
    out = labels.copy()
    for idx in (train_idx, val_idx):
        out[idx] = labels[idx][rng.permutation(len(idx))]
    return out


def train_probes(
    sets: Sequence[FeatureSet], config: ProbeConfig, on_epoch: EpochCallback | None = None
) -> ProbeRun:
    """Train one probe per (feature set, task), all together; see ``_train``."""
    with torch_threads(config.threads):
        return _train(sets, config, on_epoch)


def _train(sets: Sequence[FeatureSet], config: ProbeConfig, on_epoch: EpochCallback | None) -> ProbeRun:
    """Train one probe per (feature set, task), all together; see the module docstring.

    ``on_epoch(epoch, info)`` is called after every epoch (1-based) with ``train_loss``,
    ``train_accuracy`` and, on validation epochs, ``val_accuracy`` and ``val_loss``
    (``[F, K]`` arrays).
    """
    if not sets:
        raise ProbeError("no layers to probe")
    k = len(sets[0].labels)
    if any(len(s.labels) != k for s in sets):
        raise ProbeError("every feature set of a group needs the same number of tasks")
    for s in sets:
        if len(s.x) == 0:
            raise ProbeError("no labelled sequences to probe")
        if len(s.train_idx) == 0 or len(s.val_idx) == 0:
            raise ProbeError(
                f"{len(s.x)} labelled sequences leave an empty {'training' if len(s.train_idx) == 0 else 'validation'} split"
            )
    device = resolve_device(config.device, "device")
    n_sets, width, n_classes = len(sets), max(s.width for s in sets), max(s.n_classes for s in sets)
    kc = k * n_classes
    n_max = max(len(s.x) for s in sets)
    t_max = max(len(s.train_idx) for s in sets)
    v_max = max(len(s.val_idx) for s in sets)

    x = np.zeros((n_sets, n_max, width), dtype=np.float32)
    y = np.zeros((n_sets, k, n_max), dtype=np.int64)
    tr = np.zeros((n_sets, t_max), dtype=np.int64)
    tr_mask = np.zeros((n_sets, t_max), dtype=bool)
    va = np.zeros((n_sets, v_max), dtype=np.int64)
    va_mask = np.zeros((n_sets, v_max), dtype=bool)
    class_mask = np.zeros((n_sets, n_classes), dtype=np.float32)
    means, stds = [], []
    for f, s in enumerate(sets):
        values = np.asarray(s.x, dtype=np.float32)
        if config.standardize:
            mean = values[s.train_idx].mean(0)
            std = values[s.train_idx].std(0)
            std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        else:
            mean, std = np.zeros(s.width, np.float32), np.ones(s.width, np.float32)
        means.append(mean.astype(np.float32))
        stds.append(std)
        x[f, : len(values), : s.width] = (values - mean) / std
        for task, labels in enumerate(s.labels):
            if len(labels) != len(values):
                raise ProbeError(f"{len(values)} activations but {len(labels)} labels")
            y[f, task, : len(labels)] = labels
        tr[f, : len(s.train_idx)], tr_mask[f, : len(s.train_idx)] = s.train_idx, True
        va[f, : len(s.val_idx)], va_mask[f, : len(s.val_idx)] = s.val_idx, True
        class_mask[f, : s.n_classes] = 1.0

    to = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    X, Y, TR, TRM, VA, VAM, CM = map(to, (x, y, tr, tr_mask, va, va_mask, class_mask))
    n_classes_f = CM.sum(1)  # [F]
    cm = CM[:, None, None, :]  # [F, 1, 1, C]
    neg_inf = (1.0 - cm) * -1e30  # masks padded classes out of the argmax

    gen = torch.Generator(device="cpu").manual_seed(config.init_seed)
    bound = torch.tensor([1.0 / math.sqrt(s.width) for s in sets])[:, None, None]
    w0 = (torch.rand(n_sets, width, kc, generator=gen) * 2 - 1) * bound
    b0 = (torch.rand(n_sets, 1, kc, generator=gen) * 2 - 1) * bound
    feature_mask = torch.zeros(n_sets, width, 1)
    for f, s in enumerate(sets):
        feature_mask[f, : s.width] = 1.0
    class_cols = CM.cpu()[:, None, :].repeat(1, 1, k)  # [F, 1, K*C] (task-major: column = task * C + class)
    W = (w0 * feature_mask * class_cols).to(device)
    B = (b0 * class_cols).to(device)

    lr = torch.full((n_sets, k), config.lr, device=device)
    adam = {"betas": config.betas, "eps": config.eps}
    adam_w = StackedAdam(W, **adam, weight_decay=config.weight_decay, decoupled=config.optimizer == "adamw")
    adam_b = StackedAdam(B, **adam)  # weight decay never touches the biases
    plateau_best = torch.full((n_sets, k), float("inf"), device=device)
    plateau_bad = torch.zeros((n_sets, k), dtype=torch.long, device=device)

    best_W, best_B = W.clone(), B.clone()
    best_acc = torch.full((n_sets, k), -1.0, device=device)
    best_epoch = torch.zeros((n_sets, k), dtype=torch.long, device=device)
    last_acc = torch.zeros((n_sets, k), device=device)

    epochs = config.epochs
    hist = {name: np.full((epochs, n_sets, k), np.nan, dtype=np.float32) for name in ("tl", "ta", "va", "vl", "lr")}
    n_train = TRM.sum(1).clamp_min(1).float()  # [F]
    f_index = torch.arange(n_sets, device=device)[:, None]
    order_gen = torch.Generator(device="cpu").manual_seed(config.init_seed + 1)

    def logits_of(xb: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(b, xb, w).view(n_sets, xb.shape[1], k, n_classes)  # [F, n, K, C]

    def loss_terms(z: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor):
        """Per-probe summed BCE (mean over its classes), correct counts, and the gradient of the mean loss."""
        target = torch.nn.functional.one_hot(yb, n_classes).to(z.dtype)  # [F, n, K, C]
        weight = cm * mask[:, :, None, None] / n_classes_f[:, None, None, None]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
        loss = (bce * weight).sum((1, 3))  # [F, K]
        correct = (((z + neg_inf).argmax(-1) == yb) * mask[:, :, None]).sum(1)  # [F, K]
        return loss, correct, (torch.sigmoid(z) - target) * weight

    for epoch in range(epochs):
        keys = torch.rand(n_sets, t_max, generator=order_gen).to(device)
        keys = torch.where(TRM, keys, torch.full_like(keys, 2.0))
        order = keys.argsort(1)
        idx, mask_e = TR.gather(1, order), TRM.gather(1, order)
        X_e = X[f_index, idx]  # [F, T, D], contiguous: this epoch's order
        Y_e = Y.gather(2, idx[:, None, :].expand(n_sets, k, t_max)).transpose(1, 2)  # [F, T, K]
        lr_cols = lr[:, :, None].expand(n_sets, k, n_classes).reshape(n_sets, 1, kc)
        epoch_loss = torch.zeros((n_sets, k), device=device)
        epoch_correct = torch.zeros((n_sets, k), device=device)
        for start in range(0, t_max, config.batch_size):
            xb = X_e[:, start : start + config.batch_size]
            yb = Y_e[:, start : start + config.batch_size]
            mb = mask_e[:, start : start + config.batch_size]
            count = mb.sum(1)  # [F]
            if not bool((count > 0).any()):
                continue
            z = logits_of(xb, W, B)
            loss, correct, g = loss_terms(z, yb, mb.float())
            epoch_loss += loss
            epoch_correct += correct
            g = g / count.clamp_min(1)[:, None, None, None]  # mean over this minibatch's samples
            g = g.reshape(n_sets, -1, kc)
            g_w = torch.bmm(xb.transpose(1, 2), g)
            g_b = g.sum(1, keepdim=True)
            step_lr = lr_cols * (count > 0).float()[:, None, None]  # a probe without samples here stays put
            adam_w.step(g_w, step_lr)
            adam_b.step(g_b, step_lr)
        train_loss = epoch_loss / n_train[:, None]
        train_acc = epoch_correct / n_train[:, None]
        hist["tl"][epoch] = train_loss.cpu().numpy()
        hist["ta"][epoch] = train_acc.cpu().numpy()
        hist["lr"][epoch] = lr.cpu().numpy()

        # ReduceLROnPlateau on each probe's training loss
        sched = config.scheduler
        better = train_loss < plateau_best * (1 - sched.threshold)
        plateau_best = torch.where(better, train_loss, plateau_best)
        plateau_bad = torch.where(better, 0, plateau_bad + 1)
        reduce = plateau_bad > sched.patience
        lr = torch.where(reduce, (lr * sched.factor).clamp_min(sched.min_lr), lr)
        plateau_bad = torch.where(reduce, 0, plateau_bad)

        info = {"train_loss": hist["tl"][epoch], "train_accuracy": hist["ta"][epoch]}
        if (epoch + 1) % config.val_every == 0 or epoch + 1 == epochs:
            val_loss, val_acc = _validate(X, Y, VA, VAM, W, B, logits_of, loss_terms, f_index)
            hist["va"][epoch] = val_acc.cpu().numpy()
            hist["vl"][epoch] = val_loss.cpu().numpy()
            improved = val_acc > best_acc
            cols = improved[:, :, None].expand(n_sets, k, n_classes).reshape(n_sets, 1, kc)
            best_W = torch.where(cols, W, best_W)
            best_B = torch.where(cols, B, best_B)
            best_acc = torch.where(improved, val_acc, best_acc)
            best_epoch = torch.where(improved, epoch + 1, best_epoch)
            last_acc = val_acc
            info.update(val_accuracy=hist["va"][epoch], val_loss=hist["vl"][epoch])
        if on_epoch is not None:
            on_epoch(epoch + 1, info)

    run = ProbeRun(
        best=_unstack(best_W, best_B, sets, means, stds, k, n_classes),
        final=_unstack(W, B, sets, means, stds, k, n_classes),
        best_epoch=best_epoch.cpu().numpy(),
        best_accuracy=best_acc.cpu().numpy(),
        final_accuracy=last_acc.cpu().numpy(),
        train_loss=hist["tl"],
        train_accuracy=hist["ta"],
        val_accuracy=hist["va"],
        val_loss=hist["vl"],
        lr=hist["lr"],
    )
    run.val_pred = _predictions(X, VA, VAM, best_W, best_B, logits_of, neg_inf, f_index, sets)
    run.val_pred_final = _predictions(X, VA, VAM, W, B, logits_of, neg_inf, f_index, sets)
    return run


def _validate(X, Y, VA, VAM, W, B, logits_of, loss_terms, f_index):
    with torch.no_grad():
        xv = X[f_index, VA]
        yv = Y.gather(2, VA[:, None, :].expand(-1, Y.shape[1], -1)).transpose(1, 2)
        z = logits_of(xv, W, B)
        loss, correct, _ = loss_terms(z, yv, VAM.float())
        n_val = VAM.sum(1).clamp_min(1).float()[:, None]
        return loss / n_val, correct / n_val


def _predictions(X, VA, VAM, W, B, logits_of, neg_inf, f_index, sets) -> list[np.ndarray]:
    with torch.no_grad():
        pred = (logits_of(X[f_index, VA], W, B) + neg_inf).argmax(-1)  # [F, V, K]
    pred = pred.transpose(1, 2).cpu().numpy()
    return [pred[f, :, : len(s.val_idx)] for f, s in enumerate(sets)]


def _unstack(W, B, sets, means, stds, k, n_classes) -> list[list[ProbeWeights]]:
    w = W.detach().cpu().numpy().reshape(len(sets), W.shape[1], k, n_classes)
    b = B.detach().cpu().numpy().reshape(len(sets), k, n_classes)
    return [
        [
            ProbeWeights(
                weight=np.ascontiguousarray(w[f, : s.width, task, : s.n_classes]),
                bias=np.ascontiguousarray(b[f, task, : s.n_classes]),
                mean=means[f],
                std=stds[f],
            )
            for task in range(k)
        ]
        for f, s in enumerate(sets)
    ]
