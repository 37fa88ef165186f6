"""Pattern library and the sampler that turns it into data sets.

The sampler (and pyarrow with it) loads on first use, so config validation, which
imports the library, stays light.
"""

from __future__ import annotations

from typing import Any

from zoo.patterns.library import Pattern, pattern_library, selectable, validate_selection

_SAMPLER_NAMES = {"BatchData", "LabelledSet", "PatternSampler", "ProbeSet", "sampler_for"}

__all__ = ["Pattern", "pattern_library", "selectable", "validate_selection", *sorted(_SAMPLER_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _SAMPLER_NAMES:
        from zoo.patterns import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'zoo.patterns' has no attribute {name!r}")
