"""The model supervisor: each threshold triggers, a healthy model stays HEALTHY, CRITICAL rules, the
performance log row, and the signal file (only for DEGRADED or worse, in the drift signals' schema)."""

import datetime as dt
import json
import time

import numpy as np
import polars as pl
import pytest

from clm.evaluation.metrics import expected_calibration_error
from clm.lake import Lake
from clm.policy import Policy
from clm.registry import DuckDBRegistry
from clm.supervision import (
    Health,
    implied_probability,
    latency_percentiles,
    log_health,
    measure_latency,
    supervise,
)

POLICY = Policy()
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
AT = dt.datetime(2024, 2, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
FAST = np.full(100, 2.0)  # ms


def signals(n: int = 500, *, win_rate: float = 0.55, long_share: float = 0.5, kind: str = "probability",
            calibrated: bool = True, seed: int = 0) -> pl.DataFrame:
    """Closed signals as clm.shadow.close_signals returns them, for one model."""
    rng = np.random.default_rng(seed)
    if kind == "probability":
        p = rng.uniform(0.35, 0.65, n)
        up = rng.uniform(size=n) < (p if calibrated else 0.5)
        prediction, signal = p if calibrated else np.full(n, 0.92), 2 * (p if calibrated else np.full(n, 0.92)) - 1
        outcome = np.where(up, 1, -1) * rng.uniform(0.001, 0.01, n)
    else:
        prediction = rng.normal(0, 0.002, n)
        outcome = prediction + rng.normal(0, 0.01, n)  # a well-specified forecast
        signal = np.tanh(prediction / 0.002)
    position = np.where(rng.uniform(size=n) < long_share, 1.0, -1.0)
    wins = rng.uniform(size=n) < win_rate
    net = np.where(wins, 1, -1) * rng.uniform(0.0005, 0.005, n)
    return pl.DataFrame({
        "symbol": ["BTC"] * n, "timestamp": [START + dt.timedelta(minutes=5 * i) for i in range(n)],
        "model_id": ["m1"] * n, "kind": [kind] * n, "prediction": prediction, "signal": signal,
        "edge_bps": prediction * 1e4, "outcome_return": outcome, "position": position, "net_return": net,
    })


def test_a_healthy_model_is_healthy():
    frame = signals()
    report = supervise(frame, FAST, frame.height, POLICY, model_type="lightgbm_classifier", measured_at=AT)
    assert report.health is Health.HEALTHY and report.broken == ()
    assert report.win_rate == pytest.approx((frame["net_return"] > 0).mean())
    assert report.calibration_error == pytest.approx(
        expected_calibration_error(frame["prediction"], (frame["outcome_return"] > 0).cast(pl.Float64)))
    assert report.calibration_error < 0.1
    longs = (frame["position"] > 0).sum()
    assert report.long_short_ratio == pytest.approx(longs / (frame.height - longs))
    assert (report.latency_p50_ms, report.latency_p95_ms, report.latency_p99_ms) == (2.0, 2.0, 2.0)
    assert report.coverage == 1.0 and report.n_signals == 500 and report.model_id == "m1"


@pytest.mark.parametrize("change, rule", [
    (dict(frame=dict(win_rate=0.40)), "win_rate"),
    (dict(frame=dict(calibrated=False)), "calibration_error"),
    (dict(frame=dict(long_share=0.8)), "long_short_ratio"),
    (dict(frame=dict(long_share=0.2)), "long_short_ratio"),
    (dict(latency=np.full(100, 600.0)), "latency_p95_ms"),
    (dict(bars=600), "coverage"),
])
def test_each_threshold_alone_degrades(change, rule):
    frame = signals(**change.get("frame", {}))
    report = supervise(frame, change.get("latency", FAST), change.get("bars", frame.height), POLICY)
    assert report.health is Health.DEGRADED, report.broken
    assert len(report.broken) == 1 and report.broken[0].startswith(rule)


def test_two_broken_thresholds_or_a_win_rate_far_below_are_critical():
    frame = signals(win_rate=0.42)
    assert supervise(frame, FAST, frame.height, POLICY).health is Health.DEGRADED
    both = supervise(frame, np.full(100, 900.0), frame.height, POLICY)
    assert both.health is Health.CRITICAL and [b.split()[0] for b in both.broken] == ["win_rate", "latency_p95_ms"]
    losing = signals(win_rate=0.25)
    report = supervise(losing, FAST, losing.height, POLICY)
    assert report.health is Health.CRITICAL and len(report.broken) == 1  # 10 points or more below min_win_rate


def test_the_window_is_the_last_taken_signals_and_flat_bars_only_count_for_calibration_and_coverage():
    frame = pl.concat([signals(400, win_rate=0.1, seed=1), signals(600, win_rate=0.6, seed=2).with_columns(
        pl.col("timestamp") + dt.timedelta(days=10))])
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) % 7 == 0).then(0.0).otherwise(pl.col("position"))
                               .alias("position"))
    report = supervise(frame, FAST, frame.height, POLICY)
    window = frame.filter(pl.col("position") != 0).sort("timestamp").tail(POLICY.supervision.window_signals)
    assert report.n_signals == 500 and report.win_rate == pytest.approx((window["net_return"] > 0).mean())
    assert report.health is Health.HEALTHY  # the old losing streak is out of the window


def test_abstentions_lower_coverage_and_few_signals_are_reported_not_judged():
    frame = signals().with_columns(pl.when(pl.int_range(pl.len()) < 100).then(None).otherwise(pl.col("signal"))
                                   .alias("signal"))
    report = supervise(frame, FAST, frame.height, POLICY)
    assert report.coverage == pytest.approx(0.8) and report.broken[0].startswith("coverage")
    few = signals(15, win_rate=0.0, long_share=1.0)
    quiet = supervise(few, FAST, few.height, POLICY)
    assert quiet.win_rate == 0.0 and quiet.long_short_ratio == float("inf") and quiet.health is Health.HEALTHY
    none = supervise(signals(50).with_columns(pl.lit(0.0).alias("position")), [], 50, POLICY)
    assert none.win_rate is None and none.long_short_ratio is None and none.latency_p95_ms is None


def test_a_return_model_is_calibrated_through_its_implied_probability():
    frame = signals(kind="return")
    report = supervise(frame, FAST, frame.height, POLICY)
    assert report.kind == "return" and report.calibration_error < 0.06 and report.health is Health.HEALTHY
    sigma = frame["outcome_return"].std()
    from scipy.stats import norm
    assert implied_probability(frame, "return") == pytest.approx(norm.cdf(frame["prediction"].to_numpy() / sigma))
    # reading tanh signals as probabilities would call the same well-specified model miscalibrated
    naive = expected_calibration_error((frame["signal"] + 1) / 2, (frame["outcome_return"] > 0).cast(pl.Float64))
    assert naive > POLICY.supervision.max_calibration_error


def test_log_health_appends_a_row_and_signals_only_degraded_or_worse(tmp_path):
    lake = Lake(tmp_path / "lake")
    registry = DuckDBRegistry(tmp_path / "lake" / "registry" / "registry.duckdb")
    frame = signals()
    healthy = supervise(frame, FAST, frame.height, POLICY, model_type="lightgbm_classifier", measured_at=AT)
    log_id, path = log_health(registry, lake, healthy)
    assert log_id == 1 and path is None and not lake.signals_dir("performance").exists()
    (row,) = registry.rows("model_performance_logs")
    assert row["model_id"] == "m1" and row["health"] == "HEALTHY" and row["logged_at"] == AT
    assert row["win_rate"] == healthy.win_rate and row["coverage"] == 1.0
    assert row["latency_p99_ms"] == 2.0 and row["details"]["n_signals"] == 500

    degraded = supervise(frame, np.full(100, 700.0), frame.height, POLICY, model_type="lightgbm_classifier",
                         measured_at=AT + dt.timedelta(hours=1))
    critical = supervise(signals(win_rate=0.2, long_share=0.9), FAST, 500, POLICY,
                         model_type="lightgbm_classifier", measured_at=AT + dt.timedelta(hours=1))
    (id2, p2), (id3, p3) = log_health(registry, lake, degraded), log_health(registry, lake, critical)
    assert (id2, id3) == (2, 3)
    assert p2.parent == p3.parent == lake.signals_dir("performance")
    assert p2.name == "performance_20240201T130000123456Z.json" and p3 != p2  # same instant, two files
    a, b = json.loads(p2.read_text()), json.loads(p3.read_text())
    assert set(a) == {"severity", "drift_type", "features", "statistics", "model_types", "detected_at"}
    assert (a["severity"], b["severity"]) == ("HIGH", "CRITICAL")
    assert a["drift_type"] == "performance" and a["features"] == [] and a["model_types"] == ["lightgbm_classifier"]
    assert a["statistics"]["broken"][0].startswith("latency_p95_ms") and a["statistics"]["model_id"] == "m1"
    assert dt.datetime.fromisoformat(a["detected_at"]) == AT + dt.timedelta(hours=1)
    assert [r["health"] for r in registry.rows("model_performance_logs")] == ["CRITICAL", "DEGRADED", "HEALTHY"]
    assert not list(p2.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    assert log_health(registry, lake, degraded)[1] == p2  # the same report finds its own file
    assert len(list(p2.parent.iterdir())) == 2


def test_the_signal_file_reads_as_a_drift_signal(tmp_path):
    """One sensor parser reads the drift and the performance signals."""
    signals_module = pytest.importorskip("clm.drift.signals")
    lake = Lake(tmp_path / "lake")
    registry = DuckDBRegistry(tmp_path / "lake" / "registry" / "registry.duckdb")
    frame = signals(win_rate=0.2)
    report = supervise(frame, np.full(100, 700.0), frame.height, POLICY, model_type="lightgbm_classifier",
                       measured_at=AT)
    _log_id, path = log_health(registry, lake, report)
    parsed = signals_module.load_drift_signal(path)
    assert str(parsed.severity) == "CRITICAL" and parsed.drift_types == ("performance",)
    assert parsed.model_types == ("lightgbm_classifier",) and parsed.features == ()
    assert parsed.detected_at == AT and parsed.statistics["model_id"] == "m1"


def test_measure_latency_times_each_call():
    calls = []

    def predict(row):
        calls.append(row)
        time.sleep(0.002)

    latencies = measure_latency(predict, [{"a": 1}, {"a": 2}], n=20, warmup=2)
    assert len(latencies) == 20 and len(calls) == 22 and calls[:3] == [{"a": 1}, {"a": 2}, {"a": 1}]
    p50, p95, p99 = latency_percentiles(latencies)
    assert 2.0 <= p50 <= p95 <= p99 < 200
    assert latency_percentiles([]) == (None, None, None)
    with pytest.raises(ValueError, match="at least one row"):
        measure_latency(predict, [], n=3)


def test_supervise_needs_the_model_and_its_kind():
    frame = signals().drop("model_id")
    with pytest.raises(ValueError, match="model_id"):
        supervise(frame, FAST, 500, POLICY)
    with pytest.raises(ValueError, match="kind"):
        supervise(signals().drop("kind"), FAST, 500, POLICY)
    report = supervise(frame, FAST, 500, POLICY.supervision, model_id="m9", kind="probability")
    assert report.model_id == "m9" and report.model_type == "m9"
