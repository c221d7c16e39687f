"""One model per symbol behind the same interface as a pooled one (training config ``pooled=False``).

Saved as one sub-folder per symbol (each a complete engine artifact with its own manifest) plus
``symbols.json``, which records every sub-folder's manifest digest; the top-level manifest covers
``symbols.json``, so verifying it and then each symbol's digest verifies every file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clm.data.schema import SYMBOL_PATTERN
from clm.models.artifacts import (
    ArtifactError,
    ArtifactManifest,
    read_json,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from clm.models.artifacts import write_json as write_artifact_json

ENGINE = "per_symbol"
SYMBOLS_FILE = "symbols.json"


class PerSymbolModel:
    """Routes each row to its symbol's model; rows of a symbol without a model predict NaN."""

    name = ENGINE

    def __init__(self, engine: str, models: Mapping[str, Any]):
        self.engine = engine
        self.models = dict(models)
        for symbol in self.models:
            if not SYMBOL_PATTERN.match(symbol):
                raise ValueError(f"unsafe symbol name {symbol!r} for a model folder")

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        out = np.full(frame.height, np.nan)
        symbols = frame["symbol"].to_numpy()
        for symbol, model in self.models.items():
            rows = np.flatnonzero(symbols == symbol)
            if rows.size:
                out[rows] = model.predict(frame[rows])
        return out

    def save(self, directory: Path) -> ArtifactManifest:
        directory = Path(directory)
        digests = {symbol: model.save(directory / symbol).digest for symbol, model in sorted(self.models.items())}
        write_artifact_json(directory, SYMBOLS_FILE, {"engine": self.engine, "symbols": digests})
        return write_manifest(directory, [SYMBOLS_FILE], engine=ENGINE)

    @classmethod
    def load(cls, directory: Path) -> PerSymbolModel:
        from clm.models.base import load_engine

        directory = Path(directory)
        verify_manifest(directory, engine=ENGINE)
        payload = read_json(directory, SYMBOLS_FILE)
        models = {}
        for symbol, digest in payload["symbols"].items():
            if not SYMBOL_PATTERN.match(symbol):
                raise ArtifactError(f"unsafe symbol name {symbol!r} in {directory / SYMBOLS_FILE}")
            if read_manifest(directory / symbol).digest != digest:
                raise ArtifactError(f"the model of {symbol} in {directory} is not the one that was saved")
            models[symbol] = load_engine(directory / symbol)
        return cls(payload["engine"], models)
