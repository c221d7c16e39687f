"""Pictures of a training run: equity net of costs against the baselines, calibration, importance.

Each function takes already computed numbers and returns PNG bytes. Figures are built with
``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state, so safe in a threaded Dagster
step) and saved without the ``Software`` tag: the same numbers give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

MAX_POINTS = 4000  # a curve is thinned to this many points (every k-th, plus the last)
TOP_FEATURES = 20
_BASELINE_STYLE = {
    "baseline_flat": ("flat", "0.55", ":"),
    "baseline_buy_and_hold": ("buy-and-hold", "black", "--"),
    "baseline_momentum_sign": ("momentum", "tab:gray", "-."),
}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=90)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _thin(frame: pl.DataFrame) -> pl.DataFrame:
    if frame.height <= MAX_POINTS:
        return frame
    step = -(-frame.height // MAX_POINTS)
    keep = pl.int_range(pl.len()) % step == 0
    return frame.filter(keep | (pl.int_range(pl.len()) == pl.len() - 1))


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def equity_curve_plot(curves: pl.DataFrame, *, title: str = "") -> bytes:
    """PNG: cumulative net-of-cost equity per strategy over time; below, the engines alone on their
    own scale (a baseline that loses most of its equity would flatten them otherwise).

    ``curves``: ``strategy`` (an engine name or ``baseline_<kind>``, optionally suffixed
    `` @ <engine>`` when the baselines differ by engine), ``timestamp``, ``equity`` (starts near 1).
    Engines are solid coloured lines, baselines black/grey dashed.
    """
    fig = _figure(11, 7.5)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 2), hspace=0.25)
    top = fig.add_subplot(grid[0])
    bottom = fig.add_subplot(grid[1], sharex=top)
    if curves.is_empty():
        _no_data(top, "no out-of-sample rows to simulate")
        bottom.set_axis_off()
        return _png(fig)
    strategies = curves["strategy"].unique(maintain_order=True).to_list()
    is_baseline = {s: s.split(" @ ")[0] in _BASELINE_STYLE for s in strategies}
    ordered = [s for s in strategies if not is_baseline[s]] + [s for s in strategies if is_baseline[s]]
    colours = {s: f"C{i % 10}" for i, s in enumerate(s for s in ordered if not is_baseline[s])}
    for strategy in ordered:
        rows = _thin(curves.filter(pl.col("strategy") == strategy).sort("timestamp"))
        x, y = rows["timestamp"].to_list(), rows["equity"].to_list()
        final = y[-1] - 1.0
        if is_baseline[strategy]:
            base = strategy.split(" @ ")[0]
            label, colour, style = _BASELINE_STYLE[base]
            top.plot(x, y, color=colour, linestyle=style, linewidth=1.0,
                     label=f"{label}{strategy[len(base):]} ({final:+.2%})")
        else:
            top.plot(x, y, color=colours[strategy], linewidth=1.4, label=f"{strategy} ({final:+.2%})")
            bottom.plot(x, y, color=colours[strategy], linewidth=1.2, label=strategy)
    for ax in (top, bottom):
        ax.axhline(1.0, color="0.75", linewidth=0.6)
        ax.grid(alpha=0.3)
    top.set_ylabel("equity (start = 1)")
    top.set_title(title or "equal-weight portfolio of the symbols, net of costs, out-of-sample rows only")
    top.legend(fontsize=8, loc="best")
    bottom.set_ylabel("engines only")
    fig.autofmt_xdate()
    return _png(fig)


def calibration_plot(bins: pl.DataFrame, ece: Mapping[str, float | None]) -> bytes:
    """PNG: reliability diagram (mean predicted P(up) per bin vs realised up-frequency) with the
    diagonal of perfect calibration, and below it the rows per bin.

    ``bins``: ``engine, bin, lower, upper, n, mean_probability, frequency`` (empty bins absent).
    """
    fig = _figure(7.5, 7.5)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    top = fig.add_subplot(grid[0])
    bottom = fig.add_subplot(grid[1], sharex=top)
    if bins.is_empty():
        _no_data(top, "no classifier probabilities to calibrate")
        bottom.set_axis_off()
        return _png(fig)
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8, label="perfect calibration")
    engines = bins["engine"].unique(maintain_order=True).to_list()
    width = 1.0 / max(1, int(bins["bin"].max()) + 1) / max(1, len(engines))
    for i, engine in enumerate(engines):
        rows = bins.filter(pl.col("engine") == engine).sort("bin")
        value = ece.get(engine)
        label = f"{engine} (ECE {value:.4f})" if value is not None else f"{engine} (ECE n/a)"
        top.plot(rows["mean_probability"].to_list(), rows["frequency"].to_list(), marker="o", markersize=4,
                 color=f"C{i}", linewidth=1.2, label=label)
        lefts = [lo + i * width for lo in rows["lower"].to_list()]
        bottom.bar(lefts, rows["n"].to_list(), width=width, align="edge", color=f"C{i}", alpha=0.7)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("realised up-frequency")
    top.set_title("calibration of P(up), out-of-sample")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_xlabel("predicted P(up)")
    bottom.set_ylabel("rows")
    bottom.grid(alpha=0.3)
    return _png(fig)


def feature_importance_plot(importance: Mapping[str, Sequence[tuple[str, float]]], *, top: int = TOP_FEATURES) -> bytes:
    """PNG: the ``top`` features by gain per engine (horizontal bars, largest on top), gain as a
    share of the engine's total so engines compare on one scale."""
    engines = sorted(importance)
    fig = _figure(6.0 * max(1, len(engines)), 0.28 * top + 1.5)
    if not engines:
        _no_data(fig.add_subplot(1, 1, 1), "no tree engine with feature importance")
        return _png(fig)
    for i, engine in enumerate(engines):
        ax = fig.add_subplot(1, len(engines), i + 1)
        pairs = list(importance[engine])
        total = sum(v for _, v in pairs) or 1.0
        used = [(n, v) for n, v in pairs if v > 0]  # a feature never split on has nothing to show
        shown = sorted(used, key=lambda kv: (-kv[1], kv[0]))[:top]
        names = [n for n, _ in shown]
        shares = [v / total for _, v in shown]
        ax.barh(range(len(names)), shares, color=f"C{i}")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("share of total gain")
        ax.set_title(f"{engine}: top {len(names)} of {len(pairs)} features ({len(used)} used)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _png(fig)


def policy_equity_plot(curves: pl.DataFrame, *, title: str = "") -> bytes:
    """PNG: account equity of RL policies against their baselines on the same held-out trades
    (``clm.rl.replay``), one step per closed trade in exit order.

    ``curves``: ``policy`` (``agent``, ``fixed_size``, ``random``, ...), ``timestamp`` (exit time),
    ``equity`` (starts at 1). The agent is a solid coloured line, the baselines black/grey dashed.
    """
    fig = _figure(11, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    if curves.is_empty():
        _no_data(ax, "no held-out trades to replay")
        return _png(fig)
    styles = {"fixed_size": ("black", "--"), "random": ("tab:gray", "-.")}
    for i, policy in enumerate(curves["policy"].unique(maintain_order=True).to_list()):
        rows = _thin(curves.filter(pl.col("policy") == policy).sort("timestamp"))
        colour, style = styles.get(policy, (f"C{i % 10}", "-"))
        final = rows["equity"][-1] - 1.0 if rows.height else 0.0
        ax.step(rows["timestamp"].to_list(), rows["equity"].to_list(), where="post", color=colour, linestyle=style,
                linewidth=1.4 if policy not in styles else 1.0, label=f"{policy} ({final:+.2%})")
    ax.axhline(1.0, color="0.75", linewidth=0.6)
    ax.grid(alpha=0.3)
    ax.set_ylabel("account equity (start = 1)")
    ax.set_title(title or "held-out replay of the champion's signals, net of costs")
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    return _png(fig)


__all__ = ["MAX_POINTS", "TOP_FEATURES", "calibration_plot", "equity_curve_plot", "feature_importance_plot",
           "policy_equity_plot"]
