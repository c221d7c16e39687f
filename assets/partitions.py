"""Partitioning shared by the lake's daily tables."""


import datetime as dt
import os

import dagster as dg

# Daily partitions from CLM_PARTITION_START (default covers crypto history); the range a run
# materialises comes from the source, so the start only bounds what the UI offers.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get("CLM_PARTITION_START", "2017-01-01"), end_offset=1
)


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days of the run's partition range (one day, or a whole single-run backfill)."""
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]
