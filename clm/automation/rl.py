"""RL maintenance requests: a regime change asks the meta-strategy agent to reset, as an ``rl_versions`` row.

The row (status ``RESET_REQUESTED``, ``version`` null, ``parent_version`` the agent's newest version if it
has one, ``reason`` the change, ``metrics`` the change and the run) is what the RL agent acts on when it
loads; the agent writes its own rows for the versions it produces. One request per regime change: the
same change asked again (a retried run) finds its row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clm.registry.base import Registry
from clm.rl.meta import AGENT_NAME as META_AGENT
from clm.rl.store import TABLE as RL_VERSIONS
from clm.rl.store import RLStatus

RESET_REQUESTED = str(RLStatus.RESET_REQUESTED)


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
