"""Regime tables: one window per day, so a day's labels and signals do not depend on the run's range."""

import datetime as dt
import hashlib
import json

import pytest

from clm.data import ingest
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.lake import Lake
from clm.regimes import RegimeConfig
from clm.regimes.store import MARKET_REGIMES, REGIMES, materialise_regimes, regime_map

DAYS = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(10)]


@pytest.fixture(scope="module")
def regime_lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("regimes") / "lake")
    result = ingest.run_ingest(SyntheticSource(SyntheticConfig(symbols=4, days=10)), "synthetic")
    ingest.write_ingest(lake, result, DAYS[0], DAYS[-1] + dt.timedelta(days=1))
    return lake


def _digests(lake, *tables):
    return {str(p.relative_to(lake.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for t in tables for p in lake.files(t)}


def test_days_and_signals_do_not_depend_on_the_run_range(regime_lake):
    everything = materialise_regimes(regime_lake, DAYS, RegimeConfig())
    files = _digests(regime_lake, REGIMES, MARKET_REGIMES)
    signals = sorted(p.name for p in regime_lake.signals_dir("regime").iterdir())
    assert everything.rows == regime_lake.read("candles").height
    assert everything.signals and set(everything.signals) <= set(signals)
    for day in DAYS[5:]:
        materialise_regimes(regime_lake, [day], RegimeConfig())
    assert _digests(regime_lake, REGIMES, MARKET_REGIMES) == files
    assert sorted(p.name for p in regime_lake.signals_dir("regime").iterdir()) == signals


def test_signal_files_follow_the_documented_schema(regime_lake):
    materialise_regimes(regime_lake, DAYS, RegimeConfig())
    paths = sorted(regime_lake.signals_dir("regime").glob("regime_*.json"))
    assert paths
    for path in paths:
        payload = json.loads(path.read_text())
        assert set(payload) == {"from", "to", "at", "confidence", "symbols"}
        assert payload["from"] != payload["to"]
        stamp = dt.datetime.strptime(path.stem.removeprefix("regime_"), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        assert dt.datetime.fromisoformat(payload["at"].replace("Z", "+00:00")) == stamp
        assert 0.0 < payload["confidence"] <= 1.0 and payload["symbols"]


def test_regime_map_scores_against_the_synthetic_truth(regime_lake):
    materialise_regimes(regime_lake, DAYS, RegimeConfig())
    report = regime_map(regime_lake)
    assert report["scored_against_truth"]
    levels = {s["level"]: s for s in report["scores"]}
    assert set(levels) == {"symbol", "market"}
    assert levels["market"]["balanced_accuracy"] >= 0.6  # 10 days is a short market; the 30-day target is in test_score
    assert (regime_lake.root / "reports" / "regime_map.png").read_bytes()[:4] == b"\x89PNG"
    assert "balanced accuracy" in (regime_lake.root / "reports" / "regime_map.md").read_text()
