"""Position sizing: a Q-table agent or a DQN (chosen by config), always followed by the safety clamp.

Both agents propose a ``RawSizing`` (size multiplier, leverage, take-profit and stop-loss styles);
``SafetyClamp`` turns it into the ``SizingDecision`` that is executed, from the active risk mode of
``policy.yaml`` (max risk per trade, max leverage, max positions) and the day's remaining risk. The
clamp is the only way out of ``decide``: whatever an agent says (NaN, negative, huge), the decision
never exceeds the mode. What the clamp had to cut is named in ``decision.guardrails`` with the
reward schema's penalty names, so the agent pays for asking (``RewardEngine.sizing(guardrails=...)``).

Size: ``risk_pct = size_multiplier x base_risk_pct`` (% of equity at risk on the trade).

Q-table agent: state (market_regime, signal confidence bucket, exposure bucket, recent win rate
bucket, volatility_level) -> 270 actions = size multiplier {0.3, 0.5, 0.7, 1.0, 1.5} x leverage
{1, 2, 3, 5, 7, 10} x take-profit {conservative, balanced, aggressive} x stop-loss {tight, medium,
wide}, ordered from the most cautious, which is also the choice in a state never learnt.

DQN agent (torch, imported inside functions): 11 scaled features -> Q-network 11-64-32-6 over SKIP
0.0x, MICRO 0.25x, SMALL 0.5x, STANDARD 1.0x, MODERATE 1.25x, AGGRESSIVE 1.5x, plus a policy head
11-64-1 (tanh) that fine-tunes the chosen multiplier by up to +-``fine_tune_range``; experience
replay (10,000), a target network synced every 100 training steps, Huber loss, Adam; seeded (numpy
generator for exploration and replay sampling, a forked torch RNG for the initial weights), so the
same seed and data give identical weights on CPU. The policy head learns by a policy gradient with
the Q-value as baseline: a fine-tune that did better than expected pulls the head towards it.

Telemetry: a ``trade.closed`` event trains a sizer when its payload has a ``sizing`` object, as
written by ``SizingDecision.telemetry(features)``: ``{"agent", "action", "features", "fine_tune",
"guardrails"}`` plus optional ``next_features``; the event's ``pnl_pct``, ``duration_hours``,
``max_drawdown_pct``, ``hit_tp`` and ``hit_sl`` feed the sizing reward.
"""

from __future__ import annotations

import bisect
import io
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from clm.models.artifacts import read_json, write_bytes, write_json
from clm.policy import Policy, RiskMode
from clm.regimes.config import CLASSES, VOLATILITY_LEVELS
from clm.rl.config import RLSection, validate_config
from clm.rl.qtable import QTable
from clm.rl.rewards import RewardEngine, check_number, event_payload

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

QTABLE_AGENT = "sizing_qtable"
DQN_AGENT = "sizing_dqn"
SIZE_MULTIPLIERS = (0.3, 0.5, 0.7, 1.0, 1.5)
LEVERAGES = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0)
TAKE_PROFIT_STYLES = ("conservative", "balanced", "aggressive")
STOP_LOSS_STYLES = ("tight", "medium", "wide")
# (multiplier, leverage, take-profit, stop-loss); index 0 is the most cautious
QTABLE_ACTIONS: tuple[tuple[float, float, str, str], ...] = tuple(
    itertools.product(SIZE_MULTIPLIERS, LEVERAGES, TAKE_PROFIT_STYLES, STOP_LOSS_STYLES))
DQN_ACTIONS: tuple[tuple[str, float], ...] = (
    ("SKIP", 0.0), ("MICRO", 0.25), ("SMALL", 0.5), ("STANDARD", 1.0), ("MODERATE", 1.25), ("AGGRESSIVE", 1.5))
# The DQN's 11 features and the range each is scaled from (to [0, 1]; values outside are clipped to [-1, 2]).
DQN_FEATURES: tuple[str, ...] = (
    "trend_strength", "volatility_regime", "momentum_score", "signal_confidence", "entry_quality",
    "risk_reward_ratio", "current_exposure_pct", "win_rate_recent", "drawdown_pct", "max_position_pct",
    "remaining_daily_risk")
DQN_FEATURE_RANGES: Mapping[str, tuple[float, float]] = {
    "trend_strength": (-1.0, 1.0),
    "volatility_regime": (0.0, float(len(VOLATILITY_LEVELS) - 1)),  # index of LOW..EXTREME (a label is accepted)
    "momentum_score": (-1.0, 1.0),
    "signal_confidence": (0.0, 1.0),
    "entry_quality": (0.0, 1.0),
    "risk_reward_ratio": (0.0, 5.0),
    "current_exposure_pct": (0.0, 100.0),
    "win_rate_recent": (0.0, 1.0),
    "drawdown_pct": (0.0, 50.0),
    "max_position_pct": (0.0, 100.0),
    "remaining_daily_risk": (0.0, 10.0),  # % of equity still allowed to be lost today
}
QTABLE_FEATURES = ("market_regime", "signal_confidence", "current_exposure_pct", "win_rate_recent",
                   "volatility_level")
STATE_FILE = "agent.json"
WEIGHTS_FILE = "weights.pt"
REPLAY_FILE = "replay.npz"
FORMAT_VERSION = 1
_VOL_INDEX = {name: i for i, name in enumerate(VOLATILITY_LEVELS)}
_LOW = np.array([DQN_FEATURE_RANGES[f][0] for f in DQN_FEATURES])
_SPAN = np.array([DQN_FEATURE_RANGES[f][1] - DQN_FEATURE_RANGES[f][0] for f in DQN_FEATURES])


# ---- the safety clamp ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizingContext:
    """The book when a decision is made: the clamp's inputs that come from the trader, not the agent."""

    open_positions: int = 0
    remaining_daily_risk_pct: float | None = None  # None: no daily budget enforced here

    def __post_init__(self) -> None:
        n = self.open_positions
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"open_positions must be an integer >= 0, got {n!r}")
        r = self.remaining_daily_risk_pct
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0):
            raise ValueError(f"remaining_daily_risk_pct must be a finite number >= 0 or None, got {r!r}")


@dataclass(frozen=True)
class RawSizing:
    """What an agent proposes, before the clamp."""

    size_multiplier: float
    leverage: float
    take_profit: str = "balanced"
    stop_loss: str = "medium"


@dataclass(frozen=True)
class SizingDecision:
    """What is executed: ``risk_pct`` and ``leverage`` never exceed the risk mode; ``open`` is False when
    the clamp (or the agent) says skip. ``guardrails`` names what the clamp cut."""

    agent: str
    action: int
    open: bool
    risk_pct: float
    size_multiplier: float
    leverage: float
    take_profit: str
    stop_loss: str
    positions_after: int
    guardrails: tuple[str, ...]
    raw: RawSizing
    explored: bool = False
    fine_tune: float = 0.0

    def telemetry(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """The ``payload["sizing"]`` object of the trade's ``trade.closed`` event, for the online update."""
        return {"agent": self.agent, "action": self.action, "fine_tune": self.fine_tune,
                "guardrails": list(self.guardrails), "features": dict(features)}


class SafetyClamp:
    """Caps an agent's proposal at the active risk mode; the last word on every sizing decision."""

    __slots__ = ("mode", "base_risk_pct")

    def __init__(self, mode: RiskMode, *, base_risk_pct: float = 1.0):
        if not isinstance(mode, RiskMode):
            raise TypeError(f"mode must be a clm.policy.RiskMode, got {type(mode).__name__}")
        if isinstance(base_risk_pct, bool) or not isinstance(base_risk_pct, (int, float)) or not (
                math.isfinite(base_risk_pct) and base_risk_pct > 0):
            raise ValueError(f"base_risk_pct must be a finite number > 0, got {base_risk_pct!r}")
        self.mode = mode
        self.base_risk_pct = float(base_risk_pct)

    @classmethod
    def from_policy(cls, policy: Policy, *, base_risk_pct: float = 1.0) -> SafetyClamp:
        """The clamp of the policy's active risk mode (``policy.risk_modes.current``)."""
        return cls(policy.risk_modes.current, base_risk_pct=base_risk_pct)

    def apply(self, raw: RawSizing, context: SizingContext = SizingContext(), *, agent: str = "manual",
              action: int = -1, explored: bool = False, fine_tune: float = 0.0) -> SizingDecision:
        mode, guard = self.mode, []
        multiplier, leverage = raw.size_multiplier, raw.leverage
        take_profit = raw.take_profit if raw.take_profit in TAKE_PROFIT_STYLES else "conservative"
        stop_loss = raw.stop_loss if raw.stop_loss in STOP_LOSS_STYLES else "tight"
        invalid = (take_profit, stop_loss) != (raw.take_profit, raw.stop_loss)
        if not _finite(multiplier) or multiplier < 0:
            invalid, multiplier = True, 0.0
        if not _finite(leverage) or leverage < 1:
            invalid, leverage = True, 1.0
        if invalid:
            guard.append("invalid_output")
        leverage = float(leverage)
        if leverage > mode.max_leverage:
            guard.append("leverage_clamped")
            leverage = float(mode.max_leverage)
        risk = float(multiplier) * self.base_risk_pct
        if risk > mode.max_risk_pct_per_trade:
            guard.append("risk_clamped")
            risk = float(mode.max_risk_pct_per_trade)
        budget = context.remaining_daily_risk_pct
        if budget is not None and risk > budget:
            guard.append("daily_risk_exhausted")
            risk = float(budget)
        if risk > 0 and context.open_positions >= mode.max_positions:
            guard.append("max_positions")
            risk = 0.0
        opened = risk > 0
        return SizingDecision(
            agent=agent, action=int(action), open=opened, risk_pct=risk if opened else 0.0,
            size_multiplier=risk / self.base_risk_pct if opened else 0.0, leverage=leverage if opened else 1.0,
            take_profit=take_profit, stop_loss=stop_loss, positions_after=int(context.open_positions) + opened,
            guardrails=tuple(guard), raw=raw, explored=explored, fine_tune=float(fine_tune) if opened else 0.0)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(
        value)


# ---- configs ---------------------------------------------------------------------------------------
def _edges(name: str, value: tuple[float, ...], low: float, high: float) -> tuple[float, ...]:
    if not value:
        raise ValueError(f"{name} needs at least one edge")
    if not all(math.isfinite(v) and low <= v <= high for v in value):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {list(value)}")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError(f"{name} must be strictly increasing, got {list(value)}")
    return tuple(float(v) for v in value)


class _AgentConfig(RLSection):
    gamma: float = Field(0.0, ge=0, lt=1, description="discount of next_features' value (0: each trade an episode)")
    epsilon: float = Field(1.0, ge=0, le=1, description="initial exploration rate")
    epsilon_min: float = Field(0.05, ge=0, le=1)
    epsilon_decay: float = Field(0.995, gt=0, le=1, description="epsilon *= decay after every trade learnt")
    reset_epsilon: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _epsilons(self):
        if self.epsilon_min > self.epsilon:
            raise ValueError(f"epsilon_min ({self.epsilon_min}) must not exceed epsilon ({self.epsilon})")
        return self


class QTableSizerConfig(_AgentConfig):
    alpha: float = Field(0.1, gt=0, le=1)
    confidence_edges: tuple[float, ...] = (0.55, 0.65, 0.75, 0.85)
    exposure_edges: tuple[float, ...] = (10.0, 25.0, 50.0)  # % of equity already exposed
    win_rate_edges: tuple[float, ...] = (0.4, 0.55)
    reset_carry_over: float = Field(0.0, ge=0, le=1)

    @field_validator("confidence_edges", "win_rate_edges")
    @classmethod
    def _unit_edges(cls, value, info):
        return _edges(info.field_name, value, 0.0, 1.0)

    @field_validator("exposure_edges")
    @classmethod
    def _pct_edges(cls, value, info):
        return _edges(info.field_name, value, 0.0, 1000.0)


class DQNSizerConfig(_AgentConfig):
    gamma: float = Field(0.9, ge=0, lt=1, description="discount of next_features' value (no next: terminal)")
    learning_rate: float = Field(1e-3, gt=0, le=1)
    policy_learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=4096)
    replay_capacity: int = Field(10_000, ge=1, le=10_000_000)
    min_replay: int = Field(64, ge=1, description="transitions held before the first training step")
    target_sync_steps: int = Field(100, ge=1, description="training steps between target-network syncs")
    train_steps_per_trade: int = Field(1, ge=0, le=100)
    huber_delta: float = Field(1.0, gt=0)
    grad_clip: float = Field(10.0, gt=0)
    fine_tune_range: float = Field(0.2, ge=0, lt=1, description="the head moves the multiplier by up to +-this share")
    fine_tune_noise: float = Field(0.2, gt=0, le=1, description="exploration noise on the head's output (tanh units)")
    default_leverage: float = Field(1.0, ge=1, le=125)
    take_profit: Literal["conservative", "balanced", "aggressive"] = "balanced"
    stop_loss: Literal["tight", "medium", "wide"] = "medium"

    @model_validator(mode="after")
    def _replay(self) -> DQNSizerConfig:
        if self.batch_size > self.replay_capacity:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds replay_capacity ({self.replay_capacity})")
        if self.min_replay > self.replay_capacity:
            raise ValueError(f"min_replay ({self.min_replay}) exceeds replay_capacity ({self.replay_capacity})")
        return self


class SizingConfig(RLSection):
    """Which sizer runs (``agent``) and the settings of each."""

    agent: Literal["qtable", "dqn"] = "qtable"
    base_risk_pct: float = Field(1.0, gt=0, le=100, description="% of equity risked at multiplier 1.0")
    qtable: QTableSizerConfig = QTableSizerConfig()
    dqn: DQNSizerConfig = DQNSizerConfig()


# ---- shared pieces ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizingExperience:
    """One closed trade as a sizer learns it (features as given to ``decide``)."""

    features: Mapping[str, Any]
    action: int
    reward: float
    fine_tune: float = 0.0
    next_features: Mapping[str, Any] | None = None
    event_id: str | None = None


def _number(features: Mapping[str, Any], name: str) -> float:
    try:
        value = features[name]
    except KeyError:
        raise ValueError(f"sizing feature {name!r} is missing") from None
    try:
        return check_number(f"sizing feature {name}", value)
    except ValueError:
        raise ValueError(f"sizing feature {name!r} must be a finite number, got {value!r}") from None


class _Sizer:
    """What both sizers share: the clamp, epsilon, telemetry parsing, counters."""

    name = ""
    n_actions = 0

    def __init__(self, clamp: SafetyClamp, seed: int):
        if not isinstance(clamp, SafetyClamp):
            raise TypeError(f"clamp must be a SafetyClamp, got {type(clamp).__name__}")
        self.clamp = clamp
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.trades = 0
        self.trades_since_snapshot = 0
        self.pruned_states = 0
        self.version: str | None = None  # the stored version this sizer continues (set by clm.rl.store)
        self.online_state: dict[str, Any] = {}  # the online learner's cursor and baseline (kept by clm.rl.store)

    def experience(self, event: Mapping[str, Any], rewards: RewardEngine) -> SizingExperience | None:
        """The experience in a ``trade.closed`` event for this sizer; None when it is for another one."""
        if event.get("event_type") != "trade.closed":
            return None
        info = event_payload(event).get("sizing")
        if info is None:
            return None
        if not isinstance(info, Mapping):
            raise ValueError(f"payload.sizing must be an object, got {type(info).__name__}")
        if info.get("agent") != self.name:
            return None
        action = info.get("action")
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < self.n_actions:
            raise ValueError(f"payload.sizing.action must be an integer in [0, {self.n_actions}), got {action!r}")
        features = info.get("features")
        if not isinstance(features, Mapping):
            raise ValueError("payload.sizing.features must be an object")
        self.state(features)  # validates now, not in the middle of a training batch
        next_features = info.get("next_features")
        if next_features is not None:
            if not isinstance(next_features, Mapping):
                raise ValueError("payload.sizing.next_features must be an object")
            self.state(next_features)
        for name in ("pnl_pct", "duration_hours", "max_drawdown_pct"):
            if event.get(name) is None:
                raise ValueError(f"trade.closed event has no {name}: the sizing reward needs it")
        guardrails = info.get("guardrails") or ()
        reward = rewards.sizing(event["pnl_pct"], event["duration_hours"], event["max_drawdown_pct"],
                                bool(event.get("hit_tp")), bool(event.get("hit_sl")), guardrails=guardrails)
        fine = info.get("fine_tune") or 0.0
        return SizingExperience(features, action, reward, float(check_number("payload.sizing.fine_tune", fine)),
                                next_features, event.get("event_id"))

    def _decay(self, config: _AgentConfig) -> None:
        self.trades += 1
        self.trades_since_snapshot += 1
        self.epsilon = max(config.epsilon_min, self.epsilon * config.epsilon_decay)


# ---- the Q-table sizer -----------------------------------------------------------------------------
class QTableSizer(_Sizer):
    """Epsilon-greedy Q-table over bucketed states -> 270 (multiplier, leverage, take-profit, stop-loss)."""

    name = QTABLE_AGENT
    n_actions = len(QTABLE_ACTIONS)

    def __init__(self, config: QTableSizerConfig | Mapping[str, Any] | None = None, *, clamp: SafetyClamp,
                 seed: int = 0):
        super().__init__(clamp, seed)
        self.config = validate_config(QTableSizerConfig, config, source=f"{QTABLE_AGENT} config")
        self.table = QTable(self.n_actions)
        self.epsilon = self.config.epsilon

    def state(self, features: Mapping[str, Any]) -> tuple[str, int, int, int, str]:
        regime = features.get("market_regime")
        if regime not in CLASSES:
            raise ValueError(f"sizing feature 'market_regime' must be one of {list(CLASSES)}, got {regime!r}")
        volatility = features.get("volatility_level")
        if volatility not in _VOL_INDEX:
            raise ValueError(f"sizing feature 'volatility_level' must be one of {list(VOLATILITY_LEVELS)}, "
                             f"got {volatility!r}")
        c = self.config
        return (regime,
                bisect.bisect_right(c.confidence_edges, _number(features, "signal_confidence")),
                bisect.bisect_right(c.exposure_edges, _number(features, "current_exposure_pct")),
                bisect.bisect_right(c.win_rate_edges, _number(features, "win_rate_recent")),
                volatility)

    def propose(self, features: Mapping[str, Any], *, explore: bool = True) -> tuple[int, RawSizing, bool]:
        """The agent's own answer (unclamped): action index, proposal, whether it explored."""
        state = self.state(features)
        explored = explore and self.rng.random() < self.epsilon
        action = int(self.rng.integers(self.n_actions)) if explored else self.table.greedy(state)
        multiplier, leverage, take_profit, stop_loss = QTABLE_ACTIONS[action]
        return action, RawSizing(multiplier, leverage, take_profit, stop_loss), explored

    def decide(self, features: Mapping[str, Any], context: SizingContext = SizingContext(), *,
               explore: bool = True) -> SizingDecision:
        action, raw, explored = self.propose(features, explore=explore)
        return self.clamp.apply(raw, context, agent=self.name, action=action, explored=explored)

    def update(self, features: Mapping[str, Any], action: int, reward: float,
               next_features: Mapping[str, Any] | None = None) -> float:
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        target = float(reward)
        if next_features is not None and self.config.gamma > 0:
            target += self.config.gamma * float(self.table.values(self.state(next_features)).max())
        error = self.table.update(self.state(features), int(action), target, self.config.alpha)
        self._decay(self.config)
        return error

    def learn(self, experiences: Sequence[SizingExperience]) -> int:
        for exp in experiences:
            self.update(exp.features, exp.action, exp.reward, exp.next_features)
        return len(experiences)

    def prune(self, max_states: int) -> int:
        dropped = self.table.prune(max_states)
        self.pruned_states += dropped
        return dropped

    def reset(self, *, epsilon: float | None = None) -> None:
        self.table.reset(self.config.reset_carry_over)
        self.epsilon = self.config.reset_epsilon if epsilon is None else float(epsilon)
        self.trades_since_snapshot = 0

    def metrics(self) -> dict[str, Any]:
        return {"trades": self.trades, "states": len(self.table), "epsilon": self.epsilon,
                "pruned_states": self.pruned_states}

    def save(self, directory: Path) -> list[str]:
        payload = {
            "format_version": FORMAT_VERSION, "agent": self.name, "config": self.config.model_dump(mode="json"),
            "seed": self.seed, "epsilon": self.epsilon, "trades": self.trades,
            "trades_since_snapshot": self.trades_since_snapshot, "pruned_states": self.pruned_states,
            "rng": self.rng.bit_generator.state, "table": self.table.to_payload(),
        }
        write_json(Path(directory), STATE_FILE, payload)
        return [STATE_FILE]

    @classmethod
    def load(cls, directory: Path, *, clamp: SafetyClamp) -> QTableSizer:
        payload = read_json(Path(directory), STATE_FILE)
        if payload.get("format_version") != FORMAT_VERSION or payload.get("agent") != QTABLE_AGENT:
            raise ValueError(f"{directory} is not a {QTABLE_AGENT} snapshot (format {FORMAT_VERSION})")
        sizer = cls(payload["config"], clamp=clamp, seed=int(payload["seed"]))
        _restore_counters(sizer, payload)
        table = QTable.from_payload(payload["table"])
        if table.n_actions != cls.n_actions:
            raise ValueError(f"{QTABLE_AGENT} snapshot has {table.n_actions} actions, expected {cls.n_actions}")
        sizer.table = table
        return sizer


def _restore_counters(sizer: _Sizer, payload: Mapping[str, Any]) -> None:
    sizer.epsilon = float(payload["epsilon"])
    sizer.trades = int(payload["trades"])
    sizer.trades_since_snapshot = int(payload["trades_since_snapshot"])
    sizer.pruned_states = int(payload.get("pruned_states", 0))
    sizer.rng.bit_generator.state = payload["rng"]


# ---- the DQN sizer ---------------------------------------------------------------------------------
def dqn_features(features: Mapping[str, Any]) -> np.ndarray:
    """The 11 features scaled to about [0, 1] (clipped to [-1, 2]) as float32; errors name the feature."""
    values = np.empty(len(DQN_FEATURES))
    for i, name in enumerate(DQN_FEATURES):
        value = features.get(name)
        if name == "volatility_regime" and isinstance(value, str):
            if value not in _VOL_INDEX:
                raise ValueError(f"sizing feature 'volatility_regime' must be an index or one of "
                                 f"{list(VOLATILITY_LEVELS)}, got {value!r}")
            values[i] = _VOL_INDEX[value]
        else:
            values[i] = _number(features, name)
    return np.clip((values - _LOW) / _SPAN, -1.0, 2.0).astype(np.float32)


class ReplayBuffer:
    """A ring buffer of transitions in preallocated numpy arrays, sampled uniformly by a seeded generator."""

    def __init__(self, capacity: int, n_features: int = len(DQN_FEATURES)):
        self.capacity = int(capacity)
        self.states = np.zeros((capacity, n_features), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.fine = np.zeros(capacity, np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.next_states = np.zeros((capacity, n_features), np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def add(self, state: np.ndarray, action: int, fine: float, reward: float, next_state: np.ndarray | None) -> None:
        i = self.cursor
        self.states[i] = state
        self.actions[i] = action
        self.fine[i] = fine
        self.rewards[i] = reward
        if next_state is None:
            self.next_states[i] = 0.0
            self.done[i] = 1.0
        else:
            self.next_states[i] = next_state
            self.done[i] = 0.0
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        idx = rng.integers(self.size, size=batch)
        return (self.states[idx], self.actions[idx], self.fine[idx], self.rewards[idx], self.next_states[idx],
                self.done[idx])

    _ARRAYS = ("states", "actions", "fine", "rewards", "next_states", "done")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, size=np.array([self.size, self.cursor]),
                 **{name: getattr(self, name)[: self.size] for name in self._ARRAYS})
        return buffer.getvalue()

    def load_bytes(self, data: bytes) -> None:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            size, cursor = (int(v) for v in arrays["size"])
            if size > self.capacity:
                raise ValueError(f"replay snapshot holds {size} transitions, capacity is {self.capacity}")
            for name in self._ARRAYS:
                getattr(self, name)[:size] = arrays[name]
        self.size, self.cursor = size, cursor % self.capacity


def _build_networks(seed: int):
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):  # the global torch RNG is left as it was
        torch.manual_seed(seed)
        q_net = nn.Sequential(nn.Linear(len(DQN_FEATURES), 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                              nn.Linear(32, len(DQN_ACTIONS)))
        policy = nn.Sequential(nn.Linear(len(DQN_FEATURES), 64), nn.ReLU(), nn.Linear(64, 1), nn.Tanh())
        target = nn.Sequential(nn.Linear(len(DQN_FEATURES), 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                               nn.Linear(32, len(DQN_ACTIONS)))
    target.load_state_dict(q_net.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    return q_net, target, policy


class DQNSizer(_Sizer):
    """DQN over the 6 multipliers plus a tanh policy head fine-tuning the chosen multiplier; see the module doc."""

    name = DQN_AGENT
    n_actions = len(DQN_ACTIONS)

    def __init__(self, config: DQNSizerConfig | Mapping[str, Any] | None = None, *, clamp: SafetyClamp,
                 seed: int = 0):
        import torch

        super().__init__(clamp, seed)
        self.config = validate_config(DQNSizerConfig, config, source=f"{DQN_AGENT} config")
        self.epsilon = self.config.epsilon
        self.q_net, self.target_net, self.policy = _build_networks(self.seed)
        self.q_optimizer = torch.optim.Adam(self.q_net.parameters(), lr=self.config.learning_rate)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.policy_learning_rate)
        self.replay = ReplayBuffer(self.config.replay_capacity)
        self.steps = 0
        self.target_syncs = 0
        self.last_loss: dict[str, float] = {}

    def state(self, features: Mapping[str, Any]) -> np.ndarray:
        return dqn_features(features)

    def q_values(self, features: Mapping[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.q_net(torch.from_numpy(dqn_features(features))[None])[0].numpy().astype(np.float64)

    def propose(self, features: Mapping[str, Any], *, explore: bool = True
                ) -> tuple[int, RawSizing, bool, float]:
        """Action index, unclamped proposal, whether it explored, and the fine-tune in [-1, 1]."""
        import torch

        x = torch.from_numpy(dqn_features(features))[None]
        with torch.inference_mode():
            q = self.q_net(x)
            head = float(self.policy(x))
        explored = explore and self.rng.random() < self.epsilon
        action = int(self.rng.integers(self.n_actions)) if explored else int(q.argmax())
        fine = head
        if explore:
            fine = float(np.clip(head + self.rng.normal(0.0, self.config.fine_tune_noise), -1.0, 1.0))
        multiplier = DQN_ACTIONS[action][1] * (1.0 + self.config.fine_tune_range * fine)
        raw = RawSizing(multiplier, self.config.default_leverage, self.config.take_profit, self.config.stop_loss)
        return action, raw, explored, fine

    def decide(self, features: Mapping[str, Any], context: SizingContext = SizingContext(), *,
               explore: bool = True) -> SizingDecision:
        action, raw, explored, fine = self.propose(features, explore=explore)
        return self.clamp.apply(raw, context, agent=self.name, action=action, explored=explored, fine_tune=fine)

    def remember(self, features: Mapping[str, Any], action: int, reward: float, *, fine_tune: float = 0.0,
                 next_features: Mapping[str, Any] | None = None) -> None:
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action must be in [0, {self.n_actions}), got {action}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        next_state = None if next_features is None else dqn_features(next_features)
        self.replay.add(dqn_features(features), int(action), float(np.clip(fine_tune, -1, 1)), float(reward),
                        next_state)

    def train_step(self) -> dict[str, float] | None:
        """One gradient step on a replay batch (None until ``min_replay`` transitions are held); syncs the
        target network every ``target_sync_steps`` steps."""
        import torch
        import torch.nn.functional as F

        c = self.config
        if len(self.replay) < max(c.min_replay, c.batch_size):
            return None
        s, a, f, r, s2, done = (torch.from_numpy(v) for v in self.replay.sample(c.batch_size, self.rng))
        q_sa = self.q_net(s).gather(1, a[:, None])[:, 0]
        with torch.no_grad():
            target = r + c.gamma * (1.0 - done) * self.target_net(s2).max(1).values
        q_loss = F.smooth_l1_loss(q_sa, target, beta=c.huber_delta)
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), c.grad_clip)
        self.q_optimizer.step()

        traded = (a > 0).float()  # SKIP has no multiplier to fine-tune
        advantage = (target - q_sa.detach()) * traded
        mu = self.policy(s)[:, 0]
        policy_loss = (advantage * (f - mu) ** 2).sum() / (2 * c.fine_tune_noise ** 2 * traded.sum().clamp(min=1))
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
        self.policy_optimizer.step()

        self.steps += 1
        if self.steps % c.target_sync_steps == 0:
            self.sync_target()
        self.last_loss = {"q_loss": q_loss.item(), "policy_loss": policy_loss.item()}
        return self.last_loss

    def sync_target(self) -> None:
        self.target_net.load_state_dict(self.q_net.state_dict())
        self.target_syncs += 1

    def learn(self, experiences: Sequence[SizingExperience]) -> int:
        for exp in experiences:
            self.remember(exp.features, exp.action, exp.reward, fine_tune=exp.fine_tune,
                          next_features=exp.next_features)
            for _ in range(self.config.train_steps_per_trade):
                self.train_step()
            self._decay(self.config)
        return len(experiences)

    def prune(self, max_states: int) -> int:
        """A network has no states to prune (the replay buffer is bounded by its capacity)."""
        return 0

    def reset(self, *, epsilon: float | None = None) -> None:
        """Fresh weights (a new seed stream), empty replay, exploration back up."""
        import torch

        self.seed += 1
        self.q_net, self.target_net, self.policy = _build_networks(self.seed)
        self.q_optimizer = torch.optim.Adam(self.q_net.parameters(), lr=self.config.learning_rate)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.policy_learning_rate)
        self.replay = ReplayBuffer(self.config.replay_capacity)
        self.steps = 0
        self.epsilon = self.config.reset_epsilon if epsilon is None else float(epsilon)
        self.trades_since_snapshot = 0

    def metrics(self) -> dict[str, Any]:
        return {"trades": self.trades, "steps": self.steps, "target_syncs": self.target_syncs,
                "replay": len(self.replay), "epsilon": self.epsilon, **self.last_loss}

    def state_dicts(self) -> dict[str, Any]:
        return {"q_net": self.q_net.state_dict(), "target_net": self.target_net.state_dict(),
                "policy": self.policy.state_dict(), "q_optimizer": self.q_optimizer.state_dict(),
                "policy_optimizer": self.policy_optimizer.state_dict()}

    def save(self, directory: Path) -> list[str]:
        import torch

        directory = Path(directory)
        buffer = io.BytesIO()
        torch.save(self.state_dicts(), buffer)
        write_bytes(directory, WEIGHTS_FILE, buffer.getvalue())
        write_bytes(directory, REPLAY_FILE, self.replay.to_bytes())
        payload = {
            "format_version": FORMAT_VERSION, "agent": self.name, "config": self.config.model_dump(mode="json"),
            "seed": self.seed, "epsilon": self.epsilon, "trades": self.trades,
            "trades_since_snapshot": self.trades_since_snapshot, "pruned_states": 0, "steps": self.steps,
            "target_syncs": self.target_syncs, "rng": self.rng.bit_generator.state,
        }
        write_json(directory, STATE_FILE, payload)
        return [STATE_FILE, WEIGHTS_FILE, REPLAY_FILE]

    @classmethod
    def load(cls, directory: Path, *, clamp: SafetyClamp) -> DQNSizer:
        """Load weights with ``weights_only=True`` (no pickled code runs); callers verify the manifest first."""
        import torch

        directory = Path(directory)
        payload = read_json(directory, STATE_FILE)
        if payload.get("format_version") != FORMAT_VERSION or payload.get("agent") != DQN_AGENT:
            raise ValueError(f"{directory} is not a {DQN_AGENT} snapshot (format {FORMAT_VERSION})")
        sizer = cls(payload["config"], clamp=clamp, seed=int(payload["seed"]))
        _restore_counters(sizer, payload)
        sizer.steps = int(payload["steps"])
        sizer.target_syncs = int(payload["target_syncs"])
        with open(directory / WEIGHTS_FILE, "rb") as fh:
            state = torch.load(fh, weights_only=True, map_location="cpu")
        sizer.q_net.load_state_dict(state["q_net"])
        sizer.target_net.load_state_dict(state["target_net"])
        sizer.policy.load_state_dict(state["policy"])
        sizer.q_optimizer.load_state_dict(state["q_optimizer"])
        sizer.policy_optimizer.load_state_dict(state["policy_optimizer"])
        sizer.replay.load_bytes((directory / REPLAY_FILE).read_bytes())
        return sizer


# ---- selection by config ---------------------------------------------------------------------------
Sizer = QTableSizer | DQNSizer


def make_sizer(config: SizingConfig | Mapping[str, Any] | None = None, *, risk_mode: RiskMode,
               seed: int = 0) -> Sizer:
    """The sizer ``config.agent`` names, clamped by ``risk_mode`` (``policy.risk_modes.current``)."""
    config = validate_config(SizingConfig, config, source="sizing config")
    clamp = SafetyClamp(risk_mode, base_risk_pct=config.base_risk_pct)
    if config.agent == "dqn":
        return DQNSizer(config.dqn, clamp=clamp, seed=seed)
    return QTableSizer(config.qtable, clamp=clamp, seed=seed)


def parameters_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True when two networks hold bit-identical parameters (reproducibility and target-sync checks)."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


__all__ = [
    "DQN_ACTIONS", "DQN_AGENT", "DQN_FEATURES", "DQN_FEATURE_RANGES", "LEVERAGES", "QTABLE_ACTIONS", "QTABLE_AGENT",
    "QTABLE_FEATURES", "SIZE_MULTIPLIERS", "STOP_LOSS_STYLES", "TAKE_PROFIT_STYLES", "DQNSizer", "DQNSizerConfig",
    "QTableSizer", "QTableSizerConfig", "RawSizing", "ReplayBuffer", "SafetyClamp", "Sizer", "SizingConfig",
    "SizingContext", "SizingDecision", "SizingExperience", "dqn_features", "make_sizer", "parameters_equal",
]
