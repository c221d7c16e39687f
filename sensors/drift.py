"""Drift and performance signal files become runs: MEDIUM a partial retrain, HIGH a full one, CRITICAL a
trading halt and a full retrain; LOW is logged. One run per file, also across daemon restarts."""


import dagster as dg

from assets.training import ENGINES
from clm.automation.actions import Action, decide_drift
from clm.automation.halt import write_halt
from clm.automation.jobs import REASON_TAG, SIGNAL_FILE_TAG, TRIGGER_TAG, RetrainLedger, tag_text
from clm.automation.signals import DRIFT_KINDS, dump_cursor
from clm.policy import load_policy
from jobs import full_retrain, partial_retrain
from resources import LakeResource, RegistryResource
from sensors.signal_files import scan_and_reject

# what a partial retrain runs besides the affected engines: all of them are re-evaluated and re-voted
PARTIAL_DOWNSTREAM = ("evaluation", "consensus", "training_report", "lake_catalog")


def partial_selection(model_types) -> list[dg.AssetKey]:
    return [dg.AssetKey(f"model_{t}") for t in model_types] + [dg.AssetKey(k) for k in PARTIAL_DOWNSTREAM]


@dg.sensor(
    jobs=[full_retrain, partial_retrain],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Acts on signals/drift/ and signals/performance/ files: LOW logged, MEDIUM partial retrain of the "
                "named model types, HIGH full retrain, CRITICAL signals/halt.json then a full retrain; retrains "
                "inside policy min_retrain_interval_hours are skipped (retraining_jobs SKIPPED). Bad files go to "
                "signals/rejected/ with a reason.",
)
def drift_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, registry: RegistryResource):
    store = lake.lake
    scan = scan_and_reject(context, store, DRIFT_KINDS)
    if not scan.signals:
        return dg.SensorResult(skip_reason=f"no new drift or performance signals in {store.root / 'signals'}",
                               cursor=dump_cursor(scan.cursor))
    ledger = RetrainLedger(registry.registry)
    policy = None
    requests = []
    for signal_file in scan.signals:
        signal = signal_file.signal
        decision = decide_drift(signal.severity, signal.model_types, ENGINES)
        trigger = f"{signal_file.kind}:{signal.severity}"
        context.log.info(f"{signal_file.relative}: {signal.severity} {signal.drift_type} drift -> "
                         f"{decision.action} ({decision.reason})")
        if decision.action is Action.LOG_ONLY:
            continue
        reason = f"{trigger} {signal.drift_type} ({signal_file.relative}): {decision.reason}"
        if decision.action is Action.HALT_AND_FULL_RETRAIN and ledger.decision(signal_file.run_key) is None:
            path = write_halt(store, f"CRITICAL {signal.drift_type} drift detected at "
                                     f"{signal.detected_at:%Y-%m-%dT%H:%M:%SZ} ({signal_file.relative})",
                              source="drift_sensor",
                              details={"signal_file": signal_file.relative, "features": list(signal.features[:50]),
                                       "model_types": list(signal.model_types)})
            context.log.warning(f"trading halted: {path} written; serving refuses to trade until it is removed")
        tags = {TRIGGER_TAG: trigger, SIGNAL_FILE_TAG: signal_file.relative, "clm/action": str(decision.action),
                REASON_TAG: tag_text(reason)}
        if decision.action is Action.PARTIAL_RETRAIN:
            tags["clm/model_types"] = ",".join(decision.model_types)
        if policy is None:
            policy = load_policy()  # fresh each evaluation; a broken file fails the tick, naming the key
        outcome = ledger.request(decision.action.job, run_key=signal_file.run_key, trigger_reason=tag_text(reason),
                                 tags=tags, min_interval_hours=policy.min_retrain_interval_hours)
        if not outcome.launch:
            context.log.warning(f"{signal_file.relative}: {decision.action.job} not launched: {outcome.reason}")
            continue
        selection = partial_selection(decision.model_types) if decision.action is Action.PARTIAL_RETRAIN else None
        requests.append(dg.RunRequest(run_key=signal_file.run_key, job_name=decision.action.job,
                                      asset_selection=selection, tags=tags))
        assets = ", ".join(k.to_user_string() for k in selection) if selection else "all its assets"
        context.log.info(f"{signal_file.relative}: {decision.action.job} run requested ({assets}; "
                         f"run_key {signal_file.run_key}; {TRIGGER_TAG} {trigger})")
    cursor = dump_cursor(scan.cursor)
    if not requests:
        return dg.SensorResult(skip_reason=f"{len(scan.signals)} new signal(s), no run to launch (see the log)",
                               cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
