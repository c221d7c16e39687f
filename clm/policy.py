"""The continuous-learning policy: ``policy.yaml``, validated, read fresh by every run that needs it.

Operators change thresholds without a deploy, so the file is read at the start of each run (never
cached across runs) and checked completely: a wrong type, an unknown key or an out-of-range value
fails with a ``PolicyError`` naming the file and the key path, e.g.
``policy.yaml: drift_detection.psi.significant: must be greater than moderate (0.1), got 0.05``.
The ``costs`` section is the one place the trading-cost assumptions are set (``Policy.cost_config()``):
the evaluation, the shadow test, supervision, serving's ranking and the RL replay all take them from here.
The file lives at ``CLM_POLICY`` (default ``policy.yaml`` in the working directory); a missing file
means the defaults below, which the repository's ``policy.yaml`` spells out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from clm.evaluation.costs import CostConfig

DEFAULT_PATH = "policy.yaml"


class PolicyError(ValueError):
    """``policy.yaml`` is unreadable or invalid; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class AutoPromoteThreshold(_Section):
    """When a shadow challenger may replace the champion (clm.shadow)."""

    min_samples: int = Field(1000, ge=30, description="closed paired signals before any decision")
    min_improvement_pct: float = Field(5.0, ge=0, le=1000,
                                       description="challenger's mean net return must beat the champion's by this %")
    max_drawdown_pct: float = Field(20.0, gt=0, le=100, description="a challenger drawing down more is never promoted")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided error rate of the paired test (Holm-corrected)")
    n_bootstrap: int = Field(2000, ge=200, le=100_000)
    block_length: int | None = Field(None, ge=1, description="bootstrap block in signals (default: about n^(1/3))")
    max_samples: int = Field(20_000, ge=100, description="a challenger still undecided after this many is REJECTED")


class KSThresholds(_Section):
    statistic: float = Field(0.1, gt=0, lt=1, description="KS D at or above which a feature may drift")
    p_value: float = Field(0.01, gt=0, lt=1, description="and whose p-value is below this")


class PSIThresholds(_Section):
    moderate: float = Field(0.1, gt=0, description="PSI 0.1: a moderate shift (convention)")
    significant: float = Field(0.25, gt=0, description="PSI 0.25: a significant shift (convention)")
    bins: int = Field(10, ge=2, le=100, description="quantile bins fixed on the reference")

    @model_validator(mode="after")
    def _ordered(self) -> PSIThresholds:
        if self.significant <= self.moderate:
            raise ValueError(f"significant: must be greater than moderate ({self.moderate}), got {self.significant}")
        return self


class SeverityRules(_Section):
    """Share of features drifting (or a performance/prediction alarm) -> severity."""

    medium_drift_share: float = Field(0.05, gt=0, le=1)
    high_drift_share: float = Field(0.25, gt=0, le=1)
    critical_drift_share: float = Field(0.5, gt=0, le=1)
    performance_drift: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "HIGH"
    prediction_drift: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "MEDIUM"

    @model_validator(mode="after")
    def _ordered(self) -> SeverityRules:
        if not self.medium_drift_share <= self.high_drift_share <= self.critical_drift_share:
            raise ValueError(
                "medium_drift_share <= high_drift_share <= critical_drift_share must hold, got "
                f"{self.medium_drift_share}, {self.high_drift_share}, {self.critical_drift_share}"
            )
        return self


class PerformanceDriftRules(_Section):
    """When the champion's realised results dropped against the reference window (clm.drift)."""

    min_signals: int = Field(100, ge=10, description="closed signals each window needs before it is tested")
    hit_rate_p_value: float = Field(0.01, gt=0, lt=1, description="one-sided two-proportion z-test for a drop")
    min_hit_rate_drop: float = Field(0.05, ge=0, lt=1, description="and the hit rate fell by at least this much")
    cusum_k: float = Field(0.15, ge=0, description="CUSUM slack per signal on net PnL, in reference std units")
    cusum_h: float = Field(30.0, gt=0, description="CUSUM alarm level, in reference std units")


class DriftDetection(_Section):
    check_interval_hours: float = Field(6.0, gt=0, le=24 * 31)
    reference_days: int = Field(14, ge=1, description="reference window: the days before the recent window")
    recent_days: int = Field(2, ge=1, description="the window compared with the reference")
    min_samples: int = Field(100, ge=2, description="non-null values a feature needs in each window to be tested")
    ks: KSThresholds = KSThresholds()
    psi: PSIThresholds = PSIThresholds()
    severity_rules: SeverityRules = SeverityRules()
    performance: PerformanceDriftRules = PerformanceDriftRules()


class RLMaintenance(_Section):
    snapshot_interval_trades: int = Field(100, ge=1)
    reset_on_regime_change: bool = True
    prune_old_states_threshold: int = Field(10_000, ge=10)
    drift_kl_threshold: float = Field(0.5, gt=0)


class RiskMode(_Section):
    max_risk_pct_per_trade: float = Field(gt=0, le=100)
    max_leverage: float = Field(ge=1, le=125)
    max_positions: int = Field(ge=1, le=10_000)


def _default_modes() -> dict[str, RiskMode]:
    return {
        "conservative": RiskMode(max_risk_pct_per_trade=0.5, max_leverage=2, max_positions=3),
        "balanced": RiskMode(max_risk_pct_per_trade=1.0, max_leverage=3, max_positions=5),
        "aggressive": RiskMode(max_risk_pct_per_trade=2.0, max_leverage=5, max_positions=10),
    }


class RiskModes(_Section):
    active: str = "balanced"
    modes: dict[str, RiskMode] = Field(default_factory=_default_modes)

    @model_validator(mode="after")
    def _known(self) -> RiskModes:
        if self.active not in self.modes:
            raise ValueError(f"active: {self.active!r} is not one of the modes {sorted(self.modes)}")
        return self

    @property
    def current(self) -> RiskMode:
        return self.modes[self.active]


class Supervision(_Section):
    """Health thresholds of an ACTIVE model (clm.supervision)."""

    min_win_rate: float = Field(0.45, ge=0, le=1)
    max_calibration_error: float = Field(0.15, ge=0, le=1)
    max_latency_ms: float = Field(500.0, gt=0)
    min_long_short_ratio: float = Field(0.33, gt=0)
    max_long_short_ratio: float = Field(3.0, gt=0)
    min_coverage: float = Field(0.9, ge=0, le=1, description="share of bars the model answered")
    window_signals: int = Field(500, ge=20, description="recent closed signals the health is measured on")

    @model_validator(mode="after")
    def _ordered(self) -> Supervision:
        if self.min_long_short_ratio >= self.max_long_short_ratio:
            raise ValueError("min_long_short_ratio must be below max_long_short_ratio, got "
                             f"{self.min_long_short_ratio} >= {self.max_long_short_ratio}")
        return self


def _cost_default(name: str) -> Callable[[], Any]:
    """``CostConfig``'s default for ``name``, read when a ``Costs`` is built: the defaults live in one place
    (``clm.evaluation.costs``, imported lazily so that this module stays light and free of import cycles)."""
    def default() -> Any:
        from clm.evaluation.costs import CostConfig

        spec = CostConfig.__dataclass_fields__[name]
        return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default

    return default


def _cost_problem(name: str, value: Any) -> str | None:
    """``CostConfig``'s own check of one setting (its rules, not a copy of them): the problem, or None."""
    from clm.evaluation.costs import CostConfig

    try:
        CostConfig(**{name: value})
    except ValueError as exc:
        message = str(exc)
        for prefix in (f"{name} ", f"{name}: "):
            if message.startswith(prefix):
                return message[len(prefix):]
        return message
    return None


class Costs(_Section):
    """The trading-cost assumptions (``clm.evaluation.costs.CostConfig``, field for field): round-trip costs
    in bps of the traded notional, and the size of one trade per quote currency. Each value is checked by
    ``CostConfig`` itself; ``Policy.cost_config()`` builds the one every run uses."""

    maker_fee_bps: float = Field(default_factory=_cost_default("maker_fee_bps"), description="fee per fill, maker")
    taker_fee_bps: float = Field(default_factory=_cost_default("taker_fee_bps"), description="fee per fill, taker")
    use_taker: bool = Field(default_factory=_cost_default("use_taker"),
                            description="charge the taker fee (else the maker fee)")
    slippage_bps: float = Field(default_factory=_cost_default("slippage_bps"), description="per fill, fixed")
    impact_coefficient: float = Field(default_factory=_cost_default("impact_coefficient"),
                                      description="bps per fill per unit of sqrt(notional / quote volume)")
    max_participation: float = Field(default_factory=_cost_default("max_participation"),
                                     description="share of a bar's quote volume a trade may take (capacity)")
    min_edge_after_cost_bps: float = Field(default_factory=_cost_default("min_edge_after_cost_bps"),
                                           description="a trade is taken when its expected edge net of costs "
                                                       "reaches this")
    default_half_spread_bps: float | None = Field(default_factory=_cost_default("default_half_spread_bps"),
                                                  description="fixed half spread where no spread is quoted "
                                                              "(null: the Corwin-Schultz estimate)")
    funding: bool = Field(default_factory=_cost_default("funding"),
                          description="charge perpetual funding when a funding series is given")
    spread_estimate_window: int = Field(default_factory=_cost_default("spread_estimate_window"),
                                        description="bars the spread estimate averages over")
    notional_by_quote: dict[str, float] = Field(
        default_factory=_cost_default("notional_by_quote"),
        description="quote asset -> notional of one trade in that currency (the impact term compares it with the "
                    "bar's quote volume); quotes given replace the default for that quote, the others keep theirs")
    default_notional: float = Field(default_factory=_cost_default("default_notional"),
                                    description="notional of one trade for every other quote")

    @field_validator("notional_by_quote", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any) -> Any:
        """A partial map changes only the quotes it names (``{BTC: 0.25}`` must not send ETH pairs to the
        ``default_notional``); keys are normalised as ``CostConfig`` does before the merge."""
        if not isinstance(value, Mapping):
            return value
        problem = _cost_problem("notional_by_quote", value)
        if problem is not None:
            raise ValueError(problem)
        from clm.evaluation.costs import DEFAULT_NOTIONAL_BY_QUOTE

        given = {key.strip().upper(): number for key, number in value.items()}
        return {**DEFAULT_NOTIONAL_BY_QUOTE, **given}

    @field_validator("*", mode="after")
    @classmethod
    def _checked_by_cost_config(cls, value: Any, info: Any) -> Any:
        problem = _cost_problem(info.field_name, value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _whole(self) -> Costs:
        self.cost_config()  # any rule across fields CostConfig has (or gains) holds too
        return self

    def cost_config(self) -> CostConfig:
        from clm.evaluation.costs import CostConfig

        return CostConfig(**self.model_dump())


class Policy(_Section):
    schedule_interval_days: float = Field(7.0, gt=0, le=366, description="full retrain at least this often")
    min_retrain_interval_hours: float = Field(6.0, ge=0, description="a retrain requested sooner is skipped")
    auto_promote: bool = Field(False, description="promote on a PROMOTE recommendation (else recommend only)")
    retrain_on_regime_change: bool = False
    keep_retired_models: int = Field(3, ge=0, le=1000,
                                     description="RETIRED models per key whose artefacts are kept (for rollbacks)")
    auto_promote_threshold: AutoPromoteThreshold = AutoPromoteThreshold()
    drift_detection: DriftDetection = DriftDetection()
    supervision: Supervision = Supervision()
    rl_maintenance: RLMaintenance = RLMaintenance()
    risk_modes: RiskModes = RiskModes()
    costs: Costs = Field(default_factory=Costs, description="trading-cost assumptions of every run (CostConfig)")

    def cost_config(self) -> CostConfig:
        """The ``CostConfig`` of the ``costs`` section: what every entry point (assets, CLI, serving) costs
        trades with, so that evaluation, shadow tests, supervision, ranking and RL rewards agree."""
        return self.costs.cost_config()


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validation_problems(exc: ValidationError) -> list[str]:
    """Each problem of a pydantic validation as ``key.path: what is wrong (got value)``, for config files."""
    problems = []
    for error in exc.errors():
        where = _key_path(error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        elif error["type"] == "value_error":  # a cross-field rule; its message names the fields
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if error["loc"] else message)
        else:
            problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return problems


def parse_policy(data: Any, *, source: str = DEFAULT_PATH) -> Policy:
    """A ``Policy`` from parsed YAML; every problem is reported with its key path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: the top level must be a mapping of settings, got {type(data).__name__}")
    try:
        return Policy.model_validate(dict(data))
    except ValidationError as exc:
        raise PolicyError(f"{source}: " + "; ".join(validation_problems(exc))) from None


def policy_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("CLM_POLICY") or DEFAULT_PATH)


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Read and validate the policy now (callers read it at the start of each run, never cache it)."""
    path = Path(path) if path is not None else policy_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Policy()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_policy(data, source=str(path))


def policy_yaml(policy: Policy | None = None) -> str:
    """The policy as YAML (every key spelled out), e.g. to write the default file."""
    return yaml.safe_dump((policy or Policy()).model_dump(mode="json"), sort_keys=False)
