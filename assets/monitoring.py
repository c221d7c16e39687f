"""Monitoring: shadow tests of challengers against champions, and the health of every champion.

Both read the policy fresh (``policy.yaml``) and judge models only on bars after the data they were
trained and validated on (the saved model is the last fold's, so its last test window counts).
"""


import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from clm.data.ingest import CANDLES
from clm.features.store import FEATURES
from clm.labels.store import LABELS
from clm.markdown import markdown_table
from clm.policy import Policy, PolicyError, load_policy
from clm.registry.base import ModelRecord, active_forecasters
from resources import LakeResource, RegistryResource

# history a sequence engine reads before the first bar it is judged on (context_length x timeframe, with room)
HISTORY_MARGIN = dt.timedelta(days=2)


class MonitoringConfig(dg.Config):
    horizon: int = Field(12, ge=1, description="label horizon (bars) of the models monitored")


def _policy() -> Policy:
    try:
        return load_policy()
    except PolicyError as exc:
        raise dg.Failure(str(exc)) from exc


def _trained_until(record: ModelRecord) -> dt.datetime:
    """The end of what the model saw (train + validation); later bars are out of sample for it."""
    return dt.datetime.fromisoformat(record.lineage.training_window[1])


def _features_since(lake, since: dt.datetime) -> pl.DataFrame:
    frame = (lake.scan(FEATURES).filter(pl.col("timestamp") >= since - HISTORY_MARGIN)
             .drop("date", "version", strict=False).sort("symbol", "timestamp").collect())
    return frame.with_columns(pl.col("symbol").cast(pl.String))


@dg.asset(
    deps=[FEATURES, LABELS, "consensus"],
    group_name="monitoring",
    kinds={"python", "duckdb"},
    pool="duckdb_writer",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Every SHADOW challenger and its key's ACTIVE champion predict the same new bars "
                "(lake table shadow_predictions); outcomes close when the label horizon does (registry table "
                "shadow_test_results); a paired block-bootstrap test net of costs recommends PROMOTE, REJECT or "
                "CONTINUE_TESTING, recorded with its evidence (promoted or rejected only when the policy's "
                "auto_promote is on). Costs: the policy's `costs`, as in the evaluation.",
)
def shadow_test(context: dg.AssetExecutionContext, config: MonitoringConfig, lake: LakeResource,
                registry: RegistryResource) -> dg.MaterializeResult:
    from clm.shadow import (
        append_results,
        apply_decisions,
        close_outcomes,
        decide,
        load_shadow_sets,
        read_open_predictions,
        read_results,
        shadow_predictions,
        write_open_predictions,
    )

    policy, store, reg = _policy(), lake.lake, registry.registry
    costs = policy.cost_config()  # policy.yaml `costs`, as the evaluation uses
    sets = load_shadow_sets(store, reg, horizon=config.horizon)
    if not sets:
        context.log.info("no SHADOW challengers: nothing to test")
        return dg.MaterializeResult(metadata={"challengers": 0})
    labels, candles = store.scan(LABELS), store.scan(CANDLES)
    rows, opened, closed_now = [], 0, 0
    for shadow in sets:
        since = max(_trained_until(m.record) for m in [shadow.champion, *shadow.challengers])
        features = _features_since(store, since)
        predicted = shadow_predictions(features, shadow.champion, shadow.challengers, since=since)
        write_open_predictions(store, predicted)
        opened += predicted.height
        already = read_results(reg, champion_id=shadow.champion.model_id)
        closed = close_outcomes(read_open_predictions(store, since=since.date()), labels, candles,
                                horizon=config.horizon, cost_config=costs, already_closed=already)
        closed_now += append_results(reg, closed)
        context.log.info(f"{shadow.champion.record.key}: {predicted.height:,} bars predicted since {since:%Y-%m-%d %H:%M}, "
                         f"{closed.height:,} outcomes closed, challengers "
                         f"{', '.join(c.model_id for c in shadow.challengers)}")
        decisions = decide(read_results(reg, champion_id=shadow.champion.model_id), policy)
        applied = apply_decisions(reg, decisions, policy, actor=f"dagster run {context.run.run_id}")
        for decision, action in zip(decisions, applied, strict=True):
            context.log.info(f"{decision.challenger_id}: {decision.recommendation} ({action.action}); {decision.reason}")
            rows.append({"challenger": decision.challenger_id, "champion": decision.champion_id,
                         "recommendation": str(decision.recommendation), "action": action.action, "n": decision.n,
                         "mean_difference_bps": None if decision.mean_difference is None
                         else decision.mean_difference * 1e4,
                         "p_value_holm": decision.p_value_holm, "reason": decision.reason})
    columns = ["challenger", "champion", "recommendation", "action", "n", "mean_difference_bps", "p_value_holm", "reason"]
    return dg.MaterializeResult(metadata={
        "challengers": sum(len(s.challengers) for s in sets),
        "bars_predicted": opened,
        "outcomes_closed": closed_now,
        "auto_promote": policy.auto_promote,
        "decisions": dg.MetadataValue.md(markdown_table(rows, columns)),
        "cost_config": dg.MetadataValue.json(costs.as_dict()),
    })


@dg.asset(
    deps=[FEATURES, LABELS, "consensus"],
    group_name="monitoring",
    kinds={"python", "duckdb"},
    pool="duckdb_writer",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Health of every ACTIVE model on the bars after its training: win rate, calibration error, "
                "long/short ratio, latency p50/p95/p99, coverage -> HEALTHY / DEGRADED / CRITICAL against the "
                "policy (registry table model_performance_logs; DEGRADED or worse writes a signals/performance file).",
)
def model_supervisor(context: dg.AssetExecutionContext, config: MonitoringConfig, lake: LakeResource,
                     registry: RegistryResource) -> dg.MaterializeResult:
    from clm.shadow import load_model
    from clm.supervision import check_model, log_health

    policy, store, reg = _policy(), lake.lake, registry.registry
    costs = policy.cost_config()  # policy.yaml `costs`, as the evaluation uses
    active = active_forecasters(reg, horizon=config.horizon)
    labels, candles = store.scan(LABELS), store.scan(CANDLES)
    rows, signals = [], []
    for record in sorted(active, key=lambda r: r.model_id):
        since = _trained_until(record)
        features = _features_since(store, since)
        judged = features.filter(pl.col("timestamp") >= since)
        if judged.is_empty():
            context.log.info(f"{record.model_id}: no bars after its training window ({since:%Y-%m-%d %H:%M}) yet")
            continue
        model = load_model(store, reg, record.model_id)
        report = check_model(model, features, labels, candles, policy, cost_config=costs, since=since)
        log_id, path = log_health(reg, store, report)
        if path is not None:
            signals.append(str(path))
        context.log.info(f"{record.model_id}: {report.health} on {report.n_signals} signals"
                         + (f"; broken: {', '.join(report.broken)}" if report.broken else ""))
        rows.append({"model_id": record.model_id, "health": str(report.health), "win_rate": report.win_rate,
                     "calibration_error": report.calibration_error, "long_short": report.long_short_ratio,
                     "latency_p99_ms": report.latency_p99_ms, "coverage": report.coverage,
                     "signals": report.n_signals, "broken": ", ".join(report.broken)})
    columns = ["model_id", "health", "win_rate", "calibration_error", "long_short", "latency_p99_ms", "coverage",
               "signals", "broken"]
    return dg.MaterializeResult(metadata={
        "models": len(rows),
        "health": dg.MetadataValue.md(markdown_table(rows, columns)),
        "signal_files": dg.MetadataValue.json(signals),
    })


def _champion_outputs(champion, frame: pl.DataFrame) -> pl.DataFrame:
    predicted = champion.predict(frame.with_columns(pl.col("symbol").cast(pl.String)))
    return predicted.select("prediction", "confidence")


@dg.asset(
    deps=[FEATURES, "consensus"],
    group_name="monitoring",
    kinds={"python", "duckdb"},
    pool="duckdb_writer",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Drift of the recent window against the reference window before it (policy drift_detection): "
                "per-feature KS and PSI with effect sizes, the champion's prediction drift and its realised "
                "performance drift (closed shadow-test signals); a drift_events row every run and, for MEDIUM "
                "and above, a signals/drift file for the sensors.",
)
def drift_detector(context: dg.AssetExecutionContext, config: MonitoringConfig, lake: LakeResource,
                   registry: RegistryResource) -> dg.MaterializeResult:
    from clm.drift import detect_drift, record_drift, split_windows
    from clm.serving import Champion
    from clm.serving.champion import NoActiveModel, TradingHalted
    from clm.shadow import read_results

    policy, store, reg = _policy(), lake.lake, registry.registry
    settings = policy.drift_detection
    windows = split_windows(store.scan(FEATURES).drop("date", "version", strict=False), settings)
    reference = windows.reference.collect()
    recent = windows.recent.collect()
    context.log.info(f"reference {windows.reference_start:%Y-%m-%d %H:%M} .. {windows.reference_end:%Y-%m-%d %H:%M} "
                     f"({reference.height:,} rows), recent .. {windows.recent_end:%Y-%m-%d %H:%M} ({recent.height:,} rows)")
    active = active_forecasters(reg, horizon=config.horizon)
    predictions = performance = None
    if active and reference.height and recent.height:
        try:
            champion = Champion.load(None, config.horizon, lake=store, registry=reg)
            predictions = (_champion_outputs(champion, reference), _champion_outputs(champion, recent))
        except (NoActiveModel, TradingHalted) as exc:  # drift is still measured while trading is halted
            context.log.info(f"no prediction drift: {exc}")
        closed = pl.concat([read_results(reg, champion_id=r.model_id) for r in active], how="vertical_relaxed")
        taken = closed.filter(pl.col("champion_signal") != 0).unique(["champion_id", "symbol", "timestamp"]).sort("closed_at")
        if taken.height:
            outcomes = taken.select(pl.col("champion_net_return").alias("net_pnl"), "timestamp")
            performance = (outcomes.filter(pl.col("timestamp") < windows.recent_start),
                           outcomes.filter(pl.col("timestamp") >= windows.recent_start))
    report = detect_drift(reference, recent, settings, model_types=sorted({r.model_type for r in active}),
                          predictions=predictions, performance=performance, windows=windows)
    event_id, signal = record_drift(reg, store, report)
    context.log.info(f"drift {report.severity} ({report.drift_type}): {len(report.drifting_features)} of "
                     f"{report.features_tested} features drifting (share {report.drift_share or 0:.2f})"
                     + (f"; signal {signal}" if signal else ""))
    top = report.features.sort("ks_statistic", descending=True, nulls_last=True).head(15)
    return dg.MaterializeResult(metadata={
        "severity": str(report.severity),
        "drift_type": report.drift_type,
        "drift_share": dg.MetadataValue.float(float(report.drift_share or 0.0)),
        "drifting_features": dg.MetadataValue.json(report.drifting_features),
        "event_id": event_id,
        "signal_file": dg.MetadataValue.path(str(signal)) if signal else "",
        "windows": dg.MetadataValue.json(windows.bounds()),
        "top_features": dg.MetadataValue.md(markdown_table(
            top.select("feature", "ks_statistic", "ks_p_value", "psi", "drifting", "reason").to_dicts(),
            ["feature", "ks_statistic", "ks_p_value", "psi", "drifting", "reason"])),
    })
