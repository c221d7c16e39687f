"""Helpers the benchmark scripts share: repeated timing and table cells (imported as a sibling module)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any


def repeat(fn: Callable[[], Any], reps: int) -> tuple[Any, list[float]]:
    """Run ``fn`` ``reps`` times (the previous result freed first); the last result and the times."""
    out, times = None, []
    for _ in range(reps):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def timing(times: list[float]) -> dict:
    return {"best_s": min(times), "first_s": times[0], "times_s": times, "reps": len(times)}


def fmt(x: Any, spec: str, missing: str = "-") -> str:
    return missing if x is None else format(x, spec)
