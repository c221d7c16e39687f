"""RL policy training: the meta-strategy agent and a sizer trained offline on a replay of the champion's signals,
judged on a held-out period against fixed-size and random baselines, registered (clm.rl.offline)."""


import base64

import dagster as dg
from pydantic import Field

from resources import LakeResource, RegistryResource

SIZERS = ("qtable", "dqn")


class RLPolicyConfig(dg.Config):
    """How the policies are trained; checked before anything is read."""

    episodes: int = Field(5, ge=1, le=1000, description="passes over the training trades (epsilon decays per trade)")
    held_out_share: float = Field(0.3, gt=0, lt=1, description="the last share of the candidate trades, held out for "
                                                               "the evaluation against the baselines")
    sizer: str = Field("qtable", description="the sizing agent: 'qtable' or 'dqn'")
    seed: int = Field(0, ge=0, description="seeds the agents, the random baseline and the bootstrap")
    horizon: int = Field(12, ge=1, description="bars a trade is held at most (the champion's label horizon)")

    def offline(self) -> dict:
        if self.sizer not in SIZERS:
            raise dg.Failure(f"invalid rl_policies config: sizer must be one of {list(SIZERS)}, got {self.sizer!r}")
        return {"episodes": self.episodes, "held_out_share": self.held_out_share, "seed": self.seed,
                "replay": {"horizon": self.horizon}, "sizing": {"agent": self.sizer}}


@dg.asset(
    deps=["consensus", "candles", "features", "regimes"],
    group_name="rl_training",  # not "rl": the regime sensor's rl_maintenance job selects that group
    kinds={"python", "duckdb"},
    pool="duckdb_writer",  # registers the policies in the registry (one DuckDB writer)
    backfill_policy=dg.BackfillPolicy.single_run(),  # a partition-range CLI run may select it
    description="Trains the RL meta-strategy agent and sizer offline on a replay of the champion's signals (the "
                "consensus decisions on historical bars, net of the policy's `costs`), evaluates them on a held-out "
                "period against fixed-size and random baselines, writes models/policies/<run_id>/ "
                "(training_report.json, agents, plot) and registers both policies (rl_meta_strategy, rl_sizing).",
)
def rl_policies(context: dg.AssetExecutionContext, config: RLPolicyConfig, lake: LakeResource,
                registry: RegistryResource) -> dg.MaterializeResult:
    offline = config.offline()
    from clm.markdown import frame_markdown
    from clm.policy import PolicyError, load_policy
    from clm.rl.config import RLConfigError
    from clm.rl.offline import run_offline

    try:
        policy = load_policy()
    except PolicyError as exc:
        raise dg.Failure(str(exc)) from exc
    try:
        result = run_offline(lake.lake, registry.registry, offline, policy=policy,
                             cost_config=policy.cost_config(),  # policy.yaml `costs`, as the evaluation uses
                             actor=f"dagster run {context.run.run_id}", run_label=context.run.run_id,
                             log=context.log.info)
    except RLConfigError as exc:
        raise dg.Failure(f"invalid rl_policies config: {exc}") from exc
    except ValueError as exc:  # no signals, no bars, an empty training or held-out set: named
        raise dg.Failure(f"rl_policies: {exc}") from exc
    evaluation = result.trained.evaluation
    png = base64.b64encode(result.plot).decode()
    return dg.MaterializeResult(metadata={
        "verdict": evaluation.verdict,
        "evaluation": dg.MetadataValue.md(frame_markdown(evaluation.table())),
        "held_out_equity": dg.MetadataValue.md(f"![held-out equity](data:image/png;base64,{png})"),
        "episodes": dg.MetadataValue.json(result.report["episodes"]),
        "candidates": dg.MetadataValue.int(len(result.trades)),
        "train_trades": dg.MetadataValue.int(int(result.trained.train_rows.size)),
        "held_out_trades": dg.MetadataValue.int(int(result.trained.held_rows.size)),
        "dropped_signals": dg.MetadataValue.json(result.trades.dropped),
        "cost_config": dg.MetadataValue.json(result.report["config"]["cost_config"]),
        "run_id": result.run_id,
        "model_ids": dg.MetadataValue.json({r.model_id: str(r.status) for r in result.records}),
        "online_versions": dg.MetadataValue.json({v.agent: v.version for v in result.activated}),
        "path": dg.MetadataValue.path(str(result.folder / "training_report.json")),
    })
