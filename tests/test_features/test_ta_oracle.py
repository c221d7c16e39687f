"""The ``ta`` set against bukosabino/ta on real Binance 5-minute bars, series by series.

``ta`` seeds some recursions with a simple average where the engine starts at the first value, so
the two agree once the starting value has faded: after 1,000 bars of a (symbol, segment) series
every column must match to 1e-9 absolute, and the price-valued columns also to 1e-9 of the price
(BTC-quoted prices are around 1e-5, where an absolute 1e-9 alone would say little).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

ta = pytest.importorskip("ta", reason="bukosabino/ta is the oracle (dev extra)")
from ta.momentum import RSIIndicator  # noqa: E402
from ta.trend import MACD, ADXIndicator, EMAIndicator, SMAIndicator  # noqa: E402
from ta.volatility import AverageTrueRange, BollingerBands  # noqa: E402

from clm.data.sources.files import FolderSource  # noqa: E402
from clm.data.validation import validate_bars  # noqa: E402
from clm.features.build import FeatureConfig, compute_features, select_features  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "binance_spot_5m"
SYMBOLS = sorted(p.name.split("-")[0] for p in DATA.glob("*.feather"))
WARMUP = 1_000
MIN_SERIES = 1_100
TOLERANCE = 1e-9
TA_COLUMNS = (
    "rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
    "atr_14", "adx_14", "plus_di_14", "minus_di_14", "sma_20", "ema_20",
)
PRICE_VALUED = (
    "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower", "atr_14", "sma_20", "ema_20",
)


def oracle(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, np.ndarray]:
    """Every ta-set column as the ``ta`` library computes it, default windows."""
    import pandas as pd

    h, lo, c = pd.Series(high), pd.Series(low), pd.Series(close)
    macd, bands, adx = MACD(c), BollingerBands(c), ADXIndicator(h, lo, c)
    out = {
        "rsi_14": RSIIndicator(c).rsi(),
        "macd": macd.macd(),
        "macd_signal": macd.macd_signal(),
        "macd_hist": macd.macd_diff(),
        "bb_upper": bands.bollinger_hband(),
        "bb_middle": bands.bollinger_mavg(),
        "bb_lower": bands.bollinger_lband(),
        "atr_14": AverageTrueRange(h, lo, c).average_true_range(),
        "adx_14": adx.adx(),
        "plus_di_14": adx.adx_pos(),
        "minus_di_14": adx.adx_neg(),
        "sma_20": SMAIndicator(c, 20).sma_indicator(),
        "ema_20": EMAIndicator(c, 20).ema_indicator(),
    }
    return {name: s.to_numpy(dtype=float) for name, s in out.items()}


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    return validate_bars(FolderSource(DATA).load().bars).candles


@pytest.fixture(scope="module")
def features(candles) -> pl.DataFrame:
    symbols = candles["symbol"].unique().to_list()
    selection = select_features(FeatureConfig(sets=("core31", "ta")), symbols, 300)
    return compute_features(candles, selection, timeframe_seconds=300)


@pytest.fixture(scope="module")
def comparison(candles, features) -> dict[str, dict]:
    """Per symbol: rows checked and, per column, the worst absolute and price-relative error."""
    joined = candles.select("symbol", "segment_id", "timestamp", "high", "low", "close").join(
        features, on=["symbol", "segment_id", "timestamp"], how="left", maintain_order="left"
    )
    out: dict[str, dict] = {s: {"rows": 0, "checked": 0, "series": 0, "worst": {}} for s in SYMBOLS}
    for (symbol, _segment), series in joined.group_by(["symbol", "segment_id"], maintain_order=True):
        report = out[symbol]
        report["rows"] += series.height
        if series.height < MIN_SERIES:
            continue
        series = series.sort("timestamp")
        close = series["close"].to_numpy()
        expected = oracle(series["high"].to_numpy(), series["low"].to_numpy(), close)
        report["checked"] += series.height - WARMUP
        report["series"] += 1
        for name in TA_COLUMNS:
            ours, theirs = series[name].to_numpy()[WARMUP:], expected[name][WARMUP:]
            assert np.isfinite(theirs).all(), f"{symbol} {name}: the oracle has gaps after warm-up"
            assert np.isfinite(ours).all(), f"{symbol} {name}: a null or NaN after warm-up"
            error = np.abs(ours - theirs)
            worst_abs, worst_rel = report["worst"].get(name, (0.0, 0.0))
            report["worst"][name] = (
                max(worst_abs, float(error.max())),
                max(worst_rel, float((error / np.abs(close[WARMUP:])).max())),
            )
    return out


def test_every_symbol_file_is_present():
    assert len(SYMBOLS) == 10 and "ADA_BTC" in SYMBOLS


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_ta_columns_equal_the_ta_library(comparison, symbol):
    report = comparison[symbol]
    assert report["series"] >= 1, f"{symbol}: no series long enough to compare"
    assert set(report["worst"]) == set(TA_COLUMNS)
    off = {
        name: worst
        for name, worst in report["worst"].items()
        if worst[0] > TOLERANCE or (name in PRICE_VALUED and worst[1] > TOLERANCE)
    }
    assert not off, f"{symbol}: (max |diff|, max |diff| / close) beyond {TOLERANCE}: {off}"


def test_most_rows_are_checked(comparison, candles):
    rows = sum(r["rows"] for r in comparison.values())
    checked = sum(r["checked"] for r in comparison.values())
    assert rows == candles.height
    assert checked >= 0.75 * rows, (checked, rows)
    # ADA_BTC has segment breaks: each long segment is its own series, the 6-bar one is skipped
    assert comparison["ADA_BTC"]["series"] == 2
    assert all(r["series"] == 1 for s, r in comparison.items() if s != "ADA_BTC")


def test_core31_reuses_the_ta_values(candles, features):
    """The core31 indicators are the (oracle-checked) ta columns, rescaled."""
    c = pl.col
    di_sum, band = c("plus_di_14") + c("minus_di_14"), c("bb_upper") - c("bb_lower")
    expected = {
        "rsi_norm": (c("rsi_14") - 50.0) / 50.0,
        "rsi_slope": (c("rsi_14") - c("rsi_14").shift(5).over("symbol", "segment_id")) / 100.0,
        "adx_norm": c("adx_14") / 100.0,
        "macd_norm": c("macd") / c("close"),
        "atr_ratio": c("atr_14") / c("close"),
        "bb_width": band / c("bb_middle"),
        "bb_position": pl.when(band != 0).then((c("close") - c("bb_lower")) / band).otherwise(0.5),
        "adx_direction": pl.when(di_sum != 0).then((c("plus_di_14") - c("minus_di_14")) / di_sum).otherwise(0.0),
    }
    f = (
        features.join(candles.select("symbol", "timestamp", "close"), on=["symbol", "timestamp"], how="left")
        .sort("symbol", "timestamp")
        .with_columns(**{f"want_{name}": e for name, e in expected.items()})
        .filter(pl.col("warm"))
    )
    assert f.height > 0.8 * candles.height
    assert features.columns.count("macd_hist") == 1  # one name, one definition, in both sets
    for name in expected:
        got, want = f[name].to_numpy(), f[f"want_{name}"].to_numpy()
        assert np.isfinite(got).all() and np.isfinite(want).all(), name
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=name)

    # macd_hist is the same column whichever set asks for it
    symbols = candles["symbol"].unique().to_list()
    alone = {
        name: compute_features(
            candles, select_features(FeatureConfig(sets=(name,)), symbols, 300), timeframe_seconds=300
        )
        for name in ("core31", "ta")
    }
    assert alone["core31"]["macd_hist"].equals(alone["ta"]["macd_hist"])
    assert alone["ta"]["macd_hist"].equals(features["macd_hist"])
    assert alone["ta"]["adx_14"].equals(features["adx_14"])
