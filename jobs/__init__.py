"""Jobs: asset selections that runs, sensors and the CLI launch."""


import dagster as dg

# Everything the lake holds today: market data, telemetry, universe, reports and the catalog.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.all(),
    description="Ingest market data and telemetry for a partition range, then refresh reports and the catalog.",
)

all_jobs = [ingest_job]
