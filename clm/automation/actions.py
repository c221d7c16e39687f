"""What a signal asks for: the severity ladder of drift and performance signals, and regime changes.

Drift and performance signals (the issue's ladder):

* LOW: logged, nothing launched;
* MEDIUM: a partial retrain of the model types the signal names that this deployment trains
  (``CLM_ENGINES``); unknown types are logged and skipped, and with none left nothing is launched;
* HIGH: a full retrain;
* CRITICAL: the halt file first (serving refuses to trade while it exists), then a full retrain.

A regime change resets the RL agent when ``rl_maintenance.reset_on_regime_change`` is on and asks for a
full retrain when ``retrain_on_regime_change`` is; the first regime after the warm-up (``from`` null)
is not a change and launches nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from clm.automation.jobs import FULL_RETRAIN, PARTIAL_RETRAIN
from clm.automation.signals import RegimeSignal
from clm.drift.detector import Severity
from clm.policy import Policy


class Action(enum.StrEnum):
    LOG_ONLY = "LOG_ONLY"
    PARTIAL_RETRAIN = "PARTIAL_RETRAIN"
    FULL_RETRAIN = "FULL_RETRAIN"
    HALT_AND_FULL_RETRAIN = "HALT_AND_FULL_RETRAIN"

    @property
    def job(self) -> str | None:
        """The Dagster job that carries the action out (None: nothing to launch)."""
        return {Action.PARTIAL_RETRAIN: PARTIAL_RETRAIN, Action.FULL_RETRAIN: FULL_RETRAIN,
                Action.HALT_AND_FULL_RETRAIN: FULL_RETRAIN}.get(self)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    model_types: tuple[str, ...] = ()  # PARTIAL_RETRAIN: the known types to retrain
    skipped_types: tuple[str, ...] = ()  # named by the signal, not trained by this deployment


def decide_drift(severity: Severity | str, model_types: Sequence[str], known_types: Sequence[str]) -> Decision:
    """The action for a drift or performance signal of ``severity`` naming ``model_types``."""
    severity = Severity(severity)
    if severity is Severity.LOW:
        return Decision(Action.LOG_ONLY, "LOW: logged only")
    if severity is Severity.HIGH:
        return Decision(Action.FULL_RETRAIN, "HIGH: full retrain")
    if severity is Severity.CRITICAL:
        return Decision(Action.HALT_AND_FULL_RETRAIN, "CRITICAL: trading halted, full retrain")
    known = set(known_types)
    ordered = tuple(dict.fromkeys(model_types))
    affected = tuple(t for t in ordered if t in known)
    unknown = tuple(t for t in ordered if t not in known)
    skipped = f"; not trained here, skipped: {', '.join(unknown)}" if unknown else ""
    if not affected:
        named = ", ".join(ordered) if ordered else "none"
        return Decision(Action.LOG_ONLY, f"MEDIUM: no model type to retrain (named: {named}; trained here: "
                                         f"{', '.join(known_types) or 'none'})", (), unknown)
    return Decision(Action.PARTIAL_RETRAIN, f"MEDIUM: partial retrain of {', '.join(affected)}{skipped}",
                    affected, unknown)


@dataclass(frozen=True)
class RegimePlan:
    rl_reset: bool
    retrain: bool
    reason: str


def decide_regime(signal: RegimeSignal, policy: Policy) -> RegimePlan:
    """What one regime change launches under ``policy`` (read fresh by the caller)."""
    if signal.from_regime is None:
        return RegimePlan(False, False, f"first regime after the warm-up ({signal.to_regime}): not a change")
    reset = policy.rl_maintenance.reset_on_regime_change
    retrain = policy.retrain_on_regime_change
    parts = [
        "RL reset" if reset else "no RL reset (rl_maintenance.reset_on_regime_change is off)",
        "full retrain" if retrain else "no retrain (retrain_on_regime_change is off)",
    ]
    return RegimePlan(reset, retrain, f"regime {signal.change} at {signal.at:%Y-%m-%dT%H:%M:%SZ}: " + ", ".join(parts))
