"""Trading costs of a potential trade, in basis points of traded notional, and the tradable filter.

Every row of ``trade_costs``'s input is a potential trade entered at that bar: ``position`` in
``[-1, 1]`` (sign = direction, magnitude = fraction of ``notional``) and ``edge_bps``, the expected
(predicted) log return of the bar-horizon in basis points, signed like a return (+ = price up).
All components are for a ROUND TRIP (entry + exit) and are positive costs (funding may be negative,
i.e. income). Definitions (``d`` = direction = ``sign(position)``, or ``sign(edge_bps)`` where
``position == 0``, which makes flat rows "the trade the edge would ask for"; ``size = |position|``,
or 1 where ``position == 0``; ``N`` = ``notional * size``, where ``notional`` is the size of one full
trade in the symbol's quote currency: ``CostConfig.notional_for(symbol)``, i.e. the config's
``notional_by_quote`` entry for the symbol's quote asset (``clm.data.schema.quote_asset``: ``ETH_BTC`` ->
BTC, ``XRP_USDT_USDT`` -> USDT, ``ETHBTC`` -> BTC) or ``default_notional``, unless the caller fixes one
``notional`` for every row. Impact compares ``N`` with the bar's ``quote_volume``, which is in that same
currency: 10,000 is a small trade on a USDT pair and ~700 bars of volume on ETH/BTC in 2018):

* ``fee_bps = 2 * fee`` with ``fee = taker_fee_bps`` if ``use_taker`` else ``maker_fee_bps``.
* ``half_spread_bps = 2 * half_spread`` (the half spread is paid on the way in and on the way out).
  ``half_spread = spread_bps / 2`` where the row has a quoted ``spread_bps`` (a full spread), else
  ``default_half_spread_bps`` when configured, else the Corwin-Schultz estimate below.
* ``slippage_bps = 2 * slippage_bps`` (config value is per fill, fixed).
* ``impact_bps = 2 * impact_coefficient * sqrt(N / quote_volume)`` (square-root impact law; per
  fill ``impact_coefficient`` bps per unit of sqrt participation; both fills use the entry bar's
  ``quote_volume``, the only one known at decision time). Null where ``quote_volume`` is null or
  <= 0 (cannot trade there); ``quote_volume`` falls back to ``volume * close`` when absent.
* ``funding_bps = d * 1e4 * sum(funding_rate)`` over the funding events ``entry <= ts < exit`` of
  the row's symbol (perpetuals: longs pay a positive rate, shorts receive it), with
  ``entry = timestamp + (1 + latency_bars) * timeframe`` (the close of the bar the trade is
  entered on; ``latency_bars`` as in ``clm.labels.forward``) and
  ``exit = entry + holding_bars * timeframe``. 0 without a funding series, for symbols absent
  from it, or when ``config.funding`` is False. Events after the series' last timestamp are
  unknown and count as 0.
* ``total_cost_bps = fee + half_spread + slippage + impact + funding``.
* ``one_way_cost_bps = (fee + half_spread + slippage + impact) / 2``: cost per unit of position
  change, what ``clm.evaluation.metrics.simulate_strategy`` charges on turnover.
* ``net_edge_bps = d * edge_bps - total_cost_bps`` (sign-aware: a short earns ``-edge_bps``).
* ``tradable = net_edge_bps >= min_edge_after_cost_bps`` (False where a cost is null).
* ``notional``: the row's full-trade notional (quote currency) the impact term used.
* ``capacity_notional = max_participation * quote_volume``: the most notional the bar can absorb
  (quote currency, comparable with ``notional``).

Spread estimate (Corwin & Schultz 2012, "A Simple Way to Estimate Bid-Ask Spreads from Daily High
and Low Prices"), per symbol from bar ``t-1`` and ``t`` (causal; only when ``t-1`` is exactly one
timeframe earlier and neither bar is gap-filled): with log high/low ``h, l``,
``beta = (h_t - l_t)^2 + (h_{t-1} - l_{t-1})^2``,
``gamma = (max(h_t, h_{t-1}) - min(l_t, l_{t-1}))^2``, ``k = 3 - 2*sqrt(2)``,
``alpha = (sqrt(2*beta) - sqrt(beta)) / k - sqrt(gamma / k)``,
``S = 2 * (e^alpha - 1) / (1 + e^alpha)`` (full spread, fraction of price). The two-bar ``S`` is
averaged over the trailing ``spread_estimate_window`` bars and the average is floored at 0;
``half_spread = 1e4 * S / 2``. Why this estimator: it separates the spread (which widens every
bar's range by the same amount) from volatility (which grows the two-bar range faster than the
one-bar ranges), so a volatile bar does not read as a wide spread - a fixed fraction of
``(high - low) / close`` cannot make that distinction and would charge a 31 bp range on XRP 5m bars
as a spread. Flooring each two-bar estimate at 0 before averaging (the paper's daily variant)
overstates intraday spreads: on the XRP/USDT perpetual 5m sample it gives ~10 bp, averaging
first ~3 bp, close to the ~1-2 bp a one-tick (0.0001 at ~1.1) book implies. Where no estimate
exists (a symbol's first bar), the symbol's overall average is used, and failing that half of the
bar's log range (an upper bound: a half spread cannot exceed half the bar's range).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import polars as pl

from clm.checks import ENGINE, is_finite_number, is_int
from clm.data.schema import KNOWN_QUOTES, quote_asset

BPS = 1e-4
UTC_US = pl.Datetime("us", "UTC")
FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timestamp": UTC_US,
    "funding_rate": pl.Float64(),
}
COST_COLUMNS = (
    "fee_bps",
    "half_spread_bps",
    "slippage_bps",
    "impact_bps",
    "funding_bps",
    "total_cost_bps",
    "one_way_cost_bps",
    "net_edge_bps",
    "tradable",
    "notional",
    "capacity_notional",
)
_CS_K = 3.0 - 2.0 * math.sqrt(2.0)
_CSV_TIME_NAMES = ("timestamp", "date", "time", "datetime", "funding_time", "fundingtime", "calc_time")
_CSV_RATE_NAMES = ("funding_rate", "fundingrate", "rate", "last_funding_rate", "lastfundingrate")


# The size of one trade (|position| = 1) in the symbol's quote currency, for the impact term and the
# capacity comparison. Each says about 10,000 USD at round prices (BTC ~20,000, ETH ~2,000, BNB ~330 USD):
# an ASSUMPTION that ages with those prices (0.5 BTC was ~6,500 USD in January 2018 and ~50,000 USD at
# 100,000), so set your own (``costs.notional_by_quote`` in policy.yaml, ``clm.policy.Costs``). Quotes not
# listed, and symbols whose quote cannot be read (``clm.data.schema.quote_asset``), trade
# ``DEFAULT_NOTIONAL`` units of their quote (right for USD-like quotes, wrong for e.g. TRY: list it).
DEFAULT_NOTIONAL = 10_000.0
DEFAULT_NOTIONAL_BY_QUOTE: dict[str, float] = {
    "USDT": 10_000.0, "USDC": 10_000.0, "BUSD": 10_000.0, "FDUSD": 10_000.0, "TUSD": 10_000.0, "USD": 10_000.0,
    "BTC": 0.5, "ETH": 5.0, "BNB": 30.0,
}
_QUOTE_KEY = re.compile(r"^[A-Z0-9]{1,20}$")


@dataclass(frozen=True)
class CostConfig:
    """Cost assumptions, in basis points of traded notional; invalid values raise ``ValueError``.

    ``notional_by_quote`` (quote asset -> notional of one trade in that currency) and
    ``default_notional`` (every other quote) size the trade the impact term charges: see
    ``DEFAULT_NOTIONAL_BY_QUOTE`` for the defaults and their assumption; ``notional_for`` resolves a
    symbol. Keys are upper-cased; every value must be a finite number > 0.
    """

    maker_fee_bps: float = 2.0
    taker_fee_bps: float = 5.0
    use_taker: bool = True
    slippage_bps: float = 1.0
    impact_coefficient: float = 10.0
    max_participation: float = 0.05
    min_edge_after_cost_bps: float = 0.0
    default_half_spread_bps: float | None = None
    funding: bool = True
    spread_estimate_window: int = 20
    notional_by_quote: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_NOTIONAL_BY_QUOTE))
    default_notional: float = DEFAULT_NOTIONAL

    def __post_init__(self) -> None:
        for name in ("maker_fee_bps", "taker_fee_bps", "slippage_bps", "impact_coefficient"):
            value = getattr(self, name)
            if not is_finite_number(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("use_taker", "funding"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        mp = self.max_participation
        if not is_finite_number(mp) or not 0 < mp <= 1:
            raise ValueError(f"max_participation must be a number in (0, 1], got {mp!r}")
        if not is_finite_number(self.min_edge_after_cost_bps):
            raise ValueError(
                f"min_edge_after_cost_bps must be a finite number, got {self.min_edge_after_cost_bps!r}"
            )
        hs = self.default_half_spread_bps
        if hs is not None and (not is_finite_number(hs) or hs < 0):
            raise ValueError(f"default_half_spread_bps must be None or a finite number >= 0, got {hs!r}")
        w = self.spread_estimate_window
        if not is_int(w) or w < 1:
            raise ValueError(f"spread_estimate_window must be an int >= 1, got {w!r}")
        if not is_finite_number(self.default_notional) or self.default_notional <= 0:
            raise ValueError(f"default_notional must be a finite number > 0, got {self.default_notional!r}")
        if not isinstance(self.notional_by_quote, Mapping):
            raise ValueError(
                "notional_by_quote must be a mapping of quote asset -> notional, got "
                f"{type(self.notional_by_quote).__name__}"
            )
        notionals: dict[str, float] = {}
        for key, value in self.notional_by_quote.items():
            quote = key.strip().upper() if isinstance(key, str) else key
            if not isinstance(quote, str) or not _QUOTE_KEY.match(quote):
                raise ValueError(f"notional_by_quote: key {key!r} is not a quote asset (1-20 letters or digits)")
            if quote in notionals:
                raise ValueError(f"notional_by_quote: quote {quote!r} is given twice")
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"notional_by_quote[{quote!r}] must be a finite number > 0, got {value!r}")
            notionals[quote] = float(value)
        object.__setattr__(self, "notional_by_quote", notionals)  # a private, normalised copy

    def __hash__(self) -> int:  # the mapping field is a dict
        return hash(tuple((k, tuple(sorted(v.items())) if isinstance(v, Mapping) else v)
                          for k, v in self.as_dict().items()))

    @property
    def fee_per_fill_bps(self) -> float:
        return self.taker_fee_bps if self.use_taker else self.maker_fee_bps

    def quote_of(self, symbol: str | None) -> str | None:
        """The symbol's quote asset (``clm.data.schema.quote_asset``, also knowing this config's quotes)."""
        return quote_asset(symbol, (*KNOWN_QUOTES, *self.notional_by_quote))

    def notional_for(self, symbol: str | None) -> float:
        """Notional of one trade on ``symbol``, in its quote currency (``default_notional`` if unlisted)."""
        return self.notional_by_quote.get(self.quote_of(symbol) or "", self.default_notional)

    def as_dict(self) -> dict:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v) for f in fields(self)}


# ------------------------------------------------------------------------------------------------
# funding rates
# ------------------------------------------------------------------------------------------------


def _symbol_from_name(path: Path) -> str:
    from clm.data.sources.files import symbol_from_filename

    return symbol_from_filename(path.name)


def read_funding_rates(path: str | Path, *, symbol: str | None = None) -> pl.DataFrame:
    """``(symbol, timestamp, funding_rate)`` from a freqtrade funding feather or a CSV.

    * freqtrade ``*-funding_rate.feather``: columns ``date, open, high, low, close, volume`` where
      ``open`` holds the rate (freqtrade stores funding as a candle); the rate is read from
      ``open``.
    * CSV: a time column (one of ``timestamp, date, time, datetime, funding_time, fundingTime,
      calc_time``; ISO text or epoch seconds/milliseconds) and a rate column (``funding_rate,
      fundingRate, rate, last_funding_rate``); an optional ``symbol`` column.

    The symbol is the file's ``symbol`` column, else ``symbol``, else the file name
    (``XRP_USDT_USDT-8h-funding_rate.feather`` -> ``XRP_USDT_USDT``, as the candle sources name it).
    Timestamps are UTC, floored to the whole second (exchanges stamp settlements with a few
    milliseconds of jitter, ``00:00:00.017``). Rates are fractions (0.0001 = 1 bp). Sorted by
    (symbol, timestamp), duplicates dropped. Raises ``ValueError`` naming the file when it is
    missing, unreadable, or lacks the columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"funding file {str(path)!r} does not exist")
    lower_name = path.name.lower()
    suffix = ".csv.gz" if lower_name.endswith(".csv.gz") else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz"):
            raw = pl.read_csv(path, infer_schema_length=10_000)
        elif suffix in (".feather", ".arrow", ".ipc"):
            raw = pl.read_ipc(path)
        elif suffix == ".parquet":
            raw = pl.read_parquet(path)
        else:
            raise ValueError(f"unsupported suffix {suffix!r} (want .feather, .arrow, .ipc, .csv, .parquet)")
    except (Exception, pl.exceptions.PanicException) as exc:  # noqa: BLE001 - any reader failure
        detail = f"{type(exc).__name__}: {exc}"[:300]
        raise ValueError(f"funding file {str(path)!r} is unreadable: {detail}") from None

    lower = {c.lower(): c for c in raw.columns}
    time_col = next((lower[n] for n in _CSV_TIME_NAMES if n in lower), None)
    rate_col = next((lower[n] for n in _CSV_RATE_NAMES if n in lower), None)
    if rate_col is None and {"date", "open"} <= set(lower):  # freqtrade funding feather
        rate_col = lower["open"]
    if time_col is None or rate_col is None:
        raise ValueError(
            f"funding file {str(path)!r} lacks a time column ({', '.join(_CSV_TIME_NAMES)}) and a "
            f"rate column ({', '.join(_CSV_RATE_NAMES)}, or freqtrade's date/open); it has {raw.columns}"
        )
    if raw.height == 0:
        raise ValueError(f"funding file {str(path)!r} has no rows")

    ts = pl.col(time_col)
    dtype = raw.schema[time_col]
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            ts_expr = ts.dt.replace_time_zone("UTC")
        else:
            ts_expr = ts.dt.convert_time_zone("UTC")
    elif dtype.is_integer() or dtype.is_float():
        # epoch: milliseconds when large (> year 2286 in seconds), else seconds
        ms = pl.when(ts.abs() > 1e11).then(ts.cast(pl.Float64)).otherwise(ts.cast(pl.Float64) * 1000)
        ts_expr = pl.from_epoch(ms.cast(pl.Int64), time_unit="ms").dt.replace_time_zone("UTC")
    else:
        ts_expr = ts.cast(pl.String).str.to_datetime(time_zone="UTC", strict=False)
    if "symbol" in lower:
        sym_expr = pl.col(lower["symbol"]).cast(pl.String)
    else:
        try:
            name_symbol = symbol or _symbol_from_name(path)
        except ValueError as exc:
            raise ValueError(f"funding file {str(path)!r}: no symbol column and {exc}") from None
        sym_expr = pl.lit(name_symbol, pl.String)
    if symbol is not None:
        sym_expr = pl.lit(symbol, pl.String)
    out = raw.select(
        sym_expr.alias("symbol"),
        ts_expr.cast(UTC_US).dt.truncate("1s").alias("timestamp"),
        pl.col(rate_col).cast(pl.Float64, strict=False).alias("funding_rate"),
    )
    bad = out.filter(pl.col("timestamp").is_null() | pl.col("funding_rate").is_null())
    if bad.height:
        raise ValueError(
            f"funding file {str(path)!r}: {bad.height} row(s) with an unparseable time in {time_col!r} "
            f"or rate in {rate_col!r}"
        )
    return out.unique(["symbol", "timestamp"], keep="last").sort("symbol", "timestamp")


# ------------------------------------------------------------------------------------------------
# costs
# ------------------------------------------------------------------------------------------------


def _cs_two_bar_spread(timeframe_seconds: int, has_filled: bool) -> pl.Expr:
    """Corwin-Schultz two-bar full spread (fraction), null without a contiguous previous bar."""
    h, l = pl.col("high").log(), pl.col("low").log()
    hp, lp = h.shift(1).over("symbol"), l.shift(1).over("symbol")
    beta = (h - l) ** 2 + (hp - lp) ** 2
    gamma = (pl.max_horizontal(h, hp) - pl.min_horizontal(l, lp)) ** 2
    alpha = (beta.mul(2).sqrt() - beta.sqrt()) / _CS_K - (gamma / _CS_K).sqrt()
    spread = 2 * (alpha.exp() - 1) / (1 + alpha.exp())
    gap = pl.col("timestamp").diff().over("symbol") != pl.duration(seconds=timeframe_seconds)
    bad = gap.fill_null(True) | ~(pl.col("high") >= pl.col("low")) | (pl.col("low") <= 0)
    if has_filled:
        filled = pl.col("is_filled")
        bad = bad | filled.fill_null(False) | filled.shift(1).over("symbol").fill_null(True)
    return pl.when(bad).then(None).otherwise(spread)


def estimate_half_spread_bps(
    candles: pl.DataFrame | pl.LazyFrame, *, timeframe_seconds: int, window: int = 20
) -> pl.DataFrame:
    """Corwin-Schultz half spread in bps per row (see the module docstring), input order kept.

    Needs ``symbol, timestamp, high, low``; returns the input with ``half_spread_est_bps`` added.
    """
    lf = candles.lazy()
    names = lf.collect_schema().names()
    missing = [c for c in ("symbol", "timestamp", "high", "low") if c not in names]
    if missing:
        raise ValueError(f"estimate_half_spread_bps: rows lack column(s) {missing}")
    two_bar = _cs_two_bar_spread(timeframe_seconds, "is_filled" in names)
    out = (
        lf.with_row_index("__row")
        .sort("symbol", "timestamp")
        .with_columns(two_bar.alias("__cs"))
        .with_columns(
            pl.col("__cs").rolling_mean(window, min_samples=1).over("symbol").alias("__cs_roll"),
            pl.col("__cs").mean().over("symbol").alias("__cs_all"),
        )
        .with_columns(
            pl.coalesce(
                pl.col("__cs_roll").clip(lower_bound=0.0) / 2 / BPS,
                pl.col("__cs_all").clip(lower_bound=0.0) / 2 / BPS,
                (pl.col("high") / pl.col("low")).log() / 2 / BPS,
            ).alias("half_spread_est_bps")
        )
        .sort("__row")
        .drop("__row", "__cs", "__cs_roll", "__cs_all")
    )
    return out.collect(engine=ENGINE)


def _funding_sums(
    rows: pl.DataFrame, funding: pl.DataFrame, entry_offset_us: int, hold_us: int
) -> pl.Series:
    """Per row: sum of funding rates with ``entry <= ts < exit`` for the row's symbol (0 if none)."""
    missing = [c for c in FUNDING_SCHEMA if c not in funding.columns]
    if missing:
        raise ValueError(f"trade_costs: funding frame lacks column(s) {missing} (see read_funding_rates)")
    fund = (
        funding.select(
            pl.col("symbol").cast(pl.String),
            pl.col("timestamp").cast(UTC_US),
            pl.col("funding_rate").cast(pl.Float64).fill_null(0.0),
        )
        .sort("timestamp")
        .with_columns(pl.col("funding_rate").cum_sum().over("symbol").alias("__cum"))
        .drop("funding_rate")
    )
    keys = rows.select(
        pl.col("__row"),
        pl.col("symbol").cast(pl.String),
        (pl.col("timestamp").cast(UTC_US) + pl.duration(microseconds=entry_offset_us)).alias("__entry"),
    ).with_columns((pl.col("__entry") + pl.duration(microseconds=hold_us)).alias("__exit"))

    def cum_before(col: str) -> pl.DataFrame:
        left = keys.select("__row", "symbol", pl.col(col).alias("timestamp")).sort("timestamp")
        joined = left.join_asof(
            fund,
            on="timestamp",
            by="symbol",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,  # both sides sorted by timestamp above, hence within symbols
        )
        return joined.select("__row", pl.col("__cum").fill_null(0.0).alias(col))

    sums = (
        keys.select("__row")
        .join(cum_before("__entry"), on="__row", how="left")
        .join(cum_before("__exit"), on="__row", how="left")
        .sort("__row")
    )
    return (sums["__exit"] - sums["__entry"]).fill_null(0.0)


def notional_expr(config: CostConfig, symbols: Iterable[str | None]) -> pl.Expr:
    """``pl.col("symbol")`` mapped to its trade notional (``config.notional_for``), for the symbols given:
    each distinct symbol is resolved once, the rows by ``replace_strict``."""
    if isinstance(symbols, pl.Series):
        symbols = symbols.cast(pl.String).unique().to_list()
    mapping = {s: config.notional_for(s) for s in set(symbols) if s is not None}
    return pl.col("symbol").cast(pl.String).replace_strict(
        mapping, default=config.default_notional, return_dtype=pl.Float64
    )


def notionals_used(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, list[float]]:
    """The trade notionals a costed frame (``symbol``, ``notional``) used, per quote asset, for reports:
    ``{"BTC": [0.5], "USDT": [10000.0]}`` (one value per quote unless the rows were costed under different
    settings); symbols without a readable quote under ``"other"``. Empty when the frame has no
    ``notional`` column (written before there was one) or no rows."""
    names = frame.collect_schema().names()
    if "notional" not in names or "symbol" not in names:
        return {}
    pairs = frame.lazy().select("symbol", "notional").unique().drop_nulls().collect(engine=ENGINE)
    out: dict[str, set[float]] = {}
    for symbol, value in pairs.iter_rows():
        out.setdefault(quote_asset(symbol) or "other", set()).add(float(value))
    return {quote: sorted(values) for quote, values in sorted(out.items())}


def trade_costs(
    rows: pl.DataFrame | pl.LazyFrame,
    config: CostConfig = CostConfig(),
    *,
    notional: float | None = None,
    holding_bars: int,
    timeframe_seconds: int,
    funding: pl.DataFrame | None = None,
    latency_bars: int = 0,
) -> pl.DataFrame:
    """Round-trip cost components (bps) and the tradable flag for every row (formulas above).

    ``rows`` needs ``symbol, timestamp, edge_bps`` and ``quote_volume`` (or ``volume`` and
    ``close``); ``position`` (default: ``sign(edge_bps)``), ``spread_bps``, and ``high, low`` (for
    the spread estimate, needed only where ``spread_bps`` is missing and no default is set) are
    optional. Returns the input columns (input order) plus ``COST_COLUMNS``.

    ``notional``: one trade size for every row, overriding the config's per-quote sizes (None, the
    default: ``config.notional_for(symbol)`` per row).
    """
    if not isinstance(config, CostConfig):
        raise ValueError(f"config must be a CostConfig, got {type(config).__name__}")
    if notional is not None and (not is_finite_number(notional) or notional <= 0):
        raise ValueError(f"notional must be None or a finite number > 0, got {notional!r}")
    for name, value, low in (
        ("holding_bars", holding_bars, 1),
        ("timeframe_seconds", timeframe_seconds, 1),
        ("latency_bars", latency_bars, 0),
    ):
        if not is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if funding is not None and not isinstance(funding, pl.DataFrame):
        raise ValueError(f"funding must be a polars DataFrame or None, got {type(funding).__name__}")

    df = rows.lazy().collect(engine=ENGINE) if isinstance(rows, pl.LazyFrame) else rows
    if not isinstance(df, pl.DataFrame):
        raise ValueError(f"rows must be a polars DataFrame or LazyFrame, got {type(rows).__name__}")
    names = df.columns
    missing = [c for c in ("symbol", "timestamp", "edge_bps") if c not in names]
    if "quote_volume" not in names and not {"volume", "close"} <= set(names):
        missing.append("quote_volume (or volume and close)")
    if missing:
        raise ValueError(f"trade_costs: rows lack column(s) {missing}")
    clashing = [c for c in COST_COLUMNS if c in names]
    if clashing:
        raise ValueError(f"trade_costs: rows already have output column(s) {clashing}; drop them first")
    if "position" in names:
        position = pl.col("position").cast(pl.Float64)
        out_of_range = df.filter((position.abs() > 1) | position.is_nan()).height
        if out_of_range:
            raise ValueError(f"trade_costs: {out_of_range} row(s) have a position outside [-1, 1]")

    work = df.with_row_index("__row")
    spread_known = pl.col("spread_bps").is_not_null() if "spread_bps" in names else pl.lit(False)
    need_estimate = config.default_half_spread_bps is None and work.select((~spread_known).any()).item()
    if need_estimate:
        lacking = [c for c in ("high", "low") if c not in names]
        if lacking:
            raise ValueError(
                f"trade_costs: rows without spread_bps need {lacking} for the spread estimate "
                "(or set CostConfig.default_half_spread_bps)"
            )
        est = estimate_half_spread_bps(
            work.select("symbol", "timestamp", "high", "low", *[c for c in ("is_filled",) if c in names]),
            timeframe_seconds=timeframe_seconds,
            window=config.spread_estimate_window,
        )["half_spread_est_bps"]
        fallback = pl.Series("__hs_fallback", est)
    else:
        fallback = pl.Series("__hs_fallback", [config.default_half_spread_bps] * work.height, pl.Float64)
    work = work.with_columns(fallback)

    if config.funding and funding is not None:
        tf_us = timeframe_seconds * 1_000_000
        fund_sum = _funding_sums(work, funding, (1 + latency_bars) * tf_us, holding_bars * tf_us)
    else:
        fund_sum = pl.Series([0.0] * work.height, dtype=pl.Float64)
    work = work.with_columns(fund_sum.alias("__fund"))

    pos = pl.col("position").cast(pl.Float64) if "position" in names else pl.lit(0.0)
    pos = pos.fill_null(0.0)
    edge = pl.col("edge_bps").cast(pl.Float64)
    direction = pl.when(pos != 0).then(pos.sign()).otherwise(edge.sign().fill_nan(0.0).fill_null(0.0))
    size = pl.when(pos != 0).then(pos.abs()).otherwise(1.0)
    qv = pl.col("quote_volume") if "quote_volume" in names else pl.col("volume") * pl.col("close")
    qv = qv.cast(pl.Float64)
    if "spread_bps" in names:
        spread_half = pl.col("spread_bps").cast(pl.Float64) / 2
    else:
        spread_half = pl.lit(None, pl.Float64)
    fee = 2.0 * config.fee_per_fill_bps
    trade_notional = pl.lit(float(notional)) if notional is not None else notional_expr(config, work["symbol"])
    work = work.with_columns(trade_notional.alias("notional"))
    result = (
        work.with_columns(
            pl.lit(fee, pl.Float64).alias("fee_bps"),
            (2 * pl.coalesce(spread_half, pl.col("__hs_fallback"))).alias("half_spread_bps"),
            pl.lit(2.0 * config.slippage_bps, pl.Float64).alias("slippage_bps"),
            pl.when(qv > 0)
            .then(2 * config.impact_coefficient * (pl.col("notional") * size / qv).sqrt())
            .otherwise(None)
            .alias("impact_bps"),
            (direction * pl.col("__fund") / BPS).alias("funding_bps"),
            pl.when(qv > 0).then(config.max_participation * qv).otherwise(None).alias("capacity_notional"),
            direction.alias("__dir"),
        )
        .with_columns(
            (pl.col("fee_bps") + pl.col("half_spread_bps") + pl.col("slippage_bps") + pl.col("impact_bps"))
            .alias("__trading")
        )
        .with_columns(
            (pl.col("__trading") + pl.col("funding_bps")).alias("total_cost_bps"),
            (pl.col("__trading") / 2).alias("one_way_cost_bps"),
        )
        .with_columns((pl.col("__dir") * edge - pl.col("total_cost_bps")).alias("net_edge_bps"))
        .with_columns(
            pl.when(pl.col("net_edge_bps").is_nan())
            .then(False)
            .otherwise(pl.col("net_edge_bps") >= config.min_edge_after_cost_bps)
            .fill_null(False)
            .alias("tradable")
        )
    )
    return result.select(*names, *COST_COLUMNS)


def cost_summary(frame: pl.DataFrame) -> dict:
    """Means of the cost components and the share tradable, for asset metadata.

    Over trades (``position != 0``) when a ``position`` column exists, else over all rows. Keys:
    ``n_rows``, ``n_trades``, ``mean_<component>`` for each bps component, ``share_tradable``,
    ``median_capacity_notional``; None where there is nothing to average.
    """
    needed = [c for c in COST_COLUMNS if c not in frame.columns]
    if needed:
        raise ValueError(f"cost_summary: frame lacks column(s) {needed} (run trade_costs first)")
    trades = frame.filter(pl.col("position") != 0) if "position" in frame.columns else frame
    components = (
        "fee_bps",
        "half_spread_bps",
        "slippage_bps",
        "impact_bps",
        "funding_bps",
        "total_cost_bps",
        "net_edge_bps",
    )
    stats = trades.select(
        *[pl.col(c).mean().alias(f"mean_{c}") for c in components],
        pl.col("tradable").cast(pl.Float64).mean().alias("share_tradable"),
        pl.col("capacity_notional").median().alias("median_capacity_notional"),
    ).row(0, named=True)
    out: dict = {"n_rows": frame.height, "n_trades": trades.height}
    for key, value in stats.items():
        finite = value is not None and math.isfinite(value)
        out[key] = float(value) if finite else None
    return out
