"""zoo: populations of small networks whose behaviour is known exactly, for interpretability research.

Make a zoo, open it, read it:

    import torch, zoo

    z = zoo.generate("configs/zoo/quickstart.yaml", "zoo-quickstart", workers=0)  # or `zoo generate ...`
    z = zoo.open("zoo-quickstart")           # a zoo folder someone made
    len(z), z.config.name, z.probe_set.hash  # records, the ZooConfig, the fixed probe set
    df = z.to_pandas()                        # also z.table(), z.records(), z.to_ray_dataset(), z.to_hf_dataset()
    model = z.load_model(0, which="degraded")  # a torch.nn.Module
    model(torch.zeros(1, 7, dtype=torch.long))  # token ids [batch, seq_len] -> logits [batch]
    zoo.verify("zoo-quickstart")              # [] when every shard matches the manifest

Verbs:
    generate(config, out, workers=None)  make or resume a zoo; returns it opened
    open(path) -> Zoo                    read a zoo: records, tables, models, probe set
    verify(path) -> list[str]            every problem found, one line each
    load_config(path) -> ZooConfig       a YAML recipe, validated (one-line ConfigError)
    load_model(row, which="clean")       a record (dict) back into a torch.nn.Module

Each record is one (degraded, clean) pair of subject models; `docs/reference/records.md`
lists its columns. Subject families (the MLP today) live in `zoo.subjects.families`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

# before anything imports torch: on Apple's mps an op without a kernel runs on the CPU instead of failing (zoo.runtime)
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from zoo.api import Zoo, ZooError, generate, open, verify
from zoo.config import ConfigError, load_config

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"
__all__ = ["ConfigError", "Zoo", "ZooError", "__version__", "generate", "load_config", "load_model", "open", "verify"]


def load_model(row: dict, which: Literal["clean", "degraded"] = "clean") -> nn.Module:
    """Rebuild a record's clean or degraded model (a dict, as ``Zoo.records()`` yields) as an ``nn.Module``."""
    from zoo.factory.load import load_model as load

    return load(row, which)
