"""The previous model: the champion a training run's model was registered against, on the same rows.

An engine's *previous model* is the model that was ACTIVE for its registry key (model type, scope,
horizon) when this run's model was registered: the champion a SHADOW challenger would replace. A
model that became ACTIVE on registration (its key's first) has none. It is found through the
``Registry`` interface only (``previous_model``: the key's status histories, read in event order),
so re-evaluating after a promotion still names the model that was the champion at registration.

``previous_predictions`` loads that model as serving does (``clm.shadow.models.load_model``: its
artefacts verified against their manifest, its signal and expected edge as serving computes them)
and predicts this run's out-of-sample rows *that are out of sample for it too*: a row counts only when
its timestamp is at or after the end of the previous model's training window in its lineage (the
window is ``[train_start, validation_end)``, every label it saw ended before ``validation_end`` minus
the embargo, exactly as a walk-forward test window starts at its fold's ``validation_end``). Its
features are read from the feature-store version it was trained on when the lake still has it. A
sequence engine gets its ``context_length`` bars of history before the first such row, as walk-forward
hands it the history before a test window. One load and one prediction per engine (and scope): no
walk-forward again.

``clm.training.evaluate.evaluate_engines(previous=...)`` turns those predictions into positions by the
engine's own rule and scores them on those rows only; where nothing can be compared (no previous
model, none of the rows out of sample for it, artefacts pruned, a model that cannot predict) the
``previous_model_note`` says why and no number is made up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from clm.checks import is_int
from clm.features.build import drop_warmup
from clm.features.store import FEATURES
from clm.lake import Lake, LakeError
from clm.models.artifacts import ArtifactError
from clm.models.base import engine_class
from clm.registry.base import POOLED, ModelRecord, Registry, Status
from clm.serving.champion import ModelBook, ServingError
from clm.shadow.models import ShadowModel, load_model

UTC_US = pl.Datetime("us", "UTC")
PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "engine": pl.String(), "symbol": pl.String(), "timestamp": UTC_US, "prediction": pl.Float64(),
    "signal": pl.Float64(), "probability": pl.Float64(), "expected_edge_bps": pl.Float64(),
    "previous_model_id": pl.String(),
}
MODELS_SCHEMA: dict[str, pl.DataType] = {
    "engine": pl.String(), "model_id": pl.String(), "previous_model_id": pl.String(),
    "previous_trained_until": UTC_US, "previous_model_note": pl.String(),
}


@dataclass
class PreviousPredictions:
    """``predictions``: the previous models' predictions on the rows out of sample for them
    (``PREDICTIONS_SCHEMA``); ``models``: per engine this run's model(s), the previous one(s), where
    their training ended, and a note when nothing could be compared (``MODELS_SCHEMA``)."""

    predictions: pl.DataFrame
    models: pl.DataFrame


def previous_model(registry: Registry, record: ModelRecord) -> ModelRecord | None:
    """The model that was ACTIVE for ``record``'s key just before ``record`` was registered, or None
    (``record`` was registered ACTIVE, as its key's first model). Event ids grow in the order the
    status changes happened, across models."""
    registered = next((e for e in registry.history(record.model_id) if e.from_status is None), None)
    if registered is None or registered.to_status == Status.ACTIVE:
        return None
    for other in registry.list_models(model_type=record.model_type, scope=record.scope, horizon=record.horizon):
        if other.model_id == record.model_id or other.created_at > record.created_at:
            continue
        before = [e for e in registry.history(other.model_id) if e.event_id < registered.event_id]
        if before and before[-1].to_status == Status.ACTIVE:
            return other
    return None


def trained_until(record: ModelRecord) -> dt.datetime:
    """The end of the model's training window (train + validation, exclusive), UTC; ``ValueError`` if unreadable."""
    end = dt.datetime.fromisoformat(str(record.lineage.training_window[1]))
    return end if end.tzinfo is not None else end.replace(tzinfo=dt.UTC)


def previous_predictions(lake: Lake, registry: Registry, predictions: pl.DataFrame, *, horizon: int,
                         timeframe_seconds: int) -> PreviousPredictions:
    """The previous model of every engine in ``predictions`` (``oos_predictions`` rows with their
    ``model_version``) and its predictions on the rows out of sample for it (module docstring)."""
    book = ModelBook(lake, registry, horizon)
    parts: list[pl.DataFrame] = []
    models: list[dict] = []
    for engine in sorted(predictions["engine"].unique().to_list()):
        rows = predictions.filter(pl.col("engine") == engine)
        versions = set(rows["model_version"].drop_nulls().to_list()) if "model_version" in rows.columns else set()
        records = sorted((r for r in registry.list_models(model_type=engine, horizon=horizon) if r.version in versions),
                         key=lambda r: r.scope)
        summary = {"engine": engine, "model_id": ", ".join(r.model_id for r in records) or None,
                   "previous_model_id": None, "previous_trained_until": None, "previous_model_note": None}
        if not records:
            summary["previous_model_note"] = "this run's model is not in the registry: no previous model to compare"
            models.append(summary)
            continue
        notes, previous_ids, ends = [], [], []
        for record in records:
            where = "" if record.scope == POOLED else f"{record.scope}: "
            previous = previous_model(registry, record)
            if previous is None:
                notes.append(f"{where}no previous model ({record.model_id} was registered as the first model of "
                             f"{record.key})")
                continue
            previous_ids.append(previous.model_id)
            if previous.artifacts_pruned:
                notes.append(f"{where}the artefacts of the previous model {previous.model_id} were pruned")
                continue
            try:
                until = trained_until(previous)
            except (ValueError, IndexError, TypeError) as exc:
                notes.append(f"{where}the training window of {previous.model_id} is unreadable: {exc}")
                continue
            ends.append(until)
            mine = rows if record.scope == POOLED else rows.filter(pl.col("symbol").cast(pl.String) == record.scope)
            eligible = mine.filter(pl.col("timestamp") >= until)
            if eligible.is_empty():
                notes.append(f"{where}none of the {mine.height:,} out-of-sample rows is out of sample for "
                             f"{previous.model_id} too (trained until {until:%Y-%m-%d %H:%M} UTC)")
                continue
            try:
                predicted = _predict(lake, registry, book, previous, eligible, timeframe_seconds)
            except (ArtifactError, ServingError, LakeError, ValueError) as exc:
                notes.append(f"{where}the previous model {previous.model_id} could not predict: {exc}")
                continue
            if predicted.is_empty():
                notes.append(f"{where}no features for the {eligible.height:,} rows out of sample for "
                             f"{previous.model_id}")
                continue
            parts.append(predicted.with_columns(pl.lit(engine).alias("engine"),
                                                pl.lit(previous.model_id).alias("previous_model_id")))
        summary.update(previous_model_id=", ".join(dict.fromkeys(previous_ids)) or None,
                       previous_trained_until=max(ends) if ends else None,
                       previous_model_note="; ".join(notes) or None)
        models.append(summary)
    frame = (pl.concat([p.select([pl.col(c).cast(t) for c, t in PREDICTIONS_SCHEMA.items()]) for p in parts])
             if parts else pl.DataFrame(schema=PREDICTIONS_SCHEMA))
    return PreviousPredictions(frame, pl.DataFrame(models, schema=MODELS_SCHEMA))


def _predict(lake: Lake, registry: Registry, book: ModelBook, previous: ModelRecord, rows: pl.DataFrame,
             timeframe_seconds: int) -> pl.DataFrame:
    """``previous``'s prediction, signal, probability and expected edge on ``rows`` (those with features)."""
    model = load_model(lake, registry, previous.model_id, book=book)
    start, end = rows["timestamp"].min(), rows["timestamp"].max()
    symbols = sorted(rows["symbol"].cast(pl.String).unique().to_list())
    since = start
    if getattr(engine_class(previous.model_type), "sequence", False):  # the history before the first row
        since = start - dt.timedelta(seconds=_context_bars(model, symbols) * timeframe_seconds)
    features = _features(lake, previous.feature_version, symbols, since, end)
    out = model.predict(features)
    probability = pl.col("prediction") if model.kind == "probability" else pl.lit(None, pl.Float64)
    return rows.select(pl.col("symbol").cast(pl.String), pl.col("timestamp").cast(UTC_US)).join(
        out.select("symbol", "timestamp", "prediction", "signal", "edge_bps"), on=["symbol", "timestamp"], how="inner",
    ).select("symbol", "timestamp", "prediction", "signal", probability.alias("probability"),
             pl.col("edge_bps").alias("expected_edge_bps"))


def _context_bars(model: ShadowModel, symbols: list[str]) -> int:
    """A sequence engine's ``context_length``: from its lineage's effective config, else the loaded engine."""
    value = (model.record.lineage.config.get("engine") or {}).get("context_length")
    if is_int(value) and value > 0:
        return int(value)
    scope = None if model.record.scope == POOLED else model.record.scope
    return model.served(scope or (symbols[0] if model.per_symbol else None)).context_length


def _features(lake: Lake, version: str | None, symbols: list[str], since: dt.datetime, until: dt.datetime
              ) -> pl.DataFrame:
    """Warm feature rows of ``symbols`` in ``[since, until]``, of ``version`` when the lake still has it."""
    dates = pl.date_range(since.date(), until.date(), eager=True).to_list()
    pinned = {"version": [version]} if version is not None and version in lake.versions(FEATURES) else {}
    scan = lake.scan(FEATURES, date=dates, **pinned)
    return (
        drop_warmup(scan)
        .filter(pl.col("symbol").cast(pl.String).is_in(symbols) & pl.col("timestamp").is_between(since, until))
        .drop([c for c in ("date", "version") if c in scan.collect_schema()])
        .with_columns(pl.col("symbol").cast(pl.String))
        .sort("symbol", "timestamp")
        .collect()
    )


__all__ = ["MODELS_SCHEMA", "PREDICTIONS_SCHEMA", "PreviousPredictions", "previous_model", "previous_predictions",
           "trained_until"]
