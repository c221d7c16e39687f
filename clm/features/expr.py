"""A small expression language for causal bar features, compiled to polars (batch) and to numpy (live).

Features are written once, as trees of these nodes, and run two ways: ``clm.features.batch`` turns a
tree into polars expressions evaluated per (symbol, segment) and ``clm.features.incremental``
steps it one bar at a time for the live path. One definition means training and serving cannot
drift apart, and the language itself rules out look-ahead: there is no negative shift, no centred
window and no whole-series statistic, so a value at bar t can only depend on bars <= t.

Semantics shared by both back-ends (and checked by the parity tests):
- a missing value (polars null, numpy NaN) only occurs at the start of a series, during warm-up;
- comparisons on a missing value are false, so ``where`` picks its ``otherwise`` branch;
- ``ewm`` is the recursive mean y_t = (1 - alpha) y_{t-1} + alpha x_t started at the first value
  (``adjust=False``; Wilder smoothing is ``alpha = 1/n``, an EMA of span n is ``alpha = 2/(n+1)``);
- rolling windows need all ``n`` values (``min_samples = n``).

Each node knows its warm-up: the number of earlier bars its value at a bar depends on. For
recursive means that is the number of bars after which the starting value weighs less than
``EWM_TOLERANCE``, so a warm value is the same, to that tolerance, whatever the series' start.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any

EWM_TOLERANCE = 1e-9
INPUT_COLUMNS = ("open", "high", "low", "close", "volume", "spread_bps", "quote_volume")
TIME_FIELDS = ("hour", "day_of_week")

ELEMENTWISE_UNARY = ("neg", "abs", "log", "exp", "sqrt", "sin", "cos", "tanh", "sign")
ELEMENTWISE_BINARY = ("add", "sub", "mul", "div", "max2", "min2")
COMPARISONS = ("gt", "ge", "lt", "le")
LOGICAL = ("and", "or")
STATEFUL = ("shift", "rolling_mean", "rolling_sum", "rolling_std", "rolling_max", "rolling_min", "ewm")
LEAVES = ("col", "time", "const")


class Node:
    """An immutable expression node; equal trees have equal ``key`` and are computed once."""

    __slots__ = ("op", "args", "params", "_key")

    def __init__(self, op: str, args: tuple[Node, ...] = (), params: tuple[Any, ...] = ()):
        self.op = op
        self.args = args
        self.params = params
        inner = ",".join([a.key for a in args] + [repr(p) for p in params])
        self._key = f"{op}({inner})"

    @property
    def key(self) -> str:
        """Canonical text of the tree; the definition hash is taken over it."""
        return self._key

    def __repr__(self) -> str:
        return self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        return isinstance(other, Node) and other._key == self._key

    @property
    def is_boolean(self) -> bool:
        return self.op in COMPARISONS or self.op in LOGICAL

    # ---- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other: Any) -> Node:
        return _binary("add", self, other)

    def __radd__(self, other: Any) -> Node:
        return _binary("add", other, self)

    def __sub__(self, other: Any) -> Node:
        return _binary("sub", self, other)

    def __rsub__(self, other: Any) -> Node:
        return _binary("sub", other, self)

    def __mul__(self, other: Any) -> Node:
        return _binary("mul", self, other)

    def __rmul__(self, other: Any) -> Node:
        return _binary("mul", other, self)

    def __truediv__(self, other: Any) -> Node:
        return _binary("div", self, other)

    def __rtruediv__(self, other: Any) -> Node:
        return _binary("div", other, self)

    def __neg__(self) -> Node:
        return _unary("neg", self)

    def __abs__(self) -> Node:
        return _unary("abs", self)

    # ---- comparisons (only usable as a ``where`` condition) -----------------------------------
    def __gt__(self, other: Any) -> Node:  # type: ignore[override]
        return _compare("gt", self, other)

    def __ge__(self, other: Any) -> Node:  # type: ignore[override]
        return _compare("ge", self, other)

    def __lt__(self, other: Any) -> Node:  # type: ignore[override]
        return _compare("lt", self, other)

    def __le__(self, other: Any) -> Node:  # type: ignore[override]
        return _compare("le", self, other)

    def __and__(self, other: Node) -> Node:
        return _logical("and", self, other)

    def __or__(self, other: Node) -> Node:
        return _logical("or", self, other)

    # ---- methods ------------------------------------------------------------------------------
    def log(self) -> Node:
        return _unary("log", self)

    def exp(self) -> Node:
        return _unary("exp", self)

    def sqrt(self) -> Node:
        return _unary("sqrt", self)

    def sin(self) -> Node:
        return _unary("sin", self)

    def cos(self) -> Node:
        return _unary("cos", self)

    def tanh(self) -> Node:
        return _unary("tanh", self)

    def sign(self) -> Node:
        return _unary("sign", self)

    def shift(self, bars: int = 1) -> Node:
        """The value ``bars`` bars ago; only positive lags exist, so no feature can look ahead."""
        _check_window("shift", bars, 1)
        return Node("shift", (_numeric(self),), (int(bars),))

    def diff(self, bars: int = 1) -> Node:
        return self - self.shift(bars)

    def pct_change(self, bars: int = 1) -> Node:
        return self / self.shift(bars) - 1.0

    def rolling_mean(self, n: int) -> Node:
        return _rolling("rolling_mean", self, n)

    def rolling_sum(self, n: int) -> Node:
        return _rolling("rolling_sum", self, n)

    def rolling_max(self, n: int) -> Node:
        return _rolling("rolling_max", self, n)

    def rolling_min(self, n: int) -> Node:
        return _rolling("rolling_min", self, n)

    def rolling_std(self, n: int, ddof: int = 0) -> Node:
        _check_window("rolling_std", n, 2)
        if ddof not in (0, 1):
            raise ValueError(f"rolling_std: ddof must be 0 or 1, got {ddof!r}")
        return Node("rolling_std", (_numeric(self),), (int(n), int(ddof)))

    def ewm(self, alpha: float) -> Node:
        if not (isinstance(alpha, int | float) and 0.0 < float(alpha) <= 1.0):
            raise ValueError(f"ewm: alpha must be in (0, 1], got {alpha!r}")
        return Node("ewm", (_numeric(self),), (float(alpha),))

    def wilder(self, n: int) -> Node:
        """Wilder's smoothing (RSI, ATR, ADX): a recursive mean with alpha = 1/n."""
        _check_window("wilder", n, 1)
        return self.ewm(1.0 / n)

    def ema(self, span: int) -> Node:
        _check_window("ema", span, 1)
        return self.ewm(2.0 / (span + 1))

    def clip(self, lower: float | None = None, upper: float | None = None) -> Node:
        out = self
        if lower is not None:
            out = maximum(out, lower)
        if upper is not None:
            out = minimum(out, upper)
        return out

    def fill_missing(self, value: float) -> Node:
        """Replace warm-up gaps (e.g. the first ``diff``) by ``value``; warm-up is unchanged."""
        return Node("fill", (_numeric(self),), (float(value),))


# ---- constructors -------------------------------------------------------------------------------


def col(name: str) -> Node:
    if name not in INPUT_COLUMNS:
        raise ValueError(f"unknown input column {name!r}; features read {', '.join(INPUT_COLUMNS)}")
    return Node("col", (), (name,))


def time_of(field: str) -> Node:
    """Calendar fields of the bar's open time (UTC): fractional ``hour`` 0-24, ``day_of_week`` 0=Monday."""
    if field not in TIME_FIELDS:
        raise ValueError(f"unknown time field {field!r}; use one of {TIME_FIELDS}")
    return Node("time", (), (field,))


def const(value: float) -> Node:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"constants must be finite, got {value!r}")
    return Node("const", (), (value,))


def where(condition: Node, then: Any, otherwise: Any) -> Node:
    if not isinstance(condition, Node) or not condition.is_boolean:
        raise TypeError("where(): the condition must be a comparison such as `a > b`")
    return Node("where", (condition, _numeric(_lift(then)), _numeric(_lift(otherwise))))


def maximum(a: Any, b: Any) -> Node:
    """Element-wise max; a missing operand on the left yields the right one (see module notes)."""
    return _binary("max2", a, b)


def minimum(a: Any, b: Any) -> Node:
    return _binary("min2", a, b)


def safe_div(numerator: Any, denominator: Any, default: float = 0.0) -> Node:
    """numerator / denominator, or ``default`` where the denominator is 0 (no inf or NaN leaks).

    A missing denominator (warm-up) stays missing rather than taking the default.
    """
    den = _lift(denominator)
    return where((den >= 0.0) & (den <= 0.0), default, _lift(numerator) / den)


def _lift(value: Any) -> Node:
    if isinstance(value, Node):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot use {value!r} in a feature expression")
    return const(value)


def _numeric(node: Node) -> Node:
    if node.is_boolean:
        raise TypeError(f"{node.key} is a condition; use where(condition, 1.0, 0.0) to make a number")
    return node


def _unary(op: str, a: Node) -> Node:
    return Node(op, (_numeric(a),))


def _binary(op: str, a: Any, b: Any) -> Node:
    return Node(op, (_numeric(_lift(a)), _numeric(_lift(b))))


def _compare(op: str, a: Any, b: Any) -> Node:
    return Node(op, (_numeric(_lift(a)), _numeric(_lift(b))))


def _logical(op: str, a: Node, b: Node) -> Node:
    if not (isinstance(a, Node) and isinstance(b, Node) and a.is_boolean and b.is_boolean):
        raise TypeError(f"'{op}' joins two conditions")
    return Node(op, (a, b))


def _check_window(op: str, n: Any, low: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < low:
        raise ValueError(f"{op}: window must be an integer >= {low}, got {n!r}")


def _rolling(op: str, a: Node, n: int) -> Node:
    _check_window(op, n, 1)
    return Node(op, (_numeric(a),), (int(n),))


# ---- analysis -----------------------------------------------------------------------------------


def ewm_warmup(alpha: float, tolerance: float = EWM_TOLERANCE) -> int:
    """Bars after which a recursive mean's starting value weighs less than ``tolerance``."""
    if alpha >= 1.0:
        return 0
    return math.ceil(math.log(tolerance) / math.log(1.0 - alpha))


def warmup(node: Node, _memo: dict[str, int] | None = None) -> int:
    """Earlier bars the node's value depends on before it is defined and settled."""
    memo = {} if _memo is None else _memo
    hit = memo.get(node.key)
    if hit is not None:
        return hit
    inner = max((warmup(a, memo) for a in node.args), default=0)
    if node.op == "shift":
        out = inner + node.params[0]
    elif node.op in ("rolling_mean", "rolling_sum", "rolling_std", "rolling_max", "rolling_min"):
        out = inner + node.params[0] - 1
    elif node.op == "ewm":
        out = inner + ewm_warmup(node.params[0])
    else:
        out = inner
    memo[node.key] = out
    return out


def walk(node: Node) -> Iterator[Node]:
    """Every distinct node below and including ``node``, children before parents."""
    seen: set[str] = set()
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        if current.key in seen:
            continue
        if expanded:
            seen.add(current.key)
            yield current
        else:
            stack.append((current, True))
            stack.extend((a, False) for a in reversed(current.args) if a.key not in seen)


def inputs(node: Node) -> set[str]:
    return {n.params[0] for n in walk(node) if n.op == "col"} | (
        {"timestamp"} if any(n.op == "time" for n in walk(node)) else set()
    )


def digest(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
