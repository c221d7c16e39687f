"""``RegimeConfig``: every window, cut-off and vote rule of the regime classifier, validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from clm.checks import is_finite_number, is_int

# The seed taxonomy the classifier emits (the synthetic truth's trend_up / trend_down are "trend").
CLASSES = ("trend", "range", "panic", "illiquid")
VOLATILITY_LEVELS = ("LOW", "MEDIUM", "HIGH", "EXTREME")
LIQUIDITY_LEVELS = ("LOW", "MEDIUM", "HIGH")
TREND_DIRECTIONS = ("up", "down")


def _quantiles(name: str, value: object, count: int) -> tuple[float, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise ValueError(f"{name} must be a tuple of {count} quantiles, got {value!r}")
    qs = tuple(value)
    if not all(is_finite_number(q) and 0.0 < q < 1.0 for q in qs):
        raise ValueError(f"{name} must hold quantiles strictly between 0 and 1, got {qs!r}")
    if any(b <= a for a, b in zip(qs, qs[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing, got {qs!r}")
    return tuple(float(q) for q in qs)


@dataclass(frozen=True)
class RegimeConfig:
    """How regimes are detected and voted; invalid values raise ``ValueError`` naming the field.

    Windows are in bars (``smooth_bars``) or days of history (``*_days``, converted with the bar
    timeframe), so one config fits 1m to 1h bars. Score cut-offs are in natural-log units of a ratio
    to the symbol's own learnt baseline (see ``docs/regimes.md``): 0.69 means "twice the usual".
    """

    # --- inputs
    smooth_bars: int = 12  # bars averaged into realised variance, volume and spread
    seasonal_bucket_minutes: int = 60  # time-of-day bucket of the baselines; 0 = no seasonality
    baseline_days: float = 7.0  # history the median baseline of each bucket looks back over
    min_history_days: float = 2.0  # warm-up: history needed before the first label
    level_days: float = 14.0  # history the volatility / liquidity level quantiles look back over

    # --- regime rules (log-ratio cut-offs against the learnt baselines)
    panic_vol_z: float = 2.0  # realised variance above e^2 ~ 7x its baseline (volatility ~2.7x) ...
    panic_volume_z: float = 0.0  # ... on at least usual volume
    illiquid_z: float = 0.65  # mean of spread_z and -volume_z (or -volume_z alone without spreads)
    trend_z: float = 0.0  # trend when the trend score is above this, range below
    trend_weights: tuple[float, float, float] = (1.0, 0.25, 0.25)  # volume_z, vol_z, (ADX - pivot) / pivot
    adx_pivot: float = 25.0
    confidence_scale: float = 0.25  # logistic softness of the per-bar confidence, in score units

    # --- levels (cut-offs are trailing quantiles of the symbol's own history)
    volatility_quantiles: tuple[float, float, float] = (0.25, 0.75, 0.98)  # LOW | MEDIUM | HIGH | EXTREME
    liquidity_quantiles: tuple[float, float] = (0.2, 0.8)  # LOW | MEDIUM | HIGH

    # --- market-wide vote
    majority_share: float = 0.5  # the leading regime needs this share of the voting symbols
    min_symbols: int = 1  # fewer voting (warm) symbols than this: no market vote
    hysteresis_bars: int = 12  # a new majority must persist this many bars before the market switches
    # risk-off regimes are confirmed faster: a late switch into them costs more than a false alarm
    hysteresis_overrides: tuple[tuple[str, int], ...] = (("illiquid", 6), ("panic", 3))

    def __post_init__(self) -> None:
        for name in ("smooth_bars", "hysteresis_bars", "min_symbols"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        bucket = self.seasonal_bucket_minutes
        if not is_int(bucket) or bucket < 0 or bucket > 1440 or (bucket and 1440 % bucket):
            raise ValueError(
                f"seasonal_bucket_minutes must be 0 (off) or an int that divides 1440, got {bucket!r}"
            )
        for name in ("baseline_days", "min_history_days", "level_days"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0 (days), got {value!r}")
        if self.min_history_days > self.baseline_days:
            raise ValueError(
                f"min_history_days ({self.min_history_days}) must not exceed baseline_days ({self.baseline_days})"
            )
        if self.min_history_days > self.level_days:
            raise ValueError(
                f"min_history_days ({self.min_history_days}) must not exceed level_days ({self.level_days})"
            )
        for name in ("panic_vol_z", "panic_volume_z", "illiquid_z", "trend_z"):
            if not is_finite_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.panic_vol_z <= 0:
            raise ValueError(f"panic_vol_z must be > 0 (above the usual volatility), got {self.panic_vol_z!r}")
        if self.illiquid_z <= 0:
            raise ValueError(f"illiquid_z must be > 0 (less liquid than usual), got {self.illiquid_z!r}")
        weights = self.trend_weights
        if (
            not isinstance(weights, (tuple, list))
            or len(weights) != 3
            or not all(is_finite_number(w) and w >= 0 for w in weights)
            or not any(weights)
        ):
            raise ValueError(f"trend_weights must be 3 finite numbers >= 0, not all 0, got {weights!r}")
        object.__setattr__(self, "trend_weights", tuple(float(w) for w in weights))
        for name in ("adx_pivot", "confidence_scale"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        object.__setattr__(
            self, "volatility_quantiles", _quantiles("volatility_quantiles", self.volatility_quantiles, 3)
        )
        object.__setattr__(
            self, "liquidity_quantiles", _quantiles("liquidity_quantiles", self.liquidity_quantiles, 2)
        )
        if not is_finite_number(self.majority_share) or not 0.0 < self.majority_share <= 1.0:
            raise ValueError(f"majority_share must be in (0, 1], got {self.majority_share!r}")
        overrides = self.hysteresis_overrides
        if isinstance(overrides, Mapping):
            overrides = tuple(overrides.items())
        if not isinstance(overrides, (tuple, list)):
            raise ValueError(f"hysteresis_overrides must map regimes to bars, got {overrides!r}")
        pairs: dict[str, int] = {}
        for item in overrides:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError(f"hysteresis_overrides entries must be (regime, bars) pairs, got {item!r}")
            regime, bars = item
            if regime not in CLASSES:
                raise ValueError(f"hysteresis_overrides: unknown regime {regime!r}; known: {', '.join(CLASSES)}")
            if regime in pairs:
                raise ValueError(f"hysteresis_overrides: regime {regime!r} listed twice")
            if not is_int(bars) or bars < 1:
                raise ValueError(f"hysteresis_overrides[{regime!r}] must be an int >= 1, got {bars!r}")
            pairs[regime] = bars
        object.__setattr__(self, "hysteresis_overrides", tuple(sorted(pairs.items())))

    @classmethod
    def for_timeframe(cls, timeframe_seconds: int, **overrides) -> RegimeConfig:
        """The defaults with the bar-count windows rescaled to other bars, keeping their durations.

        The defaults are tuned on 5-minute bars: 1 hour of smoothing and of hysteresis, 15 minutes to
        confirm a panic and 30 minutes an illiquid market. On 1h bars that becomes 3 bars of smoothing
        (the minimum), 2 of hysteresis and 1 for panic / illiquid. ``overrides`` win over the scaling.
        """
        if not is_int(timeframe_seconds) or timeframe_seconds <= 0:
            raise ValueError(f"timeframe_seconds must be an int > 0, got {timeframe_seconds!r}")

        def bars(seconds: int, least: int) -> int:
            return max(least, round(seconds / timeframe_seconds))

        scaled: dict[str, object] = {
            "smooth_bars": bars(3600, 3),
            "hysteresis_bars": bars(3600, 2),
            "hysteresis_overrides": (("illiquid", bars(1800, 1)), ("panic", bars(900, 1))),
        }
        scaled.update(overrides)
        return cls(**scaled)  # type: ignore[arg-type]

    def persistence_bars(self, regime: str) -> int:
        """Bars a new majority ``regime`` must persist before the market regime switches to it."""
        return dict(self.hysteresis_overrides).get(regime, self.hysteresis_bars)

    def days_to_bars(self, days: float, timeframe_seconds: int) -> int:
        return max(1, round(days * 86_400 / timeframe_seconds))
