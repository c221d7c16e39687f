"""The ``core31`` set: the seed ML pipeline's 31 scale-free features in 7 categories.

Every feature is a ratio, a position in a range, an oscillator or a calendar angle, so one model can
be trained across symbols whose prices differ by orders of magnitude. Notation: c, h, l, v = close,
high, low, volume; x[-k] = the value k bars earlier; mean_n / std_n / max_n / min_n / sum_n =
rolling over the last n bars including this one; ATR, RSI, MACD, +DI, -DI, ADX are the ``ta`` set's.

momentum
  ``mom_n`` (n = 5, 10, 20, 50) = c / c[-n] - 1
  ``ret_k`` (k = 1..5) = ln(c[-(k-1)] / c[-k]): the log return of the k-th most recent bar
volatility
  ``atr_ratio`` = ATR14 / c
  ``bb_position`` = (c - bb_lower) / (bb_upper - bb_lower) (0.5 when the bands are flat)
  ``bb_width`` = (bb_upper - bb_lower) / bb_middle
  ``range_position`` = (c - min_20(l)) / (max_20(h) - min_20(l)) (0.5 when the range is flat)
volume
  ``vol_ratio_5_20`` = mean_5(v) / mean_20(v) (1 when there was no volume)
  ``vol_trend`` = mean_10(v) / mean_50(v) - 1 (0 when there was no volume)
  ``vol_spike`` = (v - mean_20(v)) / std_20(v) (0 when volume was constant)
structure
  ``higher_highs`` = share of the last 10 bars whose high is above the previous bar's high
  ``lower_lows`` = share of the last 10 bars whose low is below the previous bar's low
  ``swing_position`` = (c - min_50(l)) / (max_50(h) - min_50(l)) (0.5 when the range is flat)
indicator
  ``rsi_norm`` = (RSI14 - 50) / 50
  ``rsi_slope`` = (RSI14 - RSI14[-5]) / 100
  ``macd_norm`` = MACD(12, 26) / c
  ``macd_hist`` = MACD - signal, exactly the ``ta`` set's column (one name, one definition)
  ``adx_norm`` = ADX14 / 100
  ``adx_direction`` = (+DI - -DI) / (+DI + -DI) (0 when both are 0)
time (UTC, of the bar's open)
  ``hour_sin``, ``hour_cos`` = sin, cos of 2 pi hour / 24 (fractional hour)
  ``day_of_week`` = 0 (Monday) .. 6
regime
  ``trend_strength`` = |c - c[-20]| / sum_20(|c - c[-1]|): Kaufman's efficiency ratio, 1 = straight line
  ``choppiness`` = log10(sum_14(TR) / (max_14(h) - min_14(l))) / log10(14): 1 = choppy, 0 = trending
  ``mean_reversion`` = -corr_50(r, r[-1]) of one-bar log returns r: positive when moves tend to undo
"""

from __future__ import annotations

import math

from clm.features.expr import Node, col, safe_div, time_of, where
from clm.features.registry import Feature
from clm.features.ta import (
    adx,
    atr,
    bollinger,
    directional_indicators,
    macd,
    rsi,
    true_range,
)

close, high, low, volume = col("close"), col("high"), col("low"), col("volume")


def log_return(bars: int = 1) -> Node:
    return (close / close.shift(bars)).log()


def rolling_autocorrelation(x: Node, n: int) -> Node:
    """Pearson correlation of x with x[-1] over the last n bars, from rolling moments."""
    lagged = x.shift(1)
    mean_x, mean_y = x.rolling_mean(n), lagged.rolling_mean(n)
    cov = (x * lagged).rolling_mean(n) - mean_x * mean_y
    var_x = (x * x).rolling_mean(n) - mean_x * mean_x
    var_y = (lagged * lagged).rolling_mean(n) - mean_y * mean_y
    return safe_div(cov, (var_x * var_y).clip(lower=0.0).sqrt())


def _position(value: Node, lowest: Node, highest: Node) -> Node:
    return safe_div(value - lowest, highest - lowest, 0.5)


def core31_features() -> list[Feature]:
    bb_upper, bb_middle, bb_lower = bollinger(20, 2.0)
    macd_line, macd_signal = macd(12, 26, 9)
    plus_di, minus_di = directional_indicators(14)
    rsi_14 = rsi(14)
    one_bar = log_return(1)
    hour_angle = time_of("hour") * (2.0 * math.pi / 24.0)
    rows: list[tuple[str, str, Node, str, tuple]] = []
    for n in (5, 10, 20, 50):
        rows.append((f"mom_{n}", "momentum", close / close.shift(n) - 1.0, f"c / c[-{n}] - 1", (("bars", n),)))
    for k in range(1, 6):
        node = one_bar if k == 1 else one_bar.shift(k - 1)
        rows.append((f"ret_{k}", "momentum", node, f"ln(c[-{k - 1}] / c[-{k}])", (("lag", k),)))
    rows += [
        ("atr_ratio", "volatility", atr(14) / close, "ATR14 / c", (("window", 14),)),
        ("bb_position", "volatility", _position(close, bb_lower, bb_upper),
         "(c - bb_lower) / (bb_upper - bb_lower)", (("window", 20), ("k", 2.0))),
        ("bb_width", "volatility", safe_div(bb_upper - bb_lower, bb_middle), "(bb_upper - bb_lower) / bb_middle",
         (("window", 20), ("k", 2.0))),
        ("range_position", "volatility", _position(close, low.rolling_min(20), high.rolling_max(20)),
         "(c - min20(l)) / (max20(h) - min20(l))", (("window", 20),)),
        ("vol_ratio_5_20", "volume", safe_div(volume.rolling_mean(5), volume.rolling_mean(20), 1.0),
         "mean5(v) / mean20(v)", (("fast", 5), ("slow", 20))),
        ("vol_trend", "volume", safe_div(volume.rolling_mean(10), volume.rolling_mean(50), 1.0) - 1.0,
         "mean10(v) / mean50(v) - 1", (("fast", 10), ("slow", 50))),
        ("vol_spike", "volume", safe_div(volume - volume.rolling_mean(20), volume.rolling_std(20)),
         "(v - mean20(v)) / std20(v)", (("window", 20),)),
        ("higher_highs", "structure", where(high > high.shift(1), 1.0, 0.0).rolling_mean(10),
         "share of last 10 bars with h > h[-1]", (("window", 10),)),
        ("lower_lows", "structure", where(low < low.shift(1), 1.0, 0.0).rolling_mean(10),
         "share of last 10 bars with l < l[-1]", (("window", 10),)),
        ("swing_position", "structure", _position(close, low.rolling_min(50), high.rolling_max(50)),
         "(c - min50(l)) / (max50(h) - min50(l))", (("window", 50),)),
        ("rsi_norm", "indicator", (rsi_14 - 50.0) / 50.0, "(RSI14 - 50) / 50", (("window", 14),)),
        ("rsi_slope", "indicator", (rsi_14 - rsi_14.shift(5)) / 100.0, "(RSI14 - RSI14[-5]) / 100",
         (("window", 14), ("lag", 5))),
        ("macd_norm", "indicator", macd_line / close, "MACD(12, 26) / c", (("fast", 12), ("slow", 26))),
        ("macd_hist", "indicator", macd_line - macd_signal, "macd - macd_signal", ()),
        ("adx_norm", "indicator", adx(14) / 100.0, "ADX14 / 100", (("window", 14),)),
        ("adx_direction", "indicator", safe_div(plus_di - minus_di, plus_di + minus_di),
         "(+DI - -DI) / (+DI + -DI)", (("window", 14),)),
        ("hour_sin", "time", hour_angle.sin(), "sin(2 pi hour / 24)", ()),
        ("hour_cos", "time", hour_angle.cos(), "cos(2 pi hour / 24)", ()),
        ("day_of_week", "time", time_of("day_of_week"), "0 = Monday .. 6", ()),
        ("trend_strength", "regime", safe_div(abs(close - close.shift(20)), abs(close.diff(1)).rolling_sum(20)),
         "|c - c[-20]| / sum20(|c - c[-1]|)", (("window", 20),)),
        ("choppiness", "regime", safe_div(
            true_range().rolling_sum(14), high.rolling_max(14) - low.rolling_min(14), 1.0
        ).log() / math.log(14.0), "log(sum14(TR) / (max14(h) - min14(l))) / log(14)", (("window", 14),)),
        ("mean_reversion", "regime", -rolling_autocorrelation(one_bar, 50), "-corr50(r, r[-1])",
         (("window", 50),)),
    ]
    return [Feature(name, category, node, formula, params) for name, category, node, formula, params in rows]
