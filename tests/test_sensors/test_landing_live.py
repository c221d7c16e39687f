"""The real loop: `dagster dev` (webserver + daemon) sees a landed file and ingests it, unattended."""

import os
import shutil
import time
import urllib.error
from pathlib import Path

import pytest

from clm.devserver import DevServer
from clm.lake import Lake

REPO = Path(__file__).parents[2]
DATA = REPO / "tests" / "data"
TIMEOUT_S = 240


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    lake = Lake(tmp_path / "lake")
    lake.landing_dir.mkdir(parents=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "CLM_LAKE": str(lake.root), "CLM_SOURCE": "synthetic"}
    server = DevServer(REPO, env, tmp_path / "dagster_dev.log").start()
    try:
        yield lake, server
    finally:
        server.stop()


def test_landed_file_is_ingested_by_the_running_sensor(dagster_dev):
    lake, server = dagster_dev
    # land atomically: copy under a hidden temporary name, then rename
    tmp = lake.landing_dir / ".ADA_BTC-5m.feather.part"
    shutil.copy(DATA / "binance_spot_5m" / "ADA_BTC-5m.feather", tmp)
    tmp.rename(lake.landing_dir / "ADA_BTC-5m.feather")

    deadline = time.monotonic() + TIMEOUT_S
    runs = []
    while time.monotonic() < deadline:
        time.sleep(3)
        try:
            history = server.runs()
        except (OSError, urllib.error.URLError):
            continue  # webserver still starting
        # the ingest's own run; the regime changes it finds launch rl_maintenance runs beside it
        runs = [r for r in history if r["jobName"] == "ingest_job"]
        if any(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            break
    assert runs, f"no run was launched within {TIMEOUT_S}s; log:\n{server.log_tail()}"
    assert [r["status"] for r in runs] == ["SUCCESS"], server.log_tail()
    tags = runs[0]["tags"]
    assert tags["clm/trigger"] == "landing"
    assert tags["dagster/asset_partition_range_start"] == "2018-01-10"
    candles = lake.read("candles")
    assert candles["symbol"].unique().to_list() == ["ADA_BTC"]
    assert candles.height == 5723
    assert lake.read_json("reports/data_integrity.json")["totals"]["gaps_segment_breaks"] == 2
