"""The registry's vocabulary and its one interface: statuses, transitions, records, ``Registry``.

Callers (assets, CLI, serving, supervisor, shadow tester, RL) talk to a ``Registry`` and never to a
database: the DuckDB backend (``clm.registry.duckdb_store``) serves one host; a PostgreSQL backend
for multi-host deployments implements the same class without touching its callers.

Life of a model: TRAINING -> SHADOW -> ACTIVE -> RETIRED, or REJECTED. At most one ACTIVE model per
key (model_type, scope, horizon); the first model registered for a key becomes ACTIVE, later ones
SHADOW. Every status change is one transaction that also appends its ``status_history`` row.
"""

from __future__ import annotations

import datetime as dt
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class RegistryError(RuntimeError):
    """A registry operation was refused; the registry is unchanged."""


class UnknownModel(RegistryError):
    pass


class InvalidTransition(RegistryError):
    pass


class Status(enum.StrEnum):
    TRAINING = "TRAINING"
    SHADOW = "SHADOW"
    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"
    REJECTED = "REJECTED"


# Allowed status changes. RETIRED -> ACTIVE is a rollback only; REJECTED is final.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.TRAINING: frozenset({Status.SHADOW, Status.ACTIVE, Status.REJECTED}),
    Status.SHADOW: frozenset({Status.ACTIVE, Status.REJECTED, Status.RETIRED}),
    Status.ACTIVE: frozenset({Status.RETIRED}),
    Status.RETIRED: frozenset({Status.ACTIVE}),
    Status.REJECTED: frozenset(),
}

POOLED = "pooled"  # the scope of a model trained across the whole universe
GATE_MODEL_TYPE = "regime_gate"  # the regime gate is registered like a model, but forecasts nothing
# RL policies trained offline (clm.rl.offline) are registered like models too, and forecast nothing either
RL_META_MODEL_TYPE = "rl_meta_strategy"
RL_SIZING_MODEL_TYPE = "rl_sizing"
POLICY_MODEL_TYPES = (RL_META_MODEL_TYPE, RL_SIZING_MODEL_TYPE)
NON_FORECASTERS = frozenset({GATE_MODEL_TYPE, *POLICY_MODEL_TYPES})


def is_forecaster(model_type: str) -> bool:
    """Whether models of this type forecast returns (served, shadow-tested, supervised, checked for drift):
    every type but the regime gate and the RL policies."""
    return model_type not in NON_FORECASTERS


def check_transition(model_id: str, current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (final)"
        raise InvalidTransition(
            f"model {model_id}: cannot go from {current} to {target} (allowed from {current}: {allowed})"
        )


@dataclass(frozen=True)
class ModelKey:
    """What one ACTIVE model answers for: an engine, a scope (``pooled`` or a symbol), a horizon in bars."""

    model_type: str
    scope: str
    horizon: int

    def __str__(self) -> str:
        return f"{self.model_type}/{self.scope}/h{self.horizon}"


@dataclass(frozen=True)
class Lineage:
    """Everything needed to say where a model came from and to rebuild it."""

    training_window: tuple[str, str]  # first and last training timestamp, ISO 8601 UTC
    feature_version: str | None  # the feature store's definition hash
    feature_count: int
    label_config: Mapping[str, Any]
    code_version: str  # git commit (+ '-dirty'), or package version plus a source hash
    data_hash: str  # digest of the training rows
    seeds: Mapping[str, int]
    config: Mapping[str, Any]  # engine and training config
    artifact_checksums: Mapping[str, str]  # file name -> sha256, as in the artefact manifest

    def to_dict(self) -> dict[str, Any]:
        return {
            "training_window": list(self.training_window),
            "feature_version": self.feature_version,
            "feature_count": self.feature_count,
            "label_config": dict(self.label_config),
            "code_version": self.code_version,
            "data_hash": self.data_hash,
            "seeds": dict(self.seeds),
            "config": dict(self.config),
            "artifact_checksums": dict(self.artifact_checksums),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        return cls(
            training_window=tuple(data["training_window"]),
            feature_version=data.get("feature_version"),
            feature_count=int(data["feature_count"]),
            label_config=dict(data.get("label_config") or {}),
            code_version=str(data["code_version"]),
            data_hash=str(data["data_hash"]),
            seeds=dict(data.get("seeds") or {}),
            config=dict(data.get("config") or {}),
            artifact_checksums=dict(data.get("artifact_checksums") or {}),
        )


@dataclass(frozen=True)
class NewModel:
    """What a training run hands to ``Registry.register``."""

    model_type: str
    version: str  # content hash of the model's inputs (clm.training.store), also its artefact folder name
    scope: str
    horizon: int
    file_path: str  # the artefact folder
    lineage: Lineage
    metrics: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.model_type, self.scope, self.horizon)

    @property
    def model_id(self) -> str:
        """Stable: the same training registers the same id, so re-running it is idempotent."""
        scope = "" if self.scope == POOLED else f"-{self.scope}"
        return f"{self.model_type}{scope}-h{self.horizon}-{self.version[:12]}"


@dataclass(frozen=True)
class ModelRecord:
    """One row of ``model_registry``."""

    model_id: str
    model_type: str
    version: str
    scope: str
    horizon: int
    status: Status
    metrics: Mapping[str, Any]
    training_config: Mapping[str, Any]
    training_data_range: Mapping[str, str]  # {"start": ..., "end": ...}
    feature_count: int
    feature_version: str | None
    lineage: Lineage
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    retired_at: dt.datetime | None
    file_path: str
    file_size_bytes: int
    artifacts_pruned: bool
    notes: str

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.model_type, self.scope, self.horizon)


@dataclass(frozen=True)
class StatusChange:
    """One row of ``status_history``: every status change, with who, why and the evidence."""

    event_id: int
    model_id: str
    from_status: Status | None  # None for the registration itself
    to_status: Status
    changed_at: dt.datetime
    actor: str
    reason: str
    evidence: Mapping[str, Any]


class Registry(ABC):
    """The registry interface. Every method is one transaction: it all happens, or nothing does."""

    # ---- models ----------------------------------------------------------------------------------
    @abstractmethod
    def register(self, model: NewModel, *, actor: str = "training") -> ModelRecord:
        """Add a trained model: ACTIVE when its key has no ACTIVE model, else SHADOW. Registering the
        same ``model_id`` again returns the existing record unchanged (the artefact folder is the same)."""

    @abstractmethod
    def get(self, model_id: str) -> ModelRecord:
        """The record, or ``UnknownModel`` naming the id."""

    @abstractmethod
    def list_models(
        self,
        *,
        model_type: str | None = None,
        scope: str | None = None,
        horizon: int | None = None,
        status: Status | Sequence[Status] | None = None,
    ) -> list[ModelRecord]:
        """Models matching every given filter, newest first."""

    @abstractmethod
    def active(self, key: ModelKey) -> ModelRecord | None:
        """The ACTIVE model of ``key``, if any."""

    @abstractmethod
    def promote(self, model_id: str, *, note: str = "", actor: str = "cli", evidence: Mapping[str, Any] | None = None
                ) -> ModelRecord:
        """SHADOW (or TRAINING) -> ACTIVE; the key's current ACTIVE model (if any) becomes RETIRED in the same
        transaction. A RETIRED model comes back only through ``rollback``; a model whose artefact folder is
        missing or pruned is refused."""

    @abstractmethod
    def rollback(self, key: ModelKey, *, note: str = "", actor: str = "cli") -> ModelRecord:
        """Return ``key`` to its previous ACTIVE model: the current one (if any) RETIRED, the one before it ACTIVE
        again. "The one before" is the RETIRED model most recently *replaced by a promotion*; models that were
        rolled back from or retired by hand are never brought back, so repeated rollbacks walk back through the
        promotions instead of toggling between the last two. ``RegistryError`` when the key has no such model
        whose artefacts are still kept."""

    @abstractmethod
    def set_status(self, model_id: str, status: Status, *, note: str = "", actor: str = "cli",
                   evidence: Mapping[str, Any] | None = None) -> ModelRecord:
        """A checked transition (``TRANSITIONS``); ACTIVE goes through ``promote``, which keeps one per key."""

    @abstractmethod
    def retire(self, model_id: str, *, note: str = "", actor: str = "cli") -> ModelRecord:
        """ACTIVE or SHADOW -> RETIRED."""

    @abstractmethod
    def record_decision(self, model_id: str, decision: str, *, evidence: Mapping[str, Any], actor: str,
                        note: str = "") -> StatusChange:
        """Append a ``status_history`` row that changes nothing: from and to are the model's current status,
        ``reason`` is ``decision`` (e.g. ``"shadow test: CONTINUE_TESTING"``), with its evidence. A
        recommendation that is not acted upon (no auto-promotion, or "keep testing") still leaves its
        evidence where every status change keeps its own. Returns the row."""

    @abstractmethod
    def update_metrics(self, model_id: str, metrics: Mapping[str, Any]) -> ModelRecord:
        """Merge ``metrics`` into the model's metrics (e.g. the evaluation after training)."""

    @abstractmethod
    def history(self, model_id: str | None = None) -> list[StatusChange]:
        """Status changes in the order they happened, for one model or all."""

    @abstractmethod
    def prune_retired(self, keep: int) -> list[ModelRecord]:
        """Delete the artefact folders of RETIRED models beyond the newest ``keep`` per key (records stay,
        marked ``artifacts_pruned``); returns the pruned records."""

    # ---- operational logs (drift, jobs, shadow tests, supervision, RL) ----------------------------
    @abstractmethod
    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append rows to one of ``LOG_TABLES``; unknown tables or columns are refused. Returns the count."""

    @abstractmethod
    def rows(self, table: str, *, where: Mapping[str, Any] | None = None, limit: int | None = None
             ) -> list[dict[str, Any]]:
        """Rows of a ``LOG_TABLES`` table (or ``model_registry``/``status_history``), equality filters only,
        newest first."""


def active_forecasters(registry: Registry, *, horizon: int | None = None) -> list[ModelRecord]:
    """The ACTIVE models that forecast (every champion but the regime gate and the RL policies)."""
    return [r for r in registry.list_models(status=Status.ACTIVE, horizon=horizon) if is_forecaster(r.model_type)]
