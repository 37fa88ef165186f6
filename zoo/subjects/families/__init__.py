"""The registry of subject families, and the few functions that dispatch on a family's name.

Adding a family: write its module (a config space with a ``family`` literal, an
architecture, one ``Family`` object named ``FAMILY``; see ``base``) and add it to
``FAMILIES``. The config union, record reading and ``zoo.load_model`` follow.
"""

from __future__ import annotations

import json
from typing import Annotated, Union

import numpy as np
from pydantic import Discriminator, Tag

from zoo.subjects.families import mlp, transformer
from zoo.subjects.families.base import Family, LayoutEntry, SignatureSite, SubjectArchitecture

__all__ = [
    "FAMILIES", "ArchitectureSpace", "Family", "LayoutEntry", "SignatureSite", "SubjectArchitecture",
    "UnknownFamily", "UnsupportedFamily", "architecture_of", "family_of", "get_family", "require_families", "require_family",
    "sample_architecture",
]

FAMILIES: dict[str, Family] = {module.FAMILY.name: module.FAMILY for module in (mlp, transformer)}

_SPACES = tuple(family.space for family in FAMILIES.values())


def _family_tag(value) -> str:
    """The ``family`` a space names; a mapping without one is an MLP space (configs from before families)."""
    family = value.get("family", "mlp") if isinstance(value, dict) else getattr(value, "family", "mlp")
    return f"~{family}"  # "~": config errors leave union tags out of the field path


# A discriminated union needs two members; with one family the space is that family's model.
ArchitectureSpace = (
    Annotated[
        Union[tuple(Annotated[space, Tag(f"~{name}")] for name, space in zip(FAMILIES, _SPACES))],  # noqa: UP007
        Discriminator(
            _family_tag,
            custom_error_type="unknown_family",
            custom_error_message=f"family: unknown subject family; known: {', '.join(FAMILIES)}",
        ),
    ]
    if len(_SPACES) > 1
    else _SPACES[0]
)


class UnknownFamily(ValueError):
    """A record or config names a family this version of zoo does not have."""


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown subject family {name!r}; known: {', '.join(FAMILIES)}") from None


def architecture_of(value: str | dict | SubjectArchitecture) -> SubjectArchitecture:
    """A record's ``architecture`` (schema 2: a JSON string; schema 1: a struct, read as a dict) as an object."""
    if isinstance(value, SubjectArchitecture):
        return value
    data = json.loads(value) if isinstance(value, str) else dict(value)
    return get_family(str(data.get("family", "mlp"))).architecture.from_dict(data)


class UnsupportedFamily(ValueError):
    """A reader was given a subject of a family it does not read."""


def require_family(value: str | dict | SubjectArchitecture, supported: tuple[str, ...], reader: str) -> SubjectArchitecture:
    """The architecture, if ``reader`` supports its family; otherwise one line naming the family."""
    architecture = architecture_of(value)
    if architecture.family not in supported:
        raise UnsupportedFamily(f"{reader} reads {' and '.join(supported)} subjects, not {architecture.family!r} ones")
    return architecture


def require_families(found, supported: tuple[str, ...], reader: str) -> None:
    """Refuse, before any work, a zoo holding subjects of a family ``reader`` does not read.

    ``found`` is the records' ``family`` column (any iterable of names).
    """
    counts: dict[str, int] = {}
    for name in found:
        counts[name] = counts.get(name, 0) + 1
    other = {name: n for name, n in counts.items() if name not in supported}
    if other:
        held = ", ".join(f"{n} {name}" for name, n in sorted(other.items()))
        raise UnsupportedFamily(f"{reader} reads {' and '.join(supported)} subjects; this zoo also holds {held} records")


def family_of(architecture: SubjectArchitecture | str | dict) -> Family:
    return get_family(architecture_of(architecture).family)


def sample_architecture(space, vocab_size: int, seq_len: int, rng: np.random.Generator) -> SubjectArchitecture:
    """Draw from one family's space, or from a list of ``FamilyShare``s (a part by share, then its space)."""
    return sample_part(space, vocab_size, seq_len, rng)[1]


def sample_part(space, vocab_size: int, seq_len: int, rng: np.random.Generator) -> tuple[int | None, SubjectArchitecture]:
    """``(part, architecture)``: the mixture part drawn (None for a single space) and its draw.

    A single space consumes ``rng`` exactly as its family's ``sample`` does, so zoos made
    before mixtures existed draw the same architectures.
    """
    part = None
    if isinstance(space, (list, tuple)):
        shares = np.array([entry.share for entry in space], dtype=np.float64)
        part = int(rng.choice(len(space), p=shares / shares.sum()))
        space = space[part].space
    return part, get_family(space.family).sample(space, vocab_size, seq_len, rng)
