"""The registry's tables, written once as backend-neutral column specs (name -> type).

Backends derive their DDL from these specs (``duckdb_ddl`` here; a PostgreSQL backend maps the same
types to its own), and ``Registry.append``/``rows`` validate table and column names against them, so a
log table has one definition whichever database holds it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class ColumnType(enum.StrEnum):
    INT = "int"  # 64-bit integer
    FLOAT = "float"  # 64-bit float
    TEXT = "text"
    BOOL = "bool"
    JSON = "json"  # any JSON value; callers pass Python objects, ``rows`` returns them parsed
    TIMESTAMP = "timestamp"  # an instant, stored and returned in UTC


_I, _F, _T, _B, _J, _TS = (ColumnType.INT, ColumnType.FLOAT, ColumnType.TEXT, ColumnType.BOOL, ColumnType.JSON,
                           ColumnType.TIMESTAMP)

Columns = Mapping[str, ColumnType]

MODEL_REGISTRY: Columns = MappingProxyType({
    "model_id": _T, "model_type": _T, "version": _T, "scope": _T, "horizon": _I, "status": _T,
    "metrics": _J, "training_config": _J, "training_data_range": _J, "feature_count": _I, "feature_version": _T,
    "lineage": _J, "created_at": _TS, "promoted_at": _TS, "retired_at": _TS, "file_path": _T, "file_size_bytes": _I,
    "artifacts_pruned": _B, "notes": _T,
})

STATUS_HISTORY: Columns = MappingProxyType({
    "event_id": _I, "model_id": _T, "from_status": _T, "to_status": _T, "changed_at": _TS, "actor": _T, "reason": _T,
    "evidence": _J,
})

# Operational logs. The first column of each is its integer id, assigned (max + 1) when a row has none.
LOG_TABLES: Mapping[str, Columns] = MappingProxyType({
    "retraining_jobs": MappingProxyType({
        "job_id": _I, "job_type": _T, "trigger_reason": _T, "status": _T, "started_at": _TS, "ended_at": _TS,
        "duration_s": _F, "models_trained": _J, "error": _T, "run_id": _T, "tags": _J,
    }),
    "drift_events": MappingProxyType({
        "event_id": _I, "detected_at": _TS, "severity": _T, "drift_type": _T, "features": _J, "statistics": _J,
        "model_types": _J, "signal_file": _T,
    }),
    "shadow_test_results": MappingProxyType({
        "result_id": _I, "champion_id": _T, "challenger_id": _T, "symbol": _T, "timestamp": _TS, "horizon": _I,
        "champion_prediction": _F, "challenger_prediction": _F,
        "champion_signal": _F, "challenger_signal": _F,  # signed position, e.g. -1, 0, +1
        "outcome_return": _F, "champion_net_return": _F, "challenger_net_return": _F, "closed_at": _TS,
        "recorded_at": _TS,
    }),
    "model_performance_logs": MappingProxyType({
        "log_id": _I, "model_id": _T, "logged_at": _TS, "win_rate": _F, "calibration_error": _F, "long_short_ratio": _F,
        "latency_p50_ms": _F, "latency_p95_ms": _F, "latency_p99_ms": _F, "coverage": _F, "health": _T, "details": _J,
    }),
    "rl_versions": MappingProxyType({
        "version_id": _I, "agent": _T, "version": _T, "status": _T, "created_at": _TS, "parent_version": _T,
        "reason": _T,
        "file_path": _T, "sha256": _T, "epsilon": _F, "metrics": _J,
    }),
})

# When a row leaves this column out, ``append`` stamps it with the time of the append.
LOG_TIME_COLUMNS: Mapping[str, str] = MappingProxyType({
    "retraining_jobs": "started_at",
    "drift_events": "detected_at",
    "shadow_test_results": "recorded_at",
    "model_performance_logs": "logged_at",
    "rl_versions": "created_at",
})

REGISTRY_TABLES: Mapping[str, Columns] = MappingProxyType({
    "model_registry": MODEL_REGISTRY, "status_history": STATUS_HISTORY,
})
ALL_TABLES: Mapping[str, Columns] = MappingProxyType({**REGISTRY_TABLES, **LOG_TABLES})

# The column each table's rows are ordered by, newest first (``Registry.rows``).
ORDER_COLUMNS: Mapping[str, str] = MappingProxyType({
    "model_registry": "created_at", "status_history": "event_id",
    **{table: next(iter(columns)) for table, columns in LOG_TABLES.items()},
})

SCHEMA_VERSION = 1


def id_column(table: str) -> str:
    return next(iter(LOG_TABLES[table]))


# ---- DuckDB ---------------------------------------------------------------------------------------
DUCKDB_TYPES: Mapping[ColumnType, str] = MappingProxyType({
    ColumnType.INT: "BIGINT", ColumnType.FLOAT: "DOUBLE", ColumnType.TEXT: "VARCHAR", ColumnType.BOOL: "BOOLEAN",
    ColumnType.JSON: "JSON", ColumnType.TIMESTAMP: "TIMESTAMPTZ",
})

_NOT_NULL = {
    "model_registry": set(MODEL_REGISTRY) - {"promoted_at", "retired_at", "feature_version"},
    "status_history": set(STATUS_HISTORY) - {"from_status"},
}
_STATUSES = "('TRAINING', 'SHADOW', 'ACTIVE', 'RETIRED', 'REJECTED')"

# DuckDB has no partial unique index (CREATE UNIQUE INDEX ... WHERE fails with "Creating partial indexes is
# not supported"), so the one-ACTIVE-per-key rule is a UNIQUE column that holds the key while the model is
# ACTIVE and NULL otherwise (NULLs never collide); the CHECK keeps the column and the status in step.
ACTIVE_KEY_COLUMN = "active_key"


def _columns_sql(table: str, columns: Columns) -> list[str]:
    not_null = _NOT_NULL.get(table, set())
    return [f'"{name}" {DUCKDB_TYPES[kind]}' + (" NOT NULL" if name in not_null else "")
            for name, kind in columns.items()]


def duckdb_ddl() -> list[str]:
    """``CREATE ... IF NOT EXISTS`` statements for every table, so running them on any version-1 file is a no-op."""
    model_registry = _columns_sql("model_registry", MODEL_REGISTRY) + [
        f"{ACTIVE_KEY_COLUMN} VARCHAR UNIQUE",
        "PRIMARY KEY (model_id)",
        f"CHECK (status IN {_STATUSES})",
        f"CHECK ((status = 'ACTIVE') = ({ACTIVE_KEY_COLUMN} IS NOT NULL))",
        "CHECK (horizon > 0)",
    ]
    status_history = _columns_sql("status_history", STATUS_HISTORY) + [
        "PRIMARY KEY (event_id)",
        f"CHECK (to_status IN {_STATUSES})",
        f"CHECK (from_status IS NULL OR from_status IN {_STATUSES})",
    ]
    statements = [
        "CREATE TABLE IF NOT EXISTS registry_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
        "CREATE TABLE IF NOT EXISTS model_registry (\n    " + ",\n    ".join(model_registry) + "\n)",
        "CREATE TABLE IF NOT EXISTS status_history (\n    " + ",\n    ".join(status_history) + "\n)",
    ]
    for table, columns in LOG_TABLES.items():
        body = _columns_sql(table, columns) + [f"PRIMARY KEY ({id_column(table)})"]
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} (\n    " + ",\n    ".join(body) + "\n)")
    return statements
