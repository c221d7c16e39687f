"""One interface for every market-data source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from clm.data.schema import QUARANTINE_SCHEMA, RAW_BAR_SCHEMA, REGIME_SCHEMA


@dataclass
class FileReport:
    """What happened to one input file; ``error`` is set when the whole file was rejected."""

    path: str
    rows_read: int = 0
    rows_parsed: int = 0
    rows_quarantined: int = 0
    layout: str | None = None
    timeframe_seconds: int | None = None
    symbols: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class SourceBatch:
    """Raw bars plus everything that could not be parsed.

    ``rows_read == len(bars) + row-level quarantine rows``; rows with a null ``row`` stand for whole
    files (or unreadable document tails) that yielded no countable rows.
    """

    source: str
    bars: pl.DataFrame
    quarantine: pl.DataFrame
    rows_read: int
    files: list[FileReport] = field(default_factory=list)
    regimes: pl.DataFrame | None = None  # ground truth, synthetic source only

    def __post_init__(self) -> None:
        self.bars = self.bars.select([pl.col(c).cast(t) for c, t in RAW_BAR_SCHEMA.items()])
        self.quarantine = self.quarantine.select(
            [pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()]
        )
        if self.regimes is not None:
            self.regimes = self.regimes.select([pl.col(c).cast(t) for c, t in REGIME_SCHEMA.items()])
        # Row-level quarantine only: file-level rows (row is null) stand for files with no readable rows.
        row_level = self.quarantine.filter(pl.col("row").is_not_null()).height
        if self.rows_read != self.bars.height + row_level:
            raise AssertionError(
                f"source {self.source}: rows read {self.rows_read} != parsed {self.bars.height}"
                f" + quarantined {row_level}"
            )


class MarketDataSource(Protocol):
    name: str

    def load(self) -> SourceBatch:
        """Read everything the source holds."""
        ...
