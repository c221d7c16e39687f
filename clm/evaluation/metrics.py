"""Prediction metrics, strategy simulation, baselines and Sharpe-ratio deflation.

Pure functions. Array inputs are numpy arrays, lists or polars Series; pairs where either side is
null/NaN are dropped before a metric (NaN-safe); inputs of different lengths raise ``ValueError``.
A metric with nothing to measure (no pairs, zero variance) returns NaN.

Prediction metrics
    ``rmse``, ``mae``, ``r2 = 1 - SS_res / SS_tot``; classification over labels in {-1, 0, 1} or
    {0, 1}: ``accuracy``, macro ``precision`` / ``recall`` / ``f1`` (unweighted mean over the union
    of the labels seen in either array; a class never predicted has precision 0; macro F1 is the
    mean of per-class F1s, as scikit-learn does); ``directional_accuracy`` = share of rows with
    ``sign(pred) == sign(actual)`` among rows whose actual is non-zero (a zero prediction counts as
    a miss); ``expected_calibration_error`` = ``sum_b (n_b / N) * |mean(outcome_b) - mean(prob_b)|``
    over ``n_bins`` equal-width probability bins; ``information_coefficient`` (Pearson) and
    ``rank_ic`` (Spearman = Pearson of average ranks), overall, or the mean over groups (e.g. one
    timestamp's cross-section of symbols) of the per-group correlations when ``groups`` is given.

Strategy simulation (``strategy_returns`` then ``strategy_metrics``; ``simulate_strategy`` = both)
    Rows are sorted by (``partition`` columns, symbol, timestamp). ``position[t]`` (null = 0) is held
    over the row's one-bar return ``r[t]`` (``return_col`` must be the return of holding from this
    row's decision to the next one, e.g. ``forward_return_1`` of ``clm.labels``; a multi-bar
    forward return would count overlapping bars again). Rows without a finite return are dropped
    first. Per symbol: ``turnover[t] = |position[t] - position[t-1]|`` (``position[-1] = 0``, so
    entering is charged; the final position is not liquidated),
    ``gross[t] = position[t] * (exp(r[t]) - 1)`` for log returns (``position[t] * r[t]`` for
    simple), ``net[t] = gross[t] - turnover[t] * cost_bps[t] * 1e-4`` where ``cost_bps`` is the
    one-way cost per unit of position change (``one_way_cost_bps`` of
    ``clm.evaluation.costs.trade_costs``; 0 when no cost column, null costs count as 0).
    Pooling: an equal-weight portfolio of the symbols present at each timestamp,
    ``R[t] = mean_symbols net[t]``; every portfolio metric is on ``R`` in timestamp order:

    * ``total_return = prod(1 + R) - 1``;
    * ``sharpe = mean(R) / std(R, ddof=1) * sqrt(periods_per_year)``;
    * ``sortino = mean(R) / sqrt(mean(min(R, 0)^2)) * sqrt(periods_per_year)`` (target 0; inf when
      there is no losing period and the mean is positive);
    * ``max_drawdown = max_t (1 - E[t] / max(1, max_{s<=t} E[s]))`` with ``E = cumprod(1 + R)``,
      a positive fraction;
    * a trade is a maximal run of one constant non-zero position of a symbol; its P&L is the sum of
      its rows' ``net`` (entry cost included; the exit cost is charged on the row that follows it).
      ``hit_rate`` = share of trades with P&L > 0; ``profit_factor`` = sum of winning trades' P&L /
      |sum of losing trades' P&L|; ``n_trades``;
    * ``turnover`` = mean of ``turnover`` over symbol-bars; ``exposure`` = mean ``|position|``;
    * ``capacity`` = median over trade entries of ``max_participation * quote_volume`` at the entry
      bar: the notional per trade the strategy could run at the participation limit.

Baselines on the same rows (``baseline_positions``): ``flat`` (0), ``buy_and_hold`` (+1),
``momentum_sign`` (sign of ``momentum_col``, else the sign of the symbol's last realised bar return
``close[t] / close[t-1] - 1``, known at the decision bar; 0 on a symbol's first row). A previous
model's positions are just another positions column.

Sharpe-ratio deflation (Bailey & López de Prado 2012, 2014), per-period (not annualised) Sharpe
``SR``, ``T`` observations, skewness ``g3``, kurtosis ``g4`` (Pearson, 3 for a normal):

* ``PSR(SR*) = Phi((SR - SR*) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2))``;
* ``SR0 = sigma_SR * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))``, the expected
  maximum Sharpe of ``N`` independent trials with no skill (``gamma`` = Euler-Mascheroni,
  ``sigma_SR`` = the standard deviation of the trials' Sharpe ratios; ``SR0 = 0`` for ``N = 1``);
* ``DSR = PSR(SR0)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from scipy import stats

from clm.checks import ENGINE, is_finite_number, is_int

EULER_GAMMA = 0.5772156649015329
BASELINES = ("flat", "buy_and_hold", "momentum_sign")
BPS = 1e-4
NAN = float("nan")
STRATEGY_METRICS = (
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "hit_rate",
    "profit_factor",
    "turnover",
    "n_trades",
    "capacity",
    "exposure",
    "n_periods",
    "psr",
)

ArrayLike = np.ndarray | Sequence[float] | pl.Series


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _as_float(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, pl.Series):
        arr = values.cast(pl.Float64, strict=False).to_numpy()
    else:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _paired(a: ArrayLike, b: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Both as float arrays, same length enforced, pairs with a NaN/null on either side dropped."""
    x, y = _as_float(a, names[0]), _as_float(b, names[1])
    if len(x) != len(y):
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {len(x)} != {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return NAN
    return float(np.corrcoef(x, y)[0, 1])


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------------


def rmse(pred: ArrayLike, actual: ArrayLike) -> float:
    p, a = _paired(pred, actual, ("pred", "actual"))
    return float(np.sqrt(np.mean((p - a) ** 2))) if len(p) else NAN


def mae(pred: ArrayLike, actual: ArrayLike) -> float:
    p, a = _paired(pred, actual, ("pred", "actual"))
    return float(np.mean(np.abs(p - a))) if len(p) else NAN


def r2(pred: ArrayLike, actual: ArrayLike) -> float:
    p, a = _paired(pred, actual, ("pred", "actual"))
    if len(p) < 2:
        return NAN
    ss_tot = float(np.sum((a - a.mean()) ** 2))
    return NAN if ss_tot == 0 else 1.0 - float(np.sum((a - p) ** 2)) / ss_tot


# ------------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------------


def _labels(pred: ArrayLike, actual: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, a = _paired(pred, actual, ("pred", "actual"))
    for arr, name in ((p, "pred"), (a, "actual")):
        bad = ~np.isin(arr, (-1.0, 0.0, 1.0))
        if bad.any():
            seen = np.unique(arr[bad])[:5]
            raise ValueError(f"{name} labels must be in {{-1, 0, 1}} or {{0, 1}}, got {seen}")
    return p, a, np.union1d(p, a)


def accuracy(pred: ArrayLike, actual: ArrayLike) -> float:
    p, a, _ = _labels(pred, actual)
    return float(np.mean(p == a)) if len(p) else NAN


def _per_class(pred: ArrayLike, actual: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, a, classes = _labels(pred, actual)
    prec, rec = [], []
    for c in classes:
        tp = np.sum((p == c) & (a == c))
        n_pred, n_true = np.sum(p == c), np.sum(a == c)
        prec.append(tp / n_pred if n_pred else 0.0)
        rec.append(tp / n_true if n_true else 0.0)
    return np.asarray(prec, dtype=float), np.asarray(rec, dtype=float)


def precision(pred: ArrayLike, actual: ArrayLike) -> float:
    prec, _ = _per_class(pred, actual)
    return float(prec.mean()) if len(prec) else NAN


def recall(pred: ArrayLike, actual: ArrayLike) -> float:
    _, rec = _per_class(pred, actual)
    return float(rec.mean()) if len(rec) else NAN


def f1(pred: ArrayLike, actual: ArrayLike) -> float:
    prec, rec = _per_class(pred, actual)
    if not len(prec):
        return NAN
    denom = prec + rec
    per = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(per.mean())


def directional_accuracy(pred: ArrayLike, actual: ArrayLike) -> float:
    p, a = _paired(pred, actual, ("pred", "actual"))
    keep = a != 0
    return float(np.mean(np.sign(p[keep]) == np.sign(a[keep]))) if keep.any() else NAN


def expected_calibration_error(prob: ArrayLike, outcome: ArrayLike, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-width bins of ``[0, 1]`` (the last bin includes 1)."""
    if not is_int(n_bins) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    p, y = _paired(prob, outcome, ("prob", "outcome"))
    if ((p < 0) | (p > 1)).any():
        raise ValueError("prob must lie in [0, 1]")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("outcome must be 0/1 (or boolean)")
    if not len(p):
        return NAN
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    hits = np.bincount(bins, weights=y, minlength=n_bins)
    gap = np.abs(hits - np.bincount(bins, weights=p, minlength=n_bins))
    return float(gap.sum() / len(p))  # sum_b n_b/N * |mean y_b - mean p_b| = sum_b |sum y_b - sum p_b| / N


def brier_score(prob: ArrayLike, outcome: ArrayLike) -> float:
    p, y = _paired(prob, outcome, ("prob", "outcome"))
    return float(np.mean((p - y) ** 2)) if len(p) else NAN


def _grouped_corr(x: np.ndarray, y: np.ndarray, groups: ArrayLike, rank: bool, n: int) -> float:
    g = groups.to_numpy() if isinstance(groups, pl.Series) else np.asarray(groups)
    if len(g) != n:
        raise ValueError(f"groups and pred differ in length: {len(g)} != {n}")
    df = pl.DataFrame({"x": x, "y": y, "g": pl.Series(g)}).filter(
        pl.col("x").is_finite() & pl.col("y").is_finite()
    )
    if rank:
        df = df.with_columns(pl.col("x", "y").rank("average").over("g").cast(pl.Float64))
    per = (
        df.group_by("g")
        .agg(
            pl.len().alias("n"),
            pl.col("x").std().alias("sx"),
            pl.col("y").std().alias("sy"),
            pl.corr("x", "y").alias("c"),
        )
        .filter((pl.col("n") >= 2) & (pl.col("sx") > 0) & (pl.col("sy") > 0))
    )
    return float(per["c"].mean()) if per.height else NAN


def information_coefficient(pred: ArrayLike, actual: ArrayLike, groups: ArrayLike | None = None) -> float:
    """Pearson correlation; with ``groups``, the mean of the per-group correlations."""
    if groups is not None:
        x, y = _as_float(pred, "pred"), _as_float(actual, "actual")
        if len(x) != len(y):
            raise ValueError(f"pred and actual differ in length: {len(x)} != {len(y)}")
        return _grouped_corr(x, y, groups, rank=False, n=len(x))
    return _pearson(*_paired(pred, actual, ("pred", "actual")))


def rank_ic(pred: ArrayLike, actual: ArrayLike, groups: ArrayLike | None = None) -> float:
    """Spearman correlation; with ``groups``, the mean of the per-group correlations."""
    if groups is not None:
        x, y = _as_float(pred, "pred"), _as_float(actual, "actual")
        if len(x) != len(y):
            raise ValueError(f"pred and actual differ in length: {len(x)} != {len(y)}")
        return _grouped_corr(x, y, groups, rank=True, n=len(x))
    p, a = _paired(pred, actual, ("pred", "actual"))
    return _pearson(stats.rankdata(p), stats.rankdata(a)) if len(p) >= 2 else NAN


# ------------------------------------------------------------------------------------------------
# Sharpe deflation
# ------------------------------------------------------------------------------------------------


def probabilistic_sharpe_ratio(
    sharpe: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0, benchmark: float = 0.0
) -> float:
    """P(true Sharpe > ``benchmark``) given a per-period Sharpe over ``n_obs`` observations."""
    for name, value in (("sharpe", sharpe), ("skew", skew), ("kurtosis", kurtosis), ("benchmark", benchmark)):
        if not is_finite_number(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not is_int(n_obs) or n_obs < 2:
        raise ValueError(f"n_obs must be an int >= 2, got {n_obs!r}")
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if var <= 0:
        raise ValueError(f"1 - skew*SR + (kurtosis-1)/4*SR^2 = {var:.4g} <= 0: inconsistent skew/kurtosis")
    return float(stats.norm.cdf((sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, sharpe_std_across_trials: float) -> float:
    """Expected maximum per-period Sharpe of ``n_trials`` skill-less trials (0 for one trial)."""
    if not is_int(n_trials) or n_trials < 1:
        raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
    if not is_finite_number(sharpe_std_across_trials) or sharpe_std_across_trials < 0:
        raise ValueError(
            f"sharpe_std_across_trials must be a finite number >= 0, got {sharpe_std_across_trials!r}"
        )
    if n_trials == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * stats.norm.ppf(
        1 - 1 / (n_trials * math.e)
    )
    return float(sharpe_std_across_trials * z)


def deflated_sharpe_ratio(
    sharpe: float,
    n_trials: int,
    n_obs: int,
    skew: float,
    kurtosis: float,
    sharpe_std_across_trials: float,
) -> float:
    """``PSR(SR0)`` with ``SR0 = expected_max_sharpe(n_trials, sharpe_std_across_trials)``.

    ``sharpe`` and ``sharpe_std_across_trials`` are per period (not annualised), same frequency
    as ``n_obs``; ``kurtosis`` is Pearson's (3 for a normal).
    """
    benchmark = expected_max_sharpe(n_trials, sharpe_std_across_trials)
    return probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, benchmark)


def sharpe_moments(returns: ArrayLike) -> dict:
    """Per-period Sharpe (ddof=1), skewness, Pearson kurtosis and n of a return series."""
    r = _as_float(returns, "returns")
    r = r[np.isfinite(r)]
    n = len(r)
    sd = float(np.std(r, ddof=1)) if n >= 2 else NAN
    if n < 3 or not sd > 0:
        return {"sharpe": NAN, "skew": NAN, "kurtosis": NAN, "n": n}
    return {
        "sharpe": float(np.mean(r) / sd),
        "skew": float(stats.skew(r)),
        "kurtosis": float(stats.kurtosis(r, fisher=False)),
        "n": n,
    }


# ------------------------------------------------------------------------------------------------
# strategy simulation
# ------------------------------------------------------------------------------------------------


def _frame(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    if isinstance(frame, pl.LazyFrame):
        return frame.collect(engine=ENGINE)
    if not isinstance(frame, pl.DataFrame):
        raise ValueError(f"frame must be a polars DataFrame or LazyFrame, got {type(frame).__name__}")
    return frame


def strategy_returns(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    position_col: str,
    return_col: str,
    cost_bps_col: str | None = None,
    symbol_col: str = "symbol",
    timestamp_col: str = "timestamp",
    partition_cols: Sequence[str] = (),
    keep: Sequence[str] = (),
    log_returns: bool = True,
) -> pl.DataFrame:
    """Per-row simulation (module docstring): ``symbol, timestamp``, the ``partition_cols`` and
    ``keep`` columns, then ``sim_position, sim_turnover, sim_gross, sim_cost, sim_net, sim_trade``
    (trade id, null when flat) and ``sim_entry`` (first row of a trade)."""
    df = _frame(frame)
    needed = [position_col, return_col, timestamp_col, *partition_cols, *keep]
    if cost_bps_col is not None:
        needed.append(cost_bps_col)
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ValueError(f"strategy simulation: frame lacks column(s) {missing}")
    sym = pl.col(symbol_col).cast(pl.String) if symbol_col in df.columns else pl.lit("_all", pl.String)
    seq = [*partition_cols, "symbol"]
    pos = pl.col(position_col).cast(pl.Float64).fill_nan(None).fill_null(0.0)
    r = pl.col(return_col).cast(pl.Float64)
    cost = pl.lit(0.0)
    if cost_bps_col:
        cost = pl.col(cost_bps_col).cast(pl.Float64).fill_nan(None).fill_null(0.0)
    bar_return = (pl.col("__r").exp() - 1) if log_returns else pl.col("__r")
    extra = [c for c in dict.fromkeys([*partition_cols, *keep]) if c not in ("symbol", "timestamp")]
    out = (
        df.select(
            sym.alias("symbol"),
            pl.col(timestamp_col).alias("timestamp"),
            *[pl.col(c) for c in extra],
            pos.alias("sim_position"),
            r.alias("__r"),
            cost.alias("__c"),
        )
        .filter(pl.col("__r").is_finite())
        .sort(*seq, "timestamp")
        .with_columns(pl.col("sim_position").shift(1).over(seq).fill_null(0.0).alias("__prev"))
        .with_columns(
            (pl.col("sim_position") - pl.col("__prev")).abs().alias("sim_turnover"),
            (pl.col("sim_position") * bar_return).alias("sim_gross"),
            (pl.col("sim_position") != pl.col("__prev")).alias("__start"),
        )
        .with_columns(
            (pl.col("sim_turnover") * pl.col("__c") * BPS).alias("sim_cost"),
            (pl.col("__start") & (pl.col("sim_position") != 0)).alias("sim_entry"),
            # a new run begins at each position change and at each new symbol/partition sequence
            (pl.col("__start") | (pl.int_range(pl.len()).over(seq) == 0)).cum_sum().alias("__run"),
        )
        .with_columns(
            (pl.col("sim_gross") - pl.col("sim_cost")).alias("sim_net"),
            pl.when(pl.col("sim_position") != 0).then(pl.col("__run")).otherwise(None).alias("sim_trade"),
        )
    )
    return out.select(
        "symbol",
        "timestamp",
        *extra,
        "sim_position",
        "sim_turnover",
        "sim_gross",
        "sim_cost",
        "sim_net",
        "sim_trade",
        "sim_entry",
    )


def _max_drawdown(r: np.ndarray) -> float:
    if not len(r):
        return NAN
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    return float(np.max(1.0 - equity / peak))


def strategy_metrics(
    sim: pl.DataFrame,
    *,
    periods_per_year: float,
    quote_volume_col: str | None = "quote_volume",
    max_participation: float = 0.05,
) -> dict:
    """Portfolio metrics (module docstring) of ``strategy_returns`` rows; keys ``STRATEGY_METRICS``."""
    if not is_finite_number(periods_per_year) or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a finite number > 0, got {periods_per_year!r}")
    if not is_finite_number(max_participation) or not 0 < max_participation <= 1:
        raise ValueError(f"max_participation must be a number in (0, 1], got {max_participation!r}")
    portfolio = sim.group_by("timestamp").agg(pl.col("sim_net").mean()).sort("timestamp")
    r = portfolio["sim_net"].to_numpy()
    n = len(r)
    ann = math.sqrt(periods_per_year)
    mean = float(np.mean(r)) if n else NAN
    sd = float(np.std(r, ddof=1)) if n >= 2 else NAN
    sharpe = mean / sd * ann if n >= 2 and sd > 0 else NAN
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))) if n else NAN
    if n and downside > 0:
        sortino = mean / downside * ann
    else:
        sortino = math.inf if n and mean > 0 else NAN
    trades = sim.filter(pl.col("sim_trade").is_not_null()).group_by("sim_trade").agg(pl.col("sim_net").sum())
    pnl = trades["sim_net"].to_numpy()
    wins, losses = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
    if losses > 0:
        profit_factor = wins / losses
    else:
        profit_factor = math.inf if wins > 0 else NAN
    capacity = NAN
    if quote_volume_col and quote_volume_col in sim.columns:
        entries = sim.filter(pl.col("sim_entry"))[quote_volume_col].cast(pl.Float64).drop_nulls().drop_nans()
        if len(entries):
            capacity = float(entries.median()) * max_participation
    moments = sharpe_moments(r)
    psr = NAN
    if math.isfinite(moments["sharpe"]):
        try:
            psr = probabilistic_sharpe_ratio(moments["sharpe"], n, moments["skew"], moments["kurtosis"])
        except ValueError:
            psr = NAN
    return {
        "total_return": float(np.prod(1.0 + r) - 1.0) if n else NAN,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": _max_drawdown(r),
        "hit_rate": float(np.mean(pnl > 0)) if len(pnl) else NAN,
        "profit_factor": profit_factor,
        "turnover": float(sim["sim_turnover"].mean()) if sim.height else NAN,
        "n_trades": int(len(pnl)),
        "capacity": capacity,
        "exposure": float(sim["sim_position"].abs().mean()) if sim.height else NAN,
        "n_periods": n,
        "psr": psr,
    }


def simulate_strategy(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    position_col: str,
    return_col: str,
    cost_bps_col: str | None = None,
    periods_per_year: float,
    quote_volume_col: str | None = "quote_volume",
    max_participation: float = 0.05,
    symbol_col: str = "symbol",
    timestamp_col: str = "timestamp",
    log_returns: bool = True,
) -> dict:
    """Simulate per symbol, pool as an equal-weight portfolio per timestamp, return the metrics."""
    df = _frame(frame)
    keep = [quote_volume_col] if quote_volume_col and quote_volume_col in df.columns else []
    sim = strategy_returns(
        df,
        position_col=position_col,
        return_col=return_col,
        cost_bps_col=cost_bps_col,
        symbol_col=symbol_col,
        timestamp_col=timestamp_col,
        keep=keep,
        log_returns=log_returns,
    )
    return strategy_metrics(
        sim,
        periods_per_year=periods_per_year,
        quote_volume_col=quote_volume_col if keep else None,
        max_participation=max_participation,
    )


def baseline_positions(
    frame: pl.DataFrame | pl.LazyFrame,
    kind: str,
    *,
    momentum_col: str | None = None,
    price_col: str = "close",
    symbol_col: str = "symbol",
    timestamp_col: str = "timestamp",
) -> pl.Series:
    """Baseline positions aligned with ``frame``'s rows, named ``baseline_<kind>`` (Float64)."""
    df = _frame(frame)
    name = f"baseline_{kind}"
    if kind == "flat":
        return pl.Series(name, np.zeros(df.height))
    if kind == "buy_and_hold":
        return pl.Series(name, np.ones(df.height))
    if kind != "momentum_sign":
        raise ValueError(f"kind must be one of {BASELINES}, got {kind!r}")
    if momentum_col is not None:
        if momentum_col not in df.columns:
            raise ValueError(f"baseline_positions: frame lacks momentum column {momentum_col!r}")
        expr = pl.col(momentum_col).cast(pl.Float64).fill_nan(None).sign()
    else:
        missing = [c for c in (price_col, timestamp_col) if c not in df.columns]
        if missing:
            raise ValueError(f"baseline_positions: momentum_sign needs a momentum column or {missing}")
        price = pl.col(price_col).cast(pl.Float64)
        part = pl.col(symbol_col) if symbol_col in df.columns else pl.lit(0)
        expr = (price / price.shift(1) - 1).over(part, order_by=timestamp_col).fill_nan(None).sign()
    return df.select(expr.fill_null(0.0).cast(pl.Float64).alias(name)).to_series()


# ------------------------------------------------------------------------------------------------
# the evaluation table
# ------------------------------------------------------------------------------------------------


def evaluate_predictions(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    group_by: Sequence[str] = ("fold", "symbol", "regime"),
    prediction_col: str = "prediction",
    actual_col: str = "target",
    direction_col: str = "direction",
    pred_direction_col: str | None = "pred_direction",
    probability_col: str = "probability",
    outcome_col: str | None = None,
    position_cols: Sequence[str] | Mapping[str, str] = ("position",),
    baselines: Sequence[str] = BASELINES,
    return_col: str | None = None,
    cost_bps_col: str | None = None,
    quote_volume_col: str = "quote_volume",
    periods_per_year: float | None = None,
    max_participation: float = 0.05,
    sequence_cols: Sequence[str] = ("fold",),
    momentum_col: str | None = None,
    price_col: str = "close",
    symbol_col: str = "symbol",
    timestamp_col: str = "timestamp",
    n_bins: int = 10,
    n_trials: int | None = None,
    sharpe_std_across_trials: float | None = None,
) -> pl.DataFrame:
    """One row per group (the ``group_by`` columns present in ``frame``) with every metric whose
    columns exist:

    * ``prediction_col`` + ``actual_col``: ``rmse, mae, r2, directional_accuracy, ic, rank_ic``
      and, with a timestamp column, ``ic_cs`` / ``rank_ic_cs`` (mean per-timestamp cross-section);
    * ``direction_col`` + (``pred_direction_col``, else ``sign(prediction)``): ``accuracy,
      precision, recall, f1``;
    * ``probability_col`` + outcome (``outcome_col``, else ``direction == 1``, else
      ``actual > 0``): ``ece, brier``;
    * each strategy (the ``position_cols`` present - a mapping names them - and the
      ``baselines``), simulated on ``return_col`` (default ``actual_col``; a one-bar return) with
      ``cost_bps_col``: ``<name>_<metric>`` for each of ``STRATEGY_METRICS`` (plus
      ``<name>_dsr`` when ``n_trials`` and ``sharpe_std_across_trials`` are given). Positions are
      simulated over each symbol's whole sequence (restarting per ``sequence_cols``, e.g. each
      fold) before grouping, so a regime group's turnover charges come from the real sequence.
      Needs ``periods_per_year``.
    """
    df = _frame(frame)
    cols = set(df.columns)
    keys = [g for g in group_by if g in cols]
    ret_col = return_col or actual_col
    has_pred = prediction_col in cols and actual_col in cols
    ts_present = timestamp_col in cols

    # strategies: name -> positions column (baselines added to a working copy)
    strategies: dict[str, str] = {}
    items = position_cols.items() if isinstance(position_cols, Mapping) else ((c, c) for c in position_cols)
    for name, col in items:
        if col in cols:
            strategies[name] = col
    work = df
    for kind in baselines:
        try:
            series = baseline_positions(
                df, kind, momentum_col=momentum_col, price_col=price_col, symbol_col=symbol_col,
                timestamp_col=timestamp_col,
            )
        except ValueError:
            if kind not in BASELINES:
                raise
            continue  # e.g. momentum_sign without prices: skipped
        work = work.with_columns(series.alias(f"__{series.name}"))
        strategies[series.name] = f"__{series.name}"
    simulate = bool(strategies) and ret_col in cols and ts_present
    if simulate and periods_per_year is None:
        raise ValueError("evaluate_predictions: periods_per_year is required to simulate strategies")
    if n_trials is not None and sharpe_std_across_trials is None:
        raise ValueError("evaluate_predictions: n_trials needs sharpe_std_across_trials")

    sims: dict[str, dict] = {}
    if simulate:
        seq_cols = [c for c in sequence_cols if c in cols and c != symbol_col]
        qv = [quote_volume_col] if quote_volume_col in cols else []
        keep = [k for k in keys if k not in (symbol_col, *seq_cols)] + qv
        for name, col in strategies.items():
            sim = strategy_returns(
                work, position_col=col, return_col=ret_col, cost_bps_col=cost_bps_col,
                symbol_col=symbol_col, timestamp_col=timestamp_col, partition_cols=seq_cols, keep=keep,
            )
            sim_keys = ["symbol" if k == symbol_col else k for k in keys]
            sims[name] = sim.partition_by(sim_keys, as_dict=True) if sim_keys else {(): sim}

    groups = df.partition_by(keys, as_dict=True, maintain_order=True) if keys else {(): df}
    rows = []
    for key, g in groups.items():
        row: dict = dict(zip(keys, key, strict=True))
        row["n_rows"] = g.height
        if has_pred:
            p, a = g[prediction_col], g[actual_col]
            row.update(
                rmse=rmse(p, a), mae=mae(p, a), r2=r2(p, a), directional_accuracy=directional_accuracy(p, a),
                ic=information_coefficient(p, a), rank_ic=rank_ic(p, a),
            )
            if ts_present:
                row["ic_cs"] = information_coefficient(p, a, groups=g[timestamp_col])
                row["rank_ic_cs"] = rank_ic(p, a, groups=g[timestamp_col])
        if direction_col in cols:
            if pred_direction_col and pred_direction_col in cols:
                pd_ = g[pred_direction_col]
            elif prediction_col in cols:
                pd_ = g[prediction_col].cast(pl.Float64).sign()
            else:
                pd_ = None
            if pd_ is not None:
                d = g[direction_col]
                row["accuracy"] = accuracy(pd_, d)
                row["precision"] = precision(pd_, d)
                row["recall"] = recall(pd_, d)
                row["f1"] = f1(pd_, d)
        if probability_col in cols:
            if outcome_col and outcome_col in cols:
                y = g[outcome_col].cast(pl.Float64)
            elif direction_col in cols:
                y = g.select((pl.col(direction_col) == 1).cast(pl.Float64)).to_series()
            elif actual_col in cols:
                y = g.select((pl.col(actual_col).fill_nan(None) > 0).cast(pl.Float64)).to_series()
            else:
                y = None
            if y is not None:
                row["ece"] = expected_calibration_error(g[probability_col], y, n_bins=n_bins)
                row["brier"] = brier_score(g[probability_col], y)
        for name, parts in sims.items():
            part = parts.get(key)
            if part is None:
                continue
            m = strategy_metrics(
                part, periods_per_year=periods_per_year, max_participation=max_participation,
                quote_volume_col=quote_volume_col if quote_volume_col in cols else None,
            )
            for metric, value in m.items():
                row[f"{name}_{metric}"] = value
            if n_trials is not None:
                mom = sharpe_moments(part.group_by("timestamp").agg(pl.col("sim_net").mean())["sim_net"])
                dsr = NAN
                if math.isfinite(mom["sharpe"]):
                    try:
                        dsr = deflated_sharpe_ratio(
                            mom["sharpe"], n_trials, mom["n"], mom["skew"], mom["kurtosis"],
                            sharpe_std_across_trials,
                        )
                    except ValueError:
                        dsr = NAN
                row[f"{name}_dsr"] = dsr
        rows.append(row)
    if not rows:
        return pl.DataFrame(schema={**{k: df.schema[k] for k in keys}, "n_rows": pl.Int64})
    return pl.DataFrame(rows, infer_schema_length=None)
