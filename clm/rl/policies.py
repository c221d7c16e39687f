"""RL policies in the model registry: their model types, and what happens when one becomes ACTIVE.

A policy trained offline (``clm.rl.offline``) is registered like a model, under key
``(rl_meta_strategy | rl_sizing, pooled, horizon)``; its artefact folder holds one agent's files and
manifest (``<policies_dir>/<run_id>/<agent>/``). The registry's rules apply: the first policy of a key is
ACTIVE, later ones SHADOW until ``clm policies promote`` (or a rollback) makes them ACTIVE.

``activate_policy`` is the one link from the registry to the online learner: whenever a policy becomes
ACTIVE (its first registration, a promotion, a rollback), the agent in its folder becomes a new ACTIVE
``rl_versions`` version (``RLStore.adopt``), so the online learner continues from the policy the
registry serves.
"""

from __future__ import annotations

import os

from clm.registry.base import (
    POLICY_MODEL_TYPES,
    RL_META_MODEL_TYPE,
    RL_SIZING_MODEL_TYPE,
    ModelRecord,
    Registry,
    Status,
)
from clm.rl.meta import AGENT_NAME as META_AGENT
from clm.rl.sizing import DQN_AGENT, QTABLE_AGENT, SafetyClamp
from clm.rl.store import RLStore, VersionRecord

# which agents each policy type holds
POLICY_AGENTS: dict[str, tuple[str, ...]] = {RL_META_MODEL_TYPE: (META_AGENT,),
                                             RL_SIZING_MODEL_TYPE: (QTABLE_AGENT, DQN_AGENT)}


def policy_type(agent: str) -> str:
    """The registry model type of a policy holding ``agent``."""
    for model_type, agents in POLICY_AGENTS.items():
        if agent in agents:
            return model_type
    raise ValueError(f"{agent!r} is not an RL agent; known: {sorted(a for v in POLICY_AGENTS.values() for a in v)}")


def activate_policy(policies_dir: str | os.PathLike[str], registry: Registry, record: ModelRecord, *,
                    clamp: SafetyClamp | None = None) -> VersionRecord:
    """Start a new ACTIVE ``rl_versions`` version of the agent in ``record``'s folder (which must be an ACTIVE
    RL policy), parented on the agent's current version. Sizers are loaded with ``clamp``, by default the
    active risk mode of ``policy.yaml`` read now."""
    if record.model_type not in POLICY_MODEL_TYPES:
        raise ValueError(f"{record.model_id} is a {record.model_type} model, not an RL policy "
                         f"({', '.join(POLICY_MODEL_TYPES)})")
    if record.status != Status.ACTIVE:
        raise ValueError(f"{record.model_id} is {record.status}; only an ACTIVE policy starts an online version")
    if clamp is None:
        from clm.policy import load_policy

        clamp = SafetyClamp.from_policy(load_policy())
    store = RLStore(policies_dir, registry)
    return store.adopt(record.file_path, clamp=clamp, reason=f"policy {record.model_id} is ACTIVE in the registry",
                       metrics={"policy_model_id": record.model_id})


__all__ = ["POLICY_AGENTS", "activate_policy", "policy_type"]
