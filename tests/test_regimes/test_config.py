"""RegimeConfig: defaults are valid, every bad value is refused with an error naming the field."""

import re

import pytest

from clm.regimes import RegimeConfig


def test_defaults_are_valid_and_frozen():
    config = RegimeConfig()
    assert config.persistence_bars("trend") == config.hysteresis_bars == 12
    assert config.persistence_bars("panic") == 3
    assert config.persistence_bars("illiquid") == 6
    with pytest.raises(AttributeError):
        config.hysteresis_bars = 3  # type: ignore[misc]


def test_overrides_accept_a_mapping_and_are_normalised():
    config = RegimeConfig(hysteresis_overrides={"range": 20, "panic": 2})
    assert config.hysteresis_overrides == (("panic", 2), ("range", 20))
    assert config.persistence_bars("range") == 20 and config.persistence_bars("trend") == 12
    assert hash(config) == hash(RegimeConfig(hysteresis_overrides=(("range", 20), ("panic", 2))))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("smooth_bars", 0, "smooth_bars must be an int >= 1"),
        ("smooth_bars", 2.5, "smooth_bars must be an int >= 1"),
        ("hysteresis_bars", True, "hysteresis_bars must be an int >= 1"),
        ("min_symbols", 0, "min_symbols"),
        ("seasonal_bucket_minutes", 7, "seasonal_bucket_minutes"),
        ("seasonal_bucket_minutes", -60, "seasonal_bucket_minutes"),
        ("baseline_days", 0, "baseline_days must be a finite number > 0"),
        ("level_days", float("nan"), "level_days"),
        ("min_history_days", 10.0, "min_history_days (10.0) must not exceed baseline_days"),
        ("panic_vol_z", -1.0, "panic_vol_z must be > 0"),
        ("illiquid_z", 0.0, "illiquid_z must be > 0"),
        ("trend_z", float("inf"), "trend_z must be a finite number"),
        ("trend_weights", (1.0, 0.5), "trend_weights"),
        ("trend_weights", (0.0, 0.0, 0.0), "not all 0"),
        ("trend_weights", (1.0, -1.0, 0.0), "trend_weights"),
        ("adx_pivot", 0, "adx_pivot"),
        ("confidence_scale", -0.1, "confidence_scale"),
        ("volatility_quantiles", (0.25, 0.75), "volatility_quantiles must be a tuple of 3"),
        ("volatility_quantiles", (0.25, 0.2, 0.9), "strictly increasing"),
        ("liquidity_quantiles", (0.0, 0.8), "strictly between 0 and 1"),
        ("majority_share", 0.0, "majority_share"),
        ("majority_share", 1.5, "majority_share"),
        ("hysteresis_overrides", (("crash", 3),), "unknown regime 'crash'"),
        ("hysteresis_overrides", (("panic", 0),), "hysteresis_overrides['panic'] must be an int >= 1"),
        ("hysteresis_overrides", (("panic", 2), ("panic", 3)), "listed twice"),
        ("hysteresis_overrides", ("panic",), "(regime, bars) pairs"),
    ],
)
def test_invalid_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RegimeConfig(**{field: value})


def test_for_timeframe_keeps_the_durations():
    assert RegimeConfig.for_timeframe(300) == RegimeConfig()
    hourly = RegimeConfig.for_timeframe(3600)
    assert (hourly.smooth_bars, hourly.hysteresis_bars) == (3, 2)
    assert hourly.persistence_bars("panic") == 1 and hourly.persistence_bars("illiquid") == 1
    minute = RegimeConfig.for_timeframe(60, panic_vol_z=2.5)
    assert (minute.smooth_bars, minute.hysteresis_bars, minute.persistence_bars("panic")) == (60, 60, 15)
    assert minute.panic_vol_z == 2.5
    with pytest.raises(ValueError, match="timeframe_seconds must be an int > 0"):
        RegimeConfig.for_timeframe(0)
