"""Option dataclasses built from plain mappings (a YAML section, a manifest entry), unknown keys named."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: Mapping[str, Any], what: str) -> T:
    """`cls(**values)`, or a ValueError naming every unknown key and the valid ones.

    `what` names the options in messages ("filter" gives "unknown filter option 'x'"). Invalid values
    are for `cls` itself to reject (in `__post_init__`).
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"{what} options must be a mapping of option to value, got {values!r}")
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = [key for key in values if key not in valid]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"unknown {what} option{plural} {names}; valid options are: {', '.join(valid)}")
    return cls(**values)
