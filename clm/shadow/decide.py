"""Should a challenger replace its champion? A paired, block-bootstrapped test on net returns per signal.

Sample. The closed rows of one (champion, challenger) pair (``shadow_test_results``; a bar closed
twice counts once), in time order, where at least one of the two took a position: bars where both
stayed flat carry no information about the difference (both earn 0). ``n`` is their count and
``d = challenger_net - champion_net`` per signal.

Looks. The decision is re-run as results accumulate, and testing a growing sample at level
``alpha`` every time would promote an equal challenger far more often than ``alpha`` (each look
is another chance for noise to cross the line). So the test only looks at checkpoints: the first
``min_samples * 2^j`` signals (capped at ``max_samples``), and ``alpha`` is split evenly over the
possible looks (Bonferroni): with the defaults (1,000 .. 20,000) that is 6 looks at 0.05 / 6 each,
so the chance that an equal challenger is ever promoted stays within ``alpha`` (up to the
bootstrap's own accuracy). Between checkpoints the answer does not change.

Test at a look (``n_t`` signals, level ``a = alpha / looks``):

* circular block bootstrap of ``mean(d)`` (Politis & Romano 1992): ``n_bootstrap`` resamples of
  ``ceil(n_t / L)`` blocks of ``L`` consecutive signals (wrapping around), the last one cut to make
  ``n_t``; all resamples at once from the cumulative sum of ``d`` (a block's sum is one subtraction).
  ``L`` is the policy's ``block_length``, else ``max(ceil(n^(1/3)), horizon * signals per bar)``:
  overlapping horizons make neighbouring signals' returns share bars, and a block shorter than the
  overlap would understate the variance (capped at ``n / 10`` so there are blocks to resample).
* one-sided p-value of ``H0: mean(d) <= 0``: ``(1 + #{m* - m >= m}) / (B + 1)`` (the resampled
  means ``m*`` centred on the observed ``m``); Holm's step-down correction across the challengers
  decided in the same call.
* ``ci = (low, high)``: the one-sided ``1 - a`` lower and upper bounds (basic bootstrap,
  ``m - q_{1-a}(m* - m)`` and ``m - q_a(m* - m)``); together a ``1 - 2a`` interval.
* improvement: ``100 * mean(d) / base`` with ``base = max(|mean(champion)|,
  ZERO_MEAN_GUARD * mean(|champion|))``: relative to the champion's mean net return per signal, but
  a champion earning about nothing per signal is measured against a tenth of its typical per-signal
  magnitude instead, so that a fraction of a basis point over a zero mean is not "+1000 %".
* drawdown: the per-bar equal-weight portfolio of the pair's net returns (mean over the symbols of
  a bar, every closed row of the tested period, flat ones as 0), compounded, as
  ``clm.evaluation.metrics`` measures a strategy's maximum drawdown; in %.

Recommendation: before ``min_samples`` CONTINUE_TESTING; REJECT when the challenger's drawdown
exceeds ``max_drawdown_pct``; PROMOTE when the Holm-adjusted p < ``a``, ``low > 0`` and the
improvement >= ``min_improvement_pct``; REJECT when ``high < 0`` (shown worse) or when the
``max_samples`` look is still undecided; else CONTINUE_TESTING.
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from clm.evaluation.metrics import max_drawdown
from clm.policy import AutoPromoteThreshold, Policy
from clm.registry.base import ModelRecord, Registry, Status, StatusChange

ZERO_MEAN_GUARD = 0.1  # a champion mean below this share of its mean |net return| counts as ~0
BPS = 1e4


class Recommendation(enum.StrEnum):
    PROMOTE = "PROMOTE"
    REJECT = "REJECT"
    CONTINUE_TESTING = "CONTINUE_TESTING"


@dataclass(frozen=True)
class PairedTest:
    """The bootstrap of one sample of paired differences."""

    n: int
    mean_difference: float
    ci: tuple[float, float]
    p_value: float
    block_length: int
    n_bootstrap: int


@dataclass(frozen=True)
class ShadowDecision:
    """One challenger's recommendation and the evidence behind it (returns are fractions per signal)."""

    recommendation: Recommendation
    challenger_id: str
    champion_id: str
    n: int  # paired signals tested (the look's sample)
    mean_difference: float | None
    ci: tuple[float | None, float | None]
    p_value: float | None
    p_value_holm: float | None
    improvement_pct: float | None
    challenger_max_drawdown_pct: float | None
    champion_max_drawdown_pct: float | None
    reason: str
    n_closed: int = 0  # paired signals closed so far (n is the last checkpoint reached)
    champion_mean: float | None = None
    challenger_mean: float | None = None
    alpha_per_look: float | None = None
    looks: int = 1
    family_size: int = 0
    block_length: int | None = None
    n_bootstrap: int = 0
    thresholds: Mapping[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        """JSON-ready, for ``status_history`` (non-finite numbers become None)."""
        def num(value: float | None) -> float | None:
            return None if value is None or not math.isfinite(value) else float(value)

        return {
            "test": "paired circular block bootstrap of mean net return per signal (challenger - champion)",
            "recommendation": str(self.recommendation), "champion_id": self.champion_id,
            "challenger_id": self.challenger_id, "n": self.n, "n_closed": self.n_closed,
            "mean_difference": num(self.mean_difference),
            "mean_difference_bps": num(None if self.mean_difference is None else self.mean_difference * BPS),
            "ci": [num(self.ci[0]), num(self.ci[1])], "p_value": num(self.p_value),
            "p_value_holm": num(self.p_value_holm), "improvement_pct": num(self.improvement_pct),
            "champion_mean": num(self.champion_mean), "challenger_mean": num(self.challenger_mean),
            "challenger_max_drawdown_pct": num(self.challenger_max_drawdown_pct),
            "champion_max_drawdown_pct": num(self.champion_max_drawdown_pct),
            "alpha_per_look": num(self.alpha_per_look), "looks": self.looks, "family_size": self.family_size,
            "block_length": self.block_length, "n_bootstrap": self.n_bootstrap,
            "thresholds": dict(self.thresholds), "reason": self.reason,
        }


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------


def checkpoints(threshold: AutoPromoteThreshold) -> list[int]:
    """The sample sizes the test looks at: ``min_samples * 2^j`` below ``max_samples``, then ``max_samples``."""
    looks, n = [], threshold.min_samples
    while n < threshold.max_samples:
        looks.append(n)
        n *= 2
    looks.append(max(threshold.max_samples, threshold.min_samples))
    return looks


def default_block_length(n: int, *, horizon: int = 1, signals_per_bar: float = 1.0) -> int:
    """``max(ceil(n^(1/3)), horizon * signals per bar)``, at most ``n // 10`` (at least 1)."""
    length = max(math.ceil(n ** (1.0 / 3.0)), math.ceil(horizon * signals_per_bar))
    return int(max(1, min(length, n // 10)))


def block_bootstrap_means(d: np.ndarray, *, n_bootstrap: int, block_length: int, rng: np.random.Generator
                          ) -> np.ndarray:
    """``n_bootstrap`` circular block bootstrap means of ``d``, all at once."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    length = int(min(max(1, block_length), n))
    k = math.ceil(n / length)
    last = n - (k - 1) * length  # the cut last block: 1 .. length signals
    wrapped = np.concatenate([[0.0], np.cumsum(np.concatenate([d, d[:length]]))])
    full = wrapped[length:length + n] - wrapped[:n]  # sum of the block starting at each position
    cut = wrapped[last:last + n] - wrapped[:n]
    starts = rng.integers(0, n, size=(n_bootstrap, k))
    sums = full[starts[:, :-1]].sum(axis=1) + cut[starts[:, -1]]
    return sums / n


def paired_test(d: np.ndarray, *, alpha: float, n_bootstrap: int, block_length: int,
                rng: np.random.Generator) -> PairedTest:
    """One-sided bootstrap p-value of ``mean(d) <= 0`` and the one-sided ``1 - alpha`` bounds."""
    d = np.asarray(d, dtype=np.float64)
    m = float(d.mean())
    centred = block_bootstrap_means(d, n_bootstrap=n_bootstrap, block_length=block_length, rng=rng) - m
    # a tolerance keeps float noise from deciding ties (e.g. d == 0 everywhere: p = 1)
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    p = (1.0 + float(np.count_nonzero(centred >= m - tol))) / (n_bootstrap + 1.0)
    low = m - float(np.quantile(centred, 1.0 - alpha))
    high = m - float(np.quantile(centred, alpha))
    return PairedTest(len(d), m, (low, high), min(1.0, p), int(block_length), int(n_bootstrap))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if not m:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def max_drawdown_pct(rows: pl.DataFrame, column: str) -> float | None:
    """Maximum drawdown (%) of the per-bar equal-weight portfolio of ``column`` (module doc)."""
    if rows.is_empty():
        return None
    per_bar = rows.group_by("timestamp").agg(pl.col(column).mean()).sort("timestamp")[column].to_numpy()
    value = max_drawdown(per_bar)
    return None if not math.isfinite(value) else 100.0 * value


def improvement_pct(mean_difference: float, champion: np.ndarray) -> float:
    """``100 * mean(d) / max(|mean(champion)|, ZERO_MEAN_GUARD * mean(|champion|))`` (module doc)."""
    base = max(abs(float(champion.mean())), ZERO_MEAN_GUARD * float(np.abs(champion).mean()))
    if base == 0:
        return math.inf if mean_difference > 0 else (-math.inf if mean_difference < 0 else 0.0)
    return 100.0 * mean_difference / base


# ------------------------------------------------------------------------------------------------
# decisions
# ------------------------------------------------------------------------------------------------


@dataclass
class _Pair:
    champion_id: str
    challenger_id: str
    rows: pl.DataFrame  # every closed row, time order
    sample: pl.DataFrame  # rows where at least one of the two traded
    n_closed: int
    n: int = 0
    test: PairedTest | None = None
    champion_mean: float | None = None
    challenger_mean: float | None = None
    improvement: float | None = None
    dd_challenger: float | None = None
    dd_champion: float | None = None
    holm_p: float | None = None


def _threshold(policy: Policy | AutoPromoteThreshold) -> AutoPromoteThreshold:
    return policy.auto_promote_threshold if isinstance(policy, Policy) else policy


def _pairs(closed: pl.DataFrame) -> list[_Pair]:
    needed = ["champion_id", "challenger_id", "symbol", "timestamp", "champion_signal", "challenger_signal",
              "champion_net_return", "challenger_net_return"]
    missing = [c for c in needed if c not in closed.columns]
    if missing:
        raise ValueError(f"decide: closed rows lack column(s) {missing} (shadow_test_results columns)")
    frame = closed
    if "result_id" in frame.columns:  # a bar closed twice counts once: the first result recorded
        frame = frame.sort("result_id", nulls_last=True)
    if "horizon" not in frame.columns:
        frame = frame.with_columns(pl.lit(1, pl.Int64).alias("horizon"))
    frame = (frame.unique(["champion_id", "challenger_id", "symbol", "timestamp"], keep="first", maintain_order=True)
             .filter(pl.col("champion_net_return").is_finite() & pl.col("challenger_net_return").is_finite())
             .sort("champion_id", "challenger_id", "timestamp", "symbol"))
    out = []
    for (champion_id, challenger_id), rows in frame.partition_by(
            "champion_id", "challenger_id", as_dict=True, maintain_order=True).items():
        traded = (pl.col("champion_signal").fill_null(0) != 0) | (pl.col("challenger_signal").fill_null(0) != 0)
        sample = rows.filter(traded)
        out.append(_Pair(str(champion_id), str(challenger_id), rows, sample, sample.height))
    return sorted(out, key=lambda p: (p.challenger_id, p.champion_id))


def _measure(pair: _Pair, n: int, threshold: AutoPromoteThreshold, alpha: float, seed: int | None) -> None:
    sample = pair.sample.head(n)
    pair.n = sample.height
    if pair.n < 2:
        return
    c = sample["champion_net_return"].to_numpy().astype(np.float64)
    g = sample["challenger_net_return"].to_numpy().astype(np.float64)
    horizon = int(sample["horizon"].max() or 1)
    per_bar = pair.n / max(1, sample["timestamp"].n_unique())
    length = threshold.block_length or default_block_length(pair.n, horizon=horizon, signals_per_bar=per_bar)
    key = zlib.crc32(f"{pair.champion_id}|{pair.challenger_id}|{pair.n}".encode())
    rng = np.random.default_rng([key] if seed is None else [seed, key])
    pair.test = paired_test(g - c, alpha=alpha, n_bootstrap=threshold.n_bootstrap, block_length=min(length, pair.n),
                            rng=rng)
    pair.champion_mean, pair.challenger_mean = float(c.mean()), float(g.mean())
    pair.improvement = improvement_pct(pair.test.mean_difference, c)
    period = pair.rows.filter(pl.col("timestamp") <= sample["timestamp"].max())
    pair.dd_challenger = max_drawdown_pct(period, "challenger_net_return")
    pair.dd_champion = max_drawdown_pct(period, "champion_net_return")


def _bps(value: float) -> str:
    return f"{value * BPS:+.2f} bps"


def decide(closed: pl.DataFrame, policy: Policy | AutoPromoteThreshold, *, seed: int | None = None
           ) -> list[ShadowDecision]:
    """One decision per (champion, challenger) pair in ``closed`` (shadow_test_results rows); the pairs
    decided together form one Holm family. ``seed`` varies the bootstrap (default: derived from the pair
    and its sample size, so the same evidence always gives the same answer)."""
    threshold = _threshold(policy)
    looks = checkpoints(threshold)
    alpha = threshold.alpha / len(looks)
    pairs = _pairs(closed)
    for pair in pairs:
        reached = [k for k in looks if k <= pair.n_closed]
        _measure(pair, reached[-1] if reached else pair.n_closed, threshold, alpha, seed)
    family = [p for p in pairs if p.n_closed >= threshold.min_samples and p.test is not None]
    for pair, adjusted in zip(family, holm([p.test.p_value for p in family]), strict=True):
        pair.holm_p = adjusted
    thresholds = {
        "min_samples": threshold.min_samples, "max_samples": threshold.max_samples, "alpha": threshold.alpha,
        "min_improvement_pct": threshold.min_improvement_pct, "max_drawdown_pct": threshold.max_drawdown_pct,
    }
    return [_decision(p, threshold, alpha, len(looks), len(family), thresholds) for p in pairs]


def _decision(pair: _Pair, threshold: AutoPromoteThreshold, alpha: float, looks: int, family: int,
              thresholds: Mapping[str, Any]) -> ShadowDecision:
    test = pair.test
    rec, reason = Recommendation.CONTINUE_TESTING, ""
    if pair.n_closed < threshold.min_samples or test is None:
        reason = f"{pair.n_closed:,} of {threshold.min_samples:,} paired signals closed"
    else:
        low, high = test.ci
        dd = pair.dd_challenger
        summary = (f"mean difference {_bps(test.mean_difference)} per signal over {test.n:,} signals, "
                   f"{100 * (1 - alpha):.2f}% bounds [{_bps(low)}, {_bps(high)}], Holm p {pair.holm_p:.4g} "
                   f"(alpha {alpha:.4g} per look), improvement {pair.improvement:+.1f}%, challenger drawdown "
                   + ("n/a" if dd is None else f"{dd:.1f}%"))
        missing = []
        if not pair.holm_p < alpha:
            missing.append(f"Holm p {pair.holm_p:.4g} >= {alpha:.4g}")
        if not low > 0:
            missing.append(f"lower bound {_bps(low)} <= 0")
        if not pair.improvement >= threshold.min_improvement_pct:
            missing.append(f"improvement {pair.improvement:+.1f}% < {threshold.min_improvement_pct:g}%")
        if dd is not None and dd > threshold.max_drawdown_pct:
            rec = Recommendation.REJECT
            reason = f"challenger drawdown {dd:.1f}% exceeds max_drawdown_pct {threshold.max_drawdown_pct:g}%"
        elif not missing:
            rec, reason = Recommendation.PROMOTE, "better net of costs"
        elif high < 0:
            rec, reason = Recommendation.REJECT, f"worse net of costs (upper bound {_bps(high)} < 0)"
        elif test.n >= threshold.max_samples:
            rec, reason = Recommendation.REJECT, f"undecided after max_samples {threshold.max_samples:,}: " + (
                "; ".join(missing))
        else:
            reason = "not shown better yet: " + "; ".join(missing)
        reason = f"{reason}; {summary}"
    return ShadowDecision(
        recommendation=rec, challenger_id=pair.challenger_id, champion_id=pair.champion_id, n=pair.n,
        mean_difference=None if test is None else test.mean_difference,
        ci=(None, None) if test is None else test.ci, p_value=None if test is None else test.p_value,
        p_value_holm=pair.holm_p, improvement_pct=pair.improvement,
        challenger_max_drawdown_pct=pair.dd_challenger, champion_max_drawdown_pct=pair.dd_champion,
        reason=reason, n_closed=pair.n_closed, champion_mean=pair.champion_mean,
        challenger_mean=pair.challenger_mean, alpha_per_look=alpha, looks=looks, family_size=family,
        block_length=None if test is None else test.block_length,
        n_bootstrap=0 if test is None else test.n_bootstrap, thresholds=thresholds,
    )


# ------------------------------------------------------------------------------------------------
# acting on decisions
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedDecision:
    """What ``apply_decisions`` did with one decision: ``action`` is ``recorded`` (recommendation only),
    ``promoted``, ``rejected``, or ``skipped: <why>`` (auto-promotion on, but the registry moved on)."""

    decision: ShadowDecision
    history: StatusChange  # the decision's own status_history row
    action: str
    record: ModelRecord | None = None  # the challenger after a promotion or rejection


def apply_decisions(registry: Registry, decisions: Sequence[ShadowDecision], policy: Policy, *,
                    actor: str = "shadow") -> list[AppliedDecision]:
    """Every decision -> ``registry.record_decision`` with its evidence; with ``policy.auto_promote``
    a PROMOTE promotes the challenger (its champion retired) and a REJECT rejects it, each with the
    same evidence. Only a challenger still SHADOW whose champion is still the key's ACTIVE model is
    acted upon: the evidence is about that pair and nothing else. The evidence also records
    ``cost_config``, the policy's cost assumptions at the decision (``Policy.cost_config().as_dict()``;
    outcomes are costed when they close, so rows closed by earlier runs used the policy of their run)."""
    costs = policy.cost_config().as_dict()
    done = []
    for decision in decisions:
        evidence = {**decision.evidence(), "cost_config": costs}
        note = decision.reason
        history = registry.record_decision(decision.challenger_id, f"shadow test: {decision.recommendation}",
                                           evidence=evidence, actor=actor, note=note)
        action, record = "recorded", None
        if policy.auto_promote and decision.recommendation is not Recommendation.CONTINUE_TESTING:
            current = registry.get(decision.challenger_id)
            active = registry.active(current.key)
            if current.status is not Status.SHADOW:
                action = f"skipped: {decision.challenger_id} is {current.status}, not SHADOW"
            elif decision.recommendation is Recommendation.PROMOTE and (
                    active is None or active.model_id != decision.champion_id):
                action = (f"skipped: the champion tested against ({decision.champion_id}) is no longer ACTIVE "
                          f"for {current.key}")
            elif decision.recommendation is Recommendation.PROMOTE:
                record = registry.promote(decision.challenger_id, actor=actor, evidence=evidence,
                                          note=f"shadow test: {note}")
                action = "promoted"
            else:
                record = registry.set_status(decision.challenger_id, Status.REJECTED, actor=actor, evidence=evidence,
                                             note=f"shadow test: {note}")
                action = "rejected"
        done.append(AppliedDecision(decision, history, action, record))
    return done
