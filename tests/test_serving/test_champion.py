"""Champion: one-call verified load, predictions equal to the engines' own, halts, errors, promotion."""

import json
import math

import numpy as np
import polars as pl
import pytest

from clm.evaluation.costs import CostConfig
from clm.features.store import FEATURES
from clm.models.artifacts import ArtifactError
from clm.registry import POOLED, ModelKey, open_registry
from clm.serving import Champion, MissingFeatures, NoActiveModel, Prediction, ServingError, TradingHalted, assess

from .conftest import register, register_gate, train

REG, CLF = "lightgbm_regressor", "lightgbm_classifier"


@pytest.fixture(scope="module")
def rows(market):
    lake, _registry, _runs = market
    return lake.read(FEATURES).filter(pl.col("warm")).sort("symbol", "timestamp").drop("date", "version")


def test_load_picks_the_active_models_and_the_best_primary(market):
    lake, registry, runs = market
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    assert champion.names == (CLF, REG)
    assert champion.primary.name == REG  # the higher net Sharpe
    assert champion.model_id == registry.active(ModelKey(REG, POOLED, 12)).model_id
    assert champion.gate is None
    scale = runs[REG].run.predictions.filter(pl.col("fold") == 1)["prediction"].std()
    assert champion.primary.signal_scale == pytest.approx(scale, rel=1e-12)  # the last fold's spread


def test_dict_and_frame_predictions_equal_the_engines_own(market, rows):
    lake, registry, _runs = market
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    sample = pl.concat([rows.filter(pl.col("symbol") == s).tail(7) for s in rows["symbol"].unique().sort()])
    sample = sample.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("rsi_14"))
                                 .alias("rsi_14"))  # a missing value is a missing value on both paths
    own = {m.name: m.engine.predict(sample) for m in champion.models}
    frame = champion.predict(sample)
    assert frame.columns == ["symbol", "timestamp", "prediction", "confidence", "consensus", "model_id", "signals",
                             "regime", "action", "voters"]
    np.testing.assert_allclose(frame["prediction"].to_numpy(), own[REG], rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame["signals"].struct.field(CLF).to_numpy(), 2 * own[CLF] - 1, rtol=0, atol=1e-12)
    scale = champion.primary.signal_scale
    np.testing.assert_allclose(frame["signals"].struct.field(REG).to_numpy(), np.tanh(own[REG] / scale), atol=1e-12)
    for i, row in enumerate(sample.iter_rows(named=True)):
        p = champion.predict(row)
        assert isinstance(p, Prediction) and p.symbol == row["symbol"] and p.model_id == champion.model_id
        assert abs(p.prediction - own[REG][i]) <= 1e-12
        assert abs(p.signals[CLF] - (2 * own[CLF][i] - 1)) <= 1e-12
        assert abs(p.consensus - frame["consensus"][i]) <= 1e-12
        assert p.confidence == pytest.approx(abs(p.signals[REG]), abs=1e-12)
        assert p.action == frame["action"][i] and list(p.voters) == frame["voters"][i].to_list()


def test_every_row_of_the_lake_gives_the_engines_own_values(market, rows):
    """Thousands of rows: a 1-ulp difference in the scaling would cross some tree split."""
    lake, registry, _runs = market
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    own = {m.name: m.engine.predict(rows) for m in champion.models}
    frame = champion.predict(rows)
    assert np.array_equal(frame["prediction"].to_numpy(), own[REG])
    assert np.array_equal(frame["signals"].struct.field(CLF).to_numpy(), 2 * own[CLF] - 1)
    dicts = rows.to_dicts()
    assert np.array_equal([champion.predict(d).prediction for d in dicts[::3]], own[REG][::3])


def test_consensus_is_the_reliability_weighted_vote(market, rows):
    lake, registry, _runs = market
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    p = champion.predict(rows.row(-1, named=True))
    r_reg, r_clf = 2 * 0.56 - 1, 2 * 0.54 - 1  # max(0, 2 * accuracy - 1)
    # two engines share one correlation penalty, so it cancels in the normalised weights
    expected = (r_reg * p.signals[REG] + r_clf * p.signals[CLF]) / (r_reg + r_clf)
    assert p.consensus == pytest.approx(expected, abs=1e-12)
    assert set(p.voters) == {REG, CLF}
    assert p.action == ("long" if expected > 0 else "short")
    assert -1 <= p.consensus <= 1


def test_the_regime_gate_decides_who_votes(market, rows, tmp_path):
    lake, _registry, runs = market
    registry = open_registry(lake, f"duckdb:///{tmp_path}/gated.duckdb")
    register(registry, runs[REG], metrics={"model_sharpe": 1.2, "directional_accuracy": 0.56})
    register(registry, runs[CLF], metrics={"model_sharpe": 0.4, "directional_accuracy": 0.54})
    gate = register_gate(lake, registry, {"overall": [CLF], "trend": [REG, CLF], "panic": []}, version="g1")
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    assert champion.gate_record.model_id == gate.model_id
    row = rows.row(-1, named=True)
    unknown = champion.predict(row)  # no regime: the overall set
    assert unknown.voters == (CLF,) and unknown.consensus == pytest.approx(unknown.signals[CLF], abs=1e-15)
    assert unknown.prediction == champion.predict({**row, "regime": "trend"}).prediction  # the primary still answers
    panic = champion.predict({**row, "regime": "panic"})
    assert panic.voters == () and panic.consensus == 0.0 and panic.action == "stand_aside"
    assert set(champion.predict({**row, "regime": "trend"}).voters) == {REG, CLF}
    frame = champion.predict(pl.DataFrame([row, row, row]).with_columns(
        pl.Series("regime", ["panic", None, "trend"])))
    assert frame["voters"].to_list() == [[], [CLF], [CLF, REG]]
    assert frame["action"][0] == "stand_aside"


def test_missing_features_are_named(market, rows):
    lake, registry, _runs = market
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    row = rows.row(-1, named=True)
    with pytest.raises(MissingFeatures, match="rsi_14.*mom_5|mom_5.*rsi_14"):
        champion.predict({k: v for k, v in row.items() if k not in ("rsi_14", "mom_5")})
    with pytest.raises(MissingFeatures, match="rsi_14"):
        champion.predict(rows.tail(3).drop("rsi_14"))
    with pytest.raises(ServingError, match="symbol"):
        champion.predict({k: v for k, v in row.items() if k != "symbol"})  # the pooled champion needs it


def test_symbol_scoped_models_beat_pooled_ones(market, rows, tmp_path):
    lake, _registry, runs = market
    registry = open_registry(lake, f"duckdb:///{tmp_path}/scoped.duckdb")
    pooled = register(registry, runs[REG], metrics={"model_sharpe": 1.2, "directional_accuracy": 0.56})
    register(registry, runs[CLF], metrics={"model_sharpe": 0.4, "directional_accuracy": 0.54})
    own = register(registry, runs[REG], scope="SYN001USD", metrics={"model_sharpe": 0.9})
    mine, other = Champion.load("SYN001USD", 12, lake=lake, registry=registry), Champion.load(
        "SYN000USD", 12, lake=lake, registry=registry)
    assert mine.model_ids == {REG: own.model_id, CLF: other.model_ids[CLF]}
    assert other.model_ids[REG] == pooled.model_id
    row = rows.filter(pl.col("symbol") == "SYN001USD").row(-1, named=True)
    assert mine.predict({k: v for k, v in row.items() if k != "symbol"}).symbol == "SYN001USD"
    with pytest.raises(ServingError, match="SYN000USD"):
        mine.predict({**row, "symbol": "SYN000USD"})


def test_a_tampered_artefact_refuses_to_load(market):
    lake, registry, runs = market
    path = lake.model_dir(CLF, runs[CLF].version) / "model.txt"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"leaf_value=", b"leaf_value=9", 1))
        with pytest.raises(ArtifactError, match=r"model\.txt.*sha256|sha256.*model\.txt") as info:
            Champion.load(None, 12, lake=lake, registry=registry)
        assert registry.active(ModelKey(CLF, POOLED, 12)).model_id in str(info.value)
    finally:
        path.write_bytes(original)
    Champion.load(None, 12, lake=lake, registry=registry)


def test_no_active_model_names_the_key(market):
    lake, registry, _runs = market
    with pytest.raises(NoActiveModel, match=r"horizon 48.*pooled/h48.*clm models list"):
        Champion.load(None, 48, lake=lake, registry=registry)


def test_halt_file_stops_every_prediction(market, rows):
    lake, registry, _runs = market
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    row = rows.row(-1, named=True)
    champion.predict(row)
    lake.halt_path.parent.mkdir(parents=True, exist_ok=True)
    lake.halt_path.write_text(json.dumps({"reason": "CRITICAL drift in rsi_14", "level": "CRITICAL"}))
    try:
        with pytest.raises(TradingHalted, match="CRITICAL drift in rsi_14"):
            champion.predict(row)
        with pytest.raises(TradingHalted, match="CRITICAL drift"):
            champion.predict(rows.tail(2))
    finally:
        lake.halt_path.unlink()
    assert champion.predict(row).model_id == champion.model_id


def test_a_promoted_challenger_becomes_the_champion(market, rows):
    lake, registry, _runs = market
    before = Champion.load(None, 12, lake=lake, registry=registry)
    challenger = register(registry, train(lake, REG, {"num_leaves": 4, "learning_rate": 0.1}),
                          metrics={"model_sharpe": 1.5, "directional_accuracy": 0.57})
    assert challenger.status == "SHADOW"
    assert Champion.load(None, 12, lake=lake, registry=registry).model_id == before.model_id
    registry.promote(challenger.model_id, note="test")
    try:
        after = Champion.load(None, 12, lake=lake, registry=registry)
        assert after.model_id == challenger.model_id != before.model_id
        row = rows.row(-1, named=True)
        assert after.predict(row).prediction == pytest.approx(
            after.primary.engine.predict(pl.DataFrame([row]))[0], abs=1e-12)
    finally:
        registry.rollback(ModelKey(REG, POOLED, 12), note="test done")
    assert Champion.load(None, 12, lake=lake, registry=registry).model_id == before.model_id


def test_sequence_engines_vote_only_with_history(market, rows, tmp_path):
    lake, _registry, runs = market
    registry = open_registry(lake, f"duckdb:///{tmp_path}/seq.duckdb")
    register(registry, runs[REG], metrics={"model_sharpe": 1.2, "directional_accuracy": 0.56})
    nhits = train(lake, "nhits", {"context_length": 16, "max_steps": 10, "val_check_steps": 5,
                                  "windows_batch_size": 16, "device": "cpu", "num_threads": 1})
    register(registry, nhits, metrics={"model_sharpe": 2.0, "directional_accuracy": 0.6})
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    assert champion.primary.name == REG  # tabular answers single rows: preferred despite the Sharpe
    history = rows.filter(pl.col("symbol") == "SYN002USD").tail(40)
    row = champion.predict(history.row(-1, named=True))
    assert row.signals["nhits"] is None and row.voters == (REG,)
    out = champion.predict(pl.concat([history, rows.filter(pl.col("symbol") == "SYN000USD").tail(5)]))
    seq = out["signals"].struct.field("nhits")
    assert seq.null_count() == out.height - 1 and seq[39] is not None  # SYN002USD's last row only
    model = champion.models[champion.names.index("nhits")]
    expected = model.engine.predict(history.tail(model.context_length))[-1]  # one window, as serving runs it
    assert math.tanh(expected / model.signal_scale) == pytest.approx(seq[39], abs=1e-12)
    assert set(out["voters"][39]) == {"nhits", REG}
    # the ranking gives the sequence engine its context too: the same vote as predicting the history
    result = assess(lake, registry, cost_config=CostConfig(min_edge_after_cost_bps=-1e6))
    assert result.ranking.height + result.do_not_trade.height == 4
    for r in result.ranking.iter_rows(named=True):
        mine = rows.filter((pl.col("symbol") == r["symbol"]) & (pl.col("timestamp") <= r["timestamp"]))
        voted = champion.predict(mine.tail(model.context_length).with_columns(pl.lit(r["regime"]).alias("regime")))
        # the ranking forecasts every symbol's window in one float32 batch: equal up to torch's rounding
        assert voted["consensus"][-1] == pytest.approx(r["consensus"], abs=1e-6)
        assert set(voted["voters"][-1]) == {"nhits", REG}
    assert result.ranking.height >= 1 or set(result.do_not_trade["reason"].str.slice(0, 9)) == {"consensus"}


def test_an_engine_without_the_numpy_path_still_serves(market, rows, tmp_path):
    pytest.importorskip("xgboost")
    lake, _registry, _runs = market
    registry = open_registry(lake, f"duckdb:///{tmp_path}/xgb.duckdb")
    stored = train(lake, "xgboost_regressor", {"n_estimators": 20, "max_depth": 3, "nthread": 1})
    register(registry, stored, metrics={"directional_accuracy": 0.55})
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    assert not champion.primary.fast
    sample = rows.tail(4)
    own = champion.primary.engine.predict(sample)
    np.testing.assert_allclose(champion.predict(sample)["prediction"].to_numpy(), own, atol=1e-12)
    assert [champion.predict(r).prediction for r in sample.iter_rows(named=True)] == pytest.approx(own, abs=1e-9)
