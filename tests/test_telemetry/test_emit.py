"""emit_training_event: validation, file routing, and many processes appending at once."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import polars as pl
import pytest

from clm.lake import Lake
from clm.telemetry import (
    EVENT_SCHEMA,
    LINE_FIELDS,
    EventValidationError,
    TelemetryWarning,
    emit_training_event,
    read_feedback_events,
)

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_lines(lake: Lake) -> list[str]:
    out: list[str] = []
    for path in sorted(lake.telemetry_dir.glob("*.jsonl")):
        text = path.read_text()
        assert text.endswith("\n")
        out += text.splitlines()
    return out


def test_round_trip_every_field(lake: Lake) -> None:
    event = emit_training_event(
        "trade.closed",
        session_id="sess-1",
        lake=lake,
        timestamp=T0,
        event_id="e-1",
        intent="close_position",
        skill="momentum",
        score=1,  # an int is a number
        trade_roi=0.12,
        preferences_hash="abc123",
        latency_ms=12.5,
        confidence=0.9,
        symbol="BTC_USDT",
        model_id="m-7",
        pnl_pct=-1.5,
        duration_hours=3.0,
        max_drawdown_pct=2.25,
        hit_tp=False,
        hit_sl=True,
        payload={"b": [1, 2], "a": {"z": None, "y": "ü"}},
    )
    assert set(event) == set(LINE_FIELDS)
    assert event["score"] == 1.0 and isinstance(event["score"], float)
    assert event["timestamp"] == "2024-05-01T12:00:00.000000Z"
    path = lake.telemetry_file(dt.date(2024, 5, 1))
    assert lines_of(path) == [event]

    batch = read_feedback_events(lake.telemetry_dir)
    assert batch.quarantine.is_empty() and batch.duplicates_removed == 0
    assert batch.events.schema == pl.Schema(EVENT_SCHEMA)
    row = batch.events.row(0, named=True)
    for name in LINE_FIELDS:
        if name == "timestamp":
            assert row[name] == T0
        elif name == "payload":
            assert row[name] == '{"a":{"y":"ü","z":null},"b":[1,2]}'
        else:
            assert row[name] == event[name], name
    assert row["source_file"] == "events_20240501.jsonl" and row["source_line"] == 1
    assert len(row["content_hash"]) == 64


@pytest.mark.parametrize(
    ("timestamp", "day", "text"),
    [
        (dt.datetime(2024, 5, 1, 23, 30), dt.date(2024, 5, 1), "2024-05-01T23:30:00.000000Z"),  # naive = UTC
        (
            dt.datetime(2024, 5, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
            dt.date(2024, 5, 2),
            "2024-05-02T01:30:00.000000Z",
        ),
        ("2024-05-01T10:00:00Z", dt.date(2024, 5, 1), "2024-05-01T10:00:00.000000Z"),
        ("2024-05-01T10:00:00.25+00:00", dt.date(2024, 5, 1), "2024-05-01T10:00:00.250000Z"),
        ("2024-05-01T01:00:00+02:00", dt.date(2024, 4, 30), "2024-04-30T23:00:00.000000Z"),
        ("2024-05-01 10:00:00", dt.date(2024, 5, 1), "2024-05-01T10:00:00.000000Z"),
    ],
)
def test_timestamp_forms_and_utc_day_routing(lake: Lake, timestamp, day: dt.date, text: str) -> None:
    event = emit_training_event("prediction.logged", session_id="s", lake=lake, timestamp=timestamp)
    assert event["timestamp"] == text
    assert lines_of(lake.telemetry_file(day)) == [event]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"event_type": "trade.opened"}, ["trade.opened"]),
        ({"foo": 1, "bar": 2}, ["bar", "foo"]),
        ({"score": "abc"}, ["score"]),
        ({"score": "0.5"}, ["score"]),  # numbers as text are not numbers
        ({"latency_ms": True}, ["latency_ms"]),
        ({"confidence": float("nan")}, ["confidence"]),
        ({"hit_tp": 1}, ["hit_tp"]),
        ({"symbol": 7}, ["symbol"]),
        ({"payload": [1, 2]}, ["payload"]),
        ({"payload": {"when": dt.date(2024, 1, 1)}}, ["payload"]),
        ({"event_id": ""}, ["event_id"]),
        ({"event_id": 5}, ["event_id"]),
        ({"timestamp": "yesterday"}, ["timestamp", "yesterday"]),
        ({"timestamp": "2024-05-01"}, ["timestamp"]),  # a date is not a time
        ({"timestamp": 1714564800}, ["timestamp"]),
        ({"session_id": ""}, ["session_id"]),
        ({"session_id": "   "}, ["session_id"]),
        ({"session_id": None}, ["session_id"]),
        ({"session_id": 42}, ["session_id"]),
    ],
)
def test_invalid_events_raise_naming_the_problem(lake: Lake, kwargs: dict, named: list[str]) -> None:
    args = {"event_type": "feedback.explicit", "session_id": "s", "timestamp": T0, **kwargs}
    event_type = args.pop("event_type")
    with pytest.raises(ValueError) as info:
        emit_training_event(event_type, lake=lake, **args)
    assert isinstance(info.value, EventValidationError)
    for name in named:
        assert name in str(info.value)
    assert not lake.telemetry_dir.exists() or not any(lake.telemetry_dir.iterdir())


def test_missing_session_id_argument_is_an_error(lake: Lake) -> None:
    with pytest.raises(TypeError):
        emit_training_event("feedback.explicit", lake=lake, timestamp=T0)  # type: ignore[call-arg]


def test_missing_timestamp_warns_and_uses_now(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    before = dt.datetime.now(dt.UTC)
    with caplog.at_level(logging.WARNING, logger="clm.telemetry.events"):
        with pytest.warns(TelemetryWarning, match="no timestamp"):
            event = emit_training_event("conversation.response", session_id="s", lake=lake, latency_ms=3)
    after = dt.datetime.now(dt.UTC)
    assert any("no timestamp" in r.getMessage() for r in caplog.records)
    stamp = dt.datetime.fromisoformat(event["timestamp"])
    assert before - dt.timedelta(microseconds=1) <= stamp <= after
    assert lines_of(lake.telemetry_file(stamp.date())) == [event]


def test_invalid_event_without_timestamp_raises_before_warning(lake: Lake) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="score"):
            emit_training_event("feedback.explicit", session_id="s", lake=lake, score="bad")


def test_lake_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLM_LAKE", str(tmp_path / "envlake"))
    event = emit_training_event("feedback.explicit", session_id="s", timestamp=T0, score=0.5)
    assert lines_of(Lake(tmp_path / "envlake").telemetry_file(T0.date())) == [event]


def test_never_glues_onto_a_hand_written_line_without_newline(lake: Lake) -> None:
    path = lake.telemetry_file(T0.date())
    path.parent.mkdir(parents=True)
    path.write_text('{"note": "hand written, no final newline"}')
    event = emit_training_event("feedback.explicit", session_id="s", lake=lake, timestamp=T0)
    assert path.read_text().splitlines()[1] == json.dumps(event, sort_keys=True, separators=(",", ":"))


# ---- many processes at once -----------------------------------------------------------------------

WORKERS = 4
PER_WORKER = 1000
WORKER_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, os, sys, time
    from pathlib import Path
    from clm.lake import Lake
    from clm.telemetry import emit_training_event

    worker, n, root, gate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    lake = Lake(root)
    t0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    (gate / f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while not (gate / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("never got the go")
        time.sleep(0.001)
    for i in range(n):
        pad = "x" * ((i * 37 + worker * 1013) % 9000)  # up to ~9 KB: bigger than PIPE_BUF and a page
        emit_training_event(
            "prediction.logged",
            session_id=f"worker-{worker}",
            lake=lake,
            # spread over two UTC days so two files are contended
            timestamp=t0 + dt.timedelta(hours=20, seconds=worker * n + i) * (1 + (i % 2)),
            model_id="m1",
            confidence=i / n,
            payload={"worker": worker, "seq": i, "pad": pad, "pad_len": len(pad)},
        )
    """
)


def test_concurrent_processes_lose_and_interleave_nothing_and_ingest_dedupes(lake: Lake, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(w), str(PER_WORKER), str(lake.root), str(gate)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for w in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(gate.glob("ready-*"))) < WORKERS:  # all imported: start them together
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        (gate / "go").touch()
        while any(p.poll() is None for p in procs):  # a reader racing the writers sees whole lines only
            racing = read_feedback_events(lake.telemetry_dir)
            assert racing.quarantine.is_empty(), racing.quarantine
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

    files = sorted(lake.telemetry_dir.glob("*.jsonl"))
    assert [f.name for f in files] == ["events_20240501.jsonl", "events_20240502.jsonl"]
    lines = all_lines(lake)
    assert len(lines) == WORKERS * PER_WORKER
    events = [json.loads(line) for line in lines]  # every line is whole, valid JSON: nothing interleaved
    assert len({e["event_id"] for e in events}) == WORKERS * PER_WORKER
    seen = {(e["payload"]["worker"], e["payload"]["seq"]) for e in events}
    assert seen == {(w, i) for w in range(WORKERS) for i in range(PER_WORKER)}
    assert all(len(e["payload"]["pad"]) == e["payload"]["pad_len"] for e in events)
    assert all(e["session_id"] == f"worker-{e['payload']['worker']}" for e in events)
    order = [e["payload"]["worker"] for e in events]
    assert sum(a != b for a, b in zip(order, order[1:], strict=False)) > WORKERS, "the workers did not actually overlap"

    # Re-emit 50 events unchanged and 50 with other content under the same ids, and append the same
    # id-less line twice: ingest keeps the first of each, once.
    originals = events[:100]
    for k, e in enumerate(originals):
        fields = {k2: v for k2, v in e.items() if k2 not in ("event_type", "session_id", "timestamp", "event_id")}
        if k % 2:
            fields["confidence"] = 0.123456
        emit_training_event(
            e["event_type"], session_id=e["session_id"], lake=lake, timestamp=e["timestamp"], event_id=e["event_id"],
            **fields,
        )
    no_id = '{"session_id":"manual","event_type":"feedback.explicit","timestamp":"2024-05-01T08:00:00Z","score":1}\n'
    with open(lake.telemetry_file(dt.date(2024, 5, 1)), "a") as fh:
        fh.write(no_id)
        fh.write(no_id.replace(",", ", "))  # same content, other spelling: same content hash

    batch = read_feedback_events(lake.telemetry_dir)
    assert batch.lines_read == WORKERS * PER_WORKER + 100 + 2
    assert batch.quarantine.is_empty(), batch.quarantine
    assert batch.duplicates_removed == 101
    assert batch.duplicate_conflicts == 50
    assert batch.events.height == WORKERS * PER_WORKER + 1
    assert batch.events["event_id"].n_unique() == batch.events.height
    by_id = {e["event_id"]: e for e in originals}
    kept = batch.events.filter(pl.col("event_id").is_in(list(by_id)))
    assert kept.height == 100
    assert (kept["confidence"] != 0.123456).all()  # the first occurrence won
    manual = batch.events.filter(pl.col("session_id") == "manual")
    assert manual.height == 1 and manual["event_id"][0] == manual["content_hash"][0]
    report = batch.report()
    assert report["events"] + report["quarantined"] + report["duplicates_removed"] == report["lines_read"]
