"""The numbers behind a training-run report, computed from the lake's evaluation tables.

Everything here re-derives from stored rows with the library's own functions
(``strategy_returns``, ``baseline_positions``, ``directional_accuracy``,
``expected_calibration_error``), so the report's curves and per-trade numbers agree with the
``evaluation`` table rather than approximating it. Outputs are sorted, so the same tables give the
same report.

Two notions of a trade appear, and the report names which one it uses:

* a *taken signal* (``costs`` table): one prediction whose expected edge cleared its costs, entered
  a bar later and held ``horizon`` bars, charged a full round trip; its realised gross edge is
  ``position * target_return`` and its net edge that minus every cost component (bps of notional);
* a *simulated trade* (``strategy_returns``): a run of one constant non-zero position of a symbol in
  the bar-by-bar simulation the evaluation's Sharpe, drawdown and hit rate come from; its P&L is the
  sum of its bars' net returns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clm.evaluation.costs import notionals_used
from clm.evaluation.metrics import (
    BASELINES,
    baseline_positions,
    brier_score,
    directional_accuracy,
    expected_calibration_error,
    strategy_returns,
)
from clm.lake import TABLE_NAME, Lake, LakeError
from clm.models.artifacts import ArtifactError, read_json, read_manifest
from clm.training.store import (
    CONSENSUS,
    COST_CONFIG,
    COSTS,
    CV_FOLDS,
    DECISION_LOG,
    EVALUATION,
    EVALUATION_DETAIL,
    EVALUATION_PREVIOUS_MODEL,
    OOS_PREDICTIONS,
)

COST_COMPONENTS = ("fee_bps", "half_spread_bps", "slippage_bps", "impact_bps", "funding_bps")
CALIBRATION_BINS = 10
DECISION_TAIL = 200  # the last decisions kept in the sample
STRONG_CAP = 200  # at most this many (most recent) strong-level decisions added to it
TABULAR_MODULES = ("clm.models.lightgbm_engine", "clm.models.xgboost_engine")  # engines with feature importance


@dataclass
class RunTables:
    """The stored tables of one training run, restricted to the evaluated engines."""

    evaluation: pl.DataFrame
    costs: pl.DataFrame
    predictions: pl.DataFrame
    detail: pl.DataFrame | None = None
    folds: pl.DataFrame | None = None
    decisions: pl.DataFrame | None = None
    consensus: pl.DataFrame | None = None
    engines: list[str] = field(default_factory=list)
    previous: pl.DataFrame | None = None  # per engine: it and its previous model on the same rows


def load_tables(lake: Lake) -> RunTables:
    """Read what the training assets wrote; the evaluation, costs and predictions are required."""
    missing = [t for t in (EVALUATION, COSTS, OOS_PREDICTIONS) if not lake.has_table(t)]
    if missing:
        raise ValueError(f"no {', '.join(missing)} table(s) in {lake.root}: materialise the evaluation first")
    evaluation = lake.read(EVALUATION).sort("engine")
    engines = evaluation["engine"].to_list()
    if not engines:
        raise ValueError("the evaluation table has no engines: materialise the evaluation first")

    def read(table: str, *, by_engine: bool = True) -> pl.DataFrame | None:
        if not lake.has_table(table):
            return None
        frame = lake.read(table)
        if by_engine and "engine" in frame.columns:
            frame = frame.filter(pl.col("engine").is_in(engines))
        return frame.drop([c for c in ("date",) if c in frame.columns])

    order = ["engine", "fold", "symbol", "timestamp"]
    costs = read(COSTS).sort(order)
    predictions = read(OOS_PREDICTIONS).sort(order)
    detail = read(EVALUATION_DETAIL)
    folds = read(CV_FOLDS)
    decisions = read(DECISION_LOG, by_engine=False)
    consensus = read(CONSENSUS, by_engine=False)
    previous = read(EVALUATION_PREVIOUS_MODEL)
    return RunTables(
        evaluation=evaluation,
        costs=costs,
        predictions=predictions,
        detail=detail.sort([c for c in ("engine", "fold", "symbol", "regime") if c in detail.columns])
        if detail is not None else None,
        folds=folds.sort("engine", "fold") if folds is not None else None,
        decisions=decisions.sort("timestamp", "symbol") if decisions is not None else None,
        consensus=consensus.sort("timestamp", "symbol") if consensus is not None else None,
        engines=engines,
        previous=previous.sort("engine") if previous is not None else None,
    )


def _mean(series: pl.Series) -> float | None:
    value = series.cast(pl.Float64).drop_nulls().drop_nans().mean() if series.len() else None
    return float(value) if value is not None and math.isfinite(value) else None


def _median(series: pl.Series) -> float | None:
    value = series.cast(pl.Float64).drop_nulls().drop_nans().median() if series.len() else None
    return float(value) if value is not None and math.isfinite(value) else None


def _sum(series: pl.Series) -> float:
    return float(series.cast(pl.Float64).drop_nulls().drop_nans().sum())


# ------------------------------------------------------------------------------------------------
# simulation: equity curves and simulated trades, model and baselines on the same rows
# ------------------------------------------------------------------------------------------------


def strategy_frame(tables: RunTables) -> pl.DataFrame:
    """Per engine and row: what the evaluation simulated (position taken, one-way cost, one-bar
    return, close for the momentum baseline)."""
    keys = ["engine", "fold", "symbol", "timestamp"]
    cost_cols = [c for c in ("regime", "position_taken", "one_way_cost_bps", "close", "quote_volume")
                 if c in tables.costs.columns]
    return tables.costs.select(*keys, *cost_cols).join(
        tables.predictions.select(*keys, "return_1"), on=keys, how="left"
    ).sort(keys)


@dataclass
class Simulation:
    curves: pl.DataFrame  # strategy, timestamp, equity
    stats: dict[str, dict[str, dict[str, Any]]]  # engine -> strategy -> numbers
    shared_baselines: bool


def _simulate_one(rows: pl.DataFrame, position_col: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    sim = strategy_returns(rows, position_col=position_col, return_col="return_1", cost_bps_col="one_way_cost_bps",
                           partition_cols=("fold",))
    portfolio = sim.group_by("timestamp").agg(pl.col("sim_net").mean()).sort("timestamp")
    curve = portfolio.select("timestamp", (1.0 + pl.col("sim_net")).cum_prod().alias("equity"))
    trades = sim.filter(pl.col("sim_trade").is_not_null()).group_by("sim_trade").agg(pl.col("sim_net").sum())
    n = trades.height
    stats = {
        "total_return": float(curve["equity"][-1] - 1.0) if curve.height else None,
        "trades": n,
        "net_bps_per_trade": float(trades["sim_net"].mean() * 1e4) if n else None,
        "net_bps_total": float(trades["sim_net"].sum() * 1e4) if n else 0.0,
    }
    return curve, stats


def simulate(tables: RunTables) -> Simulation:
    """Each engine's taken positions and the baselines, simulated as the evaluation does (per symbol
    and fold, net of the one-way cost on every position change, equal-weight portfolio per bar)."""
    frame = strategy_frame(tables)
    per_engine = {e: frame.filter(pl.col("engine") == e) for e in tables.engines}
    row_keys = [rows.select("fold", "symbol", "timestamp") for rows in per_engine.values()]
    shared = all(k.equals(row_keys[0]) for k in row_keys[1:])
    curves, stats = [], {}
    for i, (engine, rows) in enumerate(per_engine.items()):
        with_baselines, strategies = rows, ["model"]
        for kind in BASELINES:
            try:  # as in the evaluation: a baseline the rows cannot support (momentum without prices) is skipped
                with_baselines = with_baselines.with_columns(baseline_positions(rows, kind).alias(f"baseline_{kind}"))
            except ValueError:
                continue
            strategies.append(f"baseline_{kind}")
        stats[engine] = {}
        for strategy in strategies:
            column = "position_taken" if strategy == "model" else strategy
            curve, numbers = _simulate_one(with_baselines, column)
            stats[engine][strategy] = numbers
            if strategy == "model":
                label = engine
            elif shared and i > 0:
                continue  # the same baseline curve once
            else:
                label = strategy if shared else f"{strategy} @ {engine}"
            curves.append(curve.select(pl.lit(label).alias("strategy"), "timestamp", "equity"))
    curve_frame = pl.concat(curves) if curves else pl.DataFrame(
        schema={"strategy": pl.String, "timestamp": pl.Datetime("us", "UTC"), "equity": pl.Float64}
    )
    return Simulation(curve_frame, stats, shared)


# ------------------------------------------------------------------------------------------------
# costs of the taken signals
# ------------------------------------------------------------------------------------------------


def cost_assumptions(evaluation: pl.DataFrame | None) -> dict[str, dict] | None:
    """The cost assumptions (``CostConfig.as_dict``, the policy's ``costs`` of the evaluation run) per engine,
    from the evaluation table's ``cost_config`` column; None when it has none (written before there was one)."""
    if evaluation is None or COST_CONFIG not in evaluation.columns:
        return None
    return {row["engine"]: json.loads(row[COST_CONFIG]) for row in evaluation.iter_rows(named=True)
            if row[COST_CONFIG] is not None}


def cost_report(costs: pl.DataFrame, engines: list[str], *, horizon: int,
                evaluation: pl.DataFrame | None = None) -> dict:
    """Per engine, over its taken signals (``position_taken != 0``): totals and per-trade means (bps of
    notional) of the realised gross edge, each cost component and the realised net edge; the median
    capacity at the participation limit in quote currency and as a multiple of the trade's notional
    (``median_capacity_multiple``). ``notional_by_quote``: the trade size the costs were computed for,
    per quote currency (``clm.evaluation.costs.notionals_used``; empty for tables written before the
    ``notional`` column). ``cost_config``: the cost assumptions (``cost_assumptions`` of ``evaluation``):
    one ``CostConfig.as_dict`` when every engine was costed alike, else one per engine; None when not
    recorded."""
    has_notional = "notional" in costs.columns
    assumptions = cost_assumptions(evaluation)
    if assumptions:
        distinct = {json.dumps(v, sort_keys=True) for v in assumptions.values()}
        assumptions = next(iter(assumptions.values())) if len(distinct) == 1 else {"by_engine": assumptions}
    report: dict[str, Any] = {
        "definition": (
            "A trade is one taken signal (position_taken != 0): entered one bar after the decision, held "
            f"{horizon} bars, charged a full round trip. gross_edge = position * realised forward return; "
            "net_edge = gross_edge - total_cost; total_cost = fee + half_spread + slippage + impact + funding. "
            "Totals are sums over trades, per_trade values their means, all in bps of the traded notional."
        ),
        "horizon_bars": horizon,
        "notional_by_quote": notionals_used(costs),
        "cost_config": assumptions or None,
        "engines": {},
    }
    for engine in engines:
        rows = costs.filter(pl.col("engine") == engine)
        taken = rows.filter(pl.col("position_taken") != 0)
        n = taken.height
        gross, cost, net = taken["realised_edge_bps"], taken["total_cost_bps"], taken["realised_net_edge_bps"]
        per_trade = {
            "expected_net_edge_bps": _mean(taken["expected_net_edge_bps"]) if n else None,
            "gross_edge_bps": _mean(gross) if n else None,
            **{c: (_mean(taken[c]) if n else None) for c in COST_COMPONENTS},
            "total_cost_bps": _mean(cost) if n else None,
            "net_edge_bps": _mean(net) if n else None,
        }
        report["engines"][engine] = {
            "signals": rows.height,
            "trades": n,
            "share_taken": n / rows.height if rows.height else None,
            "gross_edge_bps": _sum(gross),
            **{c: _sum(taken[c]) for c in COST_COMPONENTS},
            "total_cost_bps": _sum(cost),
            "net_edge_bps": _sum(net),
            "per_trade_net_edge_bps": per_trade["net_edge_bps"],
            "per_trade": per_trade,
            "hit_rate": float((net > 0).mean()) if n else None,
            "median_capacity_notional": _median(taken["capacity_notional"]) if n else None,
            "median_capacity_multiple": (_median(taken["capacity_notional"] / taken["notional"])
                                         if n and has_notional else None),
        }
    return report


# ------------------------------------------------------------------------------------------------
# calibration of the classifiers
# ------------------------------------------------------------------------------------------------


def calibration(predictions: pl.DataFrame, *, n_bins: int = CALIBRATION_BINS) -> tuple[pl.DataFrame, dict]:
    """Reliability bins per engine with probabilities, and each one's ECE and Brier score.

    Outcome = ``target_return > 0`` (what the evaluation scores); bins are the equal-width bins of
    ``expected_calibration_error`` (the last includes 1); rows without a probability or an outcome are
    dropped.
    """
    rows = predictions.filter(pl.col("probability").is_not_null() & pl.col("target_return").is_not_null()
                              & pl.col("target_return").is_finite())
    rows = rows.select(
        "engine", pl.col("probability").cast(pl.Float64),
        (pl.col("target_return") > 0).cast(pl.Float64).alias("outcome"),
    )
    summary: dict[str, dict[str, Any]] = {}
    parts = []
    for engine in sorted(rows["engine"].unique().to_list()):
        r = rows.filter(pl.col("engine") == engine)
        summary[engine] = {
            "rows": r.height,
            "ece": expected_calibration_error(r["probability"], r["outcome"], n_bins=n_bins),
            "brier": brier_score(r["probability"], r["outcome"]),
            "base_rate": float(r["outcome"].mean()),
        }
        parts.append(
            r.with_columns(
                pl.min_horizontal((pl.col("probability") * n_bins).floor().cast(pl.Int32), pl.lit(n_bins - 1))
                .alias("bin")
            )
            .group_by("engine", "bin")
            .agg(pl.len().alias("n"), pl.col("probability").mean().alias("mean_probability"),
                 pl.col("outcome").mean().alias("frequency"))
            .with_columns((pl.col("bin") / n_bins).alias("lower"), ((pl.col("bin") + 1) / n_bins).alias("upper"))
        )
    schema = {"engine": pl.String, "bin": pl.Int32, "n": pl.UInt32, "mean_probability": pl.Float64,
              "frequency": pl.Float64, "lower": pl.Float64, "upper": pl.Float64}
    bins = pl.concat(parts).sort("engine", "bin") if parts else pl.DataFrame(schema=schema)
    return bins.select(list(schema)), summary


# ------------------------------------------------------------------------------------------------
# regimes, folds
# ------------------------------------------------------------------------------------------------


def _edge_stats(taken: pl.DataFrame) -> dict[str, Any]:
    n = taken.height
    return {
        "trades": n,
        "gross_bps_per_trade": _mean(taken["realised_edge_bps"]) if n else None,
        "cost_bps_per_trade": _mean(taken["total_cost_bps"]) if n else None,
        "net_bps_per_trade": _mean(taken["realised_net_edge_bps"]) if n else None,
        "net_bps_total": _sum(taken["realised_net_edge_bps"]),
    }


def regime_table(tables: RunTables) -> list[dict[str, Any]]:
    """Per engine and regime (null = ``unknown``): rows, share, directional accuracy, taken-signal edge."""
    if tables.detail is None or "regime" not in tables.detail.columns or tables.detail["regime"].is_null().all():
        return []
    regime = pl.col("regime").fill_null("unknown")
    predictions = tables.predictions.with_columns(regime)
    costs = tables.costs.with_columns(regime)
    out = []
    for engine in tables.engines:
        p = predictions.filter(pl.col("engine") == engine)
        c = costs.filter(pl.col("engine") == engine)
        for name in sorted(p["regime"].unique().to_list()):
            rows = p.filter(pl.col("regime") == name)
            taken = c.filter((pl.col("regime") == name) & (pl.col("position_taken") != 0))
            out.append({
                "engine": engine, "regime": name, "rows": rows.height,
                "share": rows.height / p.height if p.height else None,
                "directional_accuracy": directional_accuracy(rows["signal"], rows["target_return"]),
                **_edge_stats(taken),
            })
    return out


def fold_table(tables: RunTables) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per engine and fold: the audit's windows and row counts beside the fold's out-of-sample
    accuracy and taken-signal edge; plus a summary (totals and whether every window is ordered)."""
    if tables.folds is None:
        return [], {}
    rows, ordered = [], True
    for audit in tables.folds.iter_rows(named=True):
        engine, fold = audit["engine"], audit["fold"]
        p = tables.predictions.filter((pl.col("engine") == engine) & (pl.col("fold") == fold))
        taken = tables.costs.filter((pl.col("engine") == engine) & (pl.col("fold") == fold)
                                    & (pl.col("position_taken") != 0))
        ok = audit["train_start"] <= audit["train_end"] <= audit["validation_start"] <= audit["validation_end"] \
            <= audit["test_start"] <= audit["test_end"]
        ordered = ordered and bool(ok)
        rows.append({
            "engine": engine, "fold": fold, "test_start": audit["test_start"], "test_end": audit["test_end"],
            "rows_train": audit["rows_train"], "rows_validation": audit["rows_validation"],
            "rows_test": audit["rows_test"], "rows_purged": audit["rows_purged"],
            "rows_embargoed": audit["rows_embargoed"], "embargo_bars": audit["embargo_bars"],
            "windows_ordered": bool(ok),
            "directional_accuracy": directional_accuracy(p["signal"], p["target_return"]) if p.height else None,
            **_edge_stats(taken),
        })
    folds = tables.folds
    summary = {
        "folds_per_engine": {e: int(folds.filter(pl.col("engine") == e).height) for e in tables.engines},
        "rows_purged": int(folds["rows_purged"].sum()),
        "rows_embargoed": int(folds["rows_embargoed"].sum()),
        "rows_test": int(folds["rows_test"].sum()),
        "windows_ordered": ordered,
        "training_from": folds["train_start"].min(),
        "test_to": folds["test_end"].max(),
    }
    return rows, summary


# ------------------------------------------------------------------------------------------------
# consensus and decision log
# ------------------------------------------------------------------------------------------------


def consensus_summary(tables: RunTables) -> dict[str, Any] | None:
    """What the vote decided and how its calls fared: counts by action and level; for long/short
    calls the hit rate and mean realised gross edge (bps) and the mean trading cost at those bars
    (fee, spread, slippage, impact: funding depends on the direction and is left out)."""
    decisions = tables.decisions
    if decisions is None:
        return None
    outcome = tables.predictions.group_by("symbol", "timestamp").agg(pl.col("target_return").first())
    trading = tables.costs.group_by("symbol", "timestamp").agg(
        (pl.col("fee_bps") + pl.col("half_spread_bps") + pl.col("slippage_bps") + pl.col("impact_bps"))
        .mean().alias("trading_cost_bps")
    )
    calls = (
        decisions.filter(pl.col("action").is_in(["long", "short"]))
        .join(outcome, on=["symbol", "timestamp"], how="left")
        .join(trading, on=["symbol", "timestamp"], how="left")
        .with_columns(pl.when(pl.col("action") == "long").then(1.0).otherwise(-1.0).alias("d"))
    )
    realised = calls.filter(pl.col("target_return").is_not_null() & (pl.col("target_return") != 0))
    actions = dict(decisions.group_by("action").len().sort("action").iter_rows())
    levels = dict(decisions.group_by("level").len().sort("level").iter_rows())
    summary = {
        "decisions": decisions.height,
        "actions": {k: int(v) for k, v in actions.items()},
        "levels": {k: int(v) for k, v in levels.items()},
        "long": int(actions.get("long", 0)),
        "short": int(actions.get("short", 0)),
        "strong": int(levels.get("strong", 0)),
        "mean_confidence": _mean(decisions["confidence"]),
        "hit_rate": float(((realised["d"] * realised["target_return"]) > 0).mean()) if realised.height else None,
        "gross_edge_bps": _mean(calls["d"] * calls["target_return"] * 1e4) if calls.height else None,
        "trading_cost_bps": _mean(calls["trading_cost_bps"]) if calls.height else None,
    }
    if tables.consensus is not None:
        for column in ("n_votes", "agreement"):
            if column in tables.consensus.columns:
                summary[f"mean_{column}"] = _mean(tables.consensus[column])
    return summary


def decision_sample(
    decisions: pl.DataFrame, *, tail: int = DECISION_TAIL, strong_cap: int = STRONG_CAP
) -> pl.DataFrame:
    """The last ``tail`` decisions plus the ``strong_cap`` most recent strong-level ones, in time order."""
    ordered = decisions.sort("timestamp", "symbol")
    strong = ordered.filter(pl.col("level") == "strong").tail(strong_cap)
    sample = pl.concat([ordered.tail(tail), strong]).unique(["timestamp", "symbol"], keep="first")
    return sample.sort("timestamp", "symbol")


# ------------------------------------------------------------------------------------------------
# models: feature importance and feature versions
# ------------------------------------------------------------------------------------------------


def model_folders(lake: Lake, tables: RunTables, model_dirs: Mapping[str, str | Path] | None) -> dict[str, Path]:
    """Each engine's artefact folder: the given mapping, else the version recorded on its
    predictions (``model_version``), else the newest folder under ``models/<engine>/``."""
    found: dict[str, Path] = {}
    given = dict(model_dirs or {})
    versions: dict[str, str] = {}
    if "model_version" in tables.predictions.columns:
        pairs = tables.predictions.select("engine", "model_version").unique().drop_nulls()
        pairs = pairs.sort("engine", "model_version")
        for engine, version in pairs.iter_rows():
            versions[engine] = version  # the last (sorted) one when an engine's rows name several
    for engine in tables.engines:
        if engine in given:
            found[engine] = Path(given[engine])
            continue
        if engine in versions:
            try:
                folder = lake.model_dir(engine, versions[engine])
            except LakeError:
                folder = None
            if folder is not None and folder.is_dir():
                found[engine] = folder
                continue
        if not TABLE_NAME.match(engine):
            continue
        base = lake.root / "models" / engine
        candidates = [p for p in base.iterdir() if (p / "manifest.json").is_file()] if base.is_dir() else []
        if candidates:
            found[engine] = max(candidates, key=lambda p: ((p / "manifest.json").stat().st_mtime_ns, p.name))
    return found


def feature_importance(folders: Mapping[str, Path]) -> tuple[dict[str, list[tuple[str, float]]], dict[str, str], dict]:
    """Gain importance per tree engine (a per-symbol model sums its symbols' gains), notes on the
    engines without one, and each model's feature version.

    Only the tabular engine modules are loaded (never torch); a folder that fails its checksums is
    reported, not used.
    """
    from clm.models.base import ENGINES, load_engine, load_engines
    from clm.models.per_symbol import ENGINE as PER_SYMBOL
    from clm.models.per_symbol import PerSymbolModel

    load_engines(TABULAR_MODULES)
    importance: dict[str, list[tuple[str, float]]] = {}
    notes: dict[str, str] = {}
    versions: dict[str, str | None] = {}
    for engine, folder in sorted(folders.items()):
        try:
            manifest = read_manifest(folder)
            inner = manifest.engine
            if inner == PER_SYMBOL:
                inner = read_json(folder, "symbols.json").get("engine", "")
            cls = ENGINES.get(inner)
            if cls is None or not hasattr(cls, "feature_importance"):
                notes[engine] = f"{inner} has no feature importance (not a tree engine)"
                versions[engine] = _feature_version(folder)
                continue
            model = load_engine(folder)
            parts = list(model.models.values()) if isinstance(model, PerSymbolModel) else [model]
            totals: dict[str, float] = {}
            for part in parts:
                for name, value in part.feature_importance("gain").items():
                    totals[name] = totals.get(name, 0.0) + float(value)
            importance[engine] = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
            versions[engine] = parts[0].feature_version if parts else None
        except (ArtifactError, OSError, ValueError, KeyError) as exc:
            notes[engine] = f"model in {folder} could not be read: {exc}"
    return importance, notes, versions


def _feature_version(folder: Path) -> str | None:
    try:
        return read_json(folder, "config.json").get("feature_version")
    except (ArtifactError, OSError, AttributeError):
        return None


__all__ = [
    "COST_COMPONENTS",
    "RunTables",
    "Simulation",
    "calibration",
    "consensus_summary",
    "cost_report",
    "decision_sample",
    "feature_importance",
    "fold_table",
    "load_tables",
    "model_folders",
    "regime_table",
    "simulate",
    "strategy_frame",
]
