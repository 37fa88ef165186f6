"""The building blocks every config model is made of, apart from the models themselves.

They live apart from ``zoo.config`` so that a family's config space (in its own module
under ``zoo/subjects/families/``) can be built from them without importing every other
setting, and ``zoo.config`` can gather the family spaces without an import cycle.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


Device = Literal["auto", "cpu", "cuda", "mps"]
"""Where torch runs; every config's ``device`` field (resolved by ``zoo.runtime.resolve_device``)."""

DEVICE_HELP = "auto: CUDA when torch sees one, else Apple's mps when present, else the CPU"


class ConfigError(ValueError):
    """A configuration problem, already phrased as one line that names the field."""


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IntRange(Strict):
    """An inclusive range of integers a value is drawn from uniformly."""

    min: int = Field(description="smallest value drawn")
    max: int = Field(description="largest value drawn (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


class FloatRange(Strict):
    """A range of floats a value is drawn from."""

    min: float = Field(allow_inf_nan=False, description="lower end (a finite number)")
    max: float = Field(allow_inf_nan=False, description="upper end (a finite number)")

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.]*): ")


def format_validation_error(error: ValidationError) -> str:
    """One line naming the first offending field, e.g. ``patterns.per_batch: min (5) > max (2)``.

    Model validators phrase their messages as ``subfield: problem``; the subfield is
    joined onto the location so the line names the full dotted path.
    """
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    if _FIELD_PREFIX.match(msg):
        return f"{field}.{msg}" if field else msg
    return f"{field}: {msg}" if field else msg


def _is_union_tag(part: object) -> bool:
    """Location parts pydantic adds for unions and validators (``~space``, ``function-after[...]``)."""
    return isinstance(part, str) and (part.startswith("~") or "[" in part)
