"""Train one engine under purged walk-forward and keep only honest, out-of-sample predictions.

For every fold: the scaler is fitted on the fold's training rows only, the engine trains on them
with early stopping on the fold's (purged) validation rows, and predicts the fold's test rows,
which it has never seen. The predictions of all folds form the engine's out-of-sample record;
the model of the last fold (the most history) is the one kept.
"""

from __future__ import annotations

import datetime as dt
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from clm.checks import is_int
from clm.evaluation.consensus import to_signal
from clm.evaluation.splits import SplitConfig, assign_folds, fold_audit, make_folds
from clm.features.build import KEY_COLUMNS, WARM, drop_warmup
from clm.features.normalise import fit_scaler
from clm.models.base import check_features, engine_class, engine_from_config
from clm.models.per_symbol import PerSymbolModel

LogFn = Callable[[str], None]
_NON_FEATURES = {*KEY_COLUMNS, WARM, "date", "version"}
PREDICTION_COLUMNS = ("engine", "fold", "symbol", "timestamp", "regime", "prediction", "signal",
                      "probability", "expected_edge_bps", "target_return", "return_1", "label_end")


@dataclass(frozen=True)
class TrainingConfig:
    """What is learnt and how it is split; invalid values raise ``ValueError`` naming the field."""

    horizon: int = 12
    latency_bars: int = 1  # as in the labels: entry one bar after the decision bar
    split: SplitConfig = field(default_factory=SplitConfig)
    scaler_method: str = "robust"
    include_symbol: bool = True  # pooled engines see the symbol as a categorical feature
    pooled: bool = True  # one model across the universe; False: one model per symbol

    def __post_init__(self) -> None:
        if not is_int(self.horizon) or self.horizon < 1:
            raise ValueError(f"horizon must be an int >= 1 (bars), got {self.horizon!r}")
        if not is_int(self.latency_bars) or self.latency_bars < 0:
            raise ValueError(f"latency_bars must be an int >= 0, got {self.latency_bars!r}")
        if self.scaler_method not in ("robust", "zscore"):
            raise ValueError(f"scaler_method must be 'robust' or 'zscore', got {self.scaler_method!r}")
        if not isinstance(self.pooled, bool):
            raise ValueError(f"pooled must be true or false, got {self.pooled!r}")
        if not isinstance(self.split, SplitConfig):
            raise ValueError("split must be a clm.evaluation.SplitConfig")

    @property
    def target(self) -> str:
        return f"forward_return_{self.horizon}"


def training_frame(
    features: pl.DataFrame | pl.LazyFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    regimes: pl.DataFrame | pl.LazyFrame | None,
    config: TrainingConfig,
) -> pl.DataFrame:
    """Warm feature rows, their label at the horizon (null where there is none), ``regime`` and the
    one-bar return.

    Unlabelled rows stay so sequence engines see contiguous series; the splits never use them as
    training, validation or test rows. ``label_end`` is the horizon's own end, which the purge uses.
    """
    h = config.horizon
    label_schema = labels.lazy().collect_schema()
    needed = [f"forward_return_{h}", f"label_end_{h}", "forward_return_1"]
    missing = [c for c in needed if c not in label_schema]
    if missing:
        raise ValueError(f"labels lack {missing}: include horizons 1 and {h} in the label config")
    label_part = labels.lazy().select(
        "symbol", "timestamp", pl.col(f"forward_return_{h}"), pl.col(f"label_end_{h}").alias("label_end"),
        pl.col("forward_return_1").alias("return_1"),
    )
    frame = (
        drop_warmup(features)
        .drop([c for c in ("date", "version") if c in features.lazy().collect_schema()])
        .join(label_part, on=["symbol", "timestamp"], how="left")
    )
    if regimes is not None:
        frame = frame.join(
            regimes.lazy().select("symbol", "timestamp", "regime"), on=["symbol", "timestamp"], how="left"
        )
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("regime"))
    return frame.sort("symbol", "timestamp").collect()


def feature_columns(frame: pl.DataFrame, config: TrainingConfig) -> list[str]:
    """Every feature column of the frame (the feature store version decides what they are)."""
    excluded = _NON_FEATURES | {config.target, "label_end", "return_1", "regime"}
    names = [c for c in frame.columns if c not in excluded and frame.schema[c].is_numeric()]
    return (["symbol"] if config.include_symbol and config.pooled else []) + names


@dataclass
class EngineRun:
    engine: str
    predictions: pl.DataFrame
    audit: pl.DataFrame
    reports: list[dict[str, Any]]
    model: Any
    seconds: float
    features: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "folds": len(self.reports),
            "predictions": self.predictions.height,
            "seconds": round(self.seconds, 2),
            "best_iterations": [r.get("best_iteration") for r in self.reports],
        }


def sequence_defaults(config: TrainingConfig) -> dict[str, Any]:
    """A sequence engine forecasts the one-bar log return (``ret_1``) and sums the steps that make
    the label: entry ``latency`` bars after the anchor, ``horizon`` bars held."""
    return {
        "series": "ret_1",
        "series_transform": "none",
        "prediction_length": config.latency_bars + config.horizon,
        "output_start": config.latency_bars + 1,
        "output_steps": config.horizon,
    }


def walk_forward(
    frame: pl.DataFrame,
    engine: str,
    engine_config: Mapping[str, Any] | None,
    config: TrainingConfig,
    *,
    timeframe_seconds: int,
    features: Sequence[str] | None = None,
    feature_version: str | None = None,
    log: LogFn = lambda _m: None,
) -> EngineRun:
    """Out-of-sample predictions of ``engine`` over every fold, and the last fold's model."""
    started = time.perf_counter()
    features = list(features) if features is not None else feature_columns(frame, config)
    check_features(frame, features, config.target, what="training frame")
    cls = engine_class(engine)
    sequence = bool(getattr(cls, "sequence", False))
    if sequence:
        engine_config = {**sequence_defaults(config), **dict(engine_config or {})}
        features = []  # a sequence engine forecasts its own series (see sequence_defaults)
    engine_from_config(engine, engine_config)  # a bad engine name or config fails before any training
    task = cls.task
    takes_scaler = "scaler" in inspect.signature(cls.fit).parameters
    folds = make_folds(frame, config.split, timeframe_seconds=timeframe_seconds)
    audit = fold_audit(frame, folds).with_columns(pl.lit(engine).alias("engine"))
    numeric = [f for f in features if frame.schema[f].is_numeric()]
    predictions, reports, model = [], [], None
    for fold in folds:
        split = assign_folds(frame, fold)
        groups = [(None, split)] if config.pooled else split.partition_by("symbol", as_dict=True).items()
        models: dict[str, Any] = {}
        for key, rows in sorted(groups, key=lambda item: str(item[0])):
            symbol = key[0] if isinstance(key, tuple) else key
            where = f"{engine} fold {fold.fold + 1}/{len(folds)}" + (f" {symbol}" if symbol else "")
            fitted, test, predicted, report = _fit_fold(
                rows, fold, engine, engine_config, config, features, numeric, sequence, takes_scaler,
                feature_version, lambda m, w=where: log(f"{w}: {m}"), timeframe_seconds,
            )
            if fitted is not None:
                if symbol is None:
                    model = fitted
                else:
                    models[symbol] = fitted
                reports.append({"fold": fold.fold, **({"symbol": symbol} if symbol else {}), **report.to_dict()})
            predictions.append(_prediction_rows(test, predicted, rows, engine, fold.fold, task, config))
        if not config.pooled:
            model = PerSymbolModel(engine, models)
    if not reports:
        span = frame.select(pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last")).row(0)
        raise ValueError(
            f"{engine}: none of the {len(folds)} folds had labelled training and validation rows; the frame's "
            f"{frame.height:,} rows span {span[0]} .. {span[1]}. Folds are cut in calendar time, so a long "
            "stretch without bars (two sources in one lake, say) can leave every fold's windows empty."
        )
    out = pl.concat(predictions) if predictions else pl.DataFrame()
    return EngineRun(engine, out, audit, reports, model, time.perf_counter() - started, features)


def _fit_fold(rows, fold, engine, engine_config, config, features, numeric, sequence, takes_scaler,
              feature_version, log, timeframe_seconds):
    """Fit on ``rows``' training part of ``fold``, predict its test part: (model, test, predictions, report).

    A series too short to train on in this fold (no training or validation rows) predicts nothing.
    """
    train = rows.filter(pl.col("split") == "train")
    validation = rows.filter(pl.col("split") == "validation")
    test = rows.filter(pl.col("split") == "test")
    if sequence:
        # whole time ranges whose windows' targets stop before the next window (purge + embargo)
        ts = pl.col("timestamp")
        train = rows.filter((ts >= fold.train_start) & (ts < fold.validation_start - fold.embargo))
        validation = rows.filter((ts >= fold.validation_start) & (ts < fold.test_start - fold.embargo))
    labelled = pl.col(config.target).is_not_null()
    if train.filter(labelled).is_empty() or validation.filter(labelled).is_empty():
        log(f"no training or validation rows in this fold: {test.height:,} test rows left unpredicted")
        return None, test, np.full(test.height, np.nan), None
    fit_options: dict[str, Any] = {}
    if takes_scaler and numeric:
        # the scaler sees the training rows only (their timestamps all precede validation_start)
        fit_options["scaler"] = fit_scaler(train, numeric, train_end=fold.validation_start, method=config.scaler_method)
    model = engine_from_config(engine, engine_config)
    report = model.fit(train, validation, features=features, target=config.target, feature_version=feature_version,
                       log=log, **fit_options)
    if sequence:  # forecast from the history before and inside the test window (inputs <= anchor)
        context = dt.timedelta(seconds=model.config.context_length * timeframe_seconds)
        ts = pl.col("timestamp")
        history = rows.filter((ts >= fold.test_start - context) & (ts < fold.test_end))
        in_test = (history["split"] == "test").fill_null(False).to_numpy()
        predicted = np.asarray(model.predict(history), dtype=np.float64)[in_test]
    else:
        predicted = np.asarray(model.predict(test), dtype=np.float64)
    log(f"trained on {train.height:,} rows, validated on {validation.height:,}, tested on {test.height:,} "
        f"(best iteration {report.best_iteration})")
    return model, test, predicted, report


def _prediction_rows(test, predicted, rows, engine, fold, task, config) -> pl.DataFrame:
    train = rows.filter(pl.col("split") == "train")
    if task == "classification":
        # a probability has no size: scale the signal by the typical move of the training rows
        typical_move = float(train.select(pl.col(config.target).abs().median()).item() or 0.0)
        expected = (2.0 * predicted - 1.0) * typical_move
    else:
        expected = predicted
    finite = predicted[np.isfinite(predicted)]
    kind = "probability" if task == "classification" else "return"
    signal = to_signal(predicted, kind) if finite.size else pl.Series("signal", np.full(len(predicted), None), pl.Float64)
    return test.select(
        pl.lit(engine).alias("engine"), pl.lit(fold, dtype=pl.Int32).alias("fold"), "symbol",
        "timestamp", "regime", pl.Series("prediction", predicted).fill_nan(None), signal,
        pl.Series("probability", predicted if task == "classification" else np.full(len(predicted), np.nan))
        .fill_nan(None),
        pl.Series("expected_edge_bps", expected * 1e4).fill_nan(None),
        pl.col(config.target).alias("target_return"),
        "return_1", "label_end",
    )
