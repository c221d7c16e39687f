"""Small shared pieces: the polars engine for window-heavy queries and config value checks."""

from __future__ import annotations

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
