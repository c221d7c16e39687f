"""The previous model beside this run's: found in the registry, loaded as serving loads it, scored on the
rows out of sample for both, and named (never a made-up number) when there is none."""

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from clm.data.ingest import CANDLES
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.evaluation.costs import CostConfig
from clm.evaluation.splits import SplitConfig
from clm.features import FeatureConfig, compute_features, select_features
from clm.features.store import FEATURES
from clm.labels import LabelConfig, build_labels
from clm.labels.store import LABELS
from clm.lake import Lake
from clm.policy import Costs, Policy, policy_yaml
from clm.regimes import classify_regimes
from clm.regimes.store import REGIMES
from clm.registry import Status, open_registry
from clm.registry.lineage import artifact_model
from clm.reports import Narrator, build_training_report
from clm.training import TrainingConfig
from clm.training.evaluate import evaluate_engines
from clm.training.previous import previous_model, previous_predictions, trained_until
from clm.training.store import (
    COSTS,
    EVALUATION,
    EVALUATION_DETAIL,
    EVALUATION_PREVIOUS_MODEL,
    OOS_PREDICTIONS,
    evaluate_stored,
    register_run,
    train_engine,
)

CLF, REG = "lightgbm_classifier", "lightgbm_regressor"
FAST = {"n_estimators": 30, "num_leaves": 8, "early_stopping_rounds": 10, "num_threads": 1}
CONFIG = TrainingConfig(horizon=12, split=SplitConfig(n_folds=3, embargo_bars=12))
TF = 300


def build_lake(root) -> tuple[Lake, pl.DataFrame]:
    candles = validate_bars(SyntheticSource(SyntheticConfig(symbols=3, days=8, seed=5)).load().bars).candles
    selection = select_features(FeatureConfig(sets=("core31", "ta")), candles["symbol"].unique().to_list(), TF)
    features = compute_features(candles, selection, timeframe_seconds=TF)
    labels = build_labels(candles.join(features.select("symbol", "timestamp", "atr_14"), on=["symbol", "timestamp"]),
                          LabelConfig(horizons=(1, 12)))
    regimes = classify_regimes(candles, timeframe_seconds=TF)
    lake = Lake(root)
    day = pl.col("timestamp").dt.date().alias("date")
    for table, frame in ((CANDLES, candles), (FEATURES, features), (LABELS, labels), (REGIMES, regimes)):
        lake.write_table(table, frame.with_columns(day), ["date"])
    return lake, candles


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    lake, candles = build_lake(tmp_path_factory.mktemp("previous") / "lake")
    return lake, candles, train_engine(lake, REG, FAST, CONFIG)


# ------------------------------------------------------------------------------------------------
# evaluate_engines: a previous model's predictions become one more strategy, on its rows only
# ------------------------------------------------------------------------------------------------


FREE = CostConfig(taker_fee_bps=0.0, slippage_bps=0.0, impact_coefficient=0.0, default_half_spread_bps=0.0,
                  funding=False)


def _previous(predictions: pl.DataFrame, since: dt.datetime, sign: float, edge_bps: float = 200.0) -> pl.DataFrame:
    """A stand-in previous model that knows the next bar's return (sign +1) or gets it exactly wrong (-1),
    from ``since``, expecting ``edge_bps`` from each trade."""
    rows = predictions.filter(pl.col("timestamp") >= since)
    direction = pl.col("return_1").sign() * sign
    return rows.select("engine", "symbol", "timestamp", (direction * 0.5).alias("signal"),
                       (direction * edge_bps).alias("expected_edge_bps"))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_better_or_worse_previous_model_is_scored_on_its_rows_only(market, sign):
    _lake, candles, run = market
    predictions = run.run.predictions
    stamps = predictions["timestamp"].unique().sort()
    since = stamps[len(stamps) * 2 // 3]  # the first two thirds are in sample for it
    previous = _previous(predictions, since, sign)
    evaluation = evaluate_engines(predictions, candles, timeframe_seconds=TF, horizon=12, previous=previous,
                                  cost_config=FREE)  # the one-bar oracle cannot beat real costs on 5-minute bars
    eligible = predictions.filter(pl.col("timestamp") >= since)

    overall = evaluation.overall.row(0, named=True)
    assert overall["n_rows"] == predictions.height and overall["previous_model_rows"] == eligible.height
    # simulated over the eligible bars only: one portfolio period per eligible timestamp
    assert overall["previous_model_n_periods"] == eligible["timestamp"].n_unique()
    assert overall["model_n_periods"] == predictions["timestamp"].n_unique()
    assert (overall["previous_model_total_return"] > 0) == (sign > 0)

    (row,) = evaluation.previous_model.to_dicts()
    assert row["rows_compared"] == eligible.height and row["compared_from"] == since
    hits = eligible.join(previous, on=["engine", "symbol", "timestamp"]).filter(pl.col("target_return") != 0)
    expected = (hits["signal_right"].sign() == hits["target_return"].sign()).mean()
    assert row["previous_model_directional_accuracy"] == pytest.approx(expected)
    assert (row["previous_model_total_return"] > row["model_total_return"]) == (sign > 0)
    assert (row["previous_model_sharpe"] > 0) == (sign > 0) and row["previous_model_n_trades"] > 0
    assert row["previous_model_total_return"] == pytest.approx(overall["previous_model_total_return"])
    # the current model's numbers in the comparison are its own on exactly those rows
    alone = evaluate_engines(predictions, candles, timeframe_seconds=TF, horizon=12, cost_config=FREE).overall
    assert row["model_directional_accuracy"] != pytest.approx(alone["directional_accuracy"].item())
    hits = eligible.filter(pl.col("target_return") != 0)
    expected = (hits["signal"].sign() == hits["target_return"].sign()).mean()
    assert row["model_directional_accuracy"] == pytest.approx(expected)

    # a fold entirely before ``since`` is not scored for the previous model: null, with 0 rows
    detail = evaluation.detail
    early = detail.filter(pl.col("fold") == 0)
    assert early["previous_model_rows"].to_list() == [0] * early.height
    assert early["previous_model_sharpe"].is_null().all()
    late = detail.filter(pl.col("previous_model_rows") > 0)
    assert late["previous_model_rows"].sum() == eligible.height and late["previous_model_sharpe"].is_not_null().any()


def test_the_previous_model_trades_only_where_its_expected_edge_clears_the_costs(market):
    _lake, candles, run = market
    predictions = run.run.predictions
    since = predictions["timestamp"].median()
    for edge, trades in ((1.0, False), (200.0, True)):  # 1 bps is below the round-trip cost of every bar
        previous = _previous(predictions, since, 1.0, edge_bps=edge)
        (row,) = evaluate_engines(predictions, candles, timeframe_seconds=TF, horizon=12,
                                  previous=previous).previous_model.to_dicts()
        assert row["rows_compared"] == previous.height
        assert (row["previous_model_n_trades"] > 0) == trades and (row["previous_model_exposure"] > 0) == trades


def test_without_previous_predictions_nothing_is_made_up(market):
    _lake, candles, run = market
    empty = _previous(run.run.predictions, dt.datetime(2100, 1, 1, tzinfo=dt.UTC), 1.0)
    evaluation = evaluate_engines(run.run.predictions, candles, timeframe_seconds=TF, horizon=12, previous=empty)
    overall = evaluation.overall.row(0, named=True)
    assert overall["previous_model_rows"] == 0 and overall["previous_model_sharpe"] is None
    (row,) = evaluation.previous_model.to_dicts()
    assert row["rows_compared"] == 0 and row["previous_model_sharpe"] is None and row["model_sharpe"] is None
    plain = evaluate_engines(run.run.predictions, candles, timeframe_seconds=TF, horizon=12)
    assert plain.previous_model is None and "previous_model_sharpe" not in plain.overall.columns


# ------------------------------------------------------------------------------------------------
# the registry's previous model, loaded and scored where it is out of sample
# ------------------------------------------------------------------------------------------------


def test_the_champion_at_registration_predicts_the_rows_out_of_sample_for_it(tmp_path):
    lake, _candles = build_lake(tmp_path / "lake")
    registry = open_registry(lake)
    run = train_engine(lake, CLF, FAST, CONFIG)
    (first,) = register_run(registry, run)
    assert first.status == Status.ACTIVE
    own = run.run.predictions.filter(pl.col("fold") == run.run.predictions["fold"].max())  # its saved model's

    alone = evaluate_stored(lake, horizon=12, registry=registry)
    (row,) = alone.previous_model.to_dicts()
    assert row["model_id"] == first.model_id and row["previous_model_id"] is None and row["rows_compared"] == 0
    assert "no previous model" in row["previous_model_note"] and "first model" in row["previous_model_note"]
    assert alone.overall["previous_model_sharpe"].is_null().all()
    assert lake.read(EVALUATION_PREVIOUS_MODEL)["previous_model_note"].to_list() == [row["previous_model_note"]]

    (second,) = register_run(registry, train_engine(lake, CLF, {**FAST, "num_leaves": 4}, CONFIG))
    assert second.status == Status.SHADOW and previous_model(registry, second).model_id == first.model_id
    evaluation = evaluate_stored(lake, horizon=12, registry=registry)
    predictions = lake.read(OOS_PREDICTIONS)
    until = trained_until(first)
    eligible = predictions.filter(pl.col("timestamp") >= until)
    assert 0 < eligible.height < predictions.height  # the earlier test rows were in its training window
    (row,) = evaluation.previous_model.to_dicts()
    assert (row["model_id"], row["previous_model_id"]) == (second.model_id, first.model_id)
    assert row["rows_compared"] == eligible.height and row["previous_model_note"] is None
    assert row["compared_from"] >= until and row["previous_trained_until"] == until
    for column in ("previous_model_directional_accuracy", "previous_model_ic", "previous_model_total_return"):
        assert row[column] is not None and np.isfinite(row[column]), column
    assert row["previous_model_n_trades"] is not None  # simulated (a Sharpe is NaN where it never trades)
    stored = lake.read(EVALUATION).row(0, named=True)
    assert stored["previous_model_id"] == first.model_id and stored["previous_model_rows"] == eligible.height
    assert lake.read(EVALUATION_DETAIL)["previous_model_rows"].sum() == eligible.height
    assert lake.read(EVALUATION_PREVIOUS_MODEL).height == 1
    # the training report shows the pair on the same rows
    report = build_training_report(lake, "previous", narrator=Narrator(environ={}))
    section = report.markdown.split("## Against the previous model (same rows, out of sample for both)")[1]
    assert f"| {CLF} | {first.model_id} |" in section.split("##")[0]
    assert f"| {eligible.height:,} |" in section.split("##")[0]
    assert report.metrics["previous_model"][CLF]["rows_compared"] == eligible.height

    # loaded from the registry, the previous model predicts its own last test fold exactly as walk-forward did
    previous = previous_predictions(lake, registry, predictions, horizon=12, timeframe_seconds=TF).predictions
    assert previous.height == eligible.height and previous["timestamp"].min() >= until
    again = own.join(previous, on=["symbol", "timestamp"], suffix="_again")
    assert again.height == own.height > 0
    assert again["prediction"].to_list() == again["prediction_again"].to_list()
    assert (again["signal"].sign() == again["signal_again"].sign()).all()
    assert previous["probability"].equals(previous["prediction"].alias("probability"))  # a classifier's P(up)

    # promoting the challenger does not change which model it was registered against
    registry.promote(second.model_id)
    assert previous_model(registry, registry.get(second.model_id)).model_id == first.model_id
    assert previous_model(registry, registry.get(first.model_id)) is None


def test_a_previous_model_trained_past_every_row_is_named_not_scored(tmp_path, market):
    lake, _candles, run = market
    registry = open_registry(Lake(tmp_path / "registry-lake"))
    late = artifact_model(
        model_type=REG, version="0" * 64, scope="pooled", horizon=12, folder=run.path,
        training_window=("2024-01-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00"),
        feature_version=run.feature_version, feature_count=len(run.run.features), label_config={"horizon": 12},
        data_hash="test", seeds={}, config={})
    champion = registry.register(late)
    (mine,) = register_run(registry, run)
    assert champion.status == Status.ACTIVE and mine.status == Status.SHADOW
    result = previous_predictions(lake, registry, lake.read(OOS_PREDICTIONS), horizon=12, timeframe_seconds=TF)
    assert result.predictions.is_empty()
    (row,) = result.models.to_dicts()
    assert row["previous_model_id"] == champion.model_id
    assert "is out of sample for" in row["previous_model_note"] and "2030-01-01" in row["previous_model_note"]
    json.dumps(row, default=str)


# ------------------------------------------------------------------------------------------------
# the assets: train twice, the second time challengers, and the evaluation carries the comparison
# ------------------------------------------------------------------------------------------------


def test_the_evaluation_asset_compares_challengers_with_their_champions(tmp_path, monkeypatch):
    import dagster as dg

    from assets.training import ENGINES, evaluation, model_assets
    from resources import LakeResource, RegistryResource

    assert sorted(ENGINES) == [CLF, REG]  # tests/conftest.py: CLM_ENGINES
    lake, _candles = build_lake(tmp_path / "lake")
    resource = LakeResource(root=str(lake.root))
    instance = dg.DagsterInstance.ephemeral()
    policy = tmp_path / "policy.yaml"
    monkeypatch.setenv("CLM_POLICY", str(policy))

    def materialize(options: dict, costs: dict | None = None):
        policy.write_text(policy_yaml(Policy(costs=Costs(**costs)) if costs else Policy()))  # read by the run
        config = {"n_folds": 3, "engine_options": json.dumps(options)}
        result = dg.materialize([*model_assets, evaluation], instance=instance,
                                resources={"lake": resource, "registry": RegistryResource(lake=resource)},
                                run_config={"ops": {name: {"config": config} for name in
                                                    [f"model_{e}" for e in ENGINES] + ["evaluation"]}})
        assert result.success
        (event,) = result.asset_materializations_for_node("evaluation")
        return event.metadata

    # the policy's costs: the synthetic SYN000USD... are USD-quoted; 7.5 bps taker fee per fill
    first = materialize(FAST, {"notional_by_quote": {"usd": 2500}, "taker_fee_bps": 7.5})
    assert first["notional_by_quote"].value == {"USD": [2500.0]}
    assert first["cost_config"].value["taker_fee_bps"] == 7.5
    assert first["cost_config"].value["notional_by_quote"]["USD"] == 2500.0
    costs = lake.read(COSTS)
    assert costs["notional"].unique().to_list() == [2500.0] and costs["fee_bps"].unique().to_list() == [15.0]
    recorded = lake.read(EVALUATION)["cost_config"].unique().to_list()
    assert len(recorded) == 1 and json.loads(recorded[0]) == first["cost_config"].value
    models = open_registry(lake).list_models()  # the models' metrics say which costs their net numbers assume
    assert len(models) == 2 and all(r.metrics["cost_config"]["taker_fee_bps"] == 7.5 for r in models)
    table = first["previous_model"].value
    assert table.startswith("| engine | model_id | previous_model_id | rows_compared |")
    assert table.count("no previous model") == 2 and first["previous_model_rows"].value == {CLF: 0, REG: 0}
    assert lake.read(EVALUATION)["previous_model_id"].is_null().all()

    second = materialize({**FAST, "num_leaves": 4})  # the default policy
    assert lake.read(COSTS)["notional"].unique().to_list() == [10_000.0]  # the default USD notional again
    assert lake.read(COSTS)["fee_bps"].unique().to_list() == [10.0] and second["cost_config"].value == \
        CostConfig().as_dict()
    registry = open_registry(lake)
    champions = {r.model_type: r.model_id for r in registry.list_models(status=Status.ACTIVE)}
    shadows = {r.model_type: r.model_id for r in registry.list_models(status=Status.SHADOW)}
    assert sorted(shadows) == [CLF, REG]
    compared = lake.read(EVALUATION_PREVIOUS_MODEL).sort("engine")
    assert compared["model_id"].to_list() == [shadows[CLF], shadows[REG]]
    assert compared["previous_model_id"].to_list() == [champions[CLF], champions[REG]]
    assert (compared["rows_compared"] > 0).all() and compared["previous_model_note"].is_null().all()
    assert second["previous_model_rows"].value == dict(zip(compared["engine"], compared["rows_compared"]))
    for engine in (CLF, REG):
        assert f"| {engine} | {shadows[engine]} | {champions[engine]} |" in second["previous_model"].value
    overall = lake.read(EVALUATION).sort("engine")
    assert overall["previous_model_rows"].to_list() == compared["rows_compared"].to_list()
    assert (compared["rows_compared"] < overall["n_rows"]).all()  # the champion's training window is left out
    for row in compared.iter_rows(named=True):
        assert row["compared_from"] >= trained_until(registry.get(row["previous_model_id"]))
    assert overall["previous_model_sharpe"].is_not_null().all() and overall["previous_model_dsr"].is_not_null().all()
    assert "previous_model_sharpe" in lake.read(EVALUATION_DETAIL).columns


def test_a_bad_cost_in_the_policy_fails_the_evaluation_naming_it(tmp_path, monkeypatch):
    import dagster as dg

    from assets.training import TrainingAssetConfig, evaluation
    from resources import LakeResource, RegistryResource

    assert not {"notional_by_quote", "default_notional"} & set(TrainingAssetConfig.model_fields)  # one way: policy
    policy = tmp_path / "policy.yaml"
    policy.write_text("costs:\n  notional_by_quote:\n    BTC: 0\n")
    monkeypatch.setenv("CLM_POLICY", str(policy))
    resource = LakeResource(root=str(tmp_path / "lake"))
    result = dg.materialize([evaluation], resources={"lake": resource, "registry": RegistryResource(lake=resource)},
                            raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert str(policy) in message
    assert "costs.notional_by_quote: notional_by_quote['BTC'] must be a finite number > 0" in message
