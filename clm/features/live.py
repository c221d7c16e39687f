"""Features for new bars as they arrive (the live path), equal to the batch path to 1e-9.

``LiveFeatures`` keeps, per symbol, the state the batch path would rebuild from history: one slot
per symbol in a ``Stepper`` for the bar-level trees (and the per-symbol sources of the cross-asset
features), one more ``Stepper`` per higher timeframe fed with finished higher bars, and a count of
bars for the ``warm`` flag. ``update`` takes the bars of one bar time for any subset of symbols and
returns their feature rows; the work is proportional to the number of symbols and distinct nodes,
never to history.

It mirrors ``clm.features.build.compute_features`` rule for rule:

- a series is one symbol's segment: a new symbol, or a change of ``segment_id``, starts the slot
  afresh (bar state, higher-timeframe state and warm-up count);
- ``warm`` is the bar's index within its series >= ``selection.warmup_bars(timeframe_seconds)``;
- a higher bar is the epoch-aligned bucket ``[b, b + T)`` of a series' base bars (open first, high
  max, low min, close last, volume and quote volume summed, spread mean); it is finished, and the
  higher-timeframe trees stepped once, when a base bar closes it (``timestamp + base >= b + T``) or
  when a bar of a later bucket arrives first. A row gets the values of the series' last finished
  higher bar if that bar is ``truncate(timestamp + base, T) - T``, else null: exactly the batch
  path's join key, so a row never sees a higher bar that was not closed by its own close;
- cross-asset features combine the rows of one ``update`` (all the symbols with a bar at that
  time): the mean over the rows that have a value (null if none), the reference symbol's value
  (null when it has no row), or the row's own value minus that mean.

Missing values are null, as in the batch frame. Updates are validated before any state changes, so
a rejected update leaves the object as it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl

from clm.features.build import AGGREGATE, KEY_COLUMNS, WARM, cross_source
from clm.features.expr import inputs
from clm.features.incremental import Stepper
from clm.features.registry import Feature, FeatureSelection, timeframe_to_seconds

_US = 1_000_000
_NONE = np.iinfo(np.int64).min  # no bucket


class _HigherTimeframe:
    """Per-slot higher bars of one timeframe: the bucket being filled and the last finished one."""

    def __init__(self, label: str, features: Sequence[Feature], base_us: int):
        self.label = label
        self.span = timeframe_to_seconds(label) * _US
        self.base = base_us
        self.names = [f.name for f in features]
        self.stepper = Stepper({f.name: f.node for f in features}, 0)
        unknown = [c for c in self.stepper.columns if c not in AGGREGATE]
        if unknown:
            raise ValueError(f"higher-timeframe features cannot aggregate {unknown}")
        self.needed = self.stepper.columns
        self.capacity = 0
        self.bucket = np.zeros(0, dtype=np.int64)  # start of the bucket being filled, or _NONE
        self.closed = np.zeros(0, dtype=np.int64)  # start of the last finished bucket, or _NONE
        self.values = np.zeros((0, len(self.names)))  # the features of the last finished bucket
        self.sums = {c: np.zeros(0) for c in self.needed}
        self.counts = np.zeros(0, dtype=np.int64)  # non-missing spreads in the bucket (for the mean)

    def grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.stepper.grow(capacity)
        self.bucket = np.concatenate([self.bucket, np.full(extra, _NONE, dtype=np.int64)])
        self.closed = np.concatenate([self.closed, np.full(extra, _NONE, dtype=np.int64)])
        self.values = np.vstack([self.values, np.full((extra, len(self.names)), np.nan)])
        for c, v in self.sums.items():
            self.sums[c] = np.concatenate([v, np.full(extra, np.nan)])
        self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.stepper.reset(slots)
        self.bucket[slots] = _NONE
        self.closed[slots] = _NONE
        self.values[slots] = np.nan

    def _finish(self, slots: np.ndarray) -> None:
        """Close the open buckets of ``slots``: one step of the higher-timeframe trees."""
        bars: dict[str, np.ndarray] = {}
        for c in self.needed:
            if c == "spread_bps":
                counts = self.counts[slots]
                with np.errstate(all="ignore"):
                    bars[c] = np.where(counts > 0, self.sums[c][slots] / counts, np.nan)
            else:
                bars[c] = self.sums[c][slots]
        starts = self.bucket[slots]
        out = self.stepper.step(slots, bars, starts)
        self.values[slots] = np.column_stack([out[name] for name in self.names]) if self.names else 0.0
        self.closed[slots] = starts
        self.bucket[slots] = _NONE

    def advance(
        self, slots: np.ndarray, timestamp: int, columns: dict[str, np.ndarray], output: bool
    ) -> np.ndarray | None:
        """Add one base bar per slot (all at ``timestamp``); returns the rows' values (n, features)."""
        span = self.span
        bucket = timestamp - timestamp % span
        current = self.bucket[slots]
        superseded = (current != _NONE) & (current != bucket)
        if superseded.any():  # a bucket left open by a gap: the batch path has it as a (short) bar
            self._finish(slots[superseded])
            current = self.bucket[slots]
        fresh = current == _NONE
        for c in self.needed:
            x = columns[c]
            held = self.sums[c]
            if c == "open":
                value = np.where(fresh, x, held[slots])
            elif c == "high":
                value = np.where(fresh, x, np.fmax(held[slots], x))  # polars' max skips missing values
            elif c == "low":
                value = np.where(fresh, x, np.fmin(held[slots], x))
            elif c == "close":
                value = x
            else:  # sums (and the spread's sum, for a mean): missing values are skipped
                present = np.where(np.isnan(x), 0.0, x)
                value = np.where(fresh, present, held[slots] + present)
                if c == "spread_bps":
                    seen = (~np.isnan(x)).astype(np.int64)
                    self.counts[slots] = np.where(fresh, seen, self.counts[slots] + seen)
            held[slots] = value
        self.bucket[slots] = bucket
        if timestamp + self.base >= bucket + span:  # this bar closes its bucket
            self._finish(slots)
        if not output:
            return None
        close = timestamp + self.base
        key = close - close % span - span  # the last higher bar closed by this bar's close
        hit = self.closed[slots] == key
        return np.where(hit[:, None], self.values[slots], np.nan)


class LiveFeatures:
    """Features for new bars as they arrive, equal (to 1e-9) to the batch path.

    ``update`` takes the bars of one bar time (columns ``symbol``, ``timestamp``, ``segment_id`` and
    ``input_columns``) and returns ``symbol, timestamp, segment_id, warm`` and one column per feature
    in ``selection.names`` order, rows in input order. ``warm_start`` replays history.
    """

    def __init__(self, selection: FeatureSelection, timeframe_seconds: int):
        if isinstance(timeframe_seconds, bool) or not isinstance(timeframe_seconds, int | np.integer):
            raise TypeError(f"timeframe_seconds must be an integer, got {timeframe_seconds!r}")
        if timeframe_seconds <= 0:
            raise ValueError(f"timeframe_seconds must be positive, got {timeframe_seconds}")
        self.selection = selection
        self.timeframe_seconds = int(timeframe_seconds)
        self.warmup = selection.warmup_bars(self.timeframe_seconds)
        self._base = self.timeframe_seconds * _US
        features = selection.features
        self._names = selection.names
        self._cross = [f for f in features if f.cross]
        roots = {f.name: f.node for f in features if not f.timeframe and not f.cross}
        roots.update({cross_source(f): f.node for f in self._cross})
        self._bar = Stepper(roots, 0)
        timeframes = sorted({f.timeframe for f in features if f.timeframe}, key=timeframe_to_seconds)
        self._higher = [
            _HigherTimeframe(tf, [f for f in features if f.timeframe == tf], self._base) for tf in timeframes
        ]
        self.input_columns: list[str] = sorted(
            set().union(*(inputs(f.node) for f in features)) - {"timestamp"}
        )
        self._boolean = {f.name for f in features if f.node.is_boolean}
        self._slot_of: dict[str, int] = {}
        self._symbols: list[str] = []
        self._capacity = 0
        self._segment = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0, dtype=np.int64)  # last bar time per slot (µs)
        self._seen = np.zeros(0, dtype=np.int64)  # bars since the slot's series started

    @property
    def symbols(self) -> list[str]:
        """Symbols seen so far, in the order they first appeared."""
        return list(self._symbols)

    @property
    def required_columns(self) -> list[str]:
        return [*KEY_COLUMNS, *self.input_columns]

    # ---- public -------------------------------------------------------------------------------
    def update(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Feature rows for the bars of one bar time, in input order; see the class notes."""
        self._check_frame(bars, "update")
        if bars.height == 0:
            return self._empty(bars)
        stamps = _microseconds(bars["timestamp"], "update")
        if stamps.min() != stamps.max():
            distinct = bars["timestamp"].unique().sort()
            raise ValueError(
                f"update: all bars must share one timestamp, got {len(distinct)} "
                f"({distinct[0]} .. {distinct[-1]}); use warm_start to replay history"
            )
        symbols = _symbols(bars["symbol"], "update")
        segments = _segments(bars["segment_id"], "update")
        columns = {c: _floats(bars[c]) for c in self.input_columns}
        warm, values = self._advance(symbols, int(stamps[0]), segments, columns, output=True)
        n = bars.height
        # one Series for all values (NaN -> null), sliced into columns: far cheaper than one Series each
        block = pl.Series(
            np.concatenate([np.asarray(values[name], dtype=np.float64) for name in self._names])
            if self._names
            else np.zeros(0),
            dtype=pl.Float64,
            nan_to_null=True,
        )
        warm_flags = pl.Series(WARM, warm, dtype=pl.Boolean)
        series = [bars["symbol"], bars["timestamp"], bars["segment_id"], warm_flags]
        for i, name in enumerate(self._names):
            column = block.slice(i * n, n).alias(name)
            series.append(column.cast(pl.Boolean) if name in self._boolean else column)
        return pl.DataFrame(series)

    def warm_start(self, history: pl.DataFrame) -> None:
        """Replay ``history`` (any order) through the state, one vectorised step per bar time.

        The whole frame is checked first (columns, one row per symbol and time, times after each
        symbol's last bar), so a rejected history leaves the state as it was.
        """
        self._check_frame(history, "warm_start")
        if history.height == 0:
            return
        frame = history.select(*KEY_COLUMNS, *self.input_columns).sort("timestamp", "symbol")
        stamps = _microseconds(frame["timestamp"], "warm_start")
        symbols = _symbols(frame["symbol"], "warm_start")
        segments = _segments(frame["segment_id"], "warm_start")
        duplicated = frame.filter(pl.struct("symbol", "timestamp").is_duplicated())
        if duplicated.height:
            first = duplicated.row(0, named=True)
            raise ValueError(
                f"warm_start: {duplicated.height} rows share a (symbol, timestamp), "
                f"e.g. {first['symbol']} at {first['timestamp']}"
            )
        if self._symbols:
            firsts = frame.group_by("symbol").agg(pl.col("timestamp").min())
            starts = _microseconds(firsts["timestamp"], "warm_start")
            for symbol, first in zip(firsts["symbol"].to_list(), starts, strict=True):
                slot = self._slot_of.get(symbol)
                if slot is not None and first <= self._last[slot]:
                    raise ValueError(
                        f"warm_start: {symbol} has a bar at or before its last bar "
                        f"({_format_us(int(first))} <= {_format_us(int(self._last[slot]))})"
                    )
        columns = {c: _floats(frame[c]) for c in self.input_columns}
        bounds = [0, *(np.flatnonzero(np.diff(stamps)) + 1).tolist(), len(stamps)]
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            self._advance(
                symbols[start:end],
                int(stamps[start]),
                segments[start:end],
                {c: v[start:end] for c, v in columns.items()},
                output=False,
            )

    # ---- state --------------------------------------------------------------------------------
    def _advance(
        self,
        symbols: list[str],
        timestamp: int,
        segments: np.ndarray,
        columns: dict[str, np.ndarray],
        output: bool,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        n = len(symbols)
        slot_of = self._slot_of
        slots = np.fromiter((slot_of.get(s, -1) for s in symbols), dtype=np.int64, count=n)
        if len(set(symbols)) != n:
            repeated = sorted(s for s, k in Counter(symbols).items() if k > 1)
            raise ValueError(f"one bar per symbol per update: {repeated} appear more than once")
        known = slots >= 0
        if known.any():
            stale = self._last[slots[known]] >= timestamp
            if stale.any():
                names = [s for s, k in zip(symbols, known, strict=True) if k]
                bad = [names[i] for i in np.flatnonzero(stale)[:5]]
                last = int(self._last[slot_of[bad[0]]])
                raise ValueError(
                    f"bars must be newer than each symbol's last bar: {bad} at {_format_us(timestamp)} "
                    f"(last bar of {bad[0]}: {_format_us(last)})"
                )
        # ---- validated; from here on the state changes
        new = ~known
        if new.any():
            slots[new] = self._add([s for s, k in zip(symbols, new, strict=True) if k])
        restart = new | (self._segment[slots] != segments)
        if restart.any():
            self._reset(slots[restart])
        self._segment[slots] = segments
        self._last[slots] = timestamp
        seen = self._seen[slots]
        warm = seen >= self.warmup
        self._seen[slots] = seen + 1
        bar = self._bar.step(slots, columns, np.int64(timestamp))
        higher = [h.advance(slots, timestamp, columns, output) for h in self._higher]
        if not output:
            return warm, {}
        values: dict[str, np.ndarray] = {}
        for h, block in zip(self._higher, higher, strict=True):
            for j, name in enumerate(h.names):
                values[name] = block[:, j]  # type: ignore[index]
        means: dict[str, float] = {}
        for f in self._cross:
            source = np.asarray(bar[cross_source(f)], dtype=np.float64)
            if f.cross == "reference":
                slot = slot_of.get(f.reference_symbol or "")
                row = np.flatnonzero(slots == slot) if slot is not None else ()
                values[f.name] = np.full(n, source[row[0]] if len(row) else np.nan)
                continue
            key = f.node.key
            if key not in means:
                present = ~np.isnan(source)
                count = int(present.sum())
                means[key] = float(source[present].sum() / count) if count else np.nan
            values[f.name] = np.full(n, means[key]) if f.cross == "mean" else source - means[key]
        for name in self._names:
            if name not in values:
                values[name] = bar[name]
        return warm, values

    def _add(self, symbols: list[str]) -> np.ndarray:
        first = len(self._symbols)
        for i, s in enumerate(symbols):
            self._slot_of[s] = first + i
        self._symbols += symbols
        needed = len(self._symbols)
        if needed > self._capacity:
            capacity = max(needed, 2 * self._capacity, 16)
            extra = capacity - self._capacity
            self._segment = np.concatenate([self._segment, np.zeros(extra, dtype=np.int64)])
            self._last = np.concatenate([self._last, np.full(extra, _NONE, dtype=np.int64)])
            self._seen = np.concatenate([self._seen, np.zeros(extra, dtype=np.int64)])
            self._bar.grow(capacity)
            for h in self._higher:
                h.grow(capacity)
            self._capacity = capacity
        return np.arange(first, needed, dtype=np.int64)

    def _reset(self, slots: np.ndarray) -> None:
        self._bar.reset(slots)
        for h in self._higher:
            h.reset(slots)
        self._seen[slots] = 0

    # ---- checks -------------------------------------------------------------------------------
    def _check_frame(self, frame: pl.DataFrame, where: str) -> None:
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(f"{where}: expected a polars DataFrame, got {type(frame).__name__}")
        missing = [c for c in self.required_columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{where}: missing column(s) {missing}; the selection needs {self.required_columns}"
            )

    def _empty(self, bars: pl.DataFrame) -> pl.DataFrame:
        schema: dict[str, pl.DataType] = {c: bars.schema[c] for c in KEY_COLUMNS}
        schema[WARM] = pl.Boolean()
        for name in self._names:
            schema[name] = pl.Boolean() if name in self._boolean else pl.Float64()
        return pl.DataFrame(schema=schema)


def _microseconds(stamps: pl.Series, where: str) -> np.ndarray:
    if not isinstance(stamps.dtype, pl.Datetime):
        raise ValueError(f"{where}: timestamp must be a Datetime column (bar open UTC), got {stamps.dtype}")
    if stamps.null_count():
        raise ValueError(f"{where}: {stamps.null_count()} bars have no timestamp")
    scale = {"us": 1, "ms": 1000}.get(stamps.dtype.time_unit or "us")
    physical = stamps.cast(pl.Int64).to_numpy()
    return physical * scale if scale else physical // 1000  # nanoseconds, to microseconds


def _symbols(symbols: pl.Series, where: str) -> list[str]:
    if symbols.null_count():
        raise ValueError(f"{where}: {symbols.null_count()} bars have no symbol")
    return (symbols if symbols.dtype == pl.String else symbols.cast(pl.String)).to_list()


def _segments(segments: pl.Series, where: str) -> np.ndarray:
    if not segments.dtype.is_integer():
        raise ValueError(f"{where}: segment_id must be an integer column, got {segments.dtype}")
    if segments.null_count():
        raise ValueError(f"{where}: {segments.null_count()} bars have no segment_id")
    return segments.to_numpy().astype(np.int64, copy=False)


def _floats(values: pl.Series) -> np.ndarray:
    """A float64 array, missing values as NaN."""
    if values.dtype != pl.Float64 or values.null_count():
        values = values.cast(pl.Float64)
    return values.to_numpy()


def _format_us(us: int) -> str:
    return str(pl.Series([us], dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))[0])
