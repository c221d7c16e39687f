"""Prometheus metrics from the registry and lake: exposition, textfile, a 127.0.0.1 endpoint, the dashboard
and the alert rules that read them."""

import datetime as dt
import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clm import metrics
from clm.cli import main
from clm.lake import Lake

from .test_status import populate

MONITORING = Path(__file__).parents[1] / "monitoring"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def state(lake_root):
    lake = Lake(lake_root)
    now = dt.datetime.now(dt.UTC)
    return lake, now, populate(lake, now)


def test_exposition_has_every_metric_with_the_registry_values(state):
    lake, now, s = state
    text = metrics.exposition(lake)
    got = samples(text)
    names = {name for name, _ in got}
    assert set(metrics.METRICS) <= names, set(metrics.METRICS) - names
    a, b, c, e = (s[k].model_id for k in "abce")
    key = "lgbm/pooled/h12"
    assert got[("clm_model_train_seconds", (("key", key), ("model_id", a), ("model_type", "lgbm"),
                                            ("status", "ACTIVE")))] == 12.5
    assert got[("clm_model_train_seconds", (("key", key), ("model_id", b), ("model_type", "lgbm"),
                                            ("status", "SHADOW")))] == 20.0
    assert not any(n == "clm_model_train_seconds" and ("model_id", c) in labels for n, labels in got)  # none recorded
    info = (("horizon", "12"), ("key", "xgb/pooled/h12"), ("model_id", e), ("model_type", "xgb"), ("scope", "pooled"),
            ("version", s["e"].version))
    assert got[("clm_active_model_info", info)] == 1
    assert got[("clm_models", (("status", "RETIRED"),))] == 1
    assert got[("clm_retraining_jobs_completed_total", (("job_type", "full_retrain"),))] == 1
    assert got[("clm_retraining_jobs_failed_total", (("job_type", "partial_retrain"),))] == 1
    assert got[("clm_retraining_jobs_skipped_total", (("job_type", "partial_retrain"),))] == 1
    assert got[("clm_retraining_jobs_completed_total", (("job_type", "rl_maintenance"),))] == 0
    assert got[("clm_retraining_jobs_running", (("job_type", "rl_maintenance"),))] == 1
    assert got[("clm_retraining_jobs_running", (("job_type", "full_retrain"),))] == 0
    assert got[("clm_retraining_job_error_ratio", (("window", "all"),))] == pytest.approx(0.5)  # 2 of 4 finished
    assert got[("clm_retraining_job_error_ratio", (("window", "24h"),))] == pytest.approx(0.5)  # 1 of 2
    duration = "clm_retraining_job_last_duration_seconds"
    assert got[(duration, (("job_type", "partial_retrain"), ("status", "SUCCESS")))] == 600
    assert got[(duration, (("job_type", "full_retrain"), ("status", "FAILURE")))] == 360  # the newest full one
    assert got[("clm_last_full_retrain_timestamp_seconds", ())] == pytest.approx(s["full_end"].timestamp())
    assert got[("clm_next_retrain_timestamp_seconds", ())] == pytest.approx(
        (s["full_end"] - dt.timedelta(minutes=20) + dt.timedelta(days=7)).timestamp())
    assert got[("clm_drift_events_total", (("severity", "CRITICAL"),))] == 1
    assert got[("clm_drift_events_total", (("severity", "HIGH"),))] == 0
    assert got[("clm_drift_last_severity", ())] == 3
    assert got[("clm_shadow_samples", (("challenger_id", b), ("champion_id", a), ("key", key)))] == 6
    assert got[("clm_shadow_progress_ratio", (("challenger_id", c), ("champion_id", a), ("key", key)))] == 0.003
    assert got[("clm_shadow_min_samples", ())] == 1000
    assert got[("clm_trading_halted", ())] == 1
    assert got[("clm_metrics_generated_timestamp_seconds", ())] >= now.timestamp()


def test_textfile_is_written_whole_and_reads_back(state, tmp_path, capsys):
    lake, _, _ = state
    path = metrics.write_textfile(tmp_path / "textfile" / "clm.prom", lake)
    got = samples(path.read_text())
    assert got[("clm_trading_halted", ())] == 1
    assert not list(path.parent.glob("*.tmp*"))  # written to a temporary name, then renamed
    assert main(["metrics", "--textfile", str(tmp_path / "cli.prom")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert samples((tmp_path / "cli.prom").read_text())[("clm_drift_events_total", (("severity", "LOW"),))] == 1
    assert main(["metrics"]) == 0
    assert "clm_shadow_samples{" in capsys.readouterr().out


def test_served_on_127_0_0_1_and_read_fresh_at_every_scrape(state):
    lake, _, _ = state
    server, thread = metrics.serve(0, lake=lake)
    try:
        assert server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            first = samples(response.read().decode())
        assert set(metrics.METRICS) <= {name for name, _ in first}
        assert first[("clm_trading_halted", ())] == 1
        lake.halt_path.unlink()  # lifted: the next scrape says so, nothing cached
        with urllib.request.urlopen(url, timeout=10) as response:
            assert samples(response.read().decode())[("clm_trading_halted", ())] == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_grafana_dashboard_has_a_prometheus_panel_for_every_metric():
    dashboard = json.loads((MONITORING / "grafana_dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert dashboard["title"] and dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    exprs = {}
    for panel in panels:
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"] and panel["gridPos"]["w"] > 0
        for target in panel["targets"]:
            assert target["datasource"]["type"] == "prometheus"
            exprs[target["expr"]] = panel["title"]
    for name in metrics.METRICS:
        assert any(name in expr for expr in exprs), f"no panel shows {name}"
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource"}


def test_alert_rules_cover_drift_failures_stale_retrains_and_halt_with_known_metrics():
    rules = yaml.safe_load((MONITORING / "alert_rules.yaml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert {"ClmCriticalDrift", "ClmRetrainingJobFailed", "ClmNoRetrainInDays", "ClmTradingHalted"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["expr"], name
        used = set(re.findall(r"\bclm_[a-z0-9_]+", rule["expr"]))
        assert used and used <= set(metrics.METRICS), (name, used - set(metrics.METRICS))
