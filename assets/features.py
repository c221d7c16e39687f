"""Feature store and labels: daily partitions computed from candles with their look-back/ahead."""


import base64

import dagster as dg
import polars as pl
from pydantic import Field

from assets.partitions import daily_partitions, partition_days
from clm.data import ingest
from clm.features import FeatureConfig
from clm.features.build import FEATURE_SETS, WARM
from clm.features.plots import feature_overview_plot
from clm.features.store import FEATURES, default_lookback_days, materialise_features
from clm.labels import LabelConfig, label_summary
from clm.labels.store import LABELS, lookahead_days, materialise_labels
from clm.markdown import markdown_table
from resources import LakeResource

# Dagster's view of the dependency (staleness, backfills) for the default sets on 5-minute bars; the
# asset itself reads whatever look-back the actual timeframe needs.
FEATURE_LOOKBACK_DAYS = default_lookback_days()
LABEL_LOOKAHEAD_DAYS = lookahead_days(LabelConfig(), 300)


class FeatureStoreConfig(dg.Config):
    """Which feature sets to build; any change gives a new store version beside the old one."""

    sets: list[str] = Field(default_factory=lambda: list(FEATURE_SETS), description="of core31, ta, context")
    reference_symbol: str | None = Field(None, description="cross-asset reference; default: BTC/ETH major if present")
    higher_timeframes: list[str] = Field(default_factory=lambda: ["1h", "4h"], description="context timeframes")

    def feature_config(self) -> FeatureConfig:
        try:
            return FeatureConfig(tuple(self.sets), self.reference_symbol, tuple(self.higher_timeframes))
        except ValueError as exc:
            raise dg.Failure(f"invalid feature config: {exc}") from exc


class LabelStoreConfig(dg.Config):
    """Label definitions; see ``clm.labels.forward`` for the exact meaning of each."""

    horizons: list[int] = Field(default_factory=lambda: [1, 12, 48], description="bars after entry")
    latency_bars: int = Field(1, description="bars between the decision bar and entry")
    direction_threshold: float = Field(10.0, description="flat band, in bps or ATR multiples")
    direction_unit: str = Field("bps", description='"bps" or "atr"')
    triple_barrier: bool = True
    take_profit_atr: float = 2.0
    stop_loss_atr: float = 1.0

    def label_config(self) -> LabelConfig:
        try:
            return LabelConfig(
                tuple(self.horizons), self.latency_bars, self.direction_threshold, self.direction_unit,  # type: ignore[arg-type]
                self.triple_barrier, self.take_profit_atr, self.stop_loss_atr,
            )
        except ValueError as exc:
            raise dg.Failure(f"invalid label config: {exc}") from exc


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[dg.AssetDep(ingest.CANDLES, partition_mapping=dg.TimeWindowPartitionMapping(
        start_offset=-FEATURE_LOOKBACK_DAYS, end_offset=0))],
    group_name="features",
    kinds={"polars", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("warm_rows_complete", asset=FEATURES, blocking=True,
                                   description="warm rows have a finite value for every bar-level feature")],
)
def features(context: dg.AssetExecutionContext, config: FeatureStoreConfig, lake: LakeResource):
    """Look-ahead-free features per bar: features/version=<definition hash>/date=.../symbol=...

    Each day is computed from its own window (the day plus the warm-up look-back), so the result does
    not depend on the range a run covers.
    """
    days = partition_days(context)
    context.log.info(f"features for {days[0]} .. {days[-1]} ({len(days)} days)")
    result = materialise_features(lake.lake, days, config.feature_config(), log=context.log.info)
    selection = result.selection
    context.log.info(
        f"features version {result.version}: {result.rows:,} rows ({result.warm_rows:,} warm) in {result.seconds:.1f}s"
    )
    # the check reads back what was written
    written = lake.lake.scan(FEATURES, version=[result.version]).filter(pl.col("date").is_in(days))
    plain = [f.name for f in selection.features if not f.cross]
    bad = (
        written.filter(pl.col(WARM))
        .select([(~pl.col(c).is_finite()).fill_null(True).sum().alias(c) for c in plain])
        .collect()
    )
    bad_counts = {c: int(bad[c][0]) for c in plain if bad.height and bad[c][0]}
    plot = feature_overview_plot(written.filter(pl.col("date") == days[-1]).collect(), selection.names)
    yield dg.MaterializeResult(
        metadata={
            "version": result.version,
            "sets": dg.MetadataValue.json(list(selection.sets)),
            "features": dg.MetadataValue.int(len(selection.names)),
            "timeframe_seconds": dg.MetadataValue.int(result.timeframe_seconds),
            "lookback_days": dg.MetadataValue.int(result.lookback_days),
            "warmup_bars": dg.MetadataValue.int(selection.warmup_bars(result.timeframe_seconds)),
            "warm_rows": dg.MetadataValue.int(result.warm_rows),
            "versions_in_store": dg.MetadataValue.json(lake.lake.versions(FEATURES)),
            "definitions": dg.MetadataValue.md(markdown_table(
                selection.describe(result.timeframe_seconds),
                ["name", "category", "warmup_bars", "timeframe", "cross", "formula", "hash"],
            )),
            "overview": dg.MetadataValue.md(
                f"![features on {days[-1]}](data:image/png;base64,{base64.b64encode(plot).decode()})"
            ),
            "path": dg.MetadataValue.path(result.path),
            "dagster/row_count": dg.MetadataValue.int(result.rows),
        }
    )
    yield dg.AssetCheckResult(
        check_name="warm_rows_complete",
        passed=not bad_counts,
        metadata={"non_finite_by_feature": dg.MetadataValue.json(bad_counts)},
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(ingest.CANDLES, partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=0, end_offset=LABEL_LOOKAHEAD_DAYS, allow_nonexistent_upstream_partitions=True)),
        dg.AssetDep(FEATURES, partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=0, end_offset=LABEL_LOOKAHEAD_DAYS, allow_nonexistent_upstream_partitions=True)),
    ],
    group_name="features",
    kinds={"polars", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[dg.AssetCheckSpec("rows_accounted", asset=LABELS, blocking=True,
                                   description="one label row per candle; every missing label has a reason")],
)
def labels(context: dg.AssetExecutionContext, config: LabelStoreConfig, lake: LakeResource):
    """Forward returns after an execution latency, direction classes and triple-barrier outcomes,
    each with ``label_end`` for purging; labels/date=.../symbol=..."""
    days = partition_days(context)
    label_config = config.label_config()
    result = materialise_labels(lake.lake, days, label_config, log=context.log.info)
    frame = result.labels()
    summary = label_summary(frame) if frame.height else {}
    candle_rows = (
        lake.lake.scan(ingest.CANDLES).filter(pl.col("date").is_in(days)).select(pl.len()).collect().item()
    )
    unexplained = 0
    for h in label_config.horizons:
        unexplained += frame.filter(
            pl.col(f"forward_return_{h}").is_null() & pl.col(f"label_null_reason_{h}").is_null()
        ).height if frame.height else 0
    rows = [
        {"horizon": h, **{k: v for k, v in stats.items() if k != "null_reasons"},
         **{f"null: {reason}": n for reason, n in stats["null_reasons"].items()}}
        for h, stats in summary.get("horizons", {}).items()
    ]
    yield dg.MaterializeResult(
        metadata={
            "horizons": dg.MetadataValue.json(list(label_config.horizons)),
            "latency_bars": dg.MetadataValue.int(label_config.latency_bars),
            "lookahead_days": dg.MetadataValue.int(result.lookahead_days),
            "summary": dg.MetadataValue.json(summary),
            "by_horizon": dg.MetadataValue.md(markdown_table(rows, list(rows[0])) if rows else "no labels"),
            "dagster/row_count": dg.MetadataValue.int(result.rows),
        }
    )
    yield dg.AssetCheckResult(
        check_name="rows_accounted",
        passed=result.rows == candle_rows and unexplained == 0,
        metadata={
            "candle_rows": dg.MetadataValue.int(candle_rows),
            "label_rows": dg.MetadataValue.int(result.rows),
            "null_labels_without_reason": dg.MetadataValue.int(unexplained),
        },
    )
