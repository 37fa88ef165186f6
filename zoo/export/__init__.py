"""The export side of zoo: prompt/completion files, splits, the dataset card, Hub publishing.

Light on purpose: ``zoo.cli`` imports the command module (and these names) to
build its parser, so the heavy modules load only when a command runs.
"""

from __future__ import annotations

TASKS: tuple[str, ...] = ("modification", "classification")
LAYOUTS: tuple[str, ...] = ("separate", "interwoven")
MODELS: tuple[str, ...] = ("clean", "degraded", "both")
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test", "ood_architecture", "ood_patterns")
