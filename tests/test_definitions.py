"""definitions.py loads, and the whole graph runs in-process on a tiny synthetic market."""

import hashlib

import dagster as dg
import duckdb
import pytest

from clm.lake import Lake

RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"}


def _run(defs, tags=RANGE, run_config=None, job_name="ingest_job"):
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(tags=tags, run_config=run_config or {}, instance=dg.DagsterInstance.ephemeral())


def test_definitions_load():
    from definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"candles", "candle_gaps", "quarantine", "vendor_mismatches", "synthetic_regimes", "universe",
            "do_not_trade", "data_integrity", "feedback_events", "lake_catalog"} <= keys
    assert defs.resolve_sensor_def("landing_sensor")
    assert defs.resolve_job_def("ingest_job") and defs.resolve_job_def("training_job")
    for sensor in ("drift_sensor", "regime_sensor", "retraining_started_sensor", "retraining_succeeded_sensor",
                   "retraining_failed_sensor", "retraining_canceled_sensor"):
        assert defs.resolve_sensor_def(sensor)
    for job in ("full_retrain", "partial_retrain", "rl_maintenance", "drift_check"):
        assert defs.resolve_job_def(job).tags["clm/trigger"] == "manual"
    assert {s.name for s in defs.schedules} == {"weekly_full_retrain", "drift_check_schedule"}
    assert "rl_reset" in keys and "rl_reset" not in {
        k.to_user_string() for k in defs.resolve_job_def("ingest_job").asset_layer.executable_asset_keys}


def test_whole_graph_runs_in_process(lake_root, tiny_market):
    from definitions import defs

    result = _run(defs)
    assert result.success
    trained = _run(defs, tags={}, job_name="training_job")
    assert trained.success
    lake = Lake(lake_root)
    candles = lake.read("candles")
    assert candles["symbol"].n_unique() == 3
    assert candles.height == 3 * 3 * 288
    assert lake.read("synthetic_regimes").height == 3 * 288
    assert set(lake.tables()) >= {"candles", "synthetic_regimes", "universe"}
    report = lake.read_json("reports/data_integrity.json")
    assert report["totals"]["bars"] == candles.height
    assert (lake.root / "reports" / "data_integrity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        ("candles", "candles_schema"): True, ("candles", "rows_accounted"): True,
        ("feedback_events", "lines_accounted"): True, ("features", "warm_rows_complete"): True,
        ("labels", "rows_accounted"): True,
    }
    features = lake.read("features")
    assert features.height == candles.height and {"rsi_14", "mom_5", "htf_1h_ret_1", "ref_ret_1"} <= set(features.columns)
    assert lake.read("labels").height == candles.height
    assert lake.read("regimes").height == candles.height
    assert lake.read_json("reports/regime_map.json")["scored_against_truth"]
    evaluation = lake.read("evaluation")
    assert sorted(evaluation["engine"]) == ["lightgbm_classifier", "lightgbm_regressor"]
    assert {"model_sharpe", "baseline_buy_and_hold_sharpe", "model_dsr"} <= set(evaluation.columns)
    assert lake.read("decision_log").height > 0 and lake.read("cv_folds").height > 0
    con = duckdb.connect(str(lake.catalog_path), read_only=True)
    assert con.execute("select count(*) from candles").fetchone()[0] == candles.height
    assert con.execute("select count(*), count(distinct version) from features").fetchone() == (candles.height, 1)
    assert con.execute("select count(*) from labels").fetchone()[0] == candles.height
    con.close()


def test_rematerialising_is_byte_identical(lake_root, tiny_market):
    from definitions import defs

    assert _run(defs).success
    lake = Lake(lake_root)

    def digest():
        return {str(p.relative_to(lake.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for t in ("candles", "candle_gaps", "synthetic_regimes", "features", "labels", "regimes", "market_regimes")
                for p in lake.files(t)}

    first = digest()
    one_day = {"dagster/asset_partition_range_start": "2024-01-02", "dagster/asset_partition_range_end": "2024-01-02"}
    assert _run(defs, tags=one_day).success
    assert _run(defs, tags=one_day).success
    assert digest() == first
    assert lake.read("candles").height == 3 * 3 * 288


def test_bad_run_config_is_rejected_with_a_clear_message(lake_root, tiny_market):
    from definitions import defs

    # pydantic validates the typed config before the asset body runs
    with pytest.raises(Exception, match=r"max_fill_bars[\s\S]*greater than or equal to 0"):
        _run(defs, run_config={"ops": {"ingest_market_data": {"config": {"max_fill_bars": -1}}}})


def test_calendar_config_reaches_validation_and_bad_values_are_named(lake_root, tiny_market):
    from definitions import defs

    config = {"ops": {"ingest_market_data": {"config": {"calendars": {"SYN000USD": "weekdays"}}}}}
    assert _run(defs, run_config=config).success
    calendars = dict(Lake(lake_root).read("calendars").select("symbol", "calendar").iter_rows())
    assert calendars["SYN000USD"] == "sessions" and calendars["SYN001USD"] == "24/7"
    bad = {"ops": {"ingest_market_data": {"config": {"calendars": {"SYN000USD": "sometimes"}}}}}
    with pytest.raises(Exception, match=r"calendars[\s\S]*'auto', '24/7' or 'weekdays'"):
        _run(defs, run_config=bad)


def test_feature_config_change_writes_a_second_version_and_bad_sets_are_named(lake_root, tiny_market):
    from definitions import defs

    assert _run(defs).success
    lake = Lake(lake_root)
    first = lake.current_version("features")
    ta_only = {"ops": {"features": {"config": {"sets": ["ta"]}}}}
    assert _run(defs, run_config=ta_only).success
    assert lake.current_version("features") != first
    assert set(lake.versions("features")) == {first, lake.current_version("features")}
    assert "mom_5" not in lake.read("features").columns and lake.read("features", version=[first]).height > 0
    bad = {"ops": {"features": {"config": {"sets": ["ta", "astrology"]}}}}
    with pytest.raises(Exception, match=r"invalid feature config: .*unknown set.*astrology"):
        _run(defs, run_config=bad)
    bad_labels = {"ops": {"labels": {"config": {"horizons": [12, 0]}}}}
    with pytest.raises(Exception, match=r"invalid label config: horizons"):
        _run(defs, run_config=bad_labels)


def test_training_registers_models_with_lineage_and_a_changed_config_makes_challengers(lake_root, tiny_market):
    from clm.registry import Status, open_registry
    from definitions import defs

    assert _run(defs).success
    assert _run(defs, tags={}, job_name="training_job").success
    lake = Lake(lake_root)
    registry = open_registry(lake)
    first = registry.list_models()
    assert {r.model_type for r in first} == {"lightgbm_classifier", "lightgbm_regressor", "regime_gate"}
    assert all(r.status == Status.ACTIVE for r in first)  # the first model of each key is its champion
    for record in first:
        assert record.lineage.code_version.startswith(("git:", "clm-"))
        assert record.lineage.artifact_checksums and record.file_size_bytes > 0
    engines = [r for r in first if r.model_type != "regime_gate"]
    for record in engines:
        assert record.lineage.feature_version == lake.current_version("features")
        assert record.lineage.training_window[0] < record.lineage.training_window[1]
        assert record.metrics["directional_accuracy"] is not None  # the evaluation reached the registry
        assert record.lineage.seeds == {"seed": 0} and len(record.lineage.data_hash) == 64
    # the same training again registers nothing new
    assert _run(defs, tags={}, job_name="training_job").success
    assert sorted(r.model_id for r in registry.list_models()) == sorted(r.model_id for r in first)
    # another split makes new versions: challengers in SHADOW beside the champions
    chronological = {"ops": {f"model_{e}": {"config": {"split_method": "chronological"}}
                             for e in ("lightgbm_classifier", "lightgbm_regressor")}}
    assert _run(defs, tags={}, job_name="training_job", run_config=chronological).success
    folds = lake.read("cv_folds")
    assert folds["fold"].unique().to_list() == [0]  # one 80/10/10 split
    shadows = registry.list_models(status=Status.SHADOW)
    assert sorted(r.model_type for r in shadows) == ["lightgbm_classifier", "lightgbm_regressor"]
    assert all(r.lineage.config["training"]["split"]["method"] == "chronological" for r in shadows)
    for record in shadows:
        assert registry.active(record.key).model_id in {r.model_id for r in engines}
    # the monitoring job shadow-tests the challengers on the bars after both models' training
    assert _run(defs, tags={}, job_name="monitoring_job").success
    results = registry.rows("shadow_test_results")
    assert results and {r["challenger_id"] for r in results} == {r.model_id for r in shadows}
    for record in shadows:
        last = registry.history(record.model_id)[-1]
        assert last.reason.startswith("shadow test: CONTINUE_TESTING")  # a few hundred bars, not 1,000
        assert last.evidence["n"] > 0 and registry.get(record.model_id).status == Status.SHADOW
        trained_until = record.lineage.training_window[1]
        assert min(r["timestamp"] for r in results if r["challenger_id"] == record.model_id).isoformat() >= trained_until
    health = registry.rows("model_performance_logs")
    assert sorted(r["model_id"] for r in health) == sorted(r.model_id for r in engines)
    assert all(r["health"] in ("HEALTHY", "DEGRADED", "CRITICAL") and r["latency_p99_ms"] > 0 for r in health)
    (drift,) = registry.rows("drift_events")
    assert drift["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL") and drift["statistics"]["features"]
    assert set(drift["model_types"]) == {"lightgbm_classifier", "lightgbm_regressor"}
    assert "prediction" in drift["statistics"] or "prediction" not in drift["drift_type"]
