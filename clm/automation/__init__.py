"""Automation that closes the loop, without Dagster: the sensors and schedules (``sensors/``, ``jobs/``) are
thin wiring around this package.

* ``signals``: scan ``<lake>/signals/{drift,performance,regime}/`` with a cursor, validate every file
  (name, size, JSON, schema; links and folders refused) and move bad ones to ``signals/rejected/<kind>/``
  with a ``.reason.txt``; run keys from name + content hash, stable across daemon restarts.
* ``actions``: drift/performance severity -> LOG_ONLY / PARTIAL_RETRAIN / FULL_RETRAIN /
  HALT_AND_FULL_RETRAIN; a regime change -> RL reset and, if the policy says so, a full retrain.
* ``jobs``: ``retraining_jobs`` rows, the minimum interval between retrains, the job history.
* ``halt``: ``write_halt`` / ``read_halt`` / ``clear_halt`` of ``signals/halt.json``.
* ``rl``: the RL reset request (an ``rl_versions`` row), the reset of the meta-strategy agent and the active
  sizer after a regime change, and the online update from ``feedback_events``.

Operators may drop signal files by hand: write them under a hidden name (``.x.tmp``) and rename, or
write elsewhere and move them in. A drift or performance file (``drift_<YYYYmmddTHHMMSSffffff>Z.json``,
``performance_<...>Z.json``) has exactly ``severity`` (LOW, MEDIUM, HIGH, CRITICAL), ``drift_type``,
``features``, ``statistics``, ``model_types``, ``detected_at`` (``clm.drift.signals``); a regime file
(``regime_<YYYYmmddTHHMMSS>Z.json``) has exactly ``at``, ``confidence``, ``from``, ``symbols``, ``to``.
"""

from clm.automation.actions import Action, Decision, RegimePlan, decide_drift, decide_regime
from clm.automation.halt import clear_halt, read_halt, write_halt
from clm.automation.jobs import (
    DRIFT_CHECK,
    FULL_RETRAIN,
    FULL_RETRAIN_JOBS,
    PARTIAL_RETRAIN,
    RECORDED_JOBS,
    RETRAIN_JOBS,
    RETRAINING_JOBS,
    RL_MAINTENANCE,
    SIGNAL_FILE_TAG,
    TRAINING_JOB,
    TRIGGER_TAG,
    JobStatus,
    Outcome,
    RetrainLedger,
    decision_row,
    drift_check_due,
    job_history,
    last_retrain,
    record_run,
    run_row,
)
from clm.automation.rl import (
    META_AGENT,
    RESET_REQUESTED,
    AgentReset,
    OnlineOutcome,
    online_update,
    request_rl_reset,
    reset_rl_agents,
)
from clm.automation.signals import (
    DRIFT_KINDS,
    MAX_SIGNAL_BYTES,
    REGIME_KIND,
    REJECTED_KIND,
    RegimeSignal,
    SignalFile,
    SignalScan,
    check_file,
    dump_cursor,
    load_cursor,
    parse_regime_signal,
    parse_signal,
    reject_signal,
    scan_signals,
)

__all__ = [
    "DRIFT_CHECK",
    "DRIFT_KINDS",
    "FULL_RETRAIN",
    "FULL_RETRAIN_JOBS",
    "MAX_SIGNAL_BYTES",
    "META_AGENT",
    "PARTIAL_RETRAIN",
    "RECORDED_JOBS",
    "REGIME_KIND",
    "REJECTED_KIND",
    "RESET_REQUESTED",
    "RETRAINING_JOBS",
    "RETRAIN_JOBS",
    "RL_MAINTENANCE",
    "SIGNAL_FILE_TAG",
    "TRAINING_JOB",
    "TRIGGER_TAG",
    "Action",
    "AgentReset",
    "Decision",
    "JobStatus",
    "OnlineOutcome",
    "Outcome",
    "RegimePlan",
    "RegimeSignal",
    "RetrainLedger",
    "SignalFile",
    "SignalScan",
    "check_file",
    "clear_halt",
    "decide_drift",
    "decide_regime",
    "decision_row",
    "drift_check_due",
    "dump_cursor",
    "job_history",
    "last_retrain",
    "load_cursor",
    "online_update",
    "parse_regime_signal",
    "parse_signal",
    "read_halt",
    "record_run",
    "reject_signal",
    "request_rl_reset",
    "reset_rl_agents",
    "run_row",
    "scan_signals",
    "write_halt",
]
