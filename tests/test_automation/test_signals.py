"""Scanning signal folders: the cursor skips what was read, run keys follow name and bytes, validation is
strict and the severity ladder maps to actions."""

import datetime as dt
import json
import os

import pytest

from clm.automation import (
    Action,
    check_file,
    decide_drift,
    decide_regime,
    dump_cursor,
    load_cursor,
    parse_regime_signal,
    reject_signal,
    scan_signals,
)
from clm.drift import Severity
from clm.lake import Lake
from clm.policy import Policy, RLMaintenance
from clm.regimes.market import write_regime_signals

CHANGE = {"from": "trend", "to": "panic", "at": "2026-11-22T10:45:00Z", "confidence": 0.75, "symbols": ["A", "B"]}


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path / "lake")


def test_the_cursor_skips_read_files_and_new_bytes_make_a_new_key(lake):
    (path,) = write_regime_signals([CHANGE], lake.signals_dir("regime"))
    first = scan_signals(lake, ["regime"], {})
    (signal,) = first.signals
    assert signal.key == f"regime/{path.name}" and signal.relative == f"signals/regime/{path.name}"
    assert signal.run_key == f"regime:{path.stem}:{signal.digest[:16]}"
    assert signal.signal.change == "trend->panic" and signal.at == dt.datetime(2026, 11, 22, 10, 45, tzinfo=dt.UTC)
    cursor = load_cursor(dump_cursor(first.cursor))
    assert scan_signals(lake, ["regime"], cursor).signals == []
    os.utime(path, ns=(1, 1))  # touched, same bytes: read again, not new
    touched = scan_signals(lake, ["regime"], cursor)
    assert touched.signals == [] and touched.cursor[signal.key] != cursor[signal.key]
    path.write_text(json.dumps({**CHANGE, "confidence": 0.9}))
    (changed,) = scan_signals(lake, ["regime"], touched.cursor).signals
    assert changed.run_key != signal.run_key
    # a fresh cursor re-reads everything and derives the same keys; entries of vanished files are dropped
    assert [s.run_key for s in scan_signals(lake, ["regime"], {}).signals] == [changed.run_key]
    path.unlink()
    assert scan_signals(lake, ["regime"], touched.cursor).cursor == {}
    assert load_cursor("not json") == {} and load_cursor("[1]") == {}


def test_rejecting_moves_the_file_and_refuses_keys_outside_the_folders(lake):
    folder = lake.signals_dir("drift")
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("hello")
    scan = scan_signals(lake, ["drift"], {})
    assert scan.rejected == {"drift/notes.txt": "unknown prefix: files in signals/drift/ are named "
                                                 "drift_<YYYYmmddTHHMMSSffffff>Z.json, got 'notes.txt'"}
    target = reject_signal(lake, "drift/notes.txt", scan.rejected["drift/notes.txt"])
    assert target == lake.signals_dir("rejected") / "drift" / "notes.txt" and target.read_text() == "hello"
    assert "unknown prefix" in target.with_name("notes.txt.reason.txt").read_text()
    for key in ("drift/../../policy.yaml", "elsewhere/x.json", "drift/"):
        with pytest.raises(ValueError):
            reject_signal(lake, key, "no")


def test_regime_schema_is_strict(tmp_path):
    path = tmp_path / "regime_20261122T104500Z.json"
    assert parse_regime_signal(CHANGE, path).confidence == 0.75
    for payload, words in [
        ([CHANGE], "a regime signal is a JSON object"),
        ({k: v for k, v in CHANGE.items() if k != "symbols"}, "symbols: missing field"),
        ({**CHANGE, "to": "trend"}, "not a change"),
        ({**CHANGE, "from": "sideways"}, "from: must be null or one of"),
        ({**CHANGE, "confidence": True}, "confidence"),
        ({**CHANGE, "symbols": "A"}, "symbols"),
        ({**CHANGE, "at": "2026-11-22T10:45:00+01:00"}, "must be in UTC"),
        ({**CHANGE, "at": "2026-11-22T10:46:00Z"}, "does not match the file name"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_regime_signal(payload, path)
    misplaced = tmp_path / "performance_20261122T104500000000Z.json"  # a regime change in the wrong folder
    misplaced.write_text(json.dumps(CHANGE))
    with pytest.raises(ValueError, match="^schema: at: unknown field|^schema: severity: missing field"):
        check_file("performance", misplaced)


def test_the_severity_ladder():
    known = ["lightgbm_classifier", "nhits"]
    low = decide_drift(Severity.LOW, known, known)
    assert low.action is Action.LOG_ONLY and low.action.job is None
    medium = decide_drift("MEDIUM", ["nhits", "xgboost", "nhits"], known)
    assert medium.action is Action.PARTIAL_RETRAIN and medium.action.job == "partial_retrain"
    assert medium.model_types == ("nhits",) and medium.skipped_types == ("xgboost",) and "xgboost" in medium.reason
    assert decide_drift("MEDIUM", [], known).action is Action.LOG_ONLY
    assert decide_drift("HIGH", [], known).action.job == "full_retrain"
    critical = decide_drift("CRITICAL", ["nhits"], known)
    assert critical.action is Action.HALT_AND_FULL_RETRAIN and critical.action.job == "full_retrain"


def test_regime_plans_follow_the_policy(tmp_path):
    signal = parse_regime_signal(CHANGE, tmp_path / "regime_20261122T104500Z.json")
    plan = decide_regime(signal, Policy())
    assert plan.rl_reset and not plan.retrain and "trend->panic" in plan.reason
    neither = decide_regime(signal, Policy(rl_maintenance=RLMaintenance(reset_on_regime_change=False)))
    assert not neither.rl_reset and not neither.retrain and "reset_on_regime_change is off" in neither.reason
    assert decide_regime(signal, Policy(retrain_on_regime_change=True)).retrain
    initial = parse_regime_signal({**CHANGE, "from": None}, tmp_path / "regime_20261122T104500Z.json")
    assert decide_regime(initial, Policy(retrain_on_regime_change=True)) == decide_regime(initial, Policy()) \
        and not decide_regime(initial, Policy()).rl_reset
