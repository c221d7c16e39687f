"""The model supervisor: is each ACTIVE model still healthy?

``supervise(closed_signals, latencies_ms, n_bars, policy)`` -> ``HealthReport`` (HEALTHY / DEGRADED /
CRITICAL against ``policy.supervision``); ``log_health(registry, lake, report)`` appends the
``model_performance_logs`` row and, for DEGRADED or worse, writes ``signals/performance/...`` for the
sensors; ``measure_latency`` times a model's predict calls; ``check_model`` does it all for one loaded
model (predict its bars, close them, time it, supervise).
"""

from clm.supervision.health import (
    CRITICAL_WIN_RATE_MARGIN,
    MIN_JUDGED_SIGNALS,
    PERFORMANCE_LOGS,
    SEVERITY,
    SIGNAL_KIND,
    Health,
    HealthReport,
    check_model,
    implied_probability,
    latency_percentiles,
    log_health,
    measure_latency,
    signal_path,
    supervise,
    write_signal,
)

__all__ = [
    "CRITICAL_WIN_RATE_MARGIN",
    "MIN_JUDGED_SIGNALS",
    "PERFORMANCE_LOGS",
    "SEVERITY",
    "SIGNAL_KIND",
    "Health",
    "HealthReport",
    "check_model",
    "implied_probability",
    "latency_percentiles",
    "log_health",
    "measure_latency",
    "signal_path",
    "supervise",
    "write_signal",
]
