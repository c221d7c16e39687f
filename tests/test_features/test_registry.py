"""The registry: definition hashes, selection versions, configuration errors, reference choice, the
documented contents of the sets and their warm-ups."""

from __future__ import annotations

import re

import pytest

from clm.features import core31 as core31_module
from clm.features.build import FEATURE_SETS, FeatureConfig, select_features
from clm.features.context import (
    PREFERRED_REFERENCES,
    context_features,
    cross_asset_features,
    higher_timeframe_features,
    resolve_reference,
)
from clm.features.core31 import core31_features
from clm.features.expr import col, ewm_warmup
from clm.features.registry import ENGINE_VERSION, Feature, FeatureSelection, timeframe_to_seconds
from clm.features.ta import rsi, ta_features

UNIVERSE = ["ETH_BTC", "LTC_BTC", "XMR_BTC"]
FIVE_MINUTES = 300

CORE31 = {
    "momentum": ["mom_5", "mom_10", "mom_20", "mom_50", "ret_1", "ret_2", "ret_3", "ret_4", "ret_5"],
    "volatility": ["atr_ratio", "bb_position", "bb_width", "range_position"],
    "volume": ["vol_ratio_5_20", "vol_trend", "vol_spike"],
    "structure": ["higher_highs", "lower_lows", "swing_position"],
    "indicator": ["rsi_norm", "rsi_slope", "macd_norm", "macd_hist", "adx_norm", "adx_direction"],
    "time": ["hour_sin", "hour_cos", "day_of_week"],
    "regime": ["trend_strength", "choppiness", "mean_reversion"],
}
TA = [
    "rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
    "atr_14", "adx_14", "plus_di_14", "minus_di_14", "sma_20", "ema_20",
]


def by_name(features: list[Feature]) -> dict[str, Feature]:
    return {f.name: f for f in features}


# ---- definition hashes ----------------------------------------------------------------------


def test_hashes_are_stable_for_the_same_definition():
    for build in (core31_features, ta_features, lambda: context_features("ETH_BTC", ("1h", "4h"), 300)):
        first, second = build(), build()
        assert [f.definition_hash for f in first] == [f.definition_hash for f in second]
        assert all(re.fullmatch(r"[0-9a-f]{16}", f.definition_hash) for f in first)
    # the hash is over the canonical tree text, so it is the same in every process; these values move
    # only when a definition (or ENGINE_VERSION) does, which must start a new feature-store version
    ta = by_name(ta_features())
    assert ta["sma_20"].definition == f"engine={ENGINE_VERSION};name=sma_20;node=rolling_mean(col('close'),20)"
    assert ta["sma_20"].definition_hash == "fa9400289f51b512"
    assert ta["rsi_14"].definition_hash == "b6d6da4fddffa82f"


def test_hash_ignores_descriptive_text_but_not_the_definition():
    rsi_14 = by_name(ta_features())["rsi_14"]
    reworded = Feature("rsi_14", "momentum", rsi(14), "some other wording", (("n", 14),))
    assert reworded.definition_hash == rsi_14.definition_hash
    assert Feature("rsi_14", "indicator", rsi(21), rsi_14.formula, rsi_14.params).definition_hash != (
        rsi_14.definition_hash
    )
    assert Feature("rsi_21", "indicator", rsi(14), "", ()).definition_hash != rsi_14.definition_hash


def test_hash_moves_with_timeframe_and_reference():
    node = col("close").shift(1)
    hourly = Feature("x", "context", node, "", timeframe="1h")
    assert hourly.definition_hash != Feature("x", "context", node, "", timeframe="2h").definition_hash
    assert hourly.definition_hash != Feature("x", "context", node, "").definition_hash
    eth, ltc = by_name(cross_asset_features("ETH_BTC")), by_name(cross_asset_features("LTC_BTC"))
    assert eth["ref_ret_1"].definition_hash != ltc["ref_ret_1"].definition_hash
    assert eth["ref_ret_12"].definition_hash != ltc["ref_ret_12"].definition_hash
    for name in ("universe_ret_1", "universe_ret_12", "rel_ret_12"):  # they do not use the reference
        assert eth[name].definition_hash == ltc[name].definition_hash
    assert eth["universe_ret_1"].definition_hash != eth["ref_ret_1"].definition_hash  # cross kind counts


def test_version_hash_follows_the_definitions_not_their_order():
    base = select_features(FeatureConfig(), UNIVERSE, FIVE_MINUTES)
    assert base.version_hash == select_features(FeatureConfig(), UNIVERSE, FIVE_MINUTES).version_hash
    reordered = select_features(
        FeatureConfig(sets=("context", "ta", "core31"), higher_timeframes=("4h", "1h")), UNIVERSE, FIVE_MINUTES
    )
    assert reordered.names != base.names and sorted(reordered.names) == sorted(base.names)
    assert reordered.version_hash == base.version_hash
    # any changed definition moves it
    assert select_features(FeatureConfig(reference_symbol="LTC_BTC"), UNIVERSE, FIVE_MINUTES).version_hash != (
        base.version_hash
    )
    assert select_features(FeatureConfig(higher_timeframes=("1h", "2h")), UNIVERSE, FIVE_MINUTES).version_hash != (
        base.version_hash
    )
    assert select_features(FeatureConfig(sets=("core31", "ta")), UNIVERSE, FIVE_MINUTES).version_hash != (
        base.version_hash
    )
    swapped = FeatureSelection(
        tuple(
            Feature(f.name, f.category, rsi(21), f.formula, f.params) if f.name == "rsi_14" else f
            for f in base.features
        )
    )
    assert swapped.names == base.names and swapped.version_hash != base.version_hash
    # and the universe only matters through the reference it picks
    assert select_features(FeatureConfig(), [*UNIVERSE, "ZEC_BTC"], FIVE_MINUTES).version_hash == base.version_hash


def test_duplicate_names_need_one_definition():
    close = col("close")
    with pytest.raises(ValueError, match="'x' is defined twice with different definitions"):
        FeatureSelection(
            (Feature("x", "momentum", close.shift(1), ""), Feature("x", "momentum", close.shift(2), ""))
        )
    # the same definition twice is one feature (macd_hist is in both core31 and ta)
    same = FeatureSelection(
        (Feature("x", "momentum", close.shift(1), "a"), Feature("x", "trend", close.shift(1), "b"))
    )
    assert same.names == ["x"]
    both = select_features(FeatureConfig(sets=("core31", "ta")), UNIVERSE, FIVE_MINUTES)
    assert both.names.count("macd_hist") == 1 and len(both.names) == 31 + 13 - 1


def test_feature_validation():
    with pytest.raises(ValueError, match="unknown category 'misc'"):
        Feature("x", "misc", col("close"), "")
    with pytest.raises(ValueError, match="needs reference_symbol"):
        Feature("x", "context", col("close"), "", cross="reference")


# ---- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sets": ()}, "choose at least one set from core31, ta, context"),
        ({"sets": ("core31", "volume")}, r"unknown set\(s\) \['volume'\]; known sets: core31, ta, context"),
        ({"sets": ("ta", "ta")}, r"set listed twice in \['ta', 'ta'\]"),
        ({"higher_timeframes": ("7m",)}, "bad timeframe '7m': it must divide a day"),
        ({"higher_timeframes": ("1h", "2d")}, "bad timeframe '2d': it must divide a day"),
        ({"higher_timeframes": ("1x",)}, r"bad timeframe '1x': use e.g. '15m', '1h', '4h', '1d'"),
        ({"higher_timeframes": ("h",)}, "bad timeframe 'h'"),
        ({"higher_timeframes": ("0m",)}, "bad timeframe '0m'"),
        ({"higher_timeframes": ("-1h",)}, "bad timeframe '-1h'"),
    ],
)
def test_config_errors_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**kwargs)


def test_config_accepts_lists_and_keeps_tuples():
    config = FeatureConfig(sets=["ta"], higher_timeframes=["15m"])  # type: ignore[arg-type]
    assert config.sets == ("ta",) and config.higher_timeframes == ("15m",)
    assert FeatureConfig().sets == FEATURE_SETS == ("core31", "ta", "context")
    assert hash(config) == hash(FeatureConfig(sets=("ta",), higher_timeframes=("15m",)))


def test_timeframe_labels():
    assert [timeframe_to_seconds(t) for t in ("1m", "5m", "15m", "1h", "4h", "1d")] == [
        60, 300, 900, 3600, 14400, 86400,
    ]


def test_higher_timeframes_must_be_above_the_base():
    names = lambda base, tfs: [f.name for f in context_features("A", tfs, base)]  # noqa: E731
    assert names(300, ("1h", "4h"))[:8] == [
        "htf_1h_ret_1", "htf_1h_ret_4", "htf_1h_volatility_12", "htf_1h_range_position_12",
        "htf_4h_ret_1", "htf_4h_ret_4", "htf_4h_volatility_12", "htf_4h_range_position_12",
    ]
    assert not any(n.startswith("htf_1h") for n in names(3600, ("1h", "4h")))  # not strictly above
    assert not any(n.startswith("htf_15m") for n in names(600, ("15m",)))  # not a multiple of 10m
    assert any(n.startswith("htf_4h") for n in names(3600, ("1h", "4h")))
    assert names(86400, ("1h", "4h")) == [
        "ref_ret_1", "ref_ret_12", "universe_ret_1", "universe_ret_12", "rel_ret_12",
    ]
    with pytest.raises(ValueError, match="bad timeframe"):
        higher_timeframe_features("90s")


# ---- the reference symbol -------------------------------------------------------------------


def test_resolve_reference_rules():
    assert resolve_reference(["ETH_BTC", "BTC_USDT", "AAA"]) == "BTC_USDT"  # first preferred present
    assert resolve_reference(["ETH_USDT", "ETH_BTC"]) == "ETH_BTC"  # preference order, not input order
    assert resolve_reference(["ZZZ", "MMM", "AAA", "AAA"]) == "AAA"  # else alphabetically first
    assert resolve_reference(["ETH_BTC", "LTC_BTC"], "LTC_BTC") == "LTC_BTC"  # configured wins
    assert PREFERRED_REFERENCES[0] == "BTC_USDT"
    with pytest.raises(ValueError, match="empty universe"):
        resolve_reference([])
    with pytest.raises(ValueError, match="'BTC_USDT' is not in the data; symbols: ETH_BTC, LTC_BTC"):
        resolve_reference(["LTC_BTC", "ETH_BTC"], "BTC_USDT")
    with pytest.raises(ValueError, match="reference_symbol 'DOGE' is not in the data"):
        select_features(FeatureConfig(reference_symbol="DOGE"), UNIVERSE, FIVE_MINUTES)
    # without the context set the reference is never needed
    only_ta = select_features(FeatureConfig(sets=("ta",), reference_symbol="DOGE"), UNIVERSE, FIVE_MINUTES)
    assert only_ta.names == TA
    ref = select_features(FeatureConfig(), UNIVERSE, FIVE_MINUTES).by_name("ref_ret_1")
    assert ref.reference_symbol == "ETH_BTC" and ref.cross == "reference"


# ---- the sets -------------------------------------------------------------------------------


def test_core31_is_the_documented_31_features_in_7_categories():
    features = core31_features()
    assert [f.name for f in features] == [n for names in CORE31.values() for n in names]
    assert len(features) == 31 and len({f.name for f in features}) == 31
    assert {f.name: f.category for f in features} == {n: c for c, names in CORE31.items() for n in names}
    doc = core31_module.__doc__
    assert "31" in doc and "7 categories" in doc
    for category, names in CORE31.items():
        assert re.search(rf"^{category}\b", doc, re.M), category
        for name in names:
            templated = re.sub(r"\d+$", "n", name) if name.startswith("mom_") else re.sub(r"\d$", "k", name)
            assert f"``{name}``" in doc or f"``{templated}``" in doc, name
    # every feature is a ratio, a position, an oscillator or a calendar field: no raw price level
    for f in features:
        assert f.category != "context" and f.timeframe is None and f.cross is None


def test_ta_set_has_the_13_documented_indicators():
    features = ta_features()
    assert [f.name for f in features] == TA
    assert all(f.timeframe is None and f.cross is None for f in features)
    core = by_name(core31_features())
    assert by_name(features)["macd_hist"].definition == core["macd_hist"].definition


def test_warmups_are_sane():
    selection = select_features(FeatureConfig(), UNIVERSE, FIVE_MINUTES)
    w = {f.name: f.warmup_bars(FIVE_MINUTES) for f in selection.features}
    assert w["sma_20"] == w["bb_middle"] == w["bb_upper"] == 19
    assert w["mom_50"] == 50 and w["ret_1"] == 1 and w["ret_5"] == 5
    assert w["hour_sin"] == w["day_of_week"] == 0
    wilder = ewm_warmup(1 / 14)
    assert 270 <= wilder <= 290 and (13 / 14) ** wilder < 1e-9
    assert w["rsi_14"] == w["atr_14"] == 1 + wilder  # one bar for the first change, then Wilder smoothing
    assert w["adx_14"] == 1 + 2 * wilder  # Wilder of a ratio of Wilder means
    assert w["ema_20"] == ewm_warmup(2 / 21)
    assert w["macd_signal"] == w["macd_hist"] == ewm_warmup(2 / 27) + ewm_warmup(2 / 10)
    assert w["rsi_slope"] == w["rsi_14"] + 5
    # a higher-timeframe feature waits for its node's warm-up plus two whole higher bars
    assert w["htf_1h_ret_1"] == (1 + 2) * 12
    assert w["htf_4h_volatility_12"] == (12 + 2) * 48
    assert w["ref_ret_12"] == w["rel_ret_12"] == 12
    assert selection.warmup_bars(FIVE_MINUTES) == max(w.values()) == w["htf_4h_volatility_12"] == 672
    # on hourly bars the 1h context is left out and 4h counts in hours
    hourly = select_features(FeatureConfig(), UNIVERSE, 3600)
    assert hourly.by_name("htf_4h_volatility_12").warmup_bars(3600) == (12 + 2) * 4
    assert "htf_1h_ret_1" not in hourly.names and hourly.warmup_bars(3600) == w["adx_14"]


def test_describe_and_subset():
    selection = select_features(FeatureConfig(), UNIVERSE, FIVE_MINUTES)
    rows = {r["name"]: r for r in selection.describe(FIVE_MINUTES)}
    assert list(rows) == selection.names
    assert rows["htf_4h_ret_1"]["timeframe"] == "4h" and rows["rsi_14"]["timeframe"] == "base"
    assert rows["ref_ret_1"]["cross"] == "reference" and rows["rsi_14"]["hash"] == "b6d6da4fddffa82f"
    assert rows["sma_20"]["params"] == {"window": 20} and rows["sma_20"]["warmup_bars"] == 19
    sub = selection.subset(["sma_20", "rsi_14", "not_a_feature"])
    assert sub.names == ["rsi_14", "sma_20"] and sub.sets == selection.sets
    with pytest.raises(KeyError):
        selection.by_name("not_a_feature")
