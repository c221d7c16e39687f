"""XGBoost engines: ``xgboost_regressor`` (forward return) and ``xgboost_classifier`` (direction).

The same contract as the LightGBM engines (``clm.models.lightgbm_engine``):

* Classifier: ``objective="binary:logistic"`` (default) learns *up vs not-up*: label =
  ``target > 0``; ``predict`` returns P(up). ``objective="multi:softprob"`` learns the three
  classes ``sign(target)`` in (-1, 0, 1); ``predict`` still returns P(up) and ``predict_proba``
  gives the (n, 3) matrix, columns -1, 0, 1 (binary: (n, 2), columns not-up, up).
* Categorical features (String/Categorical/Enum, e.g. ``symbol``): vocabulary of the sorted
  distinct training values, codes 1..k, code 0 for unknown or null values; handed to XGBoost as
  categorical (``feature_types="c"``). The vocabulary is saved in ``config.json``.
* Rows whose target is null/NaN are dropped (logged). Nulls in features are missing values.
* Determinism: ``tree_method="hist"``, a fixed ``seed`` and ``nthread``; nothing time-dependent is
  saved, so retraining gives byte-identical files and manifest.
* Early stopping on the validation frame (its first and only metric); the kept model is cut to the
  best iteration and re-parsed, so memory and disk hold the same trees.
* Artefacts: ``model.json`` (XGBoost's JSON model format, never pickle), ``config.json`` and
  ``manifest.json``; ``load`` verifies every sha256 first.

``xgboost`` is an optional dependency (``pip install 'clm[xgboost]'``) imported inside functions
only; without it this module raises ``ImportError`` when imported, so engine discovery
(``clm.models.base.load_engines``) records it in ``UNAVAILABLE`` with the message below.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from clm.checks import is_finite_number, is_int
from clm.models.artifacts import (
    ArtifactError,
)
from clm.models.base import EngineConfig, FitReport, LogFn, check_features, no_log, register_engine
from clm.models.tabular import TabularEngine, categorical_vocabulary, drop_missing_target, encode_features

INSTALL_HINT = "xgboost is not installed; install the extra: pip install 'clm[xgboost]'"
if importlib.util.find_spec("xgboost") is None:  # cheap: finds, does not import
    raise ImportError(INSTALL_HINT)

MODEL_FILE = "model.json"
REGRESSION_OBJECTIVES = ("reg:squarederror",)
CLASSIFIER_OBJECTIVES = ("binary:logistic", "multi:softprob")
OBJECTIVES = REGRESSION_OBJECTIVES + CLASSIFIER_OBJECTIVES
METRICS = {"reg:squarederror": "rmse", "binary:logistic": "logloss", "multi:softprob": "mlogloss"}
MULTICLASS_LABELS = (-1, 0, 1)


# ------------------------------------------------------------------ shared tabular helpers
# Engine-agnostic; candidates for a shared module used by the LightGBM engine too.
# ------------------------------------------------------------------ config
@dataclass(frozen=True)
class XGBoostConfig(EngineConfig):
    """XGBoost options; every value is checked and a bad one raises ``ValueError`` naming it."""

    objective: str = "reg:squarederror"
    max_depth: int = 6  # 0: no limit (then set max_leaves)
    max_leaves: int = 0  # 0: no limit
    learning_rate: float = 0.05
    n_estimators: int = 500
    early_stopping_rounds: int | None = 50  # None: no early stopping
    max_bin: int = 63
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    nthread: int = 2
    seed: int = 0
    log_every: int = 50  # log training progress every N rounds

    def __post_init__(self) -> None:
        def need_int(name: str, low: int, high: int) -> None:
            v = getattr(self, name)
            if not is_int(v) or not low <= v <= high:
                raise ValueError(f"xgboost config: {name} must be an int in [{low}, {high}], got {v!r}")

        def need_num(name: str, low: float, high: float, low_open: bool = False) -> None:
            v = getattr(self, name)
            ok = is_finite_number(v) and (low < v if low_open else low <= v) and v <= high
            if not ok:
                bracket = "(" if low_open else "["
                raise ValueError(
                    f"xgboost config: {name} must be a number in {bracket}{low}, {high}], got {v!r}"
                )

        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"xgboost config: objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        need_int("max_depth", 0, 64)
        need_int("max_leaves", 0, 1 << 20)
        if self.max_depth == 0 and self.max_leaves == 0:
            raise ValueError("xgboost config: max_depth and max_leaves cannot both be 0 (unbounded trees)")
        need_num("learning_rate", 1e-4, 1.0)
        need_int("n_estimators", 1, 10_000)
        if self.early_stopping_rounds is not None:
            need_int("early_stopping_rounds", 1, 10_000)
        need_int("max_bin", 2, 1024)
        need_num("min_child_weight", 0.0, 1e6)
        need_num("subsample", 0.0, 1.0, low_open=True)
        need_num("colsample_bytree", 0.0, 1.0, low_open=True)
        need_num("reg_lambda", 0.0, 1e6)
        need_num("reg_alpha", 0.0, 1e6)
        need_int("nthread", 1, 256)
        need_int("seed", 0, 2**31 - 1)
        need_int("log_every", 1, 1_000_000)

    def params(self) -> dict[str, Any]:
        """The ``xgboost.train`` parameter dict."""
        params: dict[str, Any] = {
            "objective": self.objective,
            "eval_metric": METRICS[self.objective],
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "max_leaves": self.max_leaves,
            "eta": self.learning_rate,
            "max_bin": self.max_bin,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "alpha": self.reg_alpha,
            "nthread": self.nthread,
            "seed": self.seed,
            "verbosity": 0,
        }
        if self.max_leaves > 0:
            params["grow_policy"] = "lossguide"
        if self.objective == "multi:softprob":
            params["num_class"] = len(MULTICLASS_LABELS)
        return params


@dataclass(frozen=True)
class XGBoostClassifierConfig(XGBoostConfig):
    objective: str = "binary:logistic"


# ------------------------------------------------------------------ engines
class _XGBoostEngine(TabularEngine):
    """Shared body of the two registered engines (see the module doc)."""

    config_class: ClassVar[type[XGBoostConfig]] = XGBoostConfig
    base_config: ClassVar[type] = XGBoostConfig
    library: ClassVar[str] = "xgboost"
    model_file: ClassVar[str] = MODEL_FILE

    # ---------------------------------------------------------------- data preparation
    def _matrix(self, frame: pl.DataFrame, labels: np.ndarray | None = None) -> Any:
        import xgboost as xgb

        encoded = encode_features(frame, self.features, self.categorical, self.scaler)
        data = encoded.cast(pl.Float32).to_numpy()  # nulls -> NaN: XGBoost's missing value
        return xgb.DMatrix(
            data, label=labels, missing=np.nan, feature_names=self.features,
            feature_types=["c" if f in self.categorical else "q" for f in self.features],
            enable_categorical=True, nthread=self.config.nthread,
        )

    def _labels(self, values: pl.Series) -> np.ndarray:
        y = values.cast(pl.Float64).to_numpy()
        objective = self.config.objective
        if objective == "reg:squarederror":
            return y
        if objective == "binary:logistic":
            return (y > 0).astype(np.float64)
        return np.sign(y) + 1.0  # -1, 0, 1 -> classes 0, 1, 2

    # ---------------------------------------------------------------- Engine API
    def fit(
        self,
        train: pl.DataFrame,
        validation: pl.DataFrame,
        *,
        features: list[str],
        target: str,
        log: LogFn = no_log,
        feature_version: str | None = None,
        scaler: Any = None,
    ) -> FitReport:
        """Train with early stopping on ``validation``; ``scaler`` (a ``FeatureScaler`` or its
        dict) is applied to every frame first and saved with the model."""
        features = check_features(train, features, target, what="train frame")
        check_features(validation, features, target, what="validation frame")
        import xgboost as xgb

        start = time.perf_counter()
        cfg = self.config
        self.features, self.target, self.feature_version = list(features), target, feature_version
        self.scaler = scaler.to_dict() if hasattr(scaler, "to_dict") else scaler
        train = drop_missing_target(train, target, what="train frame", log=log, engine=self.name)
        validation = drop_missing_target(
            validation, target, what="validation frame", log=log, engine=self.name
        )
        self.categorical = categorical_vocabulary(train, features)
        dtrain = self._matrix(train, self._labels(train[target]))
        dvalid = self._matrix(validation, self._labels(validation[target]))
        metric = METRICS[cfg.objective]
        name = self.name

        class Progress(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
                it = epoch + 1
                if it % cfg.log_every == 0 or it == cfg.n_estimators:
                    parts = ", ".join(
                        f"{d} {m} {v[-1]:.6g}" for d, ms in evals_log.items() for m, v in ms.items()
                    )
                    log(f"[{name}] round {it}/{cfg.n_estimators}: {parts}")
                return False

        log(
            f"[{name}] training on {train.height} rows x {len(features)} features "
            f"(validation {validation.height} rows, objective {cfg.objective})"
        )
        history: dict[str, dict[str, list[float]]] = {}
        booster = xgb.train(
            cfg.params(), dtrain, num_boost_round=cfg.n_estimators,
            evals=[(dtrain, "train"), (dvalid, "validation")], evals_result=history,
            early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False,
            callbacks=[Progress()],
        )
        rounds = booster.num_boosted_rounds()
        best = booster.best_iteration + 1 if cfg.early_stopping_rounds is not None else rounds
        # Cut to the best iteration and re-parse: memory and disk hold the very same model.
        self._booster = self._parse(bytes(booster[:best].save_raw("json")))
        train_loss = [float(v) for v in history.get("train", {}).get(metric, [])]
        valid_loss = [float(v) for v in history.get("validation", {}).get(metric, [])]
        seconds = time.perf_counter() - start
        self.report = FitReport(
            engine=name, best_iteration=best, metric=metric, train_loss=train_loss,
            validation_loss=valid_loss, seconds=seconds, train_rows=train.height,
            validation_rows=validation.height, stopped_early=best < rounds,
        )
        self.fit_summary = {
            "best_iteration": best,
            "rounds": rounds,
            "metric": metric,
            "best_validation_loss": valid_loss[best - 1] if valid_loss else None,
            "train_loss_at_best": train_loss[best - 1] if train_loss else None,
            "train_rows": train.height,
            "validation_rows": validation.height,
        }
        log(
            f"[{name}] done in {seconds:.1f}s: best round {best} of {rounds}, "
            f"validation {metric} {self.fit_summary['best_validation_loss']}"
        )
        return self.report

    def _parse(self, raw: bytes) -> Any:
        import xgboost as xgb

        booster = xgb.Booster(params={"nthread": self.config.nthread})
        booster.load_model(bytearray(raw))
        return booster

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Classifier only: (n, 2) columns not-up, up; or (n, 3) columns -1, 0, 1 (multiclass)."""
        if self.task != "classification":
            raise RuntimeError(f"{self.name} is a regressor: use predict")
        out = self._predict_raw(frame)
        return out if out.ndim == 2 else np.column_stack([1.0 - out, out])

    def _predict_raw(self, frame: pl.DataFrame) -> np.ndarray:
        booster = self._require_fitted()
        check_features(frame, self.features, what="prediction frame")
        multi = self.config.objective == "multi:softprob"
        if frame.height == 0:
            return np.empty((0, len(MULTICLASS_LABELS)) if multi else (0,), dtype=np.float64)
        out = np.asarray(booster.predict(self._matrix(frame)), dtype=np.float64)
        return out.reshape(-1, len(MULTICLASS_LABELS)) if multi else out.reshape(-1)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Regression: predicted target. Classification: P(up), shape (n,)."""
        out = self._predict_raw(frame)
        return out[:, MULTICLASS_LABELS.index(1)] if out.ndim == 2 else out

    def feature_importance(self, kind: str = "gain") -> dict[str, float]:
        scores = self._require_fitted().get_score(importance_type=kind)
        return {name: float(scores.get(name, 0.0)) for name in self.features}

    def _model_bytes(self, booster: Any) -> bytes:
        return bytes(booster.save_raw("json"))

    def _read_model(self, path: Path) -> Any:
        try:
            return self._parse(path.read_bytes())
        except Exception as exc:  # xgboost.core.XGBoostError and friends
            raise ArtifactError(f"{path.name} in {path.parent} is not a valid XGBoost model: {exc}") from exc

    def _model_features(self, booster: Any) -> list[str]:
        return list(booster.feature_names or [])

    @staticmethod
    def _library_version() -> str:
        import xgboost as xgb

        return xgb.__version__


@register_engine("xgboost_regressor")
class XGBoostRegressor(_XGBoostEngine):
    """Predicts the target (e.g. ``forward_return_12``)."""

    task = "regression"
    config_class = XGBoostConfig
    objectives = REGRESSION_OBJECTIVES


@register_engine("xgboost_classifier")
class XGBoostClassifier(_XGBoostEngine):
    """Up vs not-up (``binary:logistic``, default) or -1/0/1 (``multi:softprob``); ``predict``
    is P(up)."""

    task = "classification"
    config_class = XGBoostClassifierConfig
    objectives = CLASSIFIER_OBJECTIVES
