"""Market regimes per symbol and market-wide, their change signals, and the regime map report."""


import base64

import dagster as dg
from pydantic import Field

from assets.partitions import daily_partitions, partition_days
from clm.data import ingest
from clm.regimes import RegimeConfig
from clm.regimes import store as regime_store
from clm.regimes.store import (
    MARKET_REGIMES,
    REGIMES,
    REPORT_JSON,
    REPORT_PNG,
    lookback_days,
    materialise_regimes,
)
from resources import LakeResource

REGIME_LOOKBACK_DAYS = lookback_days(RegimeConfig())


class RegimeAssetConfig(dg.Config):
    """The market vote and the history the cut-offs are learnt from; see ``docs/regimes.md``."""

    hysteresis_bars: int = Field(12, description="bars a new majority must persist before the market switches")
    majority_share: float = Field(0.5, description="share of voting symbols the leading regime needs")
    baseline_days: float = Field(7.0, description="history of the time-of-day baselines")
    level_days: float = Field(14.0, description="history of the volatility / liquidity level quantiles")

    def regime_config(self) -> RegimeConfig:
        try:
            return RegimeConfig(
                hysteresis_bars=self.hysteresis_bars, majority_share=self.majority_share,
                baseline_days=self.baseline_days, level_days=self.level_days,
            )
        except ValueError as exc:
            raise dg.Failure(f"invalid regime config: {exc}") from exc


@dg.multi_asset(
    specs=[
        dg.AssetSpec(REGIMES, description="Causal regime per symbol and bar (trend/range/panic/illiquid), "
                     "volatility and liquidity levels, with the scores behind them.",
                     deps=[dg.AssetDep(ingest.CANDLES, partition_mapping=dg.TimeWindowPartitionMapping(
                         start_offset=-REGIME_LOOKBACK_DAYS, end_offset=0))],
                     group_name="regimes", kinds={"polars", "parquet"},
                     automation_condition=dg.AutomationCondition.eager()),
        dg.AssetSpec(MARKET_REGIMES, description="Market-wide regime: majority over the universe with "
                     "hysteresis; each change writes signals/regime/regime_<UTC>.json.",
                     deps=[REGIMES], group_name="regimes", kinds={"polars", "parquet", "json"},
                     automation_condition=dg.AutomationCondition.eager()),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="detect_regimes",
)
def detect_regimes(context: dg.AssetExecutionContext, config: RegimeAssetConfig, lake: LakeResource):
    """Each day from its own look-back window, so labels and signals do not depend on the run's range."""
    days = partition_days(context)
    result = materialise_regimes(lake.lake, days, config.regime_config(), log=context.log.info)
    context.log.info(
        f"regimes: {result.rows:,} rows ({result.warm_rows:,} warm), {len(result.changes)} market changes, "
        f"{len(result.signals)} signal files in {result.seconds:.1f}s"
    )
    yield dg.MaterializeResult(
        asset_key=REGIMES,
        metadata={
            "warm_rows": dg.MetadataValue.int(result.warm_rows),
            "lookback_days": dg.MetadataValue.int(result.lookback_days),
            "dagster/row_count": dg.MetadataValue.int(result.rows),
        },
    )
    yield dg.MaterializeResult(
        asset_key=MARKET_REGIMES,
        metadata={
            "changes": dg.MetadataValue.int(len(result.changes)),
            "signal_files": dg.MetadataValue.json(result.signals[-20:]),
            "signals_dir": dg.MetadataValue.path(str(lake.lake.signals_dir("regime"))),
            "dagster/row_count": dg.MetadataValue.int(result.market_rows),
        },
    )


@dg.asset(
    backfill_policy=dg.BackfillPolicy.single_run(),  # lets `dagster asset materialize --partition-range` include it
    deps=[REGIMES, MARKET_REGIMES],
    group_name="reports",
    kinds={"polars", "json"},
    automation_condition=dg.AutomationCondition.eager(),
)
def regime_map(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Detected regimes scored against the synthetic market's truth: confusion matrices, balanced accuracy."""
    report = regime_store.regime_map(lake.lake)
    scores = {s["level"]: s["balanced_accuracy"] for s in report["scores"]}
    context.log.info(f"regime map: balanced accuracy {scores or 'unscored (no ground truth)'}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report["markdown"]),
            "plot": dg.MetadataValue.md(f"![regime map](data:image/png;base64,{base64.b64encode(report['png']).decode()})"),
            **{f"balanced_accuracy_{level}": dg.MetadataValue.float(v) for level, v in scores.items()},
            "market_changes": dg.MetadataValue.int(report["market_changes"]),
            "path": dg.MetadataValue.path(str(lake.lake.root / REPORT_JSON)),
            "plot_path": dg.MetadataValue.path(str(lake.lake.root / REPORT_PNG)),
        }
    )

