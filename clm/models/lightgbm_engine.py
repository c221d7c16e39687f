"""LightGBM engines: ``lightgbm_regressor`` (forward return) and ``lightgbm_classifier`` (direction).

Decisions:

* Classifier: ``objective="binary"`` (default) learns *up vs not-up*: label = ``target > 0``, so it
  works on ``direction_{h}`` (-1/0/1) and on ``forward_return_{h}`` alike; ``predict`` returns
  P(up). ``objective="multiclass"`` learns the three classes ``sign(target)`` in (-1, 0, 1);
  ``predict`` still returns P(up) and ``predict_proba`` gives the (n, 3) matrix, columns -1, 0, 1
  (binary: (n, 2), columns not-up, up).
* Categorical features: any String/Categorical/Enum feature column (e.g. ``symbol``) is encoded
  with a vocabulary of the sorted distinct training values, codes 1..k; code 0 is reserved for
  unknown or null values (never seen in training, so LightGBM sends it down the "other" branch).
  The vocabulary is saved in ``config.json``, so codes are stable across runs and machines.
* Dataset: the polars frame is handed to ``lgb.Dataset`` directly (LightGBM 4.7 reads it through
  Arrow, no numpy copy); labels go as a numpy vector. Rows whose target is null/NaN are dropped.
  Nulls in features are missing values for LightGBM.
* Determinism: ``deterministic=True``, ``force_row_wise=True``, a fixed ``seed`` and
  ``num_threads`` make CPU retraining byte-identical; nothing time-dependent goes into the saved
  files, so the manifest is identical too.
* Early stopping on the validation frame; the kept model is cut to the best iteration, so the
  in-memory model and the saved one are the same trees.
* Artefacts: ``model.txt`` (LightGBM text format, never pickle), ``config.json`` and
  ``manifest.json``; ``load`` verifies every sha256 first, then ``lgb.Booster(model_file=...)``.

``lightgbm`` is imported inside functions only: Dagster steps must not pay for it at import time.
"""

from __future__ import annotations

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

MODEL_FILE = "model.txt"
OBJECTIVES = ("regression", "binary", "multiclass")
METRICS = {"regression": "l2", "binary": "binary_logloss", "multiclass": "multi_logloss"}
MULTICLASS_LABELS = (-1, 0, 1)


@dataclass(frozen=True)
class LightGBMConfig(EngineConfig):
    """LightGBM options; every value is checked and a bad one raises ``ValueError`` naming it."""

    objective: str = "regression"
    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 500
    early_stopping_rounds: int | None = 50  # None: no early stopping
    max_bin: int = 63
    min_data_in_leaf: int = 20
    feature_fraction: float = 1.0
    bagging_fraction: float = 1.0  # bagging is off unless < 1 and bagging_freq > 0
    bagging_freq: int = 0
    lambda_l2: float = 0.0
    num_threads: int = 2
    seed: int = 0
    deterministic: bool = True
    force_row_wise: bool = True
    log_every: int = 50  # log training progress every N rounds

    def __post_init__(self) -> None:
        def need_int(name: str, low: int, high: int) -> None:
            v = getattr(self, name)
            if not is_int(v) or not low <= v <= high:
                raise ValueError(f"lightgbm config: {name} must be an int in [{low}, {high}], got {v!r}")

        def need_num(name: str, low: float, high: float, low_open: bool = False) -> None:
            v = getattr(self, name)
            ok = is_finite_number(v) and (low < v if low_open else low <= v) and v <= high
            if not ok:
                bracket = "(" if low_open else "["
                raise ValueError(
                    f"lightgbm config: {name} must be a number in {bracket}{low}, {high}], got {v!r}"
                )

        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"lightgbm config: objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        need_int("num_leaves", 2, 1024)
        need_num("learning_rate", 1e-4, 1.0)
        need_int("n_estimators", 1, 10_000)
        if self.early_stopping_rounds is not None:
            need_int("early_stopping_rounds", 1, 10_000)
        need_int("max_bin", 2, 1023)
        need_int("min_data_in_leaf", 1, 1_000_000)
        need_num("feature_fraction", 0.0, 1.0, low_open=True)
        need_num("bagging_fraction", 0.0, 1.0, low_open=True)
        need_int("bagging_freq", 0, 10_000)
        need_num("lambda_l2", 0.0, 1e6)
        need_int("num_threads", 1, 256)
        need_int("seed", 0, 2**31 - 1)
        need_int("log_every", 1, 1_000_000)
        for name in ("deterministic", "force_row_wise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"lightgbm config: {name} must be a bool, got {getattr(self, name)!r}")

    def params(self) -> dict[str, Any]:
        """The LightGBM parameter dict (training and Dataset)."""
        params: dict[str, Any] = {
            "objective": self.objective,
            "metric": METRICS[self.objective],
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "max_bin": self.max_bin,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": self.deterministic,
            "force_row_wise": self.force_row_wise,
            "verbosity": -1,
        }
        if self.bagging_freq > 0 and self.bagging_fraction < 1.0:
            params.update(bagging_fraction=self.bagging_fraction, bagging_freq=self.bagging_freq)
        if self.objective == "multiclass":
            params["num_class"] = len(MULTICLASS_LABELS)
        return params


@dataclass(frozen=True)
class LightGBMClassifierConfig(LightGBMConfig):
    objective: str = "binary"


class _LightGBMEngine(TabularEngine):
    """Shared body of the two registered engines (see the module doc)."""

    config_class: ClassVar[type[LightGBMConfig]] = LightGBMConfig
    base_config: ClassVar[type] = LightGBMConfig
    library: ClassVar[str] = "lightgbm"
    model_file: ClassVar[str] = MODEL_FILE

    # ---------------------------------------------------------------- data preparation
    def _encode(self, frame: pl.DataFrame) -> pl.DataFrame:
        return encode_features(frame, self.features, self.categorical, self.scaler)

    def _labels(self, values: pl.Series) -> np.ndarray:
        y = values.cast(pl.Float64).to_numpy()
        objective = self.config.objective
        if objective == "regression":
            return y
        if objective == "binary":
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
        dict) is applied to every frame first and saved with the model (trees do not need one)."""
        features = check_features(train, features, target, what="train frame")
        check_features(validation, features, target, what="validation frame")
        import lightgbm as lgb

        start = time.perf_counter()
        cfg = self.config
        self.features, self.target, self.feature_version = list(features), target, feature_version
        self.scaler = scaler.to_dict() if hasattr(scaler, "to_dict") else scaler
        train = drop_missing_target(train, target, what="train frame", log=log, engine=self.name)
        validation = drop_missing_target(validation, target, what="validation frame", log=log, engine=self.name)
        self.categorical = categorical_vocabulary(train, features)
        params = cfg.params()
        y_train, y_valid = self._labels(train[target]), self._labels(validation[target])
        train_set = lgb.Dataset(
            self._encode(train), label=y_train, feature_name=features,
            categorical_feature=sorted(self.categorical) or "auto", params=params,
        )
        valid_set = lgb.Dataset(self._encode(validation), label=y_valid, reference=train_set)

        history: dict[str, dict[str, list[float]]] = {}
        metric = METRICS[cfg.objective]

        def progress(env: Any) -> None:
            it = env.iteration + 1
            if it % cfg.log_every == 0 or it == env.end_iteration:
                parts = ", ".join(f"{d} {m} {v:.6g}" for d, m, v, *_ in env.evaluation_result_list)
                log(f"[{self.name}] round {it}/{env.end_iteration}: {parts}")

        callbacks = [lgb.record_evaluation(history), progress]
        if cfg.early_stopping_rounds is not None:
            callbacks.append(
                lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)
            )
        log(
            f"[{self.name}] training on {train.height} rows x {len(features)} features "
            f"(validation {validation.height} rows, objective {cfg.objective})"
        )
        booster = lgb.train(
            params, train_set, num_boost_round=cfg.n_estimators,
            valid_sets=[train_set, valid_set], valid_names=["train", "validation"],
            callbacks=callbacks,
        )
        rounds = booster.current_iteration()
        best = booster.best_iteration if booster.best_iteration > 0 else rounds
        # Cut to the best iteration and re-parse: memory and disk hold the very same model.
        self._booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self._booster.params["num_threads"] = cfg.num_threads
        train_loss = [float(v) for v in history.get("train", {}).get(metric, [])]
        valid_loss = [float(v) for v in history.get("validation", {}).get(metric, [])]
        seconds = time.perf_counter() - start
        self.report = FitReport(
            engine=self.name, best_iteration=best, metric=metric, train_loss=train_loss,
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
            f"[{self.name}] done in {seconds:.1f}s: best round {best} of {rounds}, "
            f"validation {metric} {self.fit_summary['best_validation_loss']}"
        )
        return self.report

    def predict_raw(self, frame: pl.DataFrame) -> np.ndarray:
        booster = self._require_fitted()
        check_features(frame, self.features, what="prediction frame")
        if frame.height == 0:
            width = len(MULTICLASS_LABELS) if self.config.objective == "multiclass" else None
            return np.empty((0, width) if width else (0,), dtype=np.float64)
        out = booster.predict(self._encode(frame), num_threads=self.config.num_threads)
        return np.asarray(out, dtype=np.float64)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Regression: predicted target. Classification: P(up), shape (n,)."""
        out = self.predict_raw(frame)
        if self.config.objective == "multiclass":
            return out[:, MULTICLASS_LABELS.index(1)]
        return out

    def predict_matrix(self, matrix: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """``predict`` for rows already encoded (``matrix_layout``): float64 ``(n, len(features))`` in
        model order, straight into the booster with no polars on the way (serving's hot path; a
        single row with ``num_threads=1`` avoids thread start-up). Same trees, same doubles: the
        same values as ``predict`` on the equivalent frame."""
        booster = self._require_fitted()
        if matrix.ndim != 2 or matrix.shape[1] != len(self.features):
            raise ValueError(f"matrix must have shape (n, {len(self.features)}), got {matrix.shape}")
        out = booster.predict(matrix, num_threads=num_threads or self.config.num_threads)
        out = np.asarray(out, dtype=np.float64)
        if self.config.objective == "multiclass":
            return out[:, MULTICLASS_LABELS.index(1)]
        return out

    def predict_row(self, row: np.ndarray) -> float:
        """``predict`` of ONE row already encoded (``matrix_layout``: float64, C-contiguous, model
        order) through LightGBM's single-row C API (``LGBM_BoosterPredictForMatSingleRowFast``, one
        thread, set up once per engine): the same trees on the same doubles as ``booster.predict``,
        without the ~15 us of per-call Python set-up that dominates a one-row ``booster.predict``
        (serving's hot path). Falls back to ``predict_matrix`` where this LightGBM lacks the API.
        A lock serialises callers: the C handle holds one row buffer."""
        fast = self.__dict__.get("_row_predictor")
        if fast is None:
            fast = self._row_predictor = _RowPredictor.create(self._require_fitted(), len(self.features))
        if fast is False:
            return float(self.predict_matrix(row.reshape(1, -1), num_threads=1)[0])
        return fast.predict(row, MULTICLASS_LABELS.index(1) if self.config.objective == "multiclass" else 0)

    def feature_importance(self, kind: str = "gain") -> dict[str, float]:
        booster = self._require_fitted()
        values = booster.feature_importance(importance_type=kind)
        return {name: float(v) for name, v in zip(self.features, values, strict=True)}

    def _model_bytes(self, booster: Any) -> bytes:
        return booster.model_to_string().encode()

    def _read_model(self, path: Path) -> Any:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ArtifactError(f"{path} is not a valid LightGBM model: {exc}") from exc
        booster.params["num_threads"] = self.config.num_threads
        return booster

    def _model_features(self, booster: Any) -> list[str]:
        return list(booster.feature_name())

    @staticmethod
    def _library_version() -> str:
        import lightgbm as lgb

        return lgb.__version__


class _RowPredictor:
    """A ``FastConfigHandle`` of LightGBM's single-row prediction API for one booster (freed with it)."""

    def __init__(self, lib: Any, booster: Any, handle: Any, width: int, outputs: int):
        import ctypes
        import threading
        import weakref

        self._lib, self._handle, self.width = lib, handle, width
        self._booster = booster  # the handle points into it: it must outlive the handle
        self._out = np.empty(outputs, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._out_len_ref = ctypes.byref(self._out_len)
        self._void_p = ctypes.c_void_p
        self._lock = threading.Lock()
        weakref.finalize(self, lib.LGBM_FastConfigFree, handle)

    @classmethod
    def create(cls, booster: Any, width: int) -> _RowPredictor | bool:
        """The predictor, or False when this LightGBM build does not offer the API."""
        import ctypes

        try:
            from lightgbm.basic import _C_API_DTYPE_FLOAT64, _C_API_PREDICT_NORMAL, _LIB, _c_str, _safe_call

            handle = ctypes.c_void_p()
            # num_iteration as booster.predict passes it (best_iteration, <= 0: every tree)
            _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(_C_API_PREDICT_NORMAL), ctypes.c_int(0),
                ctypes.c_int(booster.best_iteration), ctypes.c_int(_C_API_DTYPE_FLOAT64), ctypes.c_int32(width),
                _c_str("num_threads=1"), ctypes.byref(handle)))
        except (ImportError, AttributeError):
            return False
        return cls(_LIB, booster, handle, width, max(1, booster.num_model_per_iteration()))

    def predict(self, row: np.ndarray, output: int = 0) -> float:
        if row.dtype != np.float64 or row.size != self.width or not row.flags.c_contiguous:
            raise ValueError(f"row must be a C-contiguous float64 array of {self.width} values")
        with self._lock:
            if self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle, self._void_p(row.ctypes.data), self._out_len_ref, self._out_ptr) != 0:
                from lightgbm.basic import _safe_call

                _safe_call(-1)  # raises LightGBMError with the library's message
            return float(self._out[output])


@register_engine("lightgbm_regressor")
class LightGBMRegressor(_LightGBMEngine):
    """Predicts the target (e.g. ``forward_return_12``)."""

    task = "regression"
    config_class = LightGBMConfig
    objectives = ("regression",)


@register_engine("lightgbm_classifier")
class LightGBMClassifier(_LightGBMEngine):
    """Up vs not-up (``binary``, default) or -1/0/1 (``multiclass``); ``predict`` is P(up)."""

    task = "classification"
    config_class = LightGBMClassifierConfig
    objectives = ("binary", "multiclass")
