"""Dagster resource over the lake: the only place assets get paths from."""


import dagster as dg
from pydantic import PrivateAttr

from clm.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """Root of the Parquet lake (env ``CLM_LAKE``, default ``./data_lake``)."""

    root: str = "data_lake"

    _lake: Lake | None = PrivateAttr(default=None)

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake(self.root)
        return self._lake
