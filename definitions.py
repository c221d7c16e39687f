"""The CLM code location: every asset, check, job, sensor and resource, assembled in one place."""

import dagster as dg

from assets import all_assets
from jobs import all_jobs
from resources import build_resources
from sensors import all_sensors

defs = dg.Definitions(
    assets=all_assets,
    jobs=all_jobs,
    sensors=all_sensors,
    resources=build_resources(),
)
