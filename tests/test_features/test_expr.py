"""The expression language: what cannot be written (look-ahead, booleans as numbers), warm-up
arithmetic, ``walk`` order, and tiny hand-computed results of the polars back-end (``batch``)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from clm.features import batch
from clm.features.core31 import core31_features
from clm.features.expr import (
    EWM_TOLERANCE,
    STATEFUL,
    col,
    const,
    ewm_warmup,
    inputs,
    maximum,
    minimum,
    safe_div,
    time_of,
    walk,
    warmup,
    where,
)
from clm.features.ta import rsi

close, high, volume = col("close"), col("high"), col("volume")

# ---- what the language refuses --------------------------------------------------------------


@pytest.mark.parametrize("bars", [0, -1, -5, 1.5, True, "1"])
def test_no_negative_or_zero_shift(bars):
    with pytest.raises(ValueError, match="shift: window must be an integer >= 1"):
        close.shift(bars)


@pytest.mark.parametrize("bars", [0, -1])
def test_diff_and_pct_change_cannot_look_ahead(bars):
    with pytest.raises(ValueError, match="shift"):
        close.diff(bars)
    with pytest.raises(ValueError, match="shift"):
        close.pct_change(bars)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: close.rolling_mean(0), "rolling_mean: window must be an integer >= 1"),
        (lambda: close.rolling_sum(-3), "rolling_sum: window"),
        (lambda: close.rolling_max(2.0), "rolling_max: window"),
        (lambda: close.rolling_min(0), "rolling_min: window"),
        (lambda: close.rolling_std(1), "rolling_std: window must be an integer >= 2"),
        (lambda: close.rolling_std(5, ddof=2), "ddof must be 0 or 1"),
        (lambda: close.ewm(0.0), r"alpha must be in \(0, 1\]"),
        (lambda: close.ewm(1.5), r"alpha must be in \(0, 1\]"),
        (lambda: close.ewm(-0.1), r"alpha must be in \(0, 1\]"),
        (lambda: close.wilder(0), "wilder: window"),
        (lambda: close.ema(0), "ema: window"),
        (lambda: col("timestamp"), "unknown input column 'timestamp'"),
        (lambda: col("future_close"), "unknown input column"),
        (lambda: time_of("minute"), "unknown time field"),
        (lambda: const(float("nan")), "constants must be finite"),
        (lambda: const(float("inf")), "constants must be finite"),
    ],
)
def test_invalid_parameters_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_every_stateful_operator_looks_backward():
    # a new windowed operator must be added here on purpose, with its warm-up rule and both back-ends
    assert set(STATEFUL) == {
        "shift", "rolling_mean", "rolling_sum", "rolling_std", "rolling_max", "rolling_min", "ewm",
    }
    for name in ("lead", "center", "cum_sum", "rank", "mean", "std", "fill_forward", "fill_backward"):
        assert not hasattr(close, name), name


def test_where_needs_a_condition():
    with pytest.raises(TypeError, match="condition must be a comparison"):
        where(close, 1.0, 0.0)
    with pytest.raises(TypeError, match="condition must be a comparison"):
        where(True, 1.0, 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="condition must be a comparison"):
        where(close - high, 1.0, 0.0)
    node = where(close > high, 1.0, close)
    assert node.op == "where" and node.args[0].op == "gt"


@pytest.mark.parametrize(
    "build",
    [
        lambda c: c + 1.0,
        lambda c: 1.0 - c,
        lambda c: c * close,
        lambda c: -c,
        lambda c: abs(c),
        lambda c: c.log(),
        lambda c: c.shift(1),
        lambda c: c.rolling_mean(3),
        lambda c: c.ewm(0.5),
        lambda c: c.fill_missing(0.0),
        lambda c: maximum(c, 0.0),
        lambda c: minimum(0.0, c),
        lambda c: where(close > 0.0, c, 0.0),
        lambda c: where(close > 0.0, 0.0, c),
        lambda c: c > 0.5,
    ],
)
def test_conditions_cannot_be_used_as_numbers(build):
    with pytest.raises(TypeError, match="is a condition"):
        build(close > high)


def test_logical_operators_join_only_conditions():
    with pytest.raises(TypeError, match="joins two conditions"):
        (close > high) & close
    with pytest.raises(TypeError, match="joins two conditions"):
        close | (close > high)
    assert ((close > high) & (close < 2.0)).is_boolean


@pytest.mark.parametrize("value", [True, False, "1.0", None, [1.0]])
def test_only_real_numbers_lift_to_constants(value):
    with pytest.raises(TypeError, match="cannot use"):
        close + value


def test_equal_trees_are_equal_and_have_canonical_keys():
    a = close.shift(1).rolling_mean(5)
    b = col("close").shift(1).rolling_mean(5)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a.key == "rolling_mean(shift(col('close'),1),5)"
    assert close.shift(1) != close.shift(2)
    assert close.ema(20).key == f"ewm(col('close'),{2.0 / 21!r})"
    assert close.wilder(14) == close.ewm(1.0 / 14)
    assert inputs(rsi(14)) == {"close"}
    assert inputs(time_of("hour") * volume) == {"volume", "timestamp"}


# ---- warm-up --------------------------------------------------------------------------------


def test_warmup_rules():
    assert warmup(close) == 0
    assert warmup(const(3.0)) == 0
    assert warmup(time_of("hour")) == 0
    assert warmup(close.shift(3)) == 3
    assert warmup(close.diff(2)) == 2
    assert warmup(close.rolling_mean(20)) == 19
    assert warmup(close.rolling_std(20)) == 19
    assert warmup(close.rolling_max(1)) == 0
    # windows stack along a chain ...
    assert warmup(close.shift(2).rolling_mean(5)) == 6
    assert warmup(close.diff(1).rolling_sum(14).shift(5)) == 1 + 13 + 5
    # ... and a combination takes the longest operand, conditions included
    assert warmup(close.shift(3) + close.rolling_mean(10)) == 9
    assert warmup(where(close.shift(7) > 0.0, close, close.shift(2))) == 7
    assert warmup(where(close > 0.0, close.rolling_min(4), 0.0)) == 3
    # filling a gap does not make it settled
    assert warmup(close.diff(4).fill_missing(0.0)) == 4
    # recursive means: until the starting value weighs less than the tolerance
    assert warmup(close.ewm(1.0)) == 0
    assert warmup(close.ewm(0.5)) == ewm_warmup(0.5) == math.ceil(math.log(EWM_TOLERANCE) / math.log(0.5))
    assert warmup(close.diff(1).wilder(14)) == 1 + ewm_warmup(1 / 14)


@pytest.mark.parametrize("alpha", [1 / 14, 2 / 21, 2 / 27, 0.2, 0.5, 0.9, 1e-3])
def test_ewm_warmup_is_the_first_bar_below_tolerance(alpha):
    w = ewm_warmup(alpha)
    assert (1 - alpha) ** w < EWM_TOLERANCE * (1 + 1e-12)
    assert (1 - alpha) ** (w - 1) >= EWM_TOLERANCE


def test_walk_is_children_first_deduplicated_and_deterministic():
    lag = close.shift(1)
    node = lag + lag * close
    order = [n.key for n in walk(node)]
    assert order == [
        "col('close')",
        "shift(col('close'),1)",
        "mul(shift(col('close'),1),col('close'))",
        node.key,
    ]
    assert order == [n.key for n in walk(lag + lag * close)]  # same tree, same order


def test_walk_visits_every_node_once_after_its_arguments():
    for feature in core31_features():
        seen: list[str] = []
        for n in walk(feature.node):
            assert all(a.key in seen for a in n.args), (feature.name, n.key)
            seen.append(n.key)
        assert len(seen) == len(set(seen)), feature.name
        assert seen[-1] == feature.node.key


# ---- the polars back-end on hand-computed examples -----------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday
X = [1.0, 2.0, 4.0, 7.0, 11.0, 10.0, 20.0, 30.0]
GROUPS = [0, 0, 0, 0, 0, 1, 1, 1]


def run(**roots) -> dict[str, list]:
    frame = pl.DataFrame(
        {
            batch.GROUP: GROUPS,
            "timestamp": pl.Series(
                [T0 + timedelta(minutes=90 * i) for i in range(len(X))], dtype=pl.Datetime("us", "UTC")
            ),
            "close": X,
            "high": [x + 1.0 for x in X],
        }
    )
    out = batch.evaluate(frame.lazy(), roots).collect()
    assert out.columns == [*frame.columns, *roots]  # no temporaries left behind
    return {name: out[name].to_list() for name in roots}


def approx(values):
    return [None if v is None else pytest.approx(v, rel=1e-12, abs=1e-15) for v in values]


def test_shift_is_per_series():
    got = run(s1=close.shift(1), s2=close.shift(2), d=close.diff(1))
    assert got["s1"] == [None, 1.0, 2.0, 4.0, 7.0, None, 10.0, 20.0]
    assert got["s2"] == [None, None, 1.0, 2.0, 4.0, None, None, 10.0]
    assert got["d"] == [None, 1.0, 2.0, 3.0, 4.0, None, 10.0, 10.0]


def test_rolling_windows_need_all_values():
    got = run(
        mean=close.rolling_mean(3),
        total=close.rolling_sum(2),
        top=close.rolling_max(2),
        bottom=close.rolling_min(3),
        std=close.rolling_std(3),
        std1=close.rolling_std(3, ddof=1),
    )
    assert got["mean"] == approx([None, None, 7 / 3, 13 / 3, 22 / 3, None, None, 20.0])
    assert got["total"] == [None, 3.0, 6.0, 11.0, 18.0, None, 30.0, 50.0]
    assert got["top"] == [None, 2.0, 4.0, 7.0, 11.0, None, 20.0, 30.0]
    assert got["bottom"] == [None, None, 1.0, 2.0, 4.0, None, None, 10.0]
    assert got["std"] == approx(
        [None, None, math.sqrt(14 / 9), math.sqrt(38 / 9), math.sqrt(74 / 9), None, None, math.sqrt(200 / 3)]
    )
    assert got["std1"] == approx(
        [None, None, math.sqrt(7 / 3), math.sqrt(19 / 3), math.sqrt(37 / 3), None, None, 10.0]
    )
    # a window over a shifted input waits for both
    assert run(m=close.shift(1).rolling_mean(2))["m"] == approx([None, None, 1.5, 3.0, 5.5, None, None, 15.0])


def test_ewm_is_the_unadjusted_recursion_started_at_the_first_value():
    got = run(e=close.ewm(0.5), d=close.diff(1).ewm(0.5), one=close.ewm(1.0))
    # y_t = 0.5 y_{t-1} + 0.5 x_t, y_0 = x_0 (adjust=True would give 5/3 at t = 1)
    assert got["e"] == approx([1.0, 1.5, 2.75, 4.875, 7.9375, 10.0, 15.0, 22.5])
    # a leading gap (the first diff) is skipped: the recursion starts at the first value
    assert got["d"] == approx([None, 1.0, 1.5, 2.25, 3.125, None, 10.0, 10.0])
    assert got["one"] == X


def test_warmup_equals_leading_gaps_for_windows_and_shifts():
    nodes = {
        "a": close.shift(2),
        "b": close.rolling_mean(3),
        "c": close.shift(1).rolling_max(2),
        "d": close.diff(1).rolling_sum(2) + close.shift(1),
    }
    got = run(**nodes)
    for name, node in nodes.items():
        first_series = got[name][:5]
        assert first_series.index(next(v for v in first_series if v is not None)) == warmup(node), name


def test_safe_div_default_and_missing_denominator():
    got = run(
        zero=safe_div(close, close - 4.0),
        other=safe_div(close, close - 4.0, default=-1.0),
        lagged=safe_div(close, close.shift(1)),
    )
    assert got["zero"] == approx([-1 / 3, -1.0, 0.0, 7 / 3, 11 / 7, 10 / 6, 20 / 16, 30 / 26])
    assert got["other"][2] == -1.0
    # a missing denominator (warm-up) stays missing; only a zero one takes the default
    assert got["lagged"][0] is None and got["lagged"][5] is None
    assert [got["lagged"][i] for i in (1, 2, 3, 4, 6, 7)] == approx([2.0, 2.0, 7 / 4, 11 / 7, 2.0, 1.5])


def test_where_null_semantics():
    got = run(
        missing_condition=where(close.shift(1) > 1.5, 1.0, 0.0),
        missing_branch=where(close > 0.0, close.shift(1), -1.0),
        not_taken=where(close < 0.0, close.shift(1), -1.0),
        filled=close.diff(1).fill_missing(0.0),
    )
    # a comparison with a missing value is false: the otherwise branch
    assert got["missing_condition"] == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    # a missing value in the branch that is taken stays missing ...
    assert got["missing_branch"] == [None, 1.0, 2.0, 4.0, 7.0, None, 10.0, 20.0]
    # ... and one in the branch that is not taken does not matter
    assert got["not_taken"] == [-1.0] * len(X)
    assert got["filled"] == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 10.0, 10.0]


def test_maximum_with_a_missing_operand():
    got = run(
        left=maximum(close.shift(1), close),
        right=maximum(close, close.shift(1)),
        low=minimum(close.shift(1), close),
    )
    # missing on the left yields the right operand (how true range treats a series' first bar) ...
    assert got["left"] == [1.0, 2.0, 4.0, 7.0, 11.0, 10.0, 20.0, 30.0]
    assert got["low"] == [1.0, 1.0, 2.0, 4.0, 7.0, 10.0, 10.0, 20.0]
    # ... and missing on the right stays missing
    assert got["right"][0] is None and got["right"][5] is None


def test_elementwise_and_time_fields():
    got = run(
        hour=time_of("hour"),
        dow=time_of("day_of_week"),
        logret=(close / close.shift(1)).log(),
        clipped=close.clip(lower=2.0, upper=10.0),
        spread=high - close,
    )
    assert got["hour"] == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5]
    assert got["dow"] == [0.0] * len(X)  # 2024-01-01 is a Monday
    assert got["logret"] == approx(
        [None, math.log(2), math.log(2), math.log(7 / 4), math.log(11 / 7), None, math.log(2), math.log(1.5)]
    )
    assert got["clipped"] == [2.0, 2.0, 4.0, 7.0, 10.0, 10.0, 10.0, 10.0]
    assert got["spread"] == [1.0] * len(X)


def test_shared_subtrees_give_identical_columns():
    a = close.diff(1).wilder(3)
    got = run(a=a, b=a + 0.0, c=close.diff(1).ewm(1 / 3))
    assert got["a"] == got["b"] == got["c"]
