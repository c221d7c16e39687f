"""The signal folders the sensors watch: which files are new, which are valid, and why the others are not.

Folders and names (anything else in them is rejected):

* ``signals/drift/drift_<YYYYmmddTHHMMSSffffff>Z.json``: ``clm.drift.signals`` schema.
* ``signals/performance/performance_<YYYYmmddTHHMMSSffffff>Z.json``: the same schema, ``drift_type``
  ``performance`` (``clm.supervision`` writes them for DEGRADED or CRITICAL champions).
* ``signals/regime/regime_<YYYYmmddTHHMMSS>Z.json``: ``clm.regimes.market`` schema
  ``{"at", "confidence", "from", "symbols", "to"}`` (``parse_regime_signal``).

A file is read once it has a cursor entry ``<kind>/<name> -> mtime_ns:size:sha256[:16]``: an untouched
file is skipped on its ``lstat`` alone, a touched one with the same bytes is not new. Hidden names
(``.drift_...tmp``: a writer's temporary file before its rename) are left alone. A symbolic link, a
folder, an empty, oversized, unreadable, malformed or wrongly named file is reported with a reason;
the caller moves it to ``signals/rejected/<kind>/`` (``reject_signal``) and carries on.

A signal's ``run_key`` is its kind, name and content hash: a daemon restarted with a fresh cursor
derives the same keys, and Dagster launches at most one run per key and sensor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clm.checks import utc_timestamp
from clm.data.landing import reject_file
from clm.drift.detector import Severity
from clm.drift.signals import FILE_NAME as DRIFT_FILE_NAME
from clm.drift.signals import SIGNAL_KIND as DRIFT_KIND
from clm.drift.signals import DriftSignal, parse_drift_signal
from clm.lake import Lake
from clm.regimes.config import CLASSES
from clm.regimes.market import SIGNAL_KEYS as REGIME_KEYS
from clm.regimes.market import SIGNAL_PREFIX as REGIME_PREFIX
from clm.regimes.market import signal_name as regime_signal_name
from clm.supervision.health import SIGNAL_KIND as PERFORMANCE_KIND
from clm.supervision.health import SIGNAL_PREFIX as PERFORMANCE_PREFIX

REGIME_KIND = "regime"
REJECTED_KIND = "rejected"  # lake.signals_dir(REJECTED_KIND): signals/rejected/<kind>/<name> (+ .reason.txt)
MAX_SIGNAL_BYTES = 1 << 20  # a drift file with every feature's statistics is tens of KB

# kind -> (prefix, full-name pattern, the name as a reader should see it)
NAME_RULES: Mapping[str, tuple[str, re.Pattern[str], str]] = {
    DRIFT_KIND: ("drift_", DRIFT_FILE_NAME, "drift_<YYYYmmddTHHMMSSffffff>Z.json"),
    PERFORMANCE_KIND: (PERFORMANCE_PREFIX, re.compile(rf"^{PERFORMANCE_PREFIX}(\d{{8}}T\d{{12}}Z)\.json$"),
                       f"{PERFORMANCE_PREFIX}<YYYYmmddTHHMMSSffffff>Z.json"),
    REGIME_KIND: (REGIME_PREFIX, re.compile(rf"^{REGIME_PREFIX}(\d{{8}}T\d{{6}}Z)\.json$"),
                  f"{REGIME_PREFIX}<YYYYmmddTHHMMSS>Z.json"),
}
DRIFT_KINDS = (DRIFT_KIND, PERFORMANCE_KIND)


@dataclass(frozen=True)
class RegimeSignal:
    """A validated regime-change file."""

    from_regime: str | None  # None: the first regime after the warm-up, not a change
    to_regime: str
    at: dt.datetime
    confidence: float | None
    symbols: tuple[str, ...]
    path: Path

    @property
    def change(self) -> str:
        return f"{self.from_regime or 'none'}->{self.to_regime}"


@dataclass(frozen=True)
class SignalFile:
    """One new, valid signal file and what it says."""

    kind: str
    name: str
    digest: str  # sha256 of the bytes
    signal: DriftSignal | RegimeSignal

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def relative(self) -> str:
        """The path the run tags name, relative to the lake root."""
        return f"signals/{self.kind}/{self.name}"

    @property
    def run_key(self) -> str:
        return f"{self.kind}:{self.name.removesuffix('.json')}:{self.digest[:16]}"

    @property
    def at(self) -> dt.datetime:
        return self.signal.at if isinstance(self.signal, RegimeSignal) else self.signal.detected_at


@dataclass
class SignalScan:
    signals: list[SignalFile]  # oldest first
    rejected: dict[str, str] = field(default_factory=dict)  # <kind>/<name> -> reason
    cursor: dict[str, str] = field(default_factory=dict)
    previous: dict[str, str] = field(default_factory=dict)  # the cursor it started from, pruned to present files


# ---- validation ------------------------------------------------------------------------------------


def parse_regime_signal(payload: Any, path: Path | str = "<signal>") -> RegimeSignal:
    """Validate a regime file's content (``clm.regimes.market`` schema); ``ValueError`` names the field."""
    path = Path(path)
    try:
        if not isinstance(payload, Mapping):
            raise ValueError(f"a regime signal is a JSON object, got {type(payload).__name__}")
        missing = [k for k in REGIME_KEYS if k not in payload]
        unknown = sorted(set(payload) - set(REGIME_KEYS))
        if missing or unknown:
            what = f"{missing[0]}: missing field" if missing else f"{unknown[0]}: unknown field"
            raise ValueError(f"{what} (a regime signal has {', '.join(REGIME_KEYS)})")
        to, source = payload["to"], payload["from"]
        if to not in CLASSES:
            raise ValueError(f"to: must be one of {', '.join(CLASSES)}, got {to!r}")
        if source is not None and source not in CLASSES:
            raise ValueError(f"from: must be null or one of {', '.join(CLASSES)}, got {source!r}")
        if source == to:
            raise ValueError(f"from and to are both {to!r}: not a change")
        at = utc_timestamp(payload["at"], "at")
        if NAME_RULES[REGIME_KIND][1].match(path.name) and regime_signal_name(at) != path.name:
            raise ValueError(f"at: {payload['at']} does not match the file name {path.name}")
        confidence = payload["confidence"]
        if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                                       or not math.isfinite(confidence) or not 0 <= confidence <= 1):
            raise ValueError(f"confidence: must be null or a number in [0, 1], got {confidence!r}")
        symbols = payload["symbols"]
        if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
            raise ValueError(f"symbols: must be a list of symbol names, got {symbols!r}")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return RegimeSignal(source, to, at, None if confidence is None else float(confidence), tuple(symbols), path)


def parse_signal(kind: str, payload: Any, path: Path) -> DriftSignal | RegimeSignal:
    """The kind's schema check. A drift or performance file graded LOW (the detector writes none below
    MEDIUM, an operator may) is otherwise held to the same schema and comes back as LOW: logged, no run."""
    if kind == REGIME_KIND:
        return parse_regime_signal(payload, path)
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown signal kind {kind!r}; kinds: {', '.join(NAME_RULES)}")
    low = isinstance(payload, Mapping) and payload.get("severity") == str(Severity.LOW)
    signal = parse_drift_signal({**payload, "severity": str(Severity.MEDIUM)} if low else payload, path)
    if kind == PERFORMANCE_KIND and signal.drift_types != ("performance",):
        raise ValueError(f"{path}: drift_type: a file in signals/performance/ says 'performance', "
                         f"got {signal.drift_type!r}")
    return dataclasses.replace(signal, severity=Severity.LOW) if low else signal


def _name_problem(kind: str, name: str) -> str | None:
    prefix, pattern, shape = NAME_RULES[kind]
    if pattern.match(name):
        return None
    if not name.startswith(prefix):
        return f"unknown prefix: files in signals/{kind}/ are named {shape}, got {name!r}"
    return f"bad name: expected {shape}, got {name!r}"


def _read_capped(path: Path) -> bytes:
    """The file's bytes, refusing to follow a link swapped in after the scan and to read past the cap."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_SIGNAL_BYTES + 1)


def check_file(kind: str, path: Path) -> tuple[bytes, DriftSignal | RegimeSignal]:
    """Every check of one entry of a signal folder; ``ValueError`` says what is wrong with it."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise ValueError("a symbolic link: signal files must be regular files written into the folder "
                         "(links could point anywhere, e.g. outside the lake)")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file (a folder or special file): signal folders hold flat files only")
    problem = _name_problem(kind, path.name)
    if problem:
        raise ValueError(problem)
    if info.st_size == 0:
        raise ValueError("empty file")
    if info.st_size > MAX_SIGNAL_BYTES:
        raise ValueError(f"oversized: {info.st_size} bytes, the limit is {MAX_SIGNAL_BYTES}")
    try:
        data = _read_capped(path)
    except OSError as exc:
        raise ValueError(f"unreadable: {exc}") from None
    if not data:
        raise ValueError("empty file")
    if len(data) > MAX_SIGNAL_BYTES:
        raise ValueError(f"oversized: more than {MAX_SIGNAL_BYTES} bytes")
    try:
        payload = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid JSON: not UTF-8 ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    try:
        return data, parse_signal(kind, payload, path)
    except ValueError as exc:
        raise ValueError(f"schema: {str(exc).removeprefix(f'{path}: ')}") from None


# ---- scanning -------------------------------------------------------------------------------------
def _stamp(info: os.stat_result) -> str:
    return f"{info.st_mtime_ns}:{info.st_size}"


def scan_signals(lake: Lake, kinds: Iterable[str], cursor: Mapping[str, str]) -> SignalScan:
    """New or changed valid files of ``kinds`` since ``cursor`` (oldest first), and the rejected ones.

    The returned cursor covers every valid file present; entries of files gone (moved, deleted) are
    dropped, so it stays as large as the folders are.
    """
    signals: list[SignalFile] = []
    rejected: dict[str, str] = {}
    new_cursor: dict[str, str] = {}
    previous: dict[str, str] = {}
    for kind in kinds:
        if kind not in NAME_RULES:
            raise ValueError(f"unknown signal kind {kind!r}; kinds: {', '.join(NAME_RULES)}")
        folder = lake.signals_dir(kind)
        if not folder.is_dir():
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith("."):
                continue  # a writer's temporary file, renamed into place when complete
            key, path = f"{kind}/{name}", folder / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            seen = cursor.get(key)
            if seen is not None:
                previous[key] = seen
            if seen is not None and stat.S_ISREG(info.st_mode) and seen.rsplit(":", 1)[0] == _stamp(info):
                new_cursor[key] = seen
                continue
            try:
                data, signal = check_file(kind, path)
            except FileNotFoundError:
                continue
            except ValueError as exc:
                rejected[key] = str(exc)
                continue
            digest = hashlib.sha256(data).hexdigest()
            new_cursor[key] = f"{_stamp(info)}:{digest[:16]}"
            if seen is not None and seen.rsplit(":", 1)[-1] == digest[:16]:
                continue  # touched, same bytes: not a new signal
            signals.append(SignalFile(kind, name, digest, signal))
    signals.sort(key=lambda s: (s.at, s.kind, s.name))
    return SignalScan(signals, rejected, new_cursor, previous)


def reject_signal(lake: Lake, key: str, reason: str) -> Path:
    """Move ``<kind>/<name>`` to ``signals/rejected/<kind>/<name>`` with ``<name>.reason.txt`` beside it."""
    kind, _, name = key.partition("/")
    if kind not in NAME_RULES or not name or "/" in name:
        raise ValueError(f"not a signal file key: {key!r}")
    return reject_file(lake.signals_dir(kind), lake.signals_dir(REJECTED_KIND) / kind, name, reason)


def load_cursor(text: str | None) -> dict[str, str]:
    """A sensor cursor as saved by ``dump_cursor``; anything unreadable starts afresh (run keys dedupe)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def dump_cursor(cursor: Mapping[str, str]) -> str:
    return json.dumps(dict(cursor), sort_keys=True, separators=(",", ":"))
