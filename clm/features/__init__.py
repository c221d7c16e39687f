"""Causal bar features, defined once and computed in batch (polars) or live (numpy); see ``expr``."""

from clm.features.build import (
    FEATURE_SETS,
    WARM,
    FeatureConfig,
    compute_features,
    drop_warmup,
    infer_timeframe_seconds,
    select_features,
)
from clm.features.live import LiveFeatures
from clm.features.registry import Feature, FeatureSelection

__all__ = [
    "FEATURE_SETS",
    "WARM",
    "Feature",
    "FeatureConfig",
    "FeatureSelection",
    "LiveFeatures",
    "compute_features",
    "drop_warmup",
    "infer_timeframe_seconds",
    "select_features",
]
