"""Versioned RL snapshots, resets and their ``rl_versions`` rows.

Layout under the policies folder (the lake's ``policies_dir``; this module takes any ``Path``):

    <dir>/<agent>/v0001/            an immutable version: the agent's files + manifest.json (sha256 of each)
    <dir>/<agent>/working-<id>/     the latest working copy (between snapshots), named by working.json
    <dir>/<agent>/working.json      {"folder": ..., "based_on": <version>}, replaced atomically

Beside the agent's own files, a folder holds ``online.json`` when the agent has an online state (the
online learner's cursor over the telemetry and its reward baseline, ``clm.rl.online``), in the manifest
like every file, so what an agent learnt and what it read are saved together.

``rl_versions`` is append-only, so a version's life is a sequence of rows, newest last:

    ACTIVE           a version became the agent's current one (first start, periodic snapshot, reset)
    ARCHIVED         the table as it was when a reset came, kept for reference (never current again)
    RESET            a reset was applied: ``metrics.request_id``, the archived and the new version, and
                     ``metrics.event``, the event's name: ``rl.meta.reset`` or ``rl.sizing.reset``
    RESET_REQUESTED  someone asked for a reset (e.g. the ``rl_reset`` asset on a regime change)
    RESET_SKIPPED    a request consumed without a reset (``rl_maintenance.reset_on_regime_change`` is off)
    UPDATE_SKIPPED   the online guardrail dropped a batch (``reason`` says why)

The current version is the newest ACTIVE row. A reset request is identified by its ``request_id``:
``metrics.request_id``, else ``metrics.regime_change_id``, else the regime change in ``metrics.change``
(``regime-change:<from>-><to>@<at>``, as ``clm.automation.rl.request_rl_reset`` writes it), else
``metrics.run_id`` (``run:<id>``, a reset by hand), else ``rl_versions:<version_id>`` of the row. A
request whose id already has a RESET or RESET_SKIPPED row is never applied again, so a repeated or
replayed request (two rows for one change included) does nothing. Snapshots and resets of one agent are serialised by an
``flock`` on ``<dir>/<agent>/.lock`` (one host; the registry itself is transactional).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clm.lake import fsync_write
from clm.models.artifacts import read_json, verify_manifest, write_json, write_manifest
from clm.policy import RLMaintenance
from clm.registry.base import Registry
from clm.rl.meta import AGENT_NAME as META_AGENT
from clm.rl.meta import MetaStrategyAgent
from clm.rl.online import reset_online_state
from clm.rl.sizing import DQN_AGENT, QTABLE_AGENT, DQNSizer, QTableSizer, SafetyClamp

logger = logging.getLogger(__name__)

TABLE = "rl_versions"
WORKING_POINTER = "working.json"
AGENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
VERSION_RE = re.compile(r"^v(\d{4,})$")
ONLINE_FILE = "online.json"
AGENT_CLASSES = {META_AGENT: MetaStrategyAgent, QTABLE_AGENT: QTableSizer, DQN_AGENT: DQNSizer}
SIZING_AGENTS = (QTABLE_AGENT, DQN_AGENT)
# The name of the event a reset records (``metrics.event`` of its RESET row).
RESET_EVENTS = {META_AGENT: "rl.meta.reset", QTABLE_AGENT: "rl.sizing.reset", DQN_AGENT: "rl.sizing.reset"}


class RLStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"
    RESET = "RESET"
    RESET_REQUESTED = "RESET_REQUESTED"
    RESET_SKIPPED = "RESET_SKIPPED"
    UPDATE_SKIPPED = "UPDATE_SKIPPED"


class RLStoreError(RuntimeError):
    """A snapshot is missing, tampered with, or the store was asked something impossible."""


@dataclass(frozen=True)
class VersionRecord:
    """One ``rl_versions`` row."""

    version_id: int
    agent: str
    version: str | None
    status: str
    created_at: dt.datetime | None
    parent_version: str | None
    reason: str | None
    file_path: str | None
    sha256: str | None
    epsilon: float | None
    metrics: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VersionRecord:
        metrics = row.get("metrics")
        return cls(version_id=int(row["version_id"]), agent=row["agent"], version=row.get("version"),
                   status=row["status"], created_at=row.get("created_at"), parent_version=row.get("parent_version"),
                   reason=row.get("reason"), file_path=row.get("file_path"), sha256=row.get("sha256"),
                   epsilon=row.get("epsilon"), metrics=metrics if isinstance(metrics, Mapping) else {})

    @property
    def request_id(self) -> str:
        """The reset request this row is about (see the module docstring)."""
        for key in ("request_id", "regime_change_id"):
            value = self.metrics.get(key)
            if value not in (None, ""):
                return str(value)
        change = self.metrics.get("change")
        if isinstance(change, Mapping) and change.get("at") and change.get("to"):
            return f"regime-change:{change.get('from') or ''}->{change['to']}@{change['at']}"
        run_id = self.metrics.get("run_id")
        if run_id:
            return f"run:{run_id}"
        return f"{TABLE}:{self.version_id}"


@dataclass(frozen=True)
class ResetResult:
    request_id: str
    archived: VersionRecord
    started: VersionRecord
    event: VersionRecord


def _save(agent_obj, folder: Path) -> list[str]:
    """The agent's files plus its online state (``ONLINE_FILE``) when it has one; returns the file names."""
    files = list(agent_obj.save(folder))
    state = getattr(agent_obj, "online_state", None)
    if state:
        write_json(folder, ONLINE_FILE, state)
        files.append(ONLINE_FILE)
    return files


def _check_agent(name: str) -> str:
    if not isinstance(name, str) or not AGENT_NAME_RE.match(name):
        raise RLStoreError(f"invalid agent name {name!r}: lower-case letters, digits and '_'")
    return name


class RLStore:
    """Snapshots, working copies, resets and ``rl_versions`` rows of the RL agents."""

    def __init__(self, directory: str | os.PathLike[str], registry: Registry):
        self.directory = Path(directory).expanduser().resolve()
        self.registry = registry

    def __repr__(self) -> str:
        return f"RLStore({str(self.directory)!r})"

    def agent_dir(self, agent: str) -> Path:
        return self.directory / _check_agent(agent)

    # ---- reading ---------------------------------------------------------------------------------
    def records(self, agent: str, status: str | None = None) -> list[VersionRecord]:
        """The agent's rows, newest first (optionally of one status)."""
        where: dict[str, Any] = {"agent": _check_agent(agent)}
        if status is not None:
            where["status"] = str(status)
        return [VersionRecord.from_row(r) for r in self.registry.rows(TABLE, where=where)]

    def current(self, agent: str) -> VersionRecord | None:
        """The agent's current version: its newest ACTIVE row."""
        rows = self.records(agent, RLStatus.ACTIVE)
        return rows[0] if rows else None

    def load(self, agent: str, *, version: str | None = None, clamp: SafetyClamp | None = None,
             prefer_working: bool = True):
        """The agent as of ``version`` (default: the current one, or its working copy when that continues the
        current version). Every file is checked against the manifest before a byte is parsed. Sizers need
        ``clamp`` (the risk mode is the policy's, read fresh, never a snapshot's). None when nothing is stored."""
        cls = AGENT_CLASSES.get(_check_agent(agent))
        if cls is None:
            raise RLStoreError(f"unknown agent {agent!r}; known: {sorted(AGENT_CLASSES)}")
        if version is None:
            record = self.current(agent)
            if record is None:
                return None
            version = record.version
            folder = self._working_folder(agent, based_on=version) if prefer_working else None
            folder = folder or self.agent_dir(agent) / version
        else:
            folder = self.agent_dir(agent) / version
        obj = self._load_folder(cls, agent, folder, clamp)
        obj.version = version
        return obj

    def _load_folder(self, cls, agent: str, folder: Path, clamp: SafetyClamp | None):
        if not folder.is_dir():
            raise RLStoreError(f"{agent}: snapshot folder {folder} is missing")
        manifest = verify_manifest(folder, engine=agent)
        if cls is MetaStrategyAgent:
            obj = cls.load(folder)
        elif clamp is None:
            raise RLStoreError(f"{agent}: loading a sizer needs the safety clamp of the active risk mode")
        else:
            obj = cls.load(folder, clamp=clamp)
        if ONLINE_FILE in manifest["files"]:
            state = read_json(folder, ONLINE_FILE)
            if not isinstance(state, dict):
                raise RLStoreError(f"{agent}: {folder / ONLINE_FILE} must hold an object")
            obj.online_state = state
        return obj

    def active_sizer(self, configured: str | None = None) -> str:
        """The sizing agent in use: ``configured`` (``qtable``/``dqn`` or an agent name) when given, else the
        sizer with the newest ACTIVE version, else the Q-table sizer."""
        if configured:
            name = {"qtable": QTABLE_AGENT, "dqn": DQN_AGENT}.get(configured, configured)
            if name not in SIZING_AGENTS:
                raise RLStoreError(f"unknown sizer {configured!r}; known: qtable, dqn")
            return name
        current = [(record.version_id, name) for name in SIZING_AGENTS if (record := self.current(name))]
        return max(current)[1] if current else QTABLE_AGENT

    def _working_folder(self, agent: str, *, based_on: str) -> Path | None:
        pointer = self.agent_dir(agent) / WORKING_POINTER
        try:
            data = json.loads(pointer.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if data.get("based_on") != based_on:
            return None  # the working copy continues an older version (a reset happened since)
        folder = self.agent_dir(agent) / str(data.get("folder"))
        return folder if folder.is_dir() else None

    # ---- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, agent: str) -> Iterator[None]:
        folder = self.agent_dir(agent)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _next_version(self, agent: str) -> str:
        numbers = [0]
        for record in self.records(agent):
            for name in (record.version, record.parent_version):
                match = VERSION_RE.match(name or "")
                if match:
                    numbers.append(int(match.group(1)))
        folder = self.agent_dir(agent)
        if folder.is_dir():  # a folder whose row never landed (crash) is not reused
            numbers += [int(m.group(1)) for p in folder.iterdir() if (m := VERSION_RE.match(p.name))]
        return f"v{max(numbers) + 1:04d}"

    def _write_version(self, agent_obj, *, status: RLStatus, reason: str, parent: str | None,
                       metrics: Mapping[str, Any] | None = None) -> VersionRecord:
        agent = agent_obj.name
        version = self._next_version(agent)
        folder = self.agent_dir(agent) / version
        folder.mkdir(parents=True, exist_ok=False)
        manifest = write_manifest(folder, _save(agent_obj, folder), engine=agent)
        row = {"agent": agent, "version": version, "status": str(status), "parent_version": parent,
               "reason": reason, "file_path": str(folder), "sha256": manifest.digest,
               "epsilon": float(agent_obj.epsilon), "metrics": {**agent_obj.metrics(), **(metrics or {})}}
        self.registry.append(TABLE, [row])
        return self._newest(agent, version=version, status=str(status))

    def _newest(self, agent: str, **where: Any) -> VersionRecord:
        rows = self.registry.rows(TABLE, where={"agent": agent, **where}, limit=1)
        return VersionRecord.from_row(rows[0])

    def snapshot(self, agent_obj, *, reason: str = "snapshot", metrics: Mapping[str, Any] | None = None
                 ) -> VersionRecord:
        """Write the agent as a new ACTIVE version (parent: the version it continues) and point the working
        copy at it."""
        with self._locked(agent_obj.name):
            agent_obj.trades_since_snapshot = 0
            record = self._write_version(agent_obj, status=RLStatus.ACTIVE, reason=reason,
                                         parent=agent_obj.version, metrics=metrics)
            agent_obj.version = record.version
            self._write_working(agent_obj)
        logger.info("%s: snapshot %s (%s)", agent_obj.name, record.version, reason)
        return record

    def snapshot_due(self, agent_obj, interval_trades: int) -> bool:
        return agent_obj.version is None or agent_obj.trades_since_snapshot >= interval_trades

    def maybe_snapshot(self, agent_obj, interval_trades: int) -> VersionRecord | None:
        """A snapshot when ``interval_trades`` trades were learnt since the last one (or none exists yet)."""
        if not self.snapshot_due(agent_obj, interval_trades):
            return None
        reason = ("first version" if agent_obj.version is None
                  else f"snapshot after {agent_obj.trades_since_snapshot} trades (interval {interval_trades})")
        return self.snapshot(agent_obj, reason=reason)

    def checkpoint(self, agent_obj) -> Path:
        """Save the working copy (what was learnt since the last snapshot), without a new version; an agent
        that has no version yet gets its first snapshot instead."""
        if agent_obj.version is None:
            return Path(self.snapshot(agent_obj, reason="first version").file_path)
        with self._locked(agent_obj.name):
            return self._write_working(agent_obj)

    def _write_working(self, agent_obj) -> Path:
        agent = agent_obj.name
        base = self.agent_dir(agent)
        folder = base / f"working-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        write_manifest(folder, _save(agent_obj, folder), engine=agent)
        fsync_write(base / WORKING_POINTER,
                    json.dumps({"folder": folder.name, "based_on": agent_obj.version}, sort_keys=True).encode())
        for old in base.glob("working-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    # ---- resets ----------------------------------------------------------------------------------
    def request_reset(self, agent: str, *, request_id: str, reason: str,
                      details: Mapping[str, Any] | None = None) -> VersionRecord | None:
        """Append a RESET_REQUESTED row (None when this request id was already requested or consumed)."""
        if not isinstance(request_id, str) or not request_id:
            raise RLStoreError(f"request_id must be a non-empty string, got {request_id!r}")
        known = {r.request_id for r in self.records(agent, RLStatus.RESET_REQUESTED)} | self._consumed(agent)
        if request_id in known:
            return None
        self.registry.append(TABLE, [{"agent": agent, "status": str(RLStatus.RESET_REQUESTED), "reason": reason,
                                      "metrics": {**(details or {}), "request_id": request_id}}])
        return self._newest(agent, status=str(RLStatus.RESET_REQUESTED))

    def _consumed(self, agent: str) -> set[str]:
        return {r.request_id for status in (RLStatus.RESET, RLStatus.RESET_SKIPPED)
                for r in self.records(agent, status)}

    def pending_resets(self, agent: str) -> list[VersionRecord]:
        """RESET_REQUESTED rows not yet consumed, oldest first (one per request id)."""
        consumed = self._consumed(agent)
        pending: dict[str, VersionRecord] = {}
        for record in reversed(self.records(agent, RLStatus.RESET_REQUESTED)):
            if record.request_id not in consumed:
                pending.setdefault(record.request_id, record)
        return list(pending.values())

    def reset(self, agent_obj, *, request_id: str, reason: str, epsilon: float | None = None) -> ResetResult | None:
        """Archive the agent's table, start a new version (epsilon ``reset_epsilon``, 0.5 by default) and
        record the reset; None when ``request_id`` was already consumed (nothing happens)."""
        if not isinstance(request_id, str) or not request_id:
            raise RLStoreError(f"request_id must be a non-empty string, got {request_id!r}")
        agent = agent_obj.name
        with self._locked(agent):
            if request_id in self._consumed(agent):
                logger.info("%s: reset %s already applied; nothing to do", agent, request_id)
                return None
            previous = agent_obj.version
            archived = self._write_version(agent_obj, status=RLStatus.ARCHIVED, parent=previous,
                                           reason=f"archived by reset {request_id}: {reason}",
                                           metrics={"request_id": request_id})
            agent_obj.reset(epsilon=epsilon)
            agent_obj.online_state = reset_online_state(getattr(agent_obj, "online_state", None))
            started = self._write_version(agent_obj, status=RLStatus.ACTIVE, parent=archived.version,
                                          reason=f"reset {request_id}: {reason}", metrics={"request_id": request_id})
            agent_obj.version = started.version
            self.registry.append(TABLE, [{
                "agent": agent, "version": started.version, "status": str(RLStatus.RESET),
                "parent_version": archived.version, "reason": reason, "epsilon": float(agent_obj.epsilon),
                "metrics": {"event": RESET_EVENTS.get(agent, f"rl.{agent}.reset"), "request_id": request_id,
                            "previous_version": previous, "archived_version": archived.version,
                            "new_version": started.version},
            }])
            event = self._newest(agent, status=str(RLStatus.RESET))
            self._write_working(agent_obj)
        logger.info("%s: reset %s: %s archived as %s, new version %s (epsilon %.2f)", agent, request_id, previous,
                    archived.version, started.version, agent_obj.epsilon)
        return ResetResult(request_id, archived, started, event)

    def apply_reset_requests(self, agent_obj, maintenance: RLMaintenance) -> list[ResetResult | VersionRecord]:
        """Consume the agent's pending reset requests, oldest first: each resets the agent when
        ``maintenance.reset_on_regime_change`` is on, else is recorded as RESET_SKIPPED. One agent is reset
        at most once per call (several pending requests mean one shift as far as the table is concerned)."""
        out: list[ResetResult | VersionRecord] = []
        did_reset = False
        for request in self.pending_resets(agent_obj.name):
            if maintenance.reset_on_regime_change and not did_reset:
                result = self.reset(agent_obj, request_id=request.request_id, reason=request.reason or "reset requested")
                if result is not None:
                    out.append(result)
                    did_reset = True
                continue
            why = ("rl_maintenance.reset_on_regime_change is false" if not maintenance.reset_on_regime_change
                   else "the agent was already reset in this call")
            self.registry.append(TABLE, [{"agent": agent_obj.name, "version": agent_obj.version,
                                          "status": str(RLStatus.RESET_SKIPPED), "reason": why,
                                          "metrics": {"request_id": request.request_id}}])
            out.append(self._newest(agent_obj.name, status=str(RLStatus.RESET_SKIPPED)))
            logger.info("%s: reset request %s skipped: %s", agent_obj.name, request.request_id, why)
        return out

    def record_skip(self, agent_obj, *, reason: str, metrics: Mapping[str, Any]) -> VersionRecord:
        """An UPDATE_SKIPPED row: the online guardrail dropped a batch, with the numbers behind it."""
        self.registry.append(TABLE, [{"agent": agent_obj.name, "version": agent_obj.version,
                                      "status": str(RLStatus.UPDATE_SKIPPED), "reason": reason,
                                      "epsilon": float(agent_obj.epsilon), "metrics": dict(metrics)}])
        return self._newest(agent_obj.name, status=str(RLStatus.UPDATE_SKIPPED))

    def adopt(self, folder: str | os.PathLike[str], *, reason: str, clamp: SafetyClamp | None = None,
              metrics: Mapping[str, Any] | None = None) -> VersionRecord:
        """Start a new ACTIVE version from the agent saved in ``folder`` (a policy trained offline that became
        ACTIVE in the model registry, ``clm.rl.policies.activate_policy``), so the online learner continues
        from it. The folder's manifest names the agent and is verified before a byte is parsed; the parent is
        the agent's current version, whose online cursor is kept (what was read stays read) and whose reward
        baseline is dropped, as after a reset. Sizers need ``clamp``."""
        from clm.models.artifacts import read_manifest

        folder = Path(folder)
        agent = read_manifest(folder).engine
        cls = AGENT_CLASSES.get(agent)
        if cls is None:
            raise RLStoreError(f"{folder} holds {agent!r}, not an RL agent; known: {sorted(AGENT_CLASSES)}")
        obj = self._load_folder(cls, agent, folder, clamp)
        with self._locked(agent):
            current = self.current(agent)
            if current is not None:
                previous = self.load(agent, clamp=clamp)
                obj.online_state = reset_online_state(getattr(previous, "online_state", None))
            obj.version = None
            obj.trades_since_snapshot = 0
            record = self._write_version(obj, status=RLStatus.ACTIVE, reason=reason,
                                         parent=current.version if current else None,
                                         metrics={"adopted_from": str(folder), **(metrics or {})})
            obj.version = record.version
            self._write_working(obj)
        logger.info("%s: version %s adopted from %s (%s)", agent, record.version, folder, reason)
        return record
