"""RL maintenance: a regime change resets the RL meta-strategy agent (requested, then applied once)."""


import dagster as dg
from pydantic import Field

from resources import LakeResource, RegistryResource


class RLResetConfig(dg.Config):
    """The regime change the reset answers (the regime sensor fills it in); empty for a reset by hand."""

    reason: str = Field("reset requested by hand", description="why the agent should reset")
    from_regime: str = Field("", description="the regime before the change")
    to_regime: str = Field("", description="the regime after the change")
    at: str = Field("", description="ISO 8601 UTC time of the bar that confirmed the change")
    confidence: float | None = Field(None, description="share of voting symbols in the new regime")
    signal_file: str = Field("", description="the signals/regime/ file, relative to the lake")


@dg.asset(
    group_name="rl",
    kinds={"python", "duckdb"},
    pool="duckdb_writer",  # writes the registry (one DuckDB writer)
    backfill_policy=dg.BackfillPolicy.single_run(),  # a partition-range CLI run may select it
    description="Resets the RL meta-strategy agent after a regime change: the request is recorded once per "
                "change (rl_versions RESET_REQUESTED), then applied once (policy rl_maintenance."
                "reset_on_regime_change): the current Q-table archived, a new version with epsilon 0.5.",
)
def rl_reset(context: dg.AssetExecutionContext, config: RLResetConfig, lake: LakeResource,
             registry: RegistryResource) -> dg.MaterializeResult:
    from clm.automation.rl import META_AGENT, request_rl_reset
    from clm.policy import PolicyError, load_policy
    from clm.rl import MetaStrategyAgent, RLStore

    change = None
    if config.to_regime:
        change = {"from": config.from_regime or None, "to": config.to_regime, "at": config.at,
                  "confidence": config.confidence, "signal_file": config.signal_file}
    row, new = request_rl_reset(registry.registry, reason=config.reason, change=change, agent=META_AGENT,
                                run_id=context.run.run_id)
    context.log.info(f"{'recorded' if new else 'already recorded'}: rl_versions {row['version_id']} "
                     f"{row['status']} for {row['agent']} ({row['reason']})")
    try:
        maintenance = load_policy().rl_maintenance
    except PolicyError as exc:
        raise dg.Failure(str(exc)) from exc
    store = RLStore(lake.lake.policies_dir, registry.registry)
    agent = store.load(META_AGENT)
    if agent is None:  # nothing learnt yet: the first version is what the reset archives
        agent = MetaStrategyAgent()
        store.snapshot(agent, reason="first version")
    applied = store.apply_reset_requests(agent, maintenance)
    for result in applied:
        context.log.info(f"{META_AGENT}: {result}")
    current = store.current(META_AGENT)
    return dg.MaterializeResult(metadata={
        "version_id": dg.MetadataValue.int(int(row["version_id"])),
        "agent": row["agent"],
        "status": row["status"],
        "reason": row["reason"],
        "new_request": dg.MetadataValue.bool(new),
        "parent_version": row["parent_version"] or "",
        "applied": dg.MetadataValue.json([str(r) for r in applied]),
        "current_version": current.version if current else "",
    })
