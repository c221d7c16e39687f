"""Market data: source -> validated candles, gaps, quarantine, vendor mismatches, true regimes."""


import dagster as dg
import polars as pl
from pydantic import Field

from assets.partitions import daily_partitions
from clm.data import ingest
from clm.data.schema import CANDLE_SCHEMA
from clm.data.schemas import validate_candles
from clm.data.validation import ValidationConfig
from clm.markdown import frame_markdown, markdown_table
from resources import LakeResource, MarketDataResource


class CandleIngestConfig(dg.Config):
    """Validation settings; see ``clm.data.validation.ValidationConfig`` for the rules."""

    max_fill_bars: int = Field(3, ge=0, le=1000, description="gaps up to this many bars are filled flat")
    outlier_window: int = Field(288, ge=20, description="bars in the rolling robust z-score window")
    outlier_z: float = Field(10.0, gt=0, description="robust z-score above which a return is flagged")
    mismatch_tolerance_bps: float = Field(5.0, ge=0, description="vendor differences above this are reported")
    calendars: dict[str, str] = Field(
        default_factory=dict,
        description='per-symbol trading calendar: "auto" (default), "24/7" or "weekdays"',
    )

    def validation(self) -> ValidationConfig:
        return ValidationConfig(
            max_fill_bars=self.max_fill_bars,
            outlier_window=self.outlier_window,
            outlier_z=self.outlier_z,
            mismatch_tolerance_bps=self.mismatch_tolerance_bps,
            calendars=self.calendars,
        )


def _daily_spec(key: str, description: str, **kwargs) -> dg.AssetSpec:
    return dg.AssetSpec(key, description=description, partitions_def=daily_partitions, group_name="market_data",
                        kinds={"polars", "parquet"}, **kwargs)


@dg.multi_asset(
    specs=[
        _daily_spec(ingest.CANDLES, "Validated OHLCV bars: gaps filled or split into segments, outliers flagged. "
                    "Lake: candles/date=YYYY-MM-DD/part-0.parquet"),
        _daily_spec(ingest.GAPS, "Every gap in a series: filled (short) or segment break (long)."),
        _daily_spec(ingest.QUARANTINE, "Rows and files that were rejected, with file, row, field, value and reason "
                    "(one part per source, replaced on each ingest)."),
        _daily_spec(ingest.MISMATCHES, "Bars two sources disagree on beyond the tolerance."),
        _daily_spec(ingest.CALENDARS, "Detected timeframe and trading calendar per symbol (24/7 or weekly sessions)."),
        _daily_spec(ingest.REGIMES, "True market regime per bar (synthetic source only), for scoring regime detection.",
                    skippable=True),
    ],
    check_specs=[
        dg.AssetCheckSpec("candles_schema", asset=ingest.CANDLES, blocking=True,
                          description="pandera.polars CandleSchema on the written candles"),
        dg.AssetCheckSpec("rows_accounted", asset=ingest.CANDLES, blocking=True,
                          description="rows read = rows kept + rows quarantined"),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="ingest_market_data",
)
def ingest_market_data(
    context: dg.AssetExecutionContext,
    config: CandleIngestConfig,
    lake: LakeResource,
    market_data: MarketDataResource,
):
    """Read the whole source, validate it, write the run's daily partitions."""
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    source, source_id = market_data.open(lake.lake)
    context.log.info(f"ingesting {source_id} for {start} .. {end} (exclusive)")
    result = ingest.run_ingest(source, source_id, config.validation())
    accounts = result.accounting()
    context.log.info(
        f"read {accounts['rows_read']:,} rows: kept {accounts['rows_kept']:,}, quarantined "
        f"{accounts['rows_quarantined']:,}, filled {accounts['filled_bars']:,} bars "
        f"(load {result.seconds['load']:.1f}s, validate {result.seconds['validate']:.1f}s)"
    )
    for report in result.file_errors:
        context.log.error(f"file rejected: {report.path}: {report.error}")
    written = ingest.write_ingest(lake.lake, result, start, end)
    for table, info in written.items():
        context.log.info(f"wrote {table}: {info['rows']:,} rows in {info['files_written']} files")

    # The check reads back what was written, so it vouches for the files, not the frame in memory.
    failures = None
    if written[ingest.CANDLES]["rows"]:
        on_disk = lake.lake.read(ingest.CANDLES, date=ingest.window_dates(start, end))
        failures = validate_candles(on_disk.select(list(CANDLE_SCHEMA)))
    yield dg.AssetCheckResult(
        asset_key=ingest.CANDLES,
        check_name="candles_schema",
        passed=failures is None,
        metadata={
            "failures": dg.MetadataValue.int(0 if failures is None else failures.height),
            "failure_cases": dg.MetadataValue.md("none" if failures is None else frame_markdown(failures, 20)),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=ingest.CANDLES,
        check_name="rows_accounted",
        passed=accounts["rows_read"] == accounts["rows_kept"] + accounts["rows_quarantined"],
        metadata={k: dg.MetadataValue.int(v) for k, v in accounts.items()},
    )

    files_md = markdown_table(
        [
            {
                "file": f.path, "layout": f.layout, "rows read": f.rows_read, "quarantined": f.rows_quarantined,
                "timeframe s": f.timeframe_seconds, "error": f.error or "",
            }
            for f in result.files
        ],
        ["file", "layout", "rows read", "quarantined", "timeframe s", "error"],
    ) if result.files else "generated (no files)"
    by_reason = result.quarantine_by_reason()
    yield dg.MaterializeResult(
        asset_key=ingest.CANDLES,
        metadata={
            "source": source_id,
            **{k: dg.MetadataValue.int(v) for k, v in accounts.items()},
            "rows_written": dg.MetadataValue.int(written[ingest.CANDLES]["rows"]),
            "symbols": dg.MetadataValue.int(result.validation.candles["symbol"].n_unique()),
            "files": dg.MetadataValue.md(files_md),
            "path": dg.MetadataValue.path(written[ingest.CANDLES]["path"]),
            "dagster/row_count": dg.MetadataValue.int(written[ingest.CANDLES]["rows"]),
        },
    )
    gaps = result.validation.gaps
    yield dg.MaterializeResult(
        asset_key=ingest.GAPS,
        metadata={
            "gaps_filled": dg.MetadataValue.int(gaps.filter(pl.col("action") == "filled").height),
            "segment_breaks": dg.MetadataValue.int(gaps.filter(pl.col("action") == "segment_break").height),
            "dagster/row_count": dg.MetadataValue.int(written[ingest.GAPS]["rows"]),
        },
    )
    yield dg.MaterializeResult(
        asset_key=ingest.QUARANTINE,
        metadata={
            "source": source_id,
            "rows_quarantined": dg.MetadataValue.int(accounts["rows_quarantined"]),
            "files_rejected": dg.MetadataValue.int(accounts["file_errors"]),
            "by_reason": dg.MetadataValue.json(by_reason),
            "dagster/row_count": dg.MetadataValue.int(written[ingest.QUARANTINE]["rows"]),
        },
    )
    yield dg.MaterializeResult(
        asset_key=ingest.MISMATCHES,
        metadata={"dagster/row_count": dg.MetadataValue.int(written[ingest.MISMATCHES]["rows"])},
    )
    yield dg.MaterializeResult(
        asset_key=ingest.CALENDARS,
        metadata={"calendars": dg.MetadataValue.md(frame_markdown(result.validation.calendars))},
    )
    if ingest.REGIMES in written:
        yield dg.MaterializeResult(
            asset_key=ingest.REGIMES,
            metadata={"dagster/row_count": dg.MetadataValue.int(written[ingest.REGIMES]["rows"])},
        )
