"""RL maintenance: what the regime sensor asks of the RL meta-strategy agent (the RL issue builds on this)."""


import dagster as dg
from pydantic import Field

from resources import RegistryResource


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
    description="A reset request for the RL meta-strategy agent after a regime change: an rl_versions row "
                "(agent meta_strategy, status RESET_REQUESTED, the change as reason), once per change.",
)
def rl_reset(context: dg.AssetExecutionContext, config: RLResetConfig,
             registry: RegistryResource) -> dg.MaterializeResult:
    from clm.automation.rl import META_AGENT, request_rl_reset

    change = None
    if config.to_regime:
        change = {"from": config.from_regime or None, "to": config.to_regime, "at": config.at,
                  "confidence": config.confidence, "signal_file": config.signal_file}
    row, new = request_rl_reset(registry.registry, reason=config.reason, change=change, agent=META_AGENT,
                                run_id=context.run.run_id)
    context.log.info(f"{'recorded' if new else 'already recorded'}: rl_versions {row['version_id']} "
                     f"{row['status']} for {row['agent']} ({row['reason']})")
    return dg.MaterializeResult(metadata={
        "version_id": dg.MetadataValue.int(int(row["version_id"])),
        "agent": row["agent"],
        "status": row["status"],
        "reason": row["reason"],
        "new_request": dg.MetadataValue.bool(new),
        "parent_version": row["parent_version"] or "",
    })
