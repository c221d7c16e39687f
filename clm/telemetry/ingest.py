"""Read telemetry JSONL files into ``feedback_events`` rows, quarantining what breaks the contract.

Every ``*.jsonl`` file of a folder (sorted by name) and every non-blank line is accounted for:
it becomes an event, a quarantine row (one per line, the first problem found) or a removed
duplicate, and ``lines_read == events + quarantined + duplicates_removed`` is checked.

Duplicates: the first occurrence in file order wins, keyed by ``event_id``, or by
``content_hash`` (sha256 of the canonical event without ``event_id``) for lines without one; such
events get their content hash as ``event_id`` so the table key is never null.

Decoding, type checks and hashing run per line in Python (the ``json`` C codec plus set-at-a-time
type checks; measured ~18 s and ~1 GiB for 1M lines / 311 MB on the 2-core dev box) because each bad
line must be attributed to its line number and field: ``pl.Series.str.json_decode`` fails a whole
batch on one bad line and silently coerces types (``1`` -> ``"1"``, ``true`` -> ``1.0``), so it cannot
enforce the contract. Timestamp parsing, de-duplication, counting and sorting are Polars expressions.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clm.data.schema import QUARANTINE_SCHEMA
from clm.telemetry.events import (
    EVENT_SCHEMA,
    LINE_FIELDS,
    EventValidationError,
    canonical_json,
    content_hash,
    normalise_fields,
    parse_timestamps,
    value_text,
)

REASONS = (
    "invalid_utf8",
    "malformed_json",
    "not_an_object",
    "unknown_field",
    "missing_session_id",
    "unknown_event_type",
    "invalid_type",
    "missing_timestamp",
    "invalid_timestamp",
)
MAX_VALUE_CHARS = 2000
CHUNK_ROWS = 100_000

# What the Python pass produces per good line: the line fields (timestamp still text), then hash and origin.
_RAW_SCHEMA: dict[str, pl.DataType] = {
    **{c: (pl.String() if c in ("timestamp", "payload") else t) for c, t in EVENT_SCHEMA.items()},
}
_LINE_FIELDS_BUT_PAYLOAD = LINE_FIELDS[:-1]
assert LINE_FIELDS[-1] == "payload"
# The quarantine contract, with the timestamp still as text (it is parsed after the Python pass).
_BAD_SCHEMA: dict[str, pl.DataType] = {
    **{c: t for c, t in QUARANTINE_SCHEMA.items() if c != "timestamp"},
    "timestamp_text": pl.String(),
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass
class FileCounts:
    source_file: str
    lines_read: int = 0  # non-blank lines
    blank_lines: int = 0
    events: int = 0  # kept after de-duplication
    quarantined: int = 0
    duplicates_removed: int = 0


@dataclass
class FeedbackBatch:
    """Events (``EVENT_SCHEMA``) plus quarantine (``QUARANTINE_SCHEMA``) and the accounting."""

    events: pl.DataFrame
    quarantine: pl.DataFrame
    lines_read: int
    duplicates_removed: int
    files: list[FileCounts] = field(default_factory=list)
    duplicate_conflicts: int = 0  # removed duplicates whose content differed from the kept event

    def __post_init__(self) -> None:
        self.events = self.events.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])
        self.quarantine = self.quarantine.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()])
        accounted = self.events.height + self.quarantine.height + self.duplicates_removed
        if self.lines_read != accounted:
            raise AssertionError(
                f"telemetry: lines read {self.lines_read} != events {self.events.height}"
                f" + quarantined {self.quarantine.height} + duplicates {self.duplicates_removed}"
            )
        for counts in self.files:
            if counts.lines_read != counts.events + counts.quarantined + counts.duplicates_removed:
                raise AssertionError(f"telemetry: line accounting is off for {counts.source_file}: {counts}")

    def report(self) -> dict[str, Any]:
        by_reason = self.quarantine.group_by("reason").len().sort("reason")
        return {
            "files": len(self.files),
            "lines_read": self.lines_read,
            "events": self.events.height,
            "quarantined": self.quarantine.height,
            "quarantined_by_reason": dict(zip(by_reason["reason"].to_list(), by_reason["len"].to_list(), strict=True)),
            "duplicates_removed": self.duplicates_removed,
            "duplicate_conflicts": self.duplicate_conflicts,
            "per_file": [asdict(c) for c in self.files],
        }


def _read_whole_lines(path: Path) -> bytes:
    """The file's bytes up to its size under a shared lock: emitters append whole lines under an
    exclusive lock, so that prefix never ends inside a line; the lock is held only for the fstat."""
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        try:
            size = os.fstat(fh.fileno()).st_size
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return fh.read(size)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def _check_line(raw: bytes, source_file: str, lineno: int) -> tuple[bool, Sequence[Any]]:
    """(True, raw row) for a line that passes every per-line check, else (False, quarantine row)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False, (source_file, lineno, None, _clip(raw.decode("utf-8", "replace")), "invalid_utf8", None, None)
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return False, (source_file, lineno, None, _clip(text.strip()), "malformed_json", None, None)
    if not isinstance(obj, dict):
        return False, (source_file, lineno, None, _clip(text.strip()), "not_an_object", None, None)
    try:
        event = normalise_fields(obj, copy_payload=False)
        digest = content_hash(event)  # also proves every string is encodable UTF-8
        payload = event.get("payload")
        payload_text = None if payload is None else canonical_json(payload)
        if "event_id" in event:
            event["event_id"].encode("utf-8")
    except EventValidationError as exc:
        symbol = obj.get("symbol") if isinstance(obj.get("symbol"), str) else None
        stamp = obj.get("timestamp") if isinstance(obj.get("timestamp"), str) else None
        shown = value_text(exc.value)
        return False, (source_file, lineno, exc.field, None if shown is None else _clip(shown), exc.reason, symbol, stamp)
    except UnicodeEncodeError:  # "\ud800"-style escapes decode to lone surrogates
        return False, (source_file, lineno, None, _clip(text.strip()), "invalid_utf8", None, None)
    row = list(map(event.get, _LINE_FIELDS_BUT_PAYLOAD))
    row += (payload_text, digest, source_file, lineno)
    return True, row


def _frame(rows: list[Sequence[Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=schema)
    columns = list(zip(*rows, strict=True))
    return pl.DataFrame(
        {name: pl.Series(name, list(col), dtype=dtype) for (name, dtype), col in zip(schema.items(), columns, strict=True)}
    )


def _read_file(path: Path, name: str) -> tuple[FileCounts, list[pl.DataFrame], list[Sequence[Any]]]:
    """Check every line of one file: its counts, good rows as frames (in line order), bad rows."""
    stats = FileCounts(source_file=name)
    data = _read_whole_lines(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark from an editor
    lines = data.split(b"\n")
    del data
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line, it does not start a blank one
    frames: list[pl.DataFrame] = []
    good: list[Sequence[Any]] = []
    bad: list[Sequence[Any]] = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            stats.blank_lines += 1
            continue
        stats.lines_read += 1
        ok, row = _check_line(raw, name, lineno)
        if not ok:
            bad.append(row)
            continue
        good.append(row)
        if len(good) >= CHUNK_ROWS:  # bound the Python objects alive at once
            frames.append(_frame(good, _RAW_SCHEMA))
            good = []
    if good:
        frames.append(_frame(good, _RAW_SCHEMA))
    return stats, frames, bad


def read_feedback_events(folder: Path | str) -> FeedbackBatch:
    """Read, validate and de-duplicate every ``*.jsonl`` file directly under ``folder``."""
    folder = Path(folder)
    paths = sorted(p for p in folder.glob("*.jsonl") if p.is_file()) if folder.is_dir() else []
    frames: list[pl.DataFrame] = [pl.DataFrame(schema=_RAW_SCHEMA)]
    bad: list[Sequence[Any]] = []
    counts: dict[str, FileCounts] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small acyclic containers: the cyclic GC would rescan them over and over
    try:
        for path in paths:
            name = path.relative_to(folder).as_posix()
            counts[name], file_frames, file_bad = _read_file(path, name)
            frames += file_frames
            bad += file_bad
    finally:
        if gc_was_enabled:
            gc.enable()

    raw_events = pl.concat(frames, rechunk=True).with_columns(parsed_ts=parse_timestamps(pl.col("timestamp")))
    bad_ts = raw_events.filter(pl.col("parsed_ts").is_null()).select(
        "source_file",
        pl.col("source_line").alias("row"),
        pl.lit("timestamp").alias("field"),
        pl.col("timestamp").alias("value"),
        pl.lit("invalid_timestamp").alias("reason"),
        "symbol",
        pl.col("timestamp").alias("timestamp_text"),
    )
    quarantine = (
        pl.concat([_frame(bad, _BAD_SCHEMA), bad_ts.cast(_BAD_SCHEMA)])
        .with_columns(timestamp=parse_timestamps(pl.col("timestamp_text")))
        .drop("timestamp_text")
        .sort("source_file", "row")
        .select(list(QUARANTINE_SCHEMA))
    )

    key = pl.coalesce("event_id", "content_hash")
    valid = (
        raw_events.filter(pl.col("parsed_ts").is_not_null())  # still in file order, then line order
        .with_columns(
            event_id=key,
            timestamp=pl.col("parsed_ts"),
            is_first=key.is_first_distinct(),
            conflict=pl.col("content_hash") != pl.col("content_hash").first().over(key),
        )
    )
    duplicates = valid.filter(~pl.col("is_first"))
    events = valid.filter(pl.col("is_first")).select(list(EVENT_SCHEMA)).sort("timestamp", "event_id")

    for frame, attr in ((events, "events"), (quarantine, "quarantined"), (duplicates, "duplicates_removed")):
        per_file = frame.group_by("source_file").len()
        for name, n in per_file.iter_rows():
            setattr(counts[name], attr, n)
    return FeedbackBatch(
        events=events,
        quarantine=quarantine,
        lines_read=sum(c.lines_read for c in counts.values()),
        duplicates_removed=duplicates.height,
        files=list(counts.values()),
        duplicate_conflicts=int(duplicates["conflict"].sum()),
    )
