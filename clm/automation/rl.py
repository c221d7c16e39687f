"""RL maintenance: reset requests after a regime change, resets of the agents in use, and the online update.

A request is an ``rl_versions`` row (status ``RESET_REQUESTED``, ``version`` null, ``parent_version`` the
agent's newest version if it has one, ``reason`` the change, ``metrics`` the change and the run); the
agent acts on it through ``RLStore.apply_reset_requests`` and writes its own rows for the versions it
produces. One request per regime change and agent: the same change asked again (a retried run) finds its
row, and a request is applied at most once (``RLStore``'s request id).

``reset_rl_agents`` is what a regime change does: the meta-strategy agent and the active position sizer
(``RLStore.active_sizer``) are each asked once and reset once: the current table archived, a new version
at ``reset_epsilon`` (0.5), the RESET row naming its event (``rl.meta.reset``, ``rl.sizing.reset``).

``online_update`` is the online path over the ``feedback_events`` table: for each of the two agents,
pending resets first, then the ``trade.closed`` rows past the agent's cursor through an ``OnlineLearner``
(the KL guardrail, snapshots every ``snapshot_interval_trades`` trades), then a working copy holding what
was learnt and read. A run with nothing new writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from clm.policy import Policy
from clm.registry.base import Registry
from clm.rl.meta import AGENT_NAME as META_AGENT
from clm.rl.meta import MetaStrategyAgent
from clm.rl.online import OnlineConfig, OnlineLearner, OnlineReport
from clm.rl.rewards import RewardEngine
from clm.rl.sizing import DQN_AGENT, QTABLE_AGENT, SafetyClamp, make_sizer
from clm.rl.store import TABLE as RL_VERSIONS
from clm.rl.store import ResetResult, RLStatus, RLStore, VersionRecord

RESET_REQUESTED = str(RLStatus.RESET_REQUESTED)
TRADE_CLOSED = "trade.closed"
_SIZER_KINDS = {QTABLE_AGENT: "qtable", DQN_AGENT: "dqn"}


def request_rl_reset(registry: Registry, *, reason: str, change: Mapping[str, Any] | None = None,
                     agent: str = META_AGENT, run_id: str | None = None) -> tuple[dict[str, Any], bool]:
    """Record a reset request for ``agent``; returns the row and whether it is new. ``change``: the regime
    change (``from``, ``to``, ``at``, ...) it answers; without one (a reset by hand) the run is its identity."""
    if not reason or not reason.strip():
        raise ValueError("an RL reset request needs a reason")
    identity = {"change": dict(change)} if change else {"run_id": run_id}
    rows = registry.rows(RL_VERSIONS, where={"agent": agent})
    for row in rows:
        metrics = row["metrics"] if isinstance(row["metrics"], Mapping) else {}
        if row["status"] == RESET_REQUESTED and all(metrics.get(k) == v for k, v in identity.items()):
            return row, False
    parent = next((r["version"] for r in rows if r["status"] != RESET_REQUESTED and r["version"]), None)
    registry.append(RL_VERSIONS, [{
        "agent": agent, "version": None, "status": RESET_REQUESTED, "parent_version": parent,
        "reason": reason.strip(), "metrics": {"change": dict(change) if change else None, "run_id": run_id},
    }])
    (stored,) = registry.rows(RL_VERSIONS, where={"agent": agent, "status": RESET_REQUESTED}, limit=1)
    return stored, True


def open_agent(store: RLStore, agent: str, policy: Policy, *, seed: int = 0):
    """The stored agent (its working copy when that continues the current version), else a new one that is
    not stored yet (``version`` None). Sizers are clamped by the policy's active risk mode."""
    obj = store.load(agent, clamp=SafetyClamp.from_policy(policy))
    if obj is not None:
        return obj
    if agent == META_AGENT:
        return MetaStrategyAgent(seed=seed)
    return make_sizer({"agent": _SIZER_KINDS[agent]}, risk_mode=policy.risk_modes.current, seed=seed)


@dataclass(frozen=True)
class AgentReset:
    """What a reset run did for one agent."""

    agent: str
    request: Mapping[str, Any]  # the RESET_REQUESTED row
    new_request: bool
    applied: list[ResetResult | VersionRecord]  # resets, and requests consumed as RESET_SKIPPED
    current: VersionRecord | None

    @property
    def reset(self) -> ResetResult | None:
        return next((a for a in self.applied if isinstance(a, ResetResult)), None)


def reset_rl_agents(store: RLStore, policy: Policy, *, reason: str, change: Mapping[str, Any] | None = None,
                    run_id: str | None = None, sizer: str | None = None) -> list[AgentReset]:
    """Ask the meta-strategy agent and the active sizer to reset, then apply what each has pending (once per
    request; RESET_SKIPPED when ``rl_maintenance.reset_on_regime_change`` is off). An agent with nothing
    stored gets its first version, which the reset archives."""
    out = []
    for agent in (META_AGENT, store.active_sizer(sizer)):
        row, new = request_rl_reset(store.registry, reason=reason, change=change, agent=agent, run_id=run_id)
        obj = open_agent(store, agent, policy)
        if obj.version is None:
            store.snapshot(obj, reason="first version")
        applied = store.apply_reset_requests(obj, policy.rl_maintenance)
        out.append(AgentReset(agent, row, new, applied, store.current(agent)))
    return out


@dataclass(frozen=True)
class OnlineOutcome:
    """What the online update did for one agent."""

    agent: str
    version_before: str | None
    version_after: str | None
    resets: list
    rows_read: int  # trade.closed rows past the agent's cursor
    reports: list[OnlineReport]
    learnt: int  # experiences learnt
    skipped: int  # experiences dropped by the guardrail (the skipped batches and the buffer cleared with them)
    ignored: int  # rows for another agent
    rejected: int
    rejections: list[str]
    pending: int  # experiences waiting for a full batch: read again by the next run
    saved: bool  # whether a working copy was written

    @property
    def skip_reasons(self) -> list[str]:
        return [r.reason for r in self.reports if r.skipped]


def past_cursor(rows: pl.DataFrame, cursor: Mapping[str, int]) -> pl.DataFrame:
    """The rows after ``cursor`` (per ``source_file``, the last line consumed), in file and line order."""
    rows = rows.sort("source_file", "source_line")
    if not cursor:
        return rows
    mark = pl.col("source_file").replace_strict(dict(cursor), default=0, return_dtype=pl.Int64)
    return rows.filter(pl.col("source_line") > mark)


def online_update(store: RLStore, events: pl.DataFrame, policy: Policy, *,
                  config: OnlineConfig | Mapping[str, Any] | None = None, sizer: str | None = None,
                  rewards: RewardEngine | None = None) -> list[OnlineOutcome]:
    """Feed the ``trade.closed`` rows of ``events`` (``feedback_events``) to the meta-strategy agent and the
    active sizer, each past its own cursor; see the module docstring."""
    trades = events.filter(pl.col("event_type") == TRADE_CLOSED)
    out = []
    for agent in (META_AGENT, store.active_sizer(sizer)):
        obj = open_agent(store, agent, policy)
        version_before = obj.version
        learner = OnlineLearner(obj, maintenance=policy.rl_maintenance, rewards=rewards, store=store, config=config)
        before = learner.state()
        resets = learner.apply_resets()
        rows = past_cursor(trades, learner.cursor)
        reports = learner.extend(rows.iter_rows(named=True))
        saved = bool(reports) or learner.state() != before
        if saved:
            learner.save_state()
            store.checkpoint(obj)
        stats = learner.stats
        out.append(OnlineOutcome(
            agent=agent, version_before=version_before, version_after=obj.version, resets=resets,
            rows_read=rows.height, reports=reports, learnt=sum(r.learned for r in reports),
            skipped=sum(r.dropped for r in reports if r.skipped),
            ignored=stats.ignored, rejected=stats.rejected, rejections=list(stats.rejections),
            pending=len(learner.buffer), saved=saved))
    return out
