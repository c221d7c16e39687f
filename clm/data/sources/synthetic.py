"""Deterministic synthetic market: regime-switching bars with known ground truth.

Real data never says which regime it was in; this source does, so regime detection, drift
monitoring and liquidity filtering can be tested against the truth. Everything is a pure function
of the config, and every random stream is keyed by (seed, role, symbol index), never by how much
else is generated. That buys two properties the tests pin down:

* the first k symbols of an n-symbol run equal a k-symbol run (symbol streams are independent);
* the first d days of a longer run equal a d-day run (every transformation is causal and every
  stream is drawn front to back), so a live demo can "append" days by regenerating.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import NamedTuple

import numpy as np
import polars as pl
from scipy.signal import lfilter

from clm.data.schema import QUARANTINE_SCHEMA, RAW_BAR_SCHEMA, REGIME_SCHEMA, REGIMES
from clm.data.sources.base import SourceBatch

SECONDS_PER_DAY = 86_400
MAX_SYMBOLS = 5000
MAX_DAYS = 3660
MAX_SEED = 2**63 - 1
_TIMEFRAME_PATTERN = re.compile(r"^([1-9][0-9]*)([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": SECONDS_PER_DAY}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _parse_timeframe(label: str, value: object) -> int:
    """Only timeframes that tile a UTC day are accepted, so every bar is aligned to midnight."""
    allowed = '"<n>m", "<n>h" or "<n>d" whose length divides one day, e.g. 1m, 5m, 15m, 1h, 4h, 1d'
    if not isinstance(value, str):
        raise ValueError(f"{label}={value!r} is not a timeframe; expected {allowed}")
    match = _TIMEFRAME_PATTERN.match(value)
    if match is None:
        raise ValueError(f"{label}={value!r} is not a timeframe; expected {allowed}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > SECONDS_PER_DAY or SECONDS_PER_DAY % seconds != 0:
        raise ValueError(f"{label}={value!r} does not divide one day; expected {allowed}")
    return seconds


def _check_int(label: str, value: object, low: int, high: int | None) -> int:
    upper = "" if high is None else f" to {high}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{label}={value!r} is not an integer; expected an integer from {low}{upper}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{label}={value!r} is out of range; expected an integer from {low}{upper}")
    return value


def _env_int(name: str, raw: str, low: int, high: int | None) -> int:
    """Parse an integer variable; errors quote the raw text the user actually wrote."""
    upper = "" if high is None else f" to {high}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; expected an integer from {low}{upper}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={raw!r} is out of range; expected an integer from {low}{upper}")
    return value


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; two equal configs always generate identical data."""

    symbols: int = 10
    days: int = 30
    timeframe: str = "5m"
    seed: int = 42
    start: date = date(2024, 1, 1)
    # From this day index on the market switches to a panic-heavy regime mix (a planted drift).
    regime_shift_day: int | None = None

    def __post_init__(self) -> None:
        _check_int("symbols", self.symbols, 1, MAX_SYMBOLS)
        _check_int("days", self.days, 1, MAX_DAYS)
        _parse_timeframe("timeframe", self.timeframe)
        _check_int("seed", self.seed, 0, MAX_SEED)
        # datetime is a date subclass; a time of day would break midnight alignment.
        if isinstance(self.start, datetime) or not isinstance(self.start, date):
            raise ValueError(f"start={self.start!r} is not a date; expected a datetime.date (no time)")
        if self.regime_shift_day is not None:
            _check_int("regime_shift_day", self.regime_shift_day, 0, self.days - 1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SyntheticConfig:
        """Read ``CLM_SYNTH_*`` variables; unset or empty ones keep the defaults."""
        env = os.environ if environ is None else environ

        def raw(name: str) -> str | None:
            value = env.get(name)
            return None if value is None or value.strip() == "" else value

        symbols, days, timeframe = cls.symbols, cls.days, cls.timeframe
        seed, start, shift_day = cls.seed, cls.start, cls.regime_shift_day
        if (value := raw("CLM_SYNTH_SYMBOLS")) is not None:
            symbols = _env_int("CLM_SYNTH_SYMBOLS", value, 1, MAX_SYMBOLS)
        if (value := raw("CLM_SYNTH_DAYS")) is not None:
            days = _env_int("CLM_SYNTH_DAYS", value, 1, MAX_DAYS)
        if (value := raw("CLM_SYNTH_TIMEFRAME")) is not None:
            timeframe = value.strip()
            _parse_timeframe("CLM_SYNTH_TIMEFRAME", timeframe)
        if (value := raw("CLM_SYNTH_SEED")) is not None:
            seed = _env_int("CLM_SYNTH_SEED", value, 0, MAX_SEED)
        if (value := raw("CLM_SYNTH_START")) is not None:
            try:
                start = date.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"CLM_SYNTH_START={value!r} is not a date; expected YYYY-MM-DD") from None
        if (value := raw("CLM_SYNTH_SHIFT_DAY")) is not None and value.strip().lower() != "none":
            shift_day = _env_int("CLM_SYNTH_SHIFT_DAY", value, 0, days - 1)
        return cls(symbols, days, timeframe, seed, start, shift_day)

    @property
    def timeframe_seconds(self) -> int:
        return _parse_timeframe("timeframe", self.timeframe)

    @property
    def bars_per_symbol(self) -> int:
        return self.days * (SECONDS_PER_DAY // self.timeframe_seconds)


def synthetic_symbols(n: int) -> list[str]:
    """Names depend only on the index (no width that grows with ``n``), keeping runs prefix-stable."""
    _check_int("n", n, 0, None)
    return [f"SYN{k:03d}USD" for k in range(n)]


# --------------------------------------------------------------------------------------------
# Market model parameters
# --------------------------------------------------------------------------------------------


class _Regime(NamedTuple):
    mean_hours: float  # mean segment length in the base regime chain
    drift_per_day: float  # log drift of the common factor
    vol_mult: float  # multiplies every symbol's volatility
    loading: float  # correlation of each symbol with the market factor
    volume_mult: float
    spread_mult: float
    market_jumps_per_hour: float
    idio_jumps_per_hour: float


_REGIME_PARAMS: dict[str, _Regime] = {
    "trend_up": _Regime(16.0, 0.06, 1.0, 0.55, 1.2, 1.0, 0.0, 0.01),
    "trend_down": _Regime(12.0, -0.06, 1.1, 0.60, 1.3, 1.1, 0.0, 0.01),
    "range": _Regime(20.0, 0.0, 0.7, 0.30, 0.8, 0.9, 0.0, 0.01),
    "panic": _Regime(2.5, -0.30, 4.0, 0.95, 3.0, 2.5, 0.6, 0.3),
    "illiquid": _Regime(7.0, 0.0, 0.8, 0.25, 0.25, 4.0, 0.0, 0.01),
}
assert tuple(_REGIME_PARAMS) == REGIMES
_PANIC = REGIMES.index("panic")
_RANGE = REGIMES.index("range")
_LAST_REGIME = len(REGIMES) - 1  # guards searchsorted against cumulative sums a hair below 1

# Embedded jump chain (no self transitions), rows/columns in REGIMES order.
_BASE_TRANSITIONS = np.array(
    [
        [0.00, 0.25, 0.50, 0.10, 0.15],
        [0.25, 0.00, 0.35, 0.25, 0.15],
        [0.35, 0.30, 0.00, 0.10, 0.25],
        [0.10, 0.30, 0.40, 0.00, 0.20],
        [0.30, 0.25, 0.35, 0.10, 0.00],
    ]
)
# After the planted shift: panic and illiquidity dominate and panics last longer.
_SHIFT_TRANSITIONS = np.array(
    [
        [0.00, 0.25, 0.10, 0.50, 0.15],
        [0.05, 0.00, 0.10, 0.60, 0.25],
        [0.05, 0.25, 0.00, 0.50, 0.20],
        [0.05, 0.30, 0.10, 0.00, 0.55],
        [0.05, 0.25, 0.05, 0.65, 0.00],
    ]
)
_SHIFT_MEAN_HOURS = np.array([4.0, 8.0, 4.0, 6.0, 6.0])

_RANGE_REVERSION_HALF_LIFE_H = 2.0  # pull of the price toward its anchor
_RANGE_ANCHOR_HALF_LIFE_H = 24.0  # how fast the anchor itself follows the price
_PRICE_ANCHOR_HALF_LIFE_H = 365 * 24.0  # slow pull of each log price toward its base level
_VOL_SHOCK_HALF_LIFE_H = 12.0  # GARCH persistence, expressed in hours so it scales with the timeframe
_GARCH_BLOCK = 128

# Roles in the seed tree: SeedSequence(seed, spawn_key=(role, ...)).
_MARKET_ROLE, _SYMBOL_ROLE = 0, 1
_REGIME_BASE, _REGIME_SHIFTED, _MARKET_SHOCK, _MARKET_JUMP_U, _MARKET_JUMP_SIZE = range(5)
(
    _SYM_PARAMS,
    _SYM_SHOCK,
    _SYM_JUMP_U,
    _SYM_JUMP_SIZE,
    _SYM_GAP,
    _SYM_HIGH_U,
    _SYM_LOW_U,
    _SYM_VOLUME,
    _SYM_SPREAD,
) = range(9)

_CHUNK_CELLS = 1_000_000  # symbols x bars processed at once; bounds temporary memory


def _regime_array(field: str) -> np.ndarray:
    return np.array([getattr(_REGIME_PARAMS[name], field) for name in REGIMES], dtype=np.float64)


def _time_shares(transitions: np.ndarray, mean_hours: np.ndarray) -> np.ndarray:
    """Long-run fraction of time in each regime of a semi-Markov chain."""
    eigenvalues, eigenvectors = np.linalg.eig(transitions.T)
    visits = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1.0))])
    visits = visits / visits.sum()
    time = visits * mean_hours
    return time / time.sum()


_BASE_MEAN_HOURS = _regime_array("mean_hours")
_BASE_SHARES = _time_shares(_BASE_TRANSITIONS, _BASE_MEAN_HOURS)


def _drift_neutral(shares: np.ndarray) -> np.ndarray:
    """Remove a chain's long-run drift so prices stay plausible over a decade; panics still crash."""
    drift = _regime_array("drift_per_day")
    return drift - float(shares @ drift)


def _grinding_bear(shares: np.ndarray, drift_per_day: float) -> np.ndarray:
    """Panic drift for the shifted mix, chosen so the mix loses ``drift_per_day``.

    Left unscaled, a panic-heavy mix would lose ~12% a day and wipe prices out within weeks;
    shrinking only the panic drift keeps every regime's sign, so the labels stay truthful.
    """
    drift = _BASE_DRIFT_PER_DAY.copy()
    others = float(shares @ drift) - shares[_PANIC] * drift[_PANIC]
    drift[_PANIC] = (drift_per_day - others) / shares[_PANIC]
    assert drift[_PANIC] < 0.0
    return drift


_BASE_DRIFT_PER_DAY = _drift_neutral(_BASE_SHARES)
_SHIFT_DRIFT_PER_DAY = _grinding_bear(_time_shares(_SHIFT_TRANSITIONS, _SHIFT_MEAN_HOURS), -0.02)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _regime_path(config: SyntheticConfig, n_bars: int, bar_hours: float) -> np.ndarray:
    """Regime index at each bar open, from a continuous-time chain shared by every timeframe."""
    total_hours = n_bars * bar_hours
    shift_hours = None
    if config.regime_shift_day is not None:
        shift_hours = config.regime_shift_day * 24.0
    base_end = total_hours if shift_hours is None else min(shift_hours, total_hours)

    def segments(
        rng: np.random.Generator, state: int, start: float, stop: float, transitions, mean_hours
    ) -> tuple[list[float], list[int]]:
        cumulative = np.cumsum(transitions, axis=1)
        starts, states = [], []
        t = start
        while t < stop:
            u_duration, u_next = rng.random(2)
            starts.append(t)
            states.append(state)
            t += -math.log1p(-u_duration) * mean_hours[state]
            state = min(int(np.searchsorted(cumulative[state], u_next, side="right")), _LAST_REGIME)
        return starts, states

    base_rng = _rng(config.seed, _MARKET_ROLE, _REGIME_BASE)
    first = min(int(np.searchsorted(np.cumsum(_BASE_SHARES), base_rng.random(), side="right")), _LAST_REGIME)
    starts, states = segments(base_rng, first, 0.0, base_end, _BASE_TRANSITIONS, _BASE_MEAN_HOURS)
    if shift_hours is not None and shift_hours < total_hours:
        shifted_rng = _rng(config.seed, _MARKET_ROLE, _REGIME_SHIFTED)
        more_starts, more_states = segments(
            shifted_rng, _PANIC, shift_hours, total_hours, _SHIFT_TRANSITIONS, _SHIFT_MEAN_HOURS
        )
        starts += more_starts
        states += more_states
    bar_open_hours = np.arange(n_bars, dtype=np.float64) * bar_hours
    segment_of_bar = np.searchsorted(np.asarray(starts), bar_open_hours, side="right") - 1
    return np.asarray(states, dtype=np.int8)[segment_of_bar]


def _garch_params(bar_hours: float) -> tuple[float, float]:
    """(alpha, beta) with a fixed half-life in hours and a finite fourth moment at every timeframe."""
    persistence = 0.5 ** (bar_hours / _VOL_SHOCK_HALF_LIFE_H)
    # alpha^2 < (1 - persistence^2) / 2 keeps the fourth moment finite; 70% of it clusters visibly.
    alpha = min(0.7 * math.sqrt((1.0 - persistence**2) / 2.0), 0.6 * persistence)
    return alpha, persistence - alpha


def _garch_variance(shocks: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Unit-mean GARCH(1,1) variance v_t = w + (alpha z_{t-1}^2 + beta) v_{t-1} along the last axis.

    The recursion is linear in v with a time-varying coefficient, so inside fixed-size blocks it has
    a closed form via cumulative log-products; only the carry between blocks is sequential. Blocks
    keep the products far from under/overflow, which a single cumprod over 10^5 bars would not.
    """
    omega = 1.0 - alpha - beta
    squeeze = shocks.ndim == 1
    z = np.atleast_2d(shocks)
    rows, n = z.shape
    blocks = -(-n // _GARCH_BLOCK)
    # a_0 = 1 and no omega at t = 0, with v_{-1} = 1, make v_0 the unconditional variance 1.
    coefficient = np.ones((rows, blocks * _GARCH_BLOCK))
    coefficient[:, 1:n] = alpha * np.square(z[:, :-1]) + beta
    log_products = np.cumsum(np.log(coefficient).reshape(rows, blocks, _GARCH_BLOCK), axis=2)
    del coefficient
    products = np.exp(log_products)  # P_i = prod of a_j for j <= i within the block
    weighted = np.exp(-log_products)
    del log_products
    weighted *= omega
    weighted[:, 0, 0] = 0.0
    # v_i = P_i * carry + P_i * sum_{k <= i} omega_k / P_k
    constant = np.cumsum(weighted, axis=2)
    del weighted
    constant *= products
    carry = np.empty((rows, blocks))
    previous = np.ones(rows)
    for block in range(blocks):
        carry[:, block] = previous
        previous = products[:, block, -1] * previous + constant[:, block, -1]
    products *= carry[:, :, None]
    products += constant
    variance = products.reshape(rows, -1)[:, :n]
    return variance[0] if squeeze else variance


def _range_segments(regimes: np.ndarray) -> list[tuple[int, int]]:
    is_range = np.concatenate(([False], regimes == _RANGE, [False]))
    edges = np.flatnonzero(np.diff(is_range.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _revert_in_ranges(returns: np.ndarray, segments: list[tuple[int, int]], bar_hours: float) -> None:
    """Turn random-walk returns into an OU pull toward an EMA anchor inside range segments.

    With d = price - anchor, d_t = (1-l)(1-k) d_{t-1} + (1-l) r_t and the price moves by
    r_t - k d_{t-1}: a first-order filter per segment, the anchor starting at the entry price.
    """
    k = 1.0 - 0.5 ** (bar_hours / _RANGE_REVERSION_HALF_LIFE_H)
    lam = 1.0 - 0.5 ** (bar_hours / _RANGE_ANCHOR_HALF_LIFE_H)
    for start, stop in segments:
        if stop - start < 2:
            continue
        deviation = lfilter([1.0 - lam], [1.0, -(1.0 - lam) * (1.0 - k)], returns[:, start:stop], axis=1)
        returns[:, start + 1 : stop] -= k * deviation[:, :-1]


class _SymbolTraits(NamedTuple):
    base_price: np.ndarray
    daily_vol: np.ndarray
    beta: np.ndarray
    spread_bps: np.ndarray
    quote_volume_per_day: np.ndarray


def _symbol_traits(seed: int, indices: range) -> _SymbolTraits:
    """Static per-symbol traits. Liquidity tier follows the index so every run has thin symbols."""
    draws = np.array([_rng(seed, _SYMBOL_ROLE, k, _SYM_PARAMS).random(5) for k in indices])
    tier = np.array([k % 8 for k in indices])
    thin = tier == 5
    major = tier == 0

    def log_uniform(u: np.ndarray, low: float, high: float) -> np.ndarray:
        return np.exp(np.log(low) + u * (np.log(high) - np.log(low)))

    spread = np.where(
        thin,
        log_uniform(draws[:, 3], 70.0, 200.0),
        np.where(major, log_uniform(draws[:, 3], 1.0, 2.0), log_uniform(draws[:, 3], 1.5, 8.0)),
    )
    quote_volume = np.where(
        thin,
        log_uniform(draws[:, 4], 2e4, 2e5),
        np.where(major, log_uniform(draws[:, 4], 5e7, 5e8), log_uniform(draws[:, 4], 1e6, 5e7)),
    )
    return _SymbolTraits(
        base_price=log_uniform(draws[:, 0], 0.05, 50_000.0),
        daily_vol=np.where(thin, log_uniform(draws[:, 1], 0.05, 0.09), log_uniform(draws[:, 1], 0.02, 0.06)),
        beta=0.7 + 0.6 * draws[:, 2],
        spread_bps=spread,
        quote_volume_per_day=quote_volume,
    )


def _fill(rows: np.ndarray, seed: int, indices: range, stream: int, kind: str) -> np.ndarray:
    """Each symbol's row comes from its own stream, drawn front to back (prefix-stable in time)."""
    for row, k in enumerate(indices):
        rng = _rng(seed, _SYMBOL_ROLE, k, stream)
        if kind == "normal":
            rng.standard_normal(out=rows[row])
        else:
            rng.random(out=rows[row])
    return rows


class _MarketPath(NamedTuple):
    """Per-bar quantities shared by every symbol."""

    drift: np.ndarray  # log drift per bar
    vol_mult: np.ndarray  # regime vol multiplier x intraday vol seasonality
    loading: np.ndarray  # each symbol's correlation with the market factor
    factor: np.ndarray  # unit-variance GARCH market shock
    factor_variance: np.ndarray
    market_jump: np.ndarray  # jump size in units of each symbol's daily vol (0 on most bars)
    idio_jump_probability: np.ndarray
    volume_mult: np.ndarray  # regime x intraday U-shape
    spread_mult: np.ndarray
    garch: tuple[float, float]


def _market_path(
    config: SyntheticConfig, regimes: np.ndarray, bar_hours: float, bars_per_day: int
) -> _MarketPath:
    n = regimes.size
    garch = _garch_params(bar_hours)
    shocks = _rng(config.seed, _MARKET_ROLE, _MARKET_SHOCK).standard_normal(n)
    variance = _garch_variance(shocks, *garch)
    jump_u = _rng(config.seed, _MARKET_ROLE, _MARKET_JUMP_U).random(n)
    # Zero-mean jumps: they add tail risk and co-movement; the crash itself is the panic drift,
    # which the drift-neutral bookkeeping above accounts for.
    jump_size = _rng(config.seed, _MARKET_ROLE, _MARKET_JUMP_SIZE).normal(0.0, 0.5, n)
    jump_probability = -np.expm1(-_regime_array("market_jumps_per_hour")[regimes] * bar_hours)
    drift_per_day = _BASE_DRIFT_PER_DAY[regimes]
    if config.regime_shift_day is not None:
        shift_bar = config.regime_shift_day * bars_per_day
        drift_per_day[shift_bar:] = _SHIFT_DRIFT_PER_DAY[regimes[shift_bar:]]

    # U-shaped activity over the UTC day, 0.6 + 1.6 (2u - 1)^2 with u the fraction of the day (busy
    # around midnight, quiet at noon), averaged over each bar so 4h and 1d bars keep a daily mean of 1.
    bar_start = (np.arange(n) % bars_per_day) / bars_per_day
    bar_end = bar_start + 1.0 / bars_per_day
    activity = 0.6 + 1.6 * ((2.0 * bar_end - 1.0) ** 3 - (2.0 * bar_start - 1.0) ** 3) / 6.0 * bars_per_day
    activity /= 0.6 + 1.6 / 3.0
    return _MarketPath(
        drift=drift_per_day * (bar_hours / 24.0),
        vol_mult=_regime_array("vol_mult")[regimes] * np.sqrt(activity),
        loading=_regime_array("loading")[regimes],
        factor=np.sqrt(variance) * shocks,
        factor_variance=variance,
        market_jump=np.where(jump_u < jump_probability, jump_size, 0.0),
        idio_jump_probability=-np.expm1(-_regime_array("idio_jumps_per_hour")[regimes] * bar_hours),
        volume_mult=_regime_array("volume_mult")[regimes] * activity,
        spread_mult=_regime_array("spread_mult")[regimes] * activity**-0.3,
        garch=garch,
    )


def _simulate_symbols(
    seed: int,
    indices: range,
    market: _MarketPath,
    range_segments: list[tuple[int, int]],
    bar_hours: float,
    bars_per_day: int,
    out: dict[str, np.ndarray],
) -> None:
    """Simulate a block of symbols into the (symbols x bars) views in ``out``.

    Written with in-place operations because at 5m a block is ~1M cells per array; temporaries
    are what bound the memory of a 500-symbol year.
    """
    rows, n = len(indices), market.drift.size
    traits = _symbol_traits(seed, indices)
    daily_vol = traits.daily_vol[:, None]

    # Returns: loading^2 of each bar's variance is the common factor, the rest idiosyncratic GARCH.
    shocks = _fill(np.empty((rows, n)), seed, indices, _SYM_SHOCK, "normal")
    idio_variance = _garch_variance(shocks, *market.garch)
    mixed = np.sqrt(idio_variance)
    mixed *= shocks
    del shocks
    mixed *= np.sqrt(1.0 - np.square(market.loading))
    mixed += market.loading * market.factor
    bar_vol = daily_vol * math.sqrt(bar_hours / 24.0) * market.vol_mult
    returns = mixed * bar_vol
    activity = np.abs(mixed, out=mixed)  # big moves draw volume
    returns += traits.beta[:, None] * market.drift
    returns += (traits.beta * traits.daily_vol)[:, None] * market.market_jump
    jump_u = _fill(np.empty((rows, n)), seed, indices, _SYM_JUMP_U, "uniform")
    jump_size = _fill(np.empty((rows, n)), seed, indices, _SYM_JUMP_SIZE, "normal")
    jump_size *= 0.3 * daily_vol
    returns += np.where(jump_u < market.idio_jump_probability, jump_size, 0.0)
    del jump_u, jump_size
    _revert_in_ranges(returns, range_segments, bar_hours)
    # A leaky sum instead of a plain cumsum: a year-long half-life toward the base price keeps a
    # decade of regime drift plausible while weeks still behave like a random walk.
    leak = 0.5 ** (bar_hours / _PRICE_ANCHOR_HALF_LIFE_H)
    log_close = lfilter([1.0], [1.0, -leak], returns, axis=1)
    del returns

    # Spread: tier x regime x intraday, a little wider when the symbol's own vol is high.
    spread = _fill(out["spread_bps"], seed, indices, _SYM_SPREAD, "normal")
    spread *= 0.25
    spread += 0.25 * np.log(idio_variance)
    np.exp(spread, out=spread)
    spread *= traits.spread_bps[:, None] * market.spread_mult

    # Open sits within a fraction of the half-spread of the previous close.
    log_open = _fill(np.empty((rows, n)), seed, indices, _SYM_GAP, "normal")
    log_open *= 0.05 * 0.5e-4 * spread  # 5% of the half-spread, in log units
    log_open[:, 1:] += log_close[:, :-1]
    body = log_close - log_open

    # Exact Brownian-bridge extremes given the open, the close and the intrabar variance:
    # max = (b + sqrt(b^2 - 2 s^2 ln U)) / 2 >= max(0, b), and symmetrically for the min.
    intrabar_var = np.square(bar_vol)
    del bar_vol
    loading_sq = np.square(market.loading)
    intrabar_var *= loading_sq * market.factor_variance + (1.0 - loading_sq) * idio_variance
    del idio_variance
    body_sq = np.square(body)
    extremes = []
    for stream in (_SYM_HIGH_U, _SYM_LOW_U):
        excursion = np.log1p(-_fill(np.empty((rows, n)), seed, indices, stream, "uniform"))
        excursion *= -2.0 * intrabar_var
        excursion += body_sq
        np.sqrt(excursion, out=excursion)
        extremes.append(excursion)
    del intrabar_var, body_sq
    log_high, log_low = extremes
    log_high += body
    np.subtract(body, log_low, out=log_low)
    log_high *= 0.5
    log_low *= 0.5
    log_high += log_open
    log_low += log_open
    del body

    base_price = traits.base_price[:, None]
    for name, log_price in (("open", log_open), ("high", log_high), ("low", log_low), ("close", log_close)):
        np.exp(log_price, out=out[name])
        out[name] *= base_price
    # Rounding can put an extreme a hair inside the body; the contract is high >= max(open, close).
    np.maximum(out["high"], np.maximum(out["open"], out["close"]), out=out["high"])
    np.minimum(out["low"], np.minimum(out["open"], out["close"]), out=out["low"])

    # Volume in base units: tier x regime x U-shape x activity on big moves x lognormal noise.
    volume = _fill(out["volume"], seed, indices, _SYM_VOLUME, "normal")
    volume *= 0.4
    volume -= 0.08  # E[exp(0.4 N)] = exp(0.08)
    np.exp(volume, out=volume)
    activity *= 0.5
    activity += 0.6
    volume *= activity
    volume *= (traits.quote_volume_per_day / bars_per_day)[:, None] * market.volume_mult
    volume /= out["close"]


# --------------------------------------------------------------------------------------------
# Source
# --------------------------------------------------------------------------------------------

_PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "spread_bps")


class SyntheticSource:
    """A market-data source that invents its bars and reports the regimes it planted."""

    name = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config if config is not None else SyntheticConfig()

    def load(self) -> SourceBatch:
        config = self.config
        n_symbols, n_bars = config.symbols, config.bars_per_symbol
        bar_seconds = config.timeframe_seconds
        bar_hours = bar_seconds / 3600.0
        bars_per_day = SECONDS_PER_DAY // bar_seconds

        regimes = _regime_path(config, n_bars, bar_hours)
        market = _market_path(config, regimes, bar_hours, bars_per_day)
        range_segments = _range_segments(regimes)

        # Symbol-major output; each block of symbols is simulated straight into its rows.
        columns = {name: np.empty((n_symbols, n_bars)) for name in _PRICE_COLUMNS}
        block = max(1, _CHUNK_CELLS // n_bars)
        for first in range(0, n_symbols, block):
            indices = range(first, min(first + block, n_symbols))
            views = {name: values[first : indices.stop] for name, values in columns.items()}
            _simulate_symbols(config.seed, indices, market, range_segments, bar_hours, bars_per_day, views)

        midnight = datetime.combine(config.start, datetime.min.time(), timezone.utc)
        start_us = int(midnight.timestamp()) * 1_000_000
        bar_times = start_us + np.arange(n_bars, dtype=np.int64) * (bar_seconds * 1_000_000)
        total = n_symbols * n_bars
        symbol_index = pl.int_range(0, total, dtype=pl.UInt32, eager=True) // n_bars
        bars = pl.DataFrame(
            {
                "source_file": pl.repeat(self.name, total, eager=True),
                "source_row": np.tile(np.arange(1, n_bars + 1, dtype=np.int64), n_symbols),
                "symbol": pl.Series(synthetic_symbols(n_symbols), dtype=pl.String).gather(symbol_index),
                "timestamp": pl.Series(np.tile(bar_times, n_symbols)).cast(RAW_BAR_SCHEMA["timestamp"]),
                **{name: values.reshape(-1) for name, values in columns.items()},
            }
        )
        del columns
        regime_frame = pl.DataFrame(
            {
                "timestamp": pl.Series(bar_times).cast(REGIME_SCHEMA["timestamp"]),
                "regime": pl.Series(REGIMES, dtype=pl.String).gather(regimes.astype(np.uint32)),
            }
        )
        return SourceBatch(
            source=self.name,
            bars=bars,
            quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA),
            rows_read=bars.height,
            files=[],
            regimes=regime_frame,
        )
