"""The model registry: which models exist, which one is ACTIVE per key, and the operational logs.

``open_registry(lake)`` is how callers get one; they program against ``Registry`` (``clm.registry.base``)
and never against a database, so the backend is a deployment choice (a URL), not a code change.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from clm.lake import Lake
from clm.registry.base import (
    POOLED,
    TRANSITIONS,
    InvalidTransition,
    Lineage,
    ModelKey,
    ModelRecord,
    NewModel,
    Registry,
    RegistryError,
    Status,
    StatusChange,
    UnknownModel,
    check_transition,
)
from clm.registry.duckdb_store import DuckDBRegistry
from clm.registry.schema import LOG_TABLES, ColumnType

__all__ = [
    "LOG_TABLES",
    "POOLED",
    "TRANSITIONS",
    "ColumnType",
    "DuckDBRegistry",
    "InvalidTransition",
    "Lineage",
    "ModelKey",
    "ModelRecord",
    "NewModel",
    "Registry",
    "RegistryError",
    "Status",
    "StatusChange",
    "UnknownModel",
    "check_transition",
    "open_registry",
]


def open_registry(lake: Lake, url: str | None = None) -> Registry:
    """The lake's registry: its own DuckDB file unless ``url`` names another database.

    ``duckdb:///abs/path.duckdb`` moves only the database; artefacts and ``active_policy.yaml`` stay the
    lake's. Other schemes (``postgresql://`` for multi-host deployments) are refused until their backend exists.
    """
    options = {"artifact_root": lake.root / "models", "active_policy_path": lake.active_policy_path}
    if not url:
        return DuckDBRegistry(lake.registry_path, **options)
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "duckdb":
        path = unquote(parsed.path)
        if parsed.netloc or not path.startswith("/") or path == "/":
            raise RegistryError(
                f"registry URL {url!r}: a DuckDB URL names an absolute file path, "
                "e.g. duckdb:///srv/clm/registry.duckdb"
            )
        return DuckDBRegistry(path, **options)
    raise RegistryError(
        f"registry backend {scheme or url!r} is not available yet: only DuckDB is (leave the registry URL empty "
        "for the lake's own file, or use duckdb:///absolute/path.duckdb)"
    )
