"""The market-wide regime (a vote over the universe with hysteresis) and its change signals.

Signal file ``<lake>/signals/regime/regime_<YYYYMMDDTHHMMSSZ>.json``, one per change::

    {"at": "2024-01-03T10:45:00Z", "confidence": 0.8, "from": "range",
     "symbols": ["SYN000USD", ...], "to": "trend"}

``at`` is the open time (UTC) of the bar whose close confirmed the change, ``confidence`` the share
of voting symbols in the new regime on that bar, ``symbols`` those symbols (sorted). Files are
written atomically with sorted keys, so the same change always gives the same name and bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from clm.checks import ENGINE
from clm.lake import fsync_write
from clm.regimes.config import CLASSES, RegimeConfig

SIGNAL_PREFIX = "regime_"
SIGNAL_KEYS = ("at", "confidence", "from", "symbols", "to")
# Tie-break of the vote: the riskier regime wins a tie.
_TIE_ORDER = ("panic", "illiquid", "trend", "range")

MARKET_COLUMNS = (
    "timestamp",
    "voters",
    *(f"n_{c}" for c in CLASSES),
    "majority_regime",
    "majority_share",
    "majority_symbols",
    "market_regime",
    "confidence",
    "symbols",
)


def market_regime(per_symbol: pl.DataFrame | pl.LazyFrame, config: RegimeConfig = RegimeConfig()) -> pl.DataFrame:
    """One row per timestamp of ``per_symbol`` (``classify_regimes`` output), sorted by time.

    * ``voters``: symbols with a regime on that bar; ``n_<regime>``: how many are in each;
    * ``majority_regime``: the most common regime, or null when fewer than ``min_symbols`` vote or
      its share is below ``majority_share`` (ties go to the riskier regime: panic, illiquid, trend,
      range); ``majority_share``: its share of the voters; ``majority_symbols``: those symbols;
    * ``market_regime``: ``majority_regime`` filtered by hysteresis: it switches only on the bar
      where a new majority has persisted ``config.persistence_bars(new)`` consecutive rows (null
      until the first majority has); ``confidence`` and ``symbols``: the share of voters in the market
      regime on that bar and those symbols (equal to the majority's on the bar a switch is confirmed).
    """
    votes = (
        per_symbol.lazy()
        .select("timestamp", "symbol", "regime")
        .group_by("timestamp")
        .agg(
            pl.col("regime").is_not_null().sum().cast(pl.Int64).alias("voters"),
            *(
                (pl.col("regime") == c).sum().cast(pl.Int64).alias(f"n_{c}")
                for c in CLASSES
            ),
            *(
                pl.col("symbol").filter(pl.col("regime") == c).sort().alias(f"_symbols_{c}")
                for c in CLASSES
            ),
        )
        .sort("timestamp")
    )
    counts = [pl.col(f"n_{c}") for c in _TIE_ORDER]
    top = pl.max_horizontal(counts)
    leader = pl.coalesce(pl.when(pl.col(f"n_{c}") == top).then(pl.lit(c)) for c in _TIE_ORDER)
    share = pl.when(pl.col("voters") > 0).then(top / pl.col("voters"))
    decided = (pl.col("voters") >= config.min_symbols) & (share >= config.majority_share) & (top > 0)

    def pick(regime: pl.Expr, prefix: str) -> pl.Expr:
        expr = pl.lit(None, pl.List(pl.String))
        out = pl.when(regime.is_null()).then(expr)
        for c in CLASSES:
            out = out.when(regime == c).then(pl.col(f"{prefix}{c}"))
        return out.otherwise(expr)

    def count_of(regime: pl.Expr) -> pl.Expr:
        out = pl.when(regime.is_null()).then(pl.lit(None, pl.Int64))
        for c in CLASSES:
            out = out.when(regime == c).then(pl.col(f"n_{c}"))
        return out

    persistence = pl.col("majority_regime").replace_strict(
        {c: config.persistence_bars(c) for c in CLASSES}, default=None, return_dtype=pl.Int64
    )
    run_position = pl.int_range(pl.len()).over(pl.col("majority_regime").rle_id()) + 1
    confirmed = pl.col("majority_regime").is_not_null() & (run_position == persistence)
    frame = (
        votes.with_columns(
            pl.when(decided).then(leader).alias("majority_regime"),
            pl.when(decided).then(share).alias("majority_share"),
        )
        .with_columns(pick(pl.col("majority_regime"), "_symbols_").alias("majority_symbols"))
        .with_columns(pl.when(confirmed).then(pl.col("majority_regime")).forward_fill().alias("market_regime"))
        .with_columns(
            pl.when(pl.col("voters") > 0)
            .then(count_of(pl.col("market_regime")) / pl.col("voters"))
            .alias("confidence"),
            pick(pl.col("market_regime"), "_symbols_").alias("symbols"),
        )
    )
    return frame.select(MARKET_COLUMNS).collect(engine=ENGINE)


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def regime_changes(market: pl.DataFrame | pl.LazyFrame, *, include_initial: bool = False) -> list[dict[str, Any]]:
    """Every switch of ``market_regime`` (``market_regime`` output), oldest first.

    Each change is ``{"from", "to", "at", "confidence", "symbols"}``: ``at`` the ISO UTC open time
    of the confirming bar, ``confidence`` the share of voters in the new regime there (rounded to
    6 decimals), ``symbols`` those voters. The first regime after the warm-up (from null) is a
    start, not a change, and is left out unless ``include_initial``.
    """
    frame = (
        market.lazy()
        .select("timestamp", "market_regime", "confidence", "symbols")
        .sort("timestamp")
        .with_columns(pl.col("market_regime").shift(1).alias("_from"))
        .filter(
            pl.col("market_regime").is_not_null()
            & (pl.col("_from").is_null() | (pl.col("market_regime") != pl.col("_from")))
        )
        .collect(engine=ENGINE)
    )
    changes = []
    for ts, to, confidence, symbols, previous in frame.iter_rows():
        if previous is None and not include_initial:
            continue
        changes.append(
            {
                "from": previous,
                "to": to,
                "at": _iso(ts),
                "confidence": None if confidence is None else round(float(confidence), 6),
                "symbols": sorted(symbols or []),
            }
        )
    return changes


def signal_name(at: str | datetime) -> str:
    """``regime_20240103T104500Z.json`` for a change at 2024-01-03T10:45:00Z."""
    ts = _parse_at(at)
    return f"{SIGNAL_PREFIX}{ts.strftime('%Y%m%dT%H%M%SZ')}.json"


def _parse_at(at: str | datetime) -> datetime:
    if isinstance(at, datetime):
        ts = at
    else:
        ts = datetime.fromisoformat(at.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"regime change time {at!r} has no time zone; expected UTC")
    return ts.astimezone(timezone.utc)


def signal_bytes(change: dict[str, Any]) -> bytes:
    """The file content of one change: JSON with exactly ``SIGNAL_KEYS``, sorted, newline-terminated."""
    keys = set(change)
    if keys != set(SIGNAL_KEYS):
        raise ValueError(f"a regime change needs exactly the keys {list(SIGNAL_KEYS)}, got {sorted(keys)}")
    payload = dict(change)
    payload["at"] = _iso(_parse_at(change["at"]))
    payload["symbols"] = sorted(change["symbols"])
    return (json.dumps(payload, sort_keys=True, indent=2) + "\n").encode()


def write_regime_signals(
    changes: Iterable[dict[str, Any]],
    signals_dir: Path,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> list[Path]:
    """Write one signal file per change with ``since <= at < until`` (bounds optional); sorted paths.

    Idempotent: a file that already holds the same bytes is left untouched (its mtime too), one
    that differs is replaced atomically (``clm.lake.fsync_write``).
    """
    low = None if since is None else _parse_at(since)
    high = None if until is None else _parse_at(until)
    signals_dir = Path(signals_dir)
    written: dict[Path, bytes] = {}
    for change in changes:
        at = _parse_at(change["at"])
        if (low is not None and at < low) or (high is not None and at >= high):
            continue
        path = signals_dir / signal_name(at)
        data = signal_bytes(change)
        if path in written and written[path] != data:
            raise ValueError(f"two different regime changes at {_iso(at)}")
        written[path] = data
    for path, data in written.items():
        if path.is_file() and path.read_bytes() == data:
            continue
        fsync_write(path, data)
    return sorted(written)


def read_regime_signals(signals_dir: Path, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The signals in ``signals_dir`` (all, or the given file names), oldest first."""
    signals_dir = Path(signals_dir)
    if names is None:
        paths = sorted(signals_dir.glob(f"{SIGNAL_PREFIX}*.json")) if signals_dir.is_dir() else []
    else:
        paths = [signals_dir / name for name in sorted(names)]
    return [json.loads(p.read_text()) for p in paths]
