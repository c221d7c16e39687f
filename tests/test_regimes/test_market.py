"""market_regime (vote + hysteresis), regime_changes and the signal files they become."""

import json
import os
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from clm.regimes import (
    MARKET_COLUMNS,
    RegimeConfig,
    market_regime,
    read_regime_signals,
    regime_changes,
    signal_bytes,
    signal_name,
    write_regime_signals,
)

T0 = datetime(2024, 1, 3, 10, 0, tzinfo=timezone.utc)


def per_symbol(rows: dict[str, list[str | None]]) -> pl.DataFrame:
    """A classify_regimes-like frame: one list of regimes per symbol, one entry per 5-minute bar."""
    frames = [
        pl.DataFrame(
            {
                "symbol": symbol,
                "timestamp": [T0 + timedelta(minutes=5 * i) for i in range(len(regimes))],
                "regime": pl.Series(regimes, dtype=pl.String),
            }
        )
        for symbol, regimes in rows.items()
    ]
    return pl.concat(frames).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))


def at(bar: int) -> str:
    return (T0 + timedelta(minutes=5 * bar)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def story() -> pl.DataFrame:
    """Bars 0-19 range; 20-25 a trend blip in two symbols; 26-31 range; 32-51 trend; 52-54 panic; 55-68 range."""
    common = ["range"] * 20
    blip = ["trend"] * 6
    tail = ["range"] * 6 + ["trend"] * 20 + ["panic"] * 3 + ["range"] * 14
    return per_symbol(
        {
            "AAA": common + blip + tail,
            "BBB": common + blip + tail,
            "CCC": common + ["range"] * 6 + tail,
        }
    )


def test_vote_and_hysteresis(story):
    market = market_regime(story, RegimeConfig())
    assert tuple(market.columns) == MARKET_COLUMNS
    assert market.height == 69 and market["timestamp"].is_sorted()
    regime = market["market_regime"].to_list()
    # the first majority is confirmed on its 12th bar
    assert regime[:11] == [None] * 11 and regime[11:43] == ["range"] * 32
    # a 6-bar blip does not switch the market; 12 bars of trend do, on the 12th
    assert market["majority_regime"][20:26].to_list() == ["trend"] * 6
    assert market["majority_share"][20] == pytest.approx(2 / 3)
    assert market["majority_symbols"][20].to_list() == ["AAA", "BBB"]
    assert regime[43:54] == ["trend"] * 11
    # panic needs only 3 bars (hysteresis override)
    assert market["majority_regime"][52] == "panic" and regime[54] == "panic"
    # back to range after 12 bars
    assert regime[55:66] == ["panic"] * 11 and regime[66:] == ["range"] * 3
    assert market["voters"].to_list() == [3] * 69
    assert market["n_trend"][40] == 3 and market["confidence"][40] == 0.0  # still range, no one agrees
    assert market["confidence"][45] == 1.0
    # on the blip, the market is still range and 1 of 3 symbols agrees
    assert market["confidence"][22] == pytest.approx(1 / 3) and market["symbols"][22].to_list() == ["CCC"]


def test_regime_changes(story):
    changes = regime_changes(market_regime(story))
    assert changes == [
        {"from": "range", "to": "trend", "at": at(43), "confidence": 1.0, "symbols": ["AAA", "BBB", "CCC"]},
        {"from": "trend", "to": "panic", "at": at(54), "confidence": 1.0, "symbols": ["AAA", "BBB", "CCC"]},
        {"from": "panic", "to": "range", "at": at(66), "confidence": 1.0, "symbols": ["AAA", "BBB", "CCC"]},
    ]
    first = regime_changes(market_regime(story), include_initial=True)[0]
    assert first == {
        "from": None, "to": "range", "at": at(11), "confidence": 1.0, "symbols": ["AAA", "BBB", "CCC"]
    }


def test_an_undecided_bar_resets_the_persistence_count():
    # 11 bars of a 2/3 trend majority, one split bar (1/3 each), 11 more: never 12 in a row
    split = {"AAA": ["trend"], "BBB": ["range"], "CCC": ["panic"]}
    rows = {s: ["range"] * 12 + ["trend"] * 11 + split[s] + ["trend"] * 11 for s in ("AAA", "BBB", "CCC")}
    rows["CCC"] = ["range"] * 12 + ["range"] * 11 + ["panic"] + ["range"] * 11
    market = market_regime(per_symbol(rows))
    assert market["majority_regime"][23] is None  # 1/3 < majority_share 0.5
    assert set(market["market_regime"].drop_nulls()) == {"range"}
    # with a lower bar for a majority the split bar is a tie, won by the riskier regime (panic)
    loose = market_regime(per_symbol(rows), RegimeConfig(majority_share=0.3))
    assert loose["majority_regime"][23] == "panic"
    assert loose["market_regime"].to_list()[-1] == "range"


def test_warm_up_symbols_do_not_vote_and_min_symbols():
    rows = {"AAA": [None] * 5 + ["trend"] * 15, "BBB": ["range"] * 20}
    market = market_regime(per_symbol(rows), RegimeConfig(hysteresis_bars=2))
    assert market["voters"].to_list() == [1] * 5 + [2] * 15
    assert market["majority_regime"][:5].to_list() == ["range"] * 5
    assert market["majority_share"][5] == 0.5  # a 1-1 tie goes to trend (riskier than range)
    assert market["majority_regime"][5] == "trend"
    strict = market_regime(per_symbol(rows), RegimeConfig(hysteresis_bars=2, min_symbols=2))
    assert strict["majority_regime"][:5].to_list() == [None] * 5


def test_signal_files_are_atomic_deterministic_and_idempotent(story, tmp_path):
    changes = regime_changes(market_regime(story))
    signals = tmp_path / "signals" / "regime"
    paths = write_regime_signals(changes, signals)
    assert [p.name for p in paths] == [
        "regime_20240103T133500Z.json",
        "regime_20240103T143000Z.json",
        "regime_20240103T153000Z.json",
    ]
    assert sorted(p.name for p in signals.iterdir()) == [p.name for p in paths]  # no temp files left
    text = paths[0].read_text()
    assert list(json.loads(text)) == ["at", "confidence", "from", "symbols", "to"]
    assert json.loads(text) == changes[0] and text.endswith("\n")
    assert read_regime_signals(signals) == changes
    # idempotent: the same changes leave the files (and their mtimes) alone
    old = 1_000_000_000
    for p in paths:
        os.utime(p, ns=(old, old))
    assert write_regime_signals(changes, signals) == paths
    assert all(p.stat().st_mtime_ns == old for p in paths)
    # a changed change is rewritten in place under the same name
    changed = [dict(changes[0], confidence=0.5)]
    assert write_regime_signals(changed, signals) == [paths[0]]
    assert json.loads(paths[0].read_text())["confidence"] == 0.5


def test_since_and_until_select_half_open_windows(story, tmp_path):
    changes = regime_changes(market_regime(story))
    written = write_regime_signals(changes, tmp_path, since=at(54), until=at(66))
    assert [p.name for p in written] == [signal_name(at(54))]
    since_dt = T0 + timedelta(minutes=5 * 43)
    assert len(write_regime_signals(changes, tmp_path / "b", since=since_dt)) == 3
    assert write_regime_signals(changes, tmp_path / "c", until=since_dt) == []


def test_signal_validation(tmp_path):
    good = {
        "from": "range", "to": "trend", "at": "2024-01-03T10:45:00+00:00", "confidence": 0.7, "symbols": ["B", "A"]
    }
    assert json.loads(signal_bytes(good)) == dict(good, at="2024-01-03T10:45:00Z", symbols=["A", "B"])
    assert signal_name("2024-01-03T10:45:00Z") == "regime_20240103T104500Z.json"
    with pytest.raises(ValueError, match="exactly the keys"):
        signal_bytes({**good, "extra": 1})
    with pytest.raises(ValueError, match="no time zone"):
        signal_name("2024-01-03T10:45:00")
    with pytest.raises(ValueError, match="two different regime changes"):
        write_regime_signals([good, dict(good, to="panic")], tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_the_default_market_writes_one_file_per_change(default_regimes, tmp_path):
    changes = regime_changes(market_regime(default_regimes))
    assert 10 <= len(changes) <= 100
    assert all(c["from"] != c["to"] for c in changes)
    assert all(0.5 <= c["confidence"] <= 1.0 and c["symbols"] for c in changes)
    paths = write_regime_signals(changes, tmp_path)
    assert len(paths) == len(changes) and read_regime_signals(tmp_path) == changes
