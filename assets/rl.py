"""RL maintenance: a regime change resets the meta-strategy agent and the active position sizer (requested, then
applied once each); after every telemetry ingest the online update learns from the new closed trades."""


import dagster as dg
from pydantic import Field

from resources import LakeResource, RegistryResource

SIZER_DESCRIPTION = "qtable or dqn; empty: the sizer stored most recently (the Q-table sizer when none is)"


class RLResetConfig(dg.Config):
    """The regime change the reset answers (the regime sensor fills it in); empty for a reset by hand."""

    reason: str = Field("reset requested by hand", description="why the agents should reset")
    from_regime: str = Field("", description="the regime before the change")
    to_regime: str = Field("", description="the regime after the change")
    at: str = Field("", description="ISO 8601 UTC time of the bar that confirmed the change")
    confidence: float | None = Field(None, description="share of voting symbols in the new regime")
    signal_file: str = Field("", description="the signals/regime/ file, relative to the lake")
    sizer: str = Field("", description=SIZER_DESCRIPTION)


def _policy():
    from clm.policy import PolicyError, load_policy

    try:
        return load_policy()
    except PolicyError as exc:
        raise dg.Failure(str(exc)) from exc


@dg.asset(
    group_name="rl",
    kinds={"python", "duckdb"},
    pool="duckdb_writer",  # writes the registry (one DuckDB writer)
    backfill_policy=dg.BackfillPolicy.single_run(),  # a partition-range CLI run may select it
    description="Resets the RL meta-strategy agent and the active position sizer after a regime change: each "
                "request is recorded once per change (rl_versions RESET_REQUESTED), then applied once (policy "
                "rl_maintenance.reset_on_regime_change): the current table archived, a new version with epsilon "
                "0.5, and a RESET row naming the event (rl.meta.reset, rl.sizing.reset).",
)
def rl_reset(context: dg.AssetExecutionContext, config: RLResetConfig, lake: LakeResource,
             registry: RegistryResource) -> dg.MaterializeResult:
    from clm.automation.rl import reset_rl_agents
    from clm.markdown import markdown_table
    from clm.rl import RLStore, RLStoreError

    change = None
    if config.to_regime:
        change = {"from": config.from_regime or None, "to": config.to_regime, "at": config.at,
                  "confidence": config.confidence, "signal_file": config.signal_file}
    policy = _policy()
    store = RLStore(lake.lake.policies_dir, registry.registry)
    try:
        done = reset_rl_agents(store, policy, reason=config.reason, change=change, run_id=context.run.run_id,
                               sizer=config.sizer or None)
    except RLStoreError as exc:
        raise dg.Failure(str(exc)) from exc
    metadata: dict = {}
    rows, events = [], []
    for item in done:
        row = item.request
        context.log.info(f"{item.agent}: {'recorded' if item.new_request else 'already recorded'}: rl_versions "
                         f"{row['version_id']} {row['status']} ({row['reason']})")
        reset = item.reset
        if reset is not None:
            event = reset.event.metrics.get("event", "")
            events.append(event)
            outcome = "reset"
            context.log.info(f"{item.agent}: {event}: {reset.archived.parent_version} archived as "
                             f"{reset.archived.version}, new version {reset.started.version} "
                             f"(epsilon {reset.started.epsilon})")
        elif item.applied:
            outcome = "; ".join(f"skipped: {a.reason}" for a in item.applied)
            context.log.info(f"{item.agent}: {outcome}")
        else:
            outcome = "nothing to do: the request was already applied"
            context.log.info(f"{item.agent}: {outcome}")
        summary = {
            "agent": item.agent, "request": int(row["version_id"]), "new_request": item.new_request,
            "outcome": outcome, "archived_version": reset.archived.version if reset else "",
            "new_version": reset.started.version if reset else "", "event": events[-1] if reset else "",
            "current_version": item.current.version if item.current else "",
            "epsilon": item.current.epsilon if item.current else None,
        }
        rows.append(summary)
        for key in ("request", "new_request", "outcome", "archived_version", "new_version", "event",
                    "current_version"):
            metadata[f"{item.agent}.{key}"] = summary[key]
    metadata.update({
        "sizer": done[-1].agent,
        "events": dg.MetadataValue.json(events),
        "new_request": dg.MetadataValue.bool(any(item.new_request for item in done)),
        "resets": dg.MetadataValue.md(markdown_table(rows, ["agent", "request", "new_request", "outcome",
                                                            "archived_version", "new_version", "epsilon",
                                                            "event"])),
    })
    return dg.MaterializeResult(metadata=metadata)


class RLOnlineConfig(dg.Config):
    """The online learner's batch and baseline sizes (``clm.rl.online.OnlineConfig``) and the sizer."""

    batch_size: int = Field(50, description="experiences per update and per KL check")
    min_baseline: int = Field(200, description="baseline rewards needed before batches are checked")
    sizer: str = Field("", description=SIZER_DESCRIPTION)


@dg.asset(
    group_name="rl_online",  # not in group rl: rl_maintenance (a regime change) must not run it
    deps=["feedback_events"],
    kinds={"python", "duckdb"},
    pool="duckdb_writer",  # writes the registry (one DuckDB writer)
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="The online path: new trade.closed rows of feedback_events (past each agent's cursor) train the "
                "meta-strategy agent and the active sizer in batches, after their pending resets; a batch whose "
                "reward distribution drifted from the baseline by more than policy rl_maintenance."
                "drift_kl_threshold (KL) is skipped and the buffer cleared (rl_versions UPDATE_SKIPPED with the "
                "reason); a snapshot every snapshot_interval_trades trades. Nothing new: nothing written.",
)
def rl_online_update(context: dg.AssetExecutionContext, config: RLOnlineConfig, lake: LakeResource,
                     registry: RegistryResource) -> dg.MaterializeResult:
    import polars as pl

    from clm.automation.rl import TRADE_CLOSED, online_update
    from clm.markdown import markdown_table
    from clm.rl import RLConfigError, RLStore, RLStoreError
    from clm.telemetry import EVENT_SCHEMA

    policy = _policy()
    events = (lake.lake.scan_or_empty("feedback_events", EVENT_SCHEMA)
              .filter(pl.col("event_type") == TRADE_CLOSED).collect())
    store = RLStore(lake.lake.policies_dir, registry.registry)
    try:
        outcomes = online_update(store, events, policy, sizer=config.sizer or None,
                                 config={"batch_size": config.batch_size, "min_baseline": config.min_baseline})
    except (RLConfigError, RLStoreError) as exc:
        raise dg.Failure(str(exc)) from exc
    batches, metadata = [], {}
    for out in outcomes:
        for reset in out.resets:
            context.log.info(f"{out.agent}: pending reset applied: {reset}")
        for i, report in enumerate(out.reports, start=1):
            kl = "not checked" if report.kl is None else f"{report.kl:.3f}"
            verdict = "SKIPPED" if report.skipped else "learnt"
            line = (f"{out.agent}: batch {i}: {report.events} trades {verdict}, mean reward {report.mean_reward:.3f}, "
                    f"KL {kl}: {report.reason}")
            (context.log.warning if report.skipped else context.log.info)(line)
            if report.snapshot is not None:
                context.log.info(f"{out.agent}: snapshot {report.snapshot.version} ({report.snapshot.reason})")
            batches.append({"agent": out.agent, "batch": i, "trades": report.events, "outcome": verdict,
                            "mean_reward": round(report.mean_reward, 4),
                            "kl": None if report.kl is None else round(report.kl, 4), "reason": report.reason})
        for message in out.rejections:
            context.log.warning(f"{out.agent}: telemetry row rejected: {message}")
        context.log.info(
            f"{out.agent}: {out.rows_read} new trade.closed rows: {out.learnt} learnt, {out.skipped} skipped by the "
            f"KL guardrail, {out.ignored} for another agent, {out.rejected} rejected, {out.pending} waiting for a "
            f"full batch; version {out.version_before or '-'} -> {out.version_after or '-'}"
            + ("" if out.saved else " (nothing new: nothing written)"))
        rewards = [r.mean_reward * r.events for r in out.reports]
        checked = [r.kl for r in out.reports if r.kl is not None]
        metadata.update({
            f"{out.agent}.events_read": out.rows_read,
            f"{out.agent}.events_used": out.learnt,
            f"{out.agent}.events_skipped": out.skipped,
            f"{out.agent}.skip_reasons": dg.MetadataValue.json(out.skip_reasons),
            f"{out.agent}.rejected": dg.MetadataValue.json({"count": out.rejected, "reasons": out.rejections[:20]}),
            f"{out.agent}.pending": out.pending,
            f"{out.agent}.mean_reward": (sum(rewards) / sum(r.events for r in out.reports)) if rewards else None,
            f"{out.agent}.max_kl": max(checked) if checked else None,
            f"{out.agent}.version": out.version_after or "",
            f"{out.agent}.snapshots": dg.MetadataValue.json(
                [r.snapshot.version for r in out.reports if r.snapshot is not None]),
        })
    metadata.update({
        "sizer": outcomes[-1].agent,
        "trade_closed_rows": events.height,
        "events_read": sum(o.rows_read for o in outcomes),
        "events_used": sum(o.learnt for o in outcomes),
        "events_skipped": sum(o.skipped for o in outcomes),
        "skip_reasons": dg.MetadataValue.json([f"{o.agent}: {r}" for o in outcomes for r in o.skip_reasons]),
        "drift_kl_threshold": policy.rl_maintenance.drift_kl_threshold,
        "versions": dg.MetadataValue.json({o.agent: o.version_after for o in outcomes}),
        "batches": dg.MetadataValue.md(markdown_table(batches, ["agent", "batch", "trades", "outcome", "mean_reward",
                                                                "kl", "reason"])),
    })
    return dg.MaterializeResult(metadata=metadata)
