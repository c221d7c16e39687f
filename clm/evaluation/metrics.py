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
_ALL = "__all"  # the one group when a table has no group keys
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


def max_drawdown(returns: ArrayLike) -> float:
    """``max_t (1 - E[t] / max(1, max_{s<=t} E[s]))`` with ``E = cumprod(1 + r)`` (NaN when empty)."""
    r = _as_float(returns, "returns")
    if not len(r):
        return NAN
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    return float(np.max(1.0 - equity / peak))


def _check_strategy_args(periods_per_year: float, max_participation: float) -> None:
    if not is_finite_number(periods_per_year) or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a finite number > 0, got {periods_per_year!r}")
    if not is_finite_number(max_participation) or not 0 < max_participation <= 1:
        raise ValueError(f"max_participation must be a number in (0, 1], got {max_participation!r}")


def _normal_cdf(z: pl.Expr) -> pl.Expr:
    """Phi(z): scipy's normal CDF over the whole column at once (NaN stays NaN)."""
    return z.map_batches(lambda s: pl.Series(s.name, stats.norm.cdf(s.to_numpy()), dtype=pl.Float64),
                         return_dtype=pl.Float64)


def strategy_table(
    sim: pl.DataFrame,
    keys: Sequence[str] = (),
    *,
    periods_per_year: float,
    quote_volume_col: str | None = "quote_volume",
    max_participation: float = 0.05,
    dsr_benchmark: float | None = None,
    one_row_per_timestamp: bool = False,
) -> pl.DataFrame:
    """``STRATEGY_METRICS`` (module docstring) of ``strategy_returns`` rows, one row per ``keys`` group,
    in one pass of polars group-bys (no Python loop over groups). With ``dsr_benchmark`` (the expected
    maximum per-period Sharpe ``SR0``) a ``dsr`` column, ``PSR(SR0)``, too. Empty ``sim``: no rows.
    ``one_row_per_timestamp``: the caller knows each group is one symbol's sequence (``keys`` hold
    the symbol and the partition columns), so the portfolio is the rows themselves (no pooling)."""
    _check_strategy_args(periods_per_year, max_participation)
    keys = list(keys)
    work = sim if keys else sim.with_columns(pl.lit(0, pl.Int8).alias(_ALL))
    by = keys or [_ALL]
    r = pl.col("r")
    equity = (1.0 + r).cum_prod().over(by, order_by="timestamp")
    if one_row_per_timestamp:
        pooled = work.select(*by, "timestamp", pl.col("sim_net").alias("r"))
    else:
        pooled = work.group_by([*by, "timestamp"]).agg(pl.col("sim_net").mean().alias("r"))
    portfolio = (
        pooled
        .with_columns(equity.alias("__equity"))
        .with_columns(
            (1.0 - pl.col("__equity") / pl.max_horizontal(
                pl.col("__equity").cum_max().over(by, order_by="timestamp"), pl.lit(1.0))).alias("__drawdown")
        )
    )
    dev = r - r.mean()
    periods = portfolio.group_by(by).agg(
        pl.len().cast(pl.Int64).alias("n_periods"),
        r.mean().alias("__mean"),
        r.std(ddof=1).alias("__sd"),
        (r.clip(upper_bound=0.0) ** 2).mean().sqrt().alias("__down"),
        ((1.0 + r).product() - 1.0).alias("total_return"),
        pl.col("__drawdown").max().alias("max_drawdown"),
        (dev**2).mean().alias("__m2"),
        (dev**3).mean().alias("__m3"),
        (dev**4).mean().alias("__m4"),
    )
    pnl = pl.col("__pnl")
    trades = (
        work.filter(pl.col("sim_trade").is_not_null())
        .group_by([*by, "sim_trade"]).agg(pl.col("sim_net").sum().alias("__pnl"))
        .group_by(by).agg(
            pl.len().cast(pl.Int64).alias("n_trades"),
            (pnl > 0).mean().alias("hit_rate"),
            pnl.filter(pnl > 0).sum().alias("__wins"),
            (-pnl.filter(pnl < 0).sum()).alias("__losses"),
        )
    )
    capacity = pl.lit(NAN)
    if quote_volume_col and quote_volume_col in work.columns:
        qv = pl.col(quote_volume_col).cast(pl.Float64)
        capacity = qv.filter(pl.col("sim_entry") & qv.is_finite().fill_null(False)).median() * max_participation
    rows = work.group_by(by).agg(
        pl.col("sim_turnover").mean().alias("turnover"),
        pl.col("sim_position").abs().mean().alias("exposure"),
        capacity.cast(pl.Float64).alias("capacity"),
    )
    ann = math.sqrt(periods_per_year)
    mean, sd, down = pl.col("__mean"), pl.col("__sd"), pl.col("__down")
    n = pl.col("n_periods")
    sr = pl.when((n >= 3) & (sd > 0)).then(mean / sd).otherwise(NAN)  # per period, as the deflation wants
    skew = pl.col("__m3") / pl.col("__m2") ** 1.5
    kurt = pl.col("__m4") / pl.col("__m2") ** 2
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2

    def psr(benchmark: float) -> pl.Expr:
        z = (sr - benchmark) * (n - 1).cast(pl.Float64).sqrt() / var.sqrt()
        return pl.when(sr.is_finite() & (var > 0)).then(_normal_cdf(z)).otherwise(NAN)

    wins, losses = pl.col("__wins").fill_null(0.0), pl.col("__losses").fill_null(0.0)
    table = (
        periods.join(trades, on=by, how="left", nulls_equal=True)
        .join(rows, on=by, how="left", nulls_equal=True)
        .with_columns(
            pl.when((n >= 2) & (sd > 0)).then(mean / sd * ann).otherwise(NAN).alias("sharpe"),
            pl.when(down > 0).then(mean / down * ann)
            .when(mean > 0).then(math.inf).otherwise(NAN).alias("sortino"),
            pl.when(losses > 0).then(wins / losses).when(wins > 0).then(math.inf).otherwise(NAN)
            .alias("profit_factor"),
            pl.col("n_trades").fill_null(0),
            pl.col("hit_rate").fill_null(NAN),
            psr(0.0).alias("psr"),
            *([psr(dsr_benchmark).alias("dsr")] if dsr_benchmark is not None else []),
        )
    )
    metrics = [*STRATEGY_METRICS, *(["dsr"] if dsr_benchmark is not None else [])]
    return table.select(*keys, *[pl.col(m).fill_null(NAN) if m not in ("n_trades", "n_periods") else pl.col(m)
                                 for m in metrics])


def strategy_metrics(
    sim: pl.DataFrame,
    *,
    periods_per_year: float,
    quote_volume_col: str | None = "quote_volume",
    max_participation: float = 0.05,
) -> dict:
    """Portfolio metrics (module docstring) of ``strategy_returns`` rows; keys ``STRATEGY_METRICS``."""
    table = strategy_table(sim, periods_per_year=periods_per_year, quote_volume_col=quote_volume_col,
                           max_participation=max_participation)
    if not table.height:
        return {m: (0 if m in ("n_trades", "n_periods") else NAN) for m in STRATEGY_METRICS}
    return table.row(0, named=True)


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
    frame: pl.DataFrame | pl.LazyFrame, *, group_by: Sequence[str] = ("fold", "symbol", "regime"), **options
) -> pl.DataFrame:
    """The table of ``evaluate_groupings`` for one grouping (its options, same defaults)."""
    return evaluate_groupings(frame, {"table": group_by}, **options)["table"]


def evaluate_groupings(
    frame: pl.DataFrame | pl.LazyFrame,
    groupings: Mapping[str, Sequence[str]],
    *,
    prediction_col: str = "prediction",
    actual_col: str = "target",
    direction_col: str = "direction",
    pred_direction_col: str | None = "pred_direction",
    probability_col: str = "probability",
    outcome_col: str | None = None,
    position_cols: Sequence[str] | Mapping[str, str] = ("position",),
    strategy_rows: Mapping[str, str] | None = None,
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
    """Per named grouping, one row per group (the grouping's columns present in ``frame``) with every
    metric whose columns exist; each strategy is simulated once for all the groupings:

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
      Needs ``periods_per_year``;
    * ``strategy_rows`` (strategy name -> boolean column) simulates that strategy on the rows where
      the column is true only (e.g. a previous model, scored only where it is out of sample), and adds
      ``<name>_rows``, the count of those rows per group; its metrics are null in a group without any.
    """
    df = _frame(frame)
    cols = set(df.columns)
    ret_col = return_col or actual_col
    has_pred = prediction_col in cols and actual_col in cols
    ts_present = timestamp_col in cols

    # strategies: name -> positions column (baselines added to a working copy)
    strategies: dict[str, str] = {}
    items = position_cols.items() if isinstance(position_cols, Mapping) else ((c, c) for c in position_cols)
    for name, col in items:
        if col in cols:
            strategies[name] = col
    restricted = {name: flag for name, flag in (strategy_rows or {}).items() if name in strategies}
    lacking = sorted(flag for flag in restricted.values() if flag not in cols)
    if lacking:
        raise ValueError(f"evaluate_predictions: frame lacks strategy_rows column(s) {lacking}")
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

    sims: dict[str, pl.DataFrame] = {}
    benchmark = None
    seq_cols: list[str] = []
    if simulate:
        seq_cols = [c for c in sequence_cols if c in cols and c != symbol_col]
        qv = [quote_volume_col] if quote_volume_col in cols else []
        grouped = [g for keys in groupings.values() for g in keys if g in cols]
        keep = [k for k in dict.fromkeys(grouped) if k not in (symbol_col, *seq_cols)] + qv
        if n_trials is not None:
            try:
                benchmark = expected_max_sharpe(n_trials, sharpe_std_across_trials)
            except ValueError:
                benchmark = NAN
        for name, col in strategies.items():
            rows = work.filter(pl.col(restricted[name]).fill_null(False)) if name in restricted else work
            sims[name] = strategy_returns(
                rows, position_col=col, return_col=ret_col, cost_bps_col=cost_bps_col,
                symbol_col=symbol_col, timestamp_col=timestamp_col, partition_cols=seq_cols, keep=keep,
            )

    def table_for(keys: list[str]) -> pl.DataFrame:
        by = keys or [_ALL]
        base = df if keys else df.with_columns(pl.lit(0, pl.Int8).alias(_ALL))
        aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("n_rows")]
        aggs += [pl.col(flag).fill_null(False).sum().cast(pl.Int64).alias(f"{name}_rows")
                 for name, flag in restricted.items()]
        extra: list[pl.DataFrame] = []  # tables keyed by ``by``, joined on after the base aggregation
        if has_pred:
            base = base.with_columns(pl.col(prediction_col).cast(pl.Float64).alias("__p"),
                                     pl.col(actual_col).cast(pl.Float64).alias("__a"))
            aggs += _regression_aggs("__p", "__a")
            if ts_present:
                extra.append(_cross_section_ic(base, by, timestamp_col, one_symbol=symbol_col in keys))
        if direction_col in cols:
            pred_dir = None
            if pred_direction_col and pred_direction_col in cols:
                pred_dir = pl.col(pred_direction_col).cast(pl.Float64)
            elif prediction_col in cols:
                pred_dir = pl.col(prediction_col).cast(pl.Float64).sign()
            if pred_dir is not None:
                base = base.with_columns(pred_dir.alias("__pd"), pl.col(direction_col).cast(pl.Float64).alias("__d"))
                _check_labels(base, "__pd", "__d")
                aggs += _classification_aggs("__pd", "__d")
        if probability_col in cols:
            outcome = None
            if outcome_col and outcome_col in cols:
                outcome = pl.col(outcome_col).cast(pl.Float64)
            elif direction_col in cols:
                outcome = (pl.col(direction_col) == 1).cast(pl.Float64)
            elif actual_col in cols:
                outcome = (pl.col(actual_col).fill_nan(None) > 0).cast(pl.Float64)
            if outcome is not None:
                if not is_int(n_bins) or n_bins < 1:
                    raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
                base = base.with_columns(pl.col(probability_col).cast(pl.Float64).alias("__prob"),
                                         outcome.alias("__y"))
                extra.append(_calibration_table(base, by, n_bins))
        table = base.group_by(by, maintain_order=True).agg(aggs)
        for part in extra:
            table = table.join(part, on=by, how="left", nulls_equal=True, maintain_order="left")
        sim_keys = ["symbol" if k == symbol_col else k for k in keys]
        for name, sim in sims.items():
            part = strategy_table(
                sim, sim_keys, periods_per_year=periods_per_year, max_participation=max_participation,
                quote_volume_col=quote_volume_col if quote_volume_col in cols else None, dsr_benchmark=benchmark,
                one_row_per_timestamp={"symbol", *seq_cols} <= set(sim_keys),
            ).rename(dict(zip(sim_keys, keys, strict=True)), strict=False)
            if not keys:
                part = part.with_columns(pl.lit(0, pl.Int8).alias(_ALL))
            part = part.rename({c: f"{name}_{c}" for c in part.columns if c not in by})
            table = table.join(part, on=by, how="left", nulls_equal=True, maintain_order="left")
        return table.drop(_ALL, strict=False)

    return {name: table_for([g for g in keys if g in cols]) for name, keys in groupings.items()}


def _regression_aggs(p: str, a: str) -> list[pl.Expr]:
    """rmse, mae, r2, directional_accuracy, ic, rank_ic over the group's finite pairs (as the functions above)."""
    ok = (pl.col(p).is_finite() & pl.col(a).is_finite()).fill_null(False)
    pv, av = pl.col(p).filter(ok), pl.col(a).filter(ok)
    n = ok.sum()
    err = pv - av
    ss_tot = ((av - av.mean()) ** 2).sum()
    varies = (n >= 2) & (pv.std(ddof=0) > 0) & (av.std(ddof=0) > 0)
    moves = ok & (pl.col(a) != 0)
    return [
        (err**2).mean().sqrt().fill_null(NAN).alias("rmse"),
        err.abs().mean().fill_null(NAN).alias("mae"),
        pl.when((n >= 2) & (ss_tot != 0)).then(1.0 - (err**2).sum() / ss_tot).otherwise(NAN).alias("r2"),
        (pl.col(p).sign() == pl.col(a).sign()).filter(moves).mean().cast(pl.Float64).fill_null(NAN)
        .alias("directional_accuracy"),
        pl.when(varies).then(pl.corr(pv, av)).otherwise(NAN).alias("ic"),
        pl.when(varies).then(pl.corr(pv.rank("average"), av.rank("average"))).otherwise(NAN).alias("rank_ic"),
    ]


def _cross_section_ic(frame: pl.DataFrame, by: list[str], timestamp_col: str, *, one_symbol: bool) -> pl.DataFrame:
    """ic_cs / rank_ic_cs: the mean over timestamps of each cross-section's correlation. A group of one
    symbol has no cross-section (NaN, without the work)."""
    if one_symbol:
        return frame.select(by).unique().with_columns(pl.lit(NAN).alias("ic_cs"), pl.lit(NAN).alias("rank_ic_cs"))
    x, y = pl.col("__p"), pl.col("__a")
    per = (
        frame.filter((x.is_finite() & y.is_finite()).fill_null(False))
        .group_by([*by, timestamp_col])
        .agg(
            pl.len().alias("n"),
            x.std().alias("sx"),
            y.std().alias("sy"),
            pl.corr(x, y).alias("c"),
            pl.corr(x.rank("average"), y.rank("average")).alias("rc"),
        )
        .filter((pl.col("n") >= 2) & (pl.col("sx") > 0) & (pl.col("sy") > 0))
        .group_by(by)
        .agg(pl.col("c").mean().alias("ic_cs"), pl.col("rc").mean().alias("rank_ic_cs"))
    )
    return (frame.select(by).unique().join(per, on=by, how="left", nulls_equal=True)
            .with_columns(pl.col("ic_cs", "rank_ic_cs").fill_null(NAN)))


def _check_labels(frame: pl.DataFrame, p: str, a: str) -> None:
    ok = (pl.col(p).is_finite() & pl.col(a).is_finite()).fill_null(False)
    for col, name in ((p, "pred"), (a, "actual")):
        bad = frame.filter(ok & ~pl.col(col).is_in([-1.0, 0.0, 1.0]))[col].unique().sort().head(5)
        if len(bad):
            raise ValueError(f"{name} labels must be in {{-1, 0, 1}} or {{0, 1}}, got {bad.to_numpy()}")


def _classification_aggs(p: str, a: str) -> list[pl.Expr]:
    """accuracy and macro precision / recall / F1 over the classes seen in the group (as the functions above)."""
    ok = (pl.col(p).is_finite() & pl.col(a).is_finite()).fill_null(False)
    present, precs, recs, f1s = [], [], [], []
    for c in (-1.0, 0.0, 1.0):
        pc, ac = ok & (pl.col(p) == c), ok & (pl.col(a) == c)
        tp, n_pred, n_true = (pc & ac).sum(), pc.sum(), ac.sum()
        prec = pl.when(n_pred > 0).then(tp / n_pred).otherwise(0.0)
        rec = pl.when(n_true > 0).then(tp / n_true).otherwise(0.0)
        seen = (pc | ac).any()
        present.append(seen.cast(pl.Float64))
        precs.append(pl.when(seen).then(prec).otherwise(0.0))
        recs.append(pl.when(seen).then(rec).otherwise(0.0))
        f1s.append(pl.when(seen & (prec + rec > 0)).then(2 * prec * rec / (prec + rec)).otherwise(0.0))
    classes = pl.sum_horizontal(present)

    def macro(parts: list[pl.Expr]) -> pl.Expr:
        return pl.when(classes > 0).then(pl.sum_horizontal(parts) / classes).otherwise(NAN)

    return [
        (pl.col(p) == pl.col(a)).filter(ok).mean().cast(pl.Float64).fill_null(NAN).alias("accuracy"),
        macro(precs).alias("precision"),
        macro(recs).alias("recall"),
        macro(f1s).alias("f1"),
    ]


def _calibration_table(frame: pl.DataFrame, by: list[str], n_bins: int) -> pl.DataFrame:
    """ece and brier per group over the finite (probability, outcome) pairs (as the functions above)."""
    prob, y = pl.col("__prob"), pl.col("__y")
    pairs = frame.filter((prob.is_finite() & y.is_finite()).fill_null(False))
    if pairs.filter((prob < 0) | (prob > 1)).height:
        raise ValueError("prob must lie in [0, 1]")
    if pairs.filter(~y.is_in([0.0, 1.0])).height:
        raise ValueError("outcome must be 0/1 (or boolean)")
    per = (
        pairs.with_columns((prob * n_bins).floor().cast(pl.Int64).clip(upper_bound=n_bins - 1).alias("__bin"))
        .group_by([*by, "__bin"])
        .agg((y.sum() - prob.sum()).abs().alias("gap"), pl.len().alias("n"), ((prob - y) ** 2).sum().alias("sq"))
        .group_by(by)
        .agg((pl.col("gap").sum() / pl.col("n").sum()).alias("ece"),
             (pl.col("sq").sum() / pl.col("n").sum()).alias("brier"))
    )
    return (frame.select(by).unique().join(per, on=by, how="left", nulls_equal=True)
            .with_columns(pl.col("ece", "brier").fill_null(NAN)))

