"""The DuckDB backend of the registry: one database file per lake, safe for many processes on one host.

DuckDB lets one process at a time open a file read-write, and while it has it open other processes
cannot even read it. So every operation takes an exclusive ``flock`` on ``<file>.lock`` (waiting up to
``lock_timeout_s``), opens the database, runs ONE transaction, closes the database and releases the
lock: processes queue on the lock for milliseconds instead of failing on DuckDB's own lock, and no
process keeps the file open between operations (a dashboard or the duckdb CLI can read it in between).

The file is created in storage format ``clm.lake.CATALOG_STORAGE_VERSION`` so that the duckdb CLI
on PyPI (1.5.x) opens it too; DuckDB keeps an existing file's format when it writes to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import fcntl
import json
import logging
import math
import numbers
import operator
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import yaml

from clm.lake import CATALOG_STORAGE_VERSION, fsync_write
from clm.models.artifacts import MANIFEST_FILE
from clm.registry import schema
from clm.registry.base import (
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
from clm.registry.schema import ColumnType

log = logging.getLogger(__name__)

HISTORY_IN_MIRROR = 200  # status changes kept in active_policy.yaml
_CAUSE = "_cause"  # the registry's own key in status_history.evidence: why a model left or reached ACTIVE
_MODEL_COLUMNS = ", ".join(f'"{c}"' for c in schema.MODEL_REGISTRY)
_HISTORY_COLUMNS = ", ".join(f'"{c}"' for c in schema.STATUS_HISTORY)
_POLARS_TYPES = {
    ColumnType.INT: pl.Int64, ColumnType.FLOAT: pl.Float64, ColumnType.TEXT: pl.String,
    ColumnType.BOOL: pl.Boolean, ColumnType.JSON: pl.String, ColumnType.TIMESTAMP: pl.Datetime("us", "UTC"),
}


@dataclass
class _Tx:
    """One open transaction: its connection, its clock, and what to do once it commits or rolls back."""

    con: duckdb.DuckDBPyConnection
    now: dt.datetime
    status_changed: bool = False
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)


class DuckDBRegistry(Registry):
    """The registry in one DuckDB file; see the module docstring for how processes share it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        artifact_root: str | os.PathLike[str] | None = None,
        active_policy_path: str | os.PathLike[str] | None = None,
        lock_timeout_s: float = 60.0,
    ):
        self.path = Path(os.path.abspath(os.path.expanduser(path)))
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.artifact_root = None if artifact_root is None else Path(os.path.abspath(os.path.expanduser(artifact_root)))
        self.active_policy_path = (
            None if active_policy_path is None else Path(os.path.abspath(os.path.expanduser(active_policy_path)))
        )
        if not (isinstance(lock_timeout_s, (int, float)) and math.isfinite(lock_timeout_s) and lock_timeout_s >= 0):
            raise RegistryError(f"lock_timeout_s must be a finite number of seconds >= 0, got {lock_timeout_s!r}")
        self.lock_timeout_s = float(lock_timeout_s)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"DuckDBRegistry({str(self.path)!r})"

    # ---- models ----------------------------------------------------------------------------------
    def register(self, model: NewModel, *, actor: str = "training") -> ModelRecord:
        _check_new_model(model)
        model_id = model.model_id
        folder = Path(os.path.abspath(os.path.expanduser(model.file_path)))
        lineage = model.lineage
        window = tuple(lineage.training_window)
        values = {
            "metrics": _to_json(model.metrics, f"metrics of {model_id}"),
            "training_config": _to_json(lineage.config, f"training config of {model_id}"),
            "training_data_range": _to_json({"start": window[0], "end": window[-1]}, "training window"),
            "lineage": _to_json(lineage.to_dict(), f"lineage of {model_id}"),
        }
        with self._transaction() as tx:
            existing = _fetch_model(tx.con, model_id)
            if existing is not None:
                if (existing.key, existing.version) != (model.key, model.version):
                    raise RegistryError(
                        f"model id {model_id} is already registered for {existing.key} version {existing.version}; "
                        f"{model.key} version {model.version} maps to the same id"
                    )
                return existing
            if not folder.is_dir():
                raise RegistryError(f"cannot register {model_id}: its artefact folder {folder} does not exist")
            current = _fetch_active(tx.con, model.key)
            status = Status.SHADOW if current is not None else Status.ACTIVE
            row = {
                "model_id": model_id, "model_type": model.model_type, "version": model.version,
                "scope": model.scope, "horizon": model.horizon, "status": status.value, **values,
                "feature_count": int(lineage.feature_count), "feature_version": lineage.feature_version,
                "created_at": tx.now, "promoted_at": tx.now if status is Status.ACTIVE else None,
                "retired_at": None, "file_path": str(folder), "file_size_bytes": _folder_size(folder),
                "artifacts_pruned": False, "notes": model.notes or "",
            }
            tx.con.execute(
                f"INSERT INTO model_registry ({_MODEL_COLUMNS}, {schema.ACTIVE_KEY_COLUMN}) "
                f"VALUES ({', '.join('?' * (len(schema.MODEL_REGISTRY) + 1))})",
                [*(row[column] for column in schema.MODEL_REGISTRY),
                 _active_key(model.key) if status is Status.ACTIVE else None],
            )
            reason = (f"registered; {model.key} had no ACTIVE model" if current is None
                      else f"registered; {current.model_id} is ACTIVE for {model.key}")
            _append_history(tx, model_id, None, status, actor=actor, reason=reason, evidence={_CAUSE: "registered"})
            _guard_one_active(tx.con)
            return _require_model(tx.con, model_id)

    def get(self, model_id: str) -> ModelRecord:
        with self._transaction() as tx:
            return _require_model(tx.con, model_id)

    def list_models(
        self,
        *,
        model_type: str | None = None,
        scope: str | None = None,
        horizon: int | None = None,
        status: Status | Sequence[Status] | None = None,
    ) -> list[ModelRecord]:
        clauses, params = [], []
        for column, value in (("model_type", model_type), ("scope", scope), ("horizon", horizon)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            wanted = [_status(s).value for s in statuses]
            clauses.append(f"status IN ({', '.join('?' * len(wanted))})" if wanted else "FALSE")
            params.extend(wanted)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction() as tx:
            rows = tx.con.execute(
                f"SELECT {_MODEL_COLUMNS} FROM model_registry {where} ORDER BY created_at DESC, model_id DESC", params
            ).fetchall()
        return [_record(row) for row in rows]

    def active(self, key: ModelKey) -> ModelRecord | None:
        with self._transaction() as tx:
            return _fetch_active(tx.con, key)

    def promote(self, model_id: str, *, note: str = "", actor: str = "cli",
                evidence: Mapping[str, Any] | None = None) -> ModelRecord:
        extra = _user_evidence(evidence)
        with self._transaction() as tx:
            record = _require_model(tx.con, model_id)
            if record.status is Status.RETIRED:
                raise InvalidTransition(
                    f"model {model_id} is RETIRED: it returns to ACTIVE only by a rollback of its key "
                    f"(`clm models rollback` for {record.key})"
                )
            check_transition(model_id, record.status, Status.ACTIVE)
            _check_artifacts(record)
            current = _fetch_active(tx.con, record.key)
            if current is not None:
                _change(tx, current, Status.RETIRED, actor=actor, reason=_reason(f"replaced by {model_id}", note),
                        evidence={_CAUSE: "replaced", "_replaced_by": model_id})
            _change(tx, record, Status.ACTIVE, actor=actor, reason=_reason("promoted", note),
                    evidence={**extra, _CAUSE: "promoted", "_replaces": current.model_id if current else None})
            _guard_one_active(tx.con)
            return _require_model(tx.con, model_id)

    def rollback(self, key: ModelKey, *, note: str = "", actor: str = "cli") -> ModelRecord:
        """The target is the model most recently *replaced by a promotion* among the key's RETIRED models with
        kept artefacts: a model that was itself rolled back from, or retired by hand, was judged bad and is
        never brought back this way, so repeated rollbacks walk back through the promotions instead of
        toggling between the last two models."""
        with self._transaction() as tx:
            current = _fetch_active(tx.con, key)
            target = _rollback_target(tx.con, key)
            if target is None:
                stays = f"; {current.model_id} stays ACTIVE" if current else ""
                raise RegistryError(
                    f"{key}: no earlier ACTIVE model to roll back to (a candidate must have been replaced by a "
                    f"promotion, not rolled back from or retired by hand, and keep its artefacts){stays}"
                )
            _check_artifacts(target)
            if current is not None:
                _change(tx, current, Status.RETIRED, actor=actor,
                        reason=_reason(f"rolled back to {target.model_id}", note),
                        evidence={_CAUSE: "rolled_back", "_rolled_back_to": target.model_id})
            _change(tx, target, Status.ACTIVE, actor=actor, reason=_reason("rollback", note),
                    evidence={_CAUSE: "rollback", "_rolled_back_from": current.model_id if current else None})
            _guard_one_active(tx.con)
            return _require_model(tx.con, target.model_id)

    def set_status(self, model_id: str, status: Status, *, note: str = "", actor: str = "cli",
                   evidence: Mapping[str, Any] | None = None) -> ModelRecord:
        target = _status(status)
        if target is Status.ACTIVE:
            return self.promote(model_id, note=note, actor=actor, evidence=evidence)
        extra = _user_evidence(evidence)
        with self._transaction() as tx:
            record = _require_model(tx.con, model_id)
            check_transition(model_id, record.status, target)
            _change(tx, record, target, actor=actor, reason=_reason(f"set to {target}", note),
                    evidence={**extra, _CAUSE: "set_status"})
            _guard_one_active(tx.con)
            return _require_model(tx.con, model_id)

    def retire(self, model_id: str, *, note: str = "", actor: str = "cli") -> ModelRecord:
        return self.set_status(model_id, Status.RETIRED, note=note, actor=actor)

    def record_decision(self, model_id: str, decision: str, *, evidence: Mapping[str, Any], actor: str,
                        note: str = "") -> StatusChange:
        if not isinstance(decision, str) or not decision.strip():
            raise RegistryError(f"decision must be a non-empty string, got {decision!r}")
        if not isinstance(actor, str) or not actor.strip():
            raise RegistryError(f"actor must be a non-empty string, got {actor!r}")
        if not isinstance(evidence, Mapping):
            raise RegistryError(f"evidence must be a mapping, got {type(evidence).__name__}")
        extra = _user_evidence(evidence)
        with self._transaction() as tx:
            record = _require_model(tx.con, model_id)
            # from == to: no status changes, so rollback targets (from ACTIVE, cause 'replaced') are unaffected
            _append_history(tx, model_id, record.status, record.status, actor=actor, reason=_reason(decision, note),
                            evidence={**extra, _CAUSE: "decision"})
            row = _first(tx.con.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM status_history WHERE model_id = ? ORDER BY event_id DESC LIMIT 1",
                [model_id]))
            return _change_record(row)

    def update_metrics(self, model_id: str, metrics: Mapping[str, Any]) -> ModelRecord:
        if not isinstance(metrics, Mapping):
            raise RegistryError(f"metrics must be a mapping, got {type(metrics).__name__}")
        update = json.loads(_to_json(metrics, f"metrics for {model_id}"))
        with self._transaction() as tx:
            record = _require_model(tx.con, model_id)
            merged = {**record.metrics, **update}
            tx.con.execute("UPDATE model_registry SET metrics = ? WHERE model_id = ?",
                           [_to_json(merged, "metrics"), model_id])
            return _require_model(tx.con, model_id)

    def history(self, model_id: str | None = None) -> list[StatusChange]:
        with self._transaction() as tx:
            if model_id is None:
                rows = tx.con.execute(f"SELECT {_HISTORY_COLUMNS} FROM status_history ORDER BY event_id").fetchall()
            else:
                _require_model(tx.con, model_id)
                rows = tx.con.execute(
                    f"SELECT {_HISTORY_COLUMNS} FROM status_history WHERE model_id = ? ORDER BY event_id", [model_id]
                ).fetchall()
        return [_change_record(row) for row in rows]

    def prune_retired(self, keep: int) -> list[ModelRecord]:
        """Folders are first renamed aside (undone if the transaction fails) and deleted only after COMMIT, so
        the records and the disk agree whatever fails; every folder is checked before any is touched."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise RegistryError(f"keep must be an integer >= 0, got {keep!r}")
        with self._transaction() as tx:
            rows = tx.con.execute(
                f"""SELECT {_MODEL_COLUMNS} FROM model_registry
                    WHERE status = 'RETIRED' AND NOT artifacts_pruned
                    QUALIFY row_number() OVER (PARTITION BY model_type, scope, horizon
                                               ORDER BY retired_at DESC, model_id DESC) > ?
                    ORDER BY model_type, scope, horizon, retired_at DESC""",
                [keep],
            ).fetchall()
            records = [_record(row) for row in rows]
            if not records:
                return []
            folders = [self._prunable_folder(record) for record in records]  # raises before anything moves
            for folder in folders:
                if folder is None:
                    continue
                aside = folder.with_name(f".pruning-{folder.name}-{uuid.uuid4().hex[:8]}")
                os.rename(folder, aside)
                tx.on_rollback.append(lambda f=folder, a=aside: os.rename(a, f))
                tx.after_commit.append(lambda a=aside: shutil.rmtree(a))
            ids = [record.model_id for record in records]
            tx.con.execute(
                f"UPDATE model_registry SET artifacts_pruned = TRUE WHERE model_id IN ({', '.join('?' * len(ids))})",
                ids,
            )
            return [_require_model(tx.con, model_id) for model_id in ids]

    def _prunable_folder(self, record: ModelRecord) -> Path | None:
        """The folder to delete, None when it is already gone; RegistryError for anything but an artefact
        folder strictly inside ``artifact_root``."""
        refuse = f"refusing to prune {record.model_id}; nothing was deleted: "
        if self.artifact_root is None:
            raise RegistryError(refuse + "this registry has no artifact_root to confine deletions to")
        folder = Path(record.file_path)
        root = self.artifact_root.resolve()
        resolved = folder.resolve()
        if folder.is_symlink() or resolved == root or not resolved.is_relative_to(root):
            raise RegistryError(refuse + f"its artefact folder {folder} is not a folder inside {root}")
        if not folder.exists():
            return None
        if not folder.is_dir() or not (folder / MANIFEST_FILE).is_file():
            raise RegistryError(refuse + f"{folder} is not an artefact folder (no {MANIFEST_FILE})")
        return folder

    # ---- operational logs ------------------------------------------------------------------------
    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        columns = _log_columns(table)
        rows = list(rows)
        if not rows:
            return 0
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise RegistryError(f"{table}: row {index} is a {type(row).__name__}, not a mapping")
            unknown = sorted(set(row) - set(columns))
            if unknown:
                raise RegistryError(
                    f"{table} has no column {', '.join(map(repr, unknown))}; its columns: {', '.join(columns)}"
                )
        id_col, time_col = schema.id_column(table), schema.LOG_TIME_COLUMNS[table]
        now = _utcnow()
        values = {
            name: [_convert(row.get(name), kind, f"{table}.{name} (row {i})") for i, row in enumerate(rows)]
            for name, kind in columns.items()
        }
        values[time_col] = [now if time_col not in row else v for row, v in zip(rows, values[time_col], strict=True)]
        with self._transaction() as tx:
            (top,) = _first(tx.con.execute(f'SELECT COALESCE(max("{id_col}"), 0) FROM {table}'))
            given = [v for v in values[id_col] if v is not None]
            next_id = max([top, *given]) + 1
            for i, value in enumerate(values[id_col]):
                if value is None:
                    values[id_col][i] = next_id
                    next_id += 1
            frame = pl.DataFrame([pl.Series(name, values[name], dtype=_POLARS_TYPES[kind])
                                  for name, kind in columns.items()])
            tx.con.register("_incoming_rows", frame)
            try:
                tx.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming_rows")
            finally:
                with contextlib.suppress(duckdb.Error):  # fails in an aborted transaction; the error above matters
                    tx.con.unregister("_incoming_rows")
        return len(rows)

    def rows(self, table: str, *, where: Mapping[str, Any] | None = None, limit: int | None = None
             ) -> list[dict[str, Any]]:
        if table not in schema.ALL_TABLES:
            raise RegistryError(f"unknown table {table!r}; tables: {', '.join(schema.ALL_TABLES)}")
        columns = schema.ALL_TABLES[table]
        clauses, params = [], []
        for name, value in (where or {}).items():
            if name not in columns:
                raise RegistryError(f"{table} has no column {name!r}; its columns: {', '.join(columns)}")
            if columns[name] is ColumnType.JSON:
                raise RegistryError(f"{table}.{name} is a JSON column: filter on it after reading")
            if value is None:
                clauses.append(f'"{name}" IS NULL')
            else:
                clauses.append(f'"{name}" = ?')
                params.append(_convert(value, columns[name], f"{table}.{name} filter"))
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise RegistryError(f"limit must be an integer >= 0, got {limit!r}")
        order = schema.ORDER_COLUMNS[table]
        tiebreak = next(iter(columns))
        selected = ", ".join(f'"{c}"' for c in columns)
        sql = (f"SELECT {selected} FROM {table}"
               f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''}"
               f' ORDER BY "{order}" DESC NULLS LAST, "{tiebreak}" DESC')
        if limit is not None:
            sql += f" LIMIT {limit}"
        with self._transaction() as tx:
            fetched = tx.con.execute(sql, params).fetchall()
        return [{name: _read(value, columns[name]) for name, value in zip(columns, row, strict=True)}
                for row in fetched]

    # ---- active_policy.yaml ----------------------------------------------------------------------
    def sync_policy_mirror(self) -> Path | None:
        """Rewrite ``active_policy.yaml`` from the database (after a crash between a commit and its mirror)."""
        if self.active_policy_path is None:
            return None
        with self._transaction() as tx:
            _write_mirror(tx.con, self.active_policy_path)
        return self.active_policy_path

    # ---- transactions ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        """Lock, open, BEGIN; COMMIT and mirror, or ROLLBACK and undo; close, unlock."""
        with self._locked() as deadline:
            con = self._connect(deadline)
            try:
                tx = _Tx(con=con, now=_utcnow())
                try:
                    con.execute("BEGIN TRANSACTION")
                    yield tx
                    con.execute("COMMIT")
                except BaseException as exc:
                    with contextlib.suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    for undo in reversed(tx.on_rollback):
                        try:
                            undo()
                        except Exception:
                            log.exception("registry %s: could not undo a step of a failed transaction", self.path)
                    if isinstance(exc, duckdb.Error):
                        raise RegistryError(f"registry {self.path}: {exc}; nothing was changed") from exc
                    raise
                for step in tx.after_commit:
                    try:
                        step()
                    except Exception:
                        log.exception("registry %s: a clean-up step after commit failed", self.path)
                policy = self.active_policy_path
                if policy is not None and (tx.status_changed or not policy.exists()):
                    try:
                        _write_mirror(con, policy)
                    except Exception:  # the database is the truth; the next change rewrites the mirror
                        log.exception("registry %s: could not rewrite %s", self.path, policy)
            finally:
                con.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[float]:
        """An exclusive flock on the lock file; yields the deadline the operation must keep to."""
        deadline = time.monotonic() + self.lock_timeout_s
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RegistryError(
                            f"registry {self.path} is busy: waited {self.lock_timeout_s:g} s for the lock file "
                            f"{self.lock_path}, held by another process; retry later or raise lock_timeout_s"
                        ) from None
                    time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
                    delay = min(delay * 2, 0.05)
            yield deadline
        finally:
            os.close(fd)  # releases the flock

    def _connect(self, deadline: float) -> duckdb.DuckDBPyConnection:
        """Open the file (creating it in the CLI-readable format); a program outside the registry that holds
        DuckDB's own lock (e.g. a duckdb CLI session) is waited for until the deadline."""
        delay = 0.01
        while True:
            try:
                if not self.path.exists():
                    self._create()
                con = duckdb.connect(str(self.path))
                break
            except duckdb.Error as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    hint = " (close the program that has it open, e.g. a duckdb CLI session)" if "lock" in str(
                        exc).lower() else ""
                    raise RegistryError(f"cannot open the registry database {self.path}{hint}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            con.execute("SET TimeZone = 'UTC'")
            if not self._schema_ready:
                _ensure_schema(con, self.path)
                self._schema_ready = True
        except BaseException as exc:
            con.close()
            if isinstance(exc, duckdb.Error):
                raise RegistryError(f"registry database {self.path} cannot be used: {exc}") from exc
            raise
        return con

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        try:
            quoted = str(self.path).replace("'", "''")
            con.execute(f"ATTACH '{quoted}' AS registry (STORAGE_VERSION '{CATALOG_STORAGE_VERSION}')")
            con.execute("DETACH registry")
        finally:
            con.close()


# ---- schema ---------------------------------------------------------------------------------------
def _ensure_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        for statement in schema.duckdb_ddl():
            con.execute(statement)
        row = _first(con.execute("SELECT value FROM registry_meta WHERE key = 'schema_version'"))
        if row is None:
            con.execute("INSERT INTO registry_meta VALUES ('schema_version', ?)", [str(schema.SCHEMA_VERSION)])
        elif int(row[0]) > schema.SCHEMA_VERSION:
            raise RegistryError(
                f"registry {path} has schema version {row[0]}, newer than this clm's {schema.SCHEMA_VERSION}: "
                "upgrade clm"
            )
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def _first(cursor: duckdb.DuckDBPyConnection) -> tuple | None:
    """The first row, reading the result to its end: duckdb 2 refuses some later calls on the connection
    (e.g. ``register``) while a result is only partly fetched."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


# ---- model rows -----------------------------------------------------------------------------------
def _fetch_model(con: duckdb.DuckDBPyConnection, model_id: str) -> ModelRecord | None:
    row = _first(con.execute(f"SELECT {_MODEL_COLUMNS} FROM model_registry WHERE model_id = ?", [model_id]))
    return None if row is None else _record(row)


def _require_model(con: duckdb.DuckDBPyConnection, model_id: str) -> ModelRecord:
    if not isinstance(model_id, str):
        raise UnknownModel(f"model id must be a string, got {model_id!r}")
    record = _fetch_model(con, model_id)
    if record is None:
        raise UnknownModel(f"unknown model id {model_id!r}: `clm models list` shows the registered ones")
    return record


def _fetch_active(con: duckdb.DuckDBPyConnection, key: ModelKey) -> ModelRecord | None:
    rows = con.execute(
        f"SELECT {_MODEL_COLUMNS} FROM model_registry "
        "WHERE status = 'ACTIVE' AND model_type = ? AND scope = ? AND horizon = ?",
        [key.model_type, key.scope, key.horizon],
    ).fetchall()
    if len(rows) > 1:  # the UNIQUE active_key makes this impossible; say so loudly if it ever is not
        raise RegistryError(f"{key} has {len(rows)} ACTIVE models: {sorted(r[0] for r in rows)}")
    return _record(rows[0]) if rows else None


def _rollback_target(con: duckdb.DuckDBPyConnection, key: ModelKey) -> ModelRecord | None:
    row = _first(con.execute(
        f"""WITH last_exit AS (
                SELECT model_id, event_id, json_extract_string(evidence, '$.{_CAUSE}') AS cause
                FROM status_history WHERE from_status = 'ACTIVE'
                QUALIFY row_number() OVER (PARTITION BY model_id ORDER BY event_id DESC) = 1
            )
            SELECT m.model_id FROM model_registry m JOIN last_exit e USING (model_id)
            WHERE m.model_type = ? AND m.scope = ? AND m.horizon = ? AND m.status = 'RETIRED'
              AND NOT m.artifacts_pruned AND e.cause = 'replaced'
            ORDER BY e.event_id DESC LIMIT 1""",
        [key.model_type, key.scope, key.horizon],
    ))
    return None if row is None else _fetch_model(con, row[0])


def _change(tx: _Tx, record: ModelRecord, to: Status, *, actor: str, reason: str, evidence: Mapping[str, Any]
            ) -> None:
    """One checked status change and its history row; the WHERE on the old status makes a stale read fail."""
    check_transition(record.model_id, record.status, to)
    sets, params = ["status = ?", f"{schema.ACTIVE_KEY_COLUMN} = ?"], [to.value, None]
    if to is Status.ACTIVE:
        params[1] = _active_key(record.key)
        sets += ["promoted_at = ?", "retired_at = NULL"]
        params.append(tx.now)
    elif to is Status.RETIRED:
        sets.append("retired_at = ?")
        params.append(tx.now)
    (updated,) = _first(tx.con.execute(
        f"UPDATE model_registry SET {', '.join(sets)} WHERE model_id = ? AND status = ?",
        [*params, record.model_id, record.status.value],
    ))
    if updated != 1:
        raise RegistryError(f"model {record.model_id} changed while {to} was being applied; nothing was changed")
    _append_history(tx, record.model_id, record.status, to, actor=actor, reason=reason, evidence=evidence)


def _append_history(tx: _Tx, model_id: str, from_status: Status | None, to: Status, *, actor: str, reason: str,
                    evidence: Mapping[str, Any]) -> None:
    tx.con.execute(
        f"INSERT INTO status_history ({_HISTORY_COLUMNS}) "
        "SELECT COALESCE(max(event_id), 0) + 1, ?, ?, ?, ?, ?, ?, ? FROM status_history",
        [model_id, None if from_status is None else from_status.value, to.value, tx.now, str(actor), str(reason),
         _to_json(evidence, "evidence")],
    )
    tx.status_changed = True


def _guard_one_active(con: duckdb.DuckDBPyConnection) -> None:
    """Checked right before COMMIT, on top of the UNIQUE active_key column: the rule must hold whatever wrote."""
    rows = con.execute(
        "SELECT model_type, scope, horizon, list(model_id ORDER BY model_id) FROM model_registry "
        "WHERE status = 'ACTIVE' GROUP BY ALL HAVING count(*) > 1"
    ).fetchall()
    if rows:
        found = "; ".join(f"{ModelKey(t, s, h)}: {ids}" for t, s, h, ids in rows)
        raise RegistryError(f"more than one ACTIVE model per key ({found}); nothing was changed")


def _check_artifacts(record: ModelRecord) -> None:
    """A model that cannot be loaded must never become the one serving loads."""
    if record.artifacts_pruned:
        raise RegistryError(f"model {record.model_id}: its artefacts were pruned, so it cannot be ACTIVE again")
    if not Path(record.file_path).is_dir():
        raise RegistryError(f"model {record.model_id}: its artefact folder {record.file_path} is missing")


def _record(row: Sequence[Any]) -> ModelRecord:
    d = dict(zip(schema.MODEL_REGISTRY, row, strict=True))
    return ModelRecord(
        model_id=d["model_id"], model_type=d["model_type"], version=d["version"], scope=d["scope"],
        horizon=int(d["horizon"]), status=Status(d["status"]), metrics=json.loads(d["metrics"]),
        training_config=json.loads(d["training_config"]), training_data_range=json.loads(d["training_data_range"]),
        feature_count=int(d["feature_count"]), feature_version=d["feature_version"],
        lineage=Lineage.from_dict(json.loads(d["lineage"])), created_at=_as_utc(d["created_at"]),
        promoted_at=_as_utc(d["promoted_at"]), retired_at=_as_utc(d["retired_at"]), file_path=d["file_path"],
        file_size_bytes=int(d["file_size_bytes"]), artifacts_pruned=bool(d["artifacts_pruned"]), notes=d["notes"],
    )


def _change_record(row: Sequence[Any]) -> StatusChange:
    d = dict(zip(schema.STATUS_HISTORY, row, strict=True))
    return StatusChange(
        event_id=int(d["event_id"]), model_id=d["model_id"],
        from_status=None if d["from_status"] is None else Status(d["from_status"]), to_status=Status(d["to_status"]),
        changed_at=_as_utc(d["changed_at"]), actor=d["actor"], reason=d["reason"], evidence=json.loads(d["evidence"]),
    )


def _write_mirror(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    active = con.execute(
        "SELECT model_type, scope, horizon, model_id, version, promoted_at, file_path FROM model_registry "
        "WHERE status = 'ACTIVE' ORDER BY model_type, scope, horizon"
    ).fetchall()
    history = con.execute(
        "SELECT changed_at, model_id, from_status, to_status, actor, reason FROM "
        f"(SELECT * FROM status_history ORDER BY event_id DESC LIMIT {HISTORY_IN_MIRROR}) ORDER BY event_id"
    ).fetchall()
    document = {
        "active": {
            str(ModelKey(model_type, scope, horizon)): {
                "model_id": model_id, "version": version, "promoted_at": _iso(promoted_at), "file_path": file_path,
            }
            for model_type, scope, horizon, model_id, version, promoted_at, file_path in active
        },
        "history": [
            {"at": _iso(at), "model_id": model_id, "from": from_status, "to": to_status, "actor": actor,
             "reason": reason}
            for at, model_id, from_status, to_status, actor, reason in history
        ],
    }
    fsync_write(path, yaml.safe_dump(document, sort_keys=True, default_flow_style=False, allow_unicode=True).encode())


# ---- values ---------------------------------------------------------------------------------------
def _check_new_model(model: NewModel) -> None:
    if not isinstance(model, NewModel):
        raise RegistryError(f"register takes a NewModel, got {type(model).__name__}")
    for name in ("model_type", "version", "scope", "file_path"):
        value = getattr(model, name)
        if not isinstance(value, str) or not value.strip():
            raise RegistryError(f"NewModel.{name} must be a non-empty string, got {value!r}")
    if isinstance(model.horizon, bool) or not isinstance(model.horizon, int) or model.horizon <= 0:
        raise RegistryError(f"NewModel.horizon must be a positive integer (bars), got {model.horizon!r}")
    if not isinstance(model.lineage, Lineage):
        raise RegistryError(f"NewModel.lineage must be a Lineage, got {type(model.lineage).__name__}")
    if len(tuple(model.lineage.training_window)) != 2:
        raise RegistryError(f"lineage.training_window must be (first, last), got {model.lineage.training_window!r}")


def _active_key(key: ModelKey) -> str:
    """Unambiguous whatever the scope contains (symbols such as BTC/USD have slashes)."""
    return json.dumps([key.model_type, key.scope, key.horizon])


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise RegistryError(f"unknown status {value!r}; statuses: {', '.join(Status)}") from None


def _reason(default: str, note: str) -> str:
    return f"{default}: {note}" if note else default


def _user_evidence(evidence: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller evidence, JSON-checked now (before the lock); keys starting with '_' are the registry's own."""
    if evidence is None:
        return {}
    if not isinstance(evidence, Mapping):
        raise RegistryError(f"evidence must be a mapping, got {type(evidence).__name__}")
    plain = json.loads(_to_json(evidence, "evidence"))
    return {k: v for k, v in plain.items() if not k.startswith("_")}


def _log_columns(table: str) -> Mapping[str, ColumnType]:
    if table not in schema.LOG_TABLES:
        raise RegistryError(f"unknown log table {table!r}; log tables: {', '.join(schema.LOG_TABLES)}")
    return schema.LOG_TABLES[table]


def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else _as_utc(value).isoformat()


def _plain(value: Any) -> Any:
    """JSON-ready Python: numpy scalars and arrays, dates, paths and enums become plain values; NaN/inf null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if type(value).__module__.split(".")[0] == "numpy" and hasattr(value, "tolist"):
        return _plain(value.tolist())
    raise TypeError(f"{type(value).__name__} value {value!r} has no JSON form")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(_plain(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} cannot be stored as JSON: {exc}") from None


def _convert(value: Any, kind: ColumnType, what: str) -> Any:
    """A caller's value as the column's Python type; anything lossy or ambiguous is refused, naming the column."""
    if value is None:
        return None
    if kind is ColumnType.JSON:
        return _to_json(value, what)
    if kind is ColumnType.TEXT:
        if isinstance(value, str):
            return str(value.value) if isinstance(value, enum.Enum) else value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
    elif kind is ColumnType.BOOL:
        if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":
            return bool(value)
    elif kind is ColumnType.INT:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return operator.index(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
    elif kind is ColumnType.FLOAT:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif kind is ColumnType.TIMESTAMP:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise RegistryError(f"{what}: {value!r} is not an ISO 8601 timestamp") from None
        if isinstance(value, dt.datetime):
            return _as_utc(value)  # naive timestamps are taken as UTC
    raise RegistryError(f"{what}: expected {kind}, got {type(value).__name__} {value!r}")


def _read(value: Any, kind: ColumnType) -> Any:
    if value is None:
        return None
    if kind is ColumnType.JSON:
        return json.loads(value)
    if kind is ColumnType.TIMESTAMP:
        return _as_utc(value)
    return value
