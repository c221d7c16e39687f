"""Trade/training telemetry: emit events as JSON lines into the lake, ingest them into ``feedback_events``."""

from clm.telemetry.events import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    LINE_FIELDS,
    EventValidationError,
    TelemetryWarning,
    emit_training_event,
)
from clm.telemetry.ingest import FeedbackBatch, FileCounts, read_feedback_events

__all__ = [
    "EVENT_SCHEMA",
    "EVENT_TYPES",
    "LINE_FIELDS",
    "EventValidationError",
    "FeedbackBatch",
    "FileCounts",
    "TelemetryWarning",
    "emit_training_event",
    "read_feedback_events",
]
