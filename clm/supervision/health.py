"""The health of an ACTIVE model, judged against the policy's thresholds, logged, and signalled.

Input: the model's closed signals (``clm.shadow.close_signals`` of its predictions: ``signal``,
``position`` taken, ``outcome_return``, ``net_return``, ``prediction``, ``kind``), the latencies of
its predict calls (``measure_latency``) and the number of bars it should have answered.

Measures (``policy.supervision``):

* win rate: share of the last ``window_signals`` taken signals (position != 0) with a net return
  > 0 (net of costs, as the shadow tester measures returns);
* calibration error: ``clm.evaluation.metrics.expected_calibration_error`` (10 bins) of the model's
  P(up) against ``outcome_return > 0`` over its last ``window_signals`` predictions. A classifier's
  P(up) is its prediction (serving's signal is ``2p - 1``, so also ``(signal + 1) / 2``). A return
  model has no probability; its implied P(up) is ``Phi(prediction / sigma)``, ``sigma`` the standard
  deviation of the realised returns in the window: the chance of a rise under a Gaussian centred on
  the forecast with the market's dispersion. (``(signal + 1) / 2`` would read a one-sigma forecast,
  tanh(1) = 0.76, as an 88 % claim, and every return model as miscalibrated.)
* long/short ratio: taken longs / taken shorts in the win-rate window (inf with no shorts, None
  with no trades);
* latency p50 / p95 / p99 of the predict calls (the p95 is judged: one slow call in a hundred is
  a hiccup, one in twenty is the model);
* coverage: bars answered (a finite signal) / bars it should have answered.

Health: HEALTHY when no threshold is broken; DEGRADED when one is; CRITICAL when two or more are,
or when the win rate is ``CRITICAL_WIN_RATE_MARGIN`` (10 points) or more below ``min_win_rate``
(a model losing on most trades is harmful on its own). Win rate, calibration and the long/short
ratio are judged only on at least ``MIN_JUDGED_SIGNALS`` signals; fewer are reported, not judged.
DEGRADED or worse writes a signal file for the sensors, in the drift signals' schema.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from clm.evaluation.costs import CostConfig
from clm.evaluation.metrics import expected_calibration_error
from clm.lake import Lake, fsync_write
from clm.policy import Policy, Supervision
from clm.registry.base import POOLED, Registry
from clm.shadow.models import ShadowModel
from clm.shadow.outcomes import close_signals

PERFORMANCE_LOGS = "model_performance_logs"
SIGNAL_KIND = "performance"  # lake.signals_dir(SIGNAL_KIND)
SIGNAL_PREFIX = "performance_"
CRITICAL_WIN_RATE_MARGIN = 0.10
MIN_JUDGED_SIGNALS = 20
CALIBRATION_BINS = 10


class Health(enum.StrEnum):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    CRITICAL = "CRITICAL"


SEVERITY = {Health.DEGRADED: "HIGH", Health.CRITICAL: "CRITICAL"}  # as the drift signals grade severity


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class HealthReport:
    """One model's health; ``broken`` names every threshold it breaks (empty when HEALTHY)."""

    model_id: str
    model_type: str
    health: Health
    win_rate: float | None
    calibration_error: float | None
    long_short_ratio: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    coverage: float | None
    broken: tuple[str, ...]
    n_signals: int  # taken signals in the window
    n_predictions: int  # predictions in the calibration window
    n_bars: int
    n_answered: int
    kind: str
    measured_at: dt.datetime
    thresholds: Mapping[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        ratio = self.long_short_ratio
        return {
            "broken": list(self.broken), "n_signals": self.n_signals, "n_predictions": self.n_predictions,
            "n_bars": self.n_bars, "n_answered": self.n_answered, "kind": self.kind,
            "long_short_ratio": _num(ratio), "only_longs": ratio is not None and math.isinf(ratio),
            "thresholds": dict(self.thresholds),
        }

    def log_row(self) -> dict[str, Any]:
        """The ``model_performance_logs`` row (the registry assigns ``log_id``)."""
        return {
            "model_id": self.model_id, "logged_at": self.measured_at, "win_rate": self.win_rate,
            "calibration_error": self.calibration_error, "long_short_ratio": self.long_short_ratio,
            "latency_p50_ms": self.latency_p50_ms, "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms, "coverage": self.coverage, "health": str(self.health),
            "details": self.details(),
        }

    def signal_payload(self) -> dict[str, Any]:
        """The signal file's content: the drift signals' keys, with this report as the statistics."""
        return {
            "severity": SEVERITY.get(self.health, "LOW"),
            "drift_type": "performance",
            "features": [],
            "statistics": {
                "model_id": self.model_id, "health": str(self.health), "broken": list(self.broken),
                "win_rate": _num(self.win_rate), "calibration_error": _num(self.calibration_error),
                "long_short_ratio": _num(self.long_short_ratio), "latency_p50_ms": _num(self.latency_p50_ms),
                "latency_p95_ms": _num(self.latency_p95_ms), "latency_p99_ms": _num(self.latency_p99_ms),
                "coverage": _num(self.coverage), "n_signals": self.n_signals, "thresholds": dict(self.thresholds),
            },
            "model_types": [self.model_type],
            "detected_at": self.measured_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }


# ------------------------------------------------------------------------------------------------
# latency
# ------------------------------------------------------------------------------------------------


def measure_latency(predict_fn: Callable[[Any], Any], rows: Sequence[Any], n: int = 200, *, warmup: int = 1
                    ) -> np.ndarray:
    """Milliseconds of ``n`` calls of ``predict_fn`` on ``rows`` (cycled), each timed with
    ``perf_counter_ns``; ``warmup`` untimed calls first (caches, lazy loads)."""
    if not rows:
        raise ValueError("measure_latency needs at least one row to predict")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    for i in range(warmup):
        predict_fn(rows[i % len(rows)])
    out = np.empty(n, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(n):
        row = rows[i % len(rows)]
        start = clock()
        predict_fn(row)
        out[i] = (clock() - start) / 1e6
    return out


def latency_percentiles(latencies_ms: np.ndarray | Sequence[float]) -> tuple[float | None, ...]:
    """(p50, p95, p99) in ms; Nones without measurements."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return (None, None, None)
    return tuple(float(v) for v in np.percentile(values, [50, 95, 99]))


# ------------------------------------------------------------------------------------------------
# the measures
# ------------------------------------------------------------------------------------------------


def implied_probability(rows: pl.DataFrame, kind: str) -> np.ndarray:
    """P(up) per row (module doc): a classifier's prediction; ``Phi(prediction / sigma)`` for a return model."""
    if kind == "probability":
        p = rows["prediction"].cast(pl.Float64).to_numpy() if "prediction" in rows.columns else None
        if p is None or not np.isfinite(p).any():
            p = (rows["signal"].cast(pl.Float64).to_numpy() + 1.0) / 2.0
        return np.clip(p, 0.0, 1.0)
    if "prediction" not in rows.columns:
        raise ValueError("a return model's calibration needs its 'prediction' column (the forecast return)")
    sigma = rows["outcome_return"].cast(pl.Float64).std()
    prediction = rows["prediction"].cast(pl.Float64).to_numpy()
    if sigma is None or not math.isfinite(sigma) or sigma <= 0:
        return np.full(rows.height, np.nan)
    return stats.norm.cdf(prediction / sigma)


def _kind(closed: pl.DataFrame, kind: str | None) -> str:
    if kind is not None:
        if kind not in ("probability", "return"):
            raise ValueError(f"kind must be 'probability' or 'return', got {kind!r}")
        return kind
    if "kind" in closed.columns and closed["kind"].drop_nulls().n_unique() == 1:
        return str(closed["kind"].drop_nulls()[0])
    raise ValueError("supervise: pass kind= ('probability' or 'return'); the rows carry no single 'kind'")


def _single(closed: pl.DataFrame, column: str, given: str | None) -> str:
    if given is not None:
        return given
    if column in closed.columns and closed[column].drop_nulls().n_unique() == 1:
        return str(closed[column].drop_nulls()[0])
    raise ValueError(f"supervise: pass {column}=; the rows carry no single {column!r}")


def supervise(
    closed_signals: pl.DataFrame,
    latencies_ms: np.ndarray | Sequence[float],
    n_bars: int,
    policy: Policy | Supervision,
    *,
    model_id: str | None = None,
    model_type: str | None = None,
    kind: str | None = None,
    n_answered: int | None = None,
    measured_at: dt.datetime | None = None,
) -> HealthReport:
    """One model's ``HealthReport`` (module doc). ``closed_signals``: rows of ``clm.shadow.close_signals``
    (``timestamp``, ``signal``, ``position``, ``outcome_return``, ``net_return``, ``prediction``; ``model_id``
    and ``kind`` columns or the keywords); one row per bar the model was asked about (a null signal: it
    abstained). ``n_answered`` defaults to the rows with a finite signal."""
    rules = policy.supervision if isinstance(policy, Policy) else policy
    missing = [c for c in ("timestamp", "signal", "position", "outcome_return", "net_return")
               if c not in closed_signals.columns]
    if missing:
        raise ValueError(f"supervise: closed signals lack column(s) {missing} (see clm.shadow.close_signals)")
    if isinstance(n_bars, bool) or not isinstance(n_bars, int) or n_bars < 0:
        raise ValueError(f"n_bars must be an int >= 0, got {n_bars!r}")
    kind = _kind(closed_signals, kind)
    model_id = _single(closed_signals, "model_id", model_id)
    model_type = model_type or model_id
    at = (measured_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    rows = closed_signals.sort("timestamp")
    answered = rows.filter(pl.col("signal").cast(pl.Float64).is_finite())
    if n_answered is None:
        n_answered = answered.height
    window = rows.filter(pl.col("position").fill_null(0) != 0).tail(rules.window_signals)
    predictions = answered.filter(pl.col("outcome_return").is_finite()).tail(rules.window_signals)

    n_signals = window.height
    win_rate = float((window["net_return"] > 0).mean()) if n_signals else None
    longs = int((window["position"] > 0).sum())
    shorts = int((window["position"] < 0).sum())
    ratio = None if not n_signals else (math.inf if shorts == 0 else longs / shorts)
    calibration = None
    if predictions.height:
        p = implied_probability(predictions, kind)
        up = (predictions["outcome_return"].to_numpy() > 0).astype(np.float64)
        value = expected_calibration_error(p, up, n_bins=CALIBRATION_BINS)
        calibration = value if math.isfinite(value) else None
    p50, p95, p99 = latency_percentiles(latencies_ms)
    coverage = (n_answered / n_bars) if n_bars else None

    broken = []
    judged = n_signals >= MIN_JUDGED_SIGNALS
    if judged and win_rate < rules.min_win_rate:
        broken.append(f"win_rate {win_rate:.3f} < min_win_rate {rules.min_win_rate:g}")
    if predictions.height >= MIN_JUDGED_SIGNALS and calibration is not None and (
            calibration > rules.max_calibration_error):
        broken.append(f"calibration_error {calibration:.3f} > max_calibration_error {rules.max_calibration_error:g}")
    if judged and ratio > rules.max_long_short_ratio:
        broken.append(f"long_short_ratio {ratio:.3g} > max_long_short_ratio {rules.max_long_short_ratio:g} "
                      f"({longs} longs, {shorts} shorts)")
    if judged and ratio < rules.min_long_short_ratio:
        broken.append(f"long_short_ratio {ratio:.3g} < min_long_short_ratio {rules.min_long_short_ratio:g} "
                      f"({longs} longs, {shorts} shorts)")
    if p95 is not None and p95 > rules.max_latency_ms:
        broken.append(f"latency_p95_ms {p95:.1f} > max_latency_ms {rules.max_latency_ms:g}")
    if coverage is not None and coverage < rules.min_coverage:
        broken.append(f"coverage {coverage:.3f} < min_coverage {rules.min_coverage:g} "
                      f"({n_answered} of {n_bars} bars)")
    far_below = judged and win_rate < rules.min_win_rate - CRITICAL_WIN_RATE_MARGIN
    health = (Health.CRITICAL if len(broken) >= 2 or far_below
              else Health.DEGRADED if broken else Health.HEALTHY)
    return HealthReport(
        model_id=model_id, model_type=model_type, health=health, win_rate=win_rate, calibration_error=calibration,
        long_short_ratio=ratio, latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99, coverage=coverage,
        broken=tuple(broken), n_signals=n_signals, n_predictions=predictions.height, n_bars=n_bars,
        n_answered=int(n_answered), kind=kind, measured_at=at, thresholds=rules.model_dump(),
    )


def check_model(
    model: ShadowModel,
    features: pl.DataFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    candles: pl.DataFrame | pl.LazyFrame,
    policy: Policy | Supervision,
    *,
    cost_config: CostConfig | None = None,
    n_latency: int = 200,
    as_of: dt.datetime | None = None,
    measured_at: dt.datetime | None = None,
    since: dt.datetime | None = None,
    **close_options: Any,
) -> HealthReport:
    """The whole check of one loaded model (``clm.shadow.load_model``): predict the bars of ``features``
    it should answer (its scope's rows), close them against the labels (``close_signals``: trades and net
    returns as the shadow tester counts them), time ``n_latency`` single-row predictions on serving's
    dict path, and ``supervise``. Coverage is the share of those bars it answered. With ``since``, only bars
    from then on are judged; the earlier rows serve as history (a sequence engine's context).
    ``cost_config``: the cost model (default: the policy's ``costs`` when ``policy`` is a ``Policy``, else
    ``CostConfig()``)."""
    if cost_config is None:
        cost_config = policy.cost_config() if isinstance(policy, Policy) else CostConfig()
    predictions = model.predict(features)
    if since is not None:  # earlier rows are history for sequence engines, not bars to judge
        predictions = predictions.filter(pl.col("timestamp") >= since)
        features = features.filter(pl.col("timestamp") >= since)
    closed = close_signals(predictions, labels, candles, horizon=model.record.horizon, cost_config=cost_config,
                           as_of=as_of, **close_options)
    rows = features if model.record.scope == POOLED else features.filter(
        pl.col("symbol").cast(pl.String) == model.record.scope)
    sample = rows.tail(min(rows.height, 64)).to_dicts()
    latencies = measure_latency(model.predict_row, sample, n_latency) if sample else np.zeros(0)
    answered = int(predictions.get_column("signal").is_not_null().sum())
    return supervise(closed, latencies, predictions.height, policy, model_id=model.model_id,
                     model_type=model.record.model_type, kind=model.kind, n_answered=answered,
                     measured_at=measured_at)


# ------------------------------------------------------------------------------------------------
# logging and signalling
# ------------------------------------------------------------------------------------------------


def signal_path(lake: Lake, at: dt.datetime) -> Path:
    """``signals/performance/performance_<UTC yyyymmddTHHMMSSffffff>Z.json``, stamped like the drift signals
    (microseconds, so the reports of several models in one run each get their own file)."""
    return lake.signals_dir(SIGNAL_KIND) / f"{SIGNAL_PREFIX}{at.astimezone(dt.UTC):%Y%m%dT%H%M%S%f}Z.json"


def write_signal(lake: Lake, report: HealthReport) -> Path:
    """Write the report's signal file atomically (a sensor never reads half a file). The same report again
    finds its own file and leaves it; another report of the same microsecond moves on by a microsecond
    rather than replace a signal the sensors may not have seen yet."""
    data = (json.dumps(report.signal_payload(), sort_keys=True, indent=2, allow_nan=False) + "\n").encode()
    at = report.measured_at
    while True:
        path = signal_path(lake, at)
        if not path.exists():
            fsync_write(path, data)
            return path
        if path.read_bytes() == data:
            return path
        at += dt.timedelta(microseconds=1)


def log_health(registry: Registry, lake: Lake, report: HealthReport) -> tuple[int, Path | None]:
    """One ``model_performance_logs`` row; DEGRADED or worse also writes the performance signal file.
    Returns the row's ``log_id`` and the signal file (None when HEALTHY)."""
    row = report.log_row()
    registry.append(PERFORMANCE_LOGS, [row])
    logged = registry.rows(PERFORMANCE_LOGS, where={"model_id": report.model_id, "logged_at": row["logged_at"]},
                           limit=1)
    log_id = int(logged[0]["log_id"])
    path = write_signal(lake, report) if report.health is not Health.HEALTHY else None
    return log_id, path
