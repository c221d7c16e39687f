"""Consensus: a reliability-weighted, correlation-penalised vote of the engines, with an adaptive threshold.

Input: out-of-sample predictions, one row per ``(engine, symbol, timestamp)`` with ``engine``,
``symbol``, ``timestamp``, ``signal`` in ``[-1, 1]`` (``to_signal``) and ``target_return`` (the
realised forward log return); optional ``label_end`` (when the outcome is realised, see
``clm.labels.forward``), ``gated`` (``clm.evaluation.gate.RegimeGate.apply``; False = no vote),
``tradable`` (``clm.evaluation.costs.trade_costs``) and ``regime`` (passed through).

Everything at row ``(symbol, t)`` uses only the signals at ``t`` and information from before ``t``;
no outcome is used before it is realised (NO look-ahead). Per symbol, for engine ``e``:

1. Reliability ``rel_e`` = trailing directional hit rate of ``e`` on this symbol (per symbol, not
   pooled): the share of ``sign(signal) == sign(target_return)`` among the last
   ``reliability_window`` realised outcomes of ``(e, symbol)`` whose return is non-zero (the
   definition of ``clm.evaluation.metrics.directional_accuracy``; a zero signal is a miss). An
   outcome is realised at ``t`` when ``label_end < t`` (strict: one bar conservative, since a
   label ending at bar ``t`` is known only at its close); without a ``label_end`` column,
   ``horizon_bars`` must be set and the outcome of the ``k``-th row of ``(e, symbol)`` is used
   from row ``k + horizon_bars + 1`` on. Fewer than ``min_history`` non-zero outcomes: unknown.
2. Reliability weight ``r_e = max(0, 2 * rel_e - 1)`` when ``rel_e >= min_reliability``, else 0
   (unknown reliability, a null signal or ``gated`` False: 0). A perfect engine gets 1, a coin
   flip ~0, a worse-than-coin engine 0 (it is never inverted).
3. Correlation penalty: ``c_ef`` = Pearson correlation of the signals of ``e`` and ``f`` on the
   symbol over the trailing ``correlation_window`` timestamps before ``t`` (pairwise complete; null
   with fewer than ``min_history`` pairs or a constant signal, counted as 0);
   ``w_e = r_e / (1 + correlation_penalty * sum_{f != e, r_f > 0} max(0, c_ef))``. The SUM (not
   the mean) over the other voting engines makes ``k`` identical copies of an engine share the
   vote of one (with penalty 1 each copy gets ``r / k``), however many other engines there are;
   independent engines (``c ~ 0``) are not penalised, negatively correlated ones neither.
4. Weights are normalised to sum 1 over the voting engines; all zero -> ``S = 0``, level none.
   ``S = sum_e w_e * signal_e`` (in ``[-1, 1]`` since signals are). ``agreement`` = the weight
   share of engines with ``sign(signal) == sign(S)`` (0 when ``S == 0``);
   ``confidence = |S| * agreement`` (in ``[0, 1]``).
5. Adaptive threshold ``theta`` = the ``threshold_quantile`` (linear interpolation) of ``|S|`` over
   the symbol's previous ``threshold_window`` rows (strictly before ``t``; null with fewer than
   ``min_history`` of them), floored at ``min_threshold``.
6. Level, with ``(weak, moderate, strong) = level_multiples`` (default 1, 1.5, 2):
   ``strong`` when ``|S| >= strong * theta``, else ``moderate`` when ``|S| >= moderate * theta``,
   else ``weak`` when ``|S| >= weak * theta``, else ``none``; also ``none`` when ``theta`` is null
   (warm-up) or ``S == 0``.
7. Action: ``long`` / ``short`` (the sign of ``S``) when the level is not none, ``|S| >= theta``
   and - when a ``tradable`` column exists - at least one voting engine agreeing with ``sign(S)``
   has a tradable row after costs; else ``stand_aside``.

``votes`` is a JSON object string ``{"engine": {"signal": s, "weight": w}}`` (engines with a
signal at the row, keys sorted, values rounded to 6 decimals) so a decision log row is
self-contained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from clm.checks import is_finite_number, is_int
from clm.evaluation.gate import check_predictions

LEVELS = ("none", "weak", "moderate", "strong")
ACTIONS = ("long", "short", "stand_aside")
DECISION_LOG_COLUMNS = ("timestamp", "symbol", "score", "votes", "confidence", "level", "action")
CONSENSUS_COLUMNS = (
    "score",
    "votes",
    "n_votes",
    "agreement",
    "confidence",
    "threshold",
    "level",
    "action",
)


def to_signal(
    prediction: pl.Series | np.ndarray | Sequence[float],
    kind: Literal["probability", "return"],
    scale: float | None = None,
) -> pl.Series:
    """An engine's prediction as a directional signal in ``[-1, 1]`` (Float64 Series ``signal``).

    ``"probability"`` (a classifier's P(up), in [0, 1]): ``2 * p - 1``. ``"return"`` (a
    regressor's predicted return): ``tanh(pred / scale)``, ``scale`` defaulting to the standard
    deviation (ddof=1) of the finite predictions; constant predictions carry no view and give 0.
    NaN / null predictions give null signals.
    """
    if isinstance(prediction, pl.Series):
        x = prediction.cast(pl.Float64, strict=False).fill_nan(None)
    else:
        try:
            arr = np.asarray(prediction, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"prediction must be numeric: {exc}") from None
        if arr.ndim != 1:
            raise ValueError(f"prediction must be one-dimensional, got shape {arr.shape}")
        x = pl.Series(arr).fill_nan(None)
    if x.is_infinite().any():
        raise ValueError("prediction must not hold infinite values")
    if kind == "probability":
        if scale is not None:
            raise ValueError("scale applies to kind='return' only")
        if ((x < 0) | (x > 1)).any():
            raise ValueError("probability predictions must lie in [0, 1]")
        return (2 * x - 1).alias("signal")
    if kind != "return":
        raise ValueError(f"kind must be 'probability' or 'return', got {kind!r}")
    if scale is None:
        sd = x.std(ddof=1)
        if sd is None or not sd > 0:
            # constant predictions (e.g. a model that stopped at its first round) carry no view
            return (x * 0.0).alias("signal")
        scale = float(sd)
    elif not is_finite_number(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return (x / scale).tanh().alias("signal")


@dataclass(frozen=True)
class ConsensusConfig:
    """Windows (rows), reliability floor, penalty and threshold rules; errors name the field."""

    reliability_window: int = 500  # realised outcomes per (engine, symbol) in the hit rate
    min_history: int = 30  # outcomes / pairs / |S| rows needed before a reliability / corr / threshold
    min_reliability: float = 0.5  # hit rate below this: weight 0
    horizon_bars: int | None = None  # without label_end: rows before an outcome is realised
    correlation_penalty: float = 1.0  # 0 = no penalty
    correlation_window: int = 500  # timestamps of the symbol in the trailing signal correlation
    threshold_quantile: float = 0.7  # adaptive threshold = this quantile of past |S|
    threshold_window: int = 500  # past rows of the symbol in that quantile
    min_threshold: float = 0.0  # floor of the adaptive threshold
    level_multiples: tuple[float, float, float] = (1.0, 1.5, 2.0)  # weak, moderate, strong x threshold

    def __post_init__(self) -> None:
        for name in ("reliability_window", "correlation_window", "threshold_window", "min_history"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("reliability_window", "correlation_window", "threshold_window"):
            if getattr(self, name) < self.min_history:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= min_history ({self.min_history})")
        h = self.horizon_bars
        if h is not None and (not is_int(h) or h < 0):
            raise ValueError(f"horizon_bars must be None or an int >= 0, got {h!r}")
        mr = self.min_reliability
        if not is_finite_number(mr) or not 0.5 <= mr < 1:
            raise ValueError(f"min_reliability must be a number in [0.5, 1), got {mr!r}")
        cp = self.correlation_penalty
        if not is_finite_number(cp) or cp < 0:
            raise ValueError(f"correlation_penalty must be a finite number >= 0, got {cp!r}")
        q = self.threshold_quantile
        if not is_finite_number(q) or not 0 <= q <= 1:
            raise ValueError(f"threshold_quantile must be a number in [0, 1], got {q!r}")
        mt = self.min_threshold
        if not is_finite_number(mt) or not 0 <= mt <= 1:
            raise ValueError(f"min_threshold must be a number in [0, 1], got {mt!r}")
        lm = self.level_multiples
        if (
            not isinstance(lm, (tuple, list))
            or len(lm) != 3
            or not all(is_finite_number(v) and v > 0 for v in lm)
            or not lm[0] < lm[1] < lm[2]
        ):
            raise ValueError(
                f"level_multiples must be 3 strictly increasing numbers > 0 (weak, moderate, strong), got {lm!r}"
            )


def _reliability(long: pl.DataFrame, config: ConsensusConfig, has_label_end: bool) -> pl.DataFrame:
    """``long`` sorted by (engine, symbol, timestamp) with ``__hits`` / ``__n``: the window counts."""
    group = ["engine", "symbol"]
    w = config.reliability_window
    if not has_label_end:
        lag = config.horizon_bars + 1
        return long.with_columns(
            *[
                pl.col(c).cast(pl.Int64).rolling_sum(w, min_samples=1).shift(lag).over(group).fill_null(0).alias(a)
                for c, a in (("__hit", "__hits"), ("__valid", "__n"))
            ]
        )
    ts_type = long.schema["timestamp"]
    events = (
        long.filter(pl.col("label_end").is_not_null() & pl.col("target_return").is_finite())
        .select(*group, pl.col("label_end").cast(ts_type).alias("__known"), "__hit", "__valid")
        .sort(*group, "__known")
        .with_columns(
            *[pl.col(c).cast(pl.Int64).cum_sum().over(group).alias(c) for c in ("__hit", "__valid")]
        )
        .with_columns(
            *[
                (pl.col(c) - pl.col(c).shift(w).over(group).fill_null(0)).alias(a)
                for c, a in (("__hit", "__hits"), ("__valid", "__n"))
            ]
        )
        .unique([*group, "__known"], keep="last", maintain_order=True)
        .select(*group, "__known", "__hits", "__n")
        .sort("__known")
    )
    joined = long.sort("timestamp").join_asof(
        events,
        left_on="timestamp",
        right_on="__known",
        by=group,
        strategy="backward",
        allow_exact_matches=False,  # realised strictly before t
        check_sortedness=False,  # both sides sorted by their key above
    )
    return joined.with_columns(pl.col("__hits", "__n").fill_null(0)).drop("__known").sort(*group, "timestamp")


def _json_key(name: str) -> str:
    return json.dumps(name)


def consensus(predictions: pl.DataFrame | pl.LazyFrame, config: ConsensusConfig = ConsensusConfig()) -> pl.DataFrame:
    """One row per (symbol, timestamp): ``symbol, timestamp, [regime], *CONSENSUS_COLUMNS`` (module docstring)."""
    if not isinstance(config, ConsensusConfig):
        raise ValueError(f"config must be a ConsensusConfig, got {type(config).__name__}")
    df = check_predictions(predictions, ("engine", "symbol", "timestamp", "signal", "target_return"), "consensus")
    names = df.columns
    has_label_end = "label_end" in names
    if not has_label_end and config.horizon_bars is None:
        raise ValueError(
            "consensus: predictions lack label_end; set ConsensusConfig.horizon_bars so outcomes are used "
            "only once realised"
        )
    dupes = df.select(pl.struct("engine", "symbol", "timestamp").is_duplicated().sum()).item()
    if dupes:
        raise ValueError(f"consensus: {dupes} rows share an (engine, symbol, timestamp)")
    if df.height == 0:
        raise ValueError("consensus: no prediction rows")

    signal = pl.col("signal").cast(pl.Float64)
    target = pl.col("target_return").cast(pl.Float64)
    valid = signal.is_not_null() & target.is_finite().fill_null(False) & (target != 0)
    gated = pl.col("gated").cast(pl.Boolean).fill_null(False) if "gated" in names else pl.lit(True)
    tradable = pl.col("tradable").cast(pl.Boolean).fill_null(False) if "tradable" in names else pl.lit(True)
    long = df.select(
        pl.col("engine").cast(pl.String),
        pl.col("symbol").cast(pl.String),
        pl.col("timestamp"),
        signal.alias("signal"),
        target.alias("target_return"),
        *([pl.col("label_end")] if has_label_end else []),
        *([pl.col("regime").cast(pl.String)] if "regime" in names else []),
        gated.alias("__gated"),
        tradable.alias("__tradable"),
        valid.fill_null(False).alias("__valid"),
        (valid & (signal.sign() == target.sign())).fill_null(False).alias("__hit"),
    ).sort("engine", "symbol", "timestamp")
    long = _reliability(long, config, has_label_end)
    rel = pl.col("__hits") / pl.col("__n")
    base = (
        pl.when((pl.col("__n") >= config.min_history) & (rel >= config.min_reliability))
        .then((2 * rel - 1).clip(lower_bound=0.0))
        .otherwise(0.0)
    )
    long = long.with_columns(
        pl.when(pl.col("__gated") & pl.col("signal").is_not_null()).then(base).otherwise(0.0).alias("__base")
    )

    engines = sorted(long["engine"].unique().to_list())
    k = len(engines)
    sig = [pl.col(f"__s{i}") for i in range(k)]
    rw = [pl.col(f"__r{i}") for i in range(k)]
    wide = (
        long.group_by("symbol", "timestamp")
        .agg(
            *([pl.col("regime").drop_nulls().first().alias("regime")] if "regime" in long.columns else []),
            *[pl.col("signal").filter(pl.col("engine") == e).first().alias(f"__s{i}") for i, e in enumerate(engines)],
            *[pl.col("__base").filter(pl.col("engine") == e).first().alias(f"__r{i}") for i, e in enumerate(engines)],
            *[
                pl.col("__tradable").filter(pl.col("engine") == e).first().alias(f"__t{i}")
                for i, e in enumerate(engines)
            ],
        )
        .with_columns(*[r.fill_null(0.0) for r in rw])
        .sort("symbol", "timestamp")
    )

    # trailing pairwise signal correlations (strictly before t), pairwise complete
    cw, mh = config.correlation_window, config.min_history

    def roll(e: pl.Expr) -> pl.Expr:  # trailing sum over the symbol's previous cw rows
        return e.rolling_sum(cw, min_samples=1).shift(1).over("symbol")

    corr_cols = []
    if k > 1 and config.correlation_penalty > 0:
        for i in range(k):
            for j in range(i + 1, k):
                both = sig[i].is_not_null() & sig[j].is_not_null()
                x = pl.when(both).then(sig[i]).otherwise(0.0)
                y = pl.when(both).then(sig[j]).otherwise(0.0)

                n = roll(both.cast(pl.Float64))
                sx, sy, sxx, syy, sxy = roll(x), roll(y), roll(x * x), roll(y * y), roll(x * y)
                cov = sxy - sx * sy / n
                vx, vy = sxx - sx * sx / n, syy - sy * sy / n
                scale = (vx * vy).sqrt()
                ok = (n >= mh) & (vx > 1e-12 * n) & (vy > 1e-12 * n)
                corr = pl.when(ok).then((cov / scale).clip(-1.0, 1.0)).otherwise(None)
                corr_cols.append(corr.alias(f"__c{i}_{j}"))
        wide = wide.with_columns(corr_cols)

    def c(i: int, j: int) -> pl.Expr:
        a, b = min(i, j), max(i, j)
        return pl.col(f"__c{a}_{b}").clip(lower_bound=0.0).fill_null(0.0)

    penalties = []
    for i in range(k):
        others = [pl.when(rw[j] > 0).then(c(i, j)).otherwise(0.0) for j in range(k) if j != i and corr_cols]
        total = pl.sum_horizontal(others) if others else pl.lit(0.0)
        penalties.append((rw[i] / (1 + config.correlation_penalty * total)).alias(f"__p{i}"))
    wide = wide.with_columns(penalties)
    raw = [pl.col(f"__p{i}") for i in range(k)]
    wide = wide.with_columns(pl.sum_horizontal(raw).alias("__total"))
    total = pl.col("__total")
    wide = wide.with_columns(
        *[pl.when(total > 0).then(raw[i] / total).otherwise(0.0).alias(f"__w{i}") for i in range(k)]
    )
    w = [pl.col(f"__w{i}") for i in range(k)]
    score = pl.sum_horizontal([w[i] * sig[i].fill_null(0.0) for i in range(k)]).clip(-1.0, 1.0)
    score = pl.when(score == 0).then(0.0).otherwise(score)  # no -0.0 in logs
    wide = wide.with_columns(score.alias("score"))
    s_sign = pl.col("score").sign()
    agree = [(w[i] > 0) & (sig[i].sign() == s_sign) & (pl.col("score") != 0) for i in range(k)]
    wide = wide.with_columns(
        pl.sum_horizontal([pl.when(a).then(w[i]).otherwise(0.0) for i, a in enumerate(agree)]).alias("agreement"),
        pl.sum_horizontal([(wi > 0).cast(pl.UInt32) for wi in w]).cast(pl.UInt32).alias("n_votes"),
        pl.any_horizontal([a & pl.col(f"__t{i}").fill_null(False) for i, a in enumerate(agree)]).alias("__trad"),
        pl.col("score")
        .abs()
        .rolling_quantile(
            config.threshold_quantile,
            interpolation="linear",
            window_size=config.threshold_window,
            min_samples=config.min_history,
        )
        .shift(1)
        .over("symbol")
        .clip(lower_bound=config.min_threshold)
        .alias("threshold"),
    )
    a_s, theta = pl.col("score").abs(), pl.col("threshold")
    weak, moderate, strong = config.level_multiples
    level = (
        pl.when(theta.is_null() | (pl.col("score") == 0) | (total <= 0))
        .then(pl.lit("none"))
        .when(a_s >= strong * theta)
        .then(pl.lit("strong"))
        .when(a_s >= moderate * theta)
        .then(pl.lit("moderate"))
        .when(a_s >= weak * theta)
        .then(pl.lit("weak"))
        .otherwise(pl.lit("none"))
    )
    wide = wide.with_columns(level.alias("level"), (a_s * pl.col("agreement")).alias("confidence"))
    go = (pl.col("level") != "none") & (a_s >= theta).fill_null(False) & pl.col("__trad")
    action = (
        pl.when(go & (pl.col("score") > 0))
        .then(pl.lit("long"))
        .when(go & (pl.col("score") < 0))
        .then(pl.lit("short"))
        .otherwise(pl.lit("stand_aside"))
    )
    pieces = [
        pl.when(sig[i].is_not_null()).then(
            pl.concat_str(
                pl.lit(_json_key(e) + ':{"signal":'),
                sig[i].round(6).cast(pl.String),
                pl.lit(',"weight":'),
                w[i].round(6).cast(pl.String),
                pl.lit("}"),
            )
        )
        for i, e in enumerate(engines)
    ]
    votes = pl.concat_str(pl.lit("{"), pl.concat_str(pieces, separator=",", ignore_nulls=True), pl.lit("}"))
    wide = wide.with_columns(action.alias("action"), votes.alias("votes"))
    keep = ["symbol", "timestamp", *(["regime"] if "regime" in wide.columns else []), *CONSENSUS_COLUMNS]
    return wide.select(keep)


def decision_log(frame: pl.DataFrame) -> pl.DataFrame:
    """The ``decision_log`` rows of a ``consensus`` frame: ``DECISION_LOG_COLUMNS``."""
    missing = [c for c in DECISION_LOG_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"decision_log: frame lacks column(s) {missing} (run consensus first)")
    return frame.select(DECISION_LOG_COLUMNS)
