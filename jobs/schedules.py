"""Schedules: a full retrain at least every policy ``schedule_interval_days`` and a drift check every
``drift_detection.check_interval_hours``. The cron strings only set how often the policy is consulted:
policy.yaml is read fresh at every tick, so changing it needs no reload."""


import datetime as dt

import dagster as dg

from clm.automation.jobs import REASON_TAG, TRIGGER_TAG, RetrainLedger, drift_check_due, tag_text
from clm.policy import load_policy
from jobs import drift_check, full_retrain
from resources import RegistryResource


def _tick(context: dg.ScheduleEvaluationContext) -> dt.datetime:
    tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return tick.astimezone(dt.UTC)


@dg.schedule(
    job=full_retrain,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:00 UTC: a full retrain when the last one that succeeded (or is under way) is "
                "policy schedule_interval_days old (7: weekly), unless a retrain started within "
                "min_retrain_interval_hours (then a retraining_jobs SKIPPED row says so).",
)
def weekly_full_retrain(context: dg.ScheduleEvaluationContext, registry: RegistryResource):
    policy = load_policy()
    tick = _tick(context)
    ledger = RetrainLedger(registry.registry, now=tick)
    due, why = ledger.full_retrain_due(policy.schedule_interval_days)
    if not due:
        return dg.SkipReason(why)
    run_key = f"schedule:{full_retrain.name}:{tick:%Y%m%dT%H%MZ}"
    trigger = "schedule:weekly"
    tags = {TRIGGER_TAG: trigger, REASON_TAG: tag_text(f"{trigger}: {why}")}
    outcome = ledger.request(full_retrain.name, run_key=run_key, trigger_reason=tags[REASON_TAG], tags=tags,
                             min_interval_hours=policy.min_retrain_interval_hours)
    if not outcome.launch:
        context.log.warning(f"{full_retrain.name} not launched: {outcome.reason}")
        return dg.SkipReason(outcome.reason)
    return dg.RunRequest(run_key=run_key, tags=tags)


@dg.schedule(
    job=drift_check,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Ticks hourly, launches the drift check every policy drift_detection.check_interval_hours "
                "(6: at 00, 06, 12 and 18 UTC).",
)
def drift_check_schedule(context: dg.ScheduleEvaluationContext):
    every = load_policy().drift_detection.check_interval_hours
    tick = _tick(context)
    if not drift_check_due(tick, every):
        return dg.SkipReason(f"the drift check runs every {max(1, round(every))} h; not at {tick:%H:%M} UTC")
    trigger = "schedule:drift_check"
    return dg.RunRequest(run_key=f"schedule:{drift_check.name}:{tick:%Y%m%dT%H%MZ}",
                         tags={TRIGGER_TAG: trigger, REASON_TAG: f"{trigger}: every {every:g} h"})


all_schedules = [weekly_full_retrain, drift_check_schedule]
