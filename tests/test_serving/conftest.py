"""A real, small lake for the serving tests: synthetic candles -> features, labels, regimes -> two
LightGBM engines trained by ``clm.training.store.train_engine`` and registered in a real registry."""

import datetime as dt
import shutil
from pathlib import Path

import pytest

from clm.data import ingest
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.evaluation.gate import OVERALL, RegimeGate
from clm.evaluation.splits import SplitConfig
from clm.features import FeatureConfig
from clm.features.store import materialise_features
from clm.labels import LabelConfig
from clm.labels.store import materialise_labels
from clm.lake import Lake
from clm.models.artifacts import write_json, write_manifest
from clm.regimes.config import RegimeConfig
from clm.regimes.store import materialise_regimes
from clm.registry import POOLED, Lineage, NewModel, open_registry
from clm.training import TrainingConfig
from clm.training.store import train_engine

START = dt.date(2024, 1, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(10)]
TRAINING = TrainingConfig(horizon=12, split=SplitConfig(n_folds=2, embargo_bars=12))
FAST = {"n_estimators": 30, "num_leaves": 8, "early_stopping_rounds": 10, "num_threads": 1}


def build_market(root: Path, *, symbols: int = 4, seed: int = 3) -> Lake:
    lake = Lake(root)
    result = ingest.run_ingest(SyntheticSource(SyntheticConfig(symbols=symbols, days=len(DAYS), seed=seed)),
                               "synthetic")
    ingest.write_ingest(lake, result, DAYS[0], DAYS[-1] + dt.timedelta(days=1))
    materialise_features(lake, DAYS, FeatureConfig(sets=("core31", "ta")))
    materialise_labels(lake, DAYS, LabelConfig(horizons=(1, 12)))
    materialise_regimes(lake, DAYS, RegimeConfig())
    return lake


def train(lake: Lake, engine: str, options: dict | None = None):
    base = FAST if engine.startswith("lightgbm") else {}
    return train_engine(lake, engine, {**base, **(options or {})}, TRAINING)


def register(registry, stored, *, metrics: dict, scope: str = POOLED, horizon: int = 12):
    lineage = Lineage(
        training_window=("2024-01-01", "2024-01-10"), feature_version=stored.feature_version,
        feature_count=len(stored.run.features), label_config={"horizon": horizon}, code_version="test",
        data_hash="test", seeds={}, config={}, artifact_checksums=dict(stored.manifest.files),
    )
    return registry.register(NewModel(stored.run.engine, stored.version, scope, horizon, stored.path, lineage,
                                      metrics=metrics))


def register_gate(lake: Lake, registry, enabled: dict[str, list[str]], *, version: str, horizon: int = 12):
    """A regime gate as ``build_consensus`` saves it, registered as the lead's training does."""
    gate = RegimeGate.from_dict({"version": 1, "enabled": {OVERALL: [], **enabled}, "edges": [], "config": {}})
    directory = lake.model_dir("regime_gate", version)
    write_json(directory, "gate.json", gate.to_dict())
    manifest = write_manifest(directory, ["gate.json"], engine="regime_gate")
    lineage = Lineage(("a", "b"), None, 0, {}, "test", "test", {}, {}, dict(manifest.files))
    record = registry.register(NewModel("regime_gate", version, POOLED, horizon, str(directory), lineage))
    if record.status != "ACTIVE":
        record = registry.promote(record.model_id)
    return record


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """(lake, registry, {engine: StoredRun}): regressor (primary: higher net Sharpe) and classifier."""
    root = tmp_path_factory.mktemp("serving") / "lake"
    lake = build_market(root)
    registry = open_registry(lake)
    runs = {e: train(lake, e) for e in ("lightgbm_regressor", "lightgbm_classifier")}
    register(registry, runs["lightgbm_regressor"],
             metrics={"model_sharpe": 1.2, "directional_accuracy": 0.56, "typical_abs_return": 0.002})
    register(registry, runs["lightgbm_classifier"],
             metrics={"model_sharpe": 0.4, "directional_accuracy": 0.54, "typical_abs_return": 0.002})
    yield lake, registry, runs
    shutil.rmtree(root, ignore_errors=True)
