"""The DuckDB catalog: one view per lake table, so SQL clients query tables by name."""


import dagster as dg

from clm.data import ingest
from resources import LakeResource

CATALOG_DEPS = [
    ingest.CANDLES, ingest.GAPS, ingest.QUARANTINE, ingest.MISMATCHES, ingest.CALENDARS,
    "universe", "do_not_trade", "feedback_events", "features", "labels",
    "regimes", "market_regimes", "evaluation", "consensus",
]  # not synthetic_regimes: it is skipped for file sources, and a skipped upstream would skip the catalog


@dg.asset(
    backfill_policy=dg.BackfillPolicy.single_run(),  # lets `dagster asset materialize --partition-range` include it
    deps=CATALOG_DEPS,
    group_name="lake",
    kinds={"duckdb"},
    pool="duckdb_writer",
    automation_condition=dg.AutomationCondition.eager(),
)
def lake_catalog(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Rebuilt whenever a table is written, so a new table appears as a view without a manual step."""
    tables = lake.lake.refresh_catalog()
    context.log.info(f"catalog {lake.lake.catalog_path}: {len(tables)} views")
    return dg.MaterializeResult(
        metadata={
            "views": dg.MetadataValue.json(tables),
            "path": dg.MetadataValue.path(str(lake.lake.catalog_path)),
            "query": dg.MetadataValue.md(
                f"```\nduckdb {lake.lake.catalog_path} \"select symbol, count(*) from candles group by 1\"\n```"
            ),
        }
    )
