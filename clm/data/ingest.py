"""Source -> validation -> lake, for a window of daily partitions.

Each run re-reads the whole source so that gap filling, segment numbering and outlier windows see the
full history: a partition's content is a pure function of the source, whichever partitions a run
writes, and re-materialising it gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from clm.data.sources.base import FileReport, MarketDataSource
from clm.data.validation import ValidationConfig, ValidationResult, validate_bars
from clm.lake import Lake

log = logging.getLogger(__name__)

CANDLES = "candles"
GAPS = "candle_gaps"
QUARANTINE = "quarantine"
MISMATCHES = "vendor_mismatches"
REGIMES = "synthetic_regimes"
CALENDARS = "calendars"
INTEGRITY_REPORT = "reports/data_integrity.json"
INTEGRITY_PLOT = "reports/data_integrity.png"


@dataclass
class IngestResult:
    source_id: str
    validation: ValidationResult
    quarantine: pl.DataFrame  # source-stage and validation-stage rows, with a ``stage`` column
    regimes: pl.DataFrame | None
    rows_read: int
    files: list[FileReport] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows_kept(self) -> int:
        return self.validation.rows_kept

    @property
    def rows_quarantined(self) -> int:
        return self.quarantine.filter(pl.col("row").is_not_null()).height

    @property
    def file_errors(self) -> list[FileReport]:
        return [f for f in self.files if f.error]

    def accounting(self) -> dict[str, int]:
        """Rows in = rows kept + rows quarantined; filled bars are extra rows, counted apart."""
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "filled_bars": self.validation.filled_bars,
            "file_errors": len(self.file_errors),
        }

    def quarantine_by_reason(self) -> dict[str, int]:
        counts = self.quarantine.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def run_ingest(source: MarketDataSource, source_id: str, config: ValidationConfig | None = None) -> IngestResult:
    started = time.perf_counter()
    batch = source.load()
    loaded = time.perf_counter()
    log.info("source %s: %d rows read from %d files in %.2fs", source_id, batch.rows_read, len(batch.files), loaded - started)
    validation = validate_bars(batch.bars, config or ValidationConfig())
    validated = time.perf_counter()
    quarantine = pl.concat(
        [
            batch.quarantine.with_columns(stage=pl.lit("parse")),
            validation.quarantine.with_columns(stage=pl.lit("validate")),
        ],
        how="vertical",
    )
    result = IngestResult(
        source_id=source_id,
        validation=validation,
        quarantine=quarantine,
        regimes=batch.regimes,
        rows_read=batch.rows_read,
        files=batch.files,
        seconds={"load": loaded - started, "validate": validated - loaded},
    )
    accounts = result.accounting()
    if accounts["rows_read"] != accounts["rows_kept"] + accounts["rows_quarantined"]:
        raise AssertionError(f"rows do not add up for source {source_id}: {accounts}")
    return result


def window_dates(start: dt.date, end: dt.date) -> list[dt.date]:
    """Days in [start, end)."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def write_ingest(lake: Lake, result: IngestResult, start: dt.date, end: dt.date) -> dict[str, dict[str, Any]]:
    """Write the daily partitions in [start, end) plus the source's quarantine and mismatches."""
    window = window_dates(start, end)
    in_window = pl.col("date").is_between(start, end, closed="left")
    written: dict[str, dict[str, Any]] = {}

    candles = (
        result.validation.candles.with_columns(date=pl.col("timestamp").dt.date())
        .filter(in_window)
        .sort("symbol", "timestamp")
    )
    # One file per day with every symbol, sorted by (symbol, timestamp): a file per symbol-day would
    # mean 180k tiny files for 500 symbols x a year, slow to write and to scan.
    written[CANDLES] = lake.write_table(CANDLES, candles, ["date"], replace=window)

    gaps = result.validation.gaps.with_columns(date=pl.col("gap_end").dt.date()).filter(in_window).sort("symbol", "gap_end")
    written[GAPS] = lake.write_table(GAPS, gaps, ["date"], replace=window)

    if result.regimes is not None:
        regimes = result.regimes.with_columns(date=pl.col("timestamp").dt.date()).filter(in_window).sort("timestamp")
        written[REGIMES] = lake.write_table(REGIMES, regimes, ["date"], replace=window)

    quarantine = result.quarantine.with_columns(
        dataset=pl.lit(CANDLES), source=pl.lit(result.source_id)
    ).sort("source_file", "row", "field", "reason", nulls_last=True)
    written[QUARANTINE] = lake.write_table(QUARANTINE, quarantine, ["source"], replace=[result.source_id])

    calendars = result.validation.calendars.with_columns(source=pl.lit(result.source_id)).sort("symbol")
    written[CALENDARS] = lake.write_table(CALENDARS, calendars, ["source"], replace=[result.source_id])

    mismatches = result.validation.mismatches.with_columns(source=pl.lit(result.source_id)).sort("symbol", "timestamp", "field")
    written[MISMATCHES] = lake.write_table(MISMATCHES, mismatches, ["source"], replace=[result.source_id])
    return written
