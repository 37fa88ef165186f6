"""The sequential baseline: one ``nn.Module`` and one ``torch.optim.Adam`` per model.

It follows the population trainer step for step (same init, data order, batch size,
early stopping), so the benchmark compares two implementations of one algorithm.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.config import TrainingConfig
from zoo.subjects.families.mlp import Architecture
from zoo.subjects.mlp import SubjectMLP, build_model
from zoo.subjects.population import epoch_order


def train_reference(
    architecture: Architecture,
    init: np.ndarray,
    train_tokens: np.ndarray,
    train_labels: np.ndarray,
    val_tokens: np.ndarray,
    val_labels: np.ndarray,
    config: TrainingConfig,
    lr: float,
    order_seed: int,
) -> tuple[SubjectMLP, int, float]:
    """Train one model; returns it (at its best validation loss), epochs run and that loss."""
    model = build_model(architecture, init)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    x = model.encode(torch.as_tensor(train_tokens))
    y = torch.as_tensor(train_labels, dtype=torch.float32)
    x_val = torch.as_tensor(val_tokens)
    y_val = torch.as_tensor(val_labels, dtype=torch.float32)
    best_loss, best_state, bad_epochs, epochs_run = float("inf"), None, 0, 0
    for epoch in range(config.epochs):
        order = torch.from_numpy(epoch_order([order_seed], epoch, len(y))[0])
        xs, ys = x[order], y[order]
        for start in range(0, len(ys), config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            h = xs[start : start + config.batch_size]
            for layer in model.layers:
                h = model.activation(layer(h))
            loss_fn(model.head(h).squeeze(-1), ys[start : start + config.batch_size]).backward()
            optimizer.step()
        epochs_run += 1
        with torch.no_grad():
            val = loss_fn(model(x_val), y_val).item()
        if val < best_loss - config.min_delta:
            best_loss, bad_epochs = val, 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, epochs_run, best_loss
