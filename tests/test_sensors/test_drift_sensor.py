"""drift_sensor: real signal files in a real lake become exactly one run each (partial, full, or a halt and a
full retrain), also when a restarted daemon re-reads the folder; bad files go aside with a reason."""

import datetime as dt
import json
import os

import dagster as dg
import numpy as np
import polars as pl
import pytest

from clm.automation import MAX_SIGNAL_BYTES, clear_halt, read_halt
from clm.automation.jobs import RETRAINING_JOBS, JobStatus, run_row
from clm.drift import detect_drift, write_drift_signal
from clm.features.store import FEATURES
from clm.lake import Lake
from clm.policy import Policy, policy_yaml
from clm.registry import open_registry
from clm.serving import Champion, TradingHalted
from clm.supervision import Health, HealthReport, write_signal
from resources import LakeResource, RegistryResource
from sensors.drift import drift_sensor

from ..test_serving.conftest import build_market, register, train

AT = dt.datetime(2026, 11, 22, 9, 0, 0, 123456, tzinfo=dt.UTC)
CLF, REG = "lightgbm_classifier", "lightgbm_regressor"  # tests/conftest.py: CLM_ENGINES


def _report(shifted: int, at: dt.datetime, model_types=(CLF,)):
    """A real drift report over 10 features: 1 shifted is MEDIUM, 3 HIGH, 6 CRITICAL."""
    rng = np.random.default_rng(shifted)
    names = [f"x{j}" for j in range(10)]
    reference = {n: rng.standard_normal(2000) for n in names}
    recent = {n: rng.standard_normal(800) + (1.5 if j < shifted else 0.0) for j, n in enumerate(names)}
    return detect_drift(reference, recent, detected_at=at, model_types=list(model_types))


def drift_file(lake: Lake, shifted: int, at: dt.datetime = AT, model_types=(CLF,)):
    return write_drift_signal(lake, _report(shifted, at, model_types))


def set_policy(tmp_path, monkeypatch, **settings):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(Policy(**settings)))
    monkeypatch.setenv("CLM_POLICY", str(path))


@pytest.fixture
def lake(tmp_path, monkeypatch):
    set_policy(tmp_path, monkeypatch, min_retrain_interval_hours=6)
    return Lake(tmp_path / "lake")


def evaluate(lake: Lake, cursor: str | None = None):
    resources = {"lake": LakeResource(root=str(lake.root)),
                 "registry": RegistryResource(lake=LakeResource(root=str(lake.root)))}
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        result = drift_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def jobs_rows(lake: Lake):
    return open_registry(lake).rows(RETRAINING_JOBS)


def test_high_drift_requests_one_full_retrain_and_a_fresh_cursor_launches_nothing_twice(lake):
    path = drift_file(lake, 3)
    first = evaluate(lake)
    (request,) = first.run_requests
    assert request.job_name == "full_retrain" and request.asset_selection is None
    prefix, digest = request.run_key.rsplit(":", 1)
    assert prefix == "drift:drift_20261122T090000123456Z" and len(digest) == 16
    assert request.tags["clm/trigger"] == "drift:HIGH"
    assert request.tags["clm/signal_file"] == "signals/drift/" + path.name
    assert request.tags["clm/action"] == "FULL_RETRAIN"
    (row,) = jobs_rows(lake)
    assert row["status"] == "REQUESTED" and row["job_type"] == "full_retrain"
    assert row["tags"]["clm/run_key"] == request.run_key and "drift:HIGH" in row["trigger_reason"]
    # the saved cursor: nothing new
    again = evaluate(lake, first.cursor)
    assert not again.run_requests and "no new" in again.skip_reason.skip_message
    # a restarted daemon with a fresh cursor: the same run key (Dagster launches one run per key and sensor),
    # the decision replayed, no second row
    fresh = evaluate(lake, None)
    assert [r.run_key for r in fresh.run_requests] == [request.run_key]
    assert len(jobs_rows(lake)) == 1
    # once the run has started (the run-status sensor's row), a fresh cursor does not even ask
    open_registry(lake).append(RETRAINING_JOBS, [run_row(
        JobStatus.STARTED, "full_retrain", run_id="r1", tags={**request.tags, "dagster/run_key": request.run_key},
        started_at=dt.datetime.now(dt.UTC))])
    assert not evaluate(lake, None).run_requests
    # new bytes under the same name are a new signal with a new key
    payload = json.loads(path.read_text())
    payload["features"] = ["x0"]
    path.write_text(json.dumps(payload))
    changed = evaluate(lake, first.cursor)
    assert not changed.run_requests  # decided: SKIPPED, inside the minimum interval of the first
    assert jobs_rows(lake)[0]["status"] == "SKIPPED" and jobs_rows(lake)[0]["tags"]["clm/run_key"] != request.run_key


def test_medium_drift_retrains_only_the_named_known_model_types(lake):
    drift_file(lake, 1, model_types=(CLF, "nhits", "regime_gate"))
    result = evaluate(lake)
    (request,) = result.run_requests
    assert request.job_name == "partial_retrain" and request.tags["clm/trigger"] == "drift:MEDIUM"
    assert request.tags["clm/model_types"] == CLF
    assert [k.to_user_string() for k in request.asset_selection] == [
        f"model_{CLF}", "evaluation", "consensus", "training_report", "lake_catalog"]
    from definitions import defs

    job_assets = defs.resolve_job_def("partial_retrain").asset_layer.executable_asset_keys
    assert set(request.asset_selection) <= set(job_assets)
    # a MEDIUM naming no model type trained here launches nothing and writes no row
    drift_file(lake, 1, at=AT + dt.timedelta(hours=1), model_types=("nhits",))
    nothing = evaluate(lake, result.cursor)
    assert not nothing.run_requests and len(jobs_rows(lake)) == 1


def test_low_is_logged_only_and_performance_signals_follow_the_same_ladder(lake):
    low = lake.signals_dir("drift") / "drift_20261122T080000000000Z.json"
    payload = json.loads(drift_file(lake, 3, at=AT).read_text())
    (lake.signals_dir("drift") / f"drift_{AT:%Y%m%dT%H%M%S%f}Z.json").unlink()
    low.write_text(json.dumps({**payload, "severity": "LOW", "detected_at": "2026-11-22T08:00:00.000000Z"}))
    result = evaluate(lake)
    assert not result.run_requests and low.exists() and not jobs_rows(lake)
    report = HealthReport(
        model_id="m1", model_type=REG, health=Health.DEGRADED, win_rate=0.41, calibration_error=0.05,
        long_short_ratio=1.0, latency_p50_ms=0.1, latency_p95_ms=0.2, latency_p99_ms=0.3, coverage=1.0,
        broken=("win_rate 0.410 < min_win_rate 0.45",), n_signals=300, n_predictions=300, n_bars=300,
        n_answered=300, kind="return", measured_at=AT)
    perf = write_signal(lake, report)
    (request,) = evaluate(lake, result.cursor).run_requests
    assert request.job_name == "full_retrain" and request.tags["clm/trigger"] == "performance:HIGH"
    assert request.tags["clm/signal_file"] == f"signals/performance/{perf.name}"


def test_every_kind_of_bad_file_is_rejected_with_a_reason_and_the_sensor_carries_on(lake, tmp_path):
    folder = lake.signals_dir("drift")
    good = drift_file(lake, 3)
    outside = tmp_path / "secret.json"
    outside.write_text(good.read_text())
    valid = json.loads(good.read_text())
    bad = {
        "drift_20261122T100000000000Z.json": b"{\"severity\": \"HIGH\", ",  # malformed JSON
        "drift_20261122T100000000001Z.json": b"",  # empty
        "drift_20261122T100000000002Z.json": b" " * (MAX_SIGNAL_BYTES + 1),  # oversized
        "drift_yesterday.json": good.read_bytes(),  # bad name
        "alert_20261122T100000000003Z.json": good.read_bytes(),  # unknown prefix
        "drift_20261122T100000000004Z.json": json.dumps({**valid, "severity": "SEVERE"}).encode(),  # schema
        "drift_20261122T100000000005Z.json": json.dumps({k: v for k, v in valid.items() if k != "features"}).encode(),
        "drift_20261122T100000000006Z.json": json.dumps({**valid, "detected_at": "2026-11-22T10:00:00Z"}).encode(),
        "drift_20261122T100000000007Z.json": b"\xff\xfe{}",  # not UTF-8
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "drift_20261122T100000000008Z.json").symlink_to(outside)  # a link out of the lake
    (folder / "drift_20261122T100000000009Z.json").mkdir()  # a folder where a file belongs
    (folder / "drift_20261122T100000000009Z.json" / "drift_x.json").write_bytes(good.read_bytes())
    hidden = folder / ".drift_20261122T110000000000Z.json.abc123.tmp"  # a writer's file before its rename
    hidden.write_text("{")
    perf = lake.signals_dir("performance")
    perf.mkdir(parents=True)
    (perf / "performance_20261122T100000000000Z.json").write_bytes(good.read_bytes())  # drift_type feature

    result = evaluate(lake)
    assert [r.tags["clm/signal_file"] for r in result.run_requests] == ["signals/drift/" + good.name]
    rejected = lake.signals_dir("rejected")
    reasons = {p.name.removesuffix(".reason.txt"): p.read_text() for p in rejected.rglob("*.reason.txt")}
    expected = {
        "drift_20261122T100000000000Z.json": "not valid JSON",
        "drift_20261122T100000000001Z.json": "empty file",
        "drift_20261122T100000000002Z.json": "oversized",
        "drift_yesterday.json": "bad name",
        "alert_20261122T100000000003Z.json": "unknown prefix",
        "drift_20261122T100000000004Z.json": "schema: severity",
        "drift_20261122T100000000005Z.json": "schema: features: missing field",
        "drift_20261122T100000000006Z.json": "does not match the file name",
        "drift_20261122T100000000007Z.json": "not UTF-8",
        "drift_20261122T100000000008Z.json": "symbolic link",
        "drift_20261122T100000000009Z.json": "not a regular file",
        "performance_20261122T100000000000Z.json": "drift_type",
    }
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
        kind = "performance" if name.startswith("performance") else "drift"
        assert os.path.lexists(rejected / kind / name)
    assert sorted(p.name for p in folder.iterdir()) == sorted([good.name, hidden.name])
    assert (rejected / "drift" / "drift_20261122T100000000008Z.json").is_symlink()  # the link moved, not its target
    assert outside.read_text() == good.read_text()
    assert not evaluate(lake, result.cursor).run_requests  # and nothing is left to reject


def test_a_retrain_inside_the_minimum_interval_is_skipped_with_a_logged_reason(lake, tmp_path, monkeypatch):
    drift_file(lake, 3)
    first = evaluate(lake)
    assert len(first.run_requests) == 1
    drift_file(lake, 3, at=AT + dt.timedelta(minutes=30))
    second = evaluate(lake, first.cursor)
    assert not second.run_requests and "no run to launch" in second.skip_reason.skip_message
    skipped, requested = jobs_rows(lake)
    assert requested["status"] == "REQUESTED" and skipped["status"] == "SKIPPED"
    assert "min_retrain_interval_hours is 6" in skipped["error"] and skipped["job_type"] == "full_retrain"
    # the decision is final: a fresh cursor neither launches it nor logs it twice
    assert [r.run_key for r in evaluate(lake, None).run_requests] == [first.run_requests[0].run_key]
    assert len(jobs_rows(lake)) == 2
    # with no minimum interval, the next signal runs
    set_policy(tmp_path, monkeypatch, min_retrain_interval_hours=0)
    drift_file(lake, 3, at=AT + dt.timedelta(minutes=40))
    (third,) = evaluate(lake, second.cursor).run_requests
    assert third.job_name == "full_retrain"


@pytest.fixture(scope="module")
def champion_lake(tmp_path_factory):
    """A real lake with a registered LightGBM champion (tests/test_serving's builder)."""
    lake = build_market(tmp_path_factory.mktemp("halt") / "lake", symbols=3)
    registry = open_registry(lake)
    register(registry, train(lake, REG), metrics={"model_sharpe": 1.0, "directional_accuracy": 0.55})
    return lake, registry


def test_critical_drift_halts_trading_before_the_retrain_until_the_halt_is_cleared(champion_lake, tmp_path,
                                                                                     monkeypatch):
    set_policy(tmp_path, monkeypatch, min_retrain_interval_hours=6)
    lake, registry = champion_lake
    champion = Champion.load(None, 12, lake=lake, registry=registry)
    row = (lake.read(FEATURES).filter(pl.col("warm")).sort("symbol", "timestamp").drop("date", "version")
           .row(-1, named=True))
    champion.predict(row)
    path = drift_file(lake, 6, model_types=(REG,))
    result = evaluate(lake)
    (request,) = result.run_requests
    assert request.job_name == "full_retrain" and request.tags["clm/trigger"] == "drift:CRITICAL"
    assert request.tags["clm/action"] == "HALT_AND_FULL_RETRAIN"
    halt = read_halt(lake)
    assert halt["source"] == "drift_sensor" and path.name in halt["reason"]
    with pytest.raises(TradingHalted, match=r"CRITICAL feature drift"):
        champion.predict(row)
    assert clear_halt(lake) and read_halt(lake) is None
    assert champion.predict(row).model_id == champion.model_id
    # a restarted daemon re-reading the folder does not halt again: the file was acted on
    assert [r.run_key for r in evaluate(lake, None).run_requests] == [request.run_key]
    assert read_halt(lake) is None
    champion.predict(row)
