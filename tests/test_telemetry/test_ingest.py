"""read_feedback_events: every line accounted for, bad lines quarantined by reason, duplicates once."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

import clm.telemetry.ingest as ingest
from clm.data.schema import QUARANTINE_SCHEMA
from clm.telemetry import EVENT_SCHEMA, FeedbackBatch, read_feedback_events

TS = "2024-05-01T10:00:00Z"


def line(**fields) -> str:
    base = {"session_id": "s", "event_type": "feedback.explicit", "timestamp": TS}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def write(folder: Path, name: str, lines: list[str | bytes], *, end: bytes = b"\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(end.join(x if isinstance(x, bytes) else x.encode() for x in lines) + end)
    return path


# (line, reason, field) for every way a line can be bad; None reason = a good line, "" = a blank line.
CORPUS: list[tuple[str | bytes, str | None, str | None]] = [
    (line(event_id="g1", score=0.5, symbol="BTC_USDT"), None, None),
    ("", "", None),
    ("{not json", "malformed_json", None),
    ("[1, 2, 3]", "not_an_object", None),
    (b'{"session_id": "s\xff", "event_type": "feedback.explicit"}', "invalid_utf8", None),
    (line(session_id=...), "missing_session_id", "session_id"),
    (line(event_type="trade.opened"), "unknown_event_type", "event_type"),
    (line(score="abc", symbol="ETH_USDT"), "invalid_type", "score"),
    (line(timestamp="not a time"), "invalid_timestamp", "timestamp"),
    (line(timestamp=...), "missing_timestamp", "timestamp"),
    (line(colour="red"), "unknown_field", "colour"),
    ('{"session_id": "s", "event_type": "feedback.explicit", "timestamp": "%s", "score": NaN}' % TS,
     "malformed_json", None),
    (r'{"session_id": "s\ud800", "event_type": "feedback.explicit", "timestamp": "%s"}' % TS, "invalid_utf8", None),
    (line(hit_tp=1), "invalid_type", "hit_tp"),
    (line(payload="text"), "invalid_type", "payload"),
    ("   \t", "", None),
    (line(score=1), None, None),  # no event_id: keyed by content hash
    ("null", "not_an_object", None),
    ('{"session_id": "s", "event_type": "feedback.explicit", "timestamp": "%s", "score": 1e999}' % TS,
     "invalid_type", "score"),
    (line(session_id=""), "missing_session_id", "session_id"),
    (line(session_id=17), "invalid_type", "session_id"),
    (line(event_id=""), "invalid_type", "event_id"),
    (line(timestamp=1714557600), "invalid_type", "timestamp"),
    (line(timestamp="2024-05-01"), "invalid_timestamp", "timestamp"),
    (line(event_type=None), "unknown_event_type", "event_type"),
    (line(score=0.5, latency_ms="slow"), "invalid_type", "latency_ms"),
    (line(event_id="g2", timestamp="2024-05-01T12:00:00+02:00", payload={"b": 1, "a": [1.5, None]}), None, None),
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "feedback"
    write(folder, "events_20240501.jsonl", [text for text, _, _ in CORPUS])
    return folder


def test_every_bad_line_is_quarantined_with_its_line_number_and_reason(corpus: Path) -> None:
    batch = read_feedback_events(corpus)
    expected = [
        (lineno, reason, field)
        for lineno, (_, reason, field) in enumerate(CORPUS, start=1)
        if reason  # not good, not blank
    ]
    got = batch.quarantine.select("row", "reason", "field").rows()
    assert got == expected
    assert set(batch.quarantine["source_file"]) == {"events_20240501.jsonl"}
    assert batch.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert {r for _, r, _ in expected} == set(ingest.REASONS)  # the corpus covers every reason

    n_blank = sum(1 for _, reason, _ in CORPUS if reason == "")
    assert batch.lines_read == len(CORPUS) - n_blank
    assert batch.events.height == 3 and batch.duplicates_removed == 0
    assert batch.lines_read == batch.events.height + batch.quarantine.height + batch.duplicates_removed

    q = {row["row"]: row for row in batch.quarantine.iter_rows(named=True)}
    assert q[3]["value"] == "{not json"
    assert q[7]["value"] == "trade.opened"
    assert q[8]["value"] == "abc" and q[8]["symbol"] == "ETH_USDT"
    assert q[8]["timestamp"] == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert q[9]["value"] == "not a time"
    assert q[11]["value"] == '{"colour": "red"}'
    assert q[14]["value"] == "1"

    report = batch.report()
    assert report["lines_read"] == batch.lines_read and report["events"] == 3 and report["files"] == 1
    assert report["quarantined"] == len(expected)
    assert report["quarantined_by_reason"]["invalid_type"] == 8
    assert report["quarantined_by_reason"]["malformed_json"] == 2
    assert report["per_file"] == [
        {
            "source_file": "events_20240501.jsonl",
            "lines_read": batch.lines_read,
            "blank_lines": n_blank,
            "events": 3,
            "quarantined": len(expected),
            "duplicates_removed": 0,
        }
    ]


def test_good_rows_are_typed_and_sorted(corpus: Path) -> None:
    events = read_feedback_events(corpus).events
    assert events.schema == pl.Schema(EVENT_SCHEMA)
    assert events["timestamp"].to_list() == [
        dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC),  # 12:00+02:00
    ]
    assert events.equals(events.sort("timestamp", "event_id"))
    g2 = events.filter(pl.col("event_id") == "g2").row(0, named=True)
    assert g2["payload"] == '{"a":[1.5,null],"b":1}' and g2["source_line"] == 27
    no_id = events.filter(pl.col("source_line") == 17).row(0, named=True)
    assert no_id["event_id"] == no_id["content_hash"] and no_id["score"] == 1.0


def test_ingest_is_deterministic(corpus: Path) -> None:
    write(corpus, "events_20240502.jsonl", [line(event_id=f"x{i}", timestamp="2024-05-02T00:00:00Z") for i in range(50)])
    first, second = read_feedback_events(corpus), read_feedback_events(corpus)
    assert first.events.equals(second.events)
    assert first.quarantine.equals(second.quarantine)
    assert first.report() == second.report()


def test_duplicates_removed_once_first_file_wins(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    write(folder, "events_20240502.jsonl", [line(event_id="a", score=2.0), line(event_id="b")])
    write(
        folder,
        "events_20240501.jsonl",
        [
            line(event_id="a", score=1.0),
            line(event_id="a", score=1.0),
            line(score=3),  # no event_id ...
            '{"score": 3.0, "timestamp": "%s", "event_type": "feedback.explicit", "session_id": "s"}' % TS,  # same
            line(score=4),  # different content: kept
        ],
    )
    batch = read_feedback_events(folder)
    assert batch.duplicates_removed == 3
    assert batch.duplicate_conflicts == 1  # "a" with score 2.0 in the later file
    assert batch.events.height == 4
    a = batch.events.filter(pl.col("event_id") == "a").row(0, named=True)
    assert (a["source_file"], a["source_line"], a["score"]) == ("events_20240501.jsonl", 1, 1.0)
    per_file = {c.source_file: c for c in batch.files}
    assert [c.source_file for c in batch.files] == ["events_20240501.jsonl", "events_20240502.jsonl"]
    assert (per_file["events_20240501.jsonl"].events, per_file["events_20240501.jsonl"].duplicates_removed) == (3, 2)
    assert (per_file["events_20240502.jsonl"].events, per_file["events_20240502.jsonl"].duplicates_removed) == (1, 1)


def test_chunked_reading_keeps_file_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "CHUNK_ROWS", 3)
    folder = tmp_path / "feedback"
    write(folder, "events_20240501.jsonl", [line(event_id=f"e{i % 4}", score=float(i)) for i in range(20)])
    batch = read_feedback_events(folder)
    assert batch.events.sort("event_id")["score"].to_list() == [0.0, 1.0, 2.0, 3.0]
    assert batch.duplicates_removed == 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", dt.datetime(2024, 5, 1, 10)),
        ("2024-05-01T10:00:00.123456Z", dt.datetime(2024, 5, 1, 10, 0, 0, 123456)),
        ("2024-05-01T10:00:00+00:00", dt.datetime(2024, 5, 1, 10)),
        ("2024-05-01T12:30:00+02:30", dt.datetime(2024, 5, 1, 10)),
        ("2024-05-01T10:00:00", dt.datetime(2024, 5, 1, 10)),  # naive = UTC
        ("2024-05-01 10:00:00.5", dt.datetime(2024, 5, 1, 10, 0, 0, 500000)),
        ("2024-05-01", None),
        ("2024-13-01T00:00:00Z", None),
        ("10:00:00", None),
    ],
)
def test_timestamp_forms(tmp_path: Path, text: str, expected: dt.datetime | None) -> None:
    folder = tmp_path / "feedback"
    write(folder, "e.jsonl", [line(timestamp=text)])
    batch = read_feedback_events(folder)
    if expected is None:
        assert batch.quarantine["reason"].to_list() == ["invalid_timestamp"]
    else:
        assert batch.events["timestamp"].to_list() == [expected.replace(tzinfo=dt.UTC)]


def test_bom_crlf_and_no_final_newline(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    path = folder / "e.jsonl"
    folder.mkdir()
    path.write_bytes(b"\xef\xbb\xbf" + line(event_id="a").encode() + b"\r\n\r\n" + line(event_id="b").encode())
    batch = read_feedback_events(folder)
    assert batch.events["event_id"].to_list() == ["a", "b"]
    assert batch.events["source_line"].to_list() == [1, 3]
    assert batch.files[0].blank_lines == 1 and batch.lines_read == 2


def test_long_bad_lines_are_clipped_in_quarantine(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    write(folder, "e.jsonl", ["{" + "x" * 10_000])
    value = read_feedback_events(folder).quarantine["value"][0]
    assert len(value) == ingest.MAX_VALUE_CHARS + 1 and value.endswith("…")


def test_only_jsonl_files_directly_in_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    write(folder, "e.jsonl", [line(event_id="a")])
    write(folder, "notes.txt", ["not telemetry"])
    write(folder / "old", "e.jsonl", [line(event_id="b")])
    batch = read_feedback_events(folder)
    assert batch.events["event_id"].to_list() == ["a"] and len(batch.files) == 1


def test_missing_or_empty_folder_gives_an_empty_batch(tmp_path: Path) -> None:
    for folder in (tmp_path / "nope", tmp_path):
        batch = read_feedback_events(folder)
        assert batch.events.is_empty() and batch.events.schema == pl.Schema(EVENT_SCHEMA)
        assert batch.quarantine.is_empty() and batch.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
        assert batch.report()["lines_read"] == 0 and batch.report()["quarantined_by_reason"] == {}


def test_accounting_invariant_is_enforced() -> None:
    with pytest.raises(AssertionError, match="lines read 1"):
        FeedbackBatch(
            events=pl.DataFrame(schema=EVENT_SCHEMA),
            quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA),
            lines_read=1,
            duplicates_removed=0,
        )
