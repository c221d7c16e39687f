"""Prometheus metrics of the registry and the lake, for the Grafana dashboard and the alert rules.

The metrics are read, not counted in memory: a collector turns ``clm.status.build_status`` into metric
families at every scrape (or every textfile write), so any process can serve them, a restart loses
nothing, and they always agree with ``clm status``. Counters are totals of registry rows
(``retraining_jobs``, ``drift_events``), monotonic as long as those logs are only appended to.

Two ways out: ``serve(port)`` (an HTTP ``/metrics`` endpoint bound to 127.0.0.1 unless told otherwise)
and ``write_textfile(path)`` (atomic, for node_exporter's textfile collector; the ``daily_summary``
asset refreshes ``<lake>/reports/metrics.prom``). Names are in ``METRICS``; ``monitoring/`` holds the
dashboard and the alert rules that use them.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from clm.lake import Lake
from clm.policy import Policy
from clm.registry.base import Registry
from clm.status import FAILURE, SEVERITIES, SKIPPED, SUCCESS, StatusReport, build_status

# name as exposed (counters get ``_total``, info metrics ``_info``) -> what it says
METRICS: dict[str, str] = {
    "clm_model_train_seconds": "seconds the model's training run took (registry metrics train_seconds)",
    "clm_models": "registered models per status",
    "clm_active_model_info": "the ACTIVE model (model_id, version) of each key (model_type/scope/horizon)",
    "clm_retraining_jobs_completed_total": "retraining jobs that ended in SUCCESS",
    "clm_retraining_jobs_failed_total": "retraining jobs that ended in FAILURE",
    "clm_retraining_jobs_skipped_total": "retrain requests SKIPPED (inside policy min_retrain_interval_hours)",
    "clm_retraining_jobs_running": "jobs REQUESTED or STARTED and not finished yet",
    "clm_retraining_job_error_ratio": "FAILURE / (SUCCESS + FAILURE) of jobs (window: all, or ended in the last 24h)",
    "clm_retraining_job_last_duration_seconds": "duration of the newest finished job of each type",
    "clm_last_full_retrain_timestamp_seconds": "when the last successful full retrain ended (unix time)",
    "clm_next_retrain_timestamp_seconds": "when the next full retrain is due: schedule_interval_days after the last "
                                          "one started (unix time)",
    "clm_drift_events_total": "drift_events rows per severity",
    "clm_drift_last_check_timestamp_seconds": "when drift was last checked (unix time)",
    "clm_drift_last_severity": "severity of the last drift check: 0 LOW, 1 MEDIUM, 2 HIGH, 3 CRITICAL",
    "clm_shadow_samples": "closed paired signals of a SHADOW challenger against its champion",
    "clm_shadow_min_samples": "closed paired signals a shadow test needs before any decision (policy)",
    "clm_shadow_progress_ratio": "clm_shadow_samples / clm_shadow_min_samples",
    "clm_trading_halted": "1 while the halt file exists (serving refuses to trade), else 0",
    "clm_metrics_generated_timestamp_seconds": "when these metrics were read (unix time)",
}


def _ts(value: dt.datetime) -> float:
    return value.timestamp()


def families(report: StatusReport) -> list[Metric]:
    """The metric families of one status report (see ``METRICS``)."""
    out: list[Metric] = []
    train = GaugeMetricFamily("clm_model_train_seconds", METRICS["clm_model_train_seconds"],
                              labels=["model_id", "key", "model_type", "status"])
    for m in [*report.active, *report.shadow]:
        if m.train_seconds is not None:
            train.add_metric([m.model_id, m.key, m.model_type, m.status], m.train_seconds)
    out.append(train)

    models = GaugeMetricFamily("clm_models", METRICS["clm_models"], labels=["status"])
    for status, n in report.model_counts.items():
        models.add_metric([status], n)
    out.append(models)

    info = InfoMetricFamily("clm_active_model", METRICS["clm_active_model_info"],
                            labels=["key", "model_type", "scope", "horizon"])
    for m in report.active:
        info.add_metric([m.key, m.model_type, m.scope, str(m.horizon)], {"model_id": m.model_id, "version": m.version})
    out.append(info)

    completed = CounterMetricFamily("clm_retraining_jobs_completed", METRICS["clm_retraining_jobs_completed_total"],
                                    labels=["job_type"])
    failed = CounterMetricFamily("clm_retraining_jobs_failed", METRICS["clm_retraining_jobs_failed_total"],
                                 labels=["job_type"])
    skipped = CounterMetricFamily("clm_retraining_jobs_skipped", METRICS["clm_retraining_jobs_skipped_total"],
                                  labels=["job_type"])
    for job_type, by_status in sorted(report.job_counts.items()):
        completed.add_metric([job_type], by_status.get(SUCCESS, 0))
        failed.add_metric([job_type], by_status.get(FAILURE, 0))
        skipped.add_metric([job_type], by_status.get(SKIPPED, 0))
    running = GaugeMetricFamily("clm_retraining_jobs_running", METRICS["clm_retraining_jobs_running"],
                                labels=["job_type"])
    for job_type in sorted(report.job_counts):
        running.add_metric([job_type], sum(j.job_type == job_type for j in report.running))
    out += [completed, failed, skipped, running]

    ratio = GaugeMetricFamily("clm_retraining_job_error_ratio", METRICS["clm_retraining_job_error_ratio"],
                              labels=["window"])
    ok = sum(s.get(SUCCESS, 0) for s in report.job_counts.values())
    bad = sum(s.get(FAILURE, 0) for s in report.job_counts.values())
    ratio.add_metric(["all"], bad / (ok + bad) if ok + bad else 0.0)
    ok24, bad24 = report.jobs_last_24h.get(SUCCESS, 0), report.jobs_last_24h.get(FAILURE, 0)
    ratio.add_metric(["24h"], bad24 / (ok24 + bad24) if ok24 + bad24 else 0.0)
    out.append(ratio)

    duration = GaugeMetricFamily("clm_retraining_job_last_duration_seconds",
                                 METRICS["clm_retraining_job_last_duration_seconds"], labels=["job_type", "status"])
    seen: set[str] = set()
    for job in report.recent_jobs:  # newest first
        if job.job_type not in seen and job.status in (SUCCESS, FAILURE) and job.duration_s is not None:
            seen.add(job.job_type)
            duration.add_metric([job.job_type, job.status], job.duration_s)
    out.append(duration)

    if report.last_full_retrain is not None:
        out.append(GaugeMetricFamily("clm_last_full_retrain_timestamp_seconds",
                                     METRICS["clm_last_full_retrain_timestamp_seconds"],
                                     value=_ts(report.last_full_retrain)))
    if report.next_retrain is not None:
        out.append(GaugeMetricFamily("clm_next_retrain_timestamp_seconds",
                                     METRICS["clm_next_retrain_timestamp_seconds"], value=_ts(report.next_retrain)))

    drift = CounterMetricFamily("clm_drift_events", METRICS["clm_drift_events_total"], labels=["severity"])
    for severity, n in report.drift_counts.items():
        drift.add_metric([severity], n)
    out.append(drift)
    if report.last_drift is not None:
        out.append(GaugeMetricFamily("clm_drift_last_check_timestamp_seconds",
                                     METRICS["clm_drift_last_check_timestamp_seconds"],
                                     value=_ts(report.last_drift.detected_at)))
        if report.last_drift.severity in SEVERITIES:
            out.append(GaugeMetricFamily("clm_drift_last_severity", METRICS["clm_drift_last_severity"],
                                         value=SEVERITIES.index(report.last_drift.severity)))

    samples = GaugeMetricFamily("clm_shadow_samples", METRICS["clm_shadow_samples"],
                                labels=["challenger_id", "champion_id", "key"])
    progress = GaugeMetricFamily("clm_shadow_progress_ratio", METRICS["clm_shadow_progress_ratio"],
                                 labels=["challenger_id", "champion_id", "key"])
    for p in report.shadow_progress:
        labels = [p.challenger_id, p.champion_id or "", p.key]
        samples.add_metric(labels, p.closed)
        progress.add_metric(labels, p.fraction)
    out += [samples, progress]
    out.append(GaugeMetricFamily("clm_shadow_min_samples", METRICS["clm_shadow_min_samples"],
                                 value=report.shadow_min_samples))

    out.append(GaugeMetricFamily("clm_trading_halted", METRICS["clm_trading_halted"], value=int(report.halted)))
    out.append(GaugeMetricFamily("clm_metrics_generated_timestamp_seconds",
                                 METRICS["clm_metrics_generated_timestamp_seconds"], value=_ts(report.generated_at)))
    return out


class StatusCollector(Collector):
    """Reads the registry and the lake at every collection (``build_status``); holds no state of its own."""

    def __init__(self, lake: Lake, registry: Registry | None = None, policy: Callable[[], Policy] | None = None):
        self.lake, self.registry, self.policy = lake, registry, policy

    def collect(self) -> Iterator[Metric]:
        yield from families(build_status(self.lake, self.registry, self.policy() if self.policy else None))


def build_registry(lake: Lake, registry: Registry | None = None, policy: Callable[[], Policy] | None = None
                   ) -> CollectorRegistry:
    """A ``CollectorRegistry`` of its own (never the global default, whose process metrics would mix in)."""
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(StatusCollector(lake, registry, policy))
    return metrics


def exposition(lake: Lake, registry: Registry | None = None) -> str:
    """The metrics in Prometheus' text format, as ``/metrics`` serves them."""
    return generate_latest(build_registry(lake, registry)).decode()


def write_textfile(path: str | Path, lake: Lake, registry: Registry | None = None) -> Path:
    """Write the metrics for node_exporter's textfile collector (temp file + rename: never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), build_registry(lake, registry))
    return path


def serve(port: int, host: str = "127.0.0.1", lake: Lake | None = None, registry: Registry | None = None
          ) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (``port`` 0 picks a free one: read
    ``server.server_port``); stop it with ``server.shutdown()``. Bound to 127.0.0.1 unless ``host`` says
    otherwise: the metrics name models and reasons, not for every network."""
    return start_http_server(port, addr=host, registry=build_registry(lake or Lake.from_env(), registry))
