"""Reinforcement learning for trading decisions: rewards, the meta-strategy agent, position sizers,
the safety clamp, versioned snapshots and the online learner with its drift guardrail.

Importing this package does not import torch: the DQN sizer imports it inside its functions.

    from clm.rl import MetaStrategyAgent, RewardEngine, make_sizer, SizingContext, RLStore, OnlineLearner

    rewards = RewardEngine()                                  # clm/rl/reward_schema.yaml, validated
    meta = MetaStrategyAgent(seed=0)
    strategy = meta.act(meta.state("range", "LOW", "HIGH"))  # epsilon-greedy
    sizer = make_sizer({"agent": "qtable"}, risk_mode=policy.risk_modes.current, seed=0)
    decision = sizer.decide(features, SizingContext(open_positions=2))   # always clamped
    store = RLStore(lake.policies_dir, registry)              # snapshots + rl_versions rows
    learner = OnlineLearner(meta, maintenance=policy.rl_maintenance, rewards=rewards, store=store)
    learner.extend(trade_closed_events)                       # KL guardrail, pruning, snapshots
    learner.save_state(); store.checkpoint(meta)              # the cursor and baseline kept with the agent

Offline, from history (imported on their own): ``clm.rl.replay`` plays the champion's signals on historical
bars, costs included, as ``trade.closed`` events and judges policies against fixed-size and random baselines;
``clm.rl.offline.run_offline`` trains both agents on it, writes ``models/policies/<run_id>/`` and registers
them; ``clm.rl.policies.activate_policy`` starts the online learner from the policy the registry makes ACTIVE.
See docs/rl.md.
"""

from clm.rl.config import RLConfigError
from clm.rl.meta import (
    PERFORMANCE_LEVELS,
    STRATEGIES,
    MetaConfig,
    MetaExperience,
    MetaState,
    MetaStrategyAgent,
    make_state,
)
from clm.rl.online import OnlineConfig, OnlineLearner, OnlineReport, reset_online_state, reward_kl
from clm.rl.qtable import QTable
from clm.rl.rewards import (
    RewardEngine,
    RewardSchema,
    load_reward_schema,
    meta_strategy_reward,
    sizing_reward,
)
from clm.rl.sizing import (
    DQN_ACTIONS,
    DQN_FEATURES,
    QTABLE_ACTIONS,
    DQNSizer,
    DQNSizerConfig,
    QTableSizer,
    QTableSizerConfig,
    RawSizing,
    SafetyClamp,
    SizingConfig,
    SizingContext,
    SizingDecision,
    SizingExperience,
    make_sizer,
)
from clm.rl.store import (
    AGENT_CLASSES,
    RESET_EVENTS,
    SIZING_AGENTS,
    ResetResult,
    RLStatus,
    RLStore,
    RLStoreError,
    VersionRecord,
)

__all__ = [
    "AGENT_CLASSES",
    "DQN_ACTIONS",
    "DQN_FEATURES",
    "PERFORMANCE_LEVELS",
    "QTABLE_ACTIONS",
    "RESET_EVENTS",
    "SIZING_AGENTS",
    "STRATEGIES",
    "DQNSizer",
    "DQNSizerConfig",
    "MetaConfig",
    "MetaExperience",
    "MetaState",
    "MetaStrategyAgent",
    "OnlineConfig",
    "OnlineLearner",
    "OnlineReport",
    "QTable",
    "QTableSizer",
    "QTableSizerConfig",
    "RLConfigError",
    "RLStatus",
    "RLStore",
    "RLStoreError",
    "RawSizing",
    "ResetResult",
    "RewardEngine",
    "RewardSchema",
    "SafetyClamp",
    "SizingConfig",
    "SizingContext",
    "SizingDecision",
    "SizingExperience",
    "VersionRecord",
    "load_reward_schema",
    "make_sizer",
    "make_state",
    "meta_strategy_reward",
    "reset_online_state",
    "reward_kl",
    "sizing_reward",
]
