"""`clm status`: champions, challengers with shadow progress, retrain and drift timing, halt, RL, jobs."""

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from clm.automation.jobs import (
    DAGSTER_RUN_KEY_TAG,
    FULL_RETRAIN,
    PARTIAL_RETRAIN,
    REASON_TAG,
    RL_MAINTENANCE,
    TRIGGER_TAG,
    decision_row,
    run_row,
)
from clm.cli import main
from clm.lake import Lake
from clm.models.artifacts import write_json, write_manifest
from clm.policy import Policy
from clm.registry import POOLED, Lineage, NewModel, Registry, open_registry
from clm.serving.champion import halt_reason
from clm.shadow import decide, read_results
from clm.status import build_status, closed_pairs, status_text

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def make_model(root: Path, n: int, *, model_type: str = "lgbm", train_seconds: float | None = None) -> NewModel:
    """A real artefact folder (files + manifest) and the NewModel a training run hands to the registry."""
    version = f"{n:012d}" + "e" * 52
    folder = root / "models" / model_type / version
    write_json(folder, "model.json", {"weights": list(range(n + 1))})
    manifest = write_manifest(folder, ["model.json"], engine=model_type)
    lineage = Lineage(
        training_window=("2024-01-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"), feature_version="fv-1",
        feature_count=31, label_config={"horizon": 12}, code_version="git:abc", data_hash="d" * 64,
        seeds={"seed": n}, config={}, artifact_checksums=manifest.files,
    )
    metrics = {} if train_seconds is None else {"train_seconds": train_seconds}
    return NewModel(model_type=model_type, version=version, scope=POOLED, horizon=12, file_path=str(folder),
                    lineage=lineage, metrics=metrics)


def result(champion: str, challenger: str, bar: int, *, symbol: str = "AAA", champion_signal: float = 1.0,
           challenger_signal: float = -1.0, net: tuple[float, float] = (0.001, 0.002)) -> dict:
    ts = START + dt.timedelta(minutes=5 * bar)
    return {"champion_id": champion, "challenger_id": challenger, "symbol": symbol, "timestamp": ts, "horizon": 12,
            "champion_prediction": 0.1, "challenger_prediction": -0.1, "champion_signal": champion_signal,
            "challenger_signal": challenger_signal, "outcome_return": 0.001, "champion_net_return": net[0],
            "challenger_net_return": net[1], "closed_at": ts + dt.timedelta(hours=1)}


def write_jobs(reg: Registry, now: dt.datetime, full_end: dt.datetime) -> None:
    """retraining_jobs rows as the schedule, the drift sensor and the run-status sensors write them, in time order."""
    h = dt.timedelta(hours=1)
    key = "schedule:full_retrain:20240301T0300Z"
    scheduled = {TRIGGER_TAG: "schedule:weekly", REASON_TAG: "schedule:weekly: due"}
    ran = {**scheduled, DAGSTER_RUN_KEY_TAG: key}
    drift = {TRIGGER_TAG: "drift:HIGH", REASON_TAG: "drift HIGH"}
    started = full_end - dt.timedelta(minutes=20)
    rows = [
        # 1. a scheduled full retrain that succeeded two days ago: requested, started, succeeded
        decision_row("REQUESTED", FULL_RETRAIN, run_key=key, trigger_reason="schedule:weekly: due", tags=scheduled,
                     at=started - dt.timedelta(minutes=1)),
        run_row("STARTED", FULL_RETRAIN, run_id="r-full-ok", tags=ran, started_at=started),
        run_row("SUCCESS", FULL_RETRAIN, run_id="r-full-ok", tags=ran, started_at=started, ended_at=full_end,
                models_trained=[{"asset": "model_lgbm", "model_ids": ["lgbm-h12-000000000001"]}]),
        # 2. a full retrain launched by hand that failed 30 h ago
        run_row("STARTED", FULL_RETRAIN, run_id="r-full-bad", tags={}, started_at=now - 30 * h),
        run_row("FAILURE", FULL_RETRAIN, run_id="r-full-bad", tags={}, started_at=now - 30 * h,
                ended_at=now - 30 * h + dt.timedelta(seconds=360), error="out of memory"),
        # 3. a partial retrain on drift that failed 3 h ago, 4. one that succeeded an hour ago
        run_row("STARTED", PARTIAL_RETRAIN, run_id="r-part-bad", tags=drift, started_at=now - 3 * h),
        run_row("FAILURE", PARTIAL_RETRAIN, run_id="r-part-bad", tags=drift, started_at=now - 3 * h,
                ended_at=now - 3 * h + dt.timedelta(seconds=400), error="features missing for 2024-03-02"),
        run_row("STARTED", PARTIAL_RETRAIN, run_id="r-part-ok", tags=drift, started_at=now - h),
        run_row("SUCCESS", PARTIAL_RETRAIN, run_id="r-part-ok", tags=drift, started_at=now - h,
                ended_at=now - h + dt.timedelta(seconds=600)),
        # 5. a request inside the minimum interval, skipped; 6. RL maintenance under way
        decision_row("SKIPPED", PARTIAL_RETRAIN, run_key="drift:x", trigger_reason="drift MEDIUM", tags=drift,
                     at=now - 0.5 * h, skip_reason="inside the minimum interval: the last retrain was 0.50 h ago"),
        run_row("STARTED", RL_MAINTENANCE, run_id="r-rl", tags={}, started_at=now - dt.timedelta(minutes=5)),
    ]
    for row in rows:  # one append per event, as the sensors do
        reg.append("retraining_jobs", [row])


def populate(lake: Lake, now: dt.datetime) -> dict:
    """A registry with two keys, challengers, shadow results, drift, jobs, health, RL versions, and a halt."""
    reg = open_registry(lake)
    a = reg.register(make_model(lake.root, 1, train_seconds=12.5))  # ACTIVE lgbm
    b = reg.register(make_model(lake.root, 2, train_seconds=20.0))  # SHADOW
    c = reg.register(make_model(lake.root, 3))  # SHADOW, no train time recorded
    d = reg.register(make_model(lake.root, 4, model_type="xgb", train_seconds=7.0))  # ACTIVE xgb
    e = reg.register(make_model(lake.root, 5, model_type="xgb", train_seconds=8.0))
    reg.promote(e.model_id, note="shadow test won")  # xgb: e ACTIVE, d RETIRED
    rows = [result(a.model_id, b.model_id, i) for i in range(5)]
    rows.append(result(a.model_id, b.model_id, 0, net=(0.5, 0.5)))  # the same bar closed twice: once
    rows.append(result(a.model_id, b.model_id, 6, champion_signal=0.0, challenger_signal=0.0))  # both flat
    rows.append(result(a.model_id, b.model_id, 7, net=(math.nan, 0.001)))  # no finite return
    rows.append(result(a.model_id, b.model_id, 8, symbol="BBB", champion_signal=0.0))  # one traded: counts
    rows += [result(a.model_id, c.model_id, i) for i in range(3)]
    rows += [result("old-champion", b.model_id, i) for i in range(4)]  # against a champion no longer ACTIVE
    reg.append("shadow_test_results", rows)
    reg.record_decision(b.model_id, "shadow test: CONTINUE_TESTING", evidence={"n": 6}, actor="shadow",
                        note="6 of 1,000 paired signals closed")
    reg.record_decision(c.model_id, "shadow test: REJECT", evidence={"n": 3}, actor="shadow",
                        note="worse net of costs")
    reg.append("drift_events", [
        {"detected_at": now - dt.timedelta(hours=10), "severity": "LOW", "drift_type": "", "features": [],
         "statistics": {}, "model_types": ["lgbm"]},
        {"detected_at": now - dt.timedelta(hours=1), "severity": "CRITICAL", "drift_type": "feature",
         "features": ["rsi_14", "mom_5"], "statistics": {"drift_share": 0.6}, "model_types": ["lgbm"],
         "signal_file": str(lake.signals_dir("drift") / "drift_x.json")},
    ])
    full_end = now - dt.timedelta(days=2)
    write_jobs(reg, now, full_end)
    reg.append("model_performance_logs", [
        {"model_id": a.model_id, "logged_at": now - dt.timedelta(hours=5), "health": "HEALTHY"},
        {"model_id": a.model_id, "logged_at": now - dt.timedelta(hours=2), "health": "DEGRADED"},
    ])
    reg.append("rl_versions", [
        {"agent": "sizer", "version": "v1", "status": "ACTIVE", "created_at": now - dt.timedelta(days=3)},
        {"agent": "sizer", "version": "v2", "status": "SHADOW", "created_at": now - dt.timedelta(hours=4),
         "parent_version": "v1", "reason": "snapshot after 100 trades"},
        {"agent": "sizer", "version": None, "status": "RESET_REQUESTED", "created_at": now - dt.timedelta(hours=1),
         "parent_version": "v2", "reason": "regime trend -> panic"},
    ])
    lake.halt_path.parent.mkdir(parents=True, exist_ok=True)
    lake.halt_path.write_text(json.dumps({"reason": "CRITICAL drift: 60% of features", "source": "drift_sensor"}))
    return {"registry": reg, "a": a, "b": b, "c": c, "d": d, "e": e, "full_end": full_end}


@pytest.fixture
def state(lake_root):
    lake = Lake(lake_root)
    now = dt.datetime.now(dt.UTC)
    return lake, now, populate(lake, now)


def test_status_reads_champions_challengers_timing_halt_rl_and_jobs(state):
    lake, now, s = state
    report = build_status(lake, s["registry"], Policy(), now=now)
    assert [m.model_id for m in report.active] == [s["a"].model_id, s["e"].model_id]
    assert [m.model_id for m in report.shadow] == [s["b"].model_id, s["c"].model_id]
    assert report.model_counts == {"TRAINING": 0, "SHADOW": 2, "ACTIVE": 2, "RETIRED": 1, "REJECTED": 0}
    lgbm = report.active[0]
    assert lgbm.version == s["a"].version and lgbm.train_seconds == 12.5 and lgbm.health == "DEGRADED"
    progress = {p.challenger_id: p for p in report.shadow_progress}
    b, c = progress[s["b"].model_id], progress[s["c"].model_id]
    assert (b.champion_id, b.closed, b.min_samples) == (s["a"].model_id, 6, 1000)
    assert b.fraction == pytest.approx(0.006) and b.last_decision == "CONTINUE_TESTING"
    assert (c.closed, c.last_decision) == (3, "REJECT")
    assert report.shadow_min_samples == 1000
    # retrain: the last successful full job; the schedule counts from its start; the newest retrain of any kind
    assert report.last_full_retrain == s["full_end"] and report.last_full_retrain_source == "retraining_jobs"
    started = s["full_end"] - dt.timedelta(minutes=20)
    assert report.next_retrain == started + dt.timedelta(days=7) and not report.retrain_overdue
    assert (report.last_retrain.job_type, report.last_retrain.status) == ("partial_retrain", "SUCCESS")
    assert report.last_retrain.duration_s == 600
    assert report.job_counts == {"full_retrain": {"SUCCESS": 1, "FAILURE": 1},
                                 "partial_retrain": {"FAILURE": 1, "SUCCESS": 1, "SKIPPED": 1},
                                 "rl_maintenance": {"STARTED": 1}}
    assert report.jobs_last_24h == {"FAILURE": 1, "SUCCESS": 1, "SKIPPED": 1, "STARTED": 1}
    assert [(j.job_type, j.status) for j in report.recent_jobs] == [
        ("rl_maintenance", "STARTED"), ("partial_retrain", "SKIPPED"), ("partial_retrain", "SUCCESS"),
        ("partial_retrain", "FAILURE"), ("full_retrain", "FAILURE"), ("full_retrain", "SUCCESS")]
    assert report.recent_jobs[-1].requested_at is not None and report.recent_jobs[-1].models_trained == 1
    assert [j.run_id for j in report.running] == ["r-rl"]
    # drift: the newest check, and the next one from the policy's interval
    assert report.last_drift.severity == "CRITICAL" and report.last_drift.features == 2
    assert report.next_drift_check == report.last_drift.detected_at + dt.timedelta(hours=6)
    assert report.drift_counts == {"LOW": 1, "MEDIUM": 0, "HIGH": 0, "CRITICAL": 1}
    assert report.halted and report.halt_reason == "CRITICAL drift: 60% of features"
    assert report.halt["source"] == "drift_sensor"
    (rl,) = report.rl
    assert (rl.agent, rl.version, rl.status, rl.active_version, rl.parent_version) == (
        "sizer", "v2", "SHADOW", "v1", "v1")
    assert (rl.pending, rl.pending_reason) == ("RESET_REQUESTED", "regime trend -> panic")

    text = status_text(report)
    for expected in ("TRADING HALTED:     CRITICAL drift: 60% of features (by drift_sensor)",
                     s["a"].model_id, "version 000000000001", "health DEGRADED",
                     f"progress 6/1,000 (1%) vs {s['a'].model_id}", "last decision REJECT",
                     "last full retrain:  ", "(from retraining_jobs)", "every 7 days", "CRITICAL (feature, 2 features)",
                     "next drift check:", "sizer", "v2 (SHADOW", "ACTIVE v1", "RESET_REQUESTED",
                     "regime trend -> panic", "partial_retrain FAILURE", "features missing for 2024-03-02",
                     "last retrain:       partial_retrain SUCCESS", "under way:          rl_maintenance STARTED",
                     "SKIPPED", "inside the minimum interval"):
        assert expected in text, (expected, text)
    assert json.loads(json.dumps(report.to_dict()))["shadow_progress"][0]["fraction"] == pytest.approx(0.006)


def test_shadow_progress_counts_what_the_shadow_decision_counts(state):
    lake, now, s = state
    reg: Registry = s["registry"]
    decisions = {d.challenger_id: d.n_closed for d in decide(read_results(reg, champion_id=s["a"].model_id), Policy())}
    counted = closed_pairs(reg.rows("shadow_test_results"))
    assert decisions == {challenger: n for (champion, challenger), n in counted.items() if champion == s["a"].model_id}
    assert counted[("old-champion", s["b"].model_id)] == 4
    assert closed_pairs([]) == {}


def test_overdue_retrain_and_drift_check_and_the_registry_fallback(lake_root):
    lake = Lake(lake_root)
    reg = open_registry(lake)
    record = reg.register(make_model(lake.root, 1))
    later = record.created_at + dt.timedelta(days=8)
    reg.append("drift_events", [{"detected_at": record.created_at, "severity": "MEDIUM", "drift_type": "prediction",
                                 "features": [], "statistics": {}, "model_types": []}])
    report = build_status(lake, reg, Policy(schedule_interval_days=7), now=later)
    # no retraining_jobs rows: the newest registered model stands in for the last full retrain
    assert report.last_full_retrain == record.created_at and report.last_full_retrain_source == "model registry"
    assert report.retrain_overdue and report.drift_check_overdue
    assert not report.halted and report.halt_reason is None
    text = status_text(report)
    assert "OVERDUE" in text and "(from model registry)" in text and "trading:            not halted" in text
    assert "recent jobs:        none recorded" in text and "RL agents:          none registered" in text


def test_an_empty_lake_has_an_empty_status_and_gets_no_registry(lake_root):
    lake = Lake(lake_root)
    report = build_status(lake, policy=Policy())
    assert not lake.registry_path.exists()
    assert report.active == report.shadow == report.recent_jobs == [] and report.last_full_retrain is None
    assert "none yet" in status_text(report) and "never checked" in status_text(report)


def test_cli_status_and_halt(state, capsys):
    lake, now, s = state
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "TRADING HALTED" in out and s["b"].model_id in out and "recent jobs (6 newest)" in out
    assert main(["status", "--json", "--jobs", "2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["halted"] and len(payload["recent_jobs"]) == 2 and payload["shadow_progress"][0]["closed"] == 6

    assert main(["halt"]) == 0
    assert "TRADING HALTED: CRITICAL drift: 60% of features" in capsys.readouterr().out
    assert main(["halt", "--clear"]) == 0
    assert "cleared" in capsys.readouterr().out and halt_reason(lake) is None
    assert main(["halt", "--clear"]) == 0
    assert "was not halted" in capsys.readouterr().out
    assert main(["halt"]) == 0
    assert "not halted" in capsys.readouterr().out
    assert main(["halt", "--reason", "manual: exchange outage"]) == 0
    capsys.readouterr()
    assert halt_reason(lake) == "manual: exchange outage"  # what serving refuses to trade on
    assert json.loads(lake.halt_path.read_text())["source"] == "cli"
    assert main(["halt", "--clear", "--reason", "x"]) == 2


def test_shadow_rl_policies_wait_for_a_promotion_instead_of_a_shadow_test(lake_root):
    lake = Lake(lake_root)
    reg = open_registry(lake)
    reg.register(make_model(lake.root, 1, model_type="rl_sizing"), actor="test")
    challenger = reg.register(make_model(lake.root, 2, model_type="rl_sizing"), actor="test")
    report = build_status(lake, policy=Policy())
    assert challenger.status == "SHADOW"
    assert report.shadow == report.shadow_progress == []  # no shadow test judges a policy
    assert [m.model_id for m in report.waiting_policies] == [challenger.model_id]
    text = status_text(report)
    assert "policies waiting for a promotion by hand (1" in text and challenger.model_id in text
    assert "progress 0/" not in text
