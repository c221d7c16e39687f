"""Training labels from candles: forward returns, direction classes, triple barrier."""

from clm.labels.forward import (
    NULL_REASONS,
    LabelConfig,
    build_labels,
    label_columns,
    label_summary,
    output_schema,
)

__all__ = [
    "NULL_REASONS",
    "LabelConfig",
    "build_labels",
    "label_columns",
    "label_summary",
    "output_schema",
]
