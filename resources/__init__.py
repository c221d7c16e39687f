"""Dagster resources, settings from the environment (``dg.EnvVar``)."""


import os

import dagster as dg

from resources.lake import LakeResource
from resources.market_data import MarketDataResource


def _env(name: str, default: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (so the UI shows where the value comes from), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "lake": LakeResource(root=_env("CLM_LAKE", "data_lake")),
        "market_data": MarketDataResource(source=_env("CLM_SOURCE", "synthetic")),
    }


__all__ = ["LakeResource", "MarketDataResource", "build_resources"]
