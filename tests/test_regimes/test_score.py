"""score_regimes on hand-made frames, and the classifier's real scores on generated markets."""

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from clm.regimes import (
    CLASSES,
    RegimeConfig,
    classify_regimes,
    market_regime,
    regime_plot,
    regime_report_markdown,
    score_regimes,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def frame(column: str, values: list[str | None]) -> pl.DataFrame:
    ts = pl.Series([T0 + timedelta(minutes=5 * i) for i in range(len(values))]).dt.cast_time_unit("us")
    return pl.DataFrame({"timestamp": ts, column: pl.Series(values, dtype=pl.String)})


def test_confusion_recall_and_balanced_accuracy_by_hand():
    truth = frame("regime", ["trend_up", "trend_down", "range", "range", "panic", "illiquid", "range", "range"])
    predicted = frame("regime", [None, "trend", "trend", "range", "panic", "range", "range", "range"])
    later = frame("regime", ["trend"] * 10).with_columns(pl.col("timestamp") + timedelta(days=1))
    predicted = pl.concat([predicted, later])
    score = score_regimes(predicted, truth)
    assert score.level == "symbol" and score.classes == CLASSES
    assert score.confusion == ((1, 0, 0, 0), (1, 3, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0))
    assert (score.rows_scored, score.rows_warmup, score.rows_unmatched) == (7, 1, 10)
    assert score.recall == {"trend": 1.0, "range": 0.75, "panic": 1.0, "illiquid": 0.0}
    assert score.support == {"trend": 1, "range": 4, "panic": 1, "illiquid": 1}
    assert score.balanced_accuracy == pytest.approx((1 + 0.75 + 1 + 0) / 4)
    assert score.accuracy == pytest.approx(5 / 7)
    assert score.precision["range"] == pytest.approx(3 / 4)
    assert score.confusion_frame()["range"].to_list() == [0, 3, 0, 1]
    assert score.to_dict()["balanced_accuracy"] == score.balanced_accuracy


def test_classes_the_truth_never_shows_are_left_out_of_the_mean():
    truth = frame("regime", ["range", "range", "trend_up"])
    score = score_regimes(frame("market_regime", ["range", "trend", "trend"]), truth)
    assert score.level == "market"
    assert score.recall["panic"] is None and score.balanced_accuracy == pytest.approx(0.75)


def test_unknown_labels_are_refused():
    truth = frame("regime", ["range"])
    with pytest.raises(ValueError, match="unknown predicted regime"):
        score_regimes(frame("regime", ["crash"]), truth)
    with pytest.raises(ValueError, match="need columns"):
        score_regimes(frame("label", ["range"]), truth)


def test_default_synthetic_market_reaches_the_target(default_market, default_regimes):
    """The issue's bar: balanced accuracy >= 0.70 per symbol and market-wide, on a real run."""
    _, truth = default_market
    per_symbol = score_regimes(default_regimes, truth)
    market = score_regimes(market_regime(default_regimes), truth)
    assert per_symbol.balanced_accuracy >= 0.70, per_symbol.to_dict()
    assert market.balanced_accuracy >= 0.70, market.to_dict()
    # every class is present in the truth and found most of the time
    assert all(r is not None and r >= 0.5 for r in market.recall.values()), market.recall
    # warm-up is reported, not scored: 587 bars per symbol at 5m
    assert per_symbol.rows_warmup == 10 * 587 and per_symbol.rows_scored == 10 * (8640 - 587)
    assert market.rows_warmup > 587


def test_another_seed_does_not_collapse(make_market):
    candles, truth = make_market(seed=7)
    regimes = classify_regimes(candles)
    assert score_regimes(regimes, truth).balanced_accuracy >= 0.6
    assert score_regimes(market_regime(regimes), truth).balanced_accuracy >= 0.6


def test_report_and_plot(default_market, default_regimes):
    _, truth = default_market
    market = market_regime(default_regimes)
    scores = [score_regimes(default_regimes, truth), score_regimes(market, truth)]
    text = regime_report_markdown(scores)
    assert text.startswith("## Regime map")
    assert "### per symbol" in text and "### market-wide" in text
    assert "| truth \\ predicted | trend | range | panic | illiquid | recall | support |" in text
    assert f"balanced accuracy **{scores[1].balanced_accuracy:.3f}**" in text
    png = regime_plot(scores, market, truth)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert regime_plot(scores[:1]).startswith(b"\x89PNG")


def test_other_timeframes_with_rescaled_windows(make_market):
    """15-minute bars with ``RegimeConfig.for_timeframe``: the same durations, the same quality."""
    candles, truth = make_market(timeframe="15m")
    config = RegimeConfig.for_timeframe(900)
    regimes = classify_regimes(candles, config)
    assert score_regimes(regimes, truth).balanced_accuracy >= 0.7
    assert score_regimes(market_regime(regimes, config), truth).balanced_accuracy >= 0.7
