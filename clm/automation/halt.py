"""The trading halt: ``<lake>/signals/halt.json``. While it exists ``Champion.predict`` raises ``TradingHalted``
quoting its ``reason`` (``clm.serving.champion.halt_reason`` is the one reader of that reason).

Written atomically (a reader sees the whole file or none) before the run a CRITICAL signal asks for is
requested, so no trade slips through while the retrain is queued. Only an operator (or ``clear_halt``)
removes it: a retrain does not prove the cause is gone.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clm.lake import Lake, fsync_write
from clm.serving.champion import halt_reason


def _payload(lake: Lake) -> dict[str, Any]:
    try:
        value = json.loads(lake.halt_path.read_text())
    except (OSError, ValueError):
        return {}
    return dict(value) if isinstance(value, Mapping) else {}


def read_halt(lake: Lake) -> dict[str, Any] | None:
    """The halt file's content with its ``reason`` as serving reads it, or None when trading is not halted."""
    reason = halt_reason(lake)
    if reason is None:
        return None
    return {**_payload(lake), "reason": reason, "path": str(lake.halt_path)}


def write_halt(lake: Lake, reason: str, *, source: str, details: Mapping[str, Any] | None = None,
               at: dt.datetime | None = None) -> Path:
    """Halt trading (atomically). A halt already in place is kept inside the new one as ``previous``."""
    if not reason or not reason.strip():
        raise ValueError("a halt needs a reason an operator can act on")
    written = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    payload: dict[str, Any] = {
        "reason": reason.strip(),
        "source": source,
        "written_at": written.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "details": dict(details or {}),
        "clear": "delete this file (or clm.automation.clear_halt) once the cause is resolved",
    }
    earlier = read_halt(lake)
    if earlier is not None:
        earlier.pop("previous", None)  # one level: the file stays small however often it is re-halted
        earlier.pop("path", None)
        payload["previous"] = earlier
    fsync_write(lake.halt_path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())
    return lake.halt_path


def clear_halt(lake: Lake) -> bool:
    """Resume trading: remove the halt file. True when there was one."""
    try:
        lake.halt_path.unlink()
    except FileNotFoundError:
        return False
    return True
