"""Tabular engines' shared data preparation: categorical vocabularies, encoding, target cleaning.

Categorical features (``symbol``) become Int32 codes from a sorted training vocabulary saved with the
model, so codes are stable across runs; a value never seen in training (or null) maps to
``UNKNOWN_CODE``, which training never uses.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

UNKNOWN_CODE = 0
LogFn = Callable[[str], None]


def no_log(_message: str) -> None:
    return None


def is_categorical(dtype: pl.DataType) -> bool:
    return isinstance(dtype, (pl.String, pl.Categorical, pl.Enum))


def categorical_vocabulary(frame: pl.DataFrame, features: Iterable[str]) -> dict[str, list[str]]:
    """Column -> sorted distinct non-null values, for every String/Categorical/Enum feature."""
    return {
        name: sorted(frame.get_column(name).cast(pl.String).drop_nulls().unique().to_list())
        for name in features
        if is_categorical(frame.schema[name])
    }


def encode_features(
    frame: pl.DataFrame,
    features: list[str],
    categorical: dict[str, list[str]],
    scaler: dict | None = None,
) -> pl.DataFrame:
    """Feature columns only, in order: categoricals -> Int32 codes (vocabulary index + 1, unknown
    or null -> ``UNKNOWN_CODE``), booleans -> Int8, numerics as they are. ``scaler`` (a
    ``FeatureScaler`` dict) is applied first."""
    if scaler is not None:
        from clm.features.normalise import FeatureScaler

        frame = FeatureScaler.from_dict(scaler).transform(frame)
    exprs = []
    schema = frame.schema
    for name in features:
        if name in categorical:
            vocab = categorical[name]
            keys = pl.Series(vocab, dtype=pl.String)
            codes = pl.Series(np.arange(1, len(vocab) + 1, dtype=np.int32))
            exprs.append(
                pl.col(name)
                .cast(pl.String)
                .replace_strict(keys, codes, default=UNKNOWN_CODE, return_dtype=pl.Int32)
                .fill_null(UNKNOWN_CODE)
                .alias(name)
            )
        elif schema[name] == pl.Boolean:
            exprs.append(pl.col(name).cast(pl.Int8))
        elif schema[name].is_numeric():
            exprs.append(pl.col(name))
        else:
            raise ValueError(f"feature {name!r} has unsupported dtype {schema[name]}")
    return frame.select(exprs)


def drop_missing_target(
    frame: pl.DataFrame, target: str, *, what: str, log: LogFn = no_log, engine: str = ""
) -> pl.DataFrame:
    """Rows with a finite target only; logs how many were dropped, raises if none is left."""
    t = pl.col(target).cast(pl.Float64)
    kept = frame.filter(t.is_not_null() & t.is_finite())
    dropped = frame.height - kept.height
    if dropped:
        log(f"[{engine}] {what}: dropped {dropped} rows without a finite {target!r}")
    if kept.height == 0:
        raise ValueError(f"{what} has no rows with a finite {target!r}")
    return kept


@functools.cache
def scaler_uses_reciprocal() -> bool:
    """Whether ``FeatureScaler.transform`` (polars) computes ``(x - c) / s`` as ``(x - c) * (1 / s)``.

    polars 2 divides a column by a scalar through its reciprocal, which differs from a true division
    in the last bit for about a third of the values; a tree split can fall in between. Measured
    once on probe values rather than assumed, so a polars that changes its arithmetic is followed.
    """
    from datetime import datetime, timezone

    from clm.features.normalise import FeatureScaler

    x = np.random.default_rng(0).normal(size=256)
    c, sc = 0.123456789, 0.987654321
    scaler = FeatureScaler("zscore", ("x",), (c,), (sc,), datetime(2000, 1, 1, tzinfo=timezone.utc), 1)
    got = scaler.transform(pl.DataFrame({"x": x}))["x"].to_numpy()
    return bool(np.array_equal(got, (x - c) * (1.0 / sc)))


@dataclass(frozen=True)
class MatrixLayout:
    """A tabular model's input as arrays: per feature in model order the scaler's ``centre`` and
    ``scale`` (0 and 1 where it does not scale the column), per categorical feature ``codes``
    (value -> code; a value missing from it is ``UNKNOWN_CODE``), and ``reciprocal``: scale as
    ``(x - centre) * (1 / scale)`` (True) or ``(x - centre) / scale`` - bit for bit what
    ``encode_features`` feeds the model (``scaler_uses_reciprocal``)."""

    features: list[str]
    centre: np.ndarray
    scale: np.ndarray
    codes: dict[str, dict[str, int]]
    reciprocal: bool

    def scaled(self, values: np.ndarray, columns: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``values`` (float64, ``(..., len(columns))``) of the feature positions ``columns``, scaled."""
        if self.reciprocal:
            return (values - self.centre[columns]) * (1.0 / self.scale[columns])
        return (values - self.centre[columns]) / self.scale[columns]


class TabularEngine(ABC):
    """Shared body of the gradient-boosting engines: state, config file, save, load, metadata.

    Subclasses say which library they wrap (``library``, ``model_file``) and how its model becomes
    bytes and back (``_model_bytes``, ``_read_model``); everything else is one code path.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    config_class: ClassVar[type]
    base_config: ClassVar[type]  # every config the engine family accepts derives from it
    objectives: ClassVar[tuple[str, ...]] = ()
    library: ClassVar[str]
    model_file: ClassVar[str]

    def __init__(self, config: Any = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.base_config):
            raise ValueError(f"{self.name} takes a {self.base_config.__name__}, got {type(config).__name__}")
        if config.objective not in self.objectives:
            raise ValueError(f"{self.name}: objective must be one of {self.objectives}, got {config.objective!r}")
        self.config = config
        self.features: list[str] = []
        self.target: str | None = None
        self.categorical: dict[str, list[str]] = {}  # column -> sorted vocabulary (code = index + 1)
        self.scaler: dict | None = None
        self.feature_version: str | None = None
        self.report: Any = None
        self.fit_summary: dict[str, Any] = {}
        self._booster: Any = None

    @abstractmethod
    def _model_bytes(self, booster: Any) -> bytes:
        """The fitted model in the library's own (non-pickle) text format."""

    @abstractmethod
    def _read_model(self, path: Path) -> Any:
        """The library's model from ``path``; raises ``ArtifactError`` if it is not one."""

    @abstractmethod
    def _model_features(self, booster: Any) -> list[str]:
        """Feature names stored in the library's model."""

    @staticmethod
    @abstractmethod
    def _library_version() -> str: ...

    def _require_fitted(self) -> Any:
        if self._booster is None:
            raise RuntimeError(f"{self.name} is not fitted (call fit or load first)")
        return self._booster

    def _config_payload(self) -> dict:
        from clm.models.artifacts import FORMAT_VERSION, json_safe

        return json_safe({
            "format_version": FORMAT_VERSION,
            "engine": self.name,
            "task": self.task,
            "config": self.config.to_dict(),
            "features": self.features,
            "target": self.target,
            "categorical": self.categorical,
            "unknown_code": UNKNOWN_CODE,
            "scaler": self.scaler,
            "feature_version": self.feature_version,
            "fit": self.fit_summary,
            f"{self.library}_version": self._library_version(),
        })

    def save(self, directory: Path) -> Any:
        """Write the model file, ``config.json`` and (last) ``manifest.json`` into ``directory``."""
        from clm.models.artifacts import CONFIG_FILE, write_bytes, write_json, write_manifest

        booster = self._require_fitted()
        directory = Path(directory)
        write_bytes(directory, self.model_file, self._model_bytes(booster))
        write_json(directory, CONFIG_FILE, self._config_payload())
        return write_manifest(directory, [self.model_file, CONFIG_FILE], engine=self.name)

    @classmethod
    def load(cls, directory: Path) -> TabularEngine:
        """Verify the manifest, restore the config, then read the model (never a pickle)."""
        from clm.models.artifacts import CONFIG_FILE, ArtifactError, read_engine_config

        directory = Path(directory)
        payload = read_engine_config(directory, cls.name)
        engine = cls(cls.config_class.from_dict(payload["config"]))
        engine.features = list(payload["features"])
        engine.target = payload["target"]
        engine.categorical = {k: list(v) for k, v in payload["categorical"].items()}
        engine.scaler = payload.get("scaler")
        engine.feature_version = payload.get("feature_version")
        engine.fit_summary = dict(payload.get("fit") or {})
        booster = engine._read_model(directory / cls.model_file)
        if engine._model_features(booster) != engine.features:
            raise ArtifactError(
                f"{cls.model_file} features {engine._model_features(booster)} differ from {CONFIG_FILE}'s"
            )
        engine._booster = booster
        return engine

    @property
    def booster(self) -> Any:
        """The fitted library model (e.g. a LightGBM ``Booster``), for callers that inspect or time it
        directly (``benchmarks/serving.py`` compares serving against it)."""
        return self._require_fitted()

    def matrix_layout(self) -> MatrixLayout:
        """``encode_features`` as plain arrays, for callers that build numpy rows without polars
        (serving's single-row fast path); see ``MatrixLayout``."""
        self._require_fitted()
        centre = np.zeros(len(self.features), dtype=np.float64)
        scale = np.ones(len(self.features), dtype=np.float64)
        if self.scaler is not None:
            from clm.features.normalise import FeatureScaler

            fitted = FeatureScaler.from_dict(self.scaler)
            position = {name: i for i, name in enumerate(self.features)}
            for name, c, sc in zip(fitted.columns, fitted.centre, fitted.scale, strict=True):
                if name in position:
                    centre[position[name]], scale[position[name]] = c, sc
        codes = {name: {value: i + 1 for i, value in enumerate(vocab)} for name, vocab in self.categorical.items()}
        return MatrixLayout(list(self.features), centre, scale, codes, scaler_uses_reciprocal())

    def metadata(self) -> dict:
        from clm.models.artifacts import json_safe

        return json_safe({
            "engine": self.name,
            "task": self.task,
            "config": self.config.to_dict(),
            "features": self.features,
            "target": self.target,
            "categorical": self.categorical,
            "feature_version": self.feature_version,
            "scaler": self.scaler is not None,
            "best_iteration": self.fit_summary.get("best_iteration"),
            "best_validation_loss": self.fit_summary.get("best_validation_loss"),
            "train_rows": self.fit_summary.get("train_rows"),
            "validation_rows": self.fit_summary.get("validation_rows"),
            "seconds": self.report.seconds if self.report is not None else None,
        })
