"""ranking_table / do_not_trade: every symbol of the universe is tradable or has exactly one reason."""

import json
import shutil

import polars as pl
import pytest

from clm.data.ingest import CANDLES
from clm.evaluation.costs import CostConfig
from clm.features.store import FEATURES
from clm.lake import write_parquet_atomic
from clm.registry import POOLED, ModelKey, open_registry
from clm.serving import Champion, assess, do_not_trade, ranking_table

from .conftest import build_market, register, register_gate, train

REG, CLF = "lightgbm_regressor", "lightgbm_classifier"
FREE = CostConfig(taker_fee_bps=0.0, maker_fee_bps=0.0, slippage_bps=0.0, impact_coefficient=0.0,
                  min_edge_after_cost_bps=-1_000.0)  # only the quoted spread is paid; any edge is taken
UNIVERSE = ["SYN000USD", "SYN001USD", "SYN002USD", "SYN003USD"]


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    """A lake where SYN003USD's last day of features is missing (stale) and SYN002USD's last row has a
    NaN feature; the classifier's accuracy is a coin flip (weight 0), SYN001USD has its own regressor."""
    root = tmp_path_factory.mktemp("ranking") / "lake"
    lake = build_market(root)
    registry = open_registry(lake)
    runs = {e: train(lake, e) for e in (REG, CLF)}
    register(registry, runs[REG], metrics={"model_sharpe": 1.2, "directional_accuracy": 0.56})
    register(registry, runs[CLF], metrics={"model_sharpe": 0.1, "directional_accuracy": 0.50,
                                           "typical_abs_return": 0.002})
    own = register(registry, runs[REG], scope="SYN001USD", metrics={"model_sharpe": 1.0,
                                                                     "oos_directional_accuracy": 0.55})
    version = lake.current_version(FEATURES)
    last_day = lake.table_path(FEATURES) / f"version={version}" / "date=2024-01-10"
    shutil.rmtree(last_day / "symbol=SYN003USD")
    part = last_day / "symbol=SYN002USD" / "part-0.parquet"
    frame = pl.read_parquet(part)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(float("nan"))
                               .otherwise(pl.col("rsi_14")).alias("rsi_14"))
    write_parquet_atomic(frame, part)
    yield lake, registry, runs, own
    shutil.rmtree(root, ignore_errors=True)


def _reasons(table: pl.DataFrame) -> dict[str, str]:
    return dict(zip(table["symbol"].to_list(), table["reason"].to_list(), strict=True))


def _partition(result) -> None:
    ranked, refused = set(result.ranking["symbol"].to_list()), set(result.do_not_trade["symbol"].to_list())
    assert not ranked & refused and ranked | refused == set(UNIVERSE)
    assert result.do_not_trade["symbol"].n_unique() == result.do_not_trade.height


def test_tradable_symbols_are_ranked_by_net_edge(desk):
    lake, registry, _runs, own = desk
    result = assess(lake, registry, horizon=12, cost_config=FREE)
    _partition(result)
    reasons = _reasons(result.do_not_trade)
    assert reasons["SYN003USD"].startswith("stale data") and "behind the newest bar" in reasons["SYN003USD"]
    assert reasons["SYN002USD"].startswith("missing features") and "rsi_14" in reasons["SYN002USD"]
    ranking = result.ranking
    assert ranking["symbol"].sort().to_list() == ["SYN000USD", "SYN001USD"]
    assert {"symbol", "regime", "net_edge_bps", "confidence", "capacity", "model_id"} <= set(ranking.columns)
    assert ranking["net_edge_bps"].is_sorted(descending=True)
    # free trading: the net edge is the regressor's own forecast of the bar, in bps
    features = lake.read(FEATURES).filter(pl.col("warm"))
    candles = lake.read(CANDLES)
    pooled = registry.active(ModelKey(REG, POOLED, 12)).model_id
    for row in ranking.iter_rows(named=True):
        bar = features.filter((pl.col("symbol") == row["symbol"]) & (pl.col("timestamp") == row["timestamp"]))
        assert bar.height == 1 and row["timestamp"] == features.filter(pl.col("symbol") == row["symbol"])[
            "timestamp"].max()
        champion = Champion.load(row["symbol"], 12, lake=lake, registry=registry)
        forecast = champion.primary.engine.predict(bar)[0] * 1e4
        assert row["model_id"] == (own.model_id if row["symbol"] == "SYN001USD" else pooled)
        assert row["expected_edge_bps"] == pytest.approx(forecast, abs=1e-9)
        assert row["side"] == ("long" if forecast > 0 else "short")
        quote = candles.filter((pl.col("symbol") == row["symbol"]) & (pl.col("timestamp") == row["timestamp"]))
        # no fees, slippage or impact: the cost is the bar's quoted spread, paid half in and half out
        assert row["total_cost_bps"] == pytest.approx(quote["spread_bps"][0], abs=1e-9)
        assert row["net_edge_bps"] == pytest.approx(abs(forecast) - quote["spread_bps"][0], abs=1e-9)
        assert row["capacity"] == pytest.approx(0.05 * quote["quote_volume"][0])
        assert 0 <= row["confidence"] <= 1


def test_costs_and_the_edge_floor(desk):
    lake, registry, _runs, _own = desk
    strict = CostConfig(min_edge_after_cost_bps=10_000.0)
    result = assess(lake, registry, horizon=12, cost_config=strict)
    _partition(result)
    assert result.ranking.is_empty()
    reasons = _reasons(result.do_not_trade)
    for symbol in ("SYN000USD", "SYN001USD"):
        assert reasons[symbol].startswith("net edge:") and "min_edge_after_cost_bps 10000" in reasons[symbol]
    # the module functions are the two halves of the same assessment
    assert ranking_table(lake, registry, cost_config=FREE).equals(assess(lake, registry, cost_config=FREE).ranking)
    assert _reasons(do_not_trade(lake, registry, cost_config=strict)) == reasons


def test_without_a_cost_config_the_ranking_takes_the_policys_costs(desk, tmp_path, monkeypatch):
    """Serving reads policy.yaml `costs` at each call (the assumptions of the evaluation and the shadow test)."""
    from clm.policy import Costs, Policy, policy_yaml

    lake, registry, _runs, _own = desk
    policy = tmp_path / "policy.yaml"
    monkeypatch.setenv("CLM_POLICY", str(policy))
    free = {k: v for k, v in FREE.as_dict().items() if k != "notional_by_quote"}
    policy.write_text(policy_yaml(Policy(costs=Costs(**free))))
    assert assess(lake, registry).ranking.equals(assess(lake, registry, cost_config=FREE).ranking)
    # dearer fills and a bigger USD trade (impact): the ranking's costs are the policy's, read fresh
    dear = Costs(taker_fee_bps=12.0, min_edge_after_cost_bps=-1_000.0, notional_by_quote={"USD": 400_000.0})
    policy.write_text(policy_yaml(Policy(costs=dear)))
    ranked = assess(lake, registry).ranking
    want = assess(lake, registry, cost_config=dear.cost_config()).ranking
    assert ranked["symbol"].sort().to_list() == ["SYN000USD", "SYN001USD"] and ranked.equals(want)
    cheap = assess(lake, registry, cost_config=FREE).ranking
    by_symbol = dict(zip(cheap["symbol"], cheap["total_cost_bps"], strict=True))
    for row in ranked.iter_rows(named=True):
        assert row["total_cost_bps"] > by_symbol[row["symbol"]] + 2 * 12.0  # the fee, slippage and impact on top
    policy.write_text("costs:\n  min_edge_after_cost_bps: 10000\n")
    reasons = _reasons(assess(lake, registry).do_not_trade)
    assert reasons["SYN000USD"].startswith("net edge:") and "min_edge_after_cost_bps 10000" in reasons["SYN000USD"]


def test_halt_no_model_and_a_closed_gate(desk, tmp_path, monkeypatch):
    lake, registry, runs, _own = desk
    lake.halt_path.parent.mkdir(parents=True, exist_ok=True)
    lake.halt_path.write_text(json.dumps({"reason": "CRITICAL drift"}))
    try:
        halted = assess(lake, registry, cost_config=FREE)
    finally:
        lake.halt_path.unlink()
    _partition(halted)
    assert halted.ranking.is_empty() and halted.halted == "CRITICAL drift"
    assert set(halted.do_not_trade["reason"]) == {"halted: CRITICAL drift"}

    nothing = assess(lake, registry, horizon=48, cost_config=FREE)
    _partition(nothing)
    assert all(r.startswith("no ACTIVE model") for r in nothing.do_not_trade["reason"])

    gated = open_registry(lake, f"duckdb:///{tmp_path}/gated.duckdb")
    register(gated, runs[REG], metrics={"model_sharpe": 1.2, "directional_accuracy": 0.56})
    register_gate(lake, gated, {}, version="closed")  # enables nothing anywhere
    closed = assess(lake, gated, cost_config=FREE)
    _partition(closed)
    reasons = _reasons(closed.do_not_trade)
    assert reasons["SYN000USD"].startswith("regime gate") and reasons["SYN001USD"].startswith("regime gate")
    assert reasons["SYN003USD"].startswith("stale data")  # the first failing check is the reason

    monkeypatch.setenv("CLM_LAKE", str(lake.root))  # defaults: the lake from the environment, its registry
    assert set(ranking_table(cost_config=FREE)["symbol"]) == {"SYN000USD", "SYN001USD"}
    assert Champion.load("SYN000USD", 12).model_id == registry.active(ModelKey(REG, POOLED, 12)).model_id


def test_a_broken_champion_is_a_reason_not_a_crash(desk):
    lake, registry, runs, _own = desk
    path = lake.model_dir(CLF, runs[CLF].version) / "model.txt"
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n")
        result = assess(lake, registry, cost_config=FREE)
    finally:
        path.write_bytes(original)
    _partition(result)
    reasons = _reasons(result.do_not_trade)
    assert "failed to load" in reasons["SYN000USD"] and "model.txt" in reasons["SYN000USD"]
