"""Reports people read: the data-integrity report and the training-run report."""


import base64

import dagster as dg
import polars as pl
from pydantic import Field

from clm.data import ingest
from clm.data.integrity import integrity_markdown, integrity_report
from clm.data.plots import integrity_plot
from clm.data.schema import GAP_SCHEMA, MISMATCH_SCHEMA, QUARANTINE_SCHEMA
from clm.data.validation import CALENDAR_SCHEMA
from clm.reports.training_report import build_training_report
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


class TrainingReportConfig(dg.Config):
    """What the report needs to know that the tables do not record."""

    horizon: int = Field(12, description="label horizon in bars the engines were trained and evaluated on")


def _png_markdown(name: str, png: bytes) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dg.asset(
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["evaluation", "consensus"],
    group_name="reports",
    kinds={"polars", "markdown"},
    description="The training-run report reports/training_run_<run_id>.md: strategies net of costs against the "
                "baselines, per-trade costs, fold audit, regimes, a narrative written from the numbers, and plots "
                "(equity curve, calibration, feature importance) with metrics.json, cost_report.json and a "
                "decision-log sample beside it.",
)
def training_report(
    context: dg.AssetExecutionContext, config: TrainingReportConfig, lake: LakeResource
) -> dg.MaterializeResult:
    """Write the report for this run and attach it, its plots and its file paths to the metadata."""
    try:
        report = build_training_report(lake.lake, context.run.run_id, horizon=config.horizon)
    except ValueError as exc:
        raise dg.Failure(f"training report: {exc}") from exc
    context.log.info(f"training report written to {report.markdown_path}")
    for note in report.notes:
        context.log.warning(f"training report: {note}")
    per_trade = {
        engine: (values.get("per_trade_net_edge_bps"), values.get("trades"))
        for engine, values in report.cost_report.get("engines", {}).items()
    }
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.markdown),
            **{f"plot_{name}": _png_markdown(name, png) for name, png in report.plots.items()},
            "path": dg.MetadataValue.path(str(report.markdown_path)),
            **{f"plot_{name}_path": dg.MetadataValue.path(str(p)) for name, p in report.plot_paths.items()},
            "metrics_path": dg.MetadataValue.path(str(report.metrics_path)),
            "cost_report_path": dg.MetadataValue.path(str(report.cost_report_path)),
            **({"decision_log_sample_path": dg.MetadataValue.path(str(report.decision_log_path))}
               if report.decision_log_path is not None else {}),
            "net_bps_per_trade_and_trades": dg.MetadataValue.json(per_trade),
            "narrative_sources": dg.MetadataValue.json({s: n.source for s, n in report.narrative.items()}),
        }
    )
