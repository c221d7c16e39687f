"""build_labels / label_summary: hand-built frames with known answers, and the Binance fixture."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clm.labels import (
    NULL_REASONS,
    LabelConfig,
    build_labels,
    label_columns,
    label_summary,
    output_schema,
)

DATA = Path(__file__).parents[1] / "data"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
BAR = timedelta(minutes=5)


def candles(
    closes,
    *,
    symbol: str = "A",
    high=None,
    low=None,
    segment=None,
    filled=None,
    atr=1.0,
    start: datetime = T0,
) -> pl.DataFrame:
    closes = [float(c) for c in closes]
    n = len(closes)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timestamp": pl.Series(
                [start + i * BAR for i in range(n)], dtype=pl.Datetime("us", "UTC")
            ),
            "open": closes,
            "high": [float(x) for x in high] if high is not None else closes,
            "low": [float(x) for x in low] if low is not None else closes,
            "close": closes,
            "is_filled": filled if filled is not None else [False] * n,
            "segment_id": pl.Series(segment if segment is not None else [0] * n, dtype=pl.Int32),
            "atr_14": pl.Series(
                atr if isinstance(atr, list) else [float(atr)] * n, dtype=pl.Float64
            ),
        }
    )


def random_closes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def reference(df: pl.DataFrame, config: LabelConfig) -> dict[str, list]:
    """Plain-Python, row-by-row labels for ONE symbol (sorted): the definitions, written naively."""
    c, hi, lo = df["close"].to_list(), df["high"].to_list(), df["low"].to_list()
    ts, seg, filled, atr = (
        df[k].to_list() for k in ("timestamp", "segment_id", "is_filled", "atr_14")
    )
    n, L = df.height, config.latency_bars
    out: dict[str, list] = {col: [] for col in label_columns(config)}
    for t in range(n):
        ends = []
        for h in config.horizons:
            e, x = t + L, t + L + h
            crosses = any(seg[j] != seg[t] for j in range(t, min(x, n - 1) + 1))
            if crosses:
                reason = "segment_break"
            elif (e < n and filled[e]) or (x < n and filled[x]):
                reason = "filled_bar"
            elif x >= n:
                reason = "end_of_data"
            else:
                reason = None
            ret = end = direction = tb = tb_end = None
            if reason is None:
                ret = math.log(c[x] / c[e])
                end = ts[x]
                ends.append(end)
                thr = (
                    config.direction_threshold * 1e-4
                    if config.direction_unit == "bps"
                    else (None if atr[t] is None else config.direction_threshold * atr[t] / c[e])
                )
                if thr is not None:
                    direction = 0 if abs(ret) <= thr else (1 if ret > 0 else -1)
                if atr[t] is not None:
                    up, dn = (
                        c[e] + config.take_profit_atr * atr[t],
                        c[e] - config.stop_loss_atr * atr[t],
                    )
                    tb, tb_end = 0, ts[x]
                    for j in range(e + 1, x + 1):
                        if lo[j] <= dn:
                            tb, tb_end = -1, ts[j]
                            break
                        if hi[j] >= up:
                            tb, tb_end = 1, ts[j]
                            break
            out[f"forward_return_{h}"].append(ret)
            out[f"label_end_{h}"].append(end)
            out[f"direction_{h}"].append(direction)
            out[f"label_null_reason_{h}"].append(reason)
            if config.triple_barrier:
                out[f"tb_label_{h}"].append(tb)
                out[f"tb_end_{h}"].append(tb_end)
        out["label_end"].append(max(ends) if ends else None)
    return out


def assert_matches_reference(got: pl.DataFrame, df: pl.DataFrame, config: LabelConfig) -> None:
    want = reference(df, config)
    for col, values in want.items():
        if col.startswith("forward_return_"):
            np.testing.assert_allclose(
                got[col].to_numpy().astype(float),
                np.array([np.nan if v is None else v for v in values]),
                rtol=1e-12,
                atol=0,
                err_msg=col,
            )
        else:
            assert got[col].to_list() == values, col


# ---------------------------------------------------------------------------------------------
# returns, latency, horizons, label_end


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_forward_return_entry_and_exit_bars(latency):
    closes = random_closes(30)
    df = candles(closes)
    config = LabelConfig(horizons=(1, 4), latency_bars=latency, triple_barrier=False)
    out = build_labels(df, config)
    ts = df["timestamp"].to_list()
    n = df.height
    for h in config.horizons:
        last_valid = n - 1 - latency - h
        for t in range(n):
            r, end = out[f"forward_return_{h}"][t], out[f"label_end_{h}"][t]
            if t <= last_valid:
                assert r == pytest.approx(
                    math.log(closes[t + latency + h] / closes[t + latency]), rel=1e-12
                )
                assert end == ts[t + latency + h]
                assert out[f"label_null_reason_{h}"][t] is None
            else:
                assert r is None and end is None
                assert out[f"label_null_reason_{h}"][t] == "end_of_data"
    assert out["label_end"].to_list() == out["label_end_4"].fill_null(out["label_end_1"]).to_list()


def test_latency_shifts_the_window_exactly():
    df = candles(random_closes(40, seed=1))
    base = build_labels(df, LabelConfig(horizons=(5,), latency_bars=0, triple_barrier=False))
    for latency in (1, 3):
        out = build_labels(
            df, LabelConfig(horizons=(5,), latency_bars=latency, triple_barrier=False)
        )
        # row t with latency L is row t+L with latency 0
        assert (
            out["forward_return_5"].to_list()[: 40 - latency]
            == base["forward_return_5"].to_list()[latency:]
        )
        assert (
            out["label_end_5"].to_list()[: 40 - latency] == base["label_end_5"].to_list()[latency:]
        )
        assert out["label_null_reason_5"].to_list()[-(5 + latency) :] == ["end_of_data"] * (
            5 + latency
        )


def test_output_shape_dtypes_and_order_and_lazy_input():
    a = candles(random_closes(20, seed=2), symbol="B")
    b = candles(random_closes(15, seed=3), symbol="A")
    mixed = pl.concat([a, b]).sample(fraction=1.0, shuffle=True, seed=4)
    config = LabelConfig()
    out = build_labels(mixed, config)
    assert out.height == mixed.height
    assert out.schema == output_schema(config)
    assert out.columns == ["symbol", "timestamp", "segment_id", *label_columns(config)]
    assert out.select("symbol", "timestamp").equals(
        mixed.sort("symbol", "timestamp").select("symbol", "timestamp")
    )
    assert build_labels(mixed.lazy(), config).equals(out)


def test_symbols_do_not_leak_into_each_other():
    a = candles(random_closes(25, seed=5), symbol="A")
    b = candles(random_closes(25, seed=6) * 3, symbol="B", atr=2.0)
    config = LabelConfig(horizons=(1, 3))
    both = build_labels(pl.concat([b, a]), config)
    for sym, alone in (("A", a), ("B", b)):
        part = both.filter(pl.col("symbol") == sym)
        assert part.equals(build_labels(alone, config))
        assert_matches_reference(part, alone, config)
        # the last rows have no later bars of their OWN symbol
        assert part["label_null_reason_3"].tail(4).to_list() == ["end_of_data"] * 4


def test_label_never_depends_on_bars_before_entry_or_after_exit():
    rng = np.random.default_rng(7)
    n, L, h = 40, 2, 5
    closes = random_closes(n, seed=8)
    config = LabelConfig(horizons=(h,), latency_bars=L, take_profit_atr=0.5, stop_loss_atr=0.5)
    atr = [0.8] * n
    df = candles(closes, high=closes * 1.004, low=closes * 0.996, atr=atr)
    base = build_labels(df, config)
    for t in (3, 10, 20):
        noisy = closes.copy()
        noisy[: t + L] *= rng.uniform(0.5, 2.0, t + L)  # everything before the entry bar
        noisy[t + L + h + 1 :] *= rng.uniform(0.5, 2.0, n - (t + L + h + 1))  # after the exit bar
        noisy[t + L] = closes[t + L]  # the entry close is kept
        hi, lo = closes * 1.004, closes * 0.996
        hi[: t + L + 1] *= 3  # the entry bar's own high/low are not scanned either
        lo[: t + L + 1] /= 3
        changed = candles(noisy, high=hi, low=lo, atr=atr)
        out = build_labels(changed, config)
        for col in label_columns(config):
            assert out[col][t] == base[col][t], (t, col)


# ---------------------------------------------------------------------------------------------
# null reasons


def test_segment_break_nulls_exactly_the_windows_that_cross_it():
    # segment 0 = rows 0..5, segment 1 = rows 6..11; L=1, h=2: window of row t is t..t+3
    df = candles(random_closes(12, seed=9), segment=[0] * 6 + [1] * 6)
    config = LabelConfig(horizons=(2,), triple_barrier=False)
    reasons = build_labels(df, config)["label_null_reason_2"].to_list()
    assert reasons == [None, None, None] + ["segment_break"] * 3 + [None] * 3 + ["end_of_data"] * 3
    # row 5: the break lies between the decision bar and the entry bar: still a break
    config0 = LabelConfig(horizons=(2,), latency_bars=0, triple_barrier=False)
    reasons0 = build_labels(df, config0)["label_null_reason_2"].to_list()
    assert reasons0 == [None] * 4 + ["segment_break"] * 2 + [None] * 4 + ["end_of_data"] * 2


def test_segment_break_outranks_end_of_data():
    # rows reaching past row 5 cross into segment 1, which also ends too early
    df = candles(random_closes(8, seed=10), segment=[0] * 6 + [1] * 2)
    reasons = build_labels(df, LabelConfig(horizons=(4,), triple_barrier=False))[
        "label_null_reason_4"
    ]
    assert reasons.to_list() == [
        None,
        "segment_break",
        "segment_break",
        "segment_break",
        "segment_break",
        "segment_break",
        "end_of_data",
        "end_of_data",
    ]


def test_segments_from_timeframe_when_segment_id_is_missing():
    closes = random_closes(12, seed=11)
    with_ids = candles(closes, segment=[0] * 6 + [1] * 6)
    # the same bars, with a two-hour hole before row 6 and no segment_id column
    raw = with_ids.with_columns(
        pl.when(pl.int_range(pl.len()) >= 6)
        .then(pl.col("timestamp") + timedelta(hours=2))
        .otherwise(pl.col("timestamp"))
    )
    config = LabelConfig(horizons=(2,), triple_barrier=False)
    out = build_labels(raw.drop("segment_id"), config, timeframe_seconds=300)
    want = build_labels(with_ids, config)
    assert out["segment_id"].to_list() == [0] * 6 + [1] * 6
    assert out["label_null_reason_2"].to_list() == want["label_null_reason_2"].to_list()
    with pytest.raises(ValueError, match="segment_id"):
        build_labels(raw.drop("segment_id"), config)


def test_filled_entry_or_exit_bar_nulls_the_label():
    filled = [False] * 12
    filled[5] = True
    df = candles(random_closes(12, seed=12), filled=filled)
    config = LabelConfig(horizons=(2,), take_profit_atr=5.0, stop_loss_atr=5.0)
    out = build_labels(df, config)
    reasons = out["label_null_reason_2"].to_list()
    # L=1, h=2: row 4 enters on bar 5, row 2 exits on bar 5; row 3 only passes through it
    assert [i for i, r in enumerate(reasons) if r == "filled_bar"] == [2, 4]
    assert reasons[3] is None and out["tb_label_2"][3] == 0
    for col in ("forward_return_2", "label_end_2", "direction_2", "tb_label_2", "tb_end_2"):
        assert out[col][2] is None and out[col][4] is None


def test_filled_entry_outranks_end_of_data():
    filled = [False] * 6
    filled[5] = True
    df = candles(random_closes(6, seed=13), filled=filled)
    reasons = build_labels(df, LabelConfig(horizons=(3,), triple_barrier=False))[
        "label_null_reason_3"
    ]
    # row 4 enters on the filled bar 5 (permanent) although its exit lies beyond the data too
    assert reasons.to_list() == [
        None,
        "filled_bar",
        "end_of_data",
        "end_of_data",
        "filled_bar",
        "end_of_data",
    ]


def test_null_reason_set_iff_label_columns_null():
    df = candles(
        random_closes(30, seed=14),
        segment=[0] * 10 + [1] * 20,
        filled=[i in (15, 22) for i in range(30)],
    )
    config = LabelConfig(horizons=(1, 3, 7))
    out = build_labels(df, config)
    assert_matches_reference(out, df, config)
    for h in config.horizons:
        has_reason = out[f"label_null_reason_{h}"].is_not_null()
        assert set(out[f"label_null_reason_{h}"].drop_nulls()) <= set(NULL_REASONS)
        for col in (
            f"forward_return_{h}",
            f"label_end_{h}",
            f"direction_{h}",
            f"tb_label_{h}",
            f"tb_end_{h}",
        ):
            assert (out[col].is_null() == has_reason).all(), col


# ---------------------------------------------------------------------------------------------
# direction


def test_direction_threshold_in_bps():
    # row t's return (L=1, h=1) is ln(c[t+2] / c[t+1])
    closes = [
        100,
        100,
        100 * math.exp(5e-4),
        100 * math.exp(5e-4 + 15e-4),
        100 * math.exp(5e-4),
        100 * math.exp(5e-4),
    ]
    out = build_labels(
        candles(closes), LabelConfig(horizons=(1,), direction_threshold=10.0, triple_barrier=False)
    )
    assert out["direction_1"].to_list() == [0, 1, -1, 0, None, None]
    assert out["direction_1"].dtype == pl.Int8
    loose = build_labels(
        candles(closes), LabelConfig(horizons=(1,), direction_threshold=20.0, triple_barrier=False)
    )
    assert loose["direction_1"].to_list() == [0, 0, 0, 0, None, None]


def test_direction_threshold_in_atr_units():
    # entry close 100 for every row; exit +0.4%: flat when threshold > 0.004, up when below
    closes = [100, 100, 100.4, 100, 100.4, 100, 100]
    atr = [0.5, 0.3, 0.5, 0.3, None, 0.3, 0.3]
    config = LabelConfig(
        horizons=(1,),
        latency_bars=0,
        direction_unit="atr",
        direction_threshold=1.0,
        triple_barrier=False,
    )
    out = build_labels(candles(closes, atr=atr), config)
    # row 0: 0.4% vs 0.5% -> flat; row 1: 0.4% vs 0.3% -> up; row 2: -0.4% vs 0.5/100.4 -> flat;
    # row 3: up; row 4: no ATR -> direction null, the return stays valid
    assert out["direction_1"].to_list() == [0, 1, 0, 1, None, 0, None]
    assert out["forward_return_1"][4] == pytest.approx(math.log(100 / 100.4))
    assert out["label_null_reason_1"][4] is None


def test_atr_column_is_required_when_used():
    df = candles(random_closes(10)).drop("atr_14")
    with pytest.raises(ValueError, match="atr_14"):
        build_labels(df, LabelConfig())
    with pytest.raises(ValueError, match="atr_14"):
        build_labels(df, LabelConfig(direction_unit="atr", triple_barrier=False))
    assert build_labels(df, LabelConfig(triple_barrier=False)).height == 10


# ---------------------------------------------------------------------------------------------
# triple barrier: entry close[1] = 100, atr_14[0] = 1 -> upper 102, lower 99 (tp 2 ATR, sl 1 ATR)


def barrier_case(highs, lows, horizons=(3,)):
    """Row 0's triple barrier for bars 2.. with the given highs/lows (closes stay at 100)."""
    n = 2 + len(highs)
    df = candles(
        [100.0] * n,
        high=[100.0, 100.0, *highs],
        low=[100.0, 100.0, *lows],
        atr=[1.0] + [50.0] * (n - 1),  # later ATRs must not matter: the barriers are row 0's
    )
    out = build_labels(df, LabelConfig(horizons=horizons))
    ts = df["timestamp"].to_list()
    return out.row(0, named=True), ts


@pytest.mark.parametrize(
    ("highs", "lows", "label", "end_bar"),
    [
        ([101, 102, 101], [100, 100, 100], 1, 3),  # take-profit touched (>=) on bar 3
        ([101, 101, 101], [99.5, 99, 98], -1, 3),  # stop-loss touched (<=) on bar 3
        ([101.9, 101.9, 101.9], [99.1, 99.1, 99.1], 0, 4),  # timeout: the exit bar
        ([101, 103, 101], [100, 98, 100], -1, 3),  # both in one bar: stop-loss (conservative)
        ([102.5, 101, 101], [100, 98, 98], 1, 2),  # take-profit first, stop-loss later
        ([101, 101, 101], [98.5, 100, 100], -1, 2),  # stop-loss first
    ],
)
def test_triple_barrier_cases(highs, lows, label, end_bar):
    row, ts = barrier_case(highs, lows)
    assert row["tb_label_3"] == label
    assert row["tb_end_3"] == ts[end_bar]


def test_triple_barrier_timeout_is_the_horizon():
    # take-profit only on bar 5 (k=4): horizon 3 times out, horizon 4 takes profit
    row, ts = barrier_case([101, 101, 101, 103], [100, 100, 100, 100], horizons=(3, 4))
    assert (row["tb_label_3"], row["tb_end_3"]) == (0, ts[4])
    assert (row["tb_label_4"], row["tb_end_4"]) == (1, ts[5])


def test_triple_barrier_null_without_atr_and_matches_reference():
    n = 60
    closes = random_closes(n, seed=15)
    rng = np.random.default_rng(16)
    atr = [None] * 5 + list(rng.uniform(0.5, 2.0, n - 5))
    df = candles(
        closes,
        high=closes * 1.01,
        low=closes * 0.99,
        atr=atr,
        segment=[0] * 30 + [1] * 30,
        filled=[i == 40 for i in range(n)],
    )
    config = LabelConfig(
        horizons=(1, 6, 12), latency_bars=2, take_profit_atr=1.5, stop_loss_atr=1.0
    )
    out = build_labels(df, config)
    assert out["tb_label_6"].head(5).to_list() == [None] * 5
    assert out["forward_return_6"].head(5).null_count() == 0
    assert_matches_reference(out, df, config)


# ---------------------------------------------------------------------------------------------
# config, input checks, summary


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"horizons": ()}, "horizons"),
        ({"horizons": (0, 12)}, "horizons"),
        ({"horizons": (12, 12)}, "horizons"),
        ({"horizons": (1.5,)}, "horizons"),
        ({"horizons": (True,)}, "horizons"),
        ({"horizons": 12}, "horizons"),
        ({"latency_bars": -1}, "latency_bars"),
        ({"latency_bars": 1.0}, "latency_bars"),
        ({"direction_threshold": -1.0}, "direction_threshold"),
        ({"direction_threshold": float("nan")}, "direction_threshold"),
        ({"direction_unit": "pct"}, "direction_unit"),
        ({"triple_barrier": 1}, "triple_barrier"),
        ({"take_profit_atr": 0.0}, "take_profit_atr"),
        ({"stop_loss_atr": -1.0}, "stop_loss_atr"),
        ({"stop_loss_atr": float("inf")}, "stop_loss_atr"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LabelConfig(**kwargs)


def test_config_accepts_a_list_and_is_frozen():
    config = LabelConfig(horizons=[3, 1])
    assert config.horizons == (3, 1)
    with pytest.raises(AttributeError):
        config.latency_bars = 2  # type: ignore[misc]


def test_input_checks():
    df = candles(random_closes(10))
    with pytest.raises(ValueError, match="duplicate"):
        build_labels(pl.concat([df, df.head(1)]), LabelConfig())
    with pytest.raises(ValueError, match="close"):
        build_labels(df.with_columns(pl.lit(0.0).alias("close")), LabelConfig())
    with pytest.raises(ValueError, match="high"):
        build_labels(df.drop("high"), LabelConfig())
    assert build_labels(df.drop("is_filled"), LabelConfig()).equals(build_labels(df, LabelConfig()))
    empty = build_labels(df.clear(), LabelConfig())
    assert empty.height == 0 and empty.schema == output_schema(LabelConfig())


def test_label_summary():
    closes = [
        100,
        100,
        100 * math.exp(5e-4),
        100 * math.exp(20e-4),
        100 * math.exp(-5e-4),
        100,
        100,
    ]
    df = candles(closes, segment=[0] * 6 + [1])
    out = build_labels(df, LabelConfig(horizons=(1,), triple_barrier=False))
    s = label_summary(out)
    # returns of rows 0..3: 5, 15, -25, 5 bps; rows 4, 5 cross the break, row 6 lacks data
    h = s["horizons"]["1"]
    assert s["rows"] == 7
    assert h["valid"] == 4
    assert h["null_reasons"] == {"segment_break": 2, "filled_bar": 0, "end_of_data": 1}
    assert (h["up_share"], h["down_share"], h["flat_share"]) == (0.25, 0.25, 0.5)
    rets = np.array([5e-4, 15e-4, -25e-4, 5e-4])
    assert h["return_mean"] == pytest.approx(rets.mean())
    assert h["return_std"] == pytest.approx(rets.std(ddof=1))
    tb = label_summary(build_labels(df, LabelConfig(horizons=(1,))))["horizons"]["1"]
    assert (
        tb["tb_valid"] == 4
        and tb["tb_timeout_share"] + tb["tb_tp_share"] + tb["tb_sl_share"] == 1.0
    )
    empty = label_summary(out.clear())["horizons"]["1"]
    assert empty["valid"] == 0 and empty["up_share"] is None and empty["return_mean"] is None


# ---------------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def binance_candles() -> pl.DataFrame:
    from clm.data.sources.files import FolderSource
    from clm.data.validation import validate_bars

    bars = validate_bars(FolderSource(DATA / "binance_spot_5m").load().bars).candles
    prev = pl.col("close").shift(1).over("symbol")
    tr = pl.max_horizontal(
        pl.col("high") - pl.col("low"), (pl.col("high") - prev).abs(), (pl.col("low") - prev).abs()
    )
    return bars.with_columns(tr.ewm_mean(alpha=1 / 14, adjust=False).over("symbol").alias("atr_14"))


def test_real_binance_fixture(binance_candles):
    config = LabelConfig()
    out = build_labels(binance_candles, config)
    assert out.height == binance_candles.height
    assert out.select("symbol", "timestamp").equals(binance_candles.select("symbol", "timestamp"))
    summary = label_summary(out)
    for h in config.horizons:
        counts = summary["horizons"][str(h)]
        assert counts["valid"] + sum(counts["null_reasons"].values()) == out.height
        assert counts["null_reasons"]["end_of_data"] == 10 * (config.latency_bars + h)
    # ADA_BTC has filled bars and two segment breaks: compare with the row-by-row definitions
    assert summary["horizons"]["48"]["null_reasons"]["segment_break"] > 0
    assert summary["horizons"]["1"]["null_reasons"]["filled_bar"] > 0
    ada = binance_candles.filter(pl.col("symbol") == "ADA_BTC")
    assert_matches_reference(out.filter(pl.col("symbol") == "ADA_BTC"), ada, config)
    # the triple barrier ends inside the label window
    valid = out.filter(pl.col("tb_end_12").is_not_null())
    assert (valid["tb_end_12"] > valid["timestamp"]).all()
    assert (valid["tb_end_12"] <= valid["label_end_12"]).all()
