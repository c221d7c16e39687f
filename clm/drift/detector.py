"""Drift detection: features, champion outputs and realised performance, recent window vs reference.

Rules (every threshold from ``policy.yaml``'s ``drift_detection``):

- A feature drifts when it has at least ``min_samples`` finite values in each window and either KS
  shows an effect, p-value < ``ks.p_value`` AND D >= ``ks.statistic``, or PSI >= ``psi.significant``.
  Why an effect size and not the p-value alone: with 1M rows a 0.01-sigma shift has p ~ 1e-7 yet
  D ~ 0.004; D and PSI do not grow with the sample size, so a huge sample does not alarm on nothing.
  A 0.5-sigma mean shift of a normal feature has D ~ 0.20 (>= 0.1) and PSI ~ 0.23, and with 20k
  recent rows its p-value is ~0: it is flagged every time. Fewer values: ``insufficient_data``
  (never drifting, not counted in the share); see ``clm.drift.statistics`` for nulls and constants.
- Drift share = drifting / tested features; its severity: >= ``critical_drift_share`` CRITICAL,
  >= ``high_drift_share`` HIGH, >= ``medium_drift_share`` MEDIUM, else LOW.
- Prediction drift: any champion output column (prediction, confidence) drifting by the same rule;
  its severity is ``severity_rules.prediction_drift``.
- Performance drift: the hit rate dropped (one-sided two-proportion z-test, p < ``hit_rate_p_value``
  and a drop of at least ``min_hit_rate_drop``), or a one-sided CUSUM of net PnL per signal crossed
  ``cusum_h``. The CUSUM runs over the recent signals in order on z = (pnl - mean_ref) / std_ref,
  clipped to +-``CUSUM_CLIP`` so one outlier cannot fire it alone: S = max(0, S - z - k), alarm at
  S >= h (k, h in reference std units; for normal PnL, Siegmund's approximation gives k = 0.15,
  h = 30 an in-control run length of ~250k signals and ~90 signals to catch a 0.5-sigma drop; the
  hit-rate test catches the smaller, sustained drops). Its severity is ``severity_rules.performance_drift``.
- A drift type "fires" when it found anything (one drifting feature is enough: LOW by share). The
  report's severity is the highest of the fired types (LOW when none fired); ``drift_type`` names
  them comma-joined in the order feature, prediction, performance, or "none".
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from clm.drift.statistics import STATISTICS_SCHEMA, Data, DriftReference
from clm.policy import DriftDetection, PerformanceDriftRules, Policy

DRIFT_TYPES = ("feature", "prediction", "performance")
PREDICTION_COLUMNS = ("prediction", "confidence")
CUSUM_CLIP = 4.0  # |z| of one signal in the CUSUM, at most (reference std units)

REPORT_SCHEMA: dict[str, pl.DataType] = {**STATISTICS_SCHEMA, "drifting": pl.Boolean(), "reason": pl.String()}


class Severity(enum.StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def __ge__(self, other: object) -> bool:  # ordered by urgency, not alphabetically
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


def _settings(settings: DriftDetection | Policy | None) -> DriftDetection:
    if settings is None:
        return DriftDetection()
    return settings.drift_detection if isinstance(settings, Policy) else settings


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value} has no time zone: pass an aware (UTC) datetime")
    return value.astimezone(dt.UTC)


def _number(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars Python ones."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


# ---- windows ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftWindows:
    """Reference = [reference_start, reference_end), recent = [recent_start, recent_end]; reference_end is recent_start."""

    reference: pl.LazyFrame
    recent: pl.LazyFrame
    reference_start: dt.datetime
    reference_end: dt.datetime
    recent_start: dt.datetime
    recent_end: dt.datetime

    def bounds(self) -> dict[str, list[str]]:
        return {
            "reference": [self.reference_start.isoformat(), self.reference_end.isoformat()],
            "recent": [self.recent_start.isoformat(), self.recent_end.isoformat()],
        }


def split_windows(
    frame: pl.LazyFrame | pl.DataFrame,
    settings: DriftDetection | Policy | None = None,
    *,
    end: dt.datetime | None = None,
    time_column: str = "timestamp",
    drop_warmup: bool = True,
) -> DriftWindows:
    """The policy's two windows of a feature frame: recent = [end - recent_days, end], reference =
    [end - recent_days - reference_days, end - recent_days). ``end`` defaults to the latest timestamp;
    warm-up rows (``warm`` false) are dropped when the frame has that flag."""
    settings = _settings(settings)
    lazy = frame.lazy()
    if drop_warmup and "warm" in lazy.collect_schema().names():
        from clm.features import drop_warmup as _drop_warmup

        lazy = _drop_warmup(lazy)
    if end is None:
        end = lazy.select(pl.col(time_column).max()).collect().item()
        if end is None:
            raise ValueError("cannot place the drift windows: the frame has no rows")
    end = _utc(end)
    recent_start = end - dt.timedelta(days=settings.recent_days)
    reference_start = recent_start - dt.timedelta(days=settings.reference_days)
    ts = pl.col(time_column)
    return DriftWindows(
        reference=lazy.filter((ts >= reference_start) & (ts < recent_start)),
        recent=lazy.filter((ts >= recent_start) & (ts <= end)),
        reference_start=reference_start,
        reference_end=recent_start,
        recent_start=recent_start,
        recent_end=end,
    )


# ---- per-column decisions -----------------------------------------------------------------------
def classify(statistics: pl.DataFrame, settings: DriftDetection | Policy | None = None) -> pl.DataFrame:
    """Add ``drifting`` and ``reason`` (insufficient_data, ks+psi, ks, psi, psi_moderate, stable) to a
    ``DriftReference.compare`` table."""
    s = _settings(settings)
    enough = (pl.col("n_reference") >= s.min_samples) & (pl.col("n_recent") >= s.min_samples)
    ks = ((pl.col("ks_p_value") < s.ks.p_value) & (pl.col("ks_statistic") >= s.ks.statistic)).fill_null(False)
    psi_hit = (pl.col("psi") >= s.psi.significant).fill_null(False)
    psi_moderate = (pl.col("psi") >= s.psi.moderate).fill_null(False)
    reason = (
        pl.when(~enough).then(pl.lit("insufficient_data"))
        .when(ks & psi_hit).then(pl.lit("ks+psi"))
        .when(ks).then(pl.lit("ks"))
        .when(psi_hit).then(pl.lit("psi"))
        .when(psi_moderate).then(pl.lit("psi_moderate"))
        .otherwise(pl.lit("stable"))
    )
    return statistics.with_columns((enough & (ks | psi_hit)).alias("drifting"), reason.alias("reason"))


def _column_stats(table: pl.DataFrame, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """{column: its statistics}, JSON-safe; ``names`` limits it (e.g. to the drifting ones)."""
    wanted = None if names is None else set(names)
    out = {}
    for row in table.iter_rows(named=True):
        if wanted is not None and row["feature"] not in wanted:
            continue
        out[row["feature"]] = {k: (v if isinstance(v, str) or v is None else _number(v))
                               for k, v in row.items() if k != "feature"}
    return out


def share_severity(share: float | None, settings: DriftDetection | Policy | None = None) -> Severity:
    rules = _settings(settings).severity_rules
    if share is None:
        return Severity.LOW
    if share >= rules.critical_drift_share:
        return Severity.CRITICAL
    if share >= rules.high_drift_share:
        return Severity.HIGH
    if share >= rules.medium_drift_share:
        return Severity.MEDIUM
    return Severity.LOW


# ---- prediction drift ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictionDrift:
    """The champion's outputs (prediction, confidence), recent vs reference, by the feature rule."""

    table: pl.DataFrame  # REPORT_SCHEMA, one row per output column

    @property
    def drifting(self) -> list[str]:
        return self.table.filter(pl.col("drifting"))["feature"].to_list()

    @property
    def fired(self) -> bool:
        return bool(self.drifting)

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "drifting": self.drifting, "columns": _column_stats(self.table)}


def prediction_drift(
    reference: Data,
    recent: Data,
    settings: DriftDetection | Policy | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> PredictionDrift:
    """KS and PSI on the champion's outputs; ``columns`` defaults to those of prediction/confidence present."""
    s = _settings(settings)
    if columns is None:
        if isinstance(reference, pl.DataFrame | pl.LazyFrame):
            present = set(reference.lazy().collect_schema().names())
        elif isinstance(reference, Mapping):
            present = set(reference)
        else:
            raise ValueError("name the output columns of an array")
        columns = [c for c in PREDICTION_COLUMNS if c in present]
        if not columns:
            raise ValueError(f"no champion output column ({', '.join(PREDICTION_COLUMNS)}) in the reference")
    fitted = DriftReference.fit(reference, columns, bins=s.psi.bins)
    return PredictionDrift(classify(fitted.compare(recent), s))


# ---- performance drift --------------------------------------------------------------------------
def _outcomes(data: Any, pnl: str, hit: str) -> tuple[np.ndarray, np.ndarray]:
    """(net pnl, hit) of closed signals in time order; rows with a missing pnl are dropped, a missing
    ``hit`` column means pnl > 0."""
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        values = data.get_column(pnl).cast(pl.Float64).to_numpy()
        hits = data.get_column(hit).cast(pl.Float64).to_numpy() if hit in data.columns else None
    elif isinstance(data, Mapping):
        values = np.asarray(data[pnl], dtype=np.float64)
        hits = np.asarray(data[hit], dtype=np.float64) if hit in data else None
    else:
        values, hits = np.asarray(data, dtype=np.float64), None
    keep = np.isfinite(values) if hits is None else np.isfinite(values) & np.isfinite(hits)
    values = values[keep]
    hits = values > 0 if hits is None else hits[keep] > 0
    return values, hits


def cusum_drop(z: np.ndarray, k: float) -> np.ndarray:
    """S_t = max(0, S_{t-1} - z_t - k), S_0 = 0, vectorised: S = C - min(0, running min of C), C = cumsum(-z - k)."""
    if z.size == 0:
        return np.zeros(0)
    c = np.cumsum(-z - k)
    return c - np.minimum(0.0, np.minimum.accumulate(c))


@dataclass(frozen=True)
class PerformanceDrift:
    """Realised results of the champion's closed signals, recent vs reference."""

    n_reference: int
    n_recent: int
    hit_rate_reference: float | None
    hit_rate_recent: float | None
    hit_rate_z: float | None
    hit_rate_p_value: float | None
    hit_rate_fired: bool
    pnl_mean_reference: float | None
    pnl_std_reference: float | None
    pnl_mean_recent: float | None
    cusum_max: float | None
    cusum_alarm_at: int | None  # index of the recent signal at which the CUSUM crossed h
    cusum_fired: bool
    reason: str  # insufficient_data, hit_rate, cusum, hit_rate+cusum, stable

    @property
    def fired(self) -> bool:
        return self.hit_rate_fired or self.cusum_fired

    @property
    def hit_rate_drop(self) -> float | None:
        if self.hit_rate_reference is None or self.hit_rate_recent is None:
            return None
        return self.hit_rate_reference - self.hit_rate_recent

    def to_dict(self) -> dict[str, Any]:
        out = {name: _number(getattr(self, name)) for name in (
            "n_reference", "n_recent", "hit_rate_reference", "hit_rate_recent", "hit_rate_drop", "hit_rate_z",
            "hit_rate_p_value", "pnl_mean_reference", "pnl_std_reference", "pnl_mean_recent", "cusum_max",
            "cusum_alarm_at")}
        return {**out, "hit_rate_fired": self.hit_rate_fired, "cusum_fired": self.cusum_fired,
                "fired": self.fired, "reason": self.reason}


def performance_drift(
    reference: Any,
    recent: Any,
    settings: DriftDetection | Policy | PerformanceDriftRules | None = None,
    *,
    pnl: str = "net_pnl",
    hit: str = "hit",
) -> PerformanceDrift:
    """Hit-rate drop (two-proportion z-test, one-sided) and CUSUM of net PnL per signal, recent vs reference.

    Each side is a frame or mapping with ``pnl`` (net PnL per closed signal) and optionally ``hit``
    (else hit = pnl > 0), or an array of net PnL; the recent signals in the order they closed.
    """
    from scipy.stats import norm

    rules = settings if isinstance(settings, PerformanceDriftRules) else _settings(settings).performance
    ref_pnl, ref_hit = _outcomes(reference, pnl, hit)
    rec_pnl, rec_hit = _outcomes(recent, pnl, hit)
    n1, n2 = int(ref_pnl.size), int(rec_pnl.size)
    if min(n1, n2) < rules.min_signals:
        return PerformanceDrift(n1, n2, None, None, None, None, False, None, None, None, None, None, False,
                                "insufficient_data")
    p1, p2 = float(ref_hit.mean()), float(rec_hit.mean())
    pooled = (ref_hit.sum() + rec_hit.sum()) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se > 0:
        z = (p1 - p2) / se
        p_value = float(norm.sf(z))  # H1: the recent hit rate is lower
    else:  # every signal hit (or none) in both windows: no drop
        z, p_value = 0.0, 1.0
    hit_fired = p_value < rules.hit_rate_p_value and (p1 - p2) >= rules.min_hit_rate_drop
    mean, std = float(ref_pnl.mean()), float(ref_pnl.std(ddof=1))
    cusum_max = alarm_at = None
    cusum_fired = False
    if std > 0:
        path = cusum_drop(np.clip((rec_pnl - mean) / std, -CUSUM_CLIP, CUSUM_CLIP), rules.cusum_k)
        cusum_max = float(path.max())
        crossed = np.flatnonzero(path >= rules.cusum_h)
        cusum_fired = crossed.size > 0
        alarm_at = int(crossed[0]) if cusum_fired else None
    fired = [name for name, on in (("hit_rate", hit_fired), ("cusum", cusum_fired)) if on]
    return PerformanceDrift(n1, n2, p1, p2, float(z), p_value, hit_fired, mean, std, float(rec_pnl.mean()),
                            cusum_max, alarm_at, cusum_fired, "+".join(fired) or "stable")


# ---- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftReport:
    """One drift check: what drifted, how much, and how urgent (``severity``)."""

    severity: Severity
    drift_types: tuple[str, ...]  # the types that fired, in DRIFT_TYPES order
    features: pl.DataFrame  # REPORT_SCHEMA: feature, n_reference, n_recent, ks_statistic, ks_p_value, psi, ...
    drift_share: float | None  # drifting / tested features; None when no feature had enough data
    type_severities: Mapping[str, Severity]  # severity of each type that was evaluated
    prediction: PredictionDrift | None
    performance: PerformanceDrift | None
    model_types: tuple[str, ...]
    reference_window: tuple[dt.datetime, dt.datetime] | None
    recent_window: tuple[dt.datetime, dt.datetime] | None
    detected_at: dt.datetime
    settings: DriftDetection = field(default_factory=DriftDetection)

    @property
    def drift_type(self) -> str:
        return ",".join(self.drift_types) or "none"

    @property
    def drifting_features(self) -> list[str]:
        return self.features.filter(pl.col("drifting"))["feature"].to_list()

    @property
    def features_tested(self) -> int:
        return int((self.features["reason"] != "insufficient_data").sum())

    def statistics(self, *, drifting_only: bool = False) -> dict[str, Any]:
        """JSON-safe statistics: per-feature (all, or only the drifting ones), share, prediction, performance."""
        insufficient = self.features.filter(pl.col("reason") == "insufficient_data")["feature"].to_list()
        s = self.settings
        return {
            "drift_share": _number(self.drift_share),
            "features_tested": self.features_tested,
            "features_drifting": len(self.drifting_features),
            "features_insufficient": insufficient,
            "features": _column_stats(self.features, self.drifting_features if drifting_only else None),
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "performance": self.performance.to_dict() if self.performance else None,
            "severities": {k: str(v) for k, v in self.type_severities.items()},
            "windows": {
                "reference": [t.isoformat() for t in self.reference_window] if self.reference_window else None,
                "recent": [t.isoformat() for t in self.recent_window] if self.recent_window else None,
            },
            "thresholds": {"ks_statistic": s.ks.statistic, "ks_p_value": s.ks.p_value,
                           "psi_significant": s.psi.significant, "psi_moderate": s.psi.moderate,
                           "min_samples": s.min_samples},
        }


def detect_drift(
    reference: DriftReference | Data,
    recent: Data,
    settings: DriftDetection | Policy | None = None,
    *,
    features: Sequence[str] | None = None,
    model_types: Sequence[str] = (),
    predictions: tuple[Data, Data] | None = None,
    performance: tuple[Any, Any] | None = None,
    windows: DriftWindows | None = None,
    detected_at: dt.datetime | None = None,
) -> DriftReport:
    """Run every drift check given and grade it.

    ``reference`` is a fitted ``DriftReference`` (reuse it across checks) or reference data, fitted here
    on ``features`` (default: the numeric non-key columns). ``predictions`` and ``performance`` are
    (reference, recent) pairs for ``prediction_drift`` / ``performance_drift``; ``model_types`` names
    the models the caller says the drift affects; ``windows`` only records the bounds.
    """
    s = _settings(settings)
    if isinstance(reference, DriftReference):
        if features is not None:
            raise ValueError("features: the fitted reference already fixes them")
        fitted = reference
    else:
        fitted = DriftReference.fit(reference, features, bins=s.psi.bins)
    table = classify(fitted.compare(recent), s)
    tested = int((table["reason"] != "insufficient_data").sum())
    drifting = int(table["drifting"].sum())
    share = drifting / tested if tested else None
    severities: dict[str, Severity] = {"feature": share_severity(share, s)}
    fired = ["feature"] if drifting else []
    pred = prediction_drift(predictions[0], predictions[1], s) if predictions is not None else None
    if pred is not None:
        severities["prediction"] = Severity(s.severity_rules.prediction_drift) if pred.fired else Severity.LOW
        if pred.fired:
            fired.append("prediction")
    perf = performance_drift(performance[0], performance[1], s) if performance is not None else None
    if perf is not None:
        severities["performance"] = Severity(s.severity_rules.performance_drift) if perf.fired else Severity.LOW
        if perf.fired:
            fired.append("performance")
    severity = max((severities[t] for t in fired), key=lambda v: v.rank, default=Severity.LOW)
    return DriftReport(
        severity=severity,
        drift_types=tuple(fired),
        features=table,
        drift_share=share,
        type_severities=severities,
        prediction=pred,
        performance=perf,
        model_types=tuple(model_types),
        reference_window=(windows.reference_start, windows.reference_end) if windows else None,
        recent_window=(windows.recent_start, windows.recent_end) if windows else None,
        detected_at=_utc(detected_at) if detected_at else dt.datetime.now(dt.UTC),
        settings=s,
    )
