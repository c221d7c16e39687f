"""Training/trade telemetry events: the line contract, validation and a multi-process-safe emitter.

An event is one JSON object on one line of ``<lake>/telemetry/feedback/events_YYYYMMDD.jsonl``
(the UTC day of the event). Lines hold only the fields in ``LINE_FIELDS``; the Parquet table
``feedback_events`` (``EVENT_SCHEMA``) adds what ingest derives: ``content_hash``, ``source_file``
and ``source_line``.

Concurrency: every emitter opens the file with ``O_APPEND``, takes an exclusive ``flock``, writes
the whole line with one ``os.write`` (looping on short writes) and releases, so lines from many
processes never interleave or get lost. Readers take a shared ``flock`` only to learn the file size
and then read that prefix, which by construction holds whole lines only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import numbers
import os
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

import polars as pl

from clm.data.schema import UTC_TS
from clm.lake import Lake

logger = logging.getLogger(__name__)

EVENT_TYPES: frozenset[str] = frozenset(
    {"conversation.response", "trade.closed", "prediction.logged", "feedback.explicit"}
)

STRING_FIELDS = ("event_id", "session_id", "timestamp", "event_type", "intent", "skill",
                 "preferences_hash", "symbol", "model_id")
FLOAT_FIELDS = ("score", "trade_roi", "latency_ms", "confidence", "pnl_pct", "duration_hours",
                "max_drawdown_pct")
BOOL_FIELDS = ("hit_tp", "hit_sl")
OBJECT_FIELDS = ("payload",)

# Order of the fields in the table (and of validation: the first bad field is the one reported).
LINE_FIELDS: tuple[str, ...] = (
    "event_id", "session_id", "timestamp", "event_type", "intent", "skill", "score", "trade_roi",
    "preferences_hash", "latency_ms", "confidence", "symbol", "model_id", "pnl_pct",
    "duration_hours", "max_drawdown_pct", "hit_tp", "hit_sl", "payload",
)
_ALLOWED = frozenset(LINE_FIELDS)
_KIND = {
    **{f: "str" for f in STRING_FIELDS},
    **{f: "float" for f in FLOAT_FIELDS},
    **{f: "bool" for f in BOOL_FIELDS},
    **{f: "object" for f in OBJECT_FIELDS},
}
# Fields checked by ``normalise_fields`` (the identity fields get their own reasons first).
_FLOAT_SET = frozenset(FLOAT_FIELDS)
_TYPED_FIELDS = tuple(f for f in LINE_FIELDS if f not in ("session_id", "event_type", "timestamp"))

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "session_id": pl.String(),
    "timestamp": UTC_TS,
    "event_type": pl.String(),
    "intent": pl.String(),
    "skill": pl.String(),
    "score": pl.Float64(),
    "trade_roi": pl.Float64(),
    "preferences_hash": pl.String(),
    "latency_ms": pl.Float64(),
    "confidence": pl.Float64(),
    "symbol": pl.String(),
    "model_id": pl.String(),
    "pnl_pct": pl.Float64(),
    "duration_hours": pl.Float64(),
    "max_drawdown_pct": pl.Float64(),
    "hit_tp": pl.Boolean(),
    "hit_sl": pl.Boolean(),
    "payload": pl.String(),  # canonical JSON text (sorted keys, compact separators)
    "content_hash": pl.String(),  # sha256 of the canonical event without event_id
    "source_file": pl.String(),
    "source_line": pl.Int64(),
}
assert tuple(EVENT_SCHEMA)[: len(LINE_FIELDS)] == LINE_FIELDS


class EventValidationError(ValueError):
    """An event that breaks the contract; ``reason`` uses the quarantine vocabulary."""

    def __init__(self, reason: str, message: str, *, field: str | None = None, value: Any = None):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.value = value


class TelemetryWarning(UserWarning):
    pass


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(obj: Any) -> str:
    """Sorted keys, compact separators, UTF-8 text, no NaN/Infinity: same content -> same text."""
    return _CANONICAL.encode(obj)


def value_text(value: Any) -> str | None:
    """How a bad value is shown in errors and quarantine rows."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _type_error(field: str, expected: str, value: Any) -> EventValidationError:
    return EventValidationError(
        "invalid_type",
        f"telemetry field {field!r} must be {expected}, got {type(value).__name__} {value_text(value)!r}",
        field=field,
        value=value,
    )


_NONE = type(None)
_STR_TYPES = frozenset({str, _NONE})
_FLOAT_TYPES = frozenset({float, int, _NONE})
_BOOL_TYPES = frozenset({bool, _NONE})
_OBJECT_TYPES = frozenset({dict, _NONE})
_isfinite = math.isfinite


def _normalise_plain(event: dict[str, Any]) -> dict[str, Any] | None:
    """Fast check of an event of plain JSON types (what ``json`` decodes), set-at-a-time rather than
    field by field; ``None`` if anything is off (``normalise_fields`` then finds and names it)."""
    get = event.get
    if (
        not event.keys() <= _ALLOWED
        or not set(map(type, map(get, STRING_FIELDS))) <= _STR_TYPES
        or not set(map(type, map(get, BOOL_FIELDS))) <= _BOOL_TYPES
        or type(get("payload")) not in _OBJECT_TYPES
    ):
        return None
    float_types = set(map(type, map(get, FLOAT_FIELDS)))
    if not float_types <= _FLOAT_TYPES or not all(map(_isfinite, filter(None, map(get, FLOAT_FIELDS)))):
        return None
    session_id = get("session_id")
    event_id = get("event_id")
    if (
        session_id is None
        or not session_id.strip()
        or get("event_type") not in EVENT_TYPES
        or get("timestamp") is None
        or (event_id is not None and not event_id.strip())
    ):
        return None
    if None in event.values():
        event = {k: v for k, v in event.items() if v is not None}
    if int in float_types:
        event = {k: (float(v) if k in _FLOAT_SET else v) for k, v in event.items()}
    return event


def normalise_fields(event: Mapping[str, Any], *, copy_payload: bool = True) -> dict[str, Any]:
    """Check the identity fields and the type of every field; return the event with ``None`` dropped.

    Floats come back as ``float``, bools as ``bool``, ``payload`` as a plain dict. ``timestamp`` is
    only checked to be a string here (``parse_timestamps`` parses). Raises ``EventValidationError``
    with reason ``unknown_field``, ``missing_session_id``, ``unknown_event_type``, ``invalid_type``
    or ``missing_timestamp`` (checked in that order; the first bad field in ``LINE_FIELDS`` order is
    the one named). ``copy_payload=False`` (ingest: the event came from ``json``) may return ``event``
    itself and keeps a ``dict`` payload as is; otherwise the payload is round-tripped through
    canonical JSON.
    """
    if not copy_payload and type(event) is dict:
        fast = _normalise_plain(event)
        if fast is not None:
            return fast
    unknown = [k for k in event if k not in _ALLOWED]
    if unknown:
        names = sorted(map(str, unknown))
        raise EventValidationError(
            "unknown_field",
            f"unknown telemetry field(s) {names}; allowed: {list(LINE_FIELDS)}",
            field=",".join(names),
            value={k: event[k] for k in unknown},
        )
    session_id = event.get("session_id")
    if session_id is None or (isinstance(session_id, str) and not session_id.strip()):
        raise EventValidationError(
            "missing_session_id", "telemetry event needs a non-empty session_id", field="session_id",
            value=session_id,
        )
    if not isinstance(session_id, str):
        raise _type_error("session_id", "a string", session_id)
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise EventValidationError(
            "unknown_event_type",
            f"unknown telemetry event_type {value_text(event_type)!r}; expected one of {sorted(EVENT_TYPES)}",
            field="event_type",
            value=event_type,
        )
    out: dict[str, Any] = {"session_id": session_id, "event_type": event_type}
    for field in _TYPED_FIELDS:
        value = event.get(field)
        if value is None:
            continue
        kind = _KIND[field]
        if kind == "str":
            if not isinstance(value, str):
                raise _type_error(field, "a string", value)
            if field == "event_id" and not value.strip():
                raise EventValidationError(
                    "invalid_type", "telemetry event_id must be a non-empty string", field=field, value=value
                )
            out[field] = str(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or type(value).__name__ == "bool_":
                raise _type_error(field, "a number", value)
            number = float(value)
            if not math.isfinite(number):
                raise _type_error(field, "a finite number", value)
            out[field] = number
        elif kind == "bool":
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                raise _type_error(field, "true or false", value)
            out[field] = bool(value)
        else:  # object
            if not isinstance(value, Mapping):
                raise _type_error(field, "a JSON object", value)
            if not copy_payload and type(value) is dict:
                out[field] = value
                continue
            try:
                out[field] = json.loads(canonical_json(dict(value)))
            except (TypeError, ValueError) as exc:
                raise EventValidationError(
                    "invalid_type", f"telemetry field 'payload' is not JSON-serialisable: {exc}",
                    field=field, value=repr(value),
                ) from exc
    timestamp = event.get("timestamp")
    if timestamp is None:
        raise EventValidationError(
            "missing_timestamp", "telemetry event has no timestamp", field="timestamp", value=None
        )
    if not isinstance(timestamp, str):
        raise _type_error("timestamp", "an ISO-8601 string", timestamp)
    out["timestamp"] = timestamp
    return {f: out[f] for f in LINE_FIELDS if f in out}


def content_hash(event: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a normalised event, without ``event_id`` and null fields."""
    body = {k: v for k, v in event.items() if v is not None}
    body.pop("event_id", None)
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def parse_timestamps(expr: pl.Expr) -> pl.Expr:
    """ISO-8601 text -> ``Datetime(us, UTC)``; null where unparseable.

    Accepted: ``YYYY-MM-DD[T ]HH:MM:SS[.fff…]`` followed by ``Z``, ``±HH:MM``, ``±HHMM`` (converted
    to UTC) or nothing (naive = UTC). Dates without a time are rejected.
    """
    text = expr.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    aware = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False)
    naive = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False).dt.replace_time_zone("UTC")
    return pl.coalesce(aware, naive)


def format_timestamp(ts: dt.datetime) -> str:
    """UTC, microseconds, 'Z': ``2024-05-01T12:00:00.000000Z``."""
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _coerce_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, str):
        parsed = pl.select(parse_timestamps(pl.lit(value, dtype=pl.String))).item()
        if parsed is None:
            raise EventValidationError(
                "invalid_timestamp", f"telemetry field 'timestamp' is not an ISO-8601 time: {value!r}",
                field="timestamp", value=value,
            )
        return parsed
    raise _type_error("timestamp", "a datetime or an ISO-8601 string", value)


def _append_line(path: os.PathLike[str] | str, data: bytes) -> None:
    """Append one whole line under an exclusive flock; a failed write is rolled back."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":
                data = b"\n" + data  # a hand-edited file without a final newline: never glue onto it
            view = memoryview(data)
            try:
                while view:
                    written = os.write(fd, view)
                    if written <= 0:
                        raise OSError(f"short write appending to {path}")
                    view = view[written:]
            except BaseException:
                os.ftruncate(fd, start)  # we hold the lock: nobody else appended since `start`
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def emit_training_event(
    event_type: str,
    *,
    session_id: str,
    lake: Lake | None = None,
    timestamp: dt.datetime | str | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Validate one event and append it as one JSON line to the lake's file for its UTC day.

    Returns the event as written (fields that are ``None`` are left out). Raises ``ValueError``
    (an ``EventValidationError``) naming the bad field(s): unknown ``event_type`` or field names,
    empty ``session_id``, wrong types, an unparseable timestamp. A missing timestamp becomes "now"
    with a ``TelemetryWarning``.
    """
    unknown = sorted(k for k in fields if k not in _ALLOWED)
    if unknown:
        raise EventValidationError(
            "unknown_field", f"unknown telemetry field(s) {unknown}; allowed: {list(LINE_FIELDS)}",
            field=",".join(unknown),
        )
    when = dt.datetime.now(dt.UTC) if timestamp is None else _coerce_timestamp(timestamp)
    event = normalise_fields(
        {
            **fields,
            "event_id": uuid.uuid4().hex if event_id is None else event_id,
            "session_id": session_id,
            "event_type": event_type,
            "timestamp": format_timestamp(when),
        }
    )
    try:
        line = (canonical_json(event) + "\n").encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates in some string
        raise EventValidationError("invalid_utf8", f"telemetry event has text that is not UTF-8: {exc}") from exc
    if timestamp is None:
        message = f"telemetry event {event_type!r} has no timestamp; using the current UTC time"
        warnings.warn(message, TelemetryWarning, stacklevel=2)
        logger.warning(message)
    lake = Lake.from_env() if lake is None else lake
    path = lake.telemetry_file(when.date())
    path.parent.mkdir(parents=True, exist_ok=True)
    _append_line(path, line)
    return event
