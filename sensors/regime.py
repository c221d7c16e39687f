"""Regime-change files become the RL reset run and, when the policy says so, a full retrain.

Files arriving together (a backfill writes a change per switch it replays) are history up to the newest:
only the newest change launches, and a change older than one already handled launches nothing.
"""


import dagster as dg

from clm.automation.actions import decide_regime
from clm.automation.jobs import (
    FULL_RETRAIN,
    REASON_TAG,
    RL_MAINTENANCE,
    SIGNAL_FILE_TAG,
    TRIGGER_TAG,
    RetrainLedger,
    tag_text,
)
from clm.automation.signals import REGIME_KIND, dump_cursor
from clm.policy import load_policy
from jobs import full_retrain, rl_maintenance
from resources import LakeResource, RegistryResource
from sensors.signal_files import scan_and_reject


@dg.sensor(
    jobs=[rl_maintenance, full_retrain],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Acts on signals/regime/ files: the newest change launches rl_maintenance (policy "
                "rl_maintenance.reset_on_regime_change) and a full retrain (policy retrain_on_regime_change, "
                "never within min_retrain_interval_hours). Bad files go to signals/rejected/ with a reason.",
)
def regime_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, registry: RegistryResource):
    store = lake.lake
    scan = scan_and_reject(context, store, (REGIME_KIND,))
    cursor = dump_cursor(scan.cursor)
    handled = max(scan.previous, default=None)  # names sort by time: the newest change already acted on
    news = [s for s in scan.signals if handled is None or s.key > handled]
    for stale in scan.signals:
        if stale not in news:
            context.log.info(f"{stale.relative}: regime {stale.signal.change} is older than {handled}, "
                             "already acted on: history, nothing launched")
    if not news:
        return dg.SensorResult(skip_reason=f"no new regime changes in {store.signals_dir(REGIME_KIND)}", cursor=cursor)
    *superseded, latest = news
    for older in superseded:
        context.log.info(f"{older.relative}: regime {older.signal.change} superseded by {latest.relative}")
    signal = latest.signal
    policy = load_policy()  # fresh each evaluation; a broken file fails the tick, naming the key
    plan = decide_regime(signal, policy)
    context.log.info(f"{latest.relative}: {plan.reason}")
    trigger = f"regime:{signal.change}"
    tags = {TRIGGER_TAG: trigger, SIGNAL_FILE_TAG: latest.relative, REASON_TAG: tag_text(plan.reason)}
    requests = []
    if plan.rl_reset:
        config = {"reason": plan.reason, "from_regime": signal.from_regime or "", "to_regime": signal.to_regime,
                  "at": signal.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "confidence": signal.confidence,
                  "signal_file": latest.relative}
        requests.append(dg.RunRequest(run_key=f"{latest.run_key}:{RL_MAINTENANCE}", job_name=RL_MAINTENANCE,
                                      run_config={"ops": {"rl_reset": {"config": config}}},
                                      tags={**tags, "clm/action": "RL_RESET"}))
    if plan.retrain:
        run_key = f"{latest.run_key}:{FULL_RETRAIN}"
        retrain_tags = {**tags, "clm/action": "FULL_RETRAIN"}
        outcome = RetrainLedger(registry.registry).request(
            FULL_RETRAIN, run_key=run_key, trigger_reason=tag_text(f"{trigger}: {plan.reason}"), tags=retrain_tags,
            min_interval_hours=policy.min_retrain_interval_hours)
        if outcome.launch:
            requests.append(dg.RunRequest(run_key=run_key, job_name=FULL_RETRAIN, tags=retrain_tags))
        else:
            context.log.warning(f"{latest.relative}: {FULL_RETRAIN} not launched: {outcome.reason}")
    for request in requests:
        context.log.info(f"{latest.relative}: {request.job_name} run requested (run_key {request.run_key}; "
                         f"{TRIGGER_TAG} {trigger})")
    if not requests:
        return dg.SensorResult(skip_reason=f"{latest.relative}: {plan.reason}", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
