"""The online path: buffer telemetry, compute rewards, learn in batches, unless the rewards drifted.

``OnlineLearner`` takes ``trade.closed`` events (``add``), turns those meant for its agent into
experiences with their rewards (``RewardEngine``), and every ``batch_size`` experiences decides:

- while the baseline (the rewards of the batches it accepted, last ``baseline_window``) is shorter
  than ``min_baseline``, the batch is learnt (nothing to compare with yet);
- otherwise the KL divergence of the batch's reward distribution from the baseline's, on the
  baseline's quantile bins, is compared with ``rl_maintenance.drift_kl_threshold``: above it, the
  update is skipped, the buffer cleared and the reason logged (and recorded as an UPDATE_SKIPPED row
  when a store is given). Rewards that moved that much mean the market, the execution or the
  telemetry changed under the agent; learning from them would overwrite what it knows with noise
  from a different world. A regime reset (``reset_baseline``) starts the comparison over; after
  ``rebaseline_after_skips`` consecutive skips the drifted distribution becomes the new baseline
  (logged), so a lasting change cannot stop learning for ever.

After a learnt batch: states pruned beyond ``prune_old_states_threshold`` and a snapshot every
``snapshot_interval_trades`` trades (when a store is given).

Across runs: rows of the ``feedback_events`` table carry their place in the telemetry files
(``source_file``, ``source_line``). The learner keeps a cursor, per file the last line it consumed
(learnt, skipped by the guardrail, dropped by a reset, or not for its agent), and refuses a row at or
before it, so no event is learnt twice; rows still waiting in the buffer for a full batch are not
consumed and are read again by the next run. ``state()`` (the cursor and the reward baseline) is kept
with the agent (``agent.online_state``, stored by ``clm.rl.store`` beside the agent's files and written
with every snapshot), and a learner built on a stored agent carries on from it. A reset keeps the
cursor and drops the baseline (``reset_online_state``). Rows with a position must come in file and
line order (as ``clm.automation.rl.online_update`` feeds them); events without one are not tracked.

Why quantile bins of the baseline: every bin then holds about the same share of the baseline, so
the estimate does not depend on the reward scale and no bin is empty on the baseline side; the
additive smoothing keeps KL finite for a batch landing where the baseline never went.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from clm.policy import RLMaintenance
from clm.rl.config import RLSection, validate_config
from clm.rl.rewards import RewardEngine, default_engine

logger = logging.getLogger(__name__)


Position = tuple[str, int]


def event_position(event: Mapping[str, Any]) -> Position | None:
    """Where a ``feedback_events`` row came from (``source_file``, ``source_line``); None for a plain event."""
    file, line = event.get("source_file"), event.get("source_line")
    if isinstance(file, str) and file and isinstance(line, int) and not isinstance(line, bool):
        return file, line
    return None


def reset_online_state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The online state a reset leaves: the cursor (what was read stays read), no reward baseline (the old
    rewards describe another market)."""
    cursor = (state or {}).get("cursor")
    return {"cursor": dict(cursor)} if cursor else {}


class OnlineConfig(RLSection):
    batch_size: int = Field(50, ge=1, le=100_000, description="experiences per update (and per KL check)")
    max_buffer: int = Field(10_000, ge=1, description="beyond this the oldest buffered experiences are dropped")
    baseline_window: int = Field(1000, ge=10, description="accepted rewards the baseline keeps")
    min_baseline: int = Field(200, ge=10, description="baseline rewards needed before batches are checked")
    kl_bins: int = Field(10, ge=2, le=100, description="quantile bins of the baseline")
    kl_smoothing: float = Field(0.5, gt=0, le=10, description="pseudo-count added to every bin")
    rebaseline_after_skips: int | None = Field(5, ge=1, description="consecutive skips that adopt the new "
                                                                     "distribution as baseline (None: never)")

    @model_validator(mode="after")
    def _sizes(self) -> OnlineConfig:
        if self.batch_size > self.max_buffer:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds max_buffer ({self.max_buffer})")
        if self.min_baseline > self.baseline_window:
            raise ValueError(f"min_baseline ({self.min_baseline}) exceeds baseline_window ({self.baseline_window})")
        return self


def reward_kl(recent: Sequence[float], baseline: Sequence[float], *, bins: int = 10, smoothing: float = 0.5) -> float:
    """KL(recent || baseline) of two reward samples on the baseline's quantile bins, with additive smoothing."""
    base = np.asarray(baseline, dtype=np.float64)
    now = np.asarray(recent, dtype=np.float64)
    if base.size == 0 or now.size == 0:
        raise ValueError("reward_kl needs rewards on both sides")
    edges = np.unique(np.quantile(base, np.arange(1, bins) / bins))
    grid = np.concatenate(([-np.inf], edges, [np.inf]))
    p_counts = np.histogram(now, grid)[0].astype(np.float64)
    q_counts = np.histogram(base, grid)[0].astype(np.float64)
    p = (p_counts + smoothing) / (now.size + smoothing * p_counts.size)
    q = (q_counts + smoothing) / (base.size + smoothing * q_counts.size)
    return float(np.sum(p * np.log(p / q)))


@dataclass(frozen=True)
class OnlineReport:
    """What one batch did."""

    agent: str
    events: int
    mean_reward: float
    kl: float | None
    threshold: float
    skipped: bool
    reason: str
    learned: int = 0
    pruned: int = 0
    snapshot: Any = None  # clm.rl.store.VersionRecord when a snapshot was written
    skip_record: Any = None
    rebaselined: bool = False
    dropped: int = 0  # experiences a skip dropped (the batch and the buffer cleared with it)


@dataclass
class _Stats:
    added: int = 0
    already_seen: int = 0
    ignored: int = 0
    rejected: int = 0
    dropped: int = 0
    skipped_batches: int = 0
    learned_batches: int = 0
    rejections: list[str] = field(default_factory=list)


class OnlineLearner:
    """Buffers experiences of one agent and learns them batch by batch behind the KL guardrail."""

    def __init__(self, agent, *, maintenance: RLMaintenance | None = None, rewards: RewardEngine | None = None,
                 store=None, config: OnlineConfig | Mapping[str, Any] | None = None):
        self.agent = agent
        self.maintenance = maintenance if maintenance is not None else RLMaintenance()
        if not isinstance(self.maintenance, RLMaintenance):
            raise TypeError(f"maintenance must be clm.policy.RLMaintenance, got {type(self.maintenance).__name__}")
        self.rewards = rewards if rewards is not None else default_engine()
        self.store = store
        self.config = validate_config(OnlineConfig, config, source="online learner config")
        self.buffer: deque = deque(maxlen=self.config.max_buffer)
        self._positions: deque[Position | None] = deque(maxlen=self.config.max_buffer)  # one per buffered
        self.baseline: deque[float] = deque(maxlen=self.config.baseline_window)
        self.consecutive_skips = 0
        self._skipped_rewards: list[float] = []
        self.cursor: dict[str, int] = {}  # per telemetry file, the last line consumed
        self._read: list[Position] = []  # positions read since the last commit, in order
        self._last_read: dict[str, int] = {}
        self.stats = _Stats()
        self.restore(getattr(agent, "online_state", None) or {})

    # ---- state kept with the agent -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The cursor and the reward baseline, as plain JSON data."""
        return {"cursor": dict(sorted(self.cursor.items())), "baseline": [float(r) for r in self.baseline],
                "consecutive_skips": self.consecutive_skips, "skipped_rewards": list(self._skipped_rewards)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Carry on from ``state()`` (of a stored agent); ``ValueError`` naming the key when it is malformed."""
        cursor = state.get("cursor") or {}
        if not isinstance(cursor, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in cursor.items()):
            raise ValueError(f"online state cursor must map file names to line numbers, got {cursor!r}")
        rewards = [*state.get("baseline", ()), *state.get("skipped_rewards", ())]
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and np.isfinite(r) for r in rewards):
            raise ValueError("online state baseline must hold finite rewards")
        self.cursor = dict(cursor)
        self._last_read = dict(cursor)
        self.baseline.clear()
        self.baseline.extend(float(r) for r in state.get("baseline", ()))
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self._skipped_rewards = [float(r) for r in state.get("skipped_rewards", ())]

    def save_state(self) -> dict[str, Any]:
        """Put ``state()`` on the agent, where the store writes it with the agent's files."""
        self.agent.online_state = self.state()
        return self.agent.online_state

    def seen(self, position: Position) -> bool:
        """Whether the row at ``position`` was already consumed (by this learner or a stored one)."""
        file, line = position
        return line <= self.cursor.get(file, 0)

    def _commit(self, through: Position | None = None) -> None:
        """Mark what was read as consumed: everything (default) or up to and including ``through``."""
        if through is None:
            done, self._read = self._read, []
        else:
            i = self._read.index(through) + 1
            done, self._read = self._read[:i], self._read[i:]
        for file, line in done:
            self.cursor[file] = max(self.cursor.get(file, 0), line)

    # ---- intake ------------------------------------------------------------------------------------
    def add(self, event: Mapping[str, Any]) -> bool:
        """Buffer ``event`` if it is for this agent; a malformed one is logged and counted, never raised, so
        one bad line cannot stop learning. A row at or before the cursor is not read again. Returns whether it
        was buffered."""
        position = event_position(event)
        if position is not None:
            file, line = position
            if self.seen(position) or line == self._last_read.get(file):
                self.stats.already_seen += 1
                return False
            if line < self._last_read.get(file, 0):
                raise ValueError(f"telemetry rows must come in line order: {file} line {line} after line "
                                 f"{self._last_read[file]}")
            self._last_read[file] = line
            self._read.append(position)
        try:
            experience = self.agent.experience(event, self.rewards)
        except (ValueError, TypeError) as exc:
            self.stats.rejected += 1
            message = f"event {event.get('event_id')!r}: {exc}"
            if len(self.stats.rejections) < 100:
                self.stats.rejections.append(message)
            logger.warning("%s: telemetry event rejected: %s", self.agent.name, message)
            experience = None
        else:
            if experience is None:
                self.stats.ignored += 1
        if experience is None:
            if not self.buffer:  # nothing pending before it: consumed
                self._commit()
            return False
        if len(self.buffer) == self.buffer.maxlen:
            self.stats.dropped += 1
        self.buffer.append(experience)
        self._positions.append(position)
        self.stats.added += 1
        return True

    def extend(self, events: Iterable[Mapping[str, Any]]) -> list[OnlineReport]:
        """``add`` every event, processing each batch as soon as it is full; returns the batch reports."""
        reports = []
        for event in events:
            if self.add(event) and len(self.buffer) >= self.config.batch_size:
                reports.append(self.process())
        return reports

    # ---- learning ----------------------------------------------------------------------------------
    def reset_baseline(self) -> None:
        """Forget the reward baseline (after a regime reset the old rewards describe another market)."""
        self.baseline.clear()
        self.consecutive_skips = 0
        self._skipped_rewards.clear()

    def apply_resets(self) -> list:
        """Consume the agent's pending reset requests through the store (``RLStore.apply_reset_requests``);
        after a reset the reward baseline starts over. Returns what the store did."""
        if self.store is None:
            raise ValueError("apply_resets needs a store (OnlineLearner(..., store=RLStore(...)))")
        done = self.store.apply_reset_requests(self.agent, self.maintenance)
        if any(hasattr(item, "started") for item in done):
            self.reset_baseline()
            self.buffer.clear()  # experiences of the old market, rewarded by the old table's win rates
            self._positions.clear()
            self._commit()
        return done

    def process(self) -> OnlineReport | None:
        """Learn (or skip) the oldest ``batch_size`` buffered experiences; None while fewer are buffered."""
        size = self.config.batch_size
        if len(self.buffer) < size:
            return None
        batch = [self.buffer.popleft() for _ in range(size)]
        positions = [self._positions.popleft() for _ in range(size)]
        rewards = [float(e.reward) for e in batch]
        mean = float(np.mean(rewards))
        threshold = self.maintenance.drift_kl_threshold
        name = self.agent.name
        kl = None
        if len(self.baseline) >= self.config.min_baseline:
            kl = reward_kl(rewards, self.baseline, bins=self.config.kl_bins, smoothing=self.config.kl_smoothing)
            if kl > threshold:
                return self._skip(batch, rewards, mean, kl, threshold)
            reason = f"KL {kl:.3f} <= drift_kl_threshold {threshold}"
        else:
            reason = f"baseline warming up ({len(self.baseline)} of {self.config.min_baseline} rewards): not checked"
        self.consecutive_skips = 0
        self._skipped_rewards.clear()
        learned = self.agent.learn(batch)
        self.baseline.extend(rewards)
        pruned = self.agent.prune(self.maintenance.prune_old_states_threshold)
        last = next((p for p in reversed(positions) if p is not None), None)
        if not self.buffer:
            self._commit()
        elif last is not None:
            self._commit(last)
        snapshot = None
        if self.store is not None:
            self.save_state()  # a snapshot holds what the agent learnt and what it read, together
            snapshot = self.store.maybe_snapshot(self.agent, self.maintenance.snapshot_interval_trades)
        self.stats.learned_batches += 1
        logger.info("%s: learnt %d trades (mean reward %.3f; %s)", name, learned, mean, reason)
        return OnlineReport(name, len(batch), mean, kl, threshold, False, reason, learned, pruned, snapshot)

    def _skip(self, batch: list, rewards: list[float], mean: float, kl: float, threshold: float) -> OnlineReport:
        name = self.agent.name
        dropped = len(batch) + len(self.buffer)
        base_mean = float(np.mean(self.baseline))
        reason = (f"reward distribution drifted: KL(recent || baseline) = {kl:.3f} > drift_kl_threshold {threshold} "
                  f"over {len(batch)} trades (recent mean reward {mean:.3f}, baseline mean {base_mean:.3f} over "
                  f"{len(self.baseline)}); update skipped and buffer cleared ({dropped} experiences dropped)")
        self.buffer.clear()
        self._positions.clear()
        self._commit()
        self.stats.skipped_batches += 1
        self.consecutive_skips += 1
        self._skipped_rewards.extend(rewards)
        rebaselined = False
        limit = self.config.rebaseline_after_skips
        if limit is not None and self.consecutive_skips >= limit:
            self.baseline.clear()
            self.baseline.extend(self._skipped_rewards)
            self._skipped_rewards.clear()
            self.consecutive_skips = 0
            rebaselined = True
            reason += f"; {limit} consecutive skips: the drifted rewards are the new baseline"
        logger.warning("%s: %s", name, reason)
        record = None
        if self.store is not None:
            record = self.store.record_skip(self.agent, reason=reason, metrics={
                "kl": kl, "threshold": threshold, "events": len(batch), "dropped": dropped, "mean_reward": mean,
                "baseline_mean_reward": base_mean, "rebaselined": rebaselined})
        return OnlineReport(name, len(batch), mean, kl, threshold, True, reason, skip_record=record,
                            rebaselined=rebaselined, dropped=dropped)
