"""Recording a drift check: one ``drift_events`` row every time, and a signal file from MEDIUM up.

The signal file is what the sensors watch. Its path is
``<lake>/signals/drift/drift_<detected_at as YYYYmmddTHHMMSSffffff>Z.json`` (UTC, microseconds), so
one check always names the same file: recording the same report again is a no-op, and a different
report never replaces a file (``FileExistsError``). It is written atomically (temporary file, fsync,
then a hard link to the final name, which cannot overwrite), as sorted-key JSON with exactly these keys:

    {
      "severity":    "MEDIUM" | "HIGH" | "CRITICAL",
      "drift_type":  "feature" | "prediction" | "performance", or several comma-joined in that
                     order, e.g. "feature,performance",
      "features":    [str, ...]   the drifting features (empty when only predictions/performance drifted),
      "statistics":  {            JSON object:
          "drift_share": number | null,  drifting / tested features (null: none had enough data),
          "features_tested": int, "features_drifting": int, "features_insufficient": [str, ...],
          "features": {name: {"n_reference", "n_recent", "missing_reference", "missing_recent",
                              "ks_statistic", "ks_p_value", "ks_method", "psi", "psi_bins",
                              "drifting", "reason"}}   (the drifting features only),
          "prediction": null | {"fired", "drifting", "columns": {column: same keys as a feature}},
          "performance": null | {"n_reference", "n_recent", "hit_rate_reference", "hit_rate_recent",
                                 "hit_rate_drop", "hit_rate_z", "hit_rate_p_value", "hit_rate_fired",
                                 "pnl_mean_reference", "pnl_std_reference", "pnl_mean_recent",
                                 "cusum_max", "cusum_alarm_at", "cusum_fired", "fired", "reason"},
          "severities": {drift type: severity},  "windows": {"reference": [start, end] | null,
          "recent": [start, end] | null},  "thresholds": {...}
      },
      "model_types": [str, ...]   the model types the caller said the drift affects,
      "detected_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ"   (ISO 8601, UTC)
    }

``load_drift_signal`` checks that schema strictly and raises ``ValueError`` naming the field.
The ``drift_events`` row holds the same fields, with ``statistics`` for every feature (not only the
drifting ones) and ``signal_file`` (null below MEDIUM).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clm.checks import utc_timestamp
from clm.drift.detector import DRIFT_TYPES, DriftReport, Severity
from clm.lake import Lake, fsync_write
from clm.registry.base import Registry

SIGNAL_KIND = "drift"
SIGNAL_KEYS = ("severity", "drift_type", "features", "statistics", "model_types", "detected_at")
SIGNAL_SEVERITIES = (Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
FILE_STAMP = "%Y%m%dT%H%M%S%fZ"
FILE_NAME = re.compile(r"^drift_(\d{8}T\d{12}Z)\.json$")


@dataclass(frozen=True)
class DriftSignal:
    """A validated signal file."""

    severity: Severity
    drift_types: tuple[str, ...]
    features: tuple[str, ...]
    statistics: Mapping[str, Any]
    model_types: tuple[str, ...]
    detected_at: dt.datetime
    path: Path

    @property
    def drift_type(self) -> str:
        return ",".join(self.drift_types)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"detected_at {value} has no time zone")
    return value.astimezone(dt.UTC)


def format_detected_at(value: dt.datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signal_filename(detected_at: dt.datetime) -> str:
    return f"drift_{_utc(detected_at).strftime(FILE_STAMP)}.json"


def signal_payload(report: DriftReport) -> dict[str, Any]:
    """The signal file's content (the documented keys, nothing else)."""
    return {
        "severity": str(report.severity),
        "drift_type": report.drift_type,
        "features": report.drifting_features,
        "statistics": report.statistics(drifting_only=True),
        "model_types": list(report.model_types),
        "detected_at": format_detected_at(report.detected_at),
    }


def _encode(payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _publish(path: Path, data: bytes) -> None:
    """Atomically create ``path`` with ``data``; the same bytes already there is fine, other bytes are refused."""

    def check_existing() -> None:
        if path.read_bytes() != data:
            raise FileExistsError(f"{path} already exists with different content: a drift signal is never replaced")

    if path.exists():
        check_existing()
        return
    try:
        fsync_write(path, data, exclusive=True)  # never overwrites
    except FileExistsError:
        check_existing()


def write_drift_signal(lake: Lake, report: DriftReport) -> Path:
    """Write the report's signal file (any severity; ``record_drift`` calls it from MEDIUM up)."""
    path = lake.signals_dir(SIGNAL_KIND) / signal_filename(report.detected_at)
    _publish(path, _encode(signal_payload(report)))
    return path


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))


def record_drift(registry: Registry, lake: Lake, report: DriftReport) -> tuple[int, Path | None]:
    """Append the check's ``drift_events`` row and, from MEDIUM up, write its signal file first (so a
    row never names a missing file). Recording the same report again returns the existing row."""
    path = write_drift_signal(lake, report) if report.severity >= Severity.MEDIUM else None
    row = {
        "detected_at": _utc(report.detected_at),
        "severity": str(report.severity),
        "drift_type": report.drift_type,
        "features": report.drifting_features,
        "statistics": _jsonable(report.statistics()),
        "model_types": list(report.model_types),
        "signal_file": str(path) if path is not None else None,
    }
    for existing in registry.rows("drift_events", where={"detected_at": row["detected_at"]}):
        if all(existing[k] == row[k] for k in row if k != "detected_at"):
            return int(existing["event_id"]), path
    registry.append("drift_events", [row])
    (stored,) = registry.rows("drift_events", where={"detected_at": row["detected_at"]}, limit=1)
    return int(stored["event_id"]), path


# ---- reading ------------------------------------------------------------------------------------
def _string_list(payload: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = payload[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: must be a list of strings, got {value!r}")
    return tuple(value)


def parse_drift_signal(payload: Any, path: Path | str = "<signal>") -> DriftSignal:
    """Validate a signal's content against the documented schema; ``ValueError`` names the field."""
    path = Path(path)
    if not isinstance(payload, Mapping):
        raise ValueError(f"{path}: a drift signal is a JSON object, got {type(payload).__name__}")
    missing = [k for k in SIGNAL_KEYS if k not in payload]
    unknown = sorted(set(payload) - set(SIGNAL_KEYS))
    if missing:
        raise ValueError(f"{path}: {missing[0]}: missing field (a drift signal has {', '.join(SIGNAL_KEYS)})")
    if unknown:
        raise ValueError(f"{path}: {unknown[0]}: unknown field (a drift signal has {', '.join(SIGNAL_KEYS)})")
    try:
        severity = payload["severity"]
        if severity not in {str(s) for s in SIGNAL_SEVERITIES}:
            raise ValueError(f"severity: must be one of {', '.join(map(str, SIGNAL_SEVERITIES))}, got {severity!r}")
        drift_type = payload["drift_type"]
        if not isinstance(drift_type, str) or not drift_type:
            raise ValueError(f"drift_type: must be a non-empty string, got {drift_type!r}")
        types = tuple(drift_type.split(","))
        if any(t not in DRIFT_TYPES for t in types) or len(set(types)) != len(types):
            raise ValueError(f"drift_type: must be distinct names from {', '.join(DRIFT_TYPES)} joined by ',', "
                             f"got {drift_type!r}")
        features = _string_list(payload, "features")
        model_types = _string_list(payload, "model_types")
        statistics = payload["statistics"]
        if not isinstance(statistics, Mapping):
            raise ValueError(f"statistics: must be an object, got {type(statistics).__name__}")
        detected_at = utc_timestamp(payload["detected_at"], "detected_at")
        named = FILE_NAME.match(path.name)
        if named and named.group(1) != detected_at.strftime(FILE_STAMP):
            raise ValueError(f"detected_at: {payload['detected_at']} does not match the file name {path.name}")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return DriftSignal(Severity(severity), types, features, statistics, model_types, detected_at, path)


def load_drift_signal(path: str | os.PathLike[str]) -> DriftSignal:
    """Read and validate a signal file (the sensors' entry point)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    return parse_drift_signal(payload, path)
