"""Reports people read: the data-integrity report."""


import base64

import dagster as dg
import polars as pl

from clm.data import ingest
from clm.data.integrity import integrity_markdown, integrity_report
from clm.data.plots import integrity_plot
from clm.data.schema import GAP_SCHEMA, MISMATCH_SCHEMA, QUARANTINE_SCHEMA
from clm.data.validation import CALENDAR_SCHEMA
from resources import LakeResource


@dg.asset(
    backfill_policy=dg.BackfillPolicy.single_run(),  # lets `dagster asset materialize --partition-range` include it
    deps=[ingest.CANDLES, ingest.GAPS, ingest.QUARANTINE, ingest.MISMATCHES, ingest.CALENDARS],
    group_name="reports",
    kinds={"polars", "json"},
    automation_condition=dg.AutomationCondition.eager(),
)
def data_integrity(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Per symbol: bars, gaps, filled bars, segments, outliers, quarantined rows by reason, vendor mismatches."""
    store = lake.lake
    candles = store.scan(ingest.CANDLES)
    gaps = store.scan_or_empty(ingest.GAPS, GAP_SCHEMA).collect()
    quarantine = store.scan_or_empty(ingest.QUARANTINE, {**QUARANTINE_SCHEMA, "source": pl.String()}).collect()
    mismatches = store.scan_or_empty(ingest.MISMATCHES, MISMATCH_SCHEMA).collect()
    calendars = store.scan_or_empty(ingest.CALENDARS, CALENDAR_SCHEMA).collect()
    report = integrity_report(candles, gaps, quarantine, mismatches, calendars)
    path = store.write_json(ingest.INTEGRITY_REPORT, report)
    png = integrity_plot(candles, gaps)
    plot_path = store.write_bytes(ingest.INTEGRITY_PLOT, png)
    context.log.info(f"integrity report written to {path}, plot to {plot_path}")
    totals = report.get("totals", {})
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(integrity_markdown(report)),
            "plot": dg.MetadataValue.md(f"![integrity](data:image/png;base64,{base64.b64encode(png).decode()})"),
            "plot_path": dg.MetadataValue.path(str(plot_path)),
            "path": dg.MetadataValue.path(str(path)),
            **{k: v for k, v in totals.items() if isinstance(v, int | float)},
        }
    )
