"""Jobs: asset selections that runs, sensors and the CLI launch."""


import dagster as dg

# the training group and the report of each training run
_training = dg.AssetSelection.groups("training") | dg.AssetSelection.assets("training_report")
_monitoring = dg.AssetSelection.groups("monitoring")

# Market data, telemetry, features, labels, regimes, reports and the catalog: what a landed file updates.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.all() - _training - _monitoring,
    description="Ingest market data and telemetry for a partition range, build features, labels and regimes, "
                "then refresh reports and the catalog.",
)

# Every configured engine under purged walk-forward, their evaluation net of costs, the gate and consensus.
training_job = dg.define_asset_job(
    "training_job",
    selection=_training | dg.AssetSelection.assets("lake_catalog"),
    description="Train every configured engine (CLM_ENGINES) on the current feature version, evaluate them "
                "beside baselines, learn the regime gate, vote the consensus and write the training-run report.",
)

# Shadow tests of the challengers, the champions' health and drift: what runs as new bars arrive.
monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=_monitoring,
    description="Shadow-test every SHADOW challenger against its champion on the bars since their training, "
                "check every champion's health, and look for drift (policy.yaml, read fresh).",
)

all_jobs = [ingest_job, training_job, monitoring_job]
