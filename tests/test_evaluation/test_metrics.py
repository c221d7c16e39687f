"""Metrics against hand computations and numpy/scipy references; simulation on known series."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from clm.evaluation import metrics as m

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def frame(n_bars, symbols=("A",), **cols):
    ts = [T0 + timedelta(hours=i) for i in range(n_bars)]
    data = {
        "symbol": [s for s in symbols for _ in range(n_bars)],
        "timestamp": ts * len(symbols),
        **cols,
    }
    return pl.DataFrame(data, schema_overrides={"timestamp": pl.Datetime("us", "UTC")})


# ------------------------------------------------------------------------------------------------
# regression / classification
# ------------------------------------------------------------------------------------------------


def test_regression_metrics_by_hand_and_nan_safe():
    pred = [1.0, 2.0, 3.0, np.nan]
    actual = [1.5, 2.0, 2.0, 10.0]
    assert m.rmse(pred, actual) == pytest.approx(math.sqrt((0.25 + 0 + 1) / 3))
    assert m.mae(pred, actual) == pytest.approx(0.5)
    a = np.array([1.5, 2.0, 2.0])
    assert m.r2(pred, actual) == pytest.approx(1 - 1.25 / np.sum((a - a.mean()) ** 2))
    assert m.rmse(pl.Series([1.0, None]), pl.Series([3.0, 1.0])) == pytest.approx(2.0)
    assert math.isnan(m.rmse([np.nan], [1.0]))
    assert math.isnan(m.r2([1.0, 2.0], [3.0, 3.0]))  # no variance to explain
    with pytest.raises(ValueError, match="differ in length: 2 != 3"):
        m.mae([1.0, 2.0], [1.0, 2.0, 3.0])


def test_classification_metrics_by_hand():
    actual = [1, 1, 1, 0, 0, -1, -1, -1]
    pred = [1, 1, 0, 0, -1, -1, 1, -1]
    assert m.accuracy(pred, actual) == pytest.approx(5 / 8)
    # per class (-1, 0, 1): precision 2/3, 1/2, 2/3; recall 2/3, 1/2, 2/3
    assert m.precision(pred, actual) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert m.recall(pred, actual) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert m.f1(pred, actual) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    # binary {0, 1}, class 0 never predicted -> precision 0 for it
    assert m.precision([1, 1, 1], [1, 0, 1]) == pytest.approx((0 + 2 / 3) / 2)
    assert m.recall([1, 1, 1], [1, 0, 1]) == pytest.approx((0 + 1) / 2)
    assert m.f1([1, 1, 1], [1, 0, 1]) == pytest.approx((0 + 0.8) / 2)
    with pytest.raises(ValueError, match="labels must be in"):
        m.accuracy([2, 1], [1, 1])


def test_directional_accuracy_ignores_zero_actuals():
    assert m.directional_accuracy([0.5, -1.0, 2.0, -0.1, 0.0], [1.0, 1.0, 0.0, -3.0, 1.0]) == pytest.approx(2 / 4)


def test_shuffled_labels_give_coin_flip_direction_and_no_ic():
    rng = np.random.default_rng(1)
    pred, actual = rng.normal(size=20_000), rng.normal(size=20_000)
    assert m.directional_accuracy(pred, actual) == pytest.approx(0.5, abs=0.015)
    assert abs(m.information_coefficient(pred, actual)) < 0.03
    assert abs(m.rank_ic(pred, actual)) < 0.03


def test_ece_calibrated_vs_miscalibrated():
    rng = np.random.default_rng(2)
    prob = rng.uniform(size=50_000)
    outcome = (rng.uniform(size=prob.size) < prob).astype(float)
    assert m.expected_calibration_error(prob, outcome) < 0.01
    over = np.clip(prob * 1.5, 0, 1)  # overconfident
    assert m.expected_calibration_error(over, outcome) > 0.1
    # hand example: two bins of two
    assert m.expected_calibration_error([0.1, 0.2, 0.8, 1.0], [0, 1, 1, 1], n_bins=2) == pytest.approx(
        0.5 * abs(0.5 - 0.15) + 0.5 * abs(1.0 - 0.9)
    )
    with pytest.raises(ValueError, match="prob must lie"):
        m.expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="outcome must be 0/1"):
        m.expected_calibration_error([0.2], [-1])
    with pytest.raises(ValueError, match="n_bins"):
        m.expected_calibration_error([0.2], [1], n_bins=0)


def test_ic_and_rank_ic_match_scipy_overall_and_per_cross_section():
    rng = np.random.default_rng(3)
    x = rng.normal(size=300)
    y = 0.3 * x + rng.normal(size=300)
    y[5] = np.nan
    keep = ~np.isnan(y)
    assert m.information_coefficient(x, y) == pytest.approx(stats.pearsonr(x[keep], y[keep])[0])
    assert m.rank_ic(x, y) == pytest.approx(stats.spearmanr(x[keep], y[keep])[0])
    groups = np.repeat(np.arange(30), 10)
    xt = np.round(x, 1)  # ties: average ranks, as scipy
    expect_p = np.mean([stats.pearsonr(xt[(groups == g) & keep], y[(groups == g) & keep])[0] for g in range(30)])
    expect_s = np.mean([stats.spearmanr(xt[(groups == g) & keep], y[(groups == g) & keep])[0] for g in range(30)])
    assert m.information_coefficient(xt, y, groups=groups) == pytest.approx(expect_p)
    assert m.rank_ic(xt, y, groups=pl.Series(groups)) == pytest.approx(expect_s)
    assert math.isnan(m.information_coefficient([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="groups and pred differ"):
        m.rank_ic(x, y, groups=groups[:-1])


# ------------------------------------------------------------------------------------------------
# Sharpe deflation
# ------------------------------------------------------------------------------------------------


def test_psr_by_hand():
    sr, n, g3, g4 = 0.1, 101, -1.0, 5.0
    z = sr * math.sqrt(100) / math.sqrt(1 + 0.1 + 1.0 * 0.01)
    assert m.probabilistic_sharpe_ratio(sr, n, g3, g4) == pytest.approx(stats.norm.cdf(z))
    assert m.probabilistic_sharpe_ratio(0.0, 50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_obs"):
        m.probabilistic_sharpe_ratio(0.1, 1)


def test_deflated_sharpe_matches_bailey_lopez_de_prado_example():
    # Bailey & Lopez de Prado (2014), section "numerical example": annualised SR 2.5 over 1250 daily
    # observations (250/yr), 100 trials with annualised Sharpe variance 0.5, skew -3, kurtosis 10.
    sr = 2.5 / math.sqrt(250)
    sd = math.sqrt(0.5 / 250)
    gamma = 0.5772156649015329
    sr0 = sd * ((1 - gamma) * stats.norm.ppf(1 - 1 / 100) + gamma * stats.norm.ppf(1 - 1 / (100 * math.e)))
    assert m.expected_max_sharpe(100, sd) == pytest.approx(sr0)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)  # the paper's benchmark, per day
    z = (sr - sr0) * math.sqrt(1249) / math.sqrt(1 + 3 * sr + 9 / 4 * sr**2)
    dsr = m.deflated_sharpe_ratio(sr, 100, 1250, -3.0, 10.0, sd)
    assert dsr == pytest.approx(stats.norm.cdf(z))
    assert dsr == pytest.approx(0.9004, abs=1e-4)  # the paper's DSR
    # one trial: no deflation
    assert m.deflated_sharpe_ratio(sr, 1, 1250, -3.0, 10.0, sd) == pytest.approx(
        m.probabilistic_sharpe_ratio(sr, 1250, -3.0, 10.0)
    )
    # more trials -> a higher bar -> a lower DSR
    assert m.deflated_sharpe_ratio(sr, 1000, 1250, -3.0, 10.0, sd) < dsr
    with pytest.raises(ValueError, match="n_trials"):
        m.deflated_sharpe_ratio(sr, 0, 1250, 0.0, 3.0, sd)


# ------------------------------------------------------------------------------------------------
# strategy simulation
# ------------------------------------------------------------------------------------------------


def test_simulation_on_a_known_series():
    r = [0.10, -0.05, 0.02, -0.10, 0.05]  # simple returns
    f = frame(5, position=[1.0] * 5, ret=r)
    out = m.simulate_strategy(f, position_col="position", return_col="ret", periods_per_year=252, log_returns=False)
    a = np.array(r)
    assert out["total_return"] == pytest.approx(np.prod(1 + a) - 1)
    assert out["sharpe"] == pytest.approx(a.mean() / a.std(ddof=1) * math.sqrt(252))
    assert out["sortino"] == pytest.approx(a.mean() / math.sqrt((0.05**2 + 0.10**2) / 5) * math.sqrt(252))
    equity = np.cumprod(1 + a)  # 1.1, 1.045, 1.0659, 0.95931, 1.0072755
    assert out["max_drawdown"] == pytest.approx(1 - equity[3] / 1.1)
    assert out["n_trades"] == 1 and out["hit_rate"] == 1.0
    assert out["turnover"] == pytest.approx(1 / 5)  # entering once
    assert out["exposure"] == 1.0 and out["n_periods"] == 5
    assert out["profit_factor"] == math.inf


def test_costs_are_charged_on_position_changes_and_trades_split():
    f = frame(6, position=[1.0, 1.0, -1.0, -1.0, 0.0, 1.0], ret=[0.01, 0.02, -0.01, 0.03, 0.05, -0.02],
              cost=[10.0] * 6, quote_volume=[1e6, 2e6, 3e6, 4e6, 5e6, 6e6])
    sim = m.strategy_returns(f, position_col="position", return_col="ret", cost_bps_col="cost", log_returns=False,
                             keep=["quote_volume"])
    assert sim["sim_turnover"].to_list() == [1.0, 0.0, 2.0, 0.0, 1.0, 1.0]
    assert sim["sim_cost"].to_list() == pytest.approx([0.001, 0.0, 0.002, 0.0, 0.001, 0.001])
    assert sim["sim_net"].to_list() == pytest.approx([0.009, 0.02, 0.008, -0.03, -0.001, -0.021])
    out = m.strategy_metrics(sim, periods_per_year=8760, max_participation=0.1)
    # trades: [+1,+1] -> 0.029, [-1,-1] -> -0.022, [+1] -> -0.021 (the flat row carries an exit cost)
    assert out["n_trades"] == 3
    assert out["hit_rate"] == pytest.approx(1 / 3)
    assert out["profit_factor"] == pytest.approx(0.029 / 0.043)
    assert out["capacity"] == pytest.approx(0.1 * 3e6)  # median of entry volumes 1e6, 3e6, 6e6
    assert out["turnover"] == pytest.approx(5 / 6)


def test_log_returns_and_null_handling():
    f = frame(3, position=[1.0, None, -0.5], ret=[math.log(1.1), 0.2, None])
    sim = m.strategy_returns(f, position_col="position", return_col="ret")
    assert sim.height == 2  # the row without a return is dropped
    assert sim["sim_gross"].to_list() == pytest.approx([0.1, 0.0])


def test_pooling_is_an_equal_weight_portfolio_per_timestamp():
    ra, rb = [0.01, 0.02, -0.01], [0.03, -0.02, 0.00]
    f = frame(3, symbols=("A", "B"), position=[1.0] * 6, ret=ra + rb)
    f = f.filter(~((pl.col("symbol") == "B") & (pl.col("timestamp") == T0)))  # B missing at t0
    out = m.simulate_strategy(f, position_col="position", return_col="ret", periods_per_year=1, log_returns=False)
    port = np.array([0.01, (0.02 - 0.02) / 2, (-0.01 + 0.0) / 2])
    assert out["total_return"] == pytest.approx(np.prod(1 + port) - 1)
    assert out["n_trades"] == 2 and out["n_periods"] == 3


def test_simulation_errors():
    f = frame(3, position=[1.0] * 3, ret=[0.0] * 3)
    with pytest.raises(ValueError, match="lacks column"):
        m.simulate_strategy(f, position_col="nope", return_col="ret", periods_per_year=1)
    with pytest.raises(ValueError, match="periods_per_year"):
        m.simulate_strategy(f, position_col="position", return_col="ret", periods_per_year=0)


def test_baselines():
    f = frame(4, symbols=("A", "B"), close=[1.0, 2.0, 1.5, 1.5, 10.0, 9.0, 9.5, 9.0])
    shuffled = f.reverse()
    mom = m.baseline_positions(shuffled, "momentum_sign")
    assert mom.name == "baseline_momentum_sign"
    assert mom.reverse().to_list() == [0.0, 1.0, -1.0, 0.0, 0.0, -1.0, 1.0, -1.0]
    assert m.baseline_positions(f, "flat").to_list() == [0.0] * 8
    assert m.baseline_positions(f, "buy_and_hold").to_list() == [1.0] * 8
    given = f.with_columns(mom=pl.Series([0.3, -2.0, None, 0.0, 1.0, 1.0, -1.0, 5.0]))
    assert m.baseline_positions(given, "momentum_sign", momentum_col="mom").to_list() == [1, -1, 0, 0, 1, 1, -1, 1]
    with pytest.raises(ValueError, match="kind must be one of"):
        m.baseline_positions(f, "random")
    with pytest.raises(ValueError, match="momentum_sign needs"):
        m.baseline_positions(f.drop("close"), "momentum_sign")


# ------------------------------------------------------------------------------------------------
# the evaluation table
# ------------------------------------------------------------------------------------------------


def test_evaluate_predictions_one_row_per_group_with_all_metrics():
    rng = np.random.default_rng(4)
    n, syms = 200, ("A", "B")
    target = rng.normal(0, 0.01, size=n * len(syms))
    pred = target + rng.normal(0, 0.005, size=target.size)
    close = np.exp(np.cumsum(rng.normal(0, 0.01, size=target.size)))
    f = frame(
        n, symbols=syms,
        fold=np.tile(np.repeat([0, 1], n // 2), 2),
        regime=np.tile(np.where(np.arange(n) % 3 == 0, "trend", "range"), 2),
        prediction=pred, target=target, direction=np.sign(np.round(target, 2)).astype(int),
        probability=1 / (1 + np.exp(-pred * 300)), position=np.sign(pred), cost=np.full(target.size, 5.0),
        close=close, quote_volume=np.full(target.size, 1e6),
    )
    table = m.evaluate_predictions(f, periods_per_year=8760, cost_bps_col="cost", n_trials=10,
                                   sharpe_std_across_trials=0.05)
    assert table.height == 2 * 2 * 2
    assert table["n_rows"].sum() == f.height
    for col in ("rmse", "mae", "r2", "directional_accuracy", "ic", "rank_ic", "accuracy", "precision", "recall",
                "f1", "ece", "brier", "position_sharpe", "position_capacity", "position_dsr",
                "baseline_flat_total_return", "baseline_buy_and_hold_sharpe", "baseline_momentum_sign_hit_rate"):
        assert col in table.columns, col
    assert (table["directional_accuracy"] > 0.6).all()  # informative predictions
    assert (table["baseline_flat_total_return"] == 0).all()
    # a group's metrics equal the metric over that group's rows
    g = f.filter((pl.col("fold") == 1) & (pl.col("symbol") == "B") & (pl.col("regime") == "trend"))
    row = table.filter((pl.col("fold") == 1) & (pl.col("symbol") == "B") & (pl.col("regime") == "trend"))
    assert row["rmse"][0] == pytest.approx(m.rmse(g["prediction"], g["target"]))
    assert row["rank_ic"][0] == pytest.approx(stats.spearmanr(g["prediction"], g["target"])[0])
    # pooled: no group keys -> one row
    pooled = m.evaluate_predictions(f, group_by=(), periods_per_year=8760)
    assert pooled.height == 1 and pooled["n_rows"][0] == f.height
    assert pooled["ic_cs"][0] == pytest.approx(m.information_coefficient(f["prediction"], f["target"], f["timestamp"]))
    whole = m.simulate_strategy(f.sort("fold"), position_col="position", return_col="target", periods_per_year=8760)
    assert pooled["position_n_trades"][0] >= whole["n_trades"]  # fold restarts can only add trades
    with pytest.raises(ValueError, match="periods_per_year"):
        m.evaluate_predictions(f)


def test_evaluate_predictions_uses_only_present_columns():
    rng = np.random.default_rng(5)
    f = frame(50, prediction=rng.normal(size=50), target=rng.normal(size=50))
    table = m.evaluate_predictions(f, baselines=())
    assert table.height == 1
    assert {"rmse", "ic"} <= set(table.columns)
    assert not any(c.endswith("_sharpe") for c in table.columns)
    assert "accuracy" not in table.columns and "ece" not in table.columns


def test_grouped_table_equals_each_metric_over_each_groups_rows():
    """The vectorised table (one polars group-by pass) against the scalar functions applied group by group,
    with NaN and null values, a null regime, a group with no valid pair and a group of constant predictions."""
    rng = np.random.default_rng(11)
    n, syms = 240, ("A", "B", "C")
    size = n * len(syms)
    target = rng.normal(0, 0.01, size=size)
    pred = target + rng.normal(0, 0.01, size=size)
    pred[rng.choice(size, 30, replace=False)] = np.nan
    target[rng.choice(size, 20, replace=False)] = np.nan
    regime = np.where(np.arange(size) % 5 == 0, "trend", np.where(np.arange(size) % 7 == 0, None, "range"))
    fold = np.tile(np.repeat([0, 1, 2], n // 3), len(syms))
    prob = rng.uniform(0, 1, size=size)
    f = frame(
        n, symbols=syms, fold=fold, regime=regime, prediction=pred, target=target,
        direction=np.sign(np.round(np.nan_to_num(target), 2)).astype(int), probability=prob,
        position=np.sign(np.nan_to_num(pred)), cost=rng.uniform(1, 10, size=size),
        close=np.exp(np.cumsum(rng.normal(0, 0.01, size=size))), quote_volume=rng.uniform(1e5, 1e6, size=size),
    ).with_columns(
        # fold 2 of C: no valid pair; fold 1 of B: constant predictions
        pl.when((pl.col("symbol") == "C") & (pl.col("fold") == 2)).then(None).otherwise(pl.col("prediction"))
        .alias("prediction"),
    ).with_columns(
        pl.when((pl.col("symbol") == "B") & (pl.col("fold") == 1)).then(0.5).otherwise(pl.col("prediction"))
        .alias("prediction"),
    )
    keys = ["fold", "symbol", "regime"]
    table = m.evaluate_predictions(f, group_by=keys, periods_per_year=8760, cost_bps_col="cost", n_trials=4,
                                   sharpe_std_across_trials=0.02, return_col="target")
    sims = {
        name: m.strategy_returns(f.with_columns(m.baseline_positions(f, "momentum_sign").alias("__mom"))
                                 if col == "__mom" else f, position_col=col, return_col="target",
                                 cost_bps_col="cost", partition_cols=["fold"], keep=["regime", "quote_volume"])
        for name, col in (("position", "position"), ("baseline_momentum_sign", "__mom"))
    }
    sr0 = m.expected_max_sharpe(4, 0.02)
    assert table.height == f.select(keys).unique().height and table["n_rows"].sum() == f.height
    assert table.filter(pl.col("regime").is_null()).height == 9  # null is a group, as partition_by has it

    def close(a, b):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)

    checked_nan = 0
    for row in table.iter_rows(named=True):
        where = pl.all_horizontal(pl.col(k).eq_missing(row[k]) for k in keys)
        g = f.filter(where)
        p, a = g["prediction"], g["target"]
        ok = np.isfinite(p.cast(pl.Float64).fill_null(np.nan).to_numpy()) & np.isfinite(a.to_numpy())
        y = (g["direction"] == 1).cast(pl.Float64)
        expected = {
            "rmse": m.rmse(p, a), "mae": m.mae(p, a), "r2": m.r2(p, a), "ic": m.information_coefficient(p, a),
            "rank_ic": m.rank_ic(p, a), "directional_accuracy": m.directional_accuracy(p, a),
            "accuracy": m.accuracy(p.sign(), g["direction"]), "precision": m.precision(p.sign(), g["direction"]),
            "recall": m.recall(p.sign(), g["direction"]), "f1": m.f1(p.sign(), g["direction"]),
            "ece": m.expected_calibration_error(g["probability"], y), "brier": m.brier_score(g["probability"], y),
            "ic_cs": m.information_coefficient(p, a, g["timestamp"]),
        }
        for name, sim in sims.items():
            part = sim.filter(where)
            got = m.strategy_metrics(part, periods_per_year=8760, max_participation=0.05)
            for metric, value in got.items():
                expected[f"{name}_{metric}"] = value
            r = part.group_by("timestamp").agg(pl.col("sim_net").mean()).sort("timestamp")["sim_net"]
            mom = m.sharpe_moments(r)
            try:
                expected[f"{name}_dsr"] = m.probabilistic_sharpe_ratio(mom["sharpe"], mom["n"], mom["skew"],
                                                                       mom["kurtosis"], sr0)
            except ValueError:
                expected[f"{name}_dsr"] = float("nan")
            assert got["max_drawdown"] == pytest.approx(m.max_drawdown(r.to_numpy()))
        for col, value in expected.items():
            assert close(row[col], value), (row["fold"], row["symbol"], row["regime"], col, row[col], value)
        checked_nan += not ok.any()
    assert checked_nan >= 1  # the group without a valid pair was compared too
