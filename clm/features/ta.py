"""The ``ta`` set: classic indicators as bukosabino/ta defines them, with Wilder smoothing.

Formulas (c, h, l = close, high, low; W_n = Wilder smoothing, alpha = 1/n; E_n = EMA, alpha = 2/(n+1)):
- ``rsi_14`` = 100 - 100 / (1 + W_14(up) / W_14(down)), up/down = positive/negative parts of
  c - c[-1] (0 on the first bar); 100 when W_14(down) = 0.
- ``macd`` = E_12(c) - E_26(c); ``macd_signal`` = E_9(macd); ``macd_hist`` = macd - macd_signal.
- ``bb_middle`` = mean_20(c); ``bb_upper`` / ``bb_lower`` = bb_middle +/- 2 std_20(c) (population std).
- ``atr_14`` = W_14(TR), TR = max(h - l, |h - c[-1]|, |l - c[-1]|).
- ``plus_di_14`` / ``minus_di_14`` = 100 W_14(+DM) / W_14(TR) and 100 W_14(-DM) / W_14(TR), with
  +DM = h - h[-1] when it is positive and above l[-1] - l, else 0 (and symmetrically for -DM); 0 when
  W_14(TR) = 0.
- ``adx_14`` = W_14(DX), DX = 100 |+DI - -DI| / (+DI + -DI) (0 when both are 0).
- ``sma_20`` = mean_20(c); ``ema_20`` = E_20(c).

Only the starting values differ from ``ta`` (it seeds some recursions with a simple average); after
1,000 bars the two agree to 1e-9, which the oracle tests check on real Binance bars.
"""

from __future__ import annotations

from clm.features.expr import Node, col, maximum, safe_div, where
from clm.features.registry import Feature

close, high, low = col("close"), col("high"), col("low")


def true_range() -> Node:
    prev_close = close.shift(1)
    # the term that is missing on a series' first bar goes first, so that bar's TR is h - l
    return maximum(maximum(abs(high - prev_close), abs(low - prev_close)), high - low)


def atr(n: int = 14) -> Node:
    return true_range().wilder(n)


def rsi(n: int = 14) -> Node:
    change = close.diff(1).fill_missing(0.0)
    up = where(change > 0.0, change, 0.0).wilder(n)
    down = where(change < 0.0, -change, 0.0).wilder(n)
    return where(down > 0.0, 100.0 - 100.0 / (1.0 + up / down), 100.0)


def directional_movement() -> tuple[Node, Node]:
    up_move = high - high.shift(1)
    down_move = low.shift(1) - low
    plus_dm = where((up_move > down_move) & (up_move > 0.0), up_move, 0.0)
    minus_dm = where((down_move > up_move) & (down_move > 0.0), down_move, 0.0)
    return plus_dm, minus_dm


def directional_indicators(n: int = 14) -> tuple[Node, Node]:
    plus_dm, minus_dm = directional_movement()
    tr = atr(n)
    return safe_div(100.0 * plus_dm.wilder(n), tr), safe_div(100.0 * minus_dm.wilder(n), tr)


def adx(n: int = 14) -> Node:
    plus_di, minus_di = directional_indicators(n)
    dx = safe_div(100.0 * abs(plus_di - minus_di), plus_di + minus_di)
    return dx.wilder(n)


def macd(fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[Node, Node]:
    line = close.ema(fast) - close.ema(slow)
    return line, line.ema(signal)


def bollinger(n: int = 20, k: float = 2.0) -> tuple[Node, Node, Node]:
    middle = close.rolling_mean(n)
    width = k * close.rolling_std(n, ddof=0)
    return middle + width, middle, middle - width


def ta_features() -> list[Feature]:
    macd_line, macd_signal = macd()
    bb_upper, bb_middle, bb_lower = bollinger()
    plus_di, minus_di = directional_indicators(14)
    rows = [
        ("rsi_14", "indicator", rsi(14), "Wilder RSI(14) of close", (("window", 14),)),
        ("macd", "indicator", macd_line, "EMA12(close) - EMA26(close)", (("fast", 12), ("slow", 26))),
        ("macd_signal", "indicator", macd_signal, "EMA9(macd)", (("signal", 9),)),
        ("macd_hist", "indicator", macd_line - macd_signal, "macd - macd_signal", ()),
        ("bb_upper", "volatility", bb_upper, "SMA20(close) + 2 std20(close)", (("window", 20), ("k", 2.0))),
        ("bb_middle", "volatility", bb_middle, "SMA20(close)", (("window", 20),)),
        ("bb_lower", "volatility", bb_lower, "SMA20(close) - 2 std20(close)", (("window", 20), ("k", 2.0))),
        ("atr_14", "volatility", atr(14), "Wilder14(true range)", (("window", 14),)),
        ("adx_14", "trend", adx(14), "Wilder14(DX), DX = 100|+DI - -DI|/(+DI + -DI)", (("window", 14),)),
        ("plus_di_14", "trend", plus_di, "100 Wilder14(+DM) / ATR14", (("window", 14),)),
        ("minus_di_14", "trend", minus_di, "100 Wilder14(-DM) / ATR14", (("window", 14),)),
        ("sma_20", "trend", close.rolling_mean(20), "SMA20(close)", (("window", 20),)),
        ("ema_20", "trend", close.ema(20), "EMA20(close), alpha = 2/21", (("span", 20),)),
    ]
    return [Feature(name, category, node, formula, params) for name, category, node, formula, params in rows]
