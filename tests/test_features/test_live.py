"""The live path (``LiveFeatures``) equals the batch path (``compute_features``) bar for bar.

Every bar is replayed through ``update`` one bar time at a time and compared with the batch frame
over the same candles, for every feature of ``FeatureConfig()``: same nulls, same ``warm`` flags,
values to rtol 1e-9. Real Binance bars bring a segment break inside a higher bar, a 6-bar segment
and filled bars; the synthetic market adds a symbol that starts mid-stream and mid-bucket, a
segment break inside an hour, a higher bar left open by missing bars, and a bar time at which the
reference symbol has no bar.
"""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clm.data.sources.files import FolderSource
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.features import FeatureConfig, compute_features, infer_timeframe_seconds, select_features
from clm.features.live import LiveFeatures

BINANCE = Path(__file__).parents[1] / "data" / "binance_spot_5m"
DAY1 = datetime(2024, 1, 2, tzinfo=timezone.utc)  # the synthetic market's second day
KEYS = ["symbol", "timestamp", "segment_id"]


def _at(hours: int, minutes: int) -> datetime:
    return DAY1 + timedelta(hours=hours, minutes=minutes)


def replay(live: LiveFeatures, candles: pl.DataFrame) -> pl.DataFrame:
    frames = [
        live.update(bars)
        for _, bars in candles.sort("timestamp", "symbol").group_by("timestamp", maintain_order=True)
    ]
    return pl.concat(frames)


def assert_matches_batch(live: pl.DataFrame, batch: pl.DataFrame, names: list[str]) -> None:
    live = live.sort("symbol", "timestamp")
    batch = batch.sort("symbol", "timestamp")
    assert live.columns == batch.columns == [*KEYS, "warm", *names]
    assert live.schema == batch.schema
    assert_frame_equal(live.select(*KEYS, "warm"), batch.select(*KEYS, "warm"))
    for name in names:
        got, want = live[name], batch[name]
        missing = want.is_null().to_numpy()
        mismatch = np.flatnonzero(got.is_null().to_numpy() != missing)
        where = batch[mismatch[:5]].select(KEYS).rows()
        assert len(mismatch) == 0, (name, where, got[mismatch[:5]].to_list(), want[mismatch[:5]].to_list())
        a, b = got.to_numpy()[~missing], want.to_numpy()[~missing]
        assert not np.isnan(b).any(), name  # the batch path gave no NaN, only nulls
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.fixture(scope="module")
def binance() -> pl.DataFrame:
    candles = validate_bars(FolderSource(BINANCE).load().bars).candles
    # 5 days from 02:00 (inside a 4h bar): ADA_BTC's segments 0, 1 (6 bars) and 2, all with warm rows but 1
    start = datetime(2018, 1, 13, 2, tzinfo=timezone.utc)
    return candles.filter(pl.col("timestamp").is_between(start, start + timedelta(days=5), closed="left"))


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    """Four synthetic symbols over three days, with the awkward cases a live feed brings."""
    raw = SyntheticSource(SyntheticConfig(symbols=4, days=3)).load().bars
    ts, symbol = pl.col("timestamp"), pl.col("symbol")
    raw = raw.filter(
        # SYN003USD is listed mid-stream, inside an hour
        ~((symbol == "SYN003USD") & (ts < _at(7, 35)))
        # SYN001USD loses 6 bars inside an hour: a segment break, both segments share that hour's bucket
        & ~((symbol == "SYN001USD") & ts.is_between(_at(10, 15), _at(10, 40)))
    )
    candles = validate_bars(raw).candles
    return candles.filter(
        # SYN002USD misses the last two bars of an hour (after validation, so no fill and no break):
        # that hour's bar is finished by the next hour's first bar
        ~((symbol == "SYN002USD") & ts.is_between(_at(13, 50), _at(13, 55)))
        # the reference symbol has no bar at 12:00 on day 2
        & ~((symbol == "SYN000USD") & (ts == DAY1 + timedelta(days=1, hours=12)))
    )


def _selection(candles: pl.DataFrame):
    timeframe = infer_timeframe_seconds(candles)
    return select_features(FeatureConfig(), candles["symbol"].unique().to_list(), timeframe), timeframe


@pytest.fixture(scope="module")
def market_replay(market):
    selection, timeframe = _selection(market)
    return replay(LiveFeatures(selection, timeframe), market)


def test_binance_bars_match_the_batch_path(binance):
    selection, timeframe = _selection(binance)
    assert timeframe == 300 and set(selection.sets) == {"core31", "ta", "context"}
    batch = compute_features(binance, selection, timeframe_seconds=timeframe)
    assert_matches_batch(replay(LiveFeatures(selection, timeframe), binance), batch, selection.names)
    # the data does exercise what it is here for
    ada = batch.filter(pl.col("symbol") == "ADA_BTC")
    assert ada["segment_id"].unique().sort().to_list() == [0, 1, 2]
    assert ada.group_by("segment_id").agg(pl.col("warm").any()).sort("segment_id")["warm"].to_list() == [
        True, False, True,
    ]
    assert binance["is_filled"].any()
    assert batch["htf_4h_volatility_12"].drop_nulls().len() > 1000


def test_synthetic_market_matches_the_batch_path(market, market_replay):
    selection, timeframe = _selection(market)
    batch = compute_features(market, selection, timeframe_seconds=timeframe)
    assert_matches_batch(market_replay, batch, selection.names)
    assert market.filter(pl.col("symbol") == "SYN001USD")["segment_id"].n_unique() == 2
    # no reference bar, no reference feature; the universe mean goes on without it
    noon = market_replay.filter(pl.col("timestamp") == DAY1 + timedelta(days=1, hours=12))
    assert noon.height == 3 and noon["ref_ret_1"].is_null().all()
    assert noon["universe_ret_1"].is_not_null().all()


def test_warm_start_then_update_equals_a_full_replay(market, market_replay):
    selection, timeframe = _selection(market)
    cut = _at(10, 20)  # between SYN001USD's segments, inside an hour, before SYN002USD's open hour
    live = LiveFeatures(selection, timeframe)
    live.warm_start(market.filter(pl.col("timestamp") < cut).sample(fraction=1.0, shuffle=True, seed=7))
    assert live.symbols == ["SYN000USD", "SYN001USD", "SYN002USD", "SYN003USD"]
    resumed = replay(live, market.filter(pl.col("timestamp") >= cut))
    assert_frame_equal(resumed, market_replay.filter(pl.col("timestamp") >= cut))


def test_a_new_symbol_and_a_segment_break_restart_warm_up(market):
    selection = select_features(FeatureConfig(), market["symbol"].unique().to_list(), 300).subset(
        ["mom_5", "htf_1h_ret_1", "rel_ret_12"]
    )
    warmup = selection.warmup_bars(300)
    assert warmup == 36  # (1 + 2) hourly bars
    out = replay(LiveFeatures(selection, 300), market)
    assert_matches_batch(out, compute_features(market, selection, timeframe_seconds=300), selection.names)
    for (symbol, segment), rows in out.group_by("symbol", "segment_id"):
        assert rows["warm"].to_list() == [i >= warmup for i in range(rows.height)], (symbol, segment)
    late = out.filter(pl.col("symbol") == "SYN003USD")
    assert late["timestamp"][0] == _at(7, 35) and late["warm"].sum() == late.height - warmup
    assert late["mom_5"][:5].is_null().all() and late["mom_5"][5] is not None
    # its first hourly bar [07:00, 08:00) is short but is a bar; its value is joined from 08:55 on
    first_hour = late.filter(pl.col("timestamp") <= _at(8, 55))["htf_1h_ret_1"]
    assert first_hour[:-1].is_null().all() and first_hour[-1] is not None
    broken = out.filter((pl.col("symbol") == "SYN001USD") & (pl.col("segment_id") == 1))
    assert broken["timestamp"][0] == _at(10, 45) and not broken["warm"][:warmup].any()
    assert broken["mom_5"][:5].is_null().all()
    # the new segment's hourly series starts with its short 10:00 bar; ret_1 needs the 11:00 bar,
    # closed at 11:55
    hourly = broken["htf_1h_ret_1"]
    assert hourly[:14].is_null().all() and hourly[14] is not None and broken["timestamp"][14] == _at(11, 55)


# ---- errors ---------------------------------------------------------------------------------------


@pytest.fixture
def live_and_bars(market):
    selection, timeframe = _selection(market)
    first = market.filter(pl.col("timestamp") == pl.col("timestamp").min())
    return LiveFeatures(selection, timeframe), first


def test_update_rejects_mixed_timestamps(live_and_bars, market):
    live, _ = live_and_bars
    two = market.filter(pl.col("timestamp") <= market["timestamp"].min() + timedelta(minutes=5))
    with pytest.raises(ValueError, match="share one timestamp"):
        live.update(two)
    assert live.symbols == []


def test_update_rejects_a_duplicate_symbol(live_and_bars):
    live, bars = live_and_bars
    with pytest.raises(ValueError, match="SYN000USD"):
        live.update(pl.concat([bars, bars.head(1)]))
    assert live.symbols == []


def test_update_names_missing_columns(live_and_bars):
    live, bars = live_and_bars
    with pytest.raises(ValueError, match=r"missing column\(s\) \['segment_id', 'high'\]"):
        live.update(bars.drop("high", "segment_id"))
    with pytest.raises(ValueError, match="missing column"):
        live.warm_start(bars.drop("close"))


def test_update_rejects_a_bar_not_newer_than_the_last(live_and_bars, market):
    live, bars = live_and_bars
    first = live.update(bars)
    with pytest.raises(ValueError, match="newer than each symbol's last bar"):
        live.update(bars)
    older = bars.with_columns(pl.col("timestamp") - timedelta(minutes=5))
    with pytest.raises(ValueError, match="newer than each symbol's last bar"):
        live.update(older)
    with pytest.raises(ValueError, match="at or before its last bar"):
        live.warm_start(market.head(3))
    # a rejected update changed nothing: the next bar continues the series
    second = market.filter(pl.col("timestamp") == bars["timestamp"][0] + timedelta(minutes=5))
    fresh = LiveFeatures(live.selection, live.timeframe_seconds)
    fresh.update(bars)
    assert_frame_equal(live.update(second), fresh.update(second))
    assert first["warm"].sum() == 0


def test_empty_update_returns_the_schema(live_and_bars):
    live, bars = live_and_bars
    out = live.update(bars.head(0))
    assert out.height == 0 and out.columns == [*KEYS, "warm", *live.selection.names]
    assert out.schema["warm"] == pl.Boolean and out.schema["mom_5"] == pl.Float64


def test_flat_windows_match_the_batch_path():
    """Prices and volume that do not move: the rolling std is exactly 0, so safe_div takes its default."""
    rng = np.random.default_rng(5)
    n = 160
    close = 0.0712345 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    close[60:110] = close[59]  # 50 bars without a trade-through
    volume = rng.lognormal(3, 1, n)
    volume[70:100] = 3.3
    frames = []
    for symbol, scale in (("AAA_USD", 1.0), ("BBB_USD", 7.0)):
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "timestamp": [DAY1 + timedelta(minutes=5 * i) for i in range(n)],
                    "segment_id": pl.Series([0] * n, dtype=pl.Int32),
                    "open": close * scale,
                    "high": close * scale * np.where(close == close[59], 1.0, 1.001),
                    "low": close * scale * np.where(close == close[59], 1.0, 0.999),
                    "close": close * scale,
                    "volume": volume,
                }
            )
        )
    candles = pl.concat(frames)
    selection, timeframe = _selection(candles)
    batch = compute_features(candles, selection, timeframe_seconds=timeframe)
    assert (batch["bb_width"] == 0.0).sum() > 0 and (batch["vol_spike"] == 0.0).sum() > 0
    assert_matches_batch(replay(LiveFeatures(selection, timeframe), candles), batch, selection.names)


def test_long_runs_without_trades_match_the_batch_path():
    rng = np.random.default_rng(1)
    n = 200
    close = 0.0712345 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    close[60:170] = close[59]  # more than 50 unchanged closes: 50 one-bar returns of exactly 0
    volume = rng.lognormal(3, 1, n)
    volume[70:140] = 0.0  # more than 50 bars without volume
    candles = pl.DataFrame(
        {
            "symbol": "AAA_USD",
            "timestamp": [DAY1 + timedelta(minutes=5 * i) for i in range(n)],
            "segment_id": pl.Series([0] * n, dtype=pl.Int32),
            "open": close, "high": close, "low": close, "close": close, "volume": volume,
        }
    )
    selection, timeframe = _selection(candles)
    live = replay(LiveFeatures(selection, timeframe), candles)
    assert (live["mean_reversion"][110:170] == 0.0).all() and (live["vol_ratio_5_20"][90:140] == 1.0).all()
    batch = compute_features(candles, selection, timeframe_seconds=timeframe)
    assert_matches_batch(live, batch, selection.names)
