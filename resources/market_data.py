"""Which market-data source feeds the ``candles`` asset."""


import dagster as dg

from clm.data.sources import open_source
from clm.data.sources.base import MarketDataSource
from clm.lake import Lake


class MarketDataResource(dg.ConfigurableResource):
    """``synthetic`` (default), ``landing`` (the lake's landing folder) or a path to a file or folder.

    Set with env ``CLM_SOURCE``; the landing sensor overrides it per run.
    """

    source: str = "synthetic"

    def open(self, lake: Lake) -> tuple[MarketDataSource, str]:
        return open_source(self.source, lake)
