"""The landing sensor turns new files into exactly one run over the days they touch."""

import shutil
from pathlib import Path

import dagster as dg

from clm.lake import Lake
from resources import LakeResource
from sensors.landing import landing_sensor

DATA = Path(__file__).parents[1] / "data"


class _Evaluation:
    def __init__(self, cursor):
        self.cursor = cursor


def _evaluate(lake_root: Path, cursor: str | None = None):
    with dg.build_sensor_context(cursor=cursor, resources={"lake": LakeResource(root=str(lake_root))}) as context:
        result = landing_sensor(context)
        return result, _Evaluation(context.cursor)


def test_no_files_skips(tmp_path):
    result, _ = _evaluate(tmp_path)
    assert isinstance(result, dg.SkipReason)


def test_new_file_requests_one_run_over_its_days_then_nothing(tmp_path):
    lake = Lake(tmp_path)
    lake.landing_dir.mkdir(parents=True)
    shutil.copy(DATA / "binance_spot_5m" / "ADA_BTC-5m.feather", lake.landing_dir)
    request, context = _evaluate(tmp_path)
    assert isinstance(request, dg.RunRequest)
    assert request.tags["dagster/asset_partition_range_start"] == "2018-01-10"
    assert request.tags["dagster/asset_partition_range_end"] == "2018-01-30"
    assert request.run_config["resources"]["market_data"]["config"]["source"] == "landing"
    again, _ = _evaluate(tmp_path, context.cursor)
    assert isinstance(again, dg.SkipReason)
    # a second file triggers a new run with a different run_key
    shutil.copy(DATA / "binance_spot_5m" / "ETH_BTC-5m.feather", lake.landing_dir)
    second, _ = _evaluate(tmp_path, context.cursor)
    assert isinstance(second, dg.RunRequest) and second.run_key != request.run_key
    assert "ETH_BTC-5m.feather" in second.tags["clm/files"] and "ADA" not in second.tags["clm/files"]


def test_bad_files_are_moved_aside_with_a_reason(tmp_path):
    lake = Lake(tmp_path)
    lake.landing_dir.mkdir(parents=True)
    (lake.landing_dir / "notes.txt").write_text("hello")
    (lake.landing_dir / "garbage.csv").write_bytes(b"\xff\xfe not,a,kline\n")
    result, _ = _evaluate(tmp_path)
    assert isinstance(result, dg.SkipReason)
    rejected = sorted(p.name for p in lake.landing_rejected_dir.iterdir())
    assert rejected == ["garbage.csv", "garbage.csv.reason.txt", "notes.txt", "notes.txt.reason.txt"]
    assert "unsupported" in (lake.landing_rejected_dir / "notes.txt.reason.txt").read_text()
    assert not any(lake.landing_dir.iterdir())


def test_requested_run_ingests_only_the_touched_days(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_LAKE", str(tmp_path))
    from definitions import defs

    lake = Lake(tmp_path)
    lake.landing_dir.mkdir(parents=True)
    shutil.copy(DATA / "binance_spot_5m" / "ADA_BTC-5m.feather", lake.landing_dir)
    request, _ = _evaluate(tmp_path)
    result = defs.resolve_job_def("ingest_job").execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    candles = lake.read("candles")
    assert candles["symbol"].unique().to_list() == ["ADA_BTC"]
    assert str(candles["date"].min()) == "2018-01-10" and str(candles["date"].max()) == "2018-01-30"
