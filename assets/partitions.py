"""Partitioning shared by the lake's daily tables."""


import os

import dagster as dg

# Daily partitions from CLM_PARTITION_START (default covers crypto history); the range a run
# materialises comes from the source, so the start only bounds what the UI offers.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get("CLM_PARTITION_START", "2017-01-01"), end_offset=1
)
