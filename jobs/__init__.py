"""Jobs: asset selections that runs, sensors, schedules and the CLI launch."""


import dagster as dg

from clm.automation.jobs import DRIFT_CHECK, FULL_RETRAIN, PARTIAL_RETRAIN, RL_MAINTENANCE, TRIGGER_TAG

# the training group and the report of each training run
_training = dg.AssetSelection.groups("training") | dg.AssetSelection.assets("training_report")
_monitoring = dg.AssetSelection.groups("monitoring")
_rl = dg.AssetSelection.groups("rl")
_rl_online = dg.AssetSelection.groups("rl_online")  # the online update: after each ingest, never on a regime change
_rl_training = dg.AssetSelection.groups("rl_training")  # offline policy training: after training, not per ingest
# A run launched by hand says so; a sensor's or schedule's run request overrides the tag with its trigger.
_MANUAL = {TRIGGER_TAG: "manual"}

# Market data, telemetry, features, labels, regimes, reports and the catalog: what a landed file updates.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.all() - _training - _monitoring - _rl - _rl_online - _rl_training,
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

# Shadow tests of the challengers, the champions' health, drift and the RL online update: what runs as new
# bars and telemetry arrive (monitoring_after_ingest_sensor launches it after every ingest).
monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=_monitoring | _rl_online,
    description="Shadow-test every SHADOW challenger against its champion on the bars since their training, "
                "check every champion's health, look for drift (policy.yaml, read fresh), and train the RL "
                "agents on the trades closed since their last update (rl_online_update).",
)

# What the automation launches (sensors/, jobs/schedules.py); every run is tagged clm/trigger.
full_retrain = dg.define_asset_job(
    FULL_RETRAIN,
    selection=_training | dg.AssetSelection.assets("lake_catalog"),
    tags=_MANUAL,
    description="Retrain every configured engine, evaluate, vote the consensus and report: launched by the "
                "weekly schedule, HIGH or CRITICAL drift, or a regime change when the policy says so "
                "(never within policy min_retrain_interval_hours of the last retrain).",
)

partial_retrain = dg.define_asset_job(
    PARTIAL_RETRAIN,
    selection=_training | dg.AssetSelection.assets("lake_catalog"),
    tags=_MANUAL,
    description="Retrain only the model types a MEDIUM drift names: launched with an asset selection of their "
                "model_<type> assets plus evaluation, consensus, training_report and lake_catalog (tag "
                "clm/model_types); the other engines keep their stored results. Launched whole, it retrains all.",
)

rl_maintenance = dg.define_asset_job(
    RL_MAINTENANCE,
    selection=_rl,
    tags=_MANUAL,
    description="Reset the RL meta-strategy agent and the active position sizer after a regime change (an "
                "rl_versions row RESET_REQUESTED per agent, applied once); run config ops.rl_reset.config names "
                "the change.",
)

# The RL policies trained offline on a replay of the champion's signals, judged against baselines, registered.
rl_policy_training = dg.define_asset_job(
    "rl_policy_training",
    selection=_rl_training,
    tags=_MANUAL,
    description="Train the RL meta-strategy agent and sizer offline on a replay of the champion's signals, evaluate "
                "them on a held-out period against fixed-size and random baselines, register them (rl_policies).",
)

drift_check = dg.define_asset_job(
    DRIFT_CHECK,
    selection=dg.AssetSelection.assets("drift_detector", "model_supervisor"),
    tags=_MANUAL,
    description="Look for drift and check every champion's health: the two checks that write the signal files "
                "drift_sensor acts on (every policy drift_detection.check_interval_hours).",
)

all_jobs = [ingest_job, training_job, monitoring_job, full_retrain, partial_retrain, rl_maintenance, drift_check,
            rl_policy_training]
