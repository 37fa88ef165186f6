"""The quality bar of the default configuration, on a small population."""

from __future__ import annotations

import numpy as np
import torch

from zoo.config import ZooConfig
from zoo.factory.plan import clean_job, plan_batch
from zoo.subjects.evaluate import score
from zoo.subjects.population import logits, one_hot_inputs
from zoo.subjects.train import train_subjects


def test_default_clean_models_reach_095_on_unseen_sequences():
    config = ZooConfig()
    plans = [plan_batch(config, b) for b in range(12)]
    accuracies = []
    for group in train_subjects([clean_job(p) for p in plans], config.training, torch.device("cpu")):
        members = [plans[i] for i in group.indices]
        tokens = torch.as_tensor(np.stack([p.data.benchmark.tokens for p in members]))
        out = logits(group.population, one_hot_inputs(tokens, config.patterns.vocab_size)).numpy()
        scores = score(out, np.stack([p.data.benchmark.pattern for p in members]), 5)
        accuracies += [np.nanmean(row) for row in scores.pattern_accuracy]
    assert np.mean(accuracies) >= 0.95
