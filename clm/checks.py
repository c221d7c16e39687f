"""Small shared pieces: the polars engine for window-heavy queries and config value checks."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

# polars 2's default streaming engine is 2-3x slower for rolling / over work (field notes).
ENGINE = "in-memory"


def is_int(value: object) -> bool:
    """An int (or numpy integer) that is not a bool: ``True`` is an int to Python, never a window to us."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def utc_timestamp(value: object, field_name: str) -> dt.datetime:
    """An ISO 8601 string in UTC (``Z`` or ``+00:00``) as an aware datetime; ``ValueError`` naming the field."""
    if not isinstance(value, str):
        raise ValueError(f"{field_name}: must be an ISO 8601 UTC string, got {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field_name}: not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() != dt.timedelta(0):
        raise ValueError(f"{field_name}: must be in UTC (Z or +00:00), got {value!r}")
    return parsed.astimezone(dt.UTC)
