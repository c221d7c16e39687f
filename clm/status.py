"""What an operator needs at a glance (``clm status``), and the daily summary of the last day.

Everything is read from the registry (models, status history, the operational log tables), the lake
(halt file, exports, candles, ``do_not_trade``) and the policy, and nothing is written, so a status is
safe to take at any time, also while a Dagster run works. ``build_status`` gathers it into a
``StatusReport``; ``status_text`` renders it; ``clm.metrics`` turns the same report into Prometheus
metrics, so the terminal, the dashboard and the alerts never disagree.

Jobs come from ``retraining_jobs`` as ``clm.automation.jobs`` writes and folds them: one entry per job
(its request, its run, its latest status: REQUESTED, SKIPPED, STARTED, SUCCESS, FAILURE, CANCELED).
``full_retrain`` and ``training_job`` are full retrains. Before any has succeeded, the newest
registered model stands in for the last full retrain (every training run registers its models).

Timing: next retrain = the start of the newest full retrain that succeeded or is under way (what the
schedule counts from, ``RetrainLedger.full_retrain_due``) + ``schedule_interval_days``; next drift check = last
``drift_events`` row + ``drift_detection.check_interval_hours``. Shadow progress of a challenger =
its closed paired signals against the key's current champion (counted as ``clm.shadow.decide``
counts them: one per bar, where at least one of the two took a position) over ``min_samples``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clm.automation.halt import read_halt as _read_halt
from clm.automation.jobs import FULL_RETRAIN_JOBS, RETRAIN_JOBS, RETRAINING_JOBS, JobStatus, job_history
from clm.automation.rl import RESET_REQUESTED
from clm.lake import Lake
from clm.policy import Policy, load_policy
from clm.registry.base import ModelKey, ModelRecord, Registry, Status, StatusChange, is_forecaster

SUCCESS = str(JobStatus.SUCCESS)
FAILURE = str(JobStatus.FAILURE)
SKIPPED = str(JobStatus.SKIPPED)
UNDER_WAY = (str(JobStatus.REQUESTED), str(JobStatus.STARTED))
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")  # clm.drift.detector.Severity, least urgent first
SHADOW_DECISION = "shadow test: "  # the prefix of clm.shadow.apply_decisions' status_history reasons
RECENT_JOBS = 10
_PAIR = ("champion_id", "challenger_id", "symbol", "timestamp")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLine:
    """One ACTIVE or SHADOW model, with its latest health check (``model_performance_logs``)."""

    model_id: str
    key: str
    model_type: str
    scope: str
    horizon: int
    version: str
    status: str
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    train_seconds: float | None
    health: str | None = None
    health_at: dt.datetime | None = None


@dataclass(frozen=True)
class ShadowProgress:
    """A SHADOW challenger's way to a decision: closed paired signals against its champion."""

    challenger_id: str
    champion_id: str | None  # the key's ACTIVE model now; None when the key has none
    key: str
    closed: int
    min_samples: int
    last_decision: str | None = None  # PROMOTE / REJECT / CONTINUE_TESTING, from status_history
    last_decision_at: dt.datetime | None = None

    @property
    def fraction(self) -> float:
        return self.closed / self.min_samples if self.min_samples else 0.0


@dataclass(frozen=True)
class JobLine:
    """One job (``clm.automation.jobs.job_history``): its request, its run and its latest status."""

    job_id: int  # the job's newest retraining_jobs row
    job_type: str
    status: str
    trigger_reason: str | None
    requested_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    duration_s: float | None
    error: str | None
    run_id: str | None
    models_trained: int = 0

    @property
    def at(self) -> dt.datetime | None:
        """When it last moved: ended, else started, else requested."""
        return self.ended_at or self.started_at or self.requested_at


@dataclass(frozen=True)
class DriftLine:
    """One ``drift_events`` row."""

    event_id: int
    detected_at: dt.datetime
    severity: str
    drift_type: str | None
    features: int
    signal_file: str | None


@dataclass(frozen=True)
class RLLine:
    """An RL agent (``rl_versions``): its newest version, its newest ACTIVE one, and a pending request
    (e.g. ``RESET_REQUESTED`` after a regime change) newer than both."""

    agent: str
    version: str | None
    status: str | None
    created_at: dt.datetime | None
    parent_version: str | None
    active_version: str | None = None
    pending: str | None = None
    pending_at: dt.datetime | None = None
    pending_reason: str | None = None


@dataclass(frozen=True)
class StatusReport:
    generated_at: dt.datetime
    lake_root: str
    registry_exists: bool
    model_counts: dict[str, int]
    active: list[ModelLine]
    shadow: list[ModelLine]
    shadow_progress: list[ShadowProgress]
    shadow_min_samples: int  # policy auto_promote_threshold.min_samples
    last_retrain: JobLine | None  # the newest retrain (full, partial or training_job) requested or run
    last_full_retrain: dt.datetime | None
    last_full_retrain_source: str | None  # "retraining_jobs" or "model registry"
    next_retrain: dt.datetime | None
    schedule_interval_days: float
    min_retrain_interval_hours: float
    last_drift: DriftLine | None
    next_drift_check: dt.datetime | None
    check_interval_hours: float
    drift_counts: dict[str, int]  # severity -> drift_events rows
    halted: bool
    halt_reason: str | None
    halt: dict[str, Any] | None  # the halt file's content when it is JSON
    rl: list[RLLine]
    recent_jobs: list[JobLine]
    job_counts: dict[str, dict[str, int]]  # job_type -> latest status -> jobs
    jobs_last_24h: dict[str, int] = field(default_factory=dict)  # status -> jobs that last moved in the last 24 h
    running: list[JobLine] = field(default_factory=list)  # jobs REQUESTED or STARTED
    # SHADOW models that no shadow test judges (RL policies): they wait for `clm policies promote`
    waiting_policies: list[ModelLine] = field(default_factory=list)

    @property
    def retrain_overdue(self) -> bool:
        return self.next_retrain is not None and self.next_retrain <= self.generated_at

    @property
    def drift_check_overdue(self) -> bool:
        return self.next_drift_check is not None and self.next_drift_check <= self.generated_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``clm status --json``): datetimes as ISO 8601 UTC."""
        def plain(value: Any) -> Any:
            if isinstance(value, dt.datetime):
                return value.isoformat()
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        out = plain(asdict(self))
        out["retrain_overdue"] = self.retrain_overdue
        out["drift_check_overdue"] = self.drift_check_overdue
        for row, progress in zip(out["shadow_progress"], self.shadow_progress, strict=True):
            row["fraction"] = progress.fraction
        return out


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def _model_line(record: ModelRecord, health: Mapping[str, Any] | None) -> ModelLine:
    seconds = record.metrics.get("train_seconds")
    return ModelLine(
        model_id=record.model_id, key=str(record.key), model_type=record.model_type, scope=record.scope,
        horizon=record.horizon, version=record.version, status=str(record.status), created_at=record.created_at,
        promoted_at=record.promoted_at,
        train_seconds=float(seconds) if isinstance(seconds, int | float) and math.isfinite(seconds) else None,
        health=None if health is None else health.get("health"),
        health_at=None if health is None else _utc(health.get("logged_at")),
    )


def jobs_of(rows: Sequence[Mapping[str, Any]]) -> list[JobLine]:
    """``retraining_jobs`` rows folded into one line per job, newest first."""
    return [JobLine(
        job_id=int(h["last_job_id"]), job_type=str(h["job_type"] or ""), status=str(h["status"] or ""),
        trigger_reason=h.get("trigger_reason"), requested_at=_utc(h.get("requested_at")),
        started_at=_utc(h.get("started_at")), ended_at=_utc(h.get("ended_at")), duration_s=h.get("duration_s"),
        error=h.get("error"), run_id=h.get("run_id"), models_trained=len(h.get("models_trained") or []),
    ) for h in job_history(rows)]


def _drift_line(row: Mapping[str, Any]) -> DriftLine:
    features = row.get("features")
    return DriftLine(
        event_id=int(row["event_id"]), detected_at=_utc(row["detected_at"]), severity=str(row.get("severity")),
        drift_type=row.get("drift_type"), features=len(features) if isinstance(features, list) else 0,
        signal_file=row.get("signal_file"),
    )


def closed_pairs(results: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """Closed paired signals per (champion, challenger), counted as ``clm.shadow.decide`` counts its
    sample: a bar closed twice once, finite net returns only, and only where at least one model traded."""
    if not results:
        return {}
    frame = pl.from_dicts(
        [{k: r.get(k) for k in (*_PAIR, "result_id", "champion_signal", "challenger_signal",
                                "champion_net_return", "challenger_net_return")} for r in results],
        schema={"champion_id": pl.String, "challenger_id": pl.String, "symbol": pl.String,
                "timestamp": pl.Datetime("us", "UTC"), "result_id": pl.Int64, "champion_signal": pl.Float64,
                "challenger_signal": pl.Float64, "champion_net_return": pl.Float64,
                "challenger_net_return": pl.Float64},
    )
    traded = (pl.col("champion_signal").fill_null(0) != 0) | (pl.col("challenger_signal").fill_null(0) != 0)
    counts = (frame.sort("result_id", nulls_last=True)
              .unique(list(_PAIR), keep="first", maintain_order=True)
              .filter(pl.col("champion_net_return").is_finite() & pl.col("challenger_net_return").is_finite()
                      & traded)
              .group_by("champion_id", "challenger_id").len())
    return {(c, g): int(n) for c, g, n in counts.iter_rows()}


def _last_decisions(history: Sequence[StatusChange]) -> dict[str, tuple[str, dt.datetime]]:
    """Per model, its newest shadow-test recommendation (``shadow test: PROMOTE: ...``) and when."""
    out: dict[str, tuple[str, dt.datetime]] = {}
    for change in history:  # oldest first, so later ones win
        if change.reason.startswith(SHADOW_DECISION):
            word = change.reason[len(SHADOW_DECISION):].split(":", 1)[0].strip()
            out[change.model_id] = (word, _utc(change.changed_at))
    return out


def _rl_lines(rows: Sequence[Mapping[str, Any]]) -> list[RLLine]:
    by_agent: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: int(r["version_id"])):
        by_agent.setdefault(str(row.get("agent")), []).append(row)
    out = []
    for agent, history in sorted(by_agent.items()):
        versions = [r for r in history if r.get("version")]
        newest = versions[-1] if versions else None
        active = next((r for r in reversed(versions) if str(r.get("status") or "").upper() == "ACTIVE"), None)
        last = history[-1]
        pending = last if not last.get("version") or last.get("status") == RESET_REQUESTED else None
        out.append(RLLine(
            agent=agent, version=newest and str(newest["version"]), status=newest and str(newest.get("status")),
            created_at=newest and _utc(newest.get("created_at")),
            parent_version=newest and newest.get("parent_version"),
            active_version=active and str(active["version"]),
            pending=pending and str(pending.get("status")), pending_at=pending and _utc(pending.get("created_at")),
            pending_reason=pending and pending.get("reason")))
    return out


def open_lake_registry(lake: Lake) -> Registry | None:
    """The registry the assets use (``CLM_REGISTRY_URL``, else the lake's DuckDB file), or None when the lake
    has no registry file yet: a status is read-only and must not create one."""
    url = os.environ.get("CLM_REGISTRY_URL")
    if not url and not lake.registry_path.exists():
        return None
    from clm.registry import open_registry

    return open_registry(lake, url or None)


def read_halt(lake: Lake) -> tuple[str | None, dict[str, Any] | None]:
    """(reason, content) of the halt file, (None, None) while trading is not halted; the reason is the one
    serving quotes (``clm.automation.halt.read_halt``, which fails closed on an unreadable file)."""
    content = _read_halt(lake)
    if content is None:
        return None, None
    return str(content["reason"]), content


def build_status(lake: Lake, registry: Registry | None = None, policy: Policy | None = None, *,
                 now: dt.datetime | None = None, recent_jobs: int = RECENT_JOBS) -> StatusReport:
    """Read everything ``clm status`` shows (see the module doc); an empty lake gives an empty report."""
    now = _utc(now) or _utcnow()
    policy = policy or load_policy()
    registry = registry or open_lake_registry(lake)
    exists = registry is not None
    records: list[ModelRecord] = []
    history: list[StatusChange] = []
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in (RETRAINING_JOBS, "drift_events",
                                                               "shadow_test_results", "model_performance_logs",
                                                               "rl_versions")}
    if registry is not None:
        records = registry.list_models()
        history = registry.history()
        for table in tables:
            tables[table] = registry.rows(table)

    health: dict[str, Mapping[str, Any]] = {}
    for row in sorted(tables["model_performance_logs"], key=lambda r: int(r["log_id"])):
        health[str(row["model_id"])] = row
    forecasters = [r for r in records if is_forecaster(r.model_type)]
    active = sorted((r for r in records if r.status == Status.ACTIVE), key=lambda r: (str(r.key), r.model_id))
    shadow = sorted((r for r in forecasters if r.status == Status.SHADOW), key=lambda r: (str(r.key), r.model_id))
    waiting = sorted((r for r in records if r.status == Status.SHADOW and not is_forecaster(r.model_type)),
                     key=lambda r: (str(r.key), r.model_id))
    champions: dict[ModelKey, str] = {r.key: r.model_id for r in active}
    closed = closed_pairs(tables["shadow_test_results"])
    decisions = _last_decisions(history)
    min_samples = policy.auto_promote_threshold.min_samples
    progress = []
    for r in shadow:
        champion = champions.get(r.key)
        decision = decisions.get(r.model_id)
        progress.append(ShadowProgress(
            challenger_id=r.model_id, champion_id=champion, key=str(r.key),
            closed=closed.get((champion, r.model_id), 0) if champion else 0, min_samples=min_samples,
            last_decision=decision[0] if decision else None, last_decision_at=decision[1] if decision else None))

    jobs = jobs_of(tables[RETRAINING_JOBS])
    full = [j for j in jobs if j.job_type in FULL_RETRAIN_JOBS]
    succeeded = [j.ended_at or j.started_at for j in full if j.status == SUCCESS]
    if any(succeeded):
        last_full, source = max(t for t in succeeded if t is not None), RETRAINING_JOBS
    elif forecasters:
        last_full, source = max(r.created_at for r in forecasters), "model registry"
    else:
        last_full, source = None, None
    # the schedule counts from the start of the newest full retrain that succeeded or is under way
    starts = [j.started_at or j.requested_at for j in full if j.status in (SUCCESS, *UNDER_WAY)]
    base = max((t for t in starts if t is not None), default=last_full)
    counts: dict[str, dict[str, int]] = {}
    last_day: dict[str, int] = {}
    for j in jobs:
        by_status = counts.setdefault(j.job_type, {})
        by_status[j.status] = by_status.get(j.status, 0) + 1
        if j.at is not None and j.at > now - dt.timedelta(hours=24):
            last_day[j.status] = last_day.get(j.status, 0) + 1
    retrains = [j for j in jobs if j.job_type in RETRAIN_JOBS and j.status != SKIPPED]

    drift = sorted((_drift_line(r) for r in tables["drift_events"]), key=lambda d: d.event_id)
    drift_counts = dict.fromkeys(SEVERITIES, 0)
    for d in drift:
        drift_counts[d.severity] = drift_counts.get(d.severity, 0) + 1
    last_drift = drift[-1] if drift else None
    check = dt.timedelta(hours=policy.drift_detection.check_interval_hours)
    reason, content = read_halt(lake)
    return StatusReport(
        generated_at=now, lake_root=str(lake.root), registry_exists=exists,
        model_counts={str(s): sum(r.status == s for r in records) for s in Status},
        active=[_model_line(r, health.get(r.model_id)) for r in active],
        shadow=[_model_line(r, health.get(r.model_id)) for r in shadow],
        shadow_progress=progress, shadow_min_samples=min_samples,
        waiting_policies=[_model_line(r, health.get(r.model_id)) for r in waiting],
        last_retrain=retrains[0] if retrains else None,
        last_full_retrain=last_full, last_full_retrain_source=source,
        next_retrain=None if base is None else base + dt.timedelta(days=policy.schedule_interval_days),
        schedule_interval_days=policy.schedule_interval_days,
        min_retrain_interval_hours=policy.min_retrain_interval_hours,
        last_drift=last_drift,
        next_drift_check=None if last_drift is None else last_drift.detected_at + check,
        check_interval_hours=policy.drift_detection.check_interval_hours,
        drift_counts=drift_counts,
        halted=reason is not None, halt_reason=reason, halt=content,
        rl=_rl_lines(tables["rl_versions"]),
        recent_jobs=jobs[:recent_jobs], job_counts=counts, jobs_last_24h=last_day,
        running=[j for j in jobs if j.status in UNDER_WAY],
    )


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    later = seconds < 0
    seconds = abs(seconds)
    if seconds < 90:
        span = f"{seconds:.0f}s"
    elif seconds < 90 * 60:
        span = f"{seconds / 60:.0f}m"
    elif seconds < 48 * 3600:
        span = f"{seconds / 3600:.1f}h"
    else:
        span = f"{seconds / 86400:.1f}d"
    return f"{when:%Y-%m-%d %H:%M} UTC ({'in ' + span if later else span + ' ago'})"


def status_text(report: StatusReport) -> str:
    """The report as the terminal shows it: one screen, most urgent first."""
    now = report.generated_at
    lines = [f"CLM status at {now:%Y-%m-%d %H:%M:%S} UTC  (lake {report.lake_root})"]
    if report.halted:
        source = (report.halt or {}).get("source")
        lines.append(f"  TRADING HALTED:     {report.halt_reason}" + (f" (by {source})" if source else "")
                     + "  -- clm halt --clear to resume")
    else:
        lines.append("  trading:            not halted")
    if not report.registry_exists:
        lines.append("  model registry:     none yet (run 'make run' to train and register models)")
    else:
        counts = ", ".join(f"{n} {s}" for s, n in report.model_counts.items() if n) or "no models"
        lines.append(f"  models:             {counts}")
    lines.append(f"  active models ({len(report.active)}):")
    for m in report.active:
        health = f"  health {m.health} ({_ago(m.health_at, now)})" if m.health else ""
        since = m.promoted_at or m.created_at
        lines.append(f"    {m.key:<36}{m.model_id:<44} version {m.version[:12]}  since {since:%Y-%m-%d %H:%M}"
                     + health)
    if not report.active:
        lines.append("    none")
    lines.append(f"  shadow models ({len(report.shadow)}):")
    for m, p in zip(report.shadow, report.shadow_progress, strict=True):
        decision = f"  last decision {p.last_decision} ({_ago(p.last_decision_at, now)})" if p.last_decision else ""
        against = f"vs {p.champion_id}" if p.champion_id else "no champion for this key"
        lines.append(f"    {m.key:<36}{m.model_id:<44} version {m.version[:12]}  progress {p.closed:,}/"
                     f"{p.min_samples:,} ({p.fraction:.0%}) {against}{decision}")
    if not report.shadow:
        lines.append("    none")
    if report.waiting_policies:
        lines.append(f"  policies waiting for a promotion by hand ({len(report.waiting_policies)}; "
                     "clm policies list | promote):")
        for m in report.waiting_policies:
            lines.append(f"    {m.key:<36}{m.model_id:<44} version {m.version[:12]}  since {m.created_at:%Y-%m-%d %H:%M}")
    source = f" (from {report.last_full_retrain_source})" if report.last_full_retrain_source else ""
    lines.append(f"  last full retrain:  {_ago(report.last_full_retrain, now)}{source}")
    if report.last_retrain is not None:
        j = report.last_retrain
        lines.append(f"  last retrain:       {j.job_type} {j.status} {_ago(j.at, now)}"
                     + (f" ({j.trigger_reason})" if j.trigger_reason else ""))
    overdue = "  OVERDUE" if report.retrain_overdue else ""
    lines.append(f"  next retrain:       {_ago(report.next_retrain, now) if report.next_retrain else 'after the first'}"
                 f"  (every {report.schedule_interval_days:g} days, at most every "
                 f"{report.min_retrain_interval_hours:g} h){overdue}")
    if report.last_drift is not None:
        d = report.last_drift
        lines.append(f"  drift:              {d.severity} ({d.drift_type or 'no drift'}, {d.features} features) "
                     f"checked {_ago(d.detected_at, now)}" + (f"; signal {d.signal_file}" if d.signal_file else ""))
        overdue = "  OVERDUE" if report.drift_check_overdue else ""
        lines.append(f"  next drift check:   {_ago(report.next_drift_check, now)} "
                     f"(every {report.check_interval_hours:g} h){overdue}")
        lines.append("  drift events:       " + ", ".join(f"{s} {n}" for s, n in report.drift_counts.items()))
    else:
        lines.append(f"  drift:              never checked (every {report.check_interval_hours:g} h)")
    if report.rl:
        lines.append("  RL agents:")
        for a in report.rl:
            newest = f"{a.version} ({a.status}, {_ago(a.created_at, now)})" if a.version else "no version yet"
            active = f"; ACTIVE {a.active_version}" if a.active_version and a.active_version != a.version else ""
            pending = f"; {a.pending} {_ago(a.pending_at, now)}" if a.pending else ""
            if a.pending and a.pending_reason:
                pending += f": {a.pending_reason}"
            lines.append(f"    {a.agent:<24}{newest}{active}{pending}")
    else:
        lines.append("  RL agents:          none registered")
    for j in report.running:
        lines.append(f"  under way:          {j.job_type} {j.status} {_ago(j.started_at or j.requested_at, now)}"
                     + (f" (run {j.run_id})" if j.run_id else ""))
    if report.recent_jobs:
        lines.append(f"  recent jobs ({len(report.recent_jobs)} newest):")
        for j in report.recent_jobs:
            took = f" in {j.duration_s:.0f}s" if j.duration_s is not None else ""
            why = f" ({j.trigger_reason})" if j.trigger_reason else ""
            error = f": {j.error[:100]}" if j.error and j.status in (FAILURE, SKIPPED) else ""
            lines.append(f"    #{j.job_id:<5}{j.job_type:<16}{j.status:<10}{_ago(j.at, now)}{took}{why}{error}")
    else:
        lines.append("  recent jobs:        none recorded")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the daily summary
# ------------------------------------------------------------------------------------------------


def _in(when: dt.datetime | None, start: dt.datetime, end: dt.datetime) -> bool:
    return when is not None and start < when <= end


def _symbols_processed(lake: Lake, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Symbols of the candle partitions written in the window (file times: what was (re)ingested)."""
    if not lake.has_table("candles"):
        return {"count": 0, "symbols": [], "dates": []}
    files = [p for p in lake.files("candles")
             if _in(dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC), start, end)]
    if not files:
        return {"count": 0, "symbols": [], "dates": []}
    symbols = sorted(pl.scan_parquet([str(p) for p in files]).select(pl.col("symbol").cast(pl.String))
                     .unique().collect()["symbol"].to_list())
    dates = sorted({seg.split("=", 1)[1] for p in files for seg in p.parent.parts if seg.startswith("date=")})
    return {"count": len(symbols), "symbols": symbols, "dates": dates}


def _exports(lake: Lake, start: dt.datetime, end: dt.datetime) -> tuple[list[dict[str, Any]], int]:
    """Champions whose export (``exports/<type>/<version>/manifest.json``) was written in the window."""
    from clm.registry.export import EXPORT_MANIFEST

    out, total = [], 0
    if not lake.exports_dir.is_dir():
        return out, total
    for manifest in sorted(lake.exports_dir.glob(f"*/*/{EXPORT_MANIFEST}")):
        total += 1
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # an export being replaced right now; the next summary sees it
        at = _utc(data.get("exported_at"))
        if _in(at, start, end):
            out.append({"model_id": data.get("model_id"), "model_type": data.get("model_type"),
                        "version": data.get("version"), "scope": data.get("scope"), "horizon": data.get("horizon"),
                        "exported_at": _iso(at), "path": str(manifest.parent)})
    return out, total


def build_daily_summary(lake: Lake, registry: Registry | None = None, *, now: dt.datetime | None = None,
                        hours: float = 24.0, policy: Policy | None = None) -> dict[str, Any]:
    """The last ``hours`` (default one day) up to ``now``: symbols processed, champions exported, what was
    skipped and why, drift events, promotions and failures, with counts, plus the status at ``now``."""
    end = _utc(now) or _utcnow()
    start = end - dt.timedelta(hours=hours)
    policy = policy or load_policy()
    registry = registry or open_lake_registry(lake)
    history = registry.history() if registry is not None else []
    job_rows = registry.rows(RETRAINING_JOBS) if registry is not None else []
    drift = registry.rows("drift_events") if registry is not None else []

    skipped: list[dict[str, Any]] = []
    if lake.has_table("do_not_trade"):
        for row in lake.read("do_not_trade").sort("symbol").iter_rows(named=True):
            skipped.append({"kind": "do_not_trade", "symbol": row["symbol"], "reason": row["reason"]})
    latest_decision: dict[str, StatusChange] = {}
    for change in history:
        if _in(_utc(change.changed_at), start, end) and change.reason.startswith(SHADOW_DECISION):
            latest_decision[change.model_id] = change
    for model_id, change in sorted(latest_decision.items()):
        word = change.reason[len(SHADOW_DECISION):].split(":", 1)[0].strip()
        if word != "PROMOTE":
            skipped.append({"kind": "shadow_decision", "model_id": model_id, "decision": word,
                            "reason": change.reason, "at": _iso(_utc(change.changed_at))})

    promotions = [
        {"model_id": c.model_id, "from_status": str(c.from_status), "to_status": str(c.to_status),
         "at": _iso(_utc(c.changed_at)), "actor": c.actor, "reason": c.reason}
        for c in history
        if c.to_status == Status.ACTIVE and c.from_status not in (None, Status.ACTIVE)
        and _in(_utc(c.changed_at), start, end)
    ]
    jobs = [j for j in jobs_of(job_rows) if _in(j.at, start, end)]  # jobs that last moved in the window
    failures = [{"job_id": j.job_id, "job_type": j.job_type, "trigger_reason": j.trigger_reason, "error": j.error,
                 "started_at": _iso(j.started_at), "ended_at": _iso(j.ended_at), "run_id": j.run_id}
                for j in reversed(jobs) if j.status == FAILURE]
    finished = [j for j in jobs if j.status in (SUCCESS, FAILURE)]
    for j in reversed(jobs):
        if j.status == SKIPPED:
            skipped.append({"kind": "retrain_skipped", "job_type": j.job_type, "reason": j.error or "",
                            "trigger_reason": j.trigger_reason, "at": _iso(j.at)})
    events = [d for d in sorted((_drift_line(r) for r in drift), key=lambda d: d.event_id)
              if _in(d.detected_at, start, end)]
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for d in events:
        by_severity[d.severity] = by_severity.get(d.severity, 0) + 1
    exported, exports_total = _exports(lake, start, end)
    processed = _symbols_processed(lake, start, end)
    status = build_status(lake, registry, policy, now=end)
    return {
        "date": end.date().isoformat(),
        "generated_at": end.isoformat(),
        "window": {"start": start.isoformat(), "end": end.isoformat(), "hours": hours},
        "symbols_processed": processed,
        "champions_exported": exported,
        "exports_total": exports_total,
        "skipped": skipped,
        "drift_events": {"count": len(events), "by_severity": by_severity,
                         "events": [{**asdict(d), "detected_at": _iso(d.detected_at)} for d in events]},
        "promotions": promotions,
        "failures": failures,
        "jobs": {"finished": len(finished), "failed": len(failures),
                 "error_rate": len(failures) / len(finished) if finished else None,
                 "succeeded": [{"job_id": j.job_id, "job_type": j.job_type, "trigger_reason": j.trigger_reason,
                                "ended_at": _iso(j.ended_at), "duration_s": j.duration_s,
                                "models_trained": j.models_trained}
                               for j in reversed(finished) if j.status == SUCCESS]},
        "counts": {"symbols_processed": processed["count"], "champions_exported": len(exported),
                   "skipped": len(skipped), "drift_events": len(events), "promotions": len(promotions),
                   "failures": len(failures)},
        "status": {"active": [m.model_id for m in status.active], "shadow": [m.model_id for m in status.shadow],
                   "halted": status.halted, "halt_reason": status.halt_reason,
                   "next_retrain": _iso(status.next_retrain), "next_drift_check": _iso(status.next_drift_check)},
    }


def summary_path(lake: Lake, day: dt.date) -> Path:
    return lake.reports_dir / f"daily_summary_{day.isoformat()}.json"
