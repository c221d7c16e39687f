"""Compile feature trees to polars: every windowed node once, per series, in as few passes as possible.

Each distinct stateful node (shift, rolling, ewm) becomes one temporary column computed with
``.over(group)``; nodes are grouped into stages by depth so a stage is a single ``with_columns``
that polars runs in parallel. Shared sub-trees (the ATR inside ``atr_14``, ``plus_di_14`` and
``adx_14``) are therefore computed once. Element-wise parts are inlined into their consumers.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from clm.features.expr import STATEFUL, Node, digest, walk

GROUP = "__series"


def _column(node: Node) -> str:
    return f"__n_{digest(node.key, 12)}"


_SUMMING = ("rolling_mean", "rolling_sum", "rolling_std")


def _change_column(node: Node) -> str:
    return f"__chg_{digest(node.args[0].key, 12)}"


def _flat_column(node: Node) -> str:
    """One flag per (input, window), shared by the mean, sum and std of the same window."""
    return f"__flat_{digest(node.args[0].key + repr(node.params[0]), 12)}"


def _exact_flat(node: Node, x: pl.Expr) -> pl.Expr:
    if node.op == "rolling_mean":
        return x
    if node.op == "rolling_sum":
        return x * float(node.params[0])
    return pl.lit(0.0, dtype=pl.Float64)


class _Compiler:
    def __init__(self) -> None:
        self.level: dict[str, int] = {}

    def levels(self, node: Node) -> int:
        hit = self.level.get(node.key)
        if hit is not None:
            return hit
        inner = max((self.levels(a) for a in node.args), default=0)
        out = inner + 1 if node.op in STATEFUL else inner
        self.level[node.key] = out
        return out

    def inline(self, node: Node) -> pl.Expr:
        op, p = node.op, node.params
        if op in STATEFUL:
            return pl.col(_column(node))
        if op == "col":
            return pl.col(p[0]).cast(pl.Float64)
        if op == "const":
            return pl.lit(p[0], dtype=pl.Float64)
        if op == "time":
            ts = pl.col("timestamp")
            if p[0] == "hour":
                return ts.dt.hour().cast(pl.Float64) + ts.dt.minute().cast(pl.Float64) / 60.0
            return (ts.dt.weekday() - 1).cast(pl.Float64)
        a = [self.inline(x) for x in node.args]
        match op:
            case "neg":
                return -a[0]
            case "abs":
                return a[0].abs()
            case "log" | "exp" | "sqrt" | "sin" | "cos" | "tanh" | "sign":
                return getattr(a[0], op)()
            case "add":
                return a[0] + a[1]
            case "sub":
                return a[0] - a[1]
            case "mul":
                return a[0] * a[1]
            case "div":
                return a[0] / a[1]
            case "max2":
                return pl.when(a[0] >= a[1]).then(a[0]).otherwise(a[1])
            case "min2":
                return pl.when(a[0] <= a[1]).then(a[0]).otherwise(a[1])
            case "gt":
                return a[0] > a[1]
            case "ge":
                return a[0] >= a[1]
            case "lt":
                return a[0] < a[1]
            case "le":
                return a[0] <= a[1]
            case "and":
                return a[0] & a[1]
            case "or":
                return a[0] | a[1]
            case "where":
                return pl.when(a[0]).then(a[1]).otherwise(a[2])
            case "fill":
                return a[0].fill_null(p[0])
        raise ValueError(f"no polars form for node {node.key}")

    def operand(self, node: Node, operands: Mapping[str, pl.Expr]) -> pl.Expr:
        child = node.args[0]
        return pl.col(_column(child)) if _column(child) in operands else self.inline(child)

    def stateful(self, node: Node, operands: Mapping[str, pl.Expr]) -> pl.Expr:
        x = self.operand(node, operands)
        op, p = node.op, node.params
        match op:
            case "shift":
                return x.shift(p[0])
            case "rolling_mean":
                return x.rolling_mean(p[0], min_samples=p[0])
            case "rolling_sum":
                return x.rolling_sum(p[0], min_samples=p[0])
            case "rolling_max":
                return x.rolling_max(p[0], min_samples=p[0])
            case "rolling_min":
                return x.rolling_min(p[0], min_samples=p[0])
            case "rolling_std":
                return x.rolling_std(p[0], min_samples=p[0], ddof=p[1])
            case "ewm":
                return x.ewm_mean(alpha=p[0], adjust=False, min_samples=1)
        raise ValueError(f"no polars form for node {node.key}")


def evaluate(frame: pl.LazyFrame, roots: Mapping[str, Node], group: str = GROUP) -> pl.LazyFrame:
    """Add one column per root to ``frame`` (sorted by ``group`` then time), computed within ``group``.

    ``group`` must identify one contiguous series (symbol and segment, in time order). The
    element-wise input of every windowed node is computed first, over the whole column (cheap and
    parallel), and only the windowed operation itself runs per series.
    """
    compiler = _Compiler()
    stateful: dict[str, Node] = {}
    for root in roots.values():
        for node in walk(root):
            if node.op in STATEFUL:
                stateful.setdefault(node.key, node)
    by_level: dict[int, list[Node]] = {}
    for node in stateful.values():
        by_level.setdefault(compiler.levels(node), []).append(node)
    out = frame
    temporary: list[str] = []
    for level in sorted(by_level):
        operands: dict[str, pl.Expr] = {}
        for node in by_level[level]:
            child = node.args[0]
            if child.op not in ("col",) and child.op not in STATEFUL:
                operands.setdefault(_column(child), compiler.inline(child))
        if operands:
            out = out.with_columns([e.alias(name) for name, e in operands.items()])
            temporary += list(operands)
        # Windows of identical values: polars' running sums leave residues (1e-15 after a run of
        # zero volume), and a ratio of two residues is garbage; such windows get the exact answer.
        # A window of n equal values is n - 1 bars without a change, counted exactly in integers.
        changes: dict[str, pl.Expr] = {}
        flat: dict[str, pl.Expr] = {}
        for node in by_level[level]:
            n = node.params[0] if node.op in _SUMMING else 1
            if n < 2:
                continue
            x = compiler.operand(node, operands)
            change = _change_column(node)
            changes.setdefault(change, (x != x.shift(1)).over(group).cast(pl.UInt32))
            flat.setdefault(_flat_column(node), pl.col(change).rolling_sum(n - 1, min_samples=n - 1).over(group) == 0)
        if changes:
            out = out.with_columns([e.alias(name) for name, e in changes.items()])
        out = out.with_columns(
            [compiler.stateful(n, operands).over(group).alias(_column(n)) for n in by_level[level]]
            + [e.alias(name) for name, e in flat.items()]
        )
        if flat:
            out = out.with_columns([
                pl.when(pl.col(_flat_column(n))).then(_exact_flat(n, compiler.operand(n, operands)))
                .otherwise(pl.col(_column(n))).alias(_column(n))
                for n in by_level[level] if n.op in _SUMMING and n.params[0] >= 2
            ])
        temporary += [_column(n) for n in by_level[level]] + list(flat) + list(changes)
    out = out.with_columns([compiler.inline(root).alias(name) for name, root in roots.items()])
    return out.drop(temporary)
