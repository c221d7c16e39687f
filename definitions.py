"""The CLM code location: every asset, check, job, schedule, sensor and resource, assembled in one place."""

import warnings

import dagster as dg

# Single-run backfill policies (a partition range in one run) are beta in Dagster 1.13 and used
# deliberately; their warning on every load says nothing new.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from assets import all_assets  # noqa: E402
from jobs import all_jobs  # noqa: E402
from jobs.schedules import all_schedules  # noqa: E402
from resources import build_resources  # noqa: E402
from sensors import all_sensors  # noqa: E402

defs = dg.Definitions(
    assets=all_assets,
    jobs=all_jobs,
    schedules=all_schedules,
    sensors=all_sensors,
    resources=build_resources(),
)
