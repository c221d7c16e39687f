"""Integrity report over validated candles and the validation side tables.

``integrity_report`` returns a JSON-serialisable dict (plain ints, floats, strings, ISO timestamps)
so it can go straight into Dagster metadata or a run log; ``integrity_markdown`` renders it.
Every input may be a DataFrame or a LazyFrame (e.g. a scan of the lake); only small aggregates are
collected.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from clm.data.schema import GAP_SCHEMA, MISMATCH_SCHEMA, QUARANTINE_SCHEMA
from clm.markdown import markdown_table

Frame = pl.DataFrame | pl.LazyFrame

PER_SYMBOL_INT_FIELDS = (
    "bars",
    "filled_bars",
    "gaps_filled",
    "gaps_segment_breaks",
    "longest_gap_bars",
    "segments",
    "outliers",
    "quarantined",
    "vendor_mismatches",
)


def _lazy(frame: Frame | None, schema: dict[str, pl.DataType] | None = None) -> pl.LazyFrame:
    if frame is None:
        return pl.LazyFrame(schema=schema)
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text.replace("+00:00", "Z")


def integrity_report(
    candles: Frame,
    gaps: Frame | None,
    quarantine: Frame | None,
    mismatches: Frame | None,
    calendars: Frame | None = None,
) -> dict[str, Any]:
    """Totals plus one entry per symbol; see ``PER_SYMBOL_INT_FIELDS`` and the module doc."""
    per_candles = (
        _lazy(candles)
        .group_by("symbol")
        .agg(
            pl.len().alias("bars"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
            pl.col("is_filled").sum().alias("filled_bars"),
            pl.col("segment_id").n_unique().alias("segments"),
            pl.col("is_outlier").sum().alias("outliers"),
        )
        .collect()
    )
    per_gaps = (
        _lazy(gaps, GAP_SCHEMA)
        .group_by("symbol")
        .agg(
            (pl.col("action") == "filled").sum().alias("gaps_filled"),
            (pl.col("action") == "segment_break").sum().alias("gaps_segment_breaks"),
            pl.col("missing_bars").max().alias("longest_gap_bars"),
            ((pl.col("gap_end") - pl.col("gap_start")).dt.total_seconds() / 60.0)
            .max()
            .alias("longest_gap_minutes"),
        )
        .collect()
    )
    q_counts = (
        _lazy(quarantine, QUARANTINE_SCHEMA)
        .group_by("symbol", "reason")
        .agg(pl.len().alias("n"))
        .collect()
        .sort("symbol", "reason", nulls_last=True)
    )
    mm_counts = (
        _lazy(mismatches, MISMATCH_SCHEMA)
        .group_by("symbol")
        .agg(pl.len().alias("vendor_mismatches"))
        .collect()
    )
    cal_map: dict[str, str] = {}
    tf_map: dict[str, int | None] = {}
    if calendars is not None:
        cal_df = _lazy(calendars).collect()
        cal_map = dict(zip(cal_df["symbol"], cal_df["calendar"], strict=True))
        if "timeframe_seconds" in cal_df.columns:
            tf_map = dict(zip(cal_df["symbol"], cal_df["timeframe_seconds"], strict=True))

    by_symbol_reason: dict[str, dict[str, int]] = {}
    overall_reason: dict[str, int] = {}
    for symbol, reason, n in q_counts.iter_rows():  # one row per (symbol, reason): tiny
        overall_reason[reason] = overall_reason.get(reason, 0) + int(n)
        if symbol is not None:
            by_symbol_reason.setdefault(symbol, {})[reason] = int(n)

    q_symbols = pl.DataFrame({"symbol": list(by_symbol_reason)}, schema={"symbol": pl.String})
    table = (
        pl.concat(
            [
                per_candles.select("symbol"),
                per_gaps.select("symbol"),
                q_symbols,
                mm_counts.select("symbol"),
            ]
        )
        .unique()
        .join(per_candles, on="symbol", how="left")
        .join(per_gaps, on="symbol", how="left")
        .join(mm_counts, on="symbol", how="left")
        .sort("symbol")
    )

    per_symbol = []
    for row in table.iter_rows(named=True):  # one row per symbol
        symbol = row["symbol"]
        reasons = by_symbol_reason.get(symbol, {})
        entry: dict[str, Any] = {
            "symbol": symbol,
            "calendar": cal_map.get(symbol),
            "timeframe_seconds": None if tf_map.get(symbol) is None else int(tf_map[symbol]),
            "first": _iso(row["first"]),
            "last": _iso(row["last"]),
        }
        row["quarantined"] = sum(reasons.values())
        for key in PER_SYMBOL_INT_FIELDS:
            entry[key] = int(row[key] or 0)
        minutes = row["longest_gap_minutes"]
        entry["longest_gap_minutes"] = float(minutes) if minutes is not None else 0.0
        entry["quarantined_by_reason"] = dict(reasons)
        per_symbol.append(entry)

    quarantined_total = sum(overall_reason.values())
    mismatch_total = int(mm_counts["vendor_mismatches"].sum()) if mm_counts.height else 0
    firsts = [e["first"] for e in per_symbol if e["first"]]
    lasts = [e["last"] for e in per_symbol if e["last"]]
    totals: dict[str, Any] = {
        "symbols": sum(1 for e in per_symbol if e["bars"]),
        "first": min(firsts) if firsts else None,
        "last": max(lasts) if lasts else None,
    }
    for key in PER_SYMBOL_INT_FIELDS:
        totals[key] = sum(e[key] for e in per_symbol)
    totals["longest_gap_bars"] = max((e["longest_gap_bars"] for e in per_symbol), default=0)
    totals["longest_gap_minutes"] = max((e["longest_gap_minutes"] for e in per_symbol), default=0.0)
    # quarantine rows without a symbol (file-level rejects) count in the totals only
    totals["quarantined"] = quarantined_total
    totals["vendor_mismatches"] = mismatch_total
    breaks = (
        _lazy(gaps, GAP_SCHEMA)
        .filter(pl.col("action") == "segment_break")
        .sort("symbol", "gap_start")
        .with_columns(minutes=(pl.col("gap_end") - pl.col("gap_start")).dt.total_seconds() / 60.0)
        .collect()
    )
    segment_breaks = [
        {"symbol": r["symbol"], "gap_start": _iso(r["gap_start"]), "gap_end": _iso(r["gap_end"]),
         "missing_bars": int(r["missing_bars"]), "minutes": float(r["minutes"])}
        for r in breaks.iter_rows(named=True)  # one row per break: few
    ]
    return {
        "totals": totals,
        "segment_breaks": segment_breaks,
        "quarantined_by_reason": dict(sorted(overall_reason.items())),
        "vendor_mismatches": mismatch_total,
        "calendars": {e["symbol"]: e["calendar"] for e in per_symbol if e["calendar"]},
        "per_symbol": per_symbol,
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    return markdown_table([dict(zip(headers, row, strict=True)) for row in rows], headers)


def integrity_markdown(report: dict[str, Any]) -> str:
    """A per-symbol table and a quarantine-by-reason table (Dagster ``MetadataValue.md``)."""
    totals = report["totals"]
    columns = [
        ("symbol", "symbol"),
        ("calendar", "calendar"),
        ("bars", "bars"),
        ("first", "first"),
        ("last", "last"),
        ("filled", "filled_bars"),
        ("gaps filled", "gaps_filled"),
        ("segment breaks", "gaps_segment_breaks"),
        ("longest gap (bars)", "longest_gap_bars"),
        ("longest gap (min)", "longest_gap_minutes"),
        ("segments", "segments"),
        ("outliers", "outliers"),
        ("quarantined", "quarantined"),
        ("vendor mismatches", "vendor_mismatches"),
    ]
    rows = [[e.get(key) for _, key in columns] for e in report["per_symbol"]]
    total_row = ["**total**", ""] + [totals.get(key) for _, key in columns[2:]]
    parts = [
        "### Candles per symbol",
        "",
        _table([h for h, _ in columns], [*rows, total_row]),
        "",
    ]
    breaks = report.get("segment_breaks", [])
    if breaks:
        parts += [
            "### Segment breaks (gaps too long to fill)",
            "",
            _table(
                ["symbol", "last bar before", "first bar after", "missing bars", "minutes"],
                [[b["symbol"], b["gap_start"], b["gap_end"], b["missing_bars"], b["minutes"]] for b in breaks],
            ),
            "",
        ]
    parts += ["### Quarantine by reason", ""]
    reasons = report.get("quarantined_by_reason", {})
    if reasons:
        parts.append(_table(["reason", "rows"], [[r, n] for r, n in reasons.items()]))
    else:
        parts.append("No rows quarantined.")
    return "\n".join(parts) + "\n"


__all__ = ["integrity_markdown", "integrity_report"]
