"""The numpy fast path serving uses: ``matrix_layout`` + ``predict_matrix`` / ``predict_row`` give the
very values of ``predict`` on the equivalent frame, for every LightGBM objective."""

import threading

import numpy as np
import polars as pl
import pytest

from clm.features.normalise import fit_scaler
from clm.models import lightgbm_engine
from clm.models.base import engine_from_config

OPTIONS = {"n_estimators": 25, "num_leaves": 7, "early_stopping_rounds": None, "num_threads": 1,
           "min_data_in_leaf": 5}


def _frames():
    rng = np.random.default_rng(4)
    n = 1200
    symbols = rng.choice(["AAA", "BBB", "CCC"], n)
    x = rng.normal(size=(n, 3))
    frame = pl.DataFrame({
        "symbol": symbols, "timestamp": pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1)
                                                           + pl.duration(minutes=5 * (n - 1)), "5m",
                                                           time_zone="UTC", eager=True),
        "a": x[:, 0], "b": x[:, 1] * 100, "c": (x[:, 2] > 0), "k": rng.integers(0, 5, n).astype(np.int32),
        "target": x[:, 0] * 0.01 + (symbols == "AAA") * 0.005 + rng.normal(scale=0.01, size=n),
    })
    return frame.head(900), frame.slice(900, 200), frame.tail(100)


def _encode(engine, frame: pl.DataFrame) -> np.ndarray:
    """What serving builds: numeric columns scaled with the layout's arrays, categorical codes."""
    layout = engine.matrix_layout()
    out = np.empty((frame.height, len(layout.features)))
    for j, name in enumerate(layout.features):
        if name in layout.codes:
            out[:, j] = [layout.codes[name].get(v, 0) for v in frame[name].cast(pl.String).to_list()]
        else:
            out[:, j] = layout.scaled(frame[name].cast(pl.Float64).to_numpy(), j)
    return out


@pytest.mark.parametrize("engine,objective", [("lightgbm_regressor", "regression"),
                                              ("lightgbm_classifier", "binary"),
                                              ("lightgbm_classifier", "multiclass")])
def test_fast_paths_equal_predict(engine, objective):
    train, valid, test = _frames()
    model = engine_from_config(engine, {**OPTIONS, "objective": objective})
    scaler = fit_scaler(train, ["a", "b", "k"], train_end=test["timestamp"].min())
    model.fit(train, valid, features=["symbol", "a", "b", "c", "k"], target="target", scaler=scaler)
    test = test.with_columns(pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("a")).alias("a"),
                             pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("ZZZ")).otherwise(pl.col("symbol"))
                             .alias("symbol"))  # missing values and an unknown symbol
    expected = model.predict(test)
    matrix = _encode(model, test)
    np.testing.assert_allclose(model.predict_matrix(matrix), expected, rtol=0, atol=1e-12)
    rows = [model.predict_row(np.ascontiguousarray(matrix[i])) for i in range(test.height)]
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        model.predict_matrix(matrix[:, :2])
    with pytest.raises(ValueError, match="float64"):
        model.predict_row(matrix[0, :2].copy())


def test_the_layout_scales_bit_for_bit_like_the_feature_scaler():
    """A 1-ulp difference is enough to cross a split: the numpy arithmetic must be polars' own."""
    train, valid, test = _frames()
    model = engine_from_config("lightgbm_regressor", OPTIONS)
    scaler = fit_scaler(train, ["a", "b", "k"], train_end=test["timestamp"].min())
    model.fit(train, valid, features=["symbol", "a", "b", "c", "k"], target="target", scaler=scaler)
    rng = np.random.default_rng(1)
    probe = pl.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(size=5000) * 100,
                          "k": rng.integers(0, 5, 5000).astype(np.int32)})
    expected = scaler.transform(probe)
    layout = model.matrix_layout()
    for name in ("a", "b", "k"):
        j = layout.features.index(name)
        got = layout.scaled(probe[name].cast(pl.Float64).to_numpy(), j)
        assert np.array_equal(got, expected[name].to_numpy()), name


def test_predict_row_is_safe_from_several_threads_and_has_a_fallback(monkeypatch):
    train, valid, test = _frames()
    model = engine_from_config("lightgbm_regressor", OPTIONS)
    model.fit(train, valid, features=["symbol", "a", "b", "c", "k"], target="target")
    matrix = _encode(model, test)
    expected = model.predict(test)
    failures = []

    def worker():
        for _ in range(20):
            got = [model.predict_row(np.ascontiguousarray(matrix[i])) for i in range(test.height)]
            if np.max(np.abs(np.asarray(got) - expected)) > 1e-12:
                failures.append(got)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    monkeypatch.setattr(lightgbm_engine._RowPredictor, "create", classmethod(lambda cls, booster, width: False))
    fresh = engine_from_config("lightgbm_regressor", OPTIONS)
    fresh.fit(train, valid, features=["symbol", "a", "b", "c", "k"], target="target")
    assert [fresh.predict_row(np.ascontiguousarray(r)) for r in matrix[:5]] == pytest.approx(expected[:5], abs=1e-12)
