"""Tabular engines' shared data preparation: categorical vocabularies, encoding, target cleaning.

Categorical features (``symbol``) become Int32 codes from a sorted training vocabulary saved with the
model, so codes are stable across runs; a value never seen in training (or null) maps to
``UNKNOWN_CODE``, which training never uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
