"""The reward engine: every reward the RL agents learn from, from one validated schema, clipped.

``reward_schema.yaml`` (next to this module) holds the weights; operators tune them without a code
change, and ``load_reward_schema`` refuses unknown keys and bad values naming the key. Every reward
comes back clipped to ``[-clip, +clip]`` (5 by default) so one freak trade cannot dominate a Q-table
or a DQN's Huber loss.

The two trading rewards (continuous-learning design):

    meta-strategy  PnL% + (24 / max(hours, 0.1)) x 0.1 - |max drawdown%| x 2 + (win rate - 0.5) x 10
                   3% in 2 h with a 1% drawdown and a 70% win rate: 3 + 1.2 - 2 + 2 = 4.2
    sizing         PnL% - 0.05 x hours - |max drawdown%| x 3 + 1.0 if take-profit hit - 0.5 if stop-loss hit

plus the feedback rewards of the telemetry stream: explicit feedback (weight x score), ROI
(scale x trade_roi), a latency bonus, and penalties when a guardrail had to step in.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from clm.rl.config import RLConfigError, RLSection, validate_config

SCHEMA_FILE = "reward_schema.yaml"


class ExplicitFeedbackWeights(RLSection):
    weight: float = Field(2.0, ge=0, le=100)


class RoiWeights(RLSection):
    scale: float = Field(1.0, ge=0, le=100)


class LatencyWeights(RLSection):
    bonus: float = Field(0.5, ge=0, le=100)
    fast_ms: float = Field(100.0, ge=0)
    slow_ms: float = Field(1000.0, gt=0)
    max_penalty: float = Field(0.5, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> LatencyWeights:
        if self.slow_ms <= self.fast_ms:
            raise ValueError(f"slow_ms must be greater than fast_ms ({self.fast_ms}), got {self.slow_ms}")
        return self


class MetaStrategyWeights(RLSection):
    pnl_weight: float = Field(1.0, ge=0)
    speed_hours: float = Field(24.0, ge=0)
    min_hours: float = Field(0.1, gt=0)
    speed_weight: float = Field(0.1, ge=0)
    drawdown_weight: float = Field(2.0, ge=0)
    win_rate_pivot: float = Field(0.5, ge=0, le=1)
    win_rate_weight: float = Field(10.0, ge=0)


class SizingWeights(RLSection):
    pnl_weight: float = Field(1.0, ge=0)
    hourly_cost: float = Field(0.05, ge=0)
    drawdown_weight: float = Field(3.0, ge=0)
    take_profit_bonus: float = Field(1.0, ge=0)
    stop_loss_penalty: float = Field(0.5, ge=0)


def _default_penalties() -> dict[str, float]:
    return {"risk_clamped": 0.5, "leverage_clamped": 0.5, "max_positions": 1.0, "daily_risk_exhausted": 1.0,
            "invalid_output": 2.0}


class RewardSchema(RLSection):
    version: int = Field(1, ge=1, le=1)
    clip: float = Field(5.0, gt=0, le=1000, description="every reward is clipped to [-clip, +clip]")
    explicit_feedback: ExplicitFeedbackWeights = ExplicitFeedbackWeights()
    roi: RoiWeights = RoiWeights()
    latency: LatencyWeights = LatencyWeights()
    guardrail_penalties: dict[str, float] = Field(default_factory=_default_penalties)
    meta_strategy: MetaStrategyWeights = MetaStrategyWeights()
    sizing: SizingWeights = SizingWeights()

    @model_validator(mode="after")
    def _penalties(self) -> RewardSchema:
        for name, value in self.guardrail_penalties.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"guardrail_penalties.{name}: a penalty is a finite number >= 0, got {value}")
        return self


def default_schema_path() -> Path:
    """Where the packaged ``reward_schema.yaml`` is (next to this module, in a checkout or a wheel)."""
    return Path(str(resources.files("clm.rl").joinpath(SCHEMA_FILE)))


def parse_reward_schema(data: Any, *, source: str = SCHEMA_FILE) -> RewardSchema:
    return validate_config(RewardSchema, data, source=source)


def load_reward_schema(path: str | os.PathLike[str] | None = None) -> RewardSchema:
    """Read and validate a reward schema (default: the packaged one, read through importlib.resources);
    errors name the file and the key."""
    source = str(path) if path is not None else f"clm/rl/{SCHEMA_FILE}"
    try:
        if path is None:
            text = resources.files("clm.rl").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RLConfigError(f"{source}: cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RLConfigError(f"{source}: not valid YAML: {exc}") from exc
    return parse_reward_schema(data, source=source)


def event_payload(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """An event's payload as a mapping: a dict as emitted, or the canonical JSON text of the
    ``feedback_events`` table; empty when there is none. ``ValueError`` when it is neither."""
    payload = event.get("payload")
    if payload is None:
        return {}
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ValueError(f"event payload is not valid JSON: {exc}") from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"event payload must be a JSON object, got {type(payload).__name__}")
    return payload


def check_number(name: str, value: Any) -> float:
    """A finite float, or ``ValueError`` naming the input: a NaN reward would poison a Q-table silently."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"reward input {name} must be a finite number, got {value!r}")
    return float(value)


class RewardEngine:
    """Rewards from trade outcomes and telemetry, weighted by a ``RewardSchema`` and clipped."""

    def __init__(self, schema: RewardSchema | Mapping[str, Any] | None = None):
        self.schema = load_reward_schema() if schema is None else parse_reward_schema(schema, source="reward schema")

    @property
    def clip_bound(self) -> float:
        return self.schema.clip

    def clip(self, value: float) -> float:
        bound = self.schema.clip
        return min(bound, max(-bound, float(value)))

    # ---- trading rewards -------------------------------------------------------------------------
    def meta_strategy(self, pnl_pct: float, hours: float, max_drawdown_pct: float, win_rate: float) -> float:
        """Reward of one closed trade for the strategy that chose it: profit, speed, drawdown, consistency."""
        w = self.schema.meta_strategy
        pnl, hours = check_number("pnl_pct", pnl_pct), check_number("hours", hours)
        dd, win = check_number("max_drawdown_pct", max_drawdown_pct), check_number("win_rate", win_rate)
        if hours < 0:
            raise ValueError(f"reward input hours must be >= 0, got {hours}")
        if not 0.0 <= win <= 1.0:
            raise ValueError(f"reward input win_rate must be in [0, 1], got {win}")
        raw = (w.pnl_weight * pnl + w.speed_hours / max(hours, w.min_hours) * w.speed_weight
               - abs(dd) * w.drawdown_weight + (win - w.win_rate_pivot) * w.win_rate_weight)
        return self.clip(raw)

    def sizing(self, pnl_pct: float, hours: float, max_drawdown_pct: float, hit_tp: bool = False,
               hit_sl: bool = False, *, guardrails: Iterable[str] = ()) -> float:
        """Reward of one closed trade for the sizer: profit net of holding time and drawdown, exits, guardrails."""
        w = self.schema.sizing
        pnl, hours = check_number("pnl_pct", pnl_pct), check_number("hours", hours)
        dd = check_number("max_drawdown_pct", max_drawdown_pct)
        if hours < 0:
            raise ValueError(f"reward input hours must be >= 0, got {hours}")
        raw = (w.pnl_weight * pnl - w.hourly_cost * hours - abs(dd) * w.drawdown_weight
               + (w.take_profit_bonus if hit_tp else 0.0) - (w.stop_loss_penalty if hit_sl else 0.0))
        return self.clip(raw - self._penalty(guardrails))

    # ---- feedback rewards ------------------------------------------------------------------------
    def explicit_feedback(self, score: float) -> float:
        return self.clip(self.schema.explicit_feedback.weight * check_number("score", score))

    def roi(self, trade_roi: float) -> float:
        return self.clip(self.schema.roi.scale * check_number("trade_roi", trade_roi))

    def latency(self, latency_ms: float) -> float:
        """Full bonus up to ``fast_ms``, linear to 0 at ``slow_ms``, then a penalty up to ``max_penalty``."""
        w = self.schema.latency
        ms = check_number("latency_ms", latency_ms)
        if ms < 0:
            raise ValueError(f"reward input latency_ms must be >= 0, got {ms}")
        if ms <= w.fast_ms:
            value = w.bonus
        elif ms <= w.slow_ms:
            value = w.bonus * (w.slow_ms - ms) / (w.slow_ms - w.fast_ms)
        else:
            value = -w.max_penalty * min(1.0, (ms - w.slow_ms) / w.slow_ms)
        return self.clip(value)

    def guardrail(self, names: Iterable[str]) -> float:
        """The (negative) reward of the guardrails that stepped in; unknown names are refused."""
        return self.clip(-self._penalty(names))

    def _penalty(self, names: Iterable[str]) -> float:
        if isinstance(names, str):
            names = (names,)
        penalties = self.schema.guardrail_penalties
        total = 0.0
        for name in names:
            if name not in penalties:
                raise ValueError(f"unknown guardrail {name!r}; the reward schema knows {sorted(penalties)}")
            total += penalties[name]
        return total

    def feedback_event(self, event: Mapping[str, Any]) -> float | None:
        """Reward of one telemetry event from the fields it has (explicit score, trade ROI, latency and the
        payload's ``guardrails`` list), summed then clipped; None when it carries none of them."""
        parts = []
        if event.get("event_type") == "feedback.explicit" and event.get("score") is not None:
            parts.append(self.schema.explicit_feedback.weight * check_number("score", event["score"]))
        if event.get("trade_roi") is not None:
            parts.append(self.schema.roi.scale * check_number("trade_roi", event["trade_roi"]))
        if event.get("latency_ms") is not None:
            parts.append(self.latency(event["latency_ms"]))
        guardrails = event_payload(event).get("guardrails")
        if guardrails:
            parts.append(-self._penalty(guardrails))
        return self.clip(sum(parts)) if parts else None


_DEFAULT: RewardEngine | None = None


def default_engine() -> RewardEngine:
    """The engine of the packaged schema, read once per process (the file ships with the code)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = RewardEngine()
    return _DEFAULT


def meta_strategy_reward(pnl_pct: float, hours: float, max_drawdown_pct: float, win_rate: float) -> float:
    return default_engine().meta_strategy(pnl_pct, hours, max_drawdown_pct, win_rate)


def sizing_reward(pnl_pct: float, hours: float, max_drawdown_pct: float, hit_tp: bool = False,
                  hit_sl: bool = False) -> float:
    return default_engine().sizing(pnl_pct, hours, max_drawdown_pct, hit_tp, hit_sl)
