"""Trade replay: the champion's signals played on historical bars, costs included, to train and judge RL policies.

Candidate trades. Every ``long`` / ``short`` decision of the consensus (the regime-gated vote of the
champions, table ``consensus``; ``decision_log`` holds the same decisions without the regime) is a
candidate trade, with the execution timing of ``clm.labels.forward``: decided at the close of bar ``t``,
entered at ``close[t+L]`` (``L = latency_bars``), held for ``horizon`` bars, so the exit is
``close[t+L+horizon]`` unless a take-profit or stop-loss is touched first on bars ``t+L+1 ..
t+L+horizon`` (their high and low; when both are touched in one bar the stop-loss counts, the intrabar
order being unknown; a stop-loss is filled at the level or at the bar's open when the bar opened beyond
it; a take-profit at the level, never better). Per symbol, a signal that comes while the previous
candidate of that symbol is still within its horizon is dropped, so the candidates of a symbol never
overlap and every policy is judged on exactly the same candidates. Signals whose window crosses a
segment break, enters or exits on a gap-filled bar, runs past the data, or lacks the ATR or the regime
labels are dropped too, each counted with its reason (``ReplayTrades.dropped``).

Exits. A sizer's styles are distances in ATR (``atr_14`` of the features, known at the decision bar):
take-profit conservative 1.0, balanced 2.0 (the triple-barrier label's), aggressive 3.0; stop-loss tight
0.75, medium 1.0 (the label's), wide 1.5 (``ReplayConfig``). The fixed-size baseline holds every trade to
the horizon, as the training's simulated strategy does.

Costs: the project's cost model, ``clm.evaluation.costs.trade_costs``, evaluated once per candidate and
direction at the notional of a 1x trade (the cost config's notional for the symbol's quote currency,
``CostConfig.notional_by_quote``, unless ``stake_notional`` fixes one for every symbol; the ``notional``
column of ``ReplayTrades.frame``): fees, half spread, slippage and funding are
in bps of notional whatever the size; the impact term is the model's square-root law, so a trade ``f``
times the 1x notional pays ``impact_1x * sqrt(f)`` (``ReplayTrades.cost_bps``; a test checks it against
``trade_costs`` called at that notional).

Strategies: how the meta-strategy agent's choice uses the signal (``STRATEGY_RULES``):

    trend_follow     follow the signal, full size
    breakout         follow the signal; full size when the consensus level is moderate or strong, half on weak
    mean_reversion   fade the signal (trade against it), full size
    range_bound      fade the signal, half size
    defensive        follow the signal, half size

Every strategy trades, so every choice is rewarded by a closed trade; declining a trade is the sizer's
part (the DQN's SKIP, or the safety clamp's ``max_positions``).

Money. A 1x trade (size multiplier 1, leverage 1) puts ``base_position_pct`` % of equity (10 %) at
that notional; a decision trades ``f = size_multiplier x leverage x strategy size`` times
that, after the ``SafetyClamp`` of the active risk mode (the only way any policy, baselines included,
gets a size). With the trade's net price return ``g = d x (exit / entry - 1) - cost_bps(f) x 1e-4`` (``d``
= +1 long, -1 short): ``pnl_pct = 100 x f x g`` (% of the 1x stake, the ``trade.closed`` field, which is
what the rewards see, so size scales both gains and drawdowns), ``max_drawdown_pct = 100 x f x`` the
adverse excursion up to the exit, and the account return ``r = base_position_pct / 100 x f x g``. Account
equity compounds ``r`` in exit order.

Each opened trade becomes a ``trade.closed`` event (``clm.telemetry`` fields; ``payload.meta_strategy``
and ``payload.sizing`` as the agents' ``experience`` reads them, ``payload.replay`` the details), so the
agents learn from a replay exactly as from live telemetry.

Policies: ``AgentPolicy`` (the meta-strategy agent plus a sizer), ``FixedSizePolicy`` (trend_follow, 1x,
no exits) and ``RandomPolicy`` (seeded uniform choices over the same strategies and sizer actions). The
agent's state: the bar's regime, volatility and liquidity levels (table ``regimes``) and its own recent
performance; the sizer's features: consensus confidence (signal_confidence) and agreement
(entry_quality), signed Kaufman efficiency (trend_strength x sign of mom_20), momentum in ATR units
(tanh(mom_20 / (atr_ratio x sqrt 20))), the ATR ratio of the sizer's exit styles (risk_reward_ratio),
and from the replay's own book: exposure and largest position (% of equity), recent win rate (last 20
closed trades, 0.5 before any), drawdown of the account (%) and the risk the mode still allows across
positions (remaining_daily_risk: ``max_risk_pct_per_trade x max_positions`` minus the open risk).

``evaluate`` plays the agent (greedy, not learning) and both baselines on the same held-out candidates
and compares them trade by trade: per-candidate account returns (0 when a policy did not trade),
the mean paired difference in bps of equity with a seeded bootstrap 95 % interval, and a verdict computed
from those numbers ("beats both baselines", "loses to fixed-size", ...).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from pydantic import Field

from clm.checks import ENGINE
from clm.evaluation.costs import CostConfig, trade_costs
from clm.evaluation.metrics import max_drawdown
from clm.features.build import infer_timeframe_seconds
from clm.lake import Lake, TableNotFound
from clm.policy import RiskMode
from clm.regimes.config import CLASSES, LIQUIDITY_LEVELS, VOLATILITY_LEVELS
from clm.rl.config import RLSection, validate_config
from clm.rl.meta import STRATEGIES, MetaConfig, MetaStrategyAgent
from clm.rl.rewards import RewardEngine, default_engine
from clm.rl.sizing import (
    DQN_ACTIONS,
    QTABLE_ACTIONS,
    STOP_LOSS_STYLES,
    TAKE_PROFIT_STYLES,
    DQNSizer,
    RawSizing,
    SafetyClamp,
    SizingContext,
    SizingDecision,
    SizingExperience,
)

SIGNALS_TABLE = "consensus"
BAR_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close")
REGIME_COLUMNS = ("regime", "volatility_level", "liquidity_level")
FEATURE_COLUMNS = ("atr_14", "trend_strength", "mom_20", "atr_ratio")
ACTIONS = {"long": 1, "short": -1}
DROP_REASONS = ("no_bar", "no_regime", "no_atr", "end_of_data", "segment_break", "filled_bar", "no_volume",
                "overlap")
POLICIES = ("agent", "fixed_size", "random")
BASELINES = ("fixed_size", "random")
WIN_WINDOW = 20  # closed trades behind win_rate_recent
_US = 1_000_000


class StrategyRule(NamedTuple):
    direction: int  # +1 follows the signal, -1 fades it
    size: float  # times the sizer's size
    weak_size: float  # ... when the consensus level is weak


STRATEGY_RULES: Mapping[str, StrategyRule] = {
    "trend_follow": StrategyRule(1, 1.0, 1.0),
    "breakout": StrategyRule(1, 1.0, 0.5),
    "mean_reversion": StrategyRule(-1, 1.0, 1.0),
    "range_bound": StrategyRule(-1, 0.5, 0.5),
    "defensive": StrategyRule(1, 0.5, 0.5),
}
assert set(STRATEGY_RULES) == set(STRATEGIES)


class TakeProfitATR(RLSection):
    conservative: float = Field(1.0, gt=0, le=100)
    balanced: float = Field(2.0, gt=0, le=100)
    aggressive: float = Field(3.0, gt=0, le=100)


class StopLossATR(RLSection):
    tight: float = Field(0.75, gt=0, le=100)
    medium: float = Field(1.0, gt=0, le=100)
    wide: float = Field(1.5, gt=0, le=100)


class ReplayConfig(RLSection):
    """Timing, exits and money of the replay (see the module doc)."""

    horizon: int = Field(12, ge=1, le=10_000, description="bars a trade is held at most (the champion's horizon)")
    latency_bars: int = Field(1, ge=0, le=100, description="bars between the decision and the entry")
    base_position_pct: float = Field(10.0, gt=0, le=100, description="% of equity a 1x trade puts at notional")
    stake_notional: float | None = Field(None, gt=0, description="notional of a 1x trade in every symbol's quote "
                                         "currency, for impact; null: the cost config's per-quote notional")
    take_profit_atr: TakeProfitATR = TakeProfitATR()
    stop_loss_atr: StopLossATR = StopLossATR()


# ---- inputs ---------------------------------------------------------------------------------------------
def load_replay_inputs(lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The champion's signals (``consensus`` rows whose action is long or short) and the bars they need:
    candles with the features' ATR and trend columns and the regime labels. ``ValueError`` naming the table
    to materialise when one is missing."""
    from clm.data.ingest import CANDLES
    from clm.features.store import FEATURES
    from clm.regimes.store import REGIMES

    try:
        signals = (lake.scan(SIGNALS_TABLE).filter(pl.col("action").is_in(list(ACTIONS)))
                   .drop("date", strict=False).collect(engine=ENGINE))
    except TableNotFound:
        raise ValueError(f"no champion signals: table {SIGNALS_TABLE!r} is missing in {lake.root}; materialise the "
                         "consensus asset (training_job) first") from None
    if signals.is_empty():
        raise ValueError(f"no champion signals: table {SIGNALS_TABLE!r} holds no long or short decision")
    needed = {}
    for table, columns in ((FEATURES, FEATURE_COLUMNS), (REGIMES, REGIME_COLUMNS)):
        try:
            lf = lake.scan(table)
        except TableNotFound:
            raise ValueError(f"the replay needs table {table!r} ({', '.join(columns)}); materialise it first") from None
        missing = [c for c in columns if c not in lf.collect_schema().names()]
        if missing:
            raise ValueError(f"table {table!r} lacks column(s) {missing} the replay needs")
        needed[table] = lf.select("symbol", "timestamp", *columns)
    try:
        candles = lake.scan(CANDLES)
    except TableNotFound:
        raise ValueError(f"the replay needs table {CANDLES!r}; materialise it first") from None
    symbols = signals["symbol"].unique().to_list()
    start = signals["timestamp"].min()
    names = candles.collect_schema().names()
    keep = [c for c in (*BAR_COLUMNS, "volume", "quote_volume", "spread_bps", "is_filled", "segment_id") if c in names]
    bars = (candles.select(keep).filter(pl.col("symbol").is_in(symbols) & (pl.col("timestamp") >= start))
            .join(needed[FEATURES], on=["symbol", "timestamp"], how="left")
            .join(needed[REGIMES], on=["symbol", "timestamp"], how="left")
            .sort("symbol", "timestamp").collect(engine=ENGINE))
    return signals, bars


# ---- candidate trades -----------------------------------------------------------------------------------
class Outcome(NamedTuple):
    gross: np.ndarray  # d x (exit / entry - 1)
    bars: np.ndarray  # bars held (1 .. horizon)
    hit_tp: np.ndarray
    hit_sl: np.ndarray
    adverse: np.ndarray  # the largest adverse excursion up to the exit, fraction of the entry price (>= 0)
    exit_us: np.ndarray  # exit time (close of the exit bar), microseconds since the epoch


def exit_outcomes(high: np.ndarray, low: np.ndarray, open_: np.ndarray, exit_close: np.ndarray,
                  close_us: np.ndarray, atr_frac: np.ndarray, direction: int, take_profit_atr: float | None,
                  stop_loss_atr: float | None) -> Outcome:
    """Vectorised exits of every candidate for one direction and exit style.

    ``high``, ``low``, ``open_``: (n, horizon) prices of bars ``t+L+1 ..`` divided by the entry close;
    ``exit_close``: (n,) the horizon bar's close over the entry close; ``close_us``: (n, horizon) close times;
    ``atr_frac``: (n,) ATR over the entry close. None for a style: no such exit."""
    n, h = high.shape
    never = np.full(n, h, dtype=np.int64)
    if direction == 1:
        tp_level = 1.0 + take_profit_atr * atr_frac if take_profit_atr else None
        sl_level = 1.0 - stop_loss_atr * atr_frac if stop_loss_atr else None
        tp_touch = high >= tp_level[:, None] if tp_level is not None else None
        sl_touch = low <= sl_level[:, None] if sl_level is not None else None
    else:
        tp_level = 1.0 - take_profit_atr * atr_frac if take_profit_atr else None
        sl_level = 1.0 + stop_loss_atr * atr_frac if stop_loss_atr else None
        tp_touch = low <= tp_level[:, None] if tp_level is not None else None
        sl_touch = high >= sl_level[:, None] if sl_level is not None else None

    def first(touch):
        if touch is None:
            return never
        return np.where(touch.any(axis=1), touch.argmax(axis=1), h)

    tp_k, sl_k = first(tp_touch), first(sl_touch)
    hit_sl = (sl_k < h) & (sl_k <= tp_k)  # the stop-loss wins a tie: the intrabar order is unknown
    hit_tp = (tp_k < h) & ~hit_sl
    k = np.where(hit_sl, sl_k, np.where(hit_tp, tp_k, h - 1))
    rows = np.arange(n)
    exit_price = exit_close.astype(np.float64).copy()
    if sl_level is not None:
        gap = open_[rows, k]
        fill = np.minimum(gap, sl_level) if direction == 1 else np.maximum(gap, sl_level)
        exit_price = np.where(hit_sl, fill, exit_price)
    if tp_level is not None:
        exit_price = np.where(hit_tp, tp_level, exit_price)
    before = np.arange(h)[None, :] < k[:, None]
    if direction == 1:
        worst_before = np.where(before, low, np.inf).min(axis=1)
        worst_last = np.where(hit_sl, exit_price, low[rows, k])
        adverse = np.maximum(0.0, 1.0 - np.minimum(worst_before, worst_last))
    else:
        worst_before = np.where(before, high, -np.inf).max(axis=1)
        worst_last = np.where(hit_sl, exit_price, high[rows, k])
        adverse = np.maximum(0.0, np.maximum(worst_before, worst_last) - 1.0)
    gross = direction * (exit_price - 1.0)
    return Outcome(gross, k + 1, hit_tp, hit_sl, adverse, close_us[rows, k])


@dataclass
class ReplayTrades:
    """The candidate trades, in decision order, with every exit outcome precomputed (see the module doc)."""

    frame: pl.DataFrame  # one row per candidate: symbol, timestamp, signal and state columns, cost components
    config: ReplayConfig
    timeframe_seconds: int
    signals: int  # long/short signals offered
    dropped: dict[str, int]
    decision_us: np.ndarray
    horizon_exit_us: np.ndarray
    outcomes: dict[tuple[int, str | None, str | None], Outcome]  # (direction, take-profit, stop-loss)
    fixed_bps: np.ndarray  # fee + half spread + slippage, round trip
    impact_bps: np.ndarray  # impact of a 1x trade, round trip
    funding_bps: dict[int, np.ndarray]  # per direction
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # frame columns as arrays, for the loop

    def __len__(self) -> int:
        return self.frame.height

    def cost_bps(self, i: int, direction: int, stake: float) -> float:
        """Round-trip cost of candidate ``i`` traded ``stake`` times the 1x notional (``trade_costs``'
        components; impact by its square-root law)."""
        return float(self.fixed_bps[i] + self.impact_bps[i] * math.sqrt(stake) + self.funding_bps[direction][i])

    def outcome(self, i: int, direction: int, take_profit: str | None, stop_loss: str | None
                ) -> tuple[float, int, bool, bool, float, int]:
        o = self.outcomes[(direction, take_profit, stop_loss)]
        return (float(o.gross[i]), int(o.bars[i]), bool(o.hit_tp[i]), bool(o.hit_sl[i]), float(o.adverse[i]),
                int(o.exit_us[i]))

    def split(self, held_out_share: float) -> tuple[np.ndarray, np.ndarray]:
        """Chronological split: the last ``held_out_share`` of the candidates are held out; training candidates
        whose horizon reaches into the held-out period are purged (their outcome was not known before it)."""
        n = len(self)
        if not 0 < held_out_share < 1:
            raise ValueError(f"held_out_share must be in (0, 1), got {held_out_share!r}")
        held_out = int(math.floor(n * held_out_share))
        if held_out == 0:
            raise ValueError(f"the held-out set is empty: {n} candidate trades x held_out_share {held_out_share} is "
                             "less than one trade; raise held_out_share or replay more signals")
        start = self.decision_us[n - held_out]
        held = np.flatnonzero(self.decision_us >= start)
        train = np.flatnonzero((self.decision_us < start) & (self.horizon_exit_us <= start))
        if train.size == 0:
            raise ValueError(f"the training set is empty: {n} candidate trades, held_out_share {held_out_share} "
                             "leaves none before the held-out period; lower held_out_share or replay more signals")
        return train, held

    def window(self, rows: np.ndarray) -> tuple[str, str]:
        """First decision (the close of its signal bar) and last horizon exit of ``rows``, ISO 8601 UTC."""
        return _utc(self.decision_us[rows].min()).isoformat(), _utc(self.horizon_exit_us[rows].max()).isoformat()


def build_trades(bars: pl.DataFrame, signals: pl.DataFrame, config: ReplayConfig | Mapping[str, Any] | None = None,
                 *, cost_config: CostConfig = CostConfig(), timeframe_seconds: int | None = None,
                 funding: pl.DataFrame | None = None) -> ReplayTrades:
    """The candidate trades of ``signals`` on ``bars`` (module doc); ``ValueError`` naming what is missing."""
    config = validate_config(ReplayConfig, config, source="replay config")
    h, lat = config.horizon, config.latency_bars
    missing = [c for c in (*BAR_COLUMNS, *REGIME_COLUMNS, "atr_14") if c not in bars.columns]
    if "quote_volume" not in bars.columns and "volume" not in bars.columns:
        missing.append("quote_volume (or volume)")
    if missing:
        raise ValueError(f"replay bars lack column(s) {missing} (candles joined with features and regimes)")
    lacking = [c for c in ("symbol", "timestamp", "action") if c not in signals.columns]
    if lacking:
        raise ValueError(f"champion signals lack column(s) {lacking}")
    signals = signals.filter(pl.col("action").is_in(list(ACTIONS)))
    if signals.is_empty():
        raise ValueError("no champion signals: no long or short decision to replay")
    tf = timeframe_seconds or infer_timeframe_seconds(bars.select("symbol", "timestamp"))
    tf_us = tf * _US

    seg = pl.col("segment_id") if "segment_id" in bars.columns else pl.lit(0, pl.Int32)
    filled = pl.col("is_filled").fill_null(False) if "is_filled" in bars.columns else pl.lit(False)
    bars = bars.sort("symbol", "timestamp").with_columns(seg.alias("__seg"), filled.alias("__fill"))

    def ahead(expr: pl.Expr, k: int) -> pl.Expr:
        return expr.shift(-k).over("symbol")

    entry = ahead(pl.col("close"), lat)
    path = [
        *(((ahead(pl.col(c), lat + k) / entry).alias(f"__{c[0]}{k}") for c in ("open", "high", "low")
           for k in range(1, h + 1))),
        *((ahead(pl.col("timestamp"), lat + k).dt.epoch("us") + tf_us).alias(f"__t{k}") for k in range(1, h + 1)),
    ]
    trend = pl.col("trend_strength") if "trend_strength" in bars.columns else pl.lit(0.0)
    mom = pl.col("mom_20") if "mom_20" in bars.columns else pl.lit(0.0)
    ratio = pl.col("atr_ratio") if "atr_ratio" in bars.columns else pl.col("atr_14") / pl.col("close")
    lf = (
        bars.lazy()
        .with_columns(
            entry.alias("__entry"),
            (ahead(pl.col("close"), lat + h) / entry).alias("__exit"),
            (ahead(pl.col("__seg"), lat + h) == pl.col("__seg")).alias("__same_segment"),
            (ahead(pl.col("__fill"), lat) | ahead(pl.col("__fill"), lat + h)).alias("__filled"),
            (pl.col("atr_14") / entry).alias("__atr"),
            (trend.fill_null(0.0) * mom.fill_null(0.0).sign()).clip(-1.0, 1.0).alias("trend_strength_signed"),
            (mom / (ratio * math.sqrt(20))).tanh().fill_null(0.0).fill_nan(0.0).alias("momentum_score"),
            pl.int_range(pl.len()).over("symbol").alias("__i"),
            *path,
        )
    )
    sig_cols = [c for c in ("score", "confidence", "agreement", "level") if c in signals.columns]
    sig = signals.lazy().select(
        "symbol", "timestamp", pl.col("action").replace_strict(ACTIONS, return_dtype=pl.Int8).alias("signal"),
        *sig_cols,
    ).unique(["symbol", "timestamp"], keep="first")
    joined = sig.join(lf, on=["symbol", "timestamp"], how="left").collect(engine=ENGINE)
    for name, default in (("confidence", 0.5), ("agreement", 1.0), ("level", "strong"), ("score", None)):
        if name not in joined.columns:
            joined = joined.with_columns(pl.lit(default).alias(name))
    regime_ok = pl.all_horizontal(pl.col("regime").is_in(list(CLASSES)),
                                  pl.col("volatility_level").is_in(list(VOLATILITY_LEVELS)),
                                  pl.col("liquidity_level").is_in(list(LIQUIDITY_LEVELS))).fill_null(False)
    reason = (
        pl.when(pl.col("__i").is_null()).then(pl.lit("no_bar"))
        .when(~regime_ok).then(pl.lit("no_regime"))
        .when(~(pl.col("__atr") > 0).fill_null(False)).then(pl.lit("no_atr"))
        .when(pl.col("__exit").is_null() | pl.col(f"__t{h}").is_null()).then(pl.lit("end_of_data"))
        .when(~pl.col("__same_segment").fill_null(False)).then(pl.lit("segment_break"))
        .when(pl.col("__filled").fill_null(False)).then(pl.lit("filled_bar"))
        .otherwise(pl.lit(None, pl.String))
    )
    joined = joined.with_columns(reason.alias("__reason"))
    dropped = {r: 0 for r in DROP_REASONS}
    for r, count in joined.group_by("__reason").len().drop_nulls("__reason").iter_rows():
        dropped[r] = int(count)
    valid = joined.filter(pl.col("__reason").is_null()).sort("symbol", "timestamp")

    # per symbol, a signal inside the previous candidate's horizon is dropped (candidates never overlap)
    keep = np.zeros(valid.height, dtype=bool)
    free: dict[str, int] = {}
    for j, (symbol, i) in enumerate(zip(valid["symbol"].to_list(), valid["__i"].to_list(), strict=True)):
        if i >= free.get(symbol, -1):
            keep[j] = True
            free[symbol] = i + lat + h
    dropped["overlap"] = int((~keep).sum())
    cand = valid.filter(pl.Series(keep)).sort("timestamp", "symbol")

    # the cost model, per direction at the 1x notional, on the contiguous bars (its spread estimate looks at
    # the previous bar), then taken at the candidates
    cost_in = [c for c in ("symbol", "timestamp", "close", "high", "low", "volume", "quote_volume", "spread_bps",
                           "is_filled") if c in bars.columns]
    wanted = cand.select("symbol", "timestamp")
    priced = bars.select(cost_in).join(wanted, on=["symbol", "timestamp"], how="semi")
    if "spread_bps" not in priced.columns or priced["spread_bps"].null_count():
        priced = bars.select(cost_in)  # the spread estimate needs the bars before each candidate
    costs = {}
    for d in (1, -1):
        costed = trade_costs(
            priced.with_columns(pl.lit(float(d)).alias("position"), pl.lit(0.0).alias("edge_bps")), cost_config,
            notional=config.stake_notional, holding_bars=h, timeframe_seconds=tf, funding=funding, latency_bars=lat)
        costs[d] = wanted.join(costed, on=["symbol", "timestamp"], how="left", maintain_order="left")
    no_volume = costs[1]["impact_bps"].is_null() | costs[-1]["impact_bps"].is_null()
    dropped["no_volume"] = int(no_volume.sum())
    if dropped["no_volume"]:
        cand = cand.filter(~no_volume)
        costs = {d: c.filter(~no_volume) for d, c in costs.items()}
    if cand.is_empty():
        reasons = ", ".join(f"{r} {n}" for r, n in dropped.items() if n)
        raise ValueError(f"no candidate trades: {signals.height} signals, all dropped ({reasons})")

    def matrix(prefix: str) -> np.ndarray:
        return cand.select([f"__{prefix}{k}" for k in range(1, h + 1)]).to_numpy().astype(np.float64)

    high, low, open_, close_us = matrix("h"), matrix("l"), matrix("o"), matrix("t").astype(np.int64)
    exit_close = cand["__exit"].to_numpy().astype(np.float64)
    atr = cand["__atr"].to_numpy().astype(np.float64)
    tps = config.take_profit_atr.model_dump()
    sls = config.stop_loss_atr.model_dump()
    outcomes = {}
    for d in (1, -1):
        for tp in (None, *TAKE_PROFIT_STYLES):
            for sl in (None, *STOP_LOSS_STYLES):
                outcomes[(d, tp, sl)] = exit_outcomes(high, low, open_, exit_close, close_us, atr, d,
                                                      tps[tp] if tp else None, sls[sl] if sl else None)
    frame = cand.select(
        "symbol", "timestamp", "signal", "score", "confidence", "agreement", "level", *REGIME_COLUMNS,
        pl.col("__atr").alias("atr_frac"), "trend_strength_signed", "momentum_score",
        costs[1]["notional"],
    ).with_columns(
        pl.col("confidence").cast(pl.Float64).fill_null(0.0).clip(0.0, 1.0),
        pl.col("agreement").cast(pl.Float64).fill_null(0.0).clip(0.0, 1.0),
        pl.col("level").cast(pl.String).fill_null("strong"),
    )
    fixed = (costs[1]["fee_bps"] + costs[1]["half_spread_bps"] + costs[1]["slippage_bps"]).to_numpy()
    trades = ReplayTrades(
        frame=frame, config=config, timeframe_seconds=tf, signals=signals.height, dropped=dropped,
        decision_us=frame["timestamp"].dt.epoch("us").to_numpy() + tf_us,  # decided at the bar's close
        horizon_exit_us=close_us[:, -1], outcomes=outcomes, fixed_bps=fixed.astype(np.float64),
        impact_bps=costs[1]["impact_bps"].to_numpy().astype(np.float64),
        funding_bps={d: costs[d]["funding_bps"].to_numpy().astype(np.float64) for d in (1, -1)},
    )
    trades.columns = {c: frame[c].to_numpy() for c in frame.columns if c != "timestamp"}
    return trades


# ---- policies -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionContext:
    """What a policy sees before candidate ``index``: the market labels, the sizer's features, the book."""

    index: int
    market_regime: str
    volatility_level: str
    liquidity_level: str
    recent_performance: str
    features: Mapping[str, Any]
    book: SizingContext


class ReplayPolicy(ABC):
    """A policy in the replay: picks a strategy and a clamped sizing per candidate; may learn from outcomes."""

    name = "policy"
    exits = True  # False: every trade is held to the horizon (no take-profit, no stop-loss)
    learns = False

    @abstractmethod
    def decide(self, ctx: DecisionContext) -> tuple[str, SizingDecision]:
        """The strategy and the clamped sizing for one candidate trade."""

    def closed(self, event: Mapping[str, Any]) -> None:
        """A trade this policy opened has closed (its ``trade.closed`` event)."""

    def skipped(self, ctx: DecisionContext, decision: SizingDecision, reward: float) -> None:
        """The sizing said no trade (SKIP or the clamp); ``reward`` as the sizing reward of nothing happening."""


class FixedSizePolicy(ReplayPolicy):
    """The baseline without learning: follow the signal (trend_follow) at multiplier 1, leverage 1, held to the
    horizon, through the same clamp."""

    name = "fixed_size"
    exits = False

    def __init__(self, clamp: SafetyClamp):
        self.clamp = clamp

    def decide(self, ctx: DecisionContext) -> tuple[str, SizingDecision]:
        return "trend_follow", self.clamp.apply(RawSizing(1.0, 1.0), ctx.book, agent=self.name)


class RandomPolicy(ReplayPolicy):
    """Seeded uniform choices over the agent's action space: a strategy and a sizer action, through the clamp."""

    name = "random"

    def __init__(self, clamp: SafetyClamp, *, sizer: str, seed: int, dqn_defaults: RawSizing | None = None):
        if sizer not in ("qtable", "dqn"):
            raise ValueError(f"sizer must be 'qtable' or 'dqn', got {sizer!r}")
        self.clamp = clamp
        self.sizer = sizer
        self.rng = np.random.default_rng(seed)
        self.dqn_defaults = dqn_defaults or RawSizing(1.0, 1.0)

    def decide(self, ctx: DecisionContext) -> tuple[str, SizingDecision]:
        strategy = STRATEGIES[int(self.rng.integers(len(STRATEGIES)))]
        if self.sizer == "qtable":
            action = int(self.rng.integers(len(QTABLE_ACTIONS)))
            raw = RawSizing(*QTABLE_ACTIONS[action])
        else:
            action = int(self.rng.integers(len(DQN_ACTIONS)))
            d = self.dqn_defaults
            raw = RawSizing(DQN_ACTIONS[action][1], d.leverage, d.take_profit, d.stop_loss)
        return strategy, self.clamp.apply(raw, ctx.book, agent=self.name, action=action)


class AgentPolicy(ReplayPolicy):
    """The meta-strategy agent and a sizer; ``learn`` makes them learn every outcome as it becomes known (a
    closed trade through the agents' own ``experience`` of its ``trade.closed`` event; a skip as a sizing
    experience), recording TD errors (Q-tables) or the DQN's loss."""

    name = "agent"

    def __init__(self, meta: MetaStrategyAgent, sizer, *, rewards: RewardEngine, explore: bool, learn: bool):
        self.meta, self.sizer, self.rewards = meta, sizer, rewards
        self.explore, self.learns = explore, learn
        self.losses: dict[str, list[float]] = {"meta": [], "sizing": []}

    def decide(self, ctx: DecisionContext) -> tuple[str, SizingDecision]:
        state = self.meta.state(ctx.market_regime, ctx.volatility_level, ctx.liquidity_level,
                                ctx.recent_performance)
        strategy = self.meta.act(state, explore=self.explore)
        return strategy, self.sizer.decide(ctx.features, ctx.book, explore=self.explore)

    def closed(self, event: Mapping[str, Any]) -> None:
        if not self.learns:
            return
        meta_exp = self.meta.experience(event, self.rewards)
        error = self.meta.update(meta_exp.state, meta_exp.strategy, meta_exp.reward, won=meta_exp.won,
                                 next_state=meta_exp.next_state)
        self.losses["meta"].append(abs(error))
        self._learn_sizing(self.sizer.experience(event, self.rewards))

    def skipped(self, ctx: DecisionContext, decision: SizingDecision, reward: float) -> None:
        if self.learns:
            self._learn_sizing(SizingExperience(dict(ctx.features), decision.action, reward, decision.fine_tune))

    def _learn_sizing(self, exp: SizingExperience) -> None:
        if isinstance(self.sizer, DQNSizer):
            steps = self.sizer.steps
            self.sizer.learn([exp])
            if self.sizer.steps > steps:
                self.losses["sizing"].append(float(self.sizer.last_loss["q_loss"]))
        else:
            self.losses["sizing"].append(abs(self.sizer.update(exp.features, exp.action, exp.reward,
                                                               exp.next_features)))


# ---- the replay ---------------------------------------------------------------------------------------
def performance_label(outcomes: Sequence[bool], config: MetaConfig) -> str:
    """GOOD / NEUTRAL / POOR from the last outcomes, by ``MetaStrategyAgent.recent_performance``'s rule."""
    if len(outcomes) < config.min_performance_trades:
        return "NEUTRAL"
    rate = sum(outcomes) / len(outcomes)
    if rate >= config.good_win_rate:
        return "GOOD"
    if rate <= config.poor_win_rate:
        return "POOR"
    return "NEUTRAL"


@dataclass
class PlayResult:
    """One pass of a policy over candidates."""

    policy: str
    rows: np.ndarray  # candidate indices played, in order
    returns: np.ndarray  # account return per candidate (0 when not traded)
    opened: np.ndarray  # bool per candidate
    stakes: np.ndarray  # f per candidate (0 when not traded)
    events: list[dict[str, Any]]  # trade.closed events, in exit order
    meta_rewards: list[float]
    sizing_rewards: list[float]
    guardrails: dict[str, int]
    strategies: dict[str, int]
    curve_us: np.ndarray  # exit times of the closed trades
    equity: np.ndarray  # account equity after each closed trade
    closed_returns: np.ndarray  # account return of each closed trade, in exit order


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=int(us))


def _iso(us: int) -> str:
    return _utc(us).isoformat().replace("+00:00", "Z")


def play(trades: ReplayTrades, rows: np.ndarray, policy: ReplayPolicy, *, risk_mode: RiskMode,
         meta_config: MetaConfig | None = None, rewards: RewardEngine | None = None, tag: str = "") -> PlayResult:
    """Play ``policy`` over candidates ``rows`` in decision order (see the module doc); a trade closes (and is
    learnt, when the policy learns) once the replay's clock passes its exit."""
    rewards = rewards or default_engine()
    meta_config = meta_config or (policy.meta.config if isinstance(policy, AgentPolicy) else MetaConfig())
    cfg = trades.config
    base = cfg.base_position_pct / 100.0
    rr = {}
    tps, sls = cfg.take_profit_atr.model_dump(), cfg.stop_loss_atr.model_dump()
    c = trades.columns
    rows = np.asarray(rows, dtype=np.int64)
    returns = np.zeros(rows.size)
    opened = np.zeros(rows.size, dtype=bool)
    stakes = np.zeros(rows.size)
    events: list[dict[str, Any]] = []
    meta_rewards: list[float] = []
    sizing_rewards: list[float] = []
    guardrails: dict[str, int] = {}
    strategies = dict.fromkeys(STRATEGIES, 0)
    recent: deque[bool] = deque(maxlen=meta_config.performance_window)
    by_strategy = {s: deque(maxlen=meta_config.win_rate_window) for s in STRATEGIES}
    wins: deque[bool] = deque(maxlen=WIN_WINDOW)
    book: list[tuple[int, int, dict[str, Any]]] = []  # heap of (exit_us, seq, open trade)
    seq = itertools.count()
    equity, peak = 1.0, 1.0
    curve_us, curve, closed_returns = [], [], []
    exposure = risk = 0.0

    def close_until(now_us: int) -> None:
        nonlocal equity, peak, exposure, risk
        while book and book[0][0] <= now_us:
            _, _, trade = heapq.heappop(book)
            exposure -= trade["stake"]
            risk -= trade["risk_pct"]
            won = trade["account_return"] > 0
            equity *= 1.0 + trade["account_return"]
            peak = max(peak, equity)
            curve_us.append(trade["exit_us"])
            curve.append(equity)
            closed_returns.append(trade["account_return"])
            recent.append(won)
            wins.append(won)
            by_strategy[trade["strategy"]].append(won)
            events.append(trade["event"])
            policy.closed(trade["event"])

    for j, i in enumerate(rows):
        i = int(i)
        now = int(trades.decision_us[i])
        close_until(now)
        take_profit, stop_loss = "balanced", "medium"
        if isinstance(policy, AgentPolicy) and isinstance(policy.sizer, DQNSizer):
            take_profit, stop_loss = policy.sizer.config.take_profit, policy.sizer.config.stop_loss
        key = (take_profit, stop_loss)
        if key not in rr:
            rr[key] = tps[take_profit] / sls[stop_loss]
        open_positions = len(book)
        features = {
            "market_regime": c["regime"][i], "volatility_level": c["volatility_level"][i],
            "volatility_regime": c["volatility_level"][i],
            "signal_confidence": float(c["confidence"][i]), "entry_quality": float(c["agreement"][i]),
            "trend_strength": float(c["trend_strength_signed"][i]), "momentum_score": float(c["momentum_score"][i]),
            "risk_reward_ratio": rr[key],
            "current_exposure_pct": max(0.0, exposure) * base * 100.0,
            "max_position_pct": max((t[2]["stake"] for t in book), default=0.0) * base * 100.0,
            "win_rate_recent": sum(wins) / len(wins) if wins else 0.5,
            "drawdown_pct": (1.0 - equity / peak) * 100.0,
            "remaining_daily_risk": max(0.0, risk_mode.max_risk_pct_per_trade * risk_mode.max_positions - risk),
        }
        ctx = DecisionContext(i, c["regime"][i], c["volatility_level"][i], c["liquidity_level"][i],
                              performance_label(recent, meta_config), features,
                              SizingContext(open_positions=open_positions))
        strategy, decision = policy.decide(ctx)
        for name in decision.guardrails:
            guardrails[name] = guardrails.get(name, 0) + 1
        if not decision.open:
            policy.skipped(ctx, decision, rewards.sizing(0.0, 0.0, 0.0, guardrails=decision.guardrails))
            continue
        rule = STRATEGY_RULES[strategy]
        strategies[strategy] += 1
        size = rule.weak_size if c["level"][i] == "weak" else rule.size
        stake = decision.size_multiplier * decision.leverage * size
        direction = int(c["signal"][i]) * rule.direction
        exits = (decision.take_profit, decision.stop_loss) if policy.exits else (None, None)
        gross, held, hit_tp, hit_sl, adverse, exit_us = trades.outcome(i, direction, *exits)
        cost = trades.cost_bps(i, direction, stake)
        net = gross - cost * 1e-4
        pnl_pct = 100.0 * stake * net
        drawdown_pct = 100.0 * stake * adverse
        hours = held * trades.timeframe_seconds / 3600.0
        won = pnl_pct > 0
        keep = meta_config.win_rate_window - 1  # the strategy's last outcomes and this one, as the agent counts them
        previous = list(by_strategy[strategy])[-keep:] if keep else []
        win_rate = (sum(previous) + won) / (len(previous) + 1)
        account_return = base * stake * net
        meta_rewards.append(rewards.meta_strategy(pnl_pct, hours, drawdown_pct, win_rate))
        sizing_rewards.append(rewards.sizing(pnl_pct, hours, drawdown_pct, hit_tp, hit_sl,
                                             guardrails=decision.guardrails))
        event = {
            "event_id": f"replay:{policy.name}:{tag}:{i}", "event_type": "trade.closed",
            "session_id": f"replay:{policy.name}", "timestamp": _iso(exit_us), "symbol": str(c["symbol"][i]),
            "pnl_pct": pnl_pct, "duration_hours": hours, "max_drawdown_pct": drawdown_pct,
            "hit_tp": hit_tp, "hit_sl": hit_sl,
            "payload": {
                "meta_strategy": {"strategy": strategy, "market_regime": ctx.market_regime,
                                  "volatility_level": ctx.volatility_level, "liquidity_level": ctx.liquidity_level,
                                  "recent_performance": ctx.recent_performance, "win_rate": win_rate},
                "sizing": decision.telemetry(features),
                "replay": {"decided_at": _iso(now), "signal": int(c["signal"][i]), "direction": direction,
                           "stake": stake, "gross_return": gross, "cost_bps": cost, "account_return": account_return,
                           "bars_held": held, "take_profit": exits[0], "stop_loss": exits[1]},
            },
        }
        returns[j], opened[j], stakes[j] = account_return, True, stake
        exposure += stake
        risk += decision.risk_pct
        heapq.heappush(book, (exit_us, next(seq), {"stake": stake, "risk_pct": decision.risk_pct, "exit_us": exit_us,
                                                   "account_return": account_return, "strategy": strategy,
                                                   "event": event}))
    close_until(np.iinfo(np.int64).max)
    return PlayResult(policy.name, rows, returns, opened, stakes, events, meta_rewards, sizing_rewards, guardrails,
                      strategies, np.asarray(curve_us, dtype=np.int64), np.asarray(curve, dtype=np.float64),
                      np.asarray(closed_returns, dtype=np.float64))


# ---- metrics, comparison, verdict ---------------------------------------------------------------------
def _mean(values: Sequence[float] | np.ndarray) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()) if arr.size else None


def policy_metrics(result: PlayResult) -> dict[str, Any]:
    """trades, total net return, mean net return per trade (bps of equity), Sharpe per trade, max drawdown,
    hit rate, mean rewards, mean stake, what the clamp cut and the strategies used."""
    r = result.returns[result.opened]
    sharpe = float(r.mean() / r.std(ddof=1)) if r.size > 1 and r.std(ddof=1) > 0 else None
    curve = result.equity
    return {
        "candidates": int(result.rows.size),
        "trades": int(r.size),
        "total_net_return": float(curve[-1] - 1.0) if curve.size else 0.0,
        "mean_net_bps": float(r.mean() * 1e4) if r.size else None,
        "sharpe_per_trade": sharpe,
        "max_drawdown": max_drawdown(result.closed_returns) if curve.size else 0.0,
        "hit_rate": float((r > 0).mean()) if r.size else None,
        "mean_meta_reward": _mean(result.meta_rewards),
        "mean_sizing_reward": _mean(result.sizing_rewards),
        "mean_stake": float(result.stakes[result.opened].mean()) if r.size else None,
        "guardrails": dict(sorted(result.guardrails.items())),
        "strategies": {k: v for k, v in result.strategies.items() if v},
    }


def paired_difference(agent: np.ndarray, baseline: np.ndarray, *, seed: int, n_boot: int = 2000) -> dict[str, Any]:
    """Mean per-candidate difference of account returns (bps of equity) with a bootstrap 95 % interval
    (candidates resampled with replacement, seeded)."""
    diff = (np.asarray(agent, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)) * 1e4
    if diff.size == 0:
        raise ValueError("no held-out candidates to compare")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # in blocks: n_boot x n indices at once would be large
        stop = min(n_boot, start + 256)
        means[start:stop] = diff[rng.integers(diff.size, size=(stop - start, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean_diff_bps": float(diff.mean()), "ci95_bps": [float(low), float(high)],
            "total_diff_bps": float(diff.sum()), "n": int(diff.size), "bootstrap": int(n_boot)}


def verdict(comparisons: Mapping[str, Mapping[str, Any]],
            metrics: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The verdict from the paired differences: per baseline "beats", "loses to" or "ties with" (the sign of
    the mean difference), "significant" when the 95 % interval excludes 0; with ``metrics`` (per policy), what
    each made on its own, and whether the agent lost money (beating losing baselines is no profit)."""
    labels = {"fixed_size": "fixed-size", "random": "random"}
    parts, outcomes = [], {}
    for name, comp in comparisons.items():
        mean, (low, high) = comp["mean_diff_bps"], comp["ci95_bps"]
        outcome = "beats" if mean > 0 else "loses to" if mean < 0 else "ties with"
        outcomes[name] = outcome
        significant = low > 0 or high < 0
        parts.append(f"{outcome} {labels.get(name, name)} by {mean:+.2f} bps of equity per candidate trade "
                     f"(95% CI {low:+.2f} .. {high:+.2f}, {'significant' if significant else 'not significant'})")
    kinds = set(outcomes.values())
    if kinds == {"beats"}:
        head = "beats both baselines" if len(outcomes) == 2 else "beats the baseline"
    elif kinds == {"loses to"}:
        head = "loses to both baselines" if len(outcomes) == 2 else "loses to the baseline"
    else:
        head = ", ".join(f"{o} {labels.get(n, n)}" for n, o in outcomes.items())
    text = f"the agent {head}: " + "; ".join(parts)
    agent = (metrics or {}).get("agent")
    if agent is not None:
        others = ", ".join(f"{labels.get(n, n)} {metrics[n]['total_net_return']:+.2%}" for n in comparisons
                           if n in metrics)
        text += (f"; on its own the agent made {agent['total_net_return']:+.2%} net over {agent['trades']} trades "
                 f"of {agent['candidates']} candidates ({others})")
        if agent["total_net_return"] < 0:
            text += ": it lost money"
    return text


@dataclass
class ReplayEvaluation:
    metrics: dict[str, dict[str, Any]]  # per policy
    comparisons: dict[str, dict[str, Any]]  # agent vs each baseline
    verdict: str
    results: dict[str, PlayResult]

    def table(self) -> pl.DataFrame:
        """One row per policy, for markdown."""
        rows = []
        for name, m in self.metrics.items():
            comp = self.comparisons.get(name)
            rows.append({
                "policy": name, "trades": m["trades"], "total_net_return": m["total_net_return"],
                "mean_net_bps": m["mean_net_bps"], "sharpe_per_trade": m["sharpe_per_trade"],
                "max_drawdown": m["max_drawdown"], "hit_rate": m["hit_rate"],
                "mean_meta_reward": m["mean_meta_reward"], "mean_sizing_reward": m["mean_sizing_reward"],
                "agent_minus_this_bps": None if comp is None else comp["mean_diff_bps"],
                "ci95": None if comp is None else f"{comp['ci95_bps'][0]:+.2f} .. {comp['ci95_bps'][1]:+.2f}",
            })
        return pl.DataFrame(rows, schema_overrides={"mean_net_bps": pl.Float64, "sharpe_per_trade": pl.Float64,
                                                    "hit_rate": pl.Float64, "mean_meta_reward": pl.Float64,
                                                    "mean_sizing_reward": pl.Float64,
                                                    "agent_minus_this_bps": pl.Float64, "ci95": pl.String})

    def curves(self) -> pl.DataFrame:
        """``policy, timestamp, equity`` of each policy's account over its closed held-out trades."""
        frames = []
        for name, result in self.results.items():
            frames.append(pl.DataFrame({
                "policy": [name] * result.equity.size,
                "timestamp": pl.Series(result.curve_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "equity": result.equity,
            }))
        return pl.concat(frames) if frames else pl.DataFrame(
            schema={"policy": pl.String, "timestamp": pl.Datetime("us", "UTC"), "equity": pl.Float64})


def evaluate(trades: ReplayTrades, rows: np.ndarray, agent: AgentPolicy, *, risk_mode: RiskMode, seed: int,
             n_boot: int = 2000, rewards: RewardEngine | None = None,
             log: Callable[[str], None] = lambda _m: None) -> ReplayEvaluation:
    """The agent (greedy, frozen) against the fixed-size and random baselines on the same candidates ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("the held-out set is empty: no candidate trades to evaluate on")
    rewards = rewards or agent.rewards
    frozen = AgentPolicy(agent.meta, agent.sizer, rewards=rewards, explore=False, learn=False)
    clamp = agent.sizer.clamp
    dqn_defaults = None
    if isinstance(agent.sizer, DQNSizer):
        cfg = agent.sizer.config
        dqn_defaults = RawSizing(1.0, cfg.default_leverage, cfg.take_profit, cfg.stop_loss)
    policies: list[ReplayPolicy] = [
        frozen, FixedSizePolicy(clamp),
        RandomPolicy(clamp, sizer="dqn" if isinstance(agent.sizer, DQNSizer) else "qtable", seed=seed + 1,
                     dqn_defaults=dqn_defaults),
    ]
    results = {p.name: play(trades, rows, p, risk_mode=risk_mode, meta_config=agent.meta.config, rewards=rewards,
                            tag="heldout") for p in policies}
    metrics = {name: policy_metrics(result) for name, result in results.items()}
    comparisons = {name: paired_difference(results["agent"].returns, results[name].returns, seed=seed + 2,
                                           n_boot=n_boot) for name in BASELINES}
    text = verdict(comparisons, metrics)
    log(f"held-out replay on {rows.size} candidates: {text}")
    return ReplayEvaluation(metrics, comparisons, text, results)


__all__ = [
    "ACTIONS", "BASELINES", "DROP_REASONS", "POLICIES", "SIGNALS_TABLE", "STRATEGY_RULES", "AgentPolicy",
    "DecisionContext", "FixedSizePolicy", "Outcome", "PlayResult", "RandomPolicy", "ReplayConfig", "ReplayEvaluation",
    "ReplayPolicy", "ReplayTrades", "StrategyRule", "build_trades", "evaluate", "exit_outcomes", "load_replay_inputs",
    "paired_difference", "performance_label", "play", "policy_metrics", "verdict",
]
