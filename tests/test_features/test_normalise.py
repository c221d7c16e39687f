"""fit_scaler / FeatureScaler: numpy-equal statistics, a strict training cut-off, JSON round trip"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from clm.features.normalise import FeatureScaler, fit_scaler

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
CUT = T0 + timedelta(hours=100)  # rows 0..99 are before the cut-off
N = 160
COLUMNS = ("a", "b", "c")


@pytest.fixture
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "symbol": ["X"] * N,
            "timestamp": pl.Series(
                [T0 + timedelta(hours=i) for i in range(N)], dtype=pl.Datetime("us", "UTC")
            ),
            "a": rng.normal(5.0, 2.0, N),
            "b": rng.standard_t(3, N) * 100,
            "c": rng.integers(0, 50, N).astype(np.int32),  # an integer feature
        }
    )


def numpy_params(frame: pl.DataFrame, method: str) -> tuple[list[float], list[float]]:
    train = frame.filter(pl.col("timestamp") < CUT)
    centre, scale = [], []
    for c in COLUMNS:
        x = train[c].cast(pl.Float64).to_numpy()
        x = x[np.isfinite(x)]
        if method == "robust":
            centre.append(np.median(x))
            scale.append(np.percentile(x, 75) - np.percentile(x, 25))
        else:
            centre.append(x.mean())
            scale.append(x.std())
    return centre, scale


@pytest.mark.parametrize("method", ["robust", "zscore"])
def test_fitted_values_equal_numpy_on_pre_cutoff_rows(frame, method):
    scaler = fit_scaler(frame, COLUMNS, train_end=CUT, method=method)
    centre, scale = numpy_params(frame, method)
    np.testing.assert_allclose(scaler.centre, centre, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale, scale, rtol=1e-12)
    assert scaler.rows == 100
    assert scaler.fitted_until == T0 + timedelta(hours=99)
    assert scaler.method == method and scaler.columns == COLUMNS


@pytest.mark.parametrize("method", ["robust", "zscore"])
def test_nulls_and_nans_are_ignored_in_fitting(frame, method):
    holes = frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("a")).alias("a"),
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(float("nan"))
        .otherwise(pl.col("b"))
        .alias("b"),
    )
    scaler = fit_scaler(holes, COLUMNS, train_end=CUT, method=method)
    centre, scale = numpy_params(holes, method)
    np.testing.assert_allclose(scaler.centre, centre, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale, scale, rtol=1e-12)
    assert all(math.isfinite(v) for v in (*scaler.centre, *scaler.scale))


@pytest.mark.parametrize("method", ["robust", "zscore"])
@pytest.mark.parametrize("poison", [1e12, float("nan"), float("inf"), -float("inf")])
def test_scaler_never_sees_rows_at_or_after_the_cutoff(frame, method, poison):
    late = pl.col("timestamp") >= CUT
    poisoned = frame.with_columns(
        pl.when(late).then(poison).otherwise(pl.col(c).cast(pl.Float64)).alias(c) for c in COLUMNS
    )
    # the row exactly AT the cut-off is poisoned too: the window is timestamp < train_end
    assert (
        poisoned.filter(pl.col("timestamp") == CUT)["a"].to_list()
        != frame.filter(pl.col("timestamp") == CUT)["a"].to_list()
    )
    truncated = frame.filter(pl.col("timestamp") < CUT)
    got = fit_scaler(poisoned, COLUMNS, train_end=CUT, method=method)
    want = fit_scaler(truncated, COLUMNS, train_end=CUT, method=method)
    assert got == want
    assert got.to_dict() == want.to_dict()


def test_post_cutoff_rows_are_never_materialised(frame):
    """A tripwire column raises if any post-cutoff value is ever computed: the filter runs first."""
    marked = frame.with_columns(
        pl.when(pl.col("timestamp") >= CUT).then(1e12).otherwise(pl.col("a")).alias("a")
    )

    def tripwire(s: pl.Series) -> pl.Series:
        if (s >= 1e12).any():
            raise AssertionError("a post-cutoff row reached the scaler")
        return s

    lazy = marked.lazy().with_columns(
        pl.col("a").map_batches(tripwire, return_dtype=pl.Float64, is_elementwise=True)
    )
    with pytest.raises(Exception, match="post-cutoff"):
        lazy.collect()  # the tripwire works
    scaler = fit_scaler(lazy, ["a"], train_end=CUT)
    assert scaler == fit_scaler(frame.filter(pl.col("timestamp") < CUT), ["a"], train_end=CUT)


def test_round_trip_through_json(frame):
    for method in ("robust", "zscore"):
        scaler = fit_scaler(frame, COLUMNS, train_end=CUT, method=method)
        data = json.loads(json.dumps(scaler.to_dict()))
        again = FeatureScaler.from_dict(data)
        assert again == scaler
        assert again.fitted_until.tzinfo is not None
        assert again.transform(frame).equals(scaler.transform(frame))


def test_transform_uses_training_params_on_unseen_rows(frame):
    scaler = fit_scaler(frame.lazy(), COLUMNS, train_end=CUT, method="zscore")
    unseen = frame.filter(pl.col("timestamp") >= CUT)
    out = scaler.transform(unseen)
    assert isinstance(out, pl.DataFrame)
    assert out.columns == unseen.columns
    assert out.select("symbol", "timestamp").equals(unseen.select("symbol", "timestamp"))
    for c, centre, scale in zip(COLUMNS, scaler.centre, scaler.scale, strict=True):
        want = (unseen[c].cast(pl.Float64).to_numpy() - centre) / scale
        np.testing.assert_allclose(out[c].to_numpy(), want, rtol=1e-12)
        assert out[c].dtype == pl.Float64
    # the training rows come out standardised; the unseen ones are NOT re-centred on themselves
    train = scaler.transform(frame.filter(pl.col("timestamp") < CUT))
    assert abs(train["a"].mean()) < 1e-9 and train["a"].std(ddof=0) == pytest.approx(1.0)
    lazy_out = scaler.transform(unseen.lazy())
    assert isinstance(lazy_out, pl.LazyFrame) and lazy_out.collect().equals(out)


def test_transform_keeps_nulls_and_raises_on_missing_column(frame):
    scaler = fit_scaler(frame, COLUMNS, train_end=CUT)
    holes = frame.with_columns(
        pl.when(pl.col("c") > 25).then(None).otherwise(pl.col("c")).alias("c")
    )
    assert scaler.transform(holes)["c"].null_count() == holes["c"].null_count()
    with pytest.raises(ValueError, match="'b'"):
        scaler.transform(frame.drop("b"))


def test_degenerate_scale_becomes_one():
    df = pl.DataFrame(
        {
            "timestamp": pl.Series(
                [T0 + timedelta(hours=i) for i in range(6)], dtype=pl.Datetime("us", "UTC")
            ),
            "const": [3.0] * 6,
            "empty": [None, float("nan"), None, float("nan"), None, float("nan")],
            "single": [None, 2.0, None, None, None, None],
        }
    )
    for method in ("robust", "zscore"):
        s = fit_scaler(
            df, ["const", "empty", "single"], train_end=T0 + timedelta(days=1), method=method
        )
        assert s.centre == (3.0, 0.0, 2.0)
        assert s.scale == (1.0, 1.0, 1.0)
        assert s.transform(df)["const"].to_list() == [0.0] * 6


def test_fit_errors(frame):
    with pytest.raises(ValueError, match="no rows"):
        fit_scaler(frame, COLUMNS, train_end=T0)
    with pytest.raises(ValueError, match="timezone"):
        fit_scaler(frame, COLUMNS, train_end=datetime(2024, 1, 2))
    with pytest.raises(ValueError, match="method"):
        fit_scaler(frame, COLUMNS, train_end=CUT, method="minmax")
    with pytest.raises(ValueError, match="'zz'"):
        fit_scaler(frame, ["a", "zz"], train_end=CUT)
    with pytest.raises(ValueError, match="not numeric"):
        fit_scaler(frame, ["symbol"], train_end=CUT)
    with pytest.raises(ValueError, match="columns"):
        fit_scaler(frame, "a", train_end=CUT)


def test_train_end_in_another_timezone_and_naive_column(frame):
    plus2 = timezone(timedelta(hours=2))
    assert fit_scaler(frame, COLUMNS, train_end=CUT.astimezone(plus2)) == fit_scaler(
        frame, COLUMNS, train_end=CUT
    )
    naive = frame.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    assert fit_scaler(naive, COLUMNS, train_end=CUT) == fit_scaler(frame, COLUMNS, train_end=CUT)


def good_dict() -> dict:
    return {
        "method": "robust",
        "columns": ["a", "b"],
        "centre": [0.5, -1.0],
        "scale": [2.0, 3.0],
        "fitted_until": "2024-01-05T00:00:00+00:00",
        "rows": 10,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "minmax"}, "method"),
        ({"columns": ["a"]}, "same length"),
        ({"centre": [0.5]}, "same length"),
        ({"centre": [float("nan"), 1.0]}, "centre of 'a'"),
        ({"centre": ["x", 1.0]}, "centre of 'a'"),
        ({"scale": [2.0, float("inf")]}, "scale of 'b'"),
        ({"scale": [0.0, 1.0]}, "scale of 'a'"),
        ({"columns": ["a", "a"]}, "unique"),
        ({"fitted_until": "yesterday"}, "fitted_until"),
        ({"fitted_until": "2024-01-05T00:00:00"}, "timezone"),
        ({"rows": 0}, "rows"),
        ({"version": 99}, "version"),
    ],
)
def test_from_dict_validation(change, message):
    assert FeatureScaler.from_dict(good_dict()).columns == ("a", "b")
    with pytest.raises(ValueError, match=message):
        FeatureScaler.from_dict({**good_dict(), **change})


def test_from_dict_missing_key():
    data = good_dict()
    del data["scale"]
    with pytest.raises(ValueError, match="scale"):
        FeatureScaler.from_dict(data)
