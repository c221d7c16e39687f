"""Shadow models: an ACTIVE champion and its SHADOW challengers, loaded as serving loads them.

A challenger is a SHADOW model of the same key (model type, scope, horizon) as an ACTIVE one: the
one it would replace. Both are loaded through ``clm.serving.champion.ModelBook`` (artefacts verified
against their manifests, signal scale from the registry metrics or the last out-of-sample fold) and
predict through a one-engine ``Champion``'s frame path, so a shadow prediction and its signal are
bit for bit what serving computes for that engine: nothing here rescales a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from clm.lake import Lake
from clm.models.artifacts import ArtifactError, read_manifest
from clm.models.base import engine_class
from clm.registry.base import POOLED, ModelRecord, Registry, Status, is_forecaster
from clm.serving.champion import (
    PER_SYMBOL_ENGINE,
    Champion,
    ModelBook,
    ServedModel,
    artifact_dir,
)

BPS = 1e4
MODEL_PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(), "timestamp": pl.Datetime("us", "UTC"), "model_id": pl.String(), "kind": pl.String(),
    "prediction": pl.Float64(), "signal": pl.Float64(), "edge_bps": pl.Float64(),
}


def expected_edge_bps(served: ServedModel, values: np.ndarray) -> np.ndarray:
    """The edge a prediction expects, in bps of the horizon's log return, as training's evaluation and
    serving's ranking define it: a regressor's forecast, a classifier's ``(2p - 1) * typical move``
    (NaN when the typical move is unknown: such a prediction cannot clear the costs, so it is not traded)."""
    values = np.asarray(values, dtype=np.float64)
    if served.kind == "probability":
        if served.typical_move is None:
            return np.full(values.shape, np.nan)
        return (2.0 * values - 1.0) * served.typical_move * BPS
    return values * BPS


@dataclass
class ShadowModel:
    """One registered model, loaded lazily (per symbol for per-symbol folders), predicting frames."""

    book: ModelBook
    record: ModelRecord
    _per_symbol: bool | None = field(default=None, init=False, repr=False, compare=False)
    _champions: dict[str | None, Champion] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def model_id(self) -> str:
        return self.record.model_id

    @property
    def kind(self) -> str:
        """``probability`` (a classifier's P(up)) or ``return``, from the engine's task."""
        return _kind_of(self.record.model_type)

    @property
    def per_symbol(self) -> bool:
        if self._per_symbol is None:
            try:
                engine = read_manifest(artifact_dir(self.book.lake, self.record)).engine
            except ArtifactError:
                engine = None  # loading reports the problem with the model's name
            self._per_symbol = engine == PER_SYMBOL_ENGINE
        return self._per_symbol

    def served(self, symbol: str | None = None) -> ServedModel:
        return self._champion(symbol).models[0]

    def _champion(self, symbol: str | None) -> Champion:
        scope = None if self.record.scope == POOLED else self.record.scope
        key = (scope or symbol) if self.per_symbol else None
        if key not in self._champions:
            served = self.book.served(self.record, key)
            # the serving book's calibration: signal scale / typical move from the registry metrics, else
            # the engine's last out-of-sample fold (idempotent: only fills what is missing)
            self.book._calibrate([served])
            self._champions[key] = Champion(key if self.per_symbol else None, self.record.horizon, [served],
                                            gate=None, gate_record=None, lake=self.book.lake, enforce_halt=False)
        return self._champions[key]

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``MODEL_PREDICTIONS_SCHEMA`` per row of ``frame`` (a symbol-scoped model: its symbol's rows only);
        ``prediction``/``signal``/``edge_bps`` null where the engine abstained (e.g. a sequence engine
        short of history). Goes on while trading is halted: judging models is not trading."""
        if self.record.scope != POOLED:
            frame = frame.filter(pl.col("symbol").cast(pl.String) == self.record.scope)
        n = frame.height
        values, signals, edges = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        kind = None
        if n:
            if self.per_symbol and self.record.scope == POOLED:
                symbols = frame.get_column("symbol").cast(pl.String).to_numpy()
                groups = {s: np.flatnonzero(symbols == s) for s in np.unique(symbols)}
            else:
                groups = {None: np.arange(n)}
            for symbol, rows in groups.items():
                champion = self._champion(symbol)
                served = champion.models[0]
                kind = served.kind
                part = frame if len(rows) == n else frame[rows]
                if served.sequence:
                    # serving forecasts a symbol's last bar only (a live request); judging a model needs
                    # every bar, each from the history before it, which the engine's own predict gives
                    predicted = np.asarray(served.engine.predict(part), dtype=np.float64)
                    values[rows] = predicted
                    signals[rows] = served.signals(predicted)
                    edges[rows] = expected_edge_bps(served, predicted)
                    continue
                views = champion.views(part)
                values[rows] = views.values[:, 0]
                signals[rows] = views.signals[:, 0]
                edges[rows] = expected_edge_bps(served, views.values[:, 0])
        if kind is None:  # nothing predicted: the engine's task says what its predictions would be
            kind = _kind_of(self.record.model_type)
        return pl.DataFrame({
            "symbol": frame.get_column("symbol").cast(pl.String),
            "timestamp": frame.get_column("timestamp").cast(pl.Datetime("us", "UTC")),
            "model_id": pl.Series([self.model_id] * n, dtype=pl.String),
            "kind": pl.Series([kind] * n, dtype=pl.String),
            "prediction": pl.Series(values, nan_to_null=True),
            "signal": pl.Series(signals, nan_to_null=True),
            "edge_bps": pl.Series(edges, nan_to_null=True),
        }, schema=MODEL_PREDICTIONS_SCHEMA)

    def predict_row(self, features: dict[str, Any]) -> float | None:
        """One bar through serving's single-row path (what ``measure_latency`` times)."""
        symbol = features.get("symbol")
        return self._champion(None if symbol is None else str(symbol)).predict(features).prediction


def _kind_of(model_type: str) -> str:
    try:
        task = getattr(engine_class(model_type), "task", None)
    except ValueError:
        task = None
    return "probability" if task == "classification" else "return"


@dataclass
class ShadowSet:
    """An ACTIVE model and the SHADOW challengers of its key."""

    champion: ShadowModel
    challengers: list[ShadowModel]


def load_shadow_sets(lake: Lake, registry: Registry, *, horizon: int | None = None,
                     model_ids: Sequence[str] | None = None) -> list[ShadowSet]:
    """Every key (of ``horizon``, or all) with an ACTIVE model and at least one SHADOW challenger;
    ``model_ids`` restricts the challengers. Regime gates are derived, not challengers, and RL policies are
    judged by their replay evaluation (``clm.rl.offline``), not on forecasts: both skipped."""
    shadows = [r for r in registry.list_models(horizon=horizon, status=Status.SHADOW)
               if is_forecaster(r.model_type) and (model_ids is None or r.model_id in model_ids)]
    books: dict[int, ModelBook] = {}
    sets: dict[str, ShadowSet] = {}
    for record in sorted(shadows, key=lambda r: r.model_id):
        champion = registry.active(record.key)
        if champion is None:  # nothing to compare against (a promotion will make it ACTIVE anyway)
            continue
        book = books.setdefault(record.horizon, ModelBook(lake, registry, record.horizon))
        if champion.model_id not in sets:
            sets[champion.model_id] = ShadowSet(ShadowModel(book, champion), [])
        sets[champion.model_id].challengers.append(ShadowModel(book, record))
    return [sets[k] for k in sorted(sets)]


def load_model(lake: Lake, registry: Registry, model_id: str, *, book: ModelBook | None = None) -> ShadowModel:
    """Any registered model (e.g. an ACTIVE one to supervise), loaded as serving would load it."""
    record = registry.get(model_id)
    return ShadowModel(book if book is not None else ModelBook(lake, registry, record.horizon), record)
