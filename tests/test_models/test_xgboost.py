"""XGBoost engines: availability without xgboost, learning, determinism, artefacts, feature and
config errors. Everything but the first test skips when the optional ``xgboost`` is absent."""

import hashlib
import importlib
import json
import sys

import numpy as np
import polars as pl
import pytest

from clm.models import ArtifactError, Engine, base, engine_from_config, load_engine

MODULE = "clm.models.xgboost_engine"
FAST = {"n_estimators": 40, "max_depth": 4, "learning_rate": 0.1, "early_stopping_rounds": 10}
FEATURES = ["x", "noise", "flag", "symbol"]


def test_unavailable_without_xgboost_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` now fails
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    # A fresh registry in which every other engine module counts as already loaded.
    monkeypatch.setattr(base, "ENGINES", {k: v for k, v in base.ENGINES.items() if "xgboost" not in k})
    monkeypatch.setattr(base, "UNAVAILABLE", {})
    monkeypatch.setattr(base, "_LOADED", set(base.ENGINE_MODULES) - {MODULE})
    with pytest.raises(ImportError, match=r"clm\[xgboost\]"):
        importlib.import_module(MODULE)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    with pytest.raises(ValueError, match=r"unknown engine 'xgboost_classifier'.*pip install 'clm\[xgboost\]'"):
        engine_from_config("xgboost_classifier")
    assert "clm[xgboost]" in base.UNAVAILABLE[MODULE]
    assert "xgboost_regressor" not in base.known_engines()


@pytest.fixture(scope="module")
def xe():
    """The engine module; skips (per test, so the test above still runs) without xgboost."""
    pytest.importorskip("xgboost")
    module = importlib.import_module(MODULE)
    if "xgboost_regressor" not in base.ENGINES:
        # First imported while another test had swapped base.ENGINES for a copy (registered there
        # and lost): register again.
        module = importlib.reload(module)
    return module


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frame(n, seed, symbols=("AAA", "BBB", "CCC")):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    noise = rng.normal(size=n)
    return pl.DataFrame({
        "x": x,
        "noise": noise,
        "flag": rng.random(n) > 0.5,
        "symbol": rng.choice(list(symbols), n),
        "y": 0.01 * x**2 + 0.0005 * noise,
        "up": np.where(x > 0.3, 1, -1).astype(np.int8),
        "three": np.sign(np.round(x)).astype(np.int8),  # -1 / 0 / 1
    })


@pytest.fixture(scope="module")
def data(xe):
    frame = _frame(3000, 1)
    return frame[:2000], frame[2000:2500], frame[2500:]


def test_registered(xe):
    assert {"xgboost_classifier", "xgboost_regressor"} <= set(base.known_engines())
    assert isinstance(xe.XGBoostRegressor(), Engine) and isinstance(xe.XGBoostClassifier(), Engine)
    assert xe.XGBoostRegressor.task == "regression" and xe.XGBoostClassifier.task == "classification"


def test_learns_a_known_function(xe, data):
    train, valid, test = data
    reg = xe.XGBoostRegressor(xe.XGBoostConfig(n_estimators=300, learning_rate=0.1))
    report = reg.fit(train, valid, features=FEATURES, target="y")
    y = test["y"].to_numpy()
    r2 = 1 - ((reg.predict(test) - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2 > 0.9 and report.metric == "rmse"
    clf = engine_from_config("xgboost_classifier", {"n_estimators": 200, "learning_rate": 0.1})
    clf.fit(train, valid, features=FEATURES, target="up")
    accuracy = ((clf.predict(test) > 0.5) == (test["up"].to_numpy() > 0)).mean()
    assert accuracy > 0.97


def test_deterministic_retraining_is_byte_identical(data, tmp_path):
    train, valid, _ = data
    shas = []
    for run in ("a", "b"):
        engine = engine_from_config("xgboost_classifier", {**FAST, "seed": 7, "subsample": 0.8})
        engine.fit(train, valid, features=FEATURES, target="up", feature_version="f1")
        engine.save(tmp_path / run)
        shas.append({p.name: _sha(p) for p in sorted((tmp_path / run).iterdir())})
    assert set(shas[0]) == {"model.json", "config.json", "manifest.json"}
    assert shas[0] == shas[1]
    json.loads((tmp_path / "a" / "model.json").read_text())  # XGBoost's JSON model format
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["categorical"] == {"symbol": ["AAA", "BBB", "CCC"]}
    assert config["feature_version"] == "f1" and config["target"] == "up"


@pytest.mark.parametrize(
    ("name", "target", "options"),
    [
        ("xgboost_regressor", "y", {}),
        ("xgboost_classifier", "up", {}),
        ("xgboost_classifier", "three", {"objective": "multi:softprob"}),
    ],
)
def test_save_load_round_trip(data, tmp_path, name, target, options):
    train, valid, test = data
    # Null targets are dropped (and logged); an unseen symbol and a null symbol still predict.
    train = train.with_columns(pl.when(pl.col("x") > 2).then(None).otherwise(pl.col(target)).alias(target))
    test = test.with_columns(symbol=pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("ZZZ")).otherwise("symbol"))
    test = test.with_columns(symbol=pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise("symbol"))
    engine = engine_from_config(name, {**FAST, **options, "log_every": 5})
    logs = []
    report = engine.fit(train, valid, features=FEATURES, target=target, log=logs.append)
    assert any("dropped" in line for line in logs) and any("round 5/40: train" in line for line in logs)
    assert 1 <= report.best_iteration <= FAST["n_estimators"]
    assert len(report.validation_loss) >= report.best_iteration
    before = engine.predict(test)
    assert before.shape == (test.height,) and np.isfinite(before).all()
    manifest = engine.save(tmp_path / "m")
    loaded = load_engine(tmp_path / "m")
    assert type(loaded) is type(engine) and manifest.engine == name
    np.testing.assert_array_equal(loaded.predict(test), before)
    meta = loaded.metadata()
    json.dumps(meta)
    assert meta["best_iteration"] == report.best_iteration
    assert loaded.predict(test[:0]).shape == (0,)
    if name == "xgboost_classifier":
        proba = loaded.predict_proba(test)
        assert proba.shape == (test.height, 3 if options else 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(proba[:, -1], before)


def test_tampered_artefact_is_named_on_load(xe, data, tmp_path):
    train, valid, _ = data
    engine = xe.XGBoostRegressor(xe.XGBoostConfig(**FAST))
    engine.fit(train, valid, features=FEATURES, target="y")
    engine.save(tmp_path)
    model = tmp_path / "model.json"
    raw = model.read_bytes()
    model.write_bytes(raw.replace(b'"learner"', b' "learner"', 1))
    with pytest.raises(ArtifactError, match="'model.json'"):
        xe.XGBoostRegressor.load(tmp_path)
    model.write_bytes(raw)
    xe.XGBoostRegressor.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="'config.json'"):
        xe.XGBoostRegressor.load(tmp_path)
    with pytest.raises(ArtifactError, match="not 'xgboost_classifier'"):
        xe.XGBoostClassifier.load(tmp_path)


def test_missing_feature_raises_before_training(xe, data, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(sys.modules["xgboost"], "train", boom)
    train, valid, _ = data
    engine = xe.XGBoostRegressor()
    with pytest.raises(ValueError, match=r"train frame lacks columns \['not_a_feature'\]"):
        engine.fit(train, valid, features=[*FEATURES, "not_a_feature"], target="y")
    with pytest.raises(ValueError, match=r"validation frame lacks columns \['noise'\]"):
        engine.fit(train, valid.drop("noise"), features=FEATURES, target="y")
    with pytest.raises(ValueError, match="no_such_target"):
        engine.fit(train, valid, features=FEATURES, target="no_such_target")
    with pytest.raises(RuntimeError, match="not fitted"):
        engine.predict(valid)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "reg:gamma"}, "objective must be one of"),
        ({"max_depth": -1}, "max_depth"),
        ({"max_depth": 0}, "max_depth and max_leaves cannot both be 0"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": 2}, "learning_rate"),
        ({"n_estimators": 0}, "n_estimators"),
        ({"n_estimators": 10.5}, "n_estimators"),
        ({"early_stopping_rounds": 0}, "early_stopping_rounds"),
        ({"subsample": 0}, "subsample"),
        ({"colsample_bytree": float("nan")}, "colsample_bytree"),
        ({"nthread": True}, "nthread"),
        ({"seed": -1}, "seed"),
        ({"max_bin": 1}, "max_bin"),
        ({"n_trees": 5}, r"unknown option\(s\) \['n_trees'\]"),
    ],
)
def test_config_errors(xe, options, message):
    with pytest.raises(ValueError, match=message):
        engine_from_config("xgboost_regressor", options)


def test_objective_mismatch_and_defaults(xe):
    with pytest.raises(ValueError, match="xgboost_regressor: objective must be one of"):
        engine_from_config("xgboost_regressor", {"objective": "binary:logistic"})
    with pytest.raises(ValueError, match="xgboost_classifier: objective must be one of"):
        engine_from_config("xgboost_classifier", {"objective": "reg:squarederror"})
    params = xe.XGBoostConfig().params()
    assert params["tree_method"] == "hist" and params["nthread"] == 2 and params["seed"] == 0
