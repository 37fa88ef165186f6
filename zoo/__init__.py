"""zoo: a Ray-distributed model-zoo factory for interpretability research."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that `import zoo` (and config validation) does not pay for torch.
    if name == "load_model":
        from zoo.factory.load import load_model

        return load_model
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
