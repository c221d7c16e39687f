"""The tradable universe; later assets take their symbol list from it."""


import dagster as dg
from pydantic import Field

from clm.data import ingest
from clm.data.universe import UniverseConfig, select_universe
from clm.markdown import frame_markdown
from resources import LakeResource


class UniverseAssetConfig(dg.Config):
    min_liquidity: float = Field(0.0, ge=0, description="minimum median daily quote volume")
    max_spread_bps: float = Field(50.0, gt=0, description="maximum median spread, bps")


@dg.multi_asset(
    backfill_policy=dg.BackfillPolicy.single_run(),  # lets `dagster asset materialize --partition-range` include it
    specs=[
        dg.AssetSpec("universe", deps=[ingest.CANDLES], group_name="market_data", kinds={"polars", "parquet"},
                     description="Symbols liquid and tight enough to trade, with their liquidity statistics.",
                     automation_condition=dg.AutomationCondition.eager()),
        dg.AssetSpec("do_not_trade", deps=[ingest.CANDLES], group_name="market_data", kinds={"polars", "parquet"},
                     description="Symbols left out of the universe, each with its reason.",
                     automation_condition=dg.AutomationCondition.eager()),
    ],
)
def universe(context: dg.AssetExecutionContext, config: UniverseAssetConfig, lake: LakeResource):
    candles = lake.lake.scan(ingest.CANDLES)
    selected, excluded = select_universe(
        candles, UniverseConfig(min_liquidity=config.min_liquidity, max_spread_bps=config.max_spread_bps)
    )
    lake.lake.write_table("universe", selected)
    lake.lake.write_table("do_not_trade", excluded)
    context.log.info(f"universe: {selected.height} symbols kept, {excluded.height} excluded")
    yield dg.MaterializeResult(
        asset_key="universe",
        metadata={"dagster/row_count": selected.height, "symbols": dg.MetadataValue.md(frame_markdown(selected))},
    )
    yield dg.MaterializeResult(
        asset_key="do_not_trade",
        metadata={"dagster/row_count": excluded.height, "excluded": dg.MetadataValue.md(frame_markdown(excluded))},
    )
