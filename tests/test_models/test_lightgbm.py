"""LightGBM engines: determinism, artefacts, feature checks, config errors and sanity of learning."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from clm.models import ArtifactError, Engine, engine_from_config, known_engines, load_engine
from clm.models.lightgbm_engine import (
    LightGBMClassifier,
    LightGBMConfig,
    LightGBMRegressor,
)

FAST = {"n_estimators": 40, "num_leaves": 15, "learning_rate": 0.1, "early_stopping_rounds": 10}


@pytest.fixture(scope="module")
def market():
    """3 symbols x 5 days of 5-minute bars: core31 features joined with forward labels."""
    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
    from clm.data.validation import validate_bars
    from clm.features import FeatureConfig, compute_features, drop_warmup, select_features
    from clm.labels import LabelConfig, build_labels

    candles = validate_bars(SyntheticSource(SyntheticConfig(symbols=3, days=5)).load().bars).candles
    selection = select_features(FeatureConfig(sets=("core31",)), candles["symbol"].unique().to_list(), 300)
    features = drop_warmup(compute_features(candles, selection, timeframe_seconds=300)).collect()
    labels = build_labels(candles, LabelConfig(triple_barrier=False))
    frame = features.join(labels, on=["symbol", "timestamp", "segment_id"]).sort("timestamp", "symbol")
    names = [f.name for f in selection.features] + ["symbol"]
    cut = frame["timestamp"].unique().sort()[int(frame["timestamp"].n_unique() * 0.75)]
    return frame.filter(pl.col("timestamp") < cut), frame.filter(pl.col("timestamp") >= cut), names


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _numpy_frame(n, seed, symbols=("AAA", "BBB", "CCC")):
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "x": rng.normal(size=n),
        "noise": rng.normal(size=n),
        "symbol": rng.choice(list(symbols), n),
    })


def test_registered_and_lazy():
    assert {"lightgbm_classifier", "lightgbm_regressor"} <= set(known_engines())
    assert isinstance(LightGBMRegressor(), Engine) and isinstance(LightGBMClassifier(), Engine)
    code = (
        "import sys, clm.models; clm.models.engine_from_config('lightgbm_regressor'); "
        "assert not {'lightgbm', 'torch'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deterministic_retraining_is_byte_identical(market, tmp_path):
    train, valid, features = market
    shas = []
    for run in ("a", "b"):
        engine = engine_from_config("lightgbm_classifier", {**FAST, "seed": 7})
        engine.fit(train, valid, features=features, target="direction_12", feature_version="f1")
        engine.save(tmp_path / run)
        shas.append({p.name: _sha(p) for p in sorted((tmp_path / run).iterdir())})
    assert set(shas[0]) == {"model.txt", "config.json", "manifest.json"}
    assert shas[0] == shas[1]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["categorical"] == {"symbol": sorted(train["symbol"].unique().to_list())}
    assert config["feature_version"] == "f1" and config["target"] == "direction_12"


@pytest.mark.parametrize(
    ("name", "target", "options"),
    [
        ("lightgbm_regressor", "forward_return_12", {}),
        ("lightgbm_classifier", "direction_12", {}),
        ("lightgbm_classifier", "direction_12", {"objective": "multiclass"}),
    ],
)
def test_save_load_round_trip(market, tmp_path, name, target, options):
    train, valid, features = market
    engine = engine_from_config(name, {**FAST, **options})
    logs = []
    report = engine.fit(train, valid, features=features, target=target, log=logs.append)
    assert logs and report.train_rows > 0 and 1 <= report.best_iteration <= FAST["n_estimators"]
    assert len(report.validation_loss) >= report.best_iteration
    before = engine.predict(valid)
    assert before.shape == (valid.height,) and np.isfinite(before).all()
    manifest = engine.save(tmp_path / "m")
    loaded = load_engine(tmp_path / "m")
    assert type(loaded) is type(engine) and manifest.engine == name
    np.testing.assert_array_equal(loaded.predict(valid), before)
    meta = engine.metadata()
    json.dumps(meta)
    assert meta["best_iteration"] == report.best_iteration and meta["seconds"] > 0
    assert loaded.metadata()["best_iteration"] == report.best_iteration
    if options.get("objective") == "multiclass":
        proba = loaded.predict_raw(valid)
        assert proba.shape == (valid.height, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(proba[:, 2], before)
    elif name == "lightgbm_classifier":
        assert ((before >= 0) & (before <= 1)).all()


def test_tampered_artefact_is_named_on_load(market, tmp_path):
    train, valid, features = market
    engine = LightGBMRegressor(LightGBMConfig(**FAST))
    engine.fit(train, valid, features=features, target="forward_return_12")
    engine.save(tmp_path)
    model = tmp_path / "model.txt"
    text = model.read_text()
    model.write_text(text.replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(ArtifactError, match="'model.txt'"):
        LightGBMRegressor.load(tmp_path)
    model.write_text(text)
    LightGBMRegressor.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="'config.json'"):
        LightGBMRegressor.load(tmp_path)
    with pytest.raises(ArtifactError, match="not 'lightgbm_classifier'"):
        LightGBMClassifier.load(tmp_path)


def test_missing_feature_raises_before_training(market, monkeypatch):
    import lightgbm

    def boom(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(lightgbm, "train", boom)
    train, valid, features = market
    engine = LightGBMRegressor()
    with pytest.raises(ValueError, match=r"train frame lacks columns \['not_a_feature'\]"):
        engine.fit(train, valid, features=[*features, "not_a_feature"], target="forward_return_12")
    with pytest.raises(ValueError, match=r"validation frame lacks columns \['mom_5'\]"):
        engine.fit(train, valid.drop("mom_5"), features=features, target="forward_return_12")
    with pytest.raises(ValueError, match="no_such_target"):
        engine.fit(train, valid, features=features, target="no_such_target")
    with pytest.raises(RuntimeError, match="not fitted"):
        engine.predict(valid)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "poisson"}, "objective must be one of"),
        ({"num_leaves": 1}, "num_leaves"),
        ({"num_leaves": 2000}, "num_leaves"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": 2}, "learning_rate"),
        ({"n_estimators": 0}, "n_estimators"),
        ({"n_estimators": 10.5}, "n_estimators"),
        ({"early_stopping_rounds": 0}, "early_stopping_rounds"),
        ({"feature_fraction": 0}, "feature_fraction"),
        ({"num_threads": True}, "num_threads"),
        ({"deterministic": 1}, "deterministic"),
        ({"max_bin": 1}, "max_bin"),
        ({"n_trees": 5}, r"unknown option\(s\) \['n_trees'\]"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ValueError, match=message):
        engine_from_config("lightgbm_regressor", options)


def test_engine_objective_mismatch_and_unknown_engine():
    with pytest.raises(ValueError, match="lightgbm_regressor: objective must be one of"):
        engine_from_config("lightgbm_regressor", {"objective": "binary"})
    with pytest.raises(ValueError, match="lightgbm_classifier: objective must be one of"):
        engine_from_config("lightgbm_classifier", {"objective": "regression"})
    with pytest.raises(ValueError, match=r"unknown engine 'xgb'; known engines: \[.*'lightgbm_regressor'"):
        engine_from_config("xgb", {})
    defaults = LightGBMConfig()
    assert (defaults.max_bin, defaults.num_threads, defaults.deterministic) == (63, 2, True)
    assert defaults.params()["force_row_wise"] is True and "bagging_freq" not in defaults.params()


def test_learns_a_known_function():
    frame = _numpy_frame(6000, 1).with_columns(
        y=0.01 * pl.col("x") ** 2 + 0.0005 * pl.col("noise"),
        up=(pl.col("x") > 0.3).cast(pl.Int8) * 2 - 1,
    )
    train, valid, test = frame[:4000], frame[4000:5000], frame[5000:]
    reg = LightGBMRegressor(LightGBMConfig(n_estimators=300, learning_rate=0.1))
    reg.fit(train, valid, features=["x", "noise", "symbol"], target="y")
    y = test["y"].to_numpy()
    r2 = 1 - ((reg.predict(test) - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2 > 0.9
    clf = engine_from_config("lightgbm_classifier", {"n_estimators": 200})
    clf.fit(train, valid, features=["x", "noise", "symbol"], target="up")
    accuracy = ((clf.predict(test) > 0.5) == (test["up"].to_numpy() > 0)).mean()
    assert accuracy > 0.97


def test_shuffled_labels_give_chance_accuracy():
    rng = np.random.default_rng(3)
    n = 20_000
    frame = _numpy_frame(n, 2).with_columns(
        pl.Series("ret", rng.normal(size=n)).sample(fraction=1.0, shuffle=True, seed=5)
    )
    train, valid, test = frame[:10_000], frame[10_000:14_000], frame[14_000:]
    clf = engine_from_config("lightgbm_classifier", FAST)
    clf.fit(train, valid, features=["x", "noise", "symbol"], target="ret")
    accuracy = ((clf.predict(test) > 0.5) == (test["ret"].to_numpy() > 0)).mean()
    assert abs(accuracy - 0.5) < 0.03


def test_unknown_symbol_null_features_and_null_targets():
    frame = _numpy_frame(3000, 4).with_columns(y=pl.col("x") + 0.1 * pl.col("noise"))
    frame = frame.with_columns(
        y=pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("y")),
        x=pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("x")),
        symbol=pl.col("symbol").cast(pl.Categorical),
    )
    logs = []
    engine = LightGBMRegressor(LightGBMConfig(**FAST))
    report = engine.fit(frame[:2000], frame[2000:], features=["x", "noise", "symbol"], target="y",
                        log=logs.append)
    assert report.train_rows == 1800 and any("dropped 200 rows" in m for m in logs)
    rows = pl.DataFrame({
        "x": [0.5, 0.5, 0.5, None], "noise": [0.0] * 4, "symbol": ["NEW", None, "AAA", "AAA"],
    })
    out = engine.predict(rows)
    assert np.isfinite(out).all()
    assert out[0] == out[1]  # unseen and null symbols share the reserved code
    nan_row = rows[3].with_columns(pl.lit(float("nan")).alias("x"))
    assert engine.predict(nan_row)[0] == out[3]  # null and NaN are both "missing"
    assert engine.predict(rows.clear()).shape == (0,)
