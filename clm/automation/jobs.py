"""The ``retraining_jobs`` log: what was asked for, what ran, and the policy's minimum interval.

The table is append-only, so a job is a few rows (each its own ``job_id``), joined by run key:

* ``REQUESTED`` or ``SKIPPED``: written by the sensor or schedule that decided, before the run exists
  (``tags["clm/run_key"]``; a SKIPPED row's ``error`` says why it did not run);
* ``STARTED``, then ``SUCCESS`` / ``FAILURE`` / ``CANCELED``: written by the run-status sensors with the
  run's id and tags (``tags["dagster/run_key"]`` links them to the request), start, end, duration,
  the models trained and the error.

``job_history`` folds them into one entry per job; ``last_retrain`` is the newest retrain requested or
started. A REQUESTED row counts at once, so two signals seconds apart cannot both slip in before the
first run starts. The interval binds automated requests only: a run launched by hand always runs.

A request is decided once per run key: asked again (a sensor re-reading a folder with a fresh cursor,
a retried tick), the ledger replays the recorded decision and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clm.registry.base import Registry

RETRAINING_JOBS = "retraining_jobs"
# The Dagster jobs (jobs/__init__.py) by name: clm never imports dagster.
FULL_RETRAIN = "full_retrain"
PARTIAL_RETRAIN = "partial_retrain"
RL_MAINTENANCE = "rl_maintenance"
DRIFT_CHECK = "drift_check"
TRAINING_JOB = "training_job"  # the hand-launched training of every engine: a full retrain too
RETRAIN_JOBS = (FULL_RETRAIN, PARTIAL_RETRAIN, TRAINING_JOB)
FULL_RETRAIN_JOBS = (FULL_RETRAIN, TRAINING_JOB)
RECORDED_JOBS = (*RETRAIN_JOBS, RL_MAINTENANCE)  # the jobs the run-status sensors log

# Run tags every automated run carries
TRIGGER_TAG = "clm/trigger"  # e.g. "drift:HIGH", "regime:trend->panic", "schedule:weekly", "manual"
SIGNAL_FILE_TAG = "clm/signal_file"
REASON_TAG = "clm/reason"
RUN_KEY_TAG = "clm/run_key"
DAGSTER_RUN_KEY_TAG = "dagster/run_key"  # what Dagster stamps on a run launched with a run key
MAX_TAG_CHARS = 1000
SCHEDULE_SLACK = dt.timedelta(hours=1)  # a weekly tick a few seconds early is still due


class JobStatus(enum.StrEnum):
    REQUESTED = "REQUESTED"
    SKIPPED = "SKIPPED"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"


DECIDED = (JobStatus.REQUESTED, JobStatus.SKIPPED)
FINAL = (JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELED)


def _utc(value: dt.datetime | None) -> dt.datetime:
    value = value or dt.datetime.now(dt.UTC)
    if value.tzinfo is None:
        raise ValueError(f"{value} has no time zone")
    return value.astimezone(dt.UTC)


def tag_text(value: Any) -> str:
    """A run tag value: a string no longer than Dagster's UI shows comfortably."""
    text = str(value)
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


def _tags(row: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = row.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def row_run_key(row: Mapping[str, Any]) -> str | None:
    """The run key a row belongs to: the request's own, or the one Dagster stamped on the run."""
    tags = _tags(row)
    return tags.get(RUN_KEY_TAG) or tags.get(DAGSTER_RUN_KEY_TAG)


# ---- rows -------------------------------------------------------------------------------------------
def decision_row(status: JobStatus | str, job_type: str, *, run_key: str, trigger_reason: str,
                 tags: Mapping[str, str], at: dt.datetime, skip_reason: str | None = None) -> dict[str, Any]:
    """A REQUESTED or SKIPPED row: the decision, before any run exists."""
    status = JobStatus(status)
    if status not in DECIDED:
        raise ValueError(f"a decision is REQUESTED or SKIPPED, got {status}")
    if (status is JobStatus.SKIPPED) != bool(skip_reason):
        raise ValueError("a SKIPPED row needs its skip_reason, and only a SKIPPED row has one")
    return {
        "job_type": job_type, "trigger_reason": trigger_reason, "status": str(status), "started_at": _utc(at),
        "ended_at": None, "duration_s": None, "models_trained": [], "error": skip_reason, "run_id": None,
        "tags": {**tags, RUN_KEY_TAG: run_key},
    }


def run_row(status: JobStatus | str, job_type: str, *, run_id: str, tags: Mapping[str, str],
            started_at: dt.datetime | None, ended_at: dt.datetime | None = None,
            models_trained: Sequence[Mapping[str, Any]] = (), error: str | None = None) -> dict[str, Any]:
    """A row about a run: STARTED, or its end (with the duration when both times are known)."""
    status = JobStatus(status)
    if status in DECIDED:
        raise ValueError(f"{status} is a decision, not a run status")
    started = _utc(started_at) if started_at else None
    ended = _utc(ended_at) if ended_at else None
    duration = (ended - started).total_seconds() if started and ended else None
    reason = tags.get(REASON_TAG) or tags.get(TRIGGER_TAG) or "manual"
    tags = {k: v for k, v in tags.items() if not k.startswith(".")}  # Dagster's hidden ones (.dagster/grpc_info)
    return {
        "job_type": job_type, "trigger_reason": reason, "status": str(status), "started_at": started,
        "ended_at": ended, "duration_s": duration, "models_trained": [dict(m) for m in models_trained],
        "error": error, "run_id": run_id, "tags": tags,
    }


def record_run(registry: Registry, row: Mapping[str, Any]) -> bool:
    """Append a run row unless that run already has a row of that status (a re-delivered event)."""
    if registry.rows(RETRAINING_JOBS, where={"run_id": row["run_id"], "status": row["status"]}, limit=1):
        return False
    registry.append(RETRAINING_JOBS, [row])
    return True


# ---- reading ----------------------------------------------------------------------------------------
def last_retrain(rows: Iterable[Mapping[str, Any]], *, job_types: Sequence[str] = RETRAIN_JOBS,
                 ignore_run_key: str | None = None) -> Mapping[str, Any] | None:
    """The newest row of a retrain that was requested or ran (not SKIPPED), by ``started_at``."""
    best = None
    for row in rows:
        if row["job_type"] not in job_types or row["status"] == JobStatus.SKIPPED or row["started_at"] is None:
            continue
        if ignore_run_key is not None and row_run_key(row) == ignore_run_key:
            continue
        if best is None or row["started_at"] > best["started_at"]:
            best = row
    return best


def job_history(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per job, newest first: its request (if automated), its run, its latest status."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        key = row_run_key(row) or (f"run:{row['run_id']}" if row.get("run_id") else f"row:{row['job_id']}")
        groups.setdefault(key, []).append(row)
    history = []
    for key, members in groups.items():
        members = sorted(members, key=lambda r: r["job_id"])
        decision = next((r for r in members if r["status"] in DECIDED), None)
        runs = [r for r in members if r["status"] not in DECIDED]
        latest = members[-1]
        started = next((r["started_at"] for r in runs if r["started_at"] is not None), None)
        final = next((r for r in reversed(runs) if r["status"] in FINAL), None)
        history.append({
            "run_key": None if key.startswith(("run:", "row:")) else key,
            "run_id": next((r["run_id"] for r in runs if r["run_id"]), None),
            "job_type": latest["job_type"],
            "trigger_reason": (decision or latest)["trigger_reason"],
            "status": (final or latest)["status"],  # the sensors may log the end before the start
            "requested_at": decision["started_at"] if decision else None,
            "started_at": started,
            "ended_at": final["ended_at"] if final else None,
            "duration_s": final["duration_s"] if final else None,
            "models_trained": final["models_trained"] if final else [],
            "error": (final or decision or latest)["error"],
            "last_job_id": latest["job_id"],
        })
    history.sort(key=lambda h: h["last_job_id"], reverse=True)
    return history


# ---- deciding ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What became of a retrain request."""

    launch: bool  # hand Dagster the run request (new, or a replay Dagster dedupes by run key)
    new: bool  # decided now (False: replayed an earlier decision)
    status: JobStatus
    reason: str


class RetrainLedger:
    """The ``retraining_jobs`` rows, read once per sensor or schedule evaluation, and the decisions
    taken in it (each appended at once, so the next request in the same evaluation sees it)."""

    def __init__(self, registry: Registry, *, now: dt.datetime | None = None):
        self.registry = registry
        self.now = _utc(now)
        self.rows: list[dict[str, Any]] = list(registry.rows(RETRAINING_JOBS))

    def decision(self, run_key: str) -> Mapping[str, Any] | None:
        """The REQUESTED or SKIPPED row already written for ``run_key``, if any."""
        return next((r for r in self.rows if r["status"] in DECIDED and _tags(r).get(RUN_KEY_TAG) == run_key), None)

    def ran(self, run_key: str) -> bool:
        return any(r["status"] not in DECIDED and row_run_key(r) == run_key for r in self.rows)

    def blocked(self, min_interval_hours: float, *, run_key: str | None = None) -> str | None:
        """Why a retrain now would break the policy's minimum interval (None: it would not)."""
        if not (isinstance(min_interval_hours, (int, float)) and math.isfinite(min_interval_hours)
                and min_interval_hours >= 0):
            raise ValueError(f"min_interval_hours must be a finite number >= 0, got {min_interval_hours!r}")
        if min_interval_hours == 0:
            return None
        last = last_retrain(self.rows, ignore_run_key=run_key)
        if last is None:
            return None
        age_h = (self.now - last["started_at"]).total_seconds() / 3600
        if age_h >= min_interval_hours:
            return None
        return (f"inside the minimum interval: the last retrain ({last['job_type']}, {last['status']} "
                f"{last['started_at']:%Y-%m-%dT%H:%M:%SZ}, {last['trigger_reason']}) was {age_h:.2f} h ago, "
                f"policy min_retrain_interval_hours is {min_interval_hours:g}")

    def request(self, job_type: str, *, run_key: str, trigger_reason: str, tags: Mapping[str, str],
                min_interval_hours: float) -> Outcome:
        """Decide a retrain once: REQUESTED (launch it) or SKIPPED inside the minimum interval, each
        written as a row; asked again for the same run key, the recorded decision is replayed."""
        earlier = self.decision(run_key)
        if earlier is not None:
            status = JobStatus(earlier["status"])
            launch = status is JobStatus.REQUESTED and not self.ran(run_key)
            why = earlier["error"] or earlier["trigger_reason"]
            return Outcome(launch, False, status,
                           f"{run_key} was decided at {earlier['started_at']:%Y-%m-%dT%H:%M:%SZ}: {status} ({why})")
        blocked = self.blocked(min_interval_hours, run_key=run_key)
        status = JobStatus.SKIPPED if blocked else JobStatus.REQUESTED
        row = decision_row(status, job_type, run_key=run_key, trigger_reason=trigger_reason, tags=tags,
                           at=self.now, skip_reason=blocked)
        self.registry.append(RETRAINING_JOBS, [row])
        self.rows.insert(0, {**row, "job_id": max((r["job_id"] for r in self.rows), default=0) + 1})
        return Outcome(not blocked, True, status, blocked or trigger_reason)

    def full_retrain_due(self, interval_days: float) -> tuple[bool, str]:
        """Whether the newest full retrain that succeeded or is under way is ``interval_days`` old
        (``SCHEDULE_SLACK`` early counts: ticks land a little before the last run's start)."""
        interval = dt.timedelta(days=interval_days)
        current = [h for h in job_history(self.rows) if h["job_type"] in FULL_RETRAIN_JOBS
                   and h["status"] in (JobStatus.SUCCESS, JobStatus.STARTED, JobStatus.REQUESTED)]
        times = [h["started_at"] or h["requested_at"] for h in current]
        last = max((t for t in times if t is not None), default=None)
        if last is None:
            return True, "no full retrain has succeeded yet"
        age = self.now - last
        if age + SCHEDULE_SLACK >= interval:
            return True, f"the last full retrain started {age.total_seconds() / 86400:.2f} days ago " \
                         f"(policy schedule_interval_days {interval_days:g})"
        return False, (f"the last full retrain started {last:%Y-%m-%dT%H:%M:%SZ}, "
                       f"{age.total_seconds() / 86400:.2f} days ago; due after {interval_days:g} days")


def drift_check_due(tick: dt.datetime, interval_hours: float) -> bool:
    """An hourly tick is due every ``interval_hours`` (rounded to whole hours, at least one), counted
    from the epoch: 6 -> 00, 06, 12 and 18 UTC."""
    every = max(1, round(interval_hours))
    hours = int(_utc(tick).timestamp() // 3600)
    return hours % every == 0
