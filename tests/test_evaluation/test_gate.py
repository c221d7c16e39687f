"""Regime gate: per-regime engine choice by net edge, tolerance, stand-aside, fallback, JSON, apply."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from clm.evaluation.gate import OVERALL, GateConfig, RegimeGate, gate_table, learn_gate

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _signal(rng, r, accuracy):
    right = rng.random(len(r)) < accuracy
    return np.where(right, np.sign(r), -np.sign(r)) * 0.6


def frame(n=600, seed=0, accuracies=None, regimes=("trend", "range")):
    """Engine A right 80% in trend / 50% in range, B the other way round (returns of +-10 bp)."""
    rng = np.random.default_rng(seed)
    accuracies = accuracies or {"A": {"trend": 0.8, "range": 0.5}, "B": {"trend": 0.5, "range": 0.8}}
    parts = []
    for regime_i, regime in enumerate(regimes):
        r = rng.choice([-0.001, 0.001], n)
        ts = [T0 + timedelta(hours=regime_i * n + i) for i in range(n)]
        for engine, acc in accuracies.items():
            parts.append(
                pl.DataFrame(
                    {
                        "engine": engine,
                        "fold": 0,
                        "symbol": "AAA",
                        "timestamp": ts,
                        "regime": regime,
                        "signal": _signal(rng, r, acc.get(regime, 0.5)),
                        "target_return": r,
                    }
                )
            )
    return pl.concat(parts)


def test_picks_the_engine_with_positive_best_edge_per_regime():
    gate = learn_gate(frame(), GateConfig(cost_bps=2.0, min_rows=100))
    assert gate.enabled["trend"] == ["A"]
    assert gate.enabled["range"] == ["B"]
    edges = {(r["regime"], r["engine"]): r["mean_net_edge_bps"] for r in gate.edges.to_dicts()}
    # ~ (2 * 0.8 - 1) * 10 bp - 2 bp = 4 bp for the good engine, ~ -2 bp for the coin flip
    assert 2.0 < edges[("trend", "A")] < 6.0 and edges[("trend", "B")] < 1.0
    # overall both earn ~ 1 bp: within tolerance of each other
    assert set(gate.enabled[OVERALL]) <= {"A", "B"}


def test_tolerance_enables_near_best_engines():
    acc = {"A": {"trend": 0.8}, "C": {"trend": 0.78}, "D": {"trend": 0.6}}
    df = frame(n=4000, accuracies=acc, regimes=("trend",))
    table = learn_gate(df, GateConfig(tolerance_bps=0.0, min_rows=100)).edges
    e = {r["engine"]: r["mean_net_edge_bps"] for r in table.filter(pl.col("regime") == "trend").to_dicts()}
    best = max(e.values())
    tol = best - e["C"] + 0.01  # just wide enough for C, not for D (~4 bp lower)
    assert best - e["D"] > tol
    gate = learn_gate(df, GateConfig(tolerance_bps=tol, min_rows=100))
    assert gate.enabled["trend"] == ["A", "C"]
    assert learn_gate(df, GateConfig(tolerance_bps=0.0, min_rows=100)).enabled["trend"] == [
        max(e, key=e.get)
    ]


def test_no_positive_edge_enables_none():
    gate = learn_gate(frame(), GateConfig(cost_bps=50.0, min_rows=100))
    assert gate.enabled["trend"] == [] and gate.enabled["range"] == [] and gate.enabled[OVERALL] == []
    applied = gate.apply(frame())
    assert not applied["gated"].any()


def test_cost_column_is_used_when_no_fixed_cost():
    df = frame().with_columns(pl.lit(50.0).alias("cost_bps"))
    assert learn_gate(df, GateConfig(min_rows=100)).enabled["trend"] == []
    assert learn_gate(df, GateConfig(min_rows=100, cost_bps=0.0)).enabled["trend"] == ["A"]


def test_thin_regime_falls_back_to_overall_set():
    df = frame()
    thin = frame(n=50, seed=3, accuracies={"A": {"panic": 0.0}, "B": {"panic": 1.0}}, regimes=("panic",))
    thin = thin.with_columns(pl.col("timestamp") + timedelta(days=400))
    gate = learn_gate(pl.concat([df, thin]), GateConfig(min_rows=100))
    assert gate.enabled["panic"] == gate.enabled[OVERALL]
    table = gate_table(gate)
    assert table.filter(pl.col("regime") == "panic")["fallback"].all()
    assert not table.filter(pl.col("regime") == "trend")["fallback"].any()
    # with a lower bar the thin regime is judged on its own rows: B is perfect there
    assert learn_gate(pl.concat([df, thin]), GateConfig(min_rows=50)).enabled["panic"] == ["B"]


def test_json_round_trip_is_deterministic():
    gate = learn_gate(frame(), GateConfig(min_rows=100))
    text = gate.to_json()
    assert text == learn_gate(frame(), GateConfig(min_rows=100)).to_json()
    back = RegimeGate.from_json(text)
    assert back.enabled == gate.enabled and back.config == gate.config
    assert back.to_json().encode() == text.encode()
    assert RegimeGate.from_dict(json.loads(json.dumps(gate.to_dict()))).to_dict() == gate.to_dict()
    with pytest.raises(ValueError, match="version"):
        RegimeGate.from_dict({"enabled": {}})


def test_apply_gates_rows_by_regime_and_null_regime_uses_overall():
    gate = RegimeGate(enabled={"trend": ["A"], "range": ["B"], OVERALL: ["B"]}, edges=pl.DataFrame())
    df = pl.DataFrame(
        {
            "engine": ["A", "B", "A", "B", "A", "B", "A"],
            "regime": ["trend", "trend", "range", "range", None, None, "panic"],
            "signal": [0.1] * 7,
        }
    )
    assert gate.apply(df)["gated"].to_list() == [True, False, False, True, False, True, False]
    assert gate.apply(df.drop("regime"))["gated"].to_list() == [False, True] * 3 + [False]


def test_gate_table_columns_and_order():
    table = gate_table(learn_gate(frame(), GateConfig(min_rows=100)))
    assert table.columns == ["regime", "engine", "rows", "trades", "mean_net_edge_bps", "enabled", "fallback"]
    assert table["regime"].unique(maintain_order=True).to_list() == ["trend", "range", OVERALL]
    assert table.filter(pl.col("regime") == "trend")["rows"].to_list() == [600, 600]


def test_folds_filter_and_errors():
    df = pl.concat([frame(), frame(seed=1).with_columns(pl.lit(1).alias("fold"), pl.lit(0.0).alias("signal"))])
    gate = learn_gate(df, GateConfig(min_rows=100), folds=[0])
    assert gate.enabled["trend"] == ["A"]
    for kwargs, field in (
        ({"tolerance_bps": -1.0}, "tolerance_bps"),
        ({"min_rows": 0}, "min_rows"),
        ({"min_rows": True}, "min_rows"),
        ({"cost_bps": float("nan")}, "cost_bps"),
    ):
        with pytest.raises(ValueError, match=field):
            GateConfig(**kwargs)
    with pytest.raises(ValueError, match="signal outside"):
        learn_gate(frame().with_columns(pl.col("signal") * 3))
    with pytest.raises(ValueError, match="target_return"):
        learn_gate(frame().drop("target_return"))
    with pytest.raises(ValueError, match="reserved"):
        learn_gate(frame().with_columns(pl.lit(OVERALL).alias("regime")))
