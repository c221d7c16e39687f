"""Dagster resource over the model registry: assets get a ``clm.registry.Registry``, never a database."""


import dagster as dg

from clm.registry import Registry, open_registry
from resources.lake import LakeResource


class RegistryResource(dg.ConfigurableResource):
    """The model registry: DuckDB inside the lake, unless ``url`` (env ``CLM_REGISTRY_URL``) names another backend."""

    lake: LakeResource
    url: str = ""

    @property
    def registry(self) -> Registry:
        return open_registry(self.lake.lake, self.url or None)
