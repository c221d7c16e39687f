"""No look-ahead, proved by truncation: features computed on the bars before t equal, bit for bit,
the features computed on all bars restricted to before t, for every registered feature.

Two markets: five of the real Binance 5-minute symbols (ADA_BTC has two segment breaks inside one
hour, one of them leaving a 6-bar segment; DASH_BTC and TRX_BTC have gap-filled bars; ETH_BTC is the
reference; ETC_BTC ends a bar early) and a synthetic market with injected breaks (two breaks inside
the same 1h/4h/1d buckets, a hole in the reference symbol, a filled gap, a symbol that starts late).
Cuts are chosen at segment breaks, inside and at the edges of 15m/1h/4h/1d buckets and off the bar
grid, plus hypothesis-drawn ones (derandomized, so every run checks the same cuts), each computed on
its own; a wider seeded sweep computes many cuts in one pass as ``by`` windows. Equality is exact:
same rows, same warm flags, same nulls and the same float bits.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm.data.sources.files import FolderSource
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.features.build import FeatureConfig, compute_features, drop_warmup, select_features
from clm.features.context import context_features
from clm.features.core31 import core31_features
from clm.features.registry import FeatureSelection
from clm.features.ta import ta_features

DATA = Path(__file__).resolve().parents[1] / "data" / "binance_spot_5m"
FIVE_MINUTES = 300
KEYS = ["symbol", "timestamp", "segment_id"]
# every registered feature: core31 + ta + context, on more higher timeframes than the default
LOOKAHEAD_CONFIG = FeatureConfig(higher_timeframes=("15m", "1h", "4h", "1d"))
PRICES = ("open", "high", "low", "close")
REAL_SYMBOLS = ("ADA_BTC", "DASH_BTC", "ETC_BTC", "ETH_BTC", "TRX_BTC")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


class Market:
    """Candles, the selection on them and the features of all bars (computed once per module)."""

    def __init__(self, candles: pl.DataFrame, config: FeatureConfig = LOOKAHEAD_CONFIG) -> None:
        self.candles = candles
        self.selection: FeatureSelection = select_features(
            config, candles["symbol"].unique().to_list(), FIVE_MINUTES
        )
        self.full = self.compute(candles)
        self.timestamps = candles["timestamp"].unique().sort()

    def compute(self, candles: pl.DataFrame, **kw) -> pl.DataFrame:
        return compute_features(candles, self.selection, timeframe_seconds=FIVE_MINUTES, **kw)

    def before(self, t: datetime) -> pl.DataFrame:
        return self.compute(self.candles.filter(pl.col("timestamp") < t))


def load_real(symbols: tuple[str, ...] | None = None) -> pl.DataFrame:
    candles = validate_bars(FolderSource(DATA).load().bars).candles
    return candles if symbols is None else candles.filter(pl.col("symbol").is_in(symbols))


def load_synthetic() -> pl.DataFrame:
    bars = SyntheticSource(SyntheticConfig(symbols=4, days=15, seed=11)).load().bars

    def drop(frame: pl.DataFrame, symbol: str, start: str, end: str) -> pl.DataFrame:
        hole = (pl.col("symbol") == symbol) & pl.col("timestamp").is_between(utc(start), utc(end), closed="left")
        return frame.filter(~hole)

    bars = drop(bars, "SYN001USD", "2024-01-04 13:25", "2024-01-04 15:10")  # break inside 1h/4h/1d buckets
    bars = drop(bars, "SYN001USD", "2024-01-04 15:40", "2024-01-04 16:20")  # ... and another: a 6-bar segment
    bars = drop(bars, "SYN000USD", "2024-01-06 09:05", "2024-01-06 10:35")  # the reference symbol's hole
    bars = drop(bars, "SYN002USD", "2024-01-05 07:10", "2024-01-05 07:20")  # a filled gap
    bars = drop(bars, "SYN003USD", "2024-01-01 00:00", "2024-01-02 17:35")  # a late listing
    result = validate_bars(bars)
    actions = result.gaps.group_by("symbol", "action").len().sort("symbol", "action").rows()
    assert actions == [
        ("SYN000USD", "segment_break", 1), ("SYN001USD", "segment_break", 2), ("SYN002USD", "filled", 1),
    ]
    return result.candles


@pytest.fixture(scope="module")
def real() -> Market:
    return Market(load_real(REAL_SYMBOLS))


@pytest.fixture(scope="module")
def synthetic() -> Market:
    return Market(load_synthetic())


def assert_prefix_equal(part: pl.DataFrame, full: pl.DataFrame, t: datetime, names: list[str]) -> None:
    """``part`` (computed on bars < t) equals ``full`` restricted to rows < t, bit for bit."""
    expected = full.filter(pl.col("timestamp") < t)
    assert part.columns == full.columns
    assert part.select(*KEYS, "warm").equals(expected.select(*KEYS, "warm")), f"rows or warm flags differ at {t}"
    differ = {}
    for name in names:
        a, b = part[name], expected[name]
        assert a.dtype == b.dtype == pl.Float64, name
        nulls_a, nulls_b = a.is_null().to_numpy(), b.is_null().to_numpy()
        bits_a = a.fill_null(0.0).to_numpy().view(np.uint64)
        bits_b = b.fill_null(0.0).to_numpy().view(np.uint64)
        bad = (nulls_a != nulls_b) | (bits_a != bits_b)
        if bad.any():
            first = part.row(int(np.flatnonzero(bad)[0]), named=True)
            differ[name] = (int(bad.sum()), first["symbol"], str(first["timestamp"]))
    assert not differ, f"cut {t}: (rows, first symbol, first timestamp) that differ: {differ}"


# ---- the selection under test ---------------------------------------------------------------


def test_every_registered_feature_is_checked(real, synthetic):
    names = real.selection.names
    registered = [f.name for f in core31_features() + ta_features()]
    registered += [f.name for f in context_features("ETH_BTC", LOOKAHEAD_CONFIG.higher_timeframes, FIVE_MINUTES)]
    assert sorted(names) == sorted(set(registered))
    assert len(names) == 31 + 13 - 1 + 4 * 4 + 5
    assert real.selection.by_name("ref_ret_1").reference_symbol == "ETH_BTC"
    assert synthetic.selection.by_name("ref_ret_1").reference_symbol == "SYN000USD"
    # not vacuous: every column has values on both markets
    for market in (real, synthetic):
        assert not [n for n in names if market.full[n].null_count() == market.full.height]
    assert real.candles["segment_id"].max() == 2 and real.candles["is_filled"].sum() > 0


# ---- truncation -----------------------------------------------------------------------------

REAL_CUTS = [
    "2018-01-10 05:20",  # a handful of bars: nearly everything is still null
    "2018-01-15 11:30",  # ADA_BTC: at the break, the next segment not started
    "2018-01-15 11:35",  # ADA_BTC: one bar of the 6-bar segment (same hour bucket as segment 0)
    "2018-01-15 14:50",  # ADA_BTC: first bar after the second break
    "2018-01-15 15:00",  # an hour boundary, three bars into the new segment
    "2018-01-16 00:05",  # one bar into a new day (and 4h, 1h, 15m bucket)
    "2018-01-20 14:35",  # inside a 4h bucket
    "2018-01-21 00:00",  # exactly at a day boundary
    "2018-01-27 00:20:30",  # DASH_BTC: its gap-filled bar, off the grid
    "2018-01-30 04:50",  # only the last bar of the symbols that have it
]
SYNTHETIC_CUTS = [
    "2024-01-02 17:40",  # SYN003USD: its first bar only
    "2024-01-04 13:25",  # SYN001USD: at the first break (mid hour, mid 4h, mid day)
    "2024-01-04 15:15",  # SYN001USD: first bar of the 6-bar segment
    "2024-01-04 16:25",  # SYN001USD: first bar after the second break
    "2024-01-05 00:00",  # a day boundary
    "2024-01-05 07:15",  # SYN002USD: inside its filled gap
    "2024-01-06 10:00",  # while the reference symbol has no bars
    "2024-01-06 10:40",  # just after the reference symbol's break
    "2024-01-06 13:55",  # inside a 4h bucket, last bar of an hour
    "2024-01-14 00:05",  # 1d volatility has just become defined
]


@pytest.mark.parametrize("cut", REAL_CUTS)
def test_real_market_prefix_equals_full(real, cut):
    t = utc(cut)
    assert_prefix_equal(real.before(t), real.full, t, real.selection.names)


@pytest.mark.parametrize("cut", SYNTHETIC_CUTS)
def test_synthetic_market_prefix_equals_full(synthetic, cut):
    t = utc(cut)
    assert_prefix_equal(synthetic.before(t), synthetic.full, t, synthetic.selection.names)


def drawn_cut(market: Market, bar: int, seconds: int) -> datetime:
    """The open time of a bar, moved by up to a bar: cuts on and off the grid."""
    return market.timestamps[bar % len(market.timestamps)] + timedelta(seconds=seconds)


@settings(derandomize=True, max_examples=4, deadline=None, database=None)
@given(bar=st.integers(1, 10**6), seconds=st.sampled_from([0, 0, 0, 1, 150, 299]))
def test_real_market_prefix_equals_full_at_drawn_cuts(real, bar, seconds):
    t = drawn_cut(real, bar, seconds)
    assert_prefix_equal(real.before(t), real.full, t, real.selection.names)


@settings(derandomize=True, max_examples=6, deadline=None, database=None)
@given(bar=st.integers(1, 10**6), seconds=st.sampled_from([0, 0, 0, 1, 150, 299]))
def test_synthetic_market_prefix_equals_full_at_drawn_cuts(synthetic, bar, seconds):
    t = drawn_cut(synthetic, bar, seconds)
    assert_prefix_equal(synthetic.before(t), synthetic.full, t, synthetic.selection.names)


@pytest.mark.parametrize("market, cuts", [("real", 8), ("synthetic", 24)])
def test_prefix_equals_full_at_many_seeded_cuts(request, market, cuts):
    """A wider sweep: every cut's bars are one ``by`` window, so one pass computes them all."""
    m: Market = request.getfixturevalue(market)
    rng = np.random.default_rng(20240101)
    bars, seconds = rng.integers(1, 10**6, cuts), rng.integers(0, 300, cuts)
    times = [drawn_cut(m, int(bar), int(s)) for bar, s in zip(bars, seconds)]
    windows = pl.concat(
        m.candles.filter(pl.col("timestamp") < t).with_columns(pl.lit(k, pl.Int32).alias("cut"))
        for k, t in enumerate(times)
    )
    out = m.compute(windows, by=["cut"]).partition_by("cut", as_dict=True, include_key=False)
    for k, t in enumerate(times):
        assert_prefix_equal(out[(k,)], m.full, t, m.selection.names)


def poison(candles: pl.DataFrame, t: datetime) -> pl.DataFrame:
    """Absurd bars from t on: prices x1000, no volume, a huge spread."""
    future = pl.col("timestamp") >= t
    return candles.with_columns(
        *(pl.when(future).then(pl.col(c) * 1000.0).otherwise(pl.col(c)).alias(c) for c in PRICES),
        *(pl.when(future).then(0.0).otherwise(pl.col(c)).alias(c) for c in ("volume", "quote_volume")),
        pl.when(future).then(9999.0).otherwise(pl.col("spread_bps")).alias("spread_bps"),
    )


@pytest.mark.parametrize(
    "market, cut",
    [
        ("real", "2018-01-15 11:35"),
        ("real", "2018-01-26 14:37:30"),
        ("synthetic", "2024-01-04 15:15"),
        ("synthetic", "2024-01-13 03:10"),
    ],
)
def test_poisoned_future_does_not_change_the_past(request, market, cut):
    m: Market = request.getfixturevalue(market)
    t = utc(cut)
    poisoned = m.compute(poison(m.candles, t))
    assert poisoned.height == m.full.height
    past = poisoned.filter(pl.col("timestamp") < t)
    assert_prefix_equal(past, m.full, t, m.selection.names)
    # the poison did reach the features from t on
    after = pl.col("timestamp") >= t
    assert not poisoned.filter(after)["sma_20"].equals(m.full.filter(after)["sma_20"])


def test_partition_windows_do_not_see_each_other(synthetic):
    """``by`` windows (the feature store's partitions) are computed independently in one pass."""
    t = utc("2024-01-04 15:37:30")
    two = pl.concat(
        [
            synthetic.candles.with_columns(pl.lit(0).alias("window")),
            synthetic.candles.filter(pl.col("timestamp") < t).with_columns(pl.lit(1).alias("window")),
        ]
    )
    out = synthetic.compute(two, by=["window"])
    assert out.columns[0] == "window"
    whole = out.filter(pl.col("window") == 0).drop("window")
    early = out.filter(pl.col("window") == 1).drop("window")
    assert_prefix_equal(whole, synthetic.full, utc("2100-01-01"), synthetic.selection.names)
    assert_prefix_equal(early, synthetic.full, t, synthetic.selection.names)


def test_input_order_does_not_matter(real):
    """Same features, bit for bit, from shuffled bars: no order-dependent sums (cross-sections)."""
    shuffled = real.candles.sample(fraction=1.0, shuffle=True, seed=7)
    assert not shuffled["timestamp"].equals(real.candles["timestamp"])
    assert_prefix_equal(real.compute(shuffled), real.full, utc("2100-01-01"), real.selection.names)


# ---- warm-up --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["real", "synthetic"])
def default_market(request) -> Market:
    """The default configuration (core31 + ta + context on 1h and 4h)."""
    candles = load_real() if request.param == "real" else load_synthetic()
    return Market(candles, FeatureConfig())


def with_position(frame: pl.DataFrame) -> pl.DataFrame:
    """Adds each row's index within its (symbol, segment) series."""
    return frame.with_columns(pl.int_range(pl.len()).over("symbol", "segment_id").alias("position"))


def test_warm_marks_exactly_the_first_warmup_bars_of_each_series(default_market):
    m = default_market
    warmup = m.selection.warmup_bars(FIVE_MINUTES)
    assert warmup == 672
    f = with_position(m.full)
    assert f.select(pl.col("timestamp").is_sorted().over("symbol", "segment_id").all()).item()
    assert f["warm"].equals(f["position"] >= warmup, check_names=False)
    per_series = f.group_by("symbol", "segment_id").agg(
        (~pl.col("warm")).sum().alias("cold"), pl.min_horizontal(pl.len(), warmup).alias("expected")
    )
    assert per_series["cold"].equals(per_series["expected"], check_dtypes=False, check_names=False)
    assert (per_series["expected"] < warmup).any()  # a short segment stays cold throughout
    kept = drop_warmup(m.full).collect()
    assert kept.equals(f.filter(pl.col("position") >= warmup).drop("position"))
    assert kept.height == m.full.height - per_series["cold"].sum()


def test_warm_rows_have_every_bar_level_and_higher_timeframe_value(default_market):
    m = default_market
    f = with_position(m.full)
    own = [x for x in m.selection.features if not x.cross]
    assert any(x.timeframe for x in own)
    for feature in own:
        # each feature is defined once its own warm-up is over, and the selection's is the longest
        settled = f.filter(pl.col("position") >= feature.warmup_bars(FIVE_MINUTES))[feature.name]
        assert settled.null_count() == 0, feature.name
        assert settled.is_finite().all(), feature.name
    warm = f.filter(pl.col("warm"))
    assert warm.height > 0.5 * f.height
    for name in ("universe_ret_1", "universe_ret_12", "rel_ret_12"):
        assert warm[name].null_count() == 0 and warm[name].is_finite().all(), name


def test_reference_features_are_missing_only_when_the_reference_is(default_market):
    m = default_market
    feature = m.selection.by_name("ref_ret_12")
    reference = (
        with_position(m.candles.select(KEYS).sort("symbol", "timestamp"))
        .filter((pl.col("symbol") == feature.reference_symbol) & (pl.col("position") >= 12))
        .select("timestamp", pl.lit(True).alias("has_reference"))
    )
    warm = (
        m.full.filter(pl.col("warm"))
        .join(reference, on="timestamp", how="left")
        .with_columns(pl.col("has_reference").fill_null(False))
    )
    assert warm["ref_ret_12"].is_null().equals(~warm["has_reference"], check_names=False)
    assert warm["ref_ret_1"].is_null().sum() <= warm["ref_ret_12"].is_null().sum()
    if m.candles["symbol"][0].startswith("SYN"):
        assert warm["ref_ret_12"].null_count() > 0  # the reference's hole shows, it is not filled
