"""The shadow tester end to end on a real small lake: LightGBM champions and SHADOW challengers predict every
bar exactly as serving would, outcomes close from the lake's labels and candles, decisions reach the registry
(status_history always; promotions and rejections only with auto_promote)."""

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clm.data import ingest
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.evaluation.splits import SplitConfig
from clm.features import FeatureConfig
from clm.features.store import FEATURES, materialise_features
from clm.labels import LabelConfig
from clm.labels.store import LABELS, materialise_labels
from clm.lake import Lake
from clm.models.artifacts import write_json, write_manifest
from clm.models.base import load_engine
from clm.policy import Policy
from clm.registry import POOLED, DuckDBRegistry, Lineage, ModelKey, NewModel, Status, open_registry
from clm.serving import Champion, TradingHalted
from clm.serving.champion import ServedModel
from clm.shadow import (
    Recommendation,
    ShadowDecision,
    append_results,
    apply_decisions,
    close_outcomes,
    decide,
    expected_edge_bps,
    load_model,
    load_shadow_sets,
    read_open_predictions,
    read_results,
    shadow_predictions,
    write_open_predictions,
)
from clm.training import TrainingConfig
from clm.training.store import train_engine

START = dt.date(2024, 1, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(10)]
TRAINING = TrainingConfig(horizon=12, split=SplitConfig(n_folds=2, embargo_bars=12))
FAST = {"n_estimators": 30, "num_leaves": 8, "early_stopping_rounds": 10, "num_threads": 1}
REG, CLF = "lightgbm_regressor", "lightgbm_classifier"


def register(registry, stored, metrics):
    lineage = Lineage(
        training_window=("2024-01-01", "2024-01-10"), feature_version=stored.feature_version,
        feature_count=len(stored.run.features), label_config={"horizon": 12}, code_version="test",
        data_hash="test", seeds={}, config={}, artifact_checksums=dict(stored.manifest.files),
    )
    return registry.register(NewModel(stored.run.engine, stored.version, POOLED, 12, stored.path, lineage,
                                      metrics=metrics))


def last_fold(stored) -> pl.DataFrame:
    predictions = stored.run.predictions
    return predictions.filter(pl.col("fold") == predictions["fold"].max())


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """A champion and a challenger (different engine settings, so different versions) per engine: the
    champions carry their calibration in the registry metrics, as training registers them; the challengers
    are calibrated from their own last out-of-sample fold, as serving does when the metrics lack it."""
    root = tmp_path_factory.mktemp("shadow") / "lake"
    lake = Lake(root)
    result = ingest.run_ingest(SyntheticSource(SyntheticConfig(symbols=3, days=len(DAYS), seed=5)), "synthetic")
    ingest.write_ingest(lake, result, DAYS[0], DAYS[-1] + dt.timedelta(days=1))
    materialise_features(lake, DAYS, FeatureConfig(sets=("core31", "ta")))
    materialise_labels(lake, DAYS, LabelConfig(horizons=(1, 12)))
    registry = open_registry(lake)
    models = {}
    for engine in (REG, CLF):
        champion = train_engine(lake, engine, FAST, TRAINING)
        metrics = {"signal_scale": float(last_fold(champion)["prediction"].std()),
                   "typical_abs_return": champion.typical_abs_return}
        models[engine] = (register(registry, champion, metrics),)
        challenger = train_engine(lake, engine, {**FAST, "num_leaves": 4}, TRAINING)
        models[engine] += (register(registry, challenger, {}), challenger)
    yield lake, registry, models
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def rows(market):
    lake, _registry, _models = market
    features = lake.read(FEATURES).filter(pl.col("warm")).drop("date", "version")
    last = features["timestamp"].max()
    return features.filter(pl.col("timestamp") > last - dt.timedelta(days=3)).sort("symbol", "timestamp")


def test_each_active_model_is_paired_with_the_shadow_challengers_of_its_key(market):
    lake, registry, models = market
    sets = load_shadow_sets(lake, registry, horizon=12)
    assert {s.champion.model_id: [c.model_id for c in s.challengers] for s in sets} == {
        models[e][0].model_id: [models[e][1].model_id] for e in (REG, CLF)}
    assert all(s.champion.record.status is Status.ACTIVE for s in sets)
    assert all(c.record.status is Status.SHADOW for s in sets for c in s.challengers)
    assert load_shadow_sets(lake, registry, horizon=1) == []


def test_shadow_predictions_are_what_serving_computes(market, rows):
    lake, registry, models = market
    sets = {s.champion.record.model_type: s for s in load_shadow_sets(lake, registry, horizon=12)}
    served = Champion.load(None, 12, lake=lake, registry=registry).predict(rows)
    for engine in (REG, CLF):
        shadow = sets[engine]
        frame = shadow_predictions(rows, shadow.champion, shadow.challengers).sort("symbol", "timestamp")
        assert frame.height == rows.height
        assert frame["champion_id"].unique().to_list() == [models[engine][0].model_id]
        own = load_engine(Path(models[engine][0].file_path)).predict(rows)
        theirs = load_engine(Path(models[engine][2].path)).predict(rows)
        np.testing.assert_array_equal(frame["champion_prediction"].to_numpy(), own)
        np.testing.assert_array_equal(frame["challenger_prediction"].to_numpy(), theirs)
        # the champion's signal is serving's signal for that engine
        np.testing.assert_array_equal(frame["champion_signal"].to_numpy(),
                                      served["signals"].struct.field(engine).to_numpy())
        challenger_served = shadow.challengers[0].served()
        if engine == REG:
            scale = float(last_fold(models[engine][2])["prediction"].std())  # its own last fold, as serving
            assert challenger_served.signal_scale == pytest.approx(scale, rel=1e-12)
            np.testing.assert_allclose(frame["challenger_signal"].to_numpy(), np.tanh(theirs / scale), atol=1e-15)
            np.testing.assert_allclose(frame["challenger_edge_bps"].to_numpy(), theirs * 1e4, rtol=1e-15)
        else:
            move = float(last_fold(models[engine][2])["target_return"].abs().median())
            assert challenger_served.typical_move == pytest.approx(move, rel=1e-12)
            np.testing.assert_allclose(frame["challenger_signal"].to_numpy(), 2 * theirs - 1, atol=1e-15)
            np.testing.assert_allclose(frame["challenger_edge_bps"].to_numpy(), (2 * theirs - 1) * move * 1e4,
                                       rtol=1e-12)
    assert np.array_equal(shadow_predictions(rows, sets[REG].champion, sets[REG].challengers)
                          .sort("symbol", "timestamp")["champion_prediction"].to_numpy(),
                          served["prediction"].to_numpy())  # the regressor is the primary
    since = rows["timestamp"].max() - dt.timedelta(hours=1)
    recent = shadow_predictions(rows, sets[REG].champion, sets[REG].challengers, since=since)
    assert recent.height == rows.filter(pl.col("timestamp") >= since).height
    with pytest.raises(ValueError, match="does not answer"):
        shadow_predictions(rows, sets[REG].champion, sets[CLF].challengers)


def test_a_halt_stops_trading_but_not_the_shadow_test(market, rows):
    from clm.serving import Champion

    lake, registry, _models = market
    shadow = load_shadow_sets(lake, registry, horizon=12)[0]
    before = shadow_predictions(rows.tail(5), shadow.champion, shadow.challengers)
    lake.halt_path.parent.mkdir(parents=True, exist_ok=True)
    lake.halt_path.write_text('{"reason": "CRITICAL drift"}')
    try:
        with pytest.raises(TradingHalted, match="CRITICAL drift"):
            Champion.load(None, 12, lake=lake, registry=registry).predict(rows.tail(5))
        # the challenger that could end the halt is still judged, on the same predictions
        during = shadow_predictions(rows.tail(5), shadow.champion, shadow.challengers)
        assert during.drop("predicted_at").equals(before.drop("predicted_at"))
    finally:
        lake.halt_path.unlink()


def test_from_bars_to_recorded_decisions(market, rows, tmp_path):
    lake, registry, models = market
    shadow = {s.champion.record.model_type: s for s in load_shadow_sets(lake, registry, horizon=12)}[REG]
    frame = shadow_predictions(rows, shadow.champion, shadow.challengers)
    write_open_predictions(lake, frame)
    write_open_predictions(lake, frame)  # the next run sees the same bars again: nothing doubles
    open_rows = read_open_predictions(lake)
    assert open_rows.height == frame.height
    labels, candles = lake.read(LABELS), lake.read("candles")
    closed = close_outcomes(open_rows, labels, candles)
    # every bar with a closed 12-bar label closes; the newest 13 bars of each symbol are still open
    assert 0 < closed.height < open_rows.height
    newest = candles["timestamp"].max()
    assert closed["timestamp"].max() <= newest - dt.timedelta(minutes=5 * 13)
    log = open_registry(lake, f"duckdb:///{tmp_path}/results.duckdb")
    for record in (models[REG][0], models[REG][1]):  # the same models in a registry of their own
        log.register(NewModel(record.model_type, record.version, record.scope, record.horizon, record.file_path,
                              record.lineage, metrics=dict(record.metrics)))
    append_results(log, closed)
    assert close_outcomes(open_rows, labels, candles, already_closed=read_results(log)).is_empty()
    (decision,) = decide(read_results(log), Policy())
    assert decision.recommendation is Recommendation.CONTINUE_TESTING  # a few hundred bars, not 1,000
    assert decision.champion_id == models[REG][0].model_id and decision.challenger_id == models[REG][1].model_id
    (applied,) = apply_decisions(log, [decision], Policy(auto_promote=True), actor="shadow")
    assert applied.action == "recorded"
    change = log.history(decision.challenger_id)[-1]
    assert change.reason.startswith("shadow test: CONTINUE_TESTING") and change.evidence["n"] == decision.n
    assert log.get(decision.challenger_id).status is Status.SHADOW


# ---- acting on decisions: a registry of real artefact folders -------------------------------------------
def make_model(root: Path, n: int) -> NewModel:
    version = f"{n:012d}" + "e" * 52
    folder = root / "models" / "lgbm" / version
    write_json(folder, "model.json", {"n": n})
    manifest = write_manifest(folder, ["model.json"], engine="lgbm")
    lineage = Lineage(("2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"), "fv", 3, {"horizon": 12},
                      "git:abc", "d" * 64, {"seed": n}, {}, manifest.files)
    return NewModel("lgbm", version, POOLED, 12, str(folder), lineage)


def simulated_decision(champion_id: str, challenger_id: str, challenger_bps: float) -> ShadowDecision:
    rng = np.random.default_rng(3)
    n = 1000
    champion = 2e-4 + 25e-4 * rng.normal(size=n)
    challenger = champion + (challenger_bps - 2) * 1e-4 + 15e-4 * rng.normal(size=n)
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    closed = pl.DataFrame({
        "champion_id": [champion_id] * n, "challenger_id": [challenger_id] * n, "symbol": ["X"] * n,
        "timestamp": [start + dt.timedelta(minutes=5 * i) for i in range(n)], "horizon": [12] * n,
        "champion_signal": [1.0] * n, "challenger_signal": [1.0] * n,
        "champion_net_return": champion, "challenger_net_return": challenger,
    })
    return decide(closed, Policy())[0]


@pytest.fixture
def registry(tmp_path):
    return DuckDBRegistry(tmp_path / "lake" / "registry" / "registry.duckdb", artifact_root=tmp_path / "lake" / "models")


def test_without_auto_promote_a_promote_is_only_recorded(registry, tmp_path):
    champion = registry.register(make_model(tmp_path / "lake", 1))
    challenger = registry.register(make_model(tmp_path / "lake", 2))
    decision = simulated_decision(champion.model_id, challenger.model_id, 8.0)
    assert decision.recommendation is Recommendation.PROMOTE
    (applied,) = apply_decisions(registry, [decision], Policy(auto_promote=False), actor="shadow")
    assert applied.action == "recorded" and applied.record is None
    assert registry.get(challenger.model_id).status is Status.SHADOW
    assert registry.active(ModelKey("lgbm", POOLED, 12)).model_id == champion.model_id
    row = registry.history(challenger.model_id)[-1]
    assert row == applied.history and row.from_status == row.to_status == Status.SHADOW
    assert row.reason.startswith("shadow test: PROMOTE: better net of costs")
    for key in ("n", "mean_difference", "ci", "p_value", "p_value_holm", "improvement_pct",
                "challenger_max_drawdown_pct"):
        assert row.evidence[key] == decision.evidence()[key]


def test_with_auto_promote_the_registry_follows_the_recommendation(registry, tmp_path):
    champion = registry.register(make_model(tmp_path / "lake", 1))
    better = registry.register(make_model(tmp_path / "lake", 2))
    worse = registry.register(make_model(tmp_path / "lake", 3))
    decisions = [simulated_decision(champion.model_id, better.model_id, 8.0),
                 simulated_decision(champion.model_id, worse.model_id, -6.0)]
    assert [d.recommendation for d in decisions] == [Recommendation.PROMOTE, Recommendation.REJECT]
    applied = apply_decisions(registry, decisions, Policy(auto_promote=True), actor="shadow")
    assert [a.action for a in applied] == ["promoted", "rejected"]
    assert registry.get(better.model_id).status is Status.ACTIVE
    assert registry.get(champion.model_id).status is Status.RETIRED
    assert registry.get(worse.model_id).status is Status.REJECTED
    decision_row, promotion = registry.history(better.model_id)[-2:]
    assert decision_row.to_status is Status.SHADOW and decision_row.reason.startswith("shadow test: PROMOTE")
    assert promotion.to_status is Status.ACTIVE and promotion.evidence["p_value"] == decisions[0].p_value
    assert registry.history(worse.model_id)[-1].evidence["ci"] == list(decisions[1].ci)
    # the same decisions again: the registry has moved on, nothing more happens beyond the record
    again = apply_decisions(registry, decisions, Policy(auto_promote=True), actor="shadow")
    assert [a.action.split(":")[0] for a in again] == ["skipped", "skipped"]
    assert registry.get(better.model_id).status is Status.ACTIVE


def test_a_promote_against_a_champion_no_longer_active_is_skipped(registry, tmp_path):
    champion = registry.register(make_model(tmp_path / "lake", 1))
    challenger = registry.register(make_model(tmp_path / "lake", 2))
    newer = registry.register(make_model(tmp_path / "lake", 3))
    decision = simulated_decision(champion.model_id, challenger.model_id, 8.0)
    registry.promote(newer.model_id)  # promoted by hand meanwhile
    (applied,) = apply_decisions(registry, [decision], Policy(auto_promote=True))
    assert applied.action.startswith("skipped: the champion tested against")
    assert registry.get(challenger.model_id).status is Status.SHADOW


def test_expected_edge_follows_the_engine_kind():
    values = np.array([0.7, 0.5, 0.2])
    classifier = ServedModel(record=None, engine=None, kind="probability", sequence=False, context_length=0,
                             accuracy=None, weight=0.0, typical_move=0.002)
    assert expected_edge_bps(classifier, values) == pytest.approx([8.0, 0.0, -12.0])
    unknown = ServedModel(record=None, engine=None, kind="probability", sequence=False, context_length=0,
                          accuracy=None, weight=0.0)
    assert np.isnan(expected_edge_bps(unknown, values)).all()
    regressor = ServedModel(record=None, engine=None, kind="return", sequence=False, context_length=0,
                            accuracy=None, weight=0.0, signal_scale=0.01)
    assert expected_edge_bps(regressor, np.array([0.001, -0.002])) == pytest.approx([10.0, -20.0])


def test_the_supervisor_checks_an_active_model_on_the_same_machinery(market, rows, tmp_path):
    from clm.supervision import Health, check_model, log_health

    lake, registry, models = market
    model = load_model(lake, registry, models[REG][0].model_id)
    assert model.kind == "return" and load_model(lake, registry, models[CLF][0].model_id).kind == "probability"
    labels, candles = lake.read(LABELS), lake.read("candles")
    report = check_model(model, rows, labels, candles, Policy(), n_latency=50, measured_at=dt.datetime(
        2024, 2, 1, tzinfo=dt.UTC))
    assert report.model_id == models[REG][0].model_id and report.model_type == REG and report.kind == "return"
    assert report.n_bars == rows.height and report.coverage == 1.0
    assert report.latency_p50_ms is not None and 0 < report.latency_p50_ms < 50  # microseconds, in fact
    assert report.calibration_error is not None and report.n_predictions > 0
    assert report.health in tuple(Health), report
    # without a cost_config the check costs trades with the policy's `costs`: an edge floor far below zero
    # takes every answered signal
    from clm.policy import Costs

    eager = check_model(model, rows, labels, candles, Policy(costs=Costs(min_edge_after_cost_bps=-1e6)), n_latency=5)
    assert eager.n_signals > report.n_signals
    log = open_registry(lake, f"duckdb:///{tmp_path}/logs.duckdb")
    log_id, path = log_health(log, lake, report)
    assert log.rows("model_performance_logs")[0]["log_id"] == log_id
    assert (path is None) == (report.health is Health.HEALTHY)


def test_the_shadow_test_asset_costs_outcomes_with_the_policy(market, tmp_path, monkeypatch):
    """The asset takes its costs from policy.yaml `costs` (as the evaluation does), not CostConfig()'s defaults:
    its net returns are those of the policy's costs, and the decision's evidence names them."""
    import dagster as dg

    from assets.monitoring import shadow_test
    from clm.evaluation.costs import CostConfig
    from clm.policy import Costs, policy_yaml
    from resources import LakeResource, RegistryResource

    lake, _registry, models = market
    copy = Lake(tmp_path / "lake")  # the market's lake with a registry of its own: the other tests' stay untouched
    shutil.copytree(lake.root, copy.root, ignore=shutil.ignore_patterns("registry", "shadow_predictions", "signals",
                                                                        "active_policy.yaml"))
    mine = open_registry(copy)
    for record in models[REG][:2]:  # the champion (ACTIVE, first of its key), then its challenger (SHADOW)
        lineage = dataclasses.replace(record.lineage, training_window=("2024-01-01T00:00:00+00:00",
                                                                       "2024-01-09T00:00:00+00:00"))
        mine.register(NewModel(record.model_type, record.version, record.scope, record.horizon,
                               record.file_path.replace(str(lake.root), str(copy.root)), lineage,
                               metrics=dict(record.metrics)))
    # cheap fills, a big USD trade (impact) and a negative edge floor: trades the defaults would not take
    costs = Costs(taker_fee_bps=0.5, slippage_bps=0.0, min_edge_after_cost_bps=-50.0,
                  notional_by_quote={"USD": 250_000.0})
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(Policy(costs=costs)))
    monkeypatch.setenv("CLM_POLICY", str(policy))
    resource = LakeResource(root=str(copy.root))
    result = dg.materialize([shadow_test], resources={"lake": resource, "registry": RegistryResource(lake=resource)})
    assert result.success
    (event,) = result.asset_materializations_for_node("shadow_test")
    assert event.metadata["cost_config"].value == costs.cost_config().as_dict()

    results = read_results(mine)
    assert results.height > 100
    labels, candles = copy.read(LABELS), copy.read("candles")
    key = ["champion_id", "challenger_id", "symbol", "timestamp"]
    nets = ["champion_signal", "challenger_signal", "champion_net_return", "challenger_net_return"]

    def closed_with(config: CostConfig) -> pl.DataFrame:
        closed = close_outcomes(read_open_predictions(copy), labels, candles, horizon=12, cost_config=config)
        return results.select(key).join(closed.select(*key, *nets), on=key, how="left")

    want, default = closed_with(costs.cost_config()), closed_with(CostConfig())
    for column in nets:
        assert results[column].to_numpy() == pytest.approx(want[column].to_numpy(), rel=1e-9, abs=1e-12)
    traded = results["champion_signal"] != 0
    assert traded.sum() > 100 and (default["champion_signal"] != 0).sum() < traded.sum()
    assert not np.allclose(results["champion_net_return"].to_numpy(), default["champion_net_return"].to_numpy())
    (change,) = [c for c in mine.history(models[REG][1].model_id) if c.reason.startswith("shadow test:")]
    assert change.evidence["cost_config"] == costs.cost_config().as_dict()
