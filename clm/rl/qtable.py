"""A sparse Q-table shared by the meta-strategy agent and the Q-table sizer.

States are tuples of labels; a state gets a row on its first update only, so reading an unseen state
costs nothing and the table holds what was actually visited. Each row remembers the update step at
which it was last touched, which is what pruning keeps (the most recently visited states): old states
from a market that no longer exists are the ones to forget.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

State = tuple[Hashable, ...]


class QTable:
    """``state -> array of action values``, with visit counts and last-update steps per state."""

    __slots__ = ("n_actions", "q", "visits", "last_step", "step", "_zeros")

    def __init__(self, n_actions: int):
        if isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions < 1:
            raise ValueError(f"n_actions must be an integer >= 1, got {n_actions!r}")
        self.n_actions = n_actions
        self.q: dict[State, np.ndarray] = {}
        self.visits: dict[State, np.ndarray] = {}
        self.last_step: dict[State, int] = {}
        self.step = 0
        self._zeros = np.zeros(n_actions)
        self._zeros.flags.writeable = False

    def __len__(self) -> int:
        return len(self.q)

    def __contains__(self, state: State) -> bool:
        return state in self.q

    def values(self, state: State) -> np.ndarray:
        """The state's action values (read-only zeros for an unseen state; do not modify)."""
        return self.q.get(state, self._zeros)

    def greedy(self, state: State) -> int:
        """The best action; ties go to the lowest index (callers order actions from the most cautious)."""
        row = self.q.get(state)
        return 0 if row is None else int(row.argmax())

    def update(self, state: State, action: int, target: float, alpha: float) -> float:
        """Move Q(state, action) a step ``alpha`` towards ``target``; returns the TD error."""
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action {action} out of range (the table has {self.n_actions} actions)")
        row = self.q.get(state)
        if row is None:
            row = self.q[state] = np.zeros(self.n_actions)
            self.visits[state] = np.zeros(self.n_actions, dtype=np.int64)
        error = float(target) - float(row[action])
        row[action] += alpha * error
        self.visits[state][action] += 1
        self.step += 1
        self.last_step[state] = self.step
        return error

    def prune(self, max_states: int) -> int:
        """Keep the ``max_states`` most recently updated states; returns how many were dropped."""
        excess = len(self.q) - max_states
        if excess <= 0:
            return 0
        oldest = sorted(self.last_step.items(), key=lambda item: item[1])[:excess]
        for state, _ in oldest:
            del self.q[state], self.visits[state], self.last_step[state]
        return excess

    def scale(self, factor: float) -> None:
        """Multiply every value by ``factor`` (a reset that keeps a fraction of what was learnt)."""
        for row in self.q.values():
            row *= factor

    def clear(self) -> None:
        self.q.clear()
        self.visits.clear()
        self.last_step.clear()

    def reset(self, carry_over: float) -> None:
        """After a regime shift: keep ``carry_over`` of every value (0: start from an empty table)."""
        if carry_over > 0:
            self.scale(carry_over)
        else:
            self.clear()

    # ---- persistence -----------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """Plain JSON data, states sorted so the same table always gives the same bytes."""
        rows = [
            {"state": list(state), "q": [float(v) for v in self.q[state]],
             "visits": [int(v) for v in self.visits[state]], "last_step": int(self.last_step[state])}
            for state in sorted(self.q, key=lambda s: tuple(map(str, s)))
        ]
        return {"n_actions": self.n_actions, "step": self.step, "states": rows}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> QTable:
        table = cls(int(payload["n_actions"]))
        table.step = int(payload.get("step", 0))
        for row in payload["states"]:
            state = tuple(row["state"])
            q = np.asarray(row["q"], dtype=np.float64)
            visits = np.asarray(row["visits"], dtype=np.int64)
            if q.shape != (table.n_actions,) or visits.shape != (table.n_actions,):
                raise ValueError(f"Q-table row {state} has {q.size} values for {table.n_actions} actions")
            if not np.isfinite(q).all():
                raise ValueError(f"Q-table row {state} holds a non-finite value")
            table.q[state] = q
            table.visits[state] = visits
            table.last_step[state] = int(row["last_step"])
        return table
