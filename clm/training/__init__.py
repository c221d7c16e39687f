"""Training runs: engines under purged walk-forward, with honest out-of-sample records."""

from clm.training.runs import (
    PREDICTION_COLUMNS,
    EngineRun,
    TrainingConfig,
    feature_columns,
    training_frame,
    walk_forward,
)

__all__ = [
    "PREDICTION_COLUMNS",
    "EngineRun",
    "TrainingConfig",
    "feature_columns",
    "training_frame",
    "walk_forward",
]
