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
from typing import Any

import polars as pl

from clm.data.ingest import CANDLES
from clm.features.build import infer_timeframe_seconds
from clm.features.expr import digest
from clm.features.store import FEATURES
from clm.labels.store import LABELS
from clm.evaluation.consensus import ConsensusConfig, consensus, decision_log
from clm.evaluation.gate import GateConfig, RegimeGate, learn_gate
from clm.lake import ALL_PARTITIONS, Lake
from clm.models.artifacts import ArtifactManifest, write_json, write_manifest
from clm.regimes.store import REGIMES
from clm.training.evaluate import Evaluation, evaluate_engines
from clm.training.runs import EngineRun, TrainingConfig, training_frame, walk_forward

OOS_PREDICTIONS = "oos_predictions"
CV_FOLDS = "cv_folds"
EVALUATION = "evaluation"
EVALUATION_DETAIL = "evaluation_detail"
COSTS = "costs"
CONSENSUS = "consensus"
DECISION_LOG = "decision_log"
GATE_ENGINE = "regime_gate"


@dataclass
class StoredRun:
    run: EngineRun
    version: str
    feature_version: str | None
    manifest: ArtifactManifest
    path: str


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
    version = digest(json.dumps({
        "engine": engine, "engine_config": dict(engine_config or {}), "feature_version": feature_version,
        "training": {**asdict(config), "split": asdict(config.split)}, "rows": frame.height,
        "from": str(span[0]), "to": str(span[1]),
    }, sort_keys=True, default=str))
    directory = lake.model_dir(engine, version)
    manifest = run.model.save(directory)
    lake.write_table(OOS_PREDICTIONS, run.predictions, ["engine"], replace=[engine])
    lake.write_table(CV_FOLDS, run.audit, ["engine"], replace=[engine])
    log(f"{engine}: model {version} saved to {directory}")
    return StoredRun(run, version, feature_version, manifest, str(directory))


def evaluate_stored(lake: Lake, *, horizon: int, engines: list[str] | None = None) -> Evaluation:
    """Score every engine's stored out-of-sample predictions; write the evaluation and costs tables."""
    predictions = lake.read(OOS_PREDICTIONS)
    if engines is not None:
        predictions = predictions.filter(pl.col("engine").is_in(engines))
    if predictions.is_empty():
        raise ValueError("no out-of-sample predictions to evaluate: train an engine first")
    keys = predictions.select("symbol", "timestamp").unique()
    candles = lake.scan(CANDLES).join(keys.lazy(), on=["symbol", "timestamp"], how="semi").collect()
    tf = infer_timeframe_seconds(candles.select("symbol", "timestamp"))
    evaluation = evaluate_engines(predictions, candles, timeframe_seconds=tf, horizon=horizon)
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
    return ConsensusResult(gate, voted, decisions, gate_folds, str(directory))
