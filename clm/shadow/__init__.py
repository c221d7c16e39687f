"""The shadow tester: champion and challengers predict every bar; net returns decide promotions.

* ``load_shadow_sets`` (``models``): each ACTIVE model with the SHADOW challengers of its key, loaded
  as serving loads them.
* ``shadow_predictions`` -> ``write_open_predictions`` (lake table ``shadow_predictions``);
  ``close_outcomes`` once labels close -> ``append_results`` (registry ``shadow_test_results``)
  (``outcomes``).
* ``decide`` -> ``apply_decisions`` (``decide``): PROMOTE / REJECT / CONTINUE_TESTING from a paired
  block-bootstrap test, recorded in ``status_history``; promoted or rejected only with
  ``policy.auto_promote``.
"""

from clm.shadow.decide import (
    AppliedDecision,
    PairedTest,
    Recommendation,
    ShadowDecision,
    apply_decisions,
    block_bootstrap_means,
    checkpoints,
    decide,
    default_block_length,
    holm,
    paired_test,
)
from clm.shadow.models import (
    MODEL_PREDICTIONS_SCHEMA,
    ShadowModel,
    ShadowSet,
    expected_edge_bps,
    load_model,
    load_shadow_sets,
)
from clm.shadow.outcomes import (
    CLOSED_SIGNALS_EXTRA,
    SHADOW_PREDICTIONS,
    SHADOW_PREDICTIONS_SCHEMA,
    SHADOW_RESULTS,
    SHADOW_RESULTS_SCHEMA,
    append_results,
    close_outcomes,
    close_signals,
    read_open_predictions,
    read_results,
    shadow_predictions,
    write_open_predictions,
)

__all__ = [
    "CLOSED_SIGNALS_EXTRA",
    "MODEL_PREDICTIONS_SCHEMA",
    "SHADOW_PREDICTIONS",
    "SHADOW_PREDICTIONS_SCHEMA",
    "SHADOW_RESULTS",
    "SHADOW_RESULTS_SCHEMA",
    "AppliedDecision",
    "PairedTest",
    "Recommendation",
    "ShadowDecision",
    "ShadowModel",
    "ShadowSet",
    "append_results",
    "apply_decisions",
    "block_bootstrap_means",
    "checkpoints",
    "close_outcomes",
    "close_signals",
    "decide",
    "default_block_length",
    "expected_edge_bps",
    "holm",
    "load_model",
    "load_shadow_sets",
    "paired_test",
    "read_open_predictions",
    "read_results",
    "shadow_predictions",
    "write_open_predictions",
]
