"""The daily summary an operator reads each morning, and the Prometheus textfile beside it."""


import datetime as dt

import dagster as dg
from pydantic import Field

from clm.markdown import markdown_table
from clm.policy import PolicyError, load_policy
from resources import LakeResource, RegistryResource

METRICS_TEXTFILE = "reports/metrics.prom"


class DailySummaryConfig(dg.Config):
    hours: float = Field(24.0, gt=0, le=24 * 31, description="how far back the summary looks")


@dg.asset(
    backfill_policy=dg.BackfillPolicy.single_run(),  # lets `dagster asset materialize --partition-range` include it
    deps=["drift_detector", "model_supervisor", "shadow_test"],
    group_name="monitoring",
    kinds={"python", "json", "prometheus"},
    description="reports/daily_summary_<date>.json over the last day: symbols processed, champions exported, "
                "what was skipped and why (do_not_trade, shadow decisions CONTINUE_TESTING / REJECT), drift events, "
                "promotions and failed retraining jobs; also refreshes the Prometheus textfile reports/metrics.prom.",
)
def daily_summary(context: dg.AssetExecutionContext, config: DailySummaryConfig, lake: LakeResource,
                  registry: RegistryResource) -> dg.MaterializeResult:
    from clm.metrics import write_textfile
    from clm.status import build_daily_summary, summary_path

    store = lake.lake
    try:
        policy = load_policy()
    except PolicyError as exc:
        raise dg.Failure(str(exc)) from exc
    reg = registry.registry if store.registry_path.exists() or registry.url else None  # reading creates no file
    summary = build_daily_summary(store, reg, now=dt.datetime.now(dt.UTC), hours=config.hours, policy=policy)
    path = summary_path(store, dt.date.fromisoformat(summary["date"]))
    store.write_json(str(path.relative_to(store.root)), summary)
    metrics = write_textfile(store.root / METRICS_TEXTFILE, store, reg)
    counts = summary["counts"]
    context.log.info(f"daily summary {path}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                     + f"; metrics {metrics}")
    skipped = [{"what": row.get("symbol") or row.get("model_id"), "kind": row["kind"],
                "reason": row["reason"]} for row in summary["skipped"]]
    return dg.MaterializeResult(metadata={
        **{k: dg.MetadataValue.int(v) for k, v in counts.items()},
        "summary": dg.MetadataValue.json(summary),
        "skipped": dg.MetadataValue.md(markdown_table(skipped, ["what", "kind", "reason"])),
        "path": dg.MetadataValue.path(str(path)),
        "metrics_textfile": dg.MetadataValue.path(str(metrics)),
    })
