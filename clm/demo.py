"""`make demo-loop`: the live replay. A synthetic market with a planted regime shift is released day by
day into the landing folder of a fresh lake while ``dagster dev`` (webserver + daemon) runs, so the real
sensors do the work: landing_sensor ingests each day, monitoring_after_ingest_sensor runs the monitoring
(the champion predicts, outcomes close, drift is measured), drift_sensor launches the retrain, the next
days' shadow tests decide on the challengers (the demo policy auto-promotes), regime_sensor launches the
RL reset. The script only drops files, launches the first training once, waits and reads.

At the end it prints the timeline merged from Dagster's run history and the registry, exits 0 only when
it shows drift -> retrain -> shadow -> decision and an RL reset, and stops every process it started.
The lake and the Dagster home are kept (a temp folder, printed) so the UI can inspect them afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_ENGINES = "lightgbm_classifier,lightgbm_regressor"
LANDING_PREFIX = "SYNTH-5m-"
SEVERE = ("MEDIUM", "HIGH", "CRITICAL")
RETRAIN_JOBS = ("full_retrain", "partial_retrain")
# the sensors the story needs (clm's sensors default to RUNNING; one stopped by hand is started again)
DEMO_SENSORS = ("landing_sensor", "monitoring_after_ingest_sensor", "drift_sensor", "regime_sensor",
                "retraining_started_sensor", "retraining_succeeded_sensor", "retraining_failed_sensor")
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED")

# The demo policy: the repository's policy.yaml with what a two-week market needs: decisions possible on a
# few hundred closed signals (max_samples caps the test, so it ends in PROMOTE or REJECT), retrains not
# throttled, drift windows of days rather than weeks. Day-to-day regime switching in this market moves
# many features by KS D ~0.1-0.2 on its own (drift share up to ~0.6 at the default D >= 0.1, i.e. an
# alarm every day); measured on the demo market, D >= 0.3 or PSI >= 1.0 flags at most ~0.2 of the
# features on an ordinary day and ~0.55 on the day of the planted shift, hence the shares below
# (HIGH: a full retrain; CRITICAL, which also halts trading, kept out of reach). The champions trained on
# a week of synthetic bars are weak (first out-of-sample day: win rate 0.34-0.42, 5-20 longs per short):
# at the repository's supervision thresholds the supervisor grades them CRITICAL on day one, which halts
# trading and retrains before the planted shift is even released; the demo's supervision only catches
# a model gone badly wrong, so the story told is the planted shift's.
POLICY_OVERRIDES: dict[str, Any] = {
    "auto_promote": True,
    "min_retrain_interval_hours": 0.0,
    "retrain_on_regime_change": False,
    "auto_promote_threshold": {"min_samples": 200, "max_samples": 400, "n_bootstrap": 500},
    "drift_detection": {
        "reference_days": 4, "recent_days": 1,
        "ks": {"statistic": 0.3},
        "psi": {"moderate": 0.25, "significant": 1.0},
        "severity_rules": {"medium_drift_share": 0.3, "high_drift_share": 0.4, "critical_drift_share": 0.95,
                           "prediction_drift": "LOW"},
    },
    "supervision": {"min_win_rate": 0.25, "max_calibration_error": 0.3, "min_long_short_ratio": 0.02,
                    "max_long_short_ratio": 50.0},
    "rl_maintenance": {"reset_on_regime_change": True},
}


@dataclass(frozen=True)
class DemoSettings:
    symbols: int = 6
    days: int = 11
    initial_days: int = 7  # released at once, then trained on
    shift_day: int = 8  # index of the first day of the planted panic-heavy regime mix
    seed: int = 7
    start: dt.date = dt.date(2024, 1, 1)
    deadline_s: float = 14 * 60
    step_timeout_s: float = 300

    def day(self, index: int) -> dt.date:
        return self.start + dt.timedelta(days=index)


def log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------
# setup: policy, market, landing files
# ------------------------------------------------------------------------------------------------


def _merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(base.get(key) or {}, value) if isinstance(value, Mapping) else value
    return merged


def demo_policy(base_path: Path = REPO / "policy.yaml") -> dict:
    """The repository's policy with the demo's overrides; checked by clm.policy before use."""
    return _merge(yaml.safe_load(base_path.read_text()), POLICY_OVERRIDES)


def market(settings: DemoSettings) -> pl.DataFrame:
    """The whole synthetic market (5-minute bars) with its planted shift; released a day at a time."""
    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource

    config = SyntheticConfig(symbols=settings.symbols, days=settings.days, timeframe="5m", seed=settings.seed,
                             start=settings.start, regime_shift_day=settings.shift_day)
    bars = SyntheticSource(config).load().bars
    return bars.select("timestamp", "symbol", "open", "high", "low", "close", "volume", "spread_bps")


def write_day(bars: pl.DataFrame, day: dt.date, landing: Path) -> Path:
    """One day's bars as ``SYNTH-5m-<day>.parquet`` in the landing folder, atomically: written under a
    hidden name (the landing scan skips dot files), then renamed, so the sensor never reads half a file."""
    frame = bars.filter(pl.col("timestamp").dt.date() == day).sort("symbol", "timestamp")
    if frame.is_empty():
        raise ValueError(f"the market has no bars on {day}")
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / f"{LANDING_PREFIX}{day.isoformat()}.parquet"
    partial = landing / f".{target.name}.part"
    frame.write_parquet(partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return target


# ------------------------------------------------------------------------------------------------
# the timeline
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: dt.datetime
    source: str  # "dagster" or a registry table
    kind: str  # run, drift, retrain, shadow, decision, rl_reset, active, registered, job, note
    text: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def run_events(runs: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Dagster's run history: one event per run at its start (its creation while still queued)."""
    events = []
    for run in runs:
        tags = run.get("tags") or {}
        start, end = _utc(run.get("startTime")), _utc(run.get("endTime"))
        at = start or _utc(run.get("creationTime"))
        if at is None:
            continue
        took = f" {(end - start).total_seconds():.0f}s" if start and end else ""
        span = ""
        if "dagster/asset_partition_range_start" in tags:
            span = f" days {tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
        trigger = tags.get("clm/trigger", "-")
        job, status = run["jobName"], run["status"]
        kind = "run"
        if job in RETRAIN_JOBS and status == "SUCCESS" and trigger.split(":")[0] in ("drift", "performance"):
            kind = "retrain"
        elif job == "rl_maintenance" and status == "SUCCESS":
            kind = "rl_reset"
        events.append(Event(at, "dagster", kind, f"{job} {status}{took}{span} (trigger {trigger}; "
                                                  f"run {run['runId'][:8]})",
                            {"job": job, "status": status, "trigger": trigger, "run_id": run["runId"]}))
    return events


def registry_events(history: Iterable[Any], drift_events: Iterable[Mapping[str, Any]],
                    retraining_jobs: Iterable[Mapping[str, Any]], rl_versions: Iterable[Mapping[str, Any]],
                    ) -> list[Event]:
    """The registry's side: status changes (registrations, decisions, promotions, rejections), drift events,
    retraining_jobs decisions (REQUESTED / SKIPPED: the runs themselves come from Dagster) and RL versions."""
    events = []
    for change in history:
        to, frm = str(change.to_status), None if change.from_status is None else str(change.from_status)
        reason = change.reason or ""
        at = _utc(change.changed_at)
        if frm is None:
            kind = "shadow" if to == "SHADOW" else "registered"
            text = f"{change.model_id} registered {to}"
        elif "shadow test: " in reason and frm == "SHADOW" and to in ("ACTIVE", "REJECTED"):
            # clm.shadow.apply_decisions: "promoted: shadow test: ..." / "<status change>: shadow test: ..."
            kind, text = "decision", f"{change.model_id} {frm} -> {to}: {reason}"
        elif frm == to:
            kind, text = "note", f"{change.model_id} {reason}"
        else:
            kind, text = "active" if to == "ACTIVE" else "status", f"{change.model_id} {frm} -> {to}: {reason}"
        events.append(Event(at, "status_history", kind, text, {"model_id": change.model_id, "actor": change.actor,
                                                               "evidence": dict(change.evidence or {})}))
    for row in drift_events:
        severe = row["severity"] in SEVERE and bool(row.get("signal_file"))
        features = row.get("features") or []
        events.append(Event(_utc(row["detected_at"]), "drift_events", "drift" if severe else "drift_check",
                            f"drift {row['severity']} ({row['drift_type']}), {len(features)} features"
                            + (f", signal {Path(row['signal_file']).name}" if row.get("signal_file") else ""),
                            {"severity": row["severity"]}))
    for row in retraining_jobs:
        if row["status"] in ("REQUESTED", "SKIPPED"):
            events.append(Event(_utc(row["started_at"]), "retraining_jobs", "job",
                                f"{row['job_type']} {row['status']}: {row.get('trigger_reason') or ''}"[:200]))
    for row in rl_versions:
        events.append(Event(_utc(row["created_at"]), "rl_versions", "rl_version",
                            f"{row['agent']} {row['version']} {row['status']}: {row.get('reason') or ''}"[:200]))
    return events


def timeline(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.at, e.source != "dagster"))


@dataclass(frozen=True)
class Story:
    """drift -> retrain -> shadow -> decision, each the first after the one before, and an RL reset (the
    first after the drift, else the first of all)."""

    drift: Event | None
    retrain: Event | None
    shadow: Event | None
    decision: Event | None
    rl_reset: Event | None

    @property
    def missing(self) -> list[str]:
        return [name for name in ("drift", "retrain", "shadow", "decision", "rl_reset") if getattr(self, name) is None]

    @property
    def complete(self) -> bool:
        return not self.missing


def story(events: Sequence[Event]) -> Story:
    ordered = timeline(events)

    def first(kind: str, after: Event | None, *, start: bool = True) -> Event | None:
        if start and after is None:
            return None
        return next((e for e in ordered if e.kind == kind and (after is None or e.at >= after.at)), None)

    drift = first("drift", None, start=False)
    retrain = first("retrain", drift)
    shadow = first("shadow", retrain)
    decision = first("decision", shadow)
    # the RL reset that follows the drift if there is one (the regime change behind the shift is detected by
    # the ingest, so its reset can also come just before the drift the monitoring measures), else any
    rl_reset = first("rl_reset", drift) or first("rl_reset", None, start=False)
    return Story(drift, retrain, shadow, decision, rl_reset)


def render(events: Sequence[Event], found: Story) -> str:
    marks = {id(e): name.upper() for name in ("drift", "retrain", "shadow", "decision", "rl_reset")
             if (e := getattr(found, name)) is not None}
    lines = []
    for event in timeline(events):
        if event.kind in ("drift_check", "note"):
            continue  # every monitoring run's LOW drift row and recorded CONTINUE_TESTING: noise here
        mark = marks.get(id(event), "")
        lines.append(f"{event.at:%H:%M:%S}  {mark:<9} {event.source:<15} {event.text}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the live loop
# ------------------------------------------------------------------------------------------------


class Deadline(RuntimeError):
    pass


class Demo:
    def __init__(self, settings: DemoSettings, root: Path):
        from clm.devserver import DevServer
        from clm.lake import Lake

        self.settings, self.root = settings, root
        self.began = time.monotonic()
        self.lake = Lake(root / "lake")
        self.home = root / "dagster_home"
        self.policy_path = root / "policy.yaml"
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "CLM_LAKE": str(self.lake.root),
                    "CLM_SOURCE": "landing", "CLM_POLICY": str(self.policy_path), "CLM_ENGINES": DEMO_ENGINES,
                    "CLM_PARTITION_START": settings.start.isoformat()}
        self.env.pop("CLM_REGISTRY_URL", None)
        self.server = DevServer(REPO, self.env, root / "dagster_dev.log")

    # -- setup --
    def prepare(self) -> pl.DataFrame:
        from clm.devserver import dagster_command
        from clm.policy import load_policy

        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        subprocess.run([dagster_command(), "instance", "concurrency", "set", "duckdb_writer", "1"], env=self.env,
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        self.policy_path.write_text(yaml.safe_dump(demo_policy(), sort_keys=False))
        load_policy(self.policy_path)  # a bad override fails here, naming the key, not in the first run
        self.lake.landing_dir.mkdir(parents=True, exist_ok=True)
        return market(self.settings)

    # -- waiting --
    def left(self) -> float:
        return self.settings.deadline_s - (time.monotonic() - self.began)

    def wait(self, what: str, check: Callable[[], Any], timeout: float | None = None, every: float = 3) -> Any:
        """Poll ``check`` until it returns something truthy; a step's own timeout and the global deadline."""
        limit = min(timeout or self.settings.step_timeout_s, self.left())
        deadline = time.monotonic() + limit
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise Deadline(f"gave up waiting for {what} after {limit:.0f}s")
            time.sleep(every)

    def runs(self) -> list[dict]:
        return self.server.runs()

    def finished(self, run_id: str) -> dict | None:
        run = next((r for r in self.runs() if r["runId"] == run_id), None)
        return run if run and run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    def _require_success(self, run: dict, what: str) -> dict:
        if run["status"] != "SUCCESS":
            raise RuntimeError(f"{what}: run {run['runId']} ended {run['status']} (see the UI / the log)")
        return run

    def wait_ingest(self, last_day: dt.date) -> dict:
        """The landing sensor's ingest run reaching ``last_day``, finished."""
        def done():
            for run in self.runs():
                if (run["jobName"] == "ingest_job" and run["tags"].get("dagster/asset_partition_range_end", "")
                        >= last_day.isoformat() and run["status"] in ("SUCCESS", "FAILURE", "CANCELED")):
                    return run
            return None
        return self._require_success(self.wait(f"the ingest of {last_day}", done), f"ingest of {last_day}")

    def wait_monitoring(self, ingest_run: dict) -> dict:
        """The monitoring run the ingest run's success launched (monitoring_after_ingest_sensor), finished."""
        trigger = f"ingest:{ingest_run['runId']}"

        def done():
            return next((r for r in self.runs() if r["jobName"] == "monitoring_job" and r["tags"].get("clm/trigger")
                         == trigger and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")), None)
        return self._require_success(self.wait(f"the monitoring after run {ingest_run['runId'][:8]}", done),
                                     "monitoring")

    def wait_quiet(self, what: str, timeout: float | None = None) -> None:
        self.wait(what, lambda: not any(r["status"] in IN_FLIGHT for r in self.runs()), timeout)

    def registry_rows(self):
        from clm.registry import open_registry

        registry = open_registry(self.lake)
        return (registry.history(), registry.rows("drift_events"), registry.rows("retraining_jobs"),
                registry.rows("rl_versions"))

    def events(self) -> list[Event]:
        return run_events(self.runs()) + registry_events(*self.registry_rows())

    def latest_drift(self) -> dict | None:
        from clm.registry import open_registry

        rows = open_registry(self.lake).rows("drift_events", limit=1)
        return rows[0] if rows else None

    # -- the replay --
    def run(self) -> Story:
        settings = self.settings
        bars = self.prepare()
        log(f"market: {settings.symbols} symbols x {settings.days} days of 5-minute bars from {settings.start}, "
            f"regime shift planted on day {settings.shift_day} ({settings.day(settings.shift_day)})")
        self.server.start()
        log(f"dagster dev starting on http://127.0.0.1:{self.server.port} (log {self.server.log_path})")
        self.server.wait_for_location()
        started = self.server.ensure_sensors_running(DEMO_SENSORS)
        log(f"code location loaded; sensors running{' (started ' + ', '.join(started) + ')' if started else ''}")

        first = [settings.day(i) for i in range(settings.initial_days)]
        for day in first:
            write_day(bars, day, self.lake.landing_dir)
        log(f"released days {first[0]} .. {first[-1]} into {self.lake.landing_dir}")
        ingest = self.wait_ingest(first[-1])
        log(f"landing_sensor ingested them (run {ingest['runId'][:8]})")
        self.wait_monitoring(ingest)
        log("monitoring ran after the ingest (no champion yet)")
        self.wait_quiet("the runs in flight before the first training")
        run_id = self.server.launch("training_job", tags={"clm/trigger": "demo:initial-training"})
        log(f"initial training launched once by hand (run {run_id[:8]}): the champions")
        self._require_success(self.wait("the initial training", lambda: self.finished(run_id)), "initial training")
        log("initial training done: champions ACTIVE")

        found = story(self.events())
        for index in range(settings.initial_days, settings.days):
            day = settings.day(index)
            write_day(bars, day, self.lake.landing_dir)
            log(f"released {day}{'  <- planted regime shift' if index == settings.shift_day else ''}")
            ingest = self.wait_ingest(day)
            log(f"  ingested (run {ingest['runId'][:8]})")
            self.wait_monitoring(ingest)
            drift = self.latest_drift()
            log(f"  monitoring done: drift {drift['severity'] if drift else '?'}"
                + (f", signal {Path(drift['signal_file']).name}" if drift and drift.get("signal_file") else ""))
            if drift and drift["severity"] in SEVERE and drift.get("signal_file"):
                # drift_sensor acts on the signal file: wait for its retrain to start and finish
                since = _utc(drift["detected_at"])

                def retrain_done():
                    for run in self.runs():
                        start = _utc(run.get("creationTime"))
                        if (run["jobName"] in RETRAIN_JOBS and start and start >= since
                                and run["status"] in ("SUCCESS", "FAILURE", "CANCELED")):
                            return run
                    return None
                retrain = self.wait("drift_sensor's retrain", retrain_done)
                log(f"  drift_sensor -> {retrain['jobName']} {retrain['status']} "
                    f"(trigger {retrain['tags'].get('clm/trigger')})")
            self.wait_quiet(f"the runs in flight after {day}", timeout=240)
            found = story(self.events())
            log(f"  story so far: {', '.join(n for n in ('drift', 'retrain', 'shadow', 'decision', 'rl_reset') if n not in found.missing) or 'nothing yet'}")
            if found.complete:
                break
        return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="folder for the lake, the Dagster home and the logs "
                        "(default: a new temp folder, kept afterwards)")
    parser.add_argument("--symbols", type=int, default=DemoSettings.symbols)
    parser.add_argument("--deadline", type=float, default=DemoSettings.deadline_s, help="seconds for the loop")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="clm-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = DemoSettings(symbols=args.symbols, deadline_s=args.deadline)
    began = time.monotonic()
    log(f"demo folder (kept): {root}")
    demo = Demo(settings, root)
    found, error = None, None
    try:
        found = demo.run()
    except (Deadline, RuntimeError, TimeoutError) as exc:
        error = exc
        log(f"STOPPED: {exc}")
    except KeyboardInterrupt:
        error = KeyboardInterrupt("interrupted")
        log("interrupted")
    finally:
        events = None
        try:
            if demo.server.proc is not None and demo.server.location is not None:
                events = demo.events()  # Dagster's run history over GraphQL, while the server still runs
        except Exception as exc:  # noqa: BLE001 - the stop below must happen whatever went wrong
            log(f"could not read the timeline: {exc}")
        log("stopping dagster dev (SIGTERM to its process group)")
        demo.server.stop()
    if events is not None:
        found = story(events)
        print("\n=== timeline (Dagster run history + registry) ===")
        print(render(events, found))
        print()
    wall = time.monotonic() - began
    ok = found is not None and found.complete and error is None
    if found is not None:
        print("story: " + " -> ".join(f"{n}{'' if getattr(found, n) else ' MISSING'}"
                                      for n in ("drift", "retrain", "shadow", "decision", "rl_reset")))
    print(f"wall time {wall:.0f}s; {'PASS' if ok else 'FAIL'}")
    print(f"inspect: DAGSTER_HOME={demo.home} CLM_LAKE={demo.lake.root} CLM_SOURCE=landing "
          f"CLM_POLICY={demo.policy_path} CLM_ENGINES={DEMO_ENGINES} CLM_PARTITION_START={settings.start} "
          f"{Path(sys.executable).with_name('dagster')} dev -w workspace.yaml -h 127.0.0.1 -p 3000")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
