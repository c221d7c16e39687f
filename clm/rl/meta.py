"""The meta-strategy agent: which strategy family to run in the current market, learnt from closed trades.

A Q-table over (market_regime, volatility_level, liquidity_level, recent_performance) -> one of
``STRATEGIES``. The regime labels are those of ``clm.regimes`` (trend / range / panic / illiquid,
volatility LOW..EXTREME, liquidity LOW..HIGH); recent performance is GOOD / NEUTRAL / POOR from the
agent's own win rate over its last trades, so a losing streak moves the agent into states where it
learnt to be careful. Exploration is epsilon-greedy with multiplicative decay.

Why ``gamma`` defaults to 0: a trade's reward is fully known when it closes and the next market
state is not caused by the strategy picked, so each trade is its own episode (a contextual bandit);
a longer horizon can be configured when ``next_state`` is supplied.

Telemetry: a ``trade.closed`` event updates the agent when its payload carries a ``meta_strategy``
object: ``{"strategy", "market_regime", "volatility_level", "liquidity_level"}`` as decided, plus
optional ``recent_performance`` (default: the agent's current label), ``win_rate`` (default: the
strategy's win rate over its last ``win_rate_window`` trades, this one included) and ``next_state``.
The event's ``pnl_pct``, ``duration_hours`` and ``max_drawdown_pct`` feed the meta-strategy reward.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from clm.models.artifacts import read_json, write_json
from clm.regimes.config import CLASSES, LIQUIDITY_LEVELS, VOLATILITY_LEVELS
from clm.rl.config import RLSection, validate_config
from clm.rl.qtable import QTable
from clm.rl.rewards import RewardEngine, check_number, event_payload

logger = logging.getLogger(__name__)

AGENT_NAME = "meta_strategy"
STRATEGIES = ("trend_follow", "mean_reversion", "breakout", "range_bound", "defensive")
PERFORMANCE_LEVELS = ("GOOD", "NEUTRAL", "POOR")
STATE_FILE = "agent.json"
FORMAT_VERSION = 1
_INDEX = {name: i for i, name in enumerate(STRATEGIES)}


class MetaState(NamedTuple):
    market_regime: str
    volatility_level: str
    liquidity_level: str
    recent_performance: str


class MetaConfig(RLSection):
    alpha: float = Field(0.1, gt=0, le=1, description="learning rate of the Q-table update")
    gamma: float = Field(0.0, ge=0, lt=1, description="discount of next_state's value (0: each trade an episode)")
    epsilon: float = Field(1.0, ge=0, le=1, description="initial exploration rate")
    epsilon_min: float = Field(0.05, ge=0, le=1)
    epsilon_decay: float = Field(0.995, gt=0, le=1, description="epsilon *= decay after every trade learnt")
    reset_epsilon: float = Field(0.5, ge=0, le=1, description="exploration rate of a version started by a reset")
    reset_carry_over: float = Field(0.0, ge=0, le=1,
                                    description="share of the archived Q-values a reset keeps (0: a fresh table)")
    performance_window: int = Field(20, ge=1, le=10_000, description="trades behind recent_performance")
    min_performance_trades: int = Field(5, ge=1, description="NEUTRAL until this many trades were seen")
    good_win_rate: float = Field(0.55, gt=0, le=1)
    poor_win_rate: float = Field(0.45, ge=0, lt=1)
    win_rate_window: int = Field(20, ge=1, le=10_000, description="a strategy's trades behind its reward win rate")
    unseen_action: Literal["trend_follow", "mean_reversion", "breakout", "range_bound", "defensive"] = Field(
        "defensive", description="the greedy choice in a state never learnt")

    @model_validator(mode="after")
    def _ordered(self) -> MetaConfig:
        if self.poor_win_rate >= self.good_win_rate:
            raise ValueError(f"poor_win_rate ({self.poor_win_rate}) must be below good_win_rate ({self.good_win_rate})")
        if self.epsilon_min > self.epsilon:
            raise ValueError(f"epsilon_min ({self.epsilon_min}) must not exceed epsilon ({self.epsilon})")
        return self


def _label(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def make_state(market_regime: str, volatility_level: str, liquidity_level: str, recent_performance: str) -> MetaState:
    """A checked state: every label must be one of its vocabulary (a typo would silently create a new state)."""
    return MetaState(_label("market_regime", market_regime, CLASSES),
                     _label("volatility_level", volatility_level, VOLATILITY_LEVELS),
                     _label("liquidity_level", liquidity_level, LIQUIDITY_LEVELS),
                     _label("recent_performance", recent_performance, PERFORMANCE_LEVELS))


@dataclass(frozen=True)
class MetaExperience:
    """One closed trade as the agent learns it."""

    state: MetaState
    strategy: str
    reward: float
    won: bool
    next_state: MetaState | None = None
    event_id: str | None = None


class MetaStrategyAgent:
    """Epsilon-greedy Q-table over ``MetaState`` -> ``STRATEGIES``; seeded, saved as one JSON file."""

    name = AGENT_NAME

    def __init__(self, config: MetaConfig | Mapping[str, Any] | None = None, *, seed: int = 0):
        self.config = validate_config(MetaConfig, config, source=f"{AGENT_NAME} config")
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.table = QTable(len(STRATEGIES))
        self.epsilon = self.config.epsilon
        self.trades = 0
        self.trades_since_snapshot = 0
        self.pruned_states = 0
        self.version: str | None = None  # the stored version this agent continues (set by clm.rl.store)
        self.online_state: dict[str, Any] = {}  # the online learner's cursor and baseline (kept by clm.rl.store)
        self._recent: deque[bool] = deque(maxlen=self.config.performance_window)
        self._outcomes: dict[str, deque[bool]] = {s: deque(maxlen=self.config.win_rate_window) for s in STRATEGIES}

    # ---- states and decisions ------------------------------------------------------------------
    @property
    def recent_performance(self) -> str:
        if len(self._recent) < self.config.min_performance_trades:
            return "NEUTRAL"
        rate = sum(self._recent) / len(self._recent)
        if rate >= self.config.good_win_rate:
            return "GOOD"
        if rate <= self.config.poor_win_rate:
            return "POOR"
        return "NEUTRAL"

    def state(self, market_regime: str, volatility_level: str, liquidity_level: str,
              recent_performance: str | None = None) -> MetaState:
        """The state now: the market's labels plus the agent's own recent performance unless given."""
        return make_state(market_regime, volatility_level, liquidity_level,
                          self.recent_performance if recent_performance is None else recent_performance)

    def greedy(self, state: MetaState) -> str:
        if state not in self.table:
            return self.config.unseen_action
        return STRATEGIES[self.table.greedy(state)]

    def act(self, state: MetaState, *, explore: bool = True) -> str:
        """Epsilon-greedy: a uniformly random strategy with probability epsilon, else the greedy one."""
        if explore and self.rng.random() < self.epsilon:
            return STRATEGIES[int(self.rng.integers(len(STRATEGIES)))]
        return self.greedy(state)

    def q_values(self, state: MetaState) -> dict[str, float]:
        return dict(zip(STRATEGIES, map(float, self.table.values(state)), strict=True))

    def ranking(self, market_regime: str | None = None) -> list[str]:
        """Strategies best first by their visit-weighted mean Q over the states of ``market_regime`` (all
        states when None); strategies never tried there come last."""
        if market_regime is not None:
            _label("market_regime", market_regime, CLASSES)
        weighted = np.zeros(len(STRATEGIES))
        visits = np.zeros(len(STRATEGIES))
        for state, row in self.table.q.items():
            if market_regime is None or state[0] == market_regime:
                counts = self.table.visits[state]
                weighted += row * counts
                visits += counts
        mean = np.where(visits > 0, weighted / np.maximum(visits, 1), -np.inf)
        order = sorted(range(len(STRATEGIES)), key=lambda i: (-mean[i], i))
        return [STRATEGIES[i] for i in order]

    # ---- learning ----------------------------------------------------------------------------------
    def strategy_win_rate(self, strategy: str, *, including: bool | None = None) -> float:
        """Win rate of ``strategy`` over its last trades (plus one more outcome when ``including`` is given)."""
        outcomes = list(self._outcomes[_label("strategy", strategy, STRATEGIES)])
        if including is not None:
            keep = self.config.win_rate_window - 1
            outcomes = [*(outcomes[-keep:] if keep else []), including]
        return sum(outcomes) / len(outcomes) if outcomes else 0.5

    def experience(self, event: Mapping[str, Any], rewards: RewardEngine) -> MetaExperience | None:
        """The experience in a ``trade.closed`` event, None when it is not for this agent; ``ValueError``
        naming the field when it is malformed."""
        if event.get("event_type") != "trade.closed":
            return None
        info = event_payload(event).get(AGENT_NAME)
        if info is None:
            return None
        if not isinstance(info, Mapping):
            raise ValueError(f"payload.{AGENT_NAME} must be an object, got {type(info).__name__}")
        strategy = _label(f"payload.{AGENT_NAME}.strategy", info.get("strategy"), STRATEGIES)
        state = self._state_from(info, f"payload.{AGENT_NAME}")
        next_info = info.get("next_state")
        next_state = None if next_info is None else self._state_from(next_info, f"payload.{AGENT_NAME}.next_state")
        for name in ("pnl_pct", "duration_hours", "max_drawdown_pct"):
            if event.get(name) is None:
                raise ValueError(f"trade.closed event has no {name}: the meta-strategy reward needs it")
        pnl = check_number("pnl_pct", event["pnl_pct"])
        won = pnl > 0
        win_rate = info.get("win_rate")
        if win_rate is None:
            win_rate = self.strategy_win_rate(strategy, including=won)
        reward = rewards.meta_strategy(pnl, event["duration_hours"], event["max_drawdown_pct"], win_rate)
        return MetaExperience(state, strategy, reward, won, next_state, event.get("event_id"))

    def _state_from(self, info: Any, where: str) -> MetaState:
        if not isinstance(info, Mapping):
            raise ValueError(f"{where} must be an object, got {type(info).__name__}")
        try:
            return make_state(info.get("market_regime"), info.get("volatility_level"), info.get("liquidity_level"),
                              info.get("recent_performance") or self.recent_performance)
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None

    def update(self, state: MetaState, strategy: str, reward: float, *, won: bool | None = None,
               next_state: MetaState | None = None) -> float:
        """One Q-learning step; records the outcome (``won``, default reward > 0) and decays epsilon.
        Returns the TD error."""
        action = _INDEX[_label("strategy", strategy, STRATEGIES)]
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        target = float(reward)
        if next_state is not None and self.config.gamma > 0:
            target += self.config.gamma * float(self.table.values(next_state).max())
        error = self.table.update(state, action, target, self.config.alpha)
        won = reward > 0 if won is None else bool(won)
        self._recent.append(won)
        self._outcomes[strategy].append(won)
        self.trades += 1
        self.trades_since_snapshot += 1
        self.epsilon = max(self.config.epsilon_min, self.epsilon * self.config.epsilon_decay)
        return error

    def learn(self, experiences: Sequence[MetaExperience]) -> int:
        for exp in experiences:
            self.update(exp.state, exp.strategy, exp.reward, won=exp.won, next_state=exp.next_state)
        return len(experiences)

    # ---- maintenance -------------------------------------------------------------------------------
    def prune(self, max_states: int) -> int:
        dropped = self.table.prune(max_states)
        self.pruned_states += dropped
        if dropped:
            logger.info("%s: pruned %d least recently visited states (kept %d)", self.name, dropped, max_states)
        return dropped

    def reset(self, *, epsilon: float | None = None) -> None:
        """Start over after a regime shift: Q-values scaled by ``reset_carry_over`` (0: cleared), exploration
        back up to ``reset_epsilon``. The recent-performance history stays: it describes the trader."""
        self.table.reset(self.config.reset_carry_over)
        self.epsilon = self.config.reset_epsilon if epsilon is None else float(epsilon)
        self.trades_since_snapshot = 0

    def metrics(self) -> dict[str, Any]:
        return {"trades": self.trades, "states": len(self.table), "epsilon": self.epsilon,
                "pruned_states": self.pruned_states, "recent_performance": self.recent_performance}

    # ---- persistence -------------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "agent": self.name,
            "config": self.config.model_dump(mode="json"),
            "seed": self.seed,
            "epsilon": self.epsilon,
            "trades": self.trades,
            "trades_since_snapshot": self.trades_since_snapshot,
            "pruned_states": self.pruned_states,
            "recent": [bool(x) for x in self._recent],
            "outcomes": {s: [bool(x) for x in d] for s, d in self._outcomes.items()},
            "rng": self.rng.bit_generator.state,
            "table": self.table.to_payload(),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> MetaStrategyAgent:
        if payload.get("format_version") != FORMAT_VERSION or payload.get("agent") != AGENT_NAME:
            raise ValueError(f"not a {AGENT_NAME} snapshot (format {FORMAT_VERSION})")
        agent = cls(payload["config"], seed=int(payload["seed"]))
        agent.epsilon = float(payload["epsilon"])
        agent.trades = int(payload["trades"])
        agent.trades_since_snapshot = int(payload["trades_since_snapshot"])
        agent.pruned_states = int(payload.get("pruned_states", 0))
        agent._recent.extend(payload["recent"])
        for strategy, outcomes in payload["outcomes"].items():
            agent._outcomes[_label("strategy", strategy, STRATEGIES)].extend(outcomes)
        agent.rng.bit_generator.state = payload["rng"]
        table = QTable.from_payload(payload["table"])
        if table.n_actions != len(STRATEGIES):
            raise ValueError(f"{AGENT_NAME} snapshot has {table.n_actions} actions, expected {len(STRATEGIES)}")
        for state in table.q:  # plain tuples equal (and hash like) MetaState tuples
            make_state(*state)
        agent.table = table
        return agent

    def save(self, directory: Path) -> list[str]:
        """Write the agent into ``directory``; returns the file names (for the manifest)."""
        write_json(Path(directory), STATE_FILE, self.to_payload())
        return [STATE_FILE]

    @classmethod
    def load(cls, directory: Path) -> MetaStrategyAgent:
        return cls.from_payload(read_json(Path(directory), STATE_FILE))
