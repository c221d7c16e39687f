"""The shadow tester's decision: seeded simulations of paired per-signal net returns.

Acceptance: a challenger with a real edge is PROMOTED in a 1,000-trade simulation; an equal challenger
is falsely promoted in <= 5 % of 200 simulations (at the 1,000 look, and over the looks of a longer test);
a better challenger whose drawdown breaks the guard is not promoted."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from clm.evaluation.metrics import simulate_strategy
from clm.policy import AutoPromoteThreshold, Policy
from clm.shadow import (
    Recommendation,
    block_bootstrap_means,
    checkpoints,
    decide,
    default_block_length,
    holm,
    paired_test,
)
from clm.shadow.decide import ZERO_MEAN_GUARD, improvement_pct, max_drawdown_pct

BPS = 1e-4
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
POLICY = Policy()


def closed_frame(champion: np.ndarray, challenger: np.ndarray, *, challenger_id: str = "challenger",
                 champion_id: str = "champion", symbols: int = 1, horizon: int = 1) -> pl.DataFrame:
    """shadow_test_results rows: one signal per bar (and symbol), both models always in the market."""
    n = len(champion)
    bars = np.arange(n) // symbols
    return pl.DataFrame({
        "result_id": np.arange(1, n + 1),
        "champion_id": [champion_id] * n, "challenger_id": [challenger_id] * n,
        "symbol": [f"S{i % symbols}" for i in range(n)],
        "timestamp": [START + dt.timedelta(minutes=5 * int(b)) for b in bars],
        "horizon": [horizon] * n,
        "champion_signal": np.where(np.arange(n) % 2 == 0, 1.0, -1.0),
        "challenger_signal": np.where(np.arange(n) % 3 == 0, -1.0, 1.0),
        "champion_net_return": champion, "challenger_net_return": challenger,
    }).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


def simulate(rng: np.random.Generator, n: int, *, champion_bps: float, challenger_bps: float, sd_bps: float = 25.0,
             correlation: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated per-signal net return series (both models trade the same bars)."""
    common = rng.normal(size=n)
    own = rng.normal(size=(2, n))
    a, b = math.sqrt(correlation), math.sqrt(1 - correlation)
    champion = champion_bps * BPS + sd_bps * BPS * (a * common + b * own[0])
    challenger = challenger_bps * BPS + sd_bps * BPS * (a * common + b * own[1])
    return champion, challenger


# ---- acceptance ------------------------------------------------------------------------------------------
def test_a_challenger_with_a_real_edge_is_promoted_in_a_1000_trade_simulation():
    rng = np.random.default_rng(20240101)
    champion, challenger = simulate(rng, 1000, champion_bps=2.0, challenger_bps=6.0)
    (decision,) = decide(closed_frame(champion, challenger), POLICY)
    assert decision.recommendation is Recommendation.PROMOTE, decision.reason
    assert decision.n == 1000 and decision.family_size == 1
    assert decision.p_value_holm < decision.alpha_per_look == pytest.approx(0.05 / 6)
    assert decision.ci[0] > 0 and decision.ci[0] < decision.mean_difference < decision.ci[1]
    assert decision.mean_difference == pytest.approx(float(np.mean(challenger - champion)))
    assert decision.improvement_pct >= POLICY.auto_promote_threshold.min_improvement_pct
    assert decision.challenger_max_drawdown_pct <= POLICY.auto_promote_threshold.max_drawdown_pct
    evidence = decision.evidence()
    assert evidence["n"] == 1000 and evidence["recommendation"] == "PROMOTE"
    assert evidence["ci"] == [decision.ci[0], decision.ci[1]] and evidence["p_value"] == decision.p_value


def test_an_equal_challenger_is_falsely_promoted_in_at_most_5_percent_of_200_simulations():
    """Each simulation is a whole shadow test: the looks at 1,000, 2,000 and 4,000 signals (between
    checkpoints the answer cannot change, tested below), so 'ever promoted' is the false-promotion rate."""
    rng = np.random.default_rng(7)
    at_first_look = ever = 0
    for _ in range(200):
        champion, challenger = simulate(rng, 4000, champion_bps=2.0, challenger_bps=2.0)
        frame = closed_frame(champion, challenger)
        promoted = [decide(frame.head(n), POLICY)[0].recommendation is Recommendation.PROMOTE
                    for n in (1000, 2000, 4000)]
        at_first_look += promoted[0]
        ever += any(promoted)
    assert at_first_look <= 10  # 5 % of 200
    assert ever <= 10


def test_a_better_challenger_with_a_drawdown_beyond_the_guard_is_not_promoted():
    rng = np.random.default_rng(11)
    champion, challenger = simulate(rng, 1000, champion_bps=2.0, challenger_bps=16.0)
    challenger[400:460] = -80 * BPS + rng.normal(0, 5 * BPS, 60)  # a losing streak: ~38 % down
    frame = closed_frame(champion, challenger)
    (decision,) = decide(frame, POLICY)
    assert decision.mean_difference > 0 and decision.challenger_max_drawdown_pct > 30
    assert decision.recommendation is Recommendation.REJECT
    assert decision.reason.startswith("challenger drawdown")
    # it is the guard that stops it: without it the same evidence promotes
    loose = Policy(auto_promote_threshold={"max_drawdown_pct": 100})
    assert decide(frame, loose)[0].recommendation is Recommendation.PROMOTE


# ---- the rules -------------------------------------------------------------------------------------------
def test_continue_testing_before_min_samples_with_the_evidence_so_far():
    rng = np.random.default_rng(3)
    champion, challenger = simulate(rng, 999, champion_bps=2.0, challenger_bps=30.0)
    (decision,) = decide(closed_frame(champion, challenger), POLICY)
    assert decision.recommendation is Recommendation.CONTINUE_TESTING
    assert decision.reason.startswith("999 of 1,000 paired signals closed")
    assert decision.n == 999 and decision.p_value is not None and decision.p_value_holm is None
    assert decision.family_size == 0


def test_a_clearly_worse_challenger_is_rejected():
    rng = np.random.default_rng(5)
    champion, challenger = simulate(rng, 1200, champion_bps=2.0, challenger_bps=-8.0)
    frame = closed_frame(champion, challenger)
    assert decide(frame, POLICY)[0].reason.startswith("challenger drawdown")  # the guard speaks first
    (decision,) = decide(frame, Policy(auto_promote_threshold={"max_drawdown_pct": 100}))
    assert decision.recommendation is Recommendation.REJECT
    assert decision.ci[1] < 0 and "worse net of costs" in decision.reason
    assert decision.n == 1000 and decision.n_closed == 1200  # the look at the 1,000 checkpoint


def test_an_undecided_challenger_is_rejected_at_max_samples_and_kept_before():
    rng = np.random.default_rng(9)
    champion, challenger = simulate(rng, 400, champion_bps=2.0, challenger_bps=2.0)
    policy = Policy(auto_promote_threshold={"min_samples": 100, "max_samples": 400, "max_drawdown_pct": 100})
    frame = closed_frame(champion, challenger)
    assert checkpoints(policy.auto_promote_threshold) == [100, 200, 400]
    early = decide(frame.head(399), policy)[0]
    final = decide(frame, policy)[0]
    assert early.recommendation is Recommendation.CONTINUE_TESTING and early.n == 200
    assert final.recommendation is Recommendation.REJECT and final.reason.startswith("undecided after max_samples")


def test_the_answer_only_changes_at_checkpoints_and_is_reproducible():
    rng = np.random.default_rng(13)
    champion, challenger = simulate(rng, 1999, champion_bps=2.0, challenger_bps=3.0)
    frame = closed_frame(champion, challenger)
    first, later = decide(frame.head(1000), POLICY)[0], decide(frame, POLICY)[0]
    assert later.n == 1000 and later.n_closed == 1999
    assert (later.recommendation, later.p_value, later.ci) == (first.recommendation, first.p_value, first.ci)
    assert decide(frame, POLICY)[0] == later  # same evidence, same answer
    assert decide(frame, POLICY, seed=1)[0].p_value != pytest.approx(later.p_value, abs=0)  # the seed varies it


def test_holm_corrects_across_the_challengers_decided_together():
    """Three challengers of one champion: one clearly better, two with raw p between alpha/2 and alpha:
    each would pass alone, Holm stops them together."""
    n = 1000
    rng = np.random.default_rng(17)
    champion = 2 * BPS + 20 * BPS * rng.normal(size=n)
    # two looks (1,000 and 2,000) at alpha 0.1: 0.05 per look, tested at the first
    policy = Policy(auto_promote_threshold={"min_samples": n, "max_samples": 2 * n, "alpha": 0.1,
                                            "max_drawdown_pct": 100})
    frames = []
    for name, z in (("strong", 6.0), ("marginal_a", 1.8), ("marginal_b", 1.8)):
        noise = rng.normal(size=n)
        noise = (noise - noise.mean()) / noise.std()
        s = 10 * BPS
        frames.append(closed_frame(champion, champion + s * noise + z * s / math.sqrt(n), challenger_id=name))
    decisions = {d.challenger_id: d for d in decide(pl.concat(frames), policy)}
    raw = [decisions[k].p_value for k in ("strong", "marginal_a", "marginal_b")]
    assert [decisions[k].p_value_holm for k in ("strong", "marginal_a", "marginal_b")] == pytest.approx(holm(raw))
    assert all(d.family_size == 3 and d.alpha_per_look == 0.05 for d in decisions.values())
    assert decisions["strong"].recommendation is Recommendation.PROMOTE
    for name in ("marginal_a", "marginal_b"):
        d = decisions[name]
        assert 0.025 < d.p_value < 0.05 < d.p_value_holm, (name, d.p_value, d.p_value_holm)
        assert d.recommendation is Recommendation.CONTINUE_TESTING and "Holm p" in d.reason
        alone = decide(frames[[f["challenger_id"][0] for f in frames].index(name)], policy)[0]
        assert alone.recommendation is Recommendation.PROMOTE  # alone, it would have passed


def test_only_bars_where_someone_traded_count_and_duplicates_count_once():
    rng = np.random.default_rng(19)
    champion, challenger = simulate(rng, 1000, champion_bps=2.0, challenger_bps=6.0)
    frame = closed_frame(champion, challenger)
    flat = frame.head(300).with_columns(
        pl.col("timestamp") + dt.timedelta(days=30), pl.col("result_id") + 5000,
        pl.lit(0.0).alias("champion_signal"), pl.lit(0.0).alias("challenger_signal"),
        pl.lit(0.0).alias("champion_net_return"), pl.lit(0.0).alias("challenger_net_return"))
    doubled = pl.concat([frame, frame.head(100).with_columns(pl.col("result_id") + 10_000,
                                                             pl.col("challenger_net_return") - 0.01), flat])
    (decision,) = decide(doubled, POLICY)
    assert decision.n == decision.n_closed == 1000
    assert decision.mean_difference == pytest.approx(float(np.mean(challenger - champion)))


# ---- the statistics --------------------------------------------------------------------------------------
def test_the_vectorised_block_bootstrap_equals_explicit_resampling():
    d = np.random.default_rng(23).normal(size=103)
    means = block_bootstrap_means(d, n_bootstrap=50, block_length=10, rng=np.random.default_rng(1))
    starts = np.random.default_rng(1).integers(0, 103, size=(50, 11))
    explicit = [np.concatenate([np.take(d, np.arange(s, s + 10), mode="wrap") for s in row])[:103].mean()
                for row in starts]
    assert means == pytest.approx(explicit, rel=1e-12, abs=1e-12)


def test_the_bootstrap_test_has_its_level_and_a_zero_difference_is_never_significant():
    rng = np.random.default_rng(29)
    hits = sum(paired_test(rng.normal(size=500), alpha=0.05, n_bootstrap=1000, block_length=8, rng=rng).p_value < 0.05
               for _ in range(400))
    assert 8 <= hits <= 36  # 5 % of 400 = 20, binomial 99.9 % range
    same = paired_test(np.zeros(1000), alpha=0.05, n_bootstrap=500, block_length=10, rng=rng)
    assert same.p_value == 1.0 and same.ci == (0.0, 0.0)


def test_holm_and_the_default_block_length():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    assert holm([]) == []
    assert default_block_length(1000) == 10
    assert default_block_length(1000, horizon=12) == 12
    assert default_block_length(1000, horizon=12, signals_per_bar=4) == 48
    assert default_block_length(1000, horizon=48, signals_per_bar=20) == 100  # at most n / 10
    assert default_block_length(5) == 1
    assert checkpoints(AutoPromoteThreshold()) == [1000, 2000, 4000, 8000, 16000, 20000]


def test_improvement_guards_a_champion_earning_about_nothing():
    champion = np.array([0.002, -0.002] * 50)  # mean 0, mean |x| 20 bps
    assert improvement_pct(0.0001, champion) == pytest.approx(100 * 0.0001 / (ZERO_MEAN_GUARD * 0.002))
    assert improvement_pct(0.0001, champion + 0.001) == pytest.approx(10.0)  # a real mean: relative to it
    assert improvement_pct(0.0001, np.zeros(10)) == math.inf


def test_drawdown_is_the_strategy_metric_of_the_per_bar_portfolio():
    rng = np.random.default_rng(31)
    net = rng.normal(0.0005, 0.01, 600)
    frame = closed_frame(net, net, symbols=3)
    per_bar = frame.group_by("timestamp").agg(pl.col("challenger_net_return").mean()).sort("timestamp")
    sim = simulate_strategy(per_bar.with_columns(pl.lit(1.0).alias("position"), pl.lit("P").alias("symbol")),
                            position_col="position", return_col="challenger_net_return", log_returns=False,
                            periods_per_year=1.0)
    assert max_drawdown_pct(frame, "challenger_net_return") == pytest.approx(100 * sim["max_drawdown"])
