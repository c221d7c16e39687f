"""Model evaluation: leak-free splits (purged walk-forward, chronological) and their audit, ..."""

from clm.evaluation.splits import (
    AUDIT_SCHEMA,
    Fold,
    SplitConfig,
    assign_folds,
    chronological_split,
    fold_audit,
    make_folds,
    purged_walk_forward,
)
