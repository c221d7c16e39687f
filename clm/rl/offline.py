"""Offline policy training: the RL agents learn from a replay of the champion's signals, are judged on a
held-out period against baselines, and are written, registered and (when ACTIVE) handed to the online learner.

``train_policies`` (no lake, no registry): the candidate trades of ``clm.rl.replay`` are split in time (the
last ``held_out_share`` held out, training candidates whose horizon reaches into it purged); the
meta-strategy agent and the configured sizer (``sizing.agent``: ``qtable`` by default, or ``dqn``) play the
training candidates ``episodes`` times, exploring epsilon-greedily (epsilon decays after every trade learnt)
and learning every trade when it closes; each episode records the trades, the average rewards, the loss
(mean absolute TD error of a Q-table, the DQN's Huber loss) and epsilon. Then the agent, greedy and
frozen, and the fixed-size and random baselines play the same held-out candidates (``replay.evaluate``).

``run_offline`` does that on the lake and writes ``<policies_dir>/<run_id>/`` atomically (built beside,
then renamed): ``training_report.json`` (episodes, evaluation, verdict, data and config),
``held_out_equity.png``, and one folder per agent with the agent's own files and ``manifest.json``. The
run id is ``offline-<version>``, the version a hash of what went in (signals and bars as replayed, configs,
risk mode, seed), so the same training again writes the same folder and registers nothing new. Each agent
is registered (model types ``rl_meta_strategy`` and ``rl_sizing``, with lineage: training window, feature
version, code version, data hash, seed, configs and the sha256 of every file); a policy that becomes ACTIVE
on registration starts a new online version (``clm.rl.policies.activate_policy``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from clm.evaluation.costs import CostConfig, notionals_used
from clm.features.expr import digest
from clm.lake import Lake, fsync_write, swap_dir_into_place
from clm.models.artifacts import ArtifactError, canonical_json, json_safe, verify_manifest, write_manifest
from clm.policy import Policy
from clm.registry.base import (
    POLICY_MODEL_TYPES,
    POOLED,
    RL_META_MODEL_TYPE,
    RL_SIZING_MODEL_TYPE,
    ModelRecord,
    Registry,
    Status,
)
from clm.registry.lineage import artifact_model, code_version, data_hash
from clm.rl.config import RLSection, validate_config
from clm.rl.meta import MetaConfig, MetaStrategyAgent
from clm.rl.policies import activate_policy
from clm.rl.replay import (
    SIGNALS_TABLE,
    STRATEGY_RULES,
    AgentPolicy,
    ReplayConfig,
    ReplayEvaluation,
    ReplayTrades,
    build_trades,
    evaluate,
    load_replay_inputs,
    play,
    policy_metrics,
)
from clm.rl.rewards import RewardEngine, default_engine
from clm.rl.sizing import DQN_FEATURES, QTABLE_FEATURES, DQNSizer, SizingConfig, make_sizer
from clm.rl.store import VersionRecord

REPORT_FILE = "training_report.json"
PLOT_FILE = "held_out_equity.png"
META_STATE_FEATURES = ("market_regime", "volatility_level", "liquidity_level", "recent_performance")


class OfflineConfig(RLSection):
    """How the policies are trained and judged; unknown keys and bad values are refused naming the key."""

    episodes: int = Field(5, ge=1, le=1000, description="passes over the training candidates")
    held_out_share: float = Field(0.3, gt=0, lt=1, description="the last share of the candidates, held out")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the agents, the random baseline and the bootstrap")
    bootstrap: int = Field(2000, ge=100, le=100_000, description="resamples of the paired-difference interval")
    replay: ReplayConfig = ReplayConfig()
    meta: MetaConfig = MetaConfig()
    sizing: SizingConfig = SizingConfig()


@dataclass
class TrainedPolicies:
    meta: MetaStrategyAgent
    sizer: Any  # QTableSizer | DQNSizer
    episodes: list[dict[str, Any]]
    evaluation: ReplayEvaluation
    train_rows: np.ndarray
    held_rows: np.ndarray


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def train_policies(trades: ReplayTrades, config: OfflineConfig | Mapping[str, Any] | None = None, *,
                   risk_mode, rewards: RewardEngine | None = None,
                   log: Callable[[str], None] = lambda _m: None) -> TrainedPolicies:
    """Train the meta-strategy agent and the sizer on the training candidates, then evaluate them (module doc)."""
    config = validate_config(OfflineConfig, config, source="offline training config")
    rewards = rewards or default_engine()
    train, held = trades.split(config.held_out_share)
    meta = MetaStrategyAgent(config.meta, seed=config.seed)
    sizer = make_sizer(config.sizing, risk_mode=risk_mode, seed=config.seed)
    agent = AgentPolicy(meta, sizer, rewards=rewards, explore=True, learn=True)
    log(f"offline training: {len(trades)} candidate trades ({trades.signals} signals), {train.size} to train on, "
        f"{held.size} held out; {meta.name} + {sizer.name}, {config.episodes} episodes, seed {config.seed}")
    episodes = []
    for number in range(1, config.episodes + 1):
        agent.losses = {"meta": [], "sizing": []}
        result = play(trades, train, agent, risk_mode=risk_mode, rewards=rewards, tag=f"train{number}")
        metrics = policy_metrics(result)
        row = {
            "episode": number, "trades": metrics["trades"],
            "average_reward": {"meta_strategy": metrics["mean_meta_reward"],
                               "sizing": metrics["mean_sizing_reward"]},
            "loss": {"meta_strategy": _mean(agent.losses["meta"]), "sizing": _mean(agent.losses["sizing"]),
                     "kind": {"meta_strategy": "mean |TD error|",
                              "sizing": "DQN Huber loss" if isinstance(sizer, DQNSizer) else "mean |TD error|"}},
            "epsilon": {"meta_strategy": meta.epsilon, "sizing": sizer.epsilon},
            "net_return": metrics["total_net_return"], "hit_rate": metrics["hit_rate"],
        }
        episodes.append(row)

        def fmt(value, spec=".3f"):
            return "n/a" if value is None else format(value, spec)

        log(f"episode {number}/{config.episodes}: {row['trades']} trades, average reward meta "
            f"{fmt(row['average_reward']['meta_strategy'])} sizing {fmt(row['average_reward']['sizing'])}, loss meta "
            f"{fmt(row['loss']['meta_strategy'])} sizing {fmt(row['loss']['sizing'])}, epsilon "
            f"{meta.epsilon:.3f}/{sizer.epsilon:.3f}, training net return {row['net_return']:+.2%}")
    evaluation = evaluate(trades, held, agent, risk_mode=risk_mode, seed=config.seed, n_boot=config.bootstrap,
                          rewards=rewards, log=log)
    return TrainedPolicies(meta, sizer, episodes, evaluation, train, held)


# ---- the run on the lake ------------------------------------------------------------------------------
@dataclass
class OfflineResult:
    run_id: str
    version: str
    folder: Path
    report: dict[str, Any]
    plot: bytes
    trained: TrainedPolicies
    trades: ReplayTrades
    records: list[ModelRecord]
    new_model_ids: list[str]
    activated: list[VersionRecord] = field(default_factory=list)


def _write_agent(folder: Path, agent) -> None:
    folder.mkdir(parents=True)
    write_manifest(folder, agent.save(folder), engine=agent.name)


def _folder_intact(folder: Path, agents: list[str]) -> bool:
    try:
        for agent in agents:
            verify_manifest(folder / agent, engine=agent)
    except ArtifactError:
        return False
    return True


def stage_run(directory: Path, run_id: str, trained: TrainedPolicies) -> tuple[Path, Path]:
    """Where the run's agents are written: a fresh folder beside ``<directory>/<run_id>`` (returned with the
    final path), or the final folder itself when it already holds intact agents (the same training before)."""
    directory = Path(directory)
    final = directory / run_id
    if final.is_dir() and _folder_intact(final, [trained.meta.name, trained.sizer.name]):
        return final, final
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / f".{run_id}.tmp-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    try:
        for agent in (trained.meta, trained.sizer):
            _write_agent(staged / agent.name, agent)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged, final


def commit_run(staged: Path, final: Path, report: Mapping[str, Any], plot: bytes) -> Path:
    """Add the report and the plot, then rename the staged folder into place (a damaged folder of the same run is
    replaced whole); when the agents were already in place, only the report and the plot are replaced, each
    atomically."""
    try:
        fsync_write(staged / REPORT_FILE, canonical_json(report))
        fsync_write(staged / PLOT_FILE, plot)
        if staged == final:
            return final
        swap_dir_into_place(staged, final)
    except BaseException:
        discard(staged, final)
        raise
    return final


def discard(staged: Path, final: Path) -> None:
    """Remove a staged folder that will not be committed (never the final one)."""
    if staged != final:
        shutil.rmtree(staged, ignore_errors=True)


def run_offline(lake: Lake, registry: Registry, config: OfflineConfig | Mapping[str, Any] | None = None, *,
                policy: Policy | None = None, cost_config: CostConfig | None = None, actor: str = "offline",
                run_label: str = "", log: Callable[[str], None] = lambda _m: None) -> OfflineResult:
    """Replay the lake's champion signals, train, evaluate, write the run folder, register both policies and
    start an online version from each that became ACTIVE (module doc). ``policy``: default ``load_policy()``;
    ``cost_config``: the replay's cost model (default: the policy's ``costs``, as the evaluation uses)."""
    from clm.features.store import FEATURES
    from clm.policy import load_policy
    from clm.reports.plots import policy_equity_plot

    config = validate_config(OfflineConfig, config, source="offline training config")
    policy = policy or load_policy()
    cost_config = cost_config if cost_config is not None else policy.cost_config()
    risk_mode = policy.risk_modes.current
    signals, bars = load_replay_inputs(lake)
    trades = build_trades(bars, signals, config.replay, cost_config=cost_config)
    dropped = ", ".join(f"{r} {n}" for r, n in trades.dropped.items() if n) or "none"
    log(f"replay: {trades.signals} long/short signals -> {len(trades)} candidate trades (dropped: {dropped})")
    trained = train_policies(trades, config, risk_mode=risk_mode, log=log)
    feature_version = lake.current_version(FEATURES)
    effective = {"offline": config.model_dump(mode="json"),
                 "risk_mode": {"name": policy.risk_modes.active, **risk_mode.model_dump(mode="json")},
                 "cost_config": cost_config.as_dict(),
                 "strategy_rules": {k: v._asdict() for k, v in STRATEGY_RULES.items()}}
    version = digest(json.dumps({**effective, "data": data_hash(trades.frame), "signals": trades.signals,
                                 "feature_version": feature_version}, sort_keys=True, default=str))
    run_id = f"offline-{version}"
    h = config.replay.horizon
    evaluation, sizer = trained.evaluation, trained.sizer
    agent_metrics = evaluation.metrics["agent"]
    metrics = json_safe({
        "run_id": run_id, "episodes": config.episodes, "train_trades": int(trained.train_rows.size),
        "heldout_candidates": int(trained.held_rows.size),
        **{f"heldout_{k}": agent_metrics[k] for k in ("trades", "total_net_return", "mean_net_bps",
                                                       "sharpe_per_trade", "max_drawdown", "hit_rate",
                                                       "mean_meta_reward", "mean_sizing_reward")},
        **{f"vs_{name}_bps": comp["mean_diff_bps"] for name, comp in evaluation.comparisons.items()},
        **{f"vs_{name}_ci95_bps": comp["ci95_bps"] for name, comp in evaluation.comparisons.items()},
        **{f"{name}_total_net_return": evaluation.metrics[name]["total_net_return"]
           for name in evaluation.comparisons},
        "verdict": evaluation.verdict,
    })
    label_config = {"horizon": h, "latency_bars": config.replay.latency_bars, "signals": SIGNALS_TABLE,
                    "take_profit_atr": config.replay.take_profit_atr.model_dump(),
                    "stop_loss_atr": config.replay.stop_loss_atr.model_dump()}
    train_hash = data_hash(trades.frame[trained.train_rows])
    window = trades.window(trained.train_rows)
    staged, final = stage_run(lake.policies_dir, run_id, trained)
    try:
        news = []
        for model_type, agent, features in ((RL_META_MODEL_TYPE, trained.meta, META_STATE_FEATURES),
                                            (RL_SIZING_MODEL_TYPE, sizer,
                                             DQN_FEATURES if isinstance(sizer, DQNSizer) else QTABLE_FEATURES)):
            new = artifact_model(
                model_type=model_type, version=version, scope=POOLED, horizon=h, folder=staged / agent.name,
                training_window=window, feature_version=feature_version, feature_count=len(features),
                label_config=label_config, data_hash=train_hash, seeds={"seed": config.seed},
                config={**effective, "agent": agent.name, "agent_config": agent.config.model_dump(mode="json")},
                metrics={**metrics, "agent": agent.name}, notes=evaluation.verdict)
            news.append(dataclasses.replace(new, file_path=str(final / agent.name)))  # where it is once committed
        report = json_safe({
            "run_id": run_id, "version": version, "run_label": run_label,
            "created_at": dt.datetime.now(dt.UTC).isoformat(), "code_version": code_version(), "config": effective,
            "data": {"signals_table": SIGNALS_TABLE, "signals": trades.signals, "candidates": len(trades),
                     "dropped": trades.dropped, "timeframe_seconds": trades.timeframe_seconds,
                     "notional_by_quote": notionals_used(trades.frame),
                     "feature_version": feature_version,
                     "train": {"trades": int(trained.train_rows.size), "window": list(window)},
                     "held_out": {"trades": int(trained.held_rows.size),
                                  "window": list(trades.window(trained.held_rows))}},
            "episodes": trained.episodes,
            "evaluation": {"policies": evaluation.metrics, "comparisons": evaluation.comparisons,
                           "verdict": evaluation.verdict},
            "policies": {new.model_type: {"model_id": new.model_id, "agent": new.lineage.config["agent"],
                                          "sha256": dict(new.lineage.artifact_checksums)} for new in news},
        })
        title = (f"held-out replay, {trained.held_rows.size} candidate trades, net of costs: "
                 f"{evaluation.verdict.split(':')[0]}")
        plot = policy_equity_plot(evaluation.curves(), title=title)
    except BaseException:
        discard(staged, final)
        raise
    folder = commit_run(staged, final, report, plot)
    log(f"run {run_id} written to {folder}")

    existing = {r.model_id for r in registry.list_models(horizon=h) if r.model_type in POLICY_MODEL_TYPES}
    records = []
    for new in news:
        record = registry.register(new, actor=actor)
        records.append(record)
        log(f"registered {record.model_id} ({record.key}) as {record.status}")
    new_ids = [r.model_id for r in records if r.model_id not in existing]
    activated = []
    for record in records:
        if record.model_id in new_ids and record.status == Status.ACTIVE:
            started = activate_policy(lake.policies_dir, registry, record, clamp=sizer.clamp)
            activated.append(started)
            log(f"{record.model_id} is ACTIVE: {started.agent} version {started.version} starts from it online")
    return OfflineResult(run_id, version, folder, report, plot, trained, trades, records, new_ids, activated)


__all__ = ["PLOT_FILE", "REPORT_FILE", "OfflineConfig", "OfflineResult", "TrainedPolicies", "commit_run",
           "run_offline", "stage_run", "train_policies"]
