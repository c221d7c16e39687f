"""Consensus vote: causality (prefix cut), reliability weights, correlation penalty, threshold, levels."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clm.evaluation.consensus import (
    CONSENSUS_COLUMNS,
    DECISION_LOG_COLUMNS,
    ConsensusConfig,
    consensus,
    decision_log,
    to_signal,
)
from clm.evaluation.gate import GateConfig, learn_gate
from clm.evaluation.metrics import directional_accuracy

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = 2  # label horizon in bars
SMALL = ConsensusConfig(reliability_window=100, correlation_window=100, threshold_window=100, min_history=20)


def noisy(rng, r, accuracy, size=0.6):
    right = rng.random(len(r)) < accuracy
    return np.where(right, np.sign(r), -np.sign(r)) * size


def make(signals: dict, r: np.ndarray, symbol="AAA", label_end=True):
    n = len(r)
    ts = [T0 + timedelta(hours=i) for i in range(n)]
    parts = []
    for engine, sig in signals.items():
        data = {"engine": engine, "fold": 0, "symbol": symbol, "timestamp": ts, "signal": sig, "target_return": r}
        if label_end:
            data["label_end"] = [t + timedelta(hours=H) for t in ts]
        parts.append(pl.DataFrame(data))
    return pl.concat(parts)


def weights(out: pl.DataFrame, last: int = 100) -> dict:
    """Mean weight of each engine over the last rows, from the votes JSON."""
    rows = [json.loads(v) for v in out["votes"].tail(last)]
    return {e: float(np.mean([row[e]["weight"] for row in rows])) for e in rows[0]}


@pytest.fixture(scope="module")
def market():
    rng = np.random.default_rng(7)
    n = 600
    frames = []
    for symbol in ("AAA", "BBB"):
        r = rng.normal(0, 0.01, n)
        frames.append(
            make(
                {
                    "good": noisy(rng, r, 0.75) * rng.uniform(0.2, 1.0, n),
                    "fair": noisy(rng, r, 0.6) * rng.uniform(0.2, 1.0, n),
                    "coin": rng.uniform(-1, 1, n),
                },
                r,
                symbol,
            )
        )
    return pl.concat(frames)


# ------------------------------------------------------------------------------------------------
# causality
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["label_end", "horizon"])
def test_prefix_cut_rows_before_t_ignore_later_rows_and_unrealised_outcomes(market, mode):
    df = market if mode == "label_end" else market.drop("label_end")
    cfg = SMALL if mode == "label_end" else ConsensusConfig(**{**SMALL.__dict__, "horizon_bars": H})
    full = consensus(df, cfg)
    cut = T0 + timedelta(hours=350)
    rng = np.random.default_rng(99)
    poison = rng.uniform(-1, 1, df.height)
    # every column of rows at/after the cut, and the outcomes not yet realised at the cut
    unrealised = pl.col("timestamp") >= cut - timedelta(hours=H)
    altered = df.with_columns(
        pl.when(pl.col("timestamp") >= cut).then(pl.Series(poison)).otherwise(pl.col("signal")).alias("signal"),
        pl.when(unrealised).then(pl.Series(poison) * 5).otherwise(pl.col("target_return")).alias("target_return"),
    )
    if mode == "label_end":
        altered = altered.with_columns(
            pl.when(pl.col("timestamp") >= cut)
            .then(pl.col("timestamp"))
            .otherwise(pl.col("label_end"))
            .alias("label_end")
        )
    after = consensus(altered, cfg)
    before = pl.col("timestamp") < cut
    assert_frame_equal(full.filter(before), after.filter(before))
    assert not full.filter(~before).equals(after.filter(~before))  # the poison does reach later rows
    # dropping the future altogether gives the same prefix too
    assert_frame_equal(full.filter(before), consensus(df.filter(before), cfg))


def test_outcome_is_used_only_after_label_end():
    rng = np.random.default_rng(1)
    n = 200
    r = rng.normal(0, 0.01, n)
    df = make({"good": np.sign(r) * 0.5, "fair": noisy(rng, r, 0.7)}, r)
    cfg = ConsensusConfig(
        reliability_window=50, correlation_window=50, threshold_window=50, min_history=10, correlation_penalty=0.0
    )
    out = consensus(df, cfg)
    votes = [json.loads(v) for v in out["votes"]]
    m = 150
    # realised before row m: label_end = s + H < m  ->  s <= m - H - 1; the last 50 of them
    s = np.arange(m - H - 50, m - H)
    fair = df.filter(pl.col("engine") == "fair")["signal"].to_numpy()
    rel = directional_accuracy(fair[s], r[s])
    w = votes[m]
    assert w["fair"]["weight"] / w["good"]["weight"] == pytest.approx(2 * rel - 1, abs=1e-5)
    # first rows: fewer than min_history realised outcomes -> no weight, S = 0, level none
    first = out.head(10 + H)
    assert (first["score"] == 0).all() and (first["level"] == "none").all()


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------


def test_reliable_engine_dominates_and_coin_flip_gets_no_weight():
    rng = np.random.default_rng(3)
    n = 600
    r = rng.normal(0, 0.01, n)
    df = make({"perfect": np.sign(r) * 0.3, "coin": rng.choice([-1.0, 1.0], n)}, r)
    cfg = ConsensusConfig(reliability_window=400, min_history=20)
    out = consensus(df, cfg)
    w = weights(out)
    assert w["perfect"] > 0.9 and w["coin"] < 0.1
    tail = out.tail(100)
    assert (np.sign(tail["score"].to_numpy()) == np.sign(r[-100:])).mean() > 0.9


def test_identical_engines_share_a_vote_independent_ones_do_not():
    rng = np.random.default_rng(5)
    n = 600
    r = rng.normal(0, 0.01, n)
    a, b, c = (noisy(rng, r, 0.7) * rng.uniform(0.3, 1.0, n) for _ in range(3))
    cfg = ConsensusConfig(reliability_window=300, correlation_window=300, min_history=20)
    twins = weights(consensus(make({"A": a, "A2": a.copy(), "C": c}, r), cfg))
    pair = weights(consensus(make({"A": a, "B": b, "C": c}, r), cfg))
    assert twins["A"] + twins["A2"] < pair["A"] + pair["B"] - 0.1
    assert twins["A"] == pytest.approx(twins["A2"])
    # without the penalty the twins count twice
    no_penalty = ConsensusConfig(**{**cfg.__dict__, "correlation_penalty": 0.0})
    flat = weights(consensus(make({"A": a, "A2": a.copy(), "C": c}, r), no_penalty))
    assert flat["A"] + flat["A2"] > twins["A"] + twins["A2"] + 0.1


def test_gated_off_engine_has_no_vote(market):
    gated = market.with_columns((pl.col("engine") != "good").alias("gated"))
    out = consensus(gated, SMALL)
    assert weights(out, last=400)["good"] == 0.0
    # the gate's own output plugs in
    gate = learn_gate(market, GateConfig(min_rows=10))
    assert "gated" in gate.apply(market).columns
    consensus(gate.apply(market), SMALL)


# ------------------------------------------------------------------------------------------------
# score, threshold, levels, actions
# ------------------------------------------------------------------------------------------------


def test_score_bounded_and_columns(market):
    out = consensus(market, SMALL)
    assert out.columns == ["symbol", "timestamp", *CONSENSUS_COLUMNS]
    assert out.height == 1200 and out.select(pl.struct("symbol", "timestamp").is_unique().all()).item()
    for col in ("score",):
        assert out[col].abs().max() <= 1.0
    for col in ("agreement", "confidence"):
        assert out[col].min() >= 0.0 and out[col].max() <= 1.0 + 1e-12
    assert set(out["level"].unique()) <= {"none", "weak", "moderate", "strong"}
    assert set(out["action"].unique()) <= {"long", "short", "stand_aside"}
    assert out["n_votes"].max() <= 3
    log = decision_log(out)
    assert tuple(log.columns) == DECISION_LOG_COLUMNS
    assert all(isinstance(json.loads(v), dict) for v in log["votes"])


def test_threshold_is_trailing_quantile_and_levels_actions_follow_it(market):
    cfg = ConsensusConfig(**{**SMALL.__dict__, "level_multiples": (1.0, 1.3, 1.8)})
    out = consensus(market, cfg)
    one = out.filter(pl.col("symbol") == "BBB")
    a = one["score"].abs().to_numpy()
    m = 450
    assert one["threshold"][m] == pytest.approx(np.quantile(a[m - 100 : m], 0.7))
    assert one["threshold"].head(20).is_null().all()  # warm-up: fewer than min_history past rows
    theta, s = out["threshold"].to_numpy(), out["score"].to_numpy()
    ok = ~np.isnan(theta) & (s != 0)
    expected = np.full(len(s), "none", dtype=object)
    for name, k in (("weak", 1.0), ("moderate", 1.3), ("strong", 1.8)):
        expected[ok & (np.abs(s) >= k * np.nan_to_num(theta))] = name
    assert out["level"].to_list() == expected.tolist()
    act = np.where(expected == "none", "stand_aside", np.where(s > 0, "long", "short"))
    assert out["action"].to_list() == act.tolist()
    assert {"weak", "moderate", "strong"} <= set(out["level"].to_list())
    # a higher floor on the threshold only removes trades
    high = consensus(market, ConsensusConfig(**{**cfg.__dict__, "min_threshold": 0.9}))
    assert (high["action"] == "stand_aside").sum() > (out["action"] == "stand_aside").sum()


def test_not_tradable_stands_aside(market):
    out = consensus(market.with_columns(pl.lit(False).alias("tradable")), SMALL)
    assert (out["action"] == "stand_aside").all()
    assert (out["level"] != "none").any()


# ------------------------------------------------------------------------------------------------
# to_signal and errors
# ------------------------------------------------------------------------------------------------


def test_to_signal():
    assert to_signal([0.0, 0.5, 1.0, None], "probability").to_list() == [-1.0, 0.0, 1.0, None]
    sig = to_signal(np.array([-0.02, 0.0, 0.02, np.nan]), "return")
    assert sig[1] == 0.0 and sig[2] == pytest.approx(np.tanh(1.0)) and sig[3] is None
    assert to_signal(pl.Series([0.01]), "return", scale=0.01)[0] == pytest.approx(np.tanh(1.0))
    assert to_signal([0.1, 0.1, None], "return").to_list() == [0.0, 0.0, None]  # no spread, no view
    for args, match in (
        (([1.2], "probability"), "probability"),
        (([0.1], "return", -1.0), "scale"),
        (([0.1], "logit"), "kind"),
    ):
        with pytest.raises(ValueError, match=match):
            to_signal(*args)


def test_config_and_input_errors(market):
    for kwargs, field in (
        ({"reliability_window": 0}, "reliability_window"),
        ({"min_history": 600}, "reliability_window"),
        ({"min_reliability": 0.4}, "min_reliability"),
        ({"correlation_penalty": -1.0}, "correlation_penalty"),
        ({"threshold_quantile": 1.5}, "threshold_quantile"),
        ({"level_multiples": (1.0, 1.0, 2.0)}, "level_multiples"),
        ({"horizon_bars": -1}, "horizon_bars"),
        ({"min_threshold": 2.0}, "min_threshold"),
    ):
        with pytest.raises(ValueError, match=field):
            ConsensusConfig(**kwargs)
    with pytest.raises(ValueError, match="horizon_bars"):
        consensus(market.drop("label_end"), SMALL)
    with pytest.raises(ValueError, match="share an"):
        consensus(pl.concat([market, market.head(1)]), SMALL)
    with pytest.raises(ValueError, match="signal outside"):
        consensus(market.with_columns(pl.col("signal") * 2), SMALL)
    with pytest.raises(ValueError, match="decision_log"):
        decision_log(pl.DataFrame({"score": [0.0]}))
