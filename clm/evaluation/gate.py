"""The regime gate: which engines may vote in which regime, learnt on validation predictions.

Input: an out-of-sample predictions frame, one row per ``(engine, symbol, timestamp)`` with
``engine``, ``regime`` (null = unknown), ``signal`` in ``[-1, 1]`` (``clm.evaluation.consensus.
to_signal``) and ``target_return`` (realised forward log return). Pass the VALIDATION folds'
predictions (or name them with ``folds=``): a gate learnt on the test rows it is judged on leaks.

Edge of a row (trading ``sign(signal)`` for the label's horizon, one round trip):
``net_edge_bps = sign(signal) * target_return * 1e4 - cost``, where ``cost`` is
``GateConfig.cost_bps`` when set, else the row's ``cost_bps`` column, else its ``total_cost_bps``
column (``clm.evaluation.costs.trade_costs``), else 0 (null costs count as 0). A row with
``sign(signal) == 0`` is no trade; rows with a null signal or a non-finite ``target_return`` are
not evaluable and are dropped.

Per regime and engine: ``rows`` (evaluable rows), ``trades`` (rows with a non-zero signal) and
``mean_net_edge_bps`` (mean over the trades; null without trades). The ``"overall"`` pseudo-regime
pools every row, the null-regime rows included. In each regime, with ``best`` = the highest mean
net edge among engines with trades:

* an engine is enabled iff its mean net edge is ``> 0`` AND ``>= best - tolerance_bps``;
* a regime where no engine has a positive net edge enables NONE: trading stands aside there (the
  consensus sees no vote and scores 0) - deliberately not a fallback to the overall set, since the
  validation rows say every engine loses money in that regime after costs;
* a regime with fewer than ``min_rows`` evaluable rows (distinct ``(symbol, timestamp)``) is too
  thin to judge: it uses the overall set (``fallback = True`` in the table). "overall" itself is
  always learnt from its own rows.

``RegimeGate.apply`` adds ``gated`` (Boolean): True when the row's engine is enabled for the row's
regime (the signal passes the gate), False when it is gated off. A null regime, or a regime the
gate never saw, uses the overall set. The gate serialises to deterministic JSON (``to_json``: keys
sorted, floats rounded to 6 decimals) and is saved with the model set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl

from clm.checks import is_finite_number, is_int
from clm.regimes.config import CLASSES

OVERALL = "overall"
GATE_VERSION = 1
EDGE_SCHEMA = pl.Schema(
    {
        "regime": pl.String(),
        "engine": pl.String(),
        "rows": pl.UInt32(),
        "trades": pl.UInt32(),
        "mean_net_edge_bps": pl.Float64(),
        "enabled": pl.Boolean(),
        "fallback": pl.Boolean(),
    }
)
_SEP = "\x1f"


def check_predictions(frame: pl.DataFrame | pl.LazyFrame, needed: Iterable[str], caller: str) -> pl.DataFrame:
    """The frame collected, with ``needed`` columns present and ``signal`` finite in [-1, 1] (or null)."""
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise ValueError(f"{caller}: predictions must be a polars DataFrame or LazyFrame, got {type(frame).__name__}")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{caller}: predictions lack column(s) {missing}")
    if "signal" in frame.columns:
        s = pl.col("signal").cast(pl.Float64)
        bad = frame.filter(s.is_not_null() & (s.is_nan() | (s.abs() > 1))).height
        if bad:
            raise ValueError(f"{caller}: {bad} row(s) have a signal outside [-1, 1] (see to_signal)")
    return frame


@dataclass(frozen=True)
class GateConfig:
    """How the gate is learnt; invalid values raise ``ValueError`` naming the field."""

    tolerance_bps: float = 1.0  # engines within this many bps of the best (and > 0) are enabled too
    min_rows: int = 200  # a regime with fewer validation rows uses the overall set
    cost_bps: float | None = None  # fixed round-trip cost; None = the cost_bps / total_cost_bps column, or 0

    def __post_init__(self) -> None:
        if not is_finite_number(self.tolerance_bps) or self.tolerance_bps < 0:
            raise ValueError(f"tolerance_bps must be a finite number >= 0, got {self.tolerance_bps!r}")
        if not is_int(self.min_rows) or self.min_rows < 1:
            raise ValueError(f"min_rows must be an int >= 1, got {self.min_rows!r}")
        if self.cost_bps is not None and (not is_finite_number(self.cost_bps) or self.cost_bps < 0):
            raise ValueError(f"cost_bps must be None or a finite number >= 0, got {self.cost_bps!r}")

    def to_dict(self) -> dict:
        return {"tolerance_bps": self.tolerance_bps, "min_rows": self.min_rows, "cost_bps": self.cost_bps}


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


@dataclass(frozen=True)
class RegimeGate:
    """Engines enabled per regime (``"overall"`` included), the edge table and the config."""

    enabled: dict[str, list[str]]
    edges: pl.DataFrame = field(compare=False)
    config: GateConfig = GateConfig()

    def engines_for(self, regime: str | None) -> list[str]:
        """The engines enabled for ``regime`` (the overall set for None or an unseen regime)."""
        if regime is None or regime not in self.enabled:
            return list(self.enabled.get(OVERALL, []))
        return list(self.enabled[regime])

    def apply(self, predictions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        """``predictions`` (row order kept) with ``gated``: True = the engine may vote on this row."""
        df = check_predictions(predictions, ("engine",), "RegimeGate.apply")
        known = [r for r in self.enabled if r != OVERALL]
        regime = pl.col("regime").cast(pl.String) if "regime" in df.columns else pl.lit(None, pl.String)
        key = pl.when(regime.is_in(known)).then(regime).otherwise(pl.lit(OVERALL))
        pairs = [f"{r}{_SEP}{e}" for r, engines in self.enabled.items() for e in engines]
        gated = pl.concat_str(key, pl.lit(_SEP), pl.col("engine").cast(pl.String)).is_in(pairs)
        return df.with_columns(gated.fill_null(False).alias("gated"))

    def to_dict(self) -> dict:
        """A JSON-ready dict; the same gate always gives the same dict (sorted, rounded)."""
        edges = self.edges.sort("regime", "engine").to_dicts()
        for row in edges:
            row["mean_net_edge_bps"] = _round(row["mean_net_edge_bps"])
        return {
            "version": GATE_VERSION,
            "config": self.config.to_dict(),
            "enabled": {r: sorted(self.enabled[r]) for r in sorted(self.enabled)},
            "edges": edges,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping) -> RegimeGate:
        if not isinstance(data, Mapping) or data.get("version") != GATE_VERSION:
            raise ValueError(f"not a RegimeGate dict of version {GATE_VERSION}")
        enabled = data.get("enabled")
        if not isinstance(enabled, Mapping) or OVERALL not in enabled:
            raise ValueError(f"RegimeGate dict: 'enabled' must map regimes (with {OVERALL!r}) to engine lists")
        for regime, engines in enabled.items():
            if not isinstance(engines, list) or not all(isinstance(e, str) for e in engines):
                raise ValueError(f"RegimeGate dict: enabled[{regime!r}] must be a list of engine names")
        edges = pl.DataFrame(list(data.get("edges", [])), schema=EDGE_SCHEMA)
        config = GateConfig(**data.get("config", {}))
        return cls(enabled={str(r): sorted(v) for r, v in enabled.items()}, edges=edges, config=config)

    @classmethod
    def from_json(cls, text: str) -> RegimeGate:
        return cls.from_dict(json.loads(text))


def _edge_rows(df: pl.DataFrame, config: GateConfig) -> pl.DataFrame:
    names = df.columns
    if config.cost_bps is not None:
        cost = pl.lit(float(config.cost_bps))
    elif "cost_bps" in names:
        cost = pl.col("cost_bps").cast(pl.Float64).fill_nan(None).fill_null(0.0)
    elif "total_cost_bps" in names:
        cost = pl.col("total_cost_bps").cast(pl.Float64).fill_nan(None).fill_null(0.0)
    else:
        cost = pl.lit(0.0)
    side = pl.col("signal").cast(pl.Float64).sign()  # rows are evaluable: signal and return finite
    r = pl.col("target_return").cast(pl.Float64)
    regime = pl.col("regime").cast(pl.String) if "regime" in names else pl.lit(None, pl.String)
    return df.select(
        pl.col("engine").cast(pl.String),
        pl.col("symbol").cast(pl.String),
        pl.col("timestamp"),
        regime.alias("regime"),
        side.alias("__side"),
        pl.when(side != 0).then(side * r * 1e4 - cost).otherwise(None).alias("__edge"),
    )


def learn_gate(
    predictions: pl.DataFrame | pl.LazyFrame, config: GateConfig = GateConfig(), *, folds: Iterable[int] | None = None
) -> RegimeGate:
    """Learn the gate (module docstring) on ``predictions`` (only ``folds`` of them when given)."""
    if not isinstance(config, GateConfig):
        raise ValueError(f"config must be a GateConfig, got {type(config).__name__}")
    needed = ["engine", "symbol", "timestamp", "signal", "target_return"] + (["fold"] if folds is not None else [])
    df = check_predictions(predictions, needed, "learn_gate")
    if folds is not None:
        df = df.filter(pl.col("fold").is_in(list(folds)))
    if "regime" in df.columns and df.filter(pl.col("regime").cast(pl.String) == OVERALL).height:
        raise ValueError(f"learn_gate: {OVERALL!r} is reserved and cannot be a regime name")
    r = pl.col("target_return").cast(pl.Float64)
    df = df.filter(pl.col("signal").is_not_null() & r.is_not_null() & r.is_finite())
    if df.height == 0:
        raise ValueError("learn_gate: no evaluable rows (signal and finite target_return)")
    rows = _edge_rows(df, config)

    def per(frame: pl.DataFrame, regime: pl.Expr) -> pl.DataFrame:
        return frame.with_columns(regime.alias("regime")).group_by("regime", "engine").agg(
            pl.len().cast(pl.UInt32).alias("rows"),
            (pl.col("__side") != 0).sum().cast(pl.UInt32).alias("trades"),
            pl.col("__edge").mean().alias("mean_net_edge_bps"),
        )

    regimed = rows.filter(pl.col("regime").is_not_null())
    table = pl.concat([per(rows, pl.lit(OVERALL)), per(regimed, pl.col("regime"))])
    regime_rows = pl.concat(
        [
            rows.select(pl.lit(OVERALL).alias("regime"), "symbol", "timestamp"),
            regimed.select("regime", "symbol", "timestamp"),
        ]
    ).group_by("regime").agg(pl.struct("symbol", "timestamp").n_unique().alias("__n"))
    edge = pl.col("mean_net_edge_bps")
    best = edge.max().over("regime")
    table = (
        table.join(regime_rows, on="regime", how="left")
        .with_columns(
            ((edge > 0) & (edge >= best - config.tolerance_bps)).fill_null(False).alias("__own"),
            ((pl.col("__n") < config.min_rows) & (pl.col("regime") != OVERALL)).alias("fallback"),
        )
    )
    overall = set(table.filter((pl.col("regime") == OVERALL) & pl.col("__own"))["engine"].to_list())
    table = (
        table.with_columns(
            pl.when(pl.col("fallback"))
            .then(pl.col("engine").is_in(sorted(overall)))
            .otherwise(pl.col("__own"))
            .alias("enabled")
        )
        .select(list(EDGE_SCHEMA.names()))
        .cast(dict(EDGE_SCHEMA))
        .sort("regime", "engine")
    )
    enabled: dict[str, list[str]] = {}
    for regime in table["regime"].unique().sort().to_list():
        part = table.filter((pl.col("regime") == regime) & pl.col("enabled"))
        enabled[regime] = sorted(part["engine"].to_list())
    return RegimeGate(enabled=enabled, edges=table, config=config)


def gate_table(gate: RegimeGate) -> pl.DataFrame:
    """Report table: regime, engine, rows, trades, mean_net_edge_bps, enabled, fallback.

    Regimes in the classifier's order (``clm.regimes.config.CLASSES``), others after, overall last.
    """
    order = {r: i for i, r in enumerate(CLASSES)}
    rank = pl.col("regime").replace_strict(order, default=len(order), return_dtype=pl.Int32)
    rank = pl.when(pl.col("regime") == OVERALL).then(len(order) + 1).otherwise(rank)
    return gate.edges.sort(rank, "regime", "engine")
