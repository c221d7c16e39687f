"""Training runs in the lake: read features, labels and regimes; write models, predictions, folds.

A run's model lands in ``models/<engine>/<version>/`` where the version is a hash of what went in
(feature-store version, engine and training config, the rows' time range), so re-running the same
training writes the same folder; its out-of-sample predictions and fold audit go to the
``oos_predictions`` and ``cv_folds`` tables (one partition per engine).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from clm.data.ingest import CANDLES
from clm.evaluation.consensus import ConsensusConfig, consensus, decision_log
from clm.evaluation.costs import CostConfig
from clm.evaluation.gate import GateConfig, RegimeGate, learn_gate
from clm.features.build import infer_timeframe_seconds
from clm.features.expr import digest
from clm.features.store import FEATURES
from clm.labels.store import LABELS
from clm.lake import ALL_PARTITIONS, Lake
from clm.models.artifacts import ArtifactManifest, json_safe, write_json, write_manifest
from clm.models.base import engine_class
from clm.models.per_symbol import PerSymbolModel
from clm.regimes.store import REGIMES
from clm.registry.base import GATE_MODEL_TYPE, POOLED, ModelRecord, NewModel, Registry, Status
from clm.registry.lineage import artifact_model, data_hash
from clm.training.evaluate import Evaluation, evaluate_engines
from clm.training.previous import previous_predictions
from clm.training.runs import EngineRun, TrainingConfig, training_frame, walk_forward

OOS_PREDICTIONS = "oos_predictions"
CV_FOLDS = "cv_folds"
EVALUATION = "evaluation"
EVALUATION_DETAIL = "evaluation_detail"
EVALUATION_PREVIOUS_MODEL = "evaluation_previous_model"
COSTS = "costs"
CONSENSUS = "consensus"
DECISION_LOG = "decision_log"
GATE_ENGINE = GATE_MODEL_TYPE
COST_CONFIG = "cost_config"  # evaluation column: the cost assumptions the engine's net metrics were computed under


def cost_config_json(config: CostConfig) -> str:
    """``config.as_dict()`` as canonical JSON (sorted keys), as the evaluation table records it."""
    return json.dumps(config.as_dict(), sort_keys=True)


@dataclass
class StoredRun:
    run: EngineRun
    version: str
    feature_version: str | None
    manifest: ArtifactManifest
    path: str
    config: TrainingConfig
    engine_config: dict[str, Any]
    training_window: tuple[str, str]  # what the saved (last-fold) model saw: [train_start, validation_end), ISO UTC
    data_hash: str
    typical_abs_return: float  # median |target| of the training rows: a classifier's probability -> expected move


def load_training_frame(lake: Lake, config: TrainingConfig) -> tuple[pl.DataFrame, str | None]:
    """The warm, labelled rows of the current feature version, with their regime."""
    feature_version = lake.current_version(FEATURES)
    regimes = lake.scan(REGIMES) if lake.has_table(REGIMES) else None
    frame = training_frame(lake.scan(FEATURES), lake.scan(LABELS), regimes, config)
    if frame.is_empty():
        raise ValueError("no labelled warm feature rows to train on: materialise candles, features and labels first")
    return frame, feature_version


def train_engine(
    lake: Lake,
    engine: str,
    engine_config: Mapping[str, Any] | None,
    config: TrainingConfig,
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> StoredRun:
    frame, feature_version = load_training_frame(lake, config)
    tf = infer_timeframe_seconds(frame.select("symbol", "timestamp"))
    run = walk_forward(frame, engine, engine_config, config, timeframe_seconds=tf,
                       feature_version=feature_version, log=log)
    span = frame.select(pl.col("timestamp").min().alias("a"), pl.col("timestamp").max().alias("b")).row(0)
    # the saved model is the last fold's: it saw that fold's training and validation rows, nothing after
    last = run.audit.sort("fold").row(-1, named=True)
    window = (last["train_start"].isoformat(), last["validation_end"].isoformat())
    version = digest(json.dumps({
        "engine": engine, "engine_config": dict(engine_config or {}), "feature_version": feature_version,
        "training": {**asdict(config), "split": asdict(config.split)}, "rows": frame.height,
        "from": str(span[0]), "to": str(span[1]),
    }, sort_keys=True, default=str))
    directory = lake.model_dir(engine, version)
    manifest = run.model.save(directory)
    # the model version on every prediction row lets the evaluation find its registry record
    lake.write_table(OOS_PREDICTIONS, run.predictions.with_columns(pl.lit(version).alias("model_version")),
                     ["engine"], replace=[engine])
    lake.write_table(CV_FOLDS, run.audit, ["engine"], replace=[engine])
    log(f"{engine}: model {version} saved to {directory}")
    typical = frame.select(pl.col(config.target).abs().median()).item()
    return StoredRun(run, version, feature_version, manifest, str(directory), config, dict(engine_config or {}),
                     window, data_hash(frame), float(typical or 0.0))


def register_run(registry: Registry, stored: StoredRun, *, actor: str = "training") -> list[ModelRecord]:
    """Register what a training run saved: one model, or one per symbol when trained per symbol.

    Each record carries its lineage (training window, feature and code versions, data hash, seeds,
    configs, artefact checksums) and the run's out-of-sample summary as first metrics.
    """
    run, config = stored.run, stored.config
    model = run.model
    inner = next(iter(model.models.values()), None) if isinstance(model, PerSymbolModel) else model
    model_config = json_safe(inner.config.to_dict()) if inner is not None else {}  # effective, defaults included
    seeds = {k: int(v) for k, v in model_config.items() if (k == "seed" or k.endswith("_seed")) and v is not None}
    label_config = {"target": config.target, "horizon": config.horizon, "latency_bars": config.latency_bars}
    training_config = {"training": {**asdict(config), "split": asdict(config.split)}, "engine": model_config}
    predictions = run.predictions
    if isinstance(run.model, PerSymbolModel):
        scoped = [(symbol, Path(stored.path) / symbol) for symbol in sorted(run.model.models)]
    else:
        scoped = [(POOLED, Path(stored.path))]
    records = []
    for scope, folder in scoped:
        rows = predictions if scope == POOLED else predictions.filter(pl.col("symbol") == scope)
        signed = rows.filter(pl.col("signal").is_not_null() & (pl.col("target_return") != 0))
        hit = (signed["signal"].sign() == signed["target_return"].sign()).mean() if signed.height else None
        last_fold = rows.filter(pl.col("fold") == rows["fold"].max()) if rows.height else rows
        scale = last_fold["prediction"].std() if last_fold.height > 1 else None  # serving: prediction -> signal
        metrics = {"oos_predictions": rows.height, "oos_directional_accuracy": hit, "folds": len(run.reports),
                   "signal_scale": scale,
                   "typical_abs_return": stored.typical_abs_return, "task": engine_class(run.engine).task,
                   "train_seconds": round(run.seconds, 2)}
        new = artifact_model(
            model_type=run.engine, version=stored.version, scope=scope, horizon=config.horizon, folder=folder,
            training_window=stored.training_window, feature_version=stored.feature_version,
            feature_count=len(run.features), label_config=label_config, data_hash=stored.data_hash, seeds=seeds,
            config=training_config, metrics=json_safe(metrics))
        records.append(registry.register(new, actor=actor))
    return records


def attach_evaluation(registry: Registry, lake: Lake, evaluation: Evaluation, *, horizon: int) -> list[ModelRecord]:
    """Merge each engine's evaluation row into the metrics of the model versions that made its predictions."""
    versions = lake.scan(OOS_PREDICTIONS).select("engine", "model_version").unique().collect()
    updated = []
    for row in evaluation.overall.iter_rows(named=True):
        metrics = json_safe({k: json.loads(v) if k == COST_CONFIG and isinstance(v, str) else v
                             for k, v in row.items() if k != "engine"})
        for version in versions.filter(pl.col("engine") == row["engine"])["model_version"].to_list():
            for record in registry.list_models(model_type=row["engine"], horizon=horizon):
                if record.version == version:
                    updated.append(registry.update_metrics(record.model_id, metrics))
    return updated


def evaluate_stored(lake: Lake, *, horizon: int, engines: list[str] | None = None,
                    registry: Registry | None = None, cost_config: CostConfig | None = None) -> Evaluation:
    """Score every engine's stored out-of-sample predictions; write the evaluation and costs tables.

    With ``registry``, each engine's previous model (the champion its model was registered against,
    ``clm.training.previous``) is scored too, on the rows out of sample for it: ``previous_model_*``
    columns in both tables (``previous_model_rows`` rows each) and the ``evaluation_previous_model``
    table (per engine: the two models on exactly those rows, or a note saying why there is nothing to
    compare). ``cost_config``: the cost model (default ``CostConfig()``; the assets pass the policy's,
    ``Policy.cost_config()``; its ``notional_by_quote`` sizes the trades). The evaluation table records it
    per engine (column ``cost_config``, JSON: ``CostConfig.as_dict``), as do the models' registry metrics."""
    predictions = lake.read(OOS_PREDICTIONS)
    if engines is not None:
        predictions = predictions.filter(pl.col("engine").is_in(engines))
    if predictions.is_empty():
        raise ValueError("no out-of-sample predictions to evaluate: train an engine first")
    keys = predictions.select("symbol", "timestamp").unique()
    candles = lake.scan(CANDLES).join(keys.lazy(), on=["symbol", "timestamp"], how="semi").collect()
    tf = infer_timeframe_seconds(candles.select("symbol", "timestamp"))
    previous = None
    if registry is not None:
        previous = previous_predictions(lake, registry, predictions, horizon=horizon, timeframe_seconds=tf)
    cost_config = cost_config if cost_config is not None else CostConfig()
    evaluation = evaluate_engines(predictions, candles, timeframe_seconds=tf, horizon=horizon,
                                  cost_config=cost_config,
                                  previous=previous.predictions if previous is not None else None)
    evaluation.overall = evaluation.overall.with_columns(pl.lit(cost_config_json(cost_config)).alias(COST_CONFIG))
    if previous is not None:
        evaluation.overall = evaluation.overall.join(previous.models.select("engine", "previous_model_id"),
                                                     on="engine", how="left")
        comparison = previous.models.join(evaluation.previous_model, on="engine", how="left")
        evaluation.previous_model = comparison.select(
            *[c for c in comparison.columns if c != "previous_model_note"], "previous_model_note").sort("engine")
        lake.write_table(EVALUATION_PREVIOUS_MODEL, evaluation.previous_model)
    lake.write_table(EVALUATION, evaluation.overall)
    lake.write_table(EVALUATION_DETAIL, evaluation.detail, ["engine"], replace=predictions["engine"].unique().to_list())
    lake.write_table(COSTS, evaluation.costs, ["engine"], replace=predictions["engine"].unique().to_list())
    return evaluation


@dataclass
class ConsensusResult:
    gate: RegimeGate
    consensus: pl.DataFrame
    decisions: pl.DataFrame
    gate_folds: list[int]
    path: str
    version: str
    gate_config: GateConfig
    predictions: pl.DataFrame
    feature_version: str | None


def build_consensus(
    lake: Lake, *, gate_config: GateConfig = GateConfig(), config: ConsensusConfig = ConsensusConfig()
) -> ConsensusResult:
    """Learn the regime gate on the earlier folds, then vote every out-of-sample row causally.

    The gate is learnt on all folds but the last, so the last fold's decisions come from a gate that
    never saw them; the vote itself only uses outcomes realised before each bar.
    """
    predictions = lake.read(OOS_PREDICTIONS)
    if predictions.is_empty():
        raise ValueError("no out-of-sample predictions: train an engine first")
    folds = sorted(predictions["fold"].unique().to_list())
    gate_folds = folds[:-1] or folds
    gate = learn_gate(predictions, gate_config, folds=gate_folds)
    voted = consensus(gate.apply(predictions), config)
    decisions = decision_log(voted)
    version = digest(gate.to_json())
    directory = lake.model_dir(GATE_ENGINE, version)
    write_json(directory, "gate.json", gate.to_dict())
    write_manifest(directory, ["gate.json"], engine=GATE_ENGINE)
    lake.write_table(CONSENSUS, voted.with_columns(pl.col("timestamp").dt.date().alias("date")), ["date"],
                     replace=ALL_PARTITIONS)
    lake.write_table(DECISION_LOG, decisions.with_columns(pl.col("timestamp").dt.date().alias("date")), ["date"],
                     replace=ALL_PARTITIONS)
    return ConsensusResult(gate, voted, decisions, gate_folds, str(directory), version, gate_config, predictions,
                           lake.current_version(FEATURES))


def register_gate(registry: Registry, lake: Lake, result: ConsensusResult, *, horizon: int,
                  actor: str = "training") -> ModelRecord:
    """Register the regime gate and make it ACTIVE: it is learnt from the evaluated engines, not a
    challenger to shadow-test, so serving always gates with the newest one."""
    predictions = result.predictions
    span = predictions.select(pl.col("timestamp").min().alias("a"), pl.col("timestamp").max().alias("b")).row(0)

    def new_gate(version: str, folder: str) -> NewModel:
        return artifact_model(
            model_type=GATE_ENGINE, version=version, scope=POOLED, horizon=horizon, folder=folder,
            training_window=(span[0].isoformat(), span[1].isoformat()), feature_version=result.feature_version,
            feature_count=predictions["engine"].n_unique(), label_config={"horizon": horizon},
            data_hash=data_hash(predictions, keys=("engine", "symbol", "timestamp")), seeds={},
            config={"gate": result.gate_config.to_dict(), "gate_folds": result.gate_folds},
            metrics={"engines": sorted(predictions["engine"].unique().to_list()), "gate_folds": result.gate_folds})

    record = registry.register(new_gate(result.version, result.path), actor=actor)
    if record.status == Status.RETIRED:
        # the same gate was learnt before and later replaced; a RETIRED model returns only by a rollback,
        # so the gate is reissued as a new version (a copy of its folder) that can be promoted
        reissued = digest(f"{result.version}:reissued after {len(registry.history(record.model_id))} changes")
        folder = lake.model_dir(GATE_ENGINE, reissued)
        write_json(folder, "gate.json", result.gate.to_dict())
        write_manifest(folder, ["gate.json"], engine=GATE_ENGINE)
        record = registry.register(new_gate(reissued, str(folder)), actor=actor)
    if record.status != Status.ACTIVE:
        record = registry.promote(record.model_id, actor=actor, note="the gate follows the newest evaluated model set")
    return record
