"""The daily summary: what happened in the last day, as JSON in reports/ and in the asset's metadata, with the
Prometheus textfile refreshed beside it."""

import datetime as dt
import json
import os

import dagster as dg
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from assets.summary import METRICS_TEXTFILE, daily_summary
from clm.lake import Lake
from clm.policy import Policy
from clm.registry.export import export_model
from clm.status import build_daily_summary, summary_path
from resources import LakeResource, RegistryResource

from .test_status import populate


def write_candles(lake: Lake, day: dt.date, symbols: list[str]) -> None:
    ts = dt.datetime.combine(day, dt.time(), dt.UTC)
    frame = pl.DataFrame({"symbol": symbols, "timestamp": [ts] * len(symbols), "close": [1.0] * len(symbols),
                          "date": [day] * len(symbols)})
    lake.write_table("candles", frame, ["date"])


@pytest.fixture
def state(lake_root):
    lake = Lake(lake_root)
    now = dt.datetime.now(dt.UTC)
    s = populate(lake, now)
    reg = s["registry"]
    # two days ingested today, one long ago (its file is older than the window)
    write_candles(lake, dt.date(2024, 3, 1), ["AAA", "BBB"])
    write_candles(lake, dt.date(2024, 3, 2), ["AAA", "CCC"])
    write_candles(lake, dt.date(2024, 2, 1), ["OLD"])
    old = (now - dt.timedelta(days=3)).timestamp()
    for path in lake.files("candles", date=[dt.date(2024, 2, 1)]):
        os.utime(path, (old, old))
    lake.write_table("do_not_trade", pl.DataFrame({"symbol": ["ZZZ", "YYY"],
                                                   "reason": ["spread 80 bps > 50", "liquidity 0 < 1000"]}))
    export_model(lake, reg, s["a"])
    export_model(lake, reg, s["e"], now=now - dt.timedelta(days=2))  # an export from before the window
    return lake, now, s


def test_the_summary_covers_the_last_day_only(state):
    lake, now, s = state
    summary = build_daily_summary(lake, s["registry"], now=dt.datetime.now(dt.UTC), policy=Policy())
    assert summary["date"] == now.date().isoformat() and summary["window"]["hours"] == 24
    assert summary["symbols_processed"] == {"count": 3, "symbols": ["AAA", "BBB", "CCC"],
                                            "dates": ["2024-03-01", "2024-03-02"]}
    (exported,) = summary["champions_exported"]
    assert exported["model_id"] == s["a"].model_id and summary["exports_total"] == 2
    skipped = {(row["kind"], row.get("symbol") or row.get("model_id")): row for row in summary["skipped"]}
    assert skipped[("do_not_trade", "ZZZ")]["reason"] == "spread 80 bps > 50"
    assert skipped[("shadow_decision", s["b"].model_id)]["decision"] == "CONTINUE_TESTING"
    assert skipped[("shadow_decision", s["c"].model_id)]["decision"] == "REJECT"
    assert "worse net of costs" in skipped[("shadow_decision", s["c"].model_id)]["reason"]
    (promotion,) = summary["promotions"]
    assert (promotion["model_id"], promotion["from_status"], promotion["to_status"]) == (s["e"].model_id, "SHADOW",
                                                                                        "ACTIVE")
    (failure,) = summary["failures"]  # the full retrain that failed 30 h ago is outside the window
    assert failure["job_type"] == "partial_retrain" and failure["error"] == "features missing for 2024-03-02"
    assert (summary["jobs"]["finished"], summary["jobs"]["failed"], summary["jobs"]["error_rate"]) == (2, 1, 0.5)
    assert [j["duration_s"] for j in summary["jobs"]["succeeded"]] == [600]
    retrain = skipped[("retrain_skipped", None)]
    assert retrain["job_type"] == "partial_retrain" and "minimum interval" in retrain["reason"]
    assert summary["drift_events"]["count"] == 2
    assert summary["drift_events"]["by_severity"] == {"LOW": 1, "MEDIUM": 0, "HIGH": 0, "CRITICAL": 1}
    assert summary["counts"] == {"symbols_processed": 3, "champions_exported": 1, "skipped": 5, "drift_events": 2,
                                 "promotions": 1, "failures": 1}
    assert summary["status"]["halted"] and summary["status"]["active"] == [s["a"].model_id, s["e"].model_id]
    json.dumps(summary)  # JSON-ready as it is

    narrow = build_daily_summary(lake, s["registry"], now=dt.datetime.now(dt.UTC), hours=2, policy=Policy())
    assert narrow["failures"] == [] and narrow["drift_events"]["count"] == 1
    assert [p["model_id"] for p in narrow["promotions"]] == [s["e"].model_id]


def test_an_empty_lake_summarises_to_zeros(lake_root):
    lake = Lake(lake_root)
    summary = build_daily_summary(lake, policy=Policy())
    assert set(summary["counts"].values()) == {0} and summary["jobs"]["error_rate"] is None
    assert not lake.registry_path.exists()


def test_the_asset_writes_the_json_and_the_metrics_textfile(state):
    lake, now, s = state
    result = dg.materialize(
        [daily_summary],
        resources={"lake": LakeResource(root=str(lake.root)),
                   "registry": RegistryResource(lake=LakeResource(root=str(lake.root)))},
    )
    assert result.success
    written = json.loads(summary_path(lake, dt.datetime.now(dt.UTC).date()).read_text())
    assert written["counts"]["failures"] == 1 and written["counts"]["promotions"] == 1
    (materialization,) = result.asset_materializations_for_node("daily_summary")
    metadata = materialization.metadata
    assert metadata["failures"].value == 1 and metadata["summary"].value["counts"] == written["counts"]
    assert "ZZZ" in metadata["skipped"].value
    names = {f.name for f in text_string_to_metric_families((lake.root / METRICS_TEXTFILE).read_text())}
    assert {"clm_shadow_samples", "clm_drift_events", "clm_trading_halted", "clm_model_train_seconds"} <= names


def test_the_asset_is_a_monitoring_asset_after_the_monitors():
    spec = daily_summary.specs_by_key[dg.AssetKey("daily_summary")]
    assert spec.group_name == "monitoring"
    assert {d.asset_key.path[0] for d in spec.deps} == {"drift_detector", "model_supervisor", "shadow_test"}
