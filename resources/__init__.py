"""Dagster resources, settings from the environment (``dg.EnvVar``)."""


import os

import dagster as dg

from resources.lake import LakeResource
from resources.market_data import MarketDataResource
from resources.registry import RegistryResource


def _env(name: str, default: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (so the UI shows where the value comes from), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    lake = LakeResource(root=_env("CLM_LAKE", "data_lake"))
    return {
        "lake": lake,
        "market_data": MarketDataResource(source=_env("CLM_SOURCE", "synthetic")),
        "registry": RegistryResource(lake=lake, url=_env("CLM_REGISTRY_URL", "")),
    }


__all__ = ["LakeResource", "MarketDataResource", "RegistryResource", "build_resources"]
