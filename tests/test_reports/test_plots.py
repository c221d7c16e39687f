"""Plots: valid PNGs for real and for empty inputs, and the same numbers give the same bytes."""

import datetime as dt
import io

import polars as pl

from clm.reports.plots import MAX_POINTS, calibration_plot, equity_curve_plot, feature_importance_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _readable(png: bytes) -> bool:
    import matplotlib.image as mpimg

    return png.startswith(PNG_SIGNATURE) and mpimg.imread(io.BytesIO(png), format="png").ndim == 3


def test_empty_inputs_still_draw_a_picture_that_says_so():
    empty_curves = pl.DataFrame(schema={"strategy": pl.String, "timestamp": pl.Datetime("us", "UTC"),
                                        "equity": pl.Float64})
    empty_bins = pl.DataFrame(schema={"engine": pl.String, "bin": pl.Int32, "n": pl.UInt32,
                                      "mean_probability": pl.Float64, "frequency": pl.Float64,
                                      "lower": pl.Float64, "upper": pl.Float64})
    for png in (equity_curve_plot(empty_curves), calibration_plot(empty_bins, {}), feature_importance_plot({})):
        assert _readable(png)


def test_long_curves_are_thinned_and_drawn_the_same_way_twice():
    n = MAX_POINTS * 3 + 7
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    times = [start + dt.timedelta(minutes=5 * i) for i in range(n)]
    curves = pl.concat([
        pl.DataFrame({"strategy": name, "timestamp": times, "equity": [1 + k * i / n for i in range(n)]})
        for name, k in (("engine_a", 0.1), ("baseline_buy_and_hold", 0.05), ("baseline_momentum_sign @ x", -0.2))
    ])
    first, second = equity_curve_plot(curves), equity_curve_plot(curves)
    assert _readable(first) and first == second


def test_feature_importance_shows_only_features_with_gain():
    png = feature_importance_plot({"e": [("a", 3.0), ("b", 0.0), ("c", 1.0)], "f": [("a", 1.0)]}, top=2)
    assert _readable(png)
