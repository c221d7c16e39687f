"""Walk-forward training: out-of-sample only, scaler fitted on the training fold, honest under noise."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.evaluation.metrics import directional_accuracy
from clm.evaluation.splits import SplitConfig
from clm.features import FeatureConfig, compute_features, select_features
from clm.labels import LabelConfig, build_labels
from clm.regimes import classify_regimes
from clm.training import TrainingConfig, training_frame, walk_forward
from clm.training import runs as walk_forward_module

FAST = {"n_estimators": 40, "num_leaves": 8, "early_stopping_rounds": 10, "num_threads": 1}
CONFIG = TrainingConfig(horizon=12, split=SplitConfig(n_folds=3, embargo_bars=12))


@pytest.fixture(scope="module")
def frame():
    candles = validate_bars(SyntheticSource(SyntheticConfig(symbols=3, days=12, seed=5)).load().bars).candles
    selection = select_features(FeatureConfig(sets=("core31", "ta")), candles["symbol"].unique().to_list(), 300)
    features = compute_features(candles, selection, timeframe_seconds=300)
    labels = build_labels(candles.join(features.select("symbol", "timestamp", "atr_14"), on=["symbol", "timestamp"]),
                          LabelConfig(horizons=(1, 12)))
    regimes = classify_regimes(candles, timeframe_seconds=300)
    return training_frame(features, labels, regimes, CONFIG)


def test_predictions_are_out_of_sample_and_complete(frame):
    run = walk_forward(frame, "lightgbm_classifier", FAST, CONFIG, timeframe_seconds=300)
    audit = run.audit
    assert run.predictions.height == audit["rows_test"].sum() > 0
    for row in audit.iter_rows(named=True):
        fold = run.predictions.filter(pl.col("fold") == row["fold"])
        assert fold["timestamp"].min() >= row["test_start"] and fold["timestamp"].max() < row["test_end"]
    assert run.predictions["signal"].is_between(-1, 1).all()
    assert set(run.predictions["regime"].drop_nulls().unique()) <= {"trend", "range", "panic", "illiquid"}


def test_scaler_sees_only_the_training_fold(frame, monkeypatch):
    seen = []
    original = walk_forward_module.fit_scaler

    def spy(rows, columns, *, train_end, method):
        seen.append((rows["timestamp"].max(), train_end, rows["split"].unique().to_list()))
        return original(rows, columns, train_end=train_end, method=method)

    monkeypatch.setattr(walk_forward_module, "fit_scaler", spy)
    run = walk_forward(frame, "lightgbm_regressor", FAST, CONFIG, timeframe_seconds=300)
    assert len(seen) == len(run.reports) == 3
    for last, train_end, splits in seen:
        assert splits == ["train"] and last < train_end


def test_shuffled_labels_give_no_edge(frame):
    rng = np.random.default_rng(0)
    shuffled = frame.with_columns(pl.Series(CONFIG.target, rng.permutation(frame[CONFIG.target].to_numpy())))
    run = walk_forward(shuffled, "lightgbm_classifier", FAST, CONFIG, timeframe_seconds=300)
    accuracy = directional_accuracy(run.predictions["signal"], run.predictions["target_return"])
    assert abs(accuracy - 0.5) <= 0.03


def test_bad_input_fails_before_training(frame, monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("training started")

    monkeypatch.setattr(walk_forward_module, "make_folds", boom)
    with pytest.raises(ValueError, match="mom_5"):
        walk_forward(frame.drop("mom_5"), "lightgbm_classifier", FAST, CONFIG, timeframe_seconds=300,
                     features=["mom_5", "rsi_14"])
    with pytest.raises(ValueError, match="num_leaves"):
        walk_forward(frame, "lightgbm_classifier", {"num_leaves": 0}, CONFIG, timeframe_seconds=300)
    with pytest.raises(ValueError, match="unknown engine"):
        walk_forward(frame, "astrology", None, CONFIG, timeframe_seconds=300)
    with pytest.raises(ValueError, match="horizon"):
        TrainingConfig(horizon=0)


def test_training_frame_needs_the_horizon_labels(frame):
    labels = pl.DataFrame({"symbol": ["A"], "timestamp": [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]})
    with pytest.raises(ValueError, match="forward_return_12"):
        training_frame(frame.head(1).with_columns(pl.lit(True).alias("warm")), labels, None, CONFIG)


def test_evaluation_puts_every_metric_beside_the_baselines(frame):
    from clm.training.evaluate import evaluate_engines

    candles = validate_bars(SyntheticSource(SyntheticConfig(symbols=3, days=12, seed=5)).load().bars).candles
    runs = [walk_forward(frame, e, FAST, CONFIG, timeframe_seconds=300)
            for e in ("lightgbm_classifier", "lightgbm_regressor")]
    evaluation = evaluate_engines(pl.concat([r.predictions for r in runs]), candles, timeframe_seconds=300, horizon=12)
    overall = evaluation.overall
    assert overall["engine"].to_list() == ["lightgbm_classifier", "lightgbm_regressor"]
    for column in ("rmse", "mae", "r2", "accuracy", "precision", "recall", "f1", "directional_accuracy", "ic",
                   "rank_ic", "model_sharpe", "model_sortino", "model_max_drawdown", "model_hit_rate",
                   "model_profit_factor", "model_turnover", "model_capacity", "model_dsr",
                   "baseline_flat_sharpe", "baseline_buy_and_hold_sharpe", "baseline_momentum_sign_sharpe"):
        assert column in overall.columns, column
    classifier = overall.filter(pl.col("engine") == "lightgbm_classifier")
    regressor = overall.filter(pl.col("engine") == "lightgbm_regressor")
    assert classifier["ece"].is_not_null().all() and classifier["rmse"].is_null().all()
    assert regressor["rmse"].is_not_null().all()
    # the deflated Sharpe is a probability wherever a strategy traded (per-period Sharpes across trials)
    for column in ("model_dsr", "baseline_buy_and_hold_dsr"):
        assert 0.0 <= regressor[column].item() <= 1.0, column
    # the baselines run on the same rows for every engine
    for column in ("baseline_momentum_sign_sharpe", "baseline_buy_and_hold_sharpe"):
        assert classifier[column].to_list() == pytest.approx(regressor[column].to_list(), nan_ok=False)
    assert evaluation.detail.height > overall.height
    costs = evaluation.costs
    assert {"fee_bps", "half_spread_bps", "slippage_bps", "impact_bps", "funding_bps", "expected_edge_bps",
            "expected_net_edge_bps", "realised_edge_bps", "realised_net_edge_bps", "tradable"} <= set(costs.columns)
    # a trade is only taken when its expected edge clears the costs
    taken = costs.filter(pl.col("position_taken") != 0)
    assert (taken["expected_net_edge_bps"] >= 0).all()
    assert costs.filter(~pl.col("tradable"))["position_taken"].eq(0).all()
    assert costs.height == sum(r.predictions.height for r in runs)


@pytest.mark.parametrize("engine", ["nhits", "patchtst"])
def test_sequence_engines_forecast_the_label_from_history(frame, engine):
    tiny = {"max_steps": 20, "context_length": 32, "val_check_steps": 10, "num_threads": 1,
            **({"hidden_size": 32} if engine == "nhits" else {"d_model": 16, "n_heads": 2, "d_ff": 32, "n_layers": 1,
                                                               "patch_length": 8, "stride": 8})}
    run = walk_forward(frame, engine, tiny, CONFIG, timeframe_seconds=300)
    assert run.predictions.height == run.audit["rows_test"].sum()
    # the history before each test window feeds the first test rows: (almost) every test row has a forecast
    assert run.predictions["prediction"].is_not_null().mean() > 0.95
    assert run.predictions["signal"].drop_nulls().is_between(-1, 1).all()
    assert run.model.config.output_start == 2 and run.model.config.output_steps == 12


def test_per_symbol_training_saves_and_reloads_one_model_per_symbol(frame, tmp_path):
    from clm.models.artifacts import ArtifactError
    from clm.models.per_symbol import PerSymbolModel

    config = TrainingConfig(horizon=12, split=SplitConfig(n_folds=3, embargo_bars=12), pooled=False)
    run = walk_forward(frame, "lightgbm_regressor", FAST, config, timeframe_seconds=300)
    symbols = sorted(frame["symbol"].unique())
    assert sorted(run.model.models) == symbols and "symbol" not in run.features
    assert sorted({r["symbol"] for r in run.reports}) == symbols and len(run.reports) == 3 * len(symbols)
    assert run.predictions.height == run.audit["rows_test"].sum()
    run.model.save(tmp_path / "m")
    loaded = PerSymbolModel.load(tmp_path / "m")
    sample = frame.tail(500)
    assert np.array_equal(loaded.predict(sample), run.model.predict(sample), equal_nan=True)
    (tmp_path / "m" / symbols[0] / "model.txt").write_text("tampered")
    with pytest.raises(ArtifactError, match="model.txt"):
        PerSymbolModel.load(tmp_path / "m")


def test_no_fold_with_training_rows_is_a_clear_error(frame):
    unlabelled = frame.with_columns(pl.lit(None, dtype=frame.schema[CONFIG.target]).alias(CONFIG.target))
    with pytest.raises(ValueError, match=r"none of the 3 folds had labelled training and validation rows.*span"):
        walk_forward(unlabelled, "lightgbm_regressor", FAST, CONFIG, timeframe_seconds=300)
