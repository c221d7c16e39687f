"""Step feature trees one bar at a time across many series at once (the live path).

The same ``Node`` trees the batch path compiles to polars are evaluated here with numpy on one
value per series: shifts and rolling windows keep ring buffers, recursive means keep their last
value. Work per bar is proportional to the number of distinct nodes, not to history, which is what
lets a new bar for hundreds of symbols be featurised in milliseconds. Parity with the batch path is
tested on real data (``tests/test_features/test_live.py``).

How the polars semantics map onto numpy (see ``clm.features.expr``): a missing value is NaN; a
comparison on NaN is false, as a comparison on null is in polars' ``when``; a rolling window that
holds a NaN is NaN, as polars' ``min_samples = n`` makes it null; ``ewm`` repeats polars'
``adjust=False`` update operation for operation (the first value enters the same formula as its own
previous value), so both paths round alike. Windows are recomputed from a ring buffer every bar
(polars updates running sums instead), so the two agree to rounding, not bit for bit, with one
exact rule on top: a window of equal values has mean = the value, sum = n * value and std = 0, so a
run of zero volume or of unchanged closes takes ``safe_div``'s default instead of dividing a
rounding residue by another (polars' std already gives 0 there; its running mean and sum can keep
~1e-16 of the values that left the window, which the batch path should snap the same way).

Each tree is compiled once into a flat program, one closure per distinct node, children before
parents. State is per slot: one age counter (bars since the slot's last reset) shared by every ring
buffer, so the ring position of a window of ``n`` bars is ``age % n`` and is computed once per
distinct ``n`` per step; resetting a slot fills its buffers with NaN, which is what makes a shift or
a window missing until it has seen enough bars, without per-ring counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from clm.features.expr import Node, walk

_US_PER_DAY = 86_400_000_000
_US_PER_SECOND = 1_000_000
_ROLLING = ("rolling_mean", "rolling_sum", "rolling_std", "rolling_max", "rolling_min")


def _time_field(field: str, timestamps_us: np.ndarray) -> np.ndarray:
    if field == "hour":
        seconds_of_day = (timestamps_us // _US_PER_SECOND) % 86_400
        hours = (seconds_of_day // 3600).astype(np.float64)
        return hours + ((seconds_of_day % 3600) // 60).astype(np.float64) / 60.0
    days = timestamps_us // _US_PER_DAY
    return ((days + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday; Monday = 0


class _Step:
    """What one ``step`` call shares between the node closures."""

    __slots__ = ("slots", "columns", "timestamps", "positions", "values", "windows", "flats")

    def __init__(self, slots: np.ndarray, columns: Mapping[str, np.ndarray], timestamps: np.ndarray | None):
        self.slots = slots
        self.columns = columns
        self.timestamps = timestamps
        self.positions: dict[int, np.ndarray] = {}
        self.values: list[Any] = []
        self.windows: dict[int, np.ndarray] = {}  # ring index -> this step's (slots, n) windows
        self.flats: dict[int, np.ndarray] = {}  # ring index -> whether each window holds equal values


Op = Callable[[_Step], Any]

_UNARY = {
    "neg": np.negative, "abs": np.abs, "log": np.log, "exp": np.exp, "sqrt": np.sqrt,
    "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "sign": np.sign,
}
_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal,
    "and": np.logical_and, "or": np.logical_or,
}


class Stepper:
    """Evaluates named feature trees for a growing set of series, one bar per series per ``step``."""

    def __init__(self, roots: Mapping[str, Node], capacity: int = 16):
        self.roots = dict(roots)
        order: dict[str, Node] = {}
        for root in self.roots.values():
            for node in walk(root):
                order.setdefault(node.key, node)
        self.nodes = list(order.values())  # children before parents
        index = {key: i for i, key in enumerate(order)}
        self._outputs = [(name, index[root.key]) for name, root in self.roots.items()]
        self.columns = sorted({n.params[0] for n in self.nodes if n.op == "col"})
        self.needs_time = any(n.op == "time" for n in self.nodes)
        self.capacity = 0
        self._age = np.zeros(0, dtype=np.int64)  # bars since each slot's last reset
        self._rings: dict[int, np.ndarray] = {}  # shift node index -> (capacity, n) ring buffer
        self._windows_of: dict[tuple[int, int], int] = {}  # (input node index, n) -> window ring
        self._window_rings: list[np.ndarray] = []  # (capacity, n) ring buffers of rolling windows
        self._means: dict[int, np.ndarray] = {}  # node index -> last ewm value per slot
        self._windows = sorted(
            {n.params[0] for n in self.nodes if n.op == "shift" or n.op in _ROLLING}
        )
        self._program: list[Op] = [self._compile(i, node, index) for i, node in enumerate(self.nodes)]
        self.grow(capacity)

    # ---- state --------------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        extra = capacity - self.capacity
        self._age = np.concatenate([self._age, np.zeros(extra, dtype=np.int64)])
        for i, ring in self._rings.items():
            self._rings[i] = np.vstack([ring, np.full((extra, ring.shape[1]), np.nan)])
        for r, ring in enumerate(self._window_rings):
            self._window_rings[r] = np.vstack([ring, np.full((extra, ring.shape[1]), np.nan)])
        for i, mean in self._means.items():
            self._means[i] = np.concatenate([mean, np.full(extra, np.nan)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        """Start new series in ``slots`` (a new symbol or a segment break)."""
        slots = np.asarray(slots, dtype=np.int64)
        self._age[slots] = 0
        for ring in self._rings.values():
            ring[slots] = np.nan
        for ring in self._window_rings:
            ring[slots] = np.nan
        for mean in self._means.values():
            mean[slots] = np.nan

    def step(
        self, slots: np.ndarray, columns: Mapping[str, np.ndarray], timestamps_us: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Advance ``slots`` (distinct) by one bar given its input columns; returns each root's values."""
        slots = np.asarray(slots, dtype=np.int64)
        count = len(slots)
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise ValueError(f"step: missing input column(s) {missing}")
        if self.needs_time and timestamps_us is None:
            raise ValueError("time features need the bars' timestamps")
        cols = {c: np.asarray(columns[c], dtype=np.float64) for c in self.columns}
        stamps = None
        if timestamps_us is not None:
            stamps = np.broadcast_to(np.asarray(timestamps_us, dtype=np.int64), count)
        ctx = _Step(slots, cols, stamps)
        age = self._age[slots]
        for n in self._windows:
            ctx.positions[n] = age % n
        values = ctx.values
        with np.errstate(all="ignore"):
            for op in self._program:
                values.append(op(ctx))
        self._age[slots] = age + 1
        out: dict[str, np.ndarray] = {}
        for name, i in self._outputs:
            value = values[i]
            if np.ndim(value) == 0:  # a constant root
                value = np.full(count, value, dtype=np.asarray(value).dtype)
            out[name] = value
        return out

    # ---- compilation --------------------------------------------------------------------------
    def _compile(self, i: int, node: Node, index: Mapping[str, int]) -> Op:  # noqa: C901
        op, p = node.op, node.params
        a = [index[x.key] for x in node.args]
        if op == "col":
            name = p[0]
            return lambda ctx: ctx.columns[name]
        if op == "const":
            value = float(p[0])
            return lambda ctx: value  # a scalar; numpy broadcasts it
        if op == "time":
            field = p[0]
            return lambda ctx: _time_field(field, ctx.timestamps)
        if op in _UNARY:
            fn, x = _UNARY[op], a[0]
            return lambda ctx: fn(ctx.values[x])
        if op in _BINARY:
            fn, x, y = _BINARY[op], a[0], a[1]
            return lambda ctx: fn(ctx.values[x], ctx.values[y])
        if op == "max2":  # polars: when(a >= b).then(a).otherwise(b)
            x, y = a
            return lambda ctx: np.where(ctx.values[x] >= ctx.values[y], ctx.values[x], ctx.values[y])
        if op == "min2":
            x, y = a
            return lambda ctx: np.where(ctx.values[x] <= ctx.values[y], ctx.values[x], ctx.values[y])
        if op == "where":
            c, x, y = a
            return lambda ctx: np.where(ctx.values[c], ctx.values[x], ctx.values[y])
        if op == "fill":
            x, default = a[0], p[0]

            def fill(ctx: _Step) -> Any:
                v = ctx.values[x]
                return np.where(np.isnan(v), default, v)

            return fill
        if op == "shift":
            return self._compile_shift(i, a[0], p[0])
        if op == "ewm":
            return self._compile_ewm(i, a[0], p[0])
        if op in _ROLLING:
            return self._compile_rolling(i, op, a[0], p)
        raise ValueError(f"no numpy form for node {node.key}")

    def _compile_shift(self, i: int, x: int, n: int) -> Op:
        self._rings[i] = np.full((0, n), np.nan)
        rings = self._rings

        def shift(ctx: _Step) -> np.ndarray:
            ring, pos = rings[i], ctx.positions[n]
            out = ring[ctx.slots, pos]  # the value n bars ago; NaN until there is one (reset fills NaN)
            ring[ctx.slots, pos] = ctx.values[x]
            return out

        return shift

    def _compile_ewm(self, i: int, x: int, alpha: float) -> Op:
        self._means[i] = np.zeros(0)
        means = self._means
        keep = 1.0 - alpha
        total = keep + alpha

        def ewm(ctx: _Step) -> np.ndarray:
            state = means[i]
            value = ctx.values[x]
            prev = state[ctx.slots]
            prev = np.where(np.isnan(prev), value, prev)  # polars starts at the first value
            out = (keep * prev + alpha * value) / total
            state[ctx.slots] = out
            return out

        return ewm

    def _compile_rolling(self, i: int, op: str, x: int, p: tuple[Any, ...]) -> Op:
        n = p[0]
        key = (x, n)  # windows of the same values and length share one ring (mean and std of close)
        if key not in self._windows_of:
            self._windows_of[key] = len(self._window_rings)
            self._window_rings.append(np.full((0, n), np.nan))
        r = self._windows_of[key]
        rings = self._window_rings

        def window(ctx: _Step) -> np.ndarray:
            w = ctx.windows.get(r)
            if w is None:
                ring = rings[r]
                ring[ctx.slots, ctx.positions[n]] = ctx.values[x]
                # a window still holding a reset NaN is missing, as polars' min_samples = n makes it
                w = ctx.windows[r] = ring[ctx.slots]
            return w

        def flat(ctx: _Step, w: np.ndarray) -> np.ndarray:
            f = ctx.flats.get(r)
            if f is None:
                f = ctx.flats[r] = (w == w[:, :1]).all(axis=1)  # NaN != NaN: a missing window is not flat
            return f

        if op == "rolling_max":
            return lambda ctx: window(ctx).max(axis=1)
        if op == "rolling_min":
            return lambda ctx: window(ctx).min(axis=1)
        # A window of equal values has mean = the value, sum = n * value and std = 0 exactly. Without
        # this rule a run of equal values (no volume, an unchanged close) can leave a rounding residue
        # (numpy's mean of equal values need not round to them; polars' running sums keep 1e-16 of
        # what left the window) and safe_div(x, residue) divides where it should take its default.
        if op == "rolling_mean":

            def rolling_mean(ctx: _Step) -> np.ndarray:
                w = window(ctx)
                return np.where(flat(ctx, w), w[:, 0], w.sum(axis=1) / n)

            return rolling_mean
        if op == "rolling_sum":

            def rolling_sum(ctx: _Step) -> np.ndarray:
                w = window(ctx)
                return np.where(flat(ctx, w), w[:, 0] * n, w.sum(axis=1))

            return rolling_sum
        ddof = p[1]

        def rolling_std(ctx: _Step) -> np.ndarray:
            w = window(ctx)
            return np.where(flat(ctx, w), 0.0, w.std(axis=1, ddof=ddof))

        return rolling_std
