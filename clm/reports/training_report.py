"""The training-run report: one markdown file a person reads, with its plots and machine-readable parts.

``build_training_report(lake, run_id)`` reads the tables the training assets wrote (evaluation,
evaluation_detail, evaluation_previous_model, costs, oos_predictions, cv_folds, consensus,
decision_log) and the models' artefacts, and writes, each file atomically and the markdown last (it
links the others):

* ``reports/training_run_<run_id>.md``;
* ``reports/training_run_<run_id>/equity_curve.png``, ``calibration.png`` (when a classifier has
  probabilities), ``feature_importance.png`` (when a tree engine's model can be read);
* ``metrics.json`` (the metrics bundle), ``cost_report.json`` (per engine: gross edge, each cost
  component, net edge, trades, per-trade net edge, bps of notional) and
  ``decision_log_sample.csv`` (the last decisions plus the most recent strong-level ones).

The annualised Sharpe of 5-minute bars is hard to read (a tiny per-bar mean times sqrt(105,120)),
so every strategy row also shows its trade count and net edge per trade in bps. Same tables, models
and ``generated_at`` give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clm.checks import is_int
from clm.features.build import infer_timeframe_seconds
from clm.features.store import FEATURES
from clm.lake import Lake
from clm.markdown import markdown_table
from clm.reports import plots
from clm.reports.narrative import (
    DEFAULT_NARRATOR,
    SECTION_TITLES,
    Narrative,
    Narrator,
    bps,
    cost_terms,
    count,
    num,
    pct,
    trade_sizes,
)
from clm.reports.tables import (
    COST_COMPONENTS,
    RunTables,
    calibration,
    consensus_summary,
    cost_report,
    decision_sample,
    feature_importance,
    fold_table,
    load_tables,
    model_folders,
    regime_table,
    simulate,
)
from clm.training.store import COST_CONFIG

RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PLOT_FILES = {
    "equity_curve": "equity_curve.png",
    "calibration": "calibration.png",
    "feature_importance": "feature_importance.png",
}
METRICS_FILE = "metrics.json"
COST_REPORT_FILE = "cost_report.json"
DECISIONS_FILE = "decision_log_sample.csv"
BASELINE_NAMES = {
    "baseline_flat": "flat",
    "baseline_buy_and_hold": "buy-and-hold",
    "baseline_momentum_sign": "momentum",
}
SIGNIFICANT_DIGITS = 10  # floats in the JSON files: enough for any reader, immune to last-bit noise


@dataclass(frozen=True)
class TrainingReport:
    """What was written, with the PNG bytes so an asset can attach them to its metadata."""

    run_id: str
    markdown: str
    markdown_path: Path
    directory: Path
    plots: dict[str, bytes]
    plot_paths: dict[str, Path]
    metrics_path: Path
    cost_report_path: Path
    decision_log_path: Path | None
    metrics: dict
    cost_report: dict
    narrative: dict[str, Narrative]
    notes: list[str] = field(default_factory=list)


def check_run_id(run_id: Any) -> str:
    """``run_id`` builds a path: letters, digits, '-' and '_' only (1 to 128 of them)."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ValueError(f"run_id must be 1-128 letters, digits, '-' or '_', got {run_id!r}")
    return run_id


def report_paths(run_id: str) -> tuple[str, str]:
    """(markdown file, folder of plots and parts), relative to the lake root."""
    run_id = check_run_id(run_id)
    return f"reports/training_run_{run_id}.md", f"reports/training_run_{run_id}"


# ------------------------------------------------------------------------------------------------
# JSON-safe, stable values
# ------------------------------------------------------------------------------------------------


def clean(value: Any) -> Any:
    """Plain JSON values: non-finite floats -> None, floats to ``SIGNIFICANT_DIGITS``, times as ISO text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return clean(value.item())
    return str(value)


def _stamp(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC") if value.tzinfo else value.strftime("%Y-%m-%d %H:%M")
    return "n/a" if value is None else str(value)


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------


def build_training_report(
    lake: Lake,
    run_id: str,
    *,
    horizon: int = 12,
    generated_at: dt.datetime | str | None = None,
    model_dirs: Mapping[str, str | Path] | None = None,
    narrator: Narrator | None = None,
) -> TrainingReport:
    """Build and write the training-run report (module docstring); returns what was written.

    ``model_dirs`` maps an engine to its artefact folder (e.g. from the registry); without it the
    folder of the ``model_version`` on the engine's predictions is used, else the newest one under
    ``models/<engine>/``. Raises ``ValueError`` for a bad ``run_id`` or ``horizon`` or when the
    evaluation tables are missing.
    """
    md_relative, dir_relative = report_paths(run_id)
    if not is_int(horizon) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1 (bars), got {horizon!r}")
    if generated_at is None:
        generated_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = generated_at.isoformat() if isinstance(generated_at, dt.datetime) else str(generated_at)
    narrator = narrator or DEFAULT_NARRATOR

    tables = load_tables(lake)
    engines = tables.engines
    notes: list[str] = []
    try:
        timeframe = infer_timeframe_seconds(tables.predictions.select("symbol", "timestamp"))
    except ValueError:
        timeframe = None
    periods = 365 * 86_400 / timeframe if timeframe else None

    simulation = simulate(tables)
    costs = cost_report(tables.costs, engines, horizon=horizon, evaluation=tables.evaluation)
    bins, calib = calibration(tables.predictions)
    regimes = regime_table(tables)
    folds, fold_summary = fold_table(tables)
    consensus = consensus_summary(tables)
    folders = model_folders(lake, tables, model_dirs)
    importance, importance_notes, model_feature_versions = feature_importance(folders)
    notes += [f"{engine}: {why}" for engine, why in sorted(importance_notes.items())]
    for engine in engines:
        if engine not in folders:
            notes.append(f"{engine}: no model folder found, so no feature importance")

    evaluation = {row["engine"]: row for row in tables.evaluation.iter_rows(named=True)}
    window = _window(tables, timeframe, periods)
    feature_version = lake.current_version(FEATURES)
    mismatches = _check_simulation(simulation.stats, evaluation)
    if mismatches:
        notes.append("the re-simulation differs from the evaluation table for " + ", ".join(mismatches))

    numbers = _narrative_numbers(tables, evaluation, simulation, costs, calib, regimes, consensus, window,
                                 horizon=horizon)
    narrative = narrator.narrate_all(numbers)

    pngs: dict[str, bytes] = {"equity_curve": plots.equity_curve_plot(simulation.curves)}
    if calib:
        pngs["calibration"] = plots.calibration_plot(bins, {e: clean(v["ece"]) for e, v in calib.items()})
    else:
        notes.append("no classifier probabilities: no calibration plot")
    if importance:
        pngs["feature_importance"] = plots.feature_importance_plot(importance)
    else:
        notes.append("no tree engine's model could be read: no feature-importance plot")

    sample = decision_sample(tables.decisions) if tables.decisions is not None else None
    if sample is None:
        notes.append("no decision_log table: materialise the consensus for a decision-log sample")

    files = {name: f"{dir_relative}/{PLOT_FILES[name]}" for name in pngs}
    bundle = clean({
        "run_id": run_id,
        "generated_at": stamp,
        "horizon_bars": horizon,
        "timeframe_seconds": timeframe,
        "notional_by_quote": costs["notional_by_quote"],
        "cost_config": costs["cost_config"],
        "engines": engines,
        "window": window,
        "feature_version": feature_version,
        "model_feature_versions": model_feature_versions,
        "model_folders": {e: str(p) for e, p in sorted(folders.items())},
        "evaluation": {e: {k: v for k, v in row.items() if k not in ("engine", COST_CONFIG)}
                       for e, row in evaluation.items()},
        **({"previous_model": {r["engine"]: {k: v for k, v in r.items() if k != "engine"}
                               for r in tables.previous.iter_rows(named=True)}} if tables.previous is not None else {}),
        "strategies": simulation.stats,
        "baselines_shared": simulation.shared_baselines,
        "simulation_matches_evaluation": not mismatches,
        "costs": costs["engines"],
        "calibration": {e: {**v, "bins": bins.filter(pl.col("engine") == e).drop("engine").to_dicts()}
                        for e, v in calib.items()},
        "regimes": regimes,
        "folds": folds,
        "fold_summary": fold_summary,
        "consensus": consensus,
        "feature_importance": {e: [{"feature": f, "gain": g} for f, g in pairs[: plots.TOP_FEATURES]]
                               for e, pairs in importance.items()},
        "narrative": {s: {**n.to_dict(), "numbers": numbers[s]} for s, n in narrative.items()},
        "notes": notes,
        "files": {**files, "markdown": md_relative, "metrics": f"{dir_relative}/{METRICS_FILE}",
                  "cost_report": f"{dir_relative}/{COST_REPORT_FILE}",
                  **({"decision_log_sample": f"{dir_relative}/{DECISIONS_FILE}"} if sample is not None else {})},
    })

    markdown = render_markdown(
        run_id=run_id, stamp=stamp, horizon=horizon, engines=engines, window=window,
        feature_version=feature_version, model_feature_versions=model_feature_versions,
        evaluation=evaluation, simulation=simulation, calib=calib, costs=costs, folds=folds,
        fold_summary=fold_summary, regimes=regimes, consensus=consensus, narrative=narrative,
        previous=tables.previous.to_dicts() if tables.previous is not None else None,
        plot_files={name: f"training_run_{run_id}/{PLOT_FILES[name]}" for name in pngs},
        sample_file=f"training_run_{run_id}/{DECISIONS_FILE}" if sample is not None else None,
        notes=notes,
    )

    # the parts first, the markdown (which links them) last; parts of an earlier build that this one
    # no longer makes are removed so the folder never shows a stale plot
    plot_paths = {name: lake.write_bytes(path, pngs[name]) for name, path in files.items()}
    directory = lake.root / dir_relative
    for name, file_name in PLOT_FILES.items():
        if name not in pngs:
            (directory / file_name).unlink(missing_ok=True)
    metrics_path = lake.write_json(f"{dir_relative}/{METRICS_FILE}", bundle)
    cost_path = lake.write_json(f"{dir_relative}/{COST_REPORT_FILE}", clean(costs))
    decisions_path = None
    if sample is not None:
        buffer = io.BytesIO()
        sample.write_csv(buffer)
        decisions_path = lake.write_bytes(f"{dir_relative}/{DECISIONS_FILE}", buffer.getvalue())
    else:
        (directory / DECISIONS_FILE).unlink(missing_ok=True)
    markdown_path = lake.write_bytes(md_relative, markdown.encode())
    return TrainingReport(
        run_id=run_id, markdown=markdown, markdown_path=markdown_path, directory=directory, plots=pngs,
        plot_paths=plot_paths, metrics_path=metrics_path, cost_report_path=cost_path,
        decision_log_path=decisions_path, metrics=bundle, cost_report=clean(costs), narrative=narrative,
        notes=notes,
    )


def _window(tables: RunTables, timeframe: int | None, periods: float | None) -> dict[str, Any]:
    p = tables.predictions
    first, last = p["timestamp"].min(), p["timestamp"].max()
    span = (last - first).total_seconds() + (timeframe or 0) if first is not None else None
    bars = p.unique(["symbol", "timestamp"]).sort("symbol", "timestamp")
    returns = bars["return_1"].cast(pl.Float64).drop_nulls().drop_nans()
    vol = float(returns.std()) * math.sqrt(periods) if periods and returns.len() > 1 else None
    shares = {}
    if "regime" in bars.columns and bars.height:
        counted = bars.group_by(pl.col("regime").fill_null("unknown")).len().sort("regime")
        shares = {r: n / bars.height for r, n in counted.iter_rows()}
    return {
        "from": first,
        "to": last,
        "days": span / 86_400 if span is not None else None,
        "symbols": p["symbol"].n_unique(),
        "bars": bars.height,
        "rows_per_engine": {e: int(p.filter(pl.col("engine") == e).height) for e in tables.engines},
        "annual_volatility": vol,
        "regime_shares": shares,
    }


def _check_simulation(stats: dict, evaluation: dict) -> list[str]:
    """Names of strategies whose re-simulated total return differs from the evaluation's."""
    out = []
    for engine, strategies in sorted(stats.items()):
        for strategy, values in strategies.items():
            stored = evaluation.get(engine, {}).get(f"{strategy}_total_return")
            mine = values.get("total_return")
            if stored is None or mine is None or not math.isfinite(stored):
                continue
            if abs(stored - mine) > 1e-9 * max(1.0, abs(stored)):
                out.append(f"{engine}/{strategy}")
    return out


def _narrative_numbers(tables, evaluation, simulation, costs, calib, regimes, consensus, window, *,
                       horizon) -> dict[str, dict]:
    """The explicit numbers each narrative section is written from."""
    first = evaluation[tables.engines[0]]
    market = {
        "days": window["days"], "symbols": window["symbols"],
        "buy_and_hold_return": first.get("baseline_buy_and_hold_total_return"),
        "buy_and_hold_max_drawdown": first.get("baseline_buy_and_hold_max_drawdown"),
        "momentum_return": first.get("baseline_momentum_sign_total_return"),
        "annual_volatility": window["annual_volatility"],
        "regime_shares": window["regime_shares"],
    }
    trade, risk, performance = {}, {}, {}
    for engine in tables.engines:
        row, cost = evaluation[engine], costs["engines"][engine]
        baselines = {name: row.get(f"{prefix}_total_return") for prefix, name in BASELINE_NAMES.items()}
        model_return = row.get("model_total_return")
        finite = [v for v in baselines.values() if v is not None and math.isfinite(v)]
        per_trade = cost["per_trade"]
        trade[engine] = {
            "trades": cost["trades"], "net_edge_bps": per_trade["net_edge_bps"],
            "gross_edge_bps": per_trade["gross_edge_bps"], "cost_bps": per_trade["total_cost_bps"],
            "dsr": row.get("model_dsr"),
            "beats_baselines": bool(model_return is not None and finite and model_return > max(finite)),
        }
        mine = [r for r in regimes if r["engine"] == engine and r["trades"] and r["net_bps_per_trade"] is not None]
        worst = min(mine, key=lambda r: (r["net_bps_per_trade"], r["regime"])) if len(mine) > 1 else None
        risk[engine] = {
            "max_drawdown": row.get("model_max_drawdown"), "exposure": row.get("model_exposure"),
            "turnover": row.get("model_turnover"), "capacity": row.get("model_capacity"),
            "capacity_multiple": cost.get("median_capacity_multiple"),
            "hit_rate": row.get("model_hit_rate"), "profit_factor": row.get("model_profit_factor"),
            "ece": calib.get(engine, {}).get("ece"),
            "worst_regime": worst["regime"] if worst else None,
            "worst_regime_net_bps": worst["net_bps_per_trade"] if worst else None,
        }
        sim = simulation.stats[engine]["model"]
        performance[engine] = {
            "directional_accuracy": row.get("directional_accuracy"), "ic": row.get("ic"),
            "total_return": model_return, "sharpe": row.get("model_sharpe"), "dsr": row.get("model_dsr"),
            "sim_trades": sim["trades"], "sim_net_bps_per_trade": sim["net_bps_per_trade"],
            "baselines": baselines,
        }
    cons = None
    if consensus is not None:
        cons = {k: consensus.get(k) for k in ("decisions", "long", "short", "strong", "hit_rate", "gross_edge_bps",
                                              "trading_cost_bps")}
    return clean({
        "market_narrative": market,
        "trade_rationale": {"horizon": horizon, "engines": trade, "consensus": cons},
        "risk_assessment": {"notional_by_quote": costs["notional_by_quote"], "engines": risk},
        "performance_summary": {"engines": performance},
    })


# ------------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------------


def _strategy_rows(engines, evaluation, simulation) -> list[dict[str, str]]:
    rows = []
    for i, engine in enumerate(engines):
        row, stats = evaluation[engine], simulation.stats[engine]
        for strategy in ("model", *BASELINE_NAMES):
            if strategy not in stats or (strategy != "model" and simulation.shared_baselines and i > 0):
                continue
            if strategy == "model":
                label = f"**{engine}**"
            else:
                label = BASELINE_NAMES[strategy] + ("" if simulation.shared_baselines else f" @ {engine}")
            sim = stats[strategy]
            rows.append({
                "strategy": label,
                "net return": pct(row.get(f"{strategy}_total_return")),
                "Sharpe (ann.)": num(row.get(f"{strategy}_sharpe")),
                "max drawdown": pct(row.get(f"{strategy}_max_drawdown")),
                "trades": count(sim["trades"]),
                "net bps / trade": bps(sim["net_bps_per_trade"]).replace(" bps", ""),
                "hit rate": pct(row.get(f"{strategy}_hit_rate"), 1),
                "exposure": pct(row.get(f"{strategy}_exposure"), 1),
                "turnover / bar": num(row.get(f"{strategy}_turnover"), 4),
                "DSR": num(row.get(f"{strategy}_dsr")),
            })
    if simulation.shared_baselines:  # baselines after the engines, once
        engine_rows = [r for r in rows if r["strategy"].startswith("**")]
        rows = engine_rows + [r for r in rows if not r["strategy"].startswith("**")]
    return rows


def _quality_rows(engines, evaluation, calib) -> list[dict[str, str]]:
    rows = []
    for engine in engines:
        row = evaluation[engine]
        rows.append({
            "engine": engine,
            "task": "classification" if engine in calib else "regression",
            "rows": count(row.get("n_rows")),
            "directional accuracy": pct(row.get("directional_accuracy"), 1),
            "accuracy": pct(row.get("accuracy"), 1),
            "F1": num(row.get("f1"), 3),
            "IC": num(row.get("ic"), 4),
            "rank IC": num(row.get("rank_ic"), 4),
            "ECE": num(row.get("ece"), 4),
            "Brier": num(row.get("brier"), 4),
            "RMSE": num(row.get("rmse"), 6),
        })
    return rows


def _previous_rows(previous: list[dict]) -> list[dict[str, str]]:
    """This run's model and its previous model on the same rows: ``this / previous`` per metric."""
    def pair(row: dict, metric: str, fmt) -> str:
        return f"{fmt(row.get(f'model_{metric}'))} / {fmt(row.get(f'previous_model_{metric}'))}"

    rows = []
    for row in previous:
        compared = bool(row.get("rows_compared"))
        rows.append({
            "engine": row["engine"], "previous model": row.get("previous_model_id") or "none",
            "trained until": _stamp(row.get("previous_trained_until")), "rows": count(row.get("rows_compared") or 0),
            "directional accuracy": pair(row, "directional_accuracy", lambda v: pct(v, 1)) if compared else "",
            "IC": pair(row, "ic", lambda v: num(v, 4)) if compared else "",
            "Sharpe (ann.)": pair(row, "sharpe", num) if compared else "",
            "net return": pair(row, "total_return", pct) if compared else "",
            "trades": pair(row, "n_trades", count) if compared else "",
        })
    return rows


def _plain_bps(value: Any) -> str:
    return bps(value).replace(" bps", "")


def _cost_rows(engines, costs) -> list[dict[str, str]]:
    rows = []
    for engine in engines:
        c = costs["engines"][engine]
        per = c["per_trade"]
        rows.append({
            "engine": engine, "signals": count(c["signals"]), "trades": count(c["trades"]),
            "taken": pct(c["share_taken"], 1),
            "expected net": _plain_bps(per["expected_net_edge_bps"]),
            "gross": _plain_bps(per["gross_edge_bps"]),
            **{name.replace("_bps", "").replace("_", " "): _plain_bps(per[name]) for name in COST_COMPONENTS},
            "total cost": _plain_bps(per["total_cost_bps"]),
            "**net / trade**": _plain_bps(per["net_edge_bps"]),
            "net total": _plain_bps(c["net_edge_bps"]),
            "trades won": pct(c["hit_rate"], 1),
        })
    return rows


def render_markdown(*, run_id, stamp, horizon, engines, window, feature_version, model_feature_versions, evaluation,
                    simulation, calib, costs, folds, fold_summary, regimes, consensus, narrative, plot_files,
                    sample_file, notes, previous=None) -> str:
    """The report's markdown (deterministic: every input is sorted and every number formatted)."""
    out: list[str] = [f"# Training run `{run_id}`", ""]
    versions = sorted({v for v in model_feature_versions.values() if v})
    header = [
        f"- **generated at**: {stamp}",
        f"- **engines**: {', '.join(engines)}",
        f"- **out-of-sample window**: {_stamp(window['from'])} to {_stamp(window['to'])} "
        f"({num(window['days'], 1)} days, {count(window['symbols'])} symbols, {count(window['bars'])} symbol-bars)",
        f"- **label horizon**: {horizon} bars; trades entered one bar after the decision",
        f"- **feature version**: {feature_version or 'n/a'}"
        + (f" (models trained on {', '.join(versions)})" if versions and versions != [feature_version] else ""),
    ]
    if fold_summary:
        header.insert(3, f"- **data window (first training row to last test row)**: "
                         f"{_stamp(fold_summary['training_from'])} to {_stamp(fold_summary['test_to'])}")
    out += header + [""]

    out += ["## Strategies against the baselines (out-of-sample, net of costs, same rows)", ""]
    out.append(markdown_table(_strategy_rows(engines, evaluation, simulation),
                              ["strategy", "net return", "Sharpe (ann.)", "max drawdown", "trades", "net bps / trade",
                               "hit rate", "exposure", "turnover / bar", "DSR"]))
    out += ["", "Equal-weight portfolio of the symbols, one unit per symbol, charged the one-way cost on every "
            "position change. *Trades* are runs of one constant position of a symbol; *net bps / trade* is "
            "their mean net P&L in basis points of notional. The annualised Sharpe of short bars multiplies a "
            "tiny per-bar mean by the square root of the bars in a year: read it beside the trade count and the "
            "per-trade edge. DSR is the deflated Sharpe ratio (probability the Sharpe beats the best of the "
            "engines tried by luck).", ""]

    out += ["## Prediction quality", ""]
    out.append(markdown_table(_quality_rows(engines, evaluation, calib),
                              ["engine", "task", "rows", "directional accuracy", "accuracy", "F1", "IC", "rank IC",
                               "ECE", "Brier", "RMSE"]))
    out += [""]

    if previous is not None:
        out += ["## Against the previous model (same rows, out of sample for both)", ""]
        out.append(markdown_table(_previous_rows(previous), ["engine", "previous model", "trained until", "rows",
                                                             "directional accuracy", "IC", "Sharpe (ann.)",
                                                             "net return", "trades"]))
        out += ["", "Each pair is *this run's model / the previous model* (the champion it was registered against), "
                "both on the rows after the previous model's training window, positions taken by the same rule "
                "and charged the same costs."]
        out += [f"- {r['engine']}: {r['previous_model_note']}" for r in previous if r.get("previous_model_note")]
        out += [""]

    out += ["## Costs per taken signal (bps of notional)", ""]
    cost_rows = _cost_rows(engines, costs)
    out.append(markdown_table(cost_rows, list(cost_rows[0]) if cost_rows else ["engine"]))
    out += ["", costs["definition"], f"Simulated trade size (notional of one trade, in the symbol's quote "
            f"currency): {trade_sizes(costs['notional_by_quote'])}.", "",
            f"Cost assumptions (policy.yaml `costs` when the evaluation ran): {cost_terms(costs['cost_config'])}.",
            ""]

    out += ["## Fold audit", ""]
    if folds:
        per_engine = ", ".join(f"{e} {n}" for e, n in fold_summary["folds_per_engine"].items())
        ordered = "yes" if fold_summary["windows_ordered"] else "**NO: a fold's windows overlap or run backwards**"
        out += [
            f"Folds per engine: {per_engine}. Rows purged (label overlapping the next window): "
            f"{count(fold_summary['rows_purged'])}; embargoed: {count(fold_summary['rows_embargoed'])}; "
            f"test rows: {count(fold_summary['rows_test'])}. Train < validation < test in every fold: {ordered}.",
            "",
            markdown_table([{
                "engine": f["engine"], "fold": count(f["fold"]),
                "test window": f"{_stamp(f['test_start'])} to {_stamp(f['test_end'])}",
                "train": count(f["rows_train"]), "validation": count(f["rows_validation"]),
                "test": count(f["rows_test"]), "purged": count(f["rows_purged"]),
                "embargoed": count(f["rows_embargoed"]),
                "directional accuracy": pct(f["directional_accuracy"], 1),
                "trades": count(f["trades"]), "net bps / trade": _plain_bps(f["net_bps_per_trade"]),
            } for f in folds], ["engine", "fold", "test window", "train", "validation", "test", "purged", "embargoed",
                                "directional accuracy", "trades", "net bps / trade"]),
            "",
        ]
    else:
        out += ["No cv_folds table.", ""]

    if regimes:
        out += ["## Per regime", ""]
        out.append(markdown_table([{
            "engine": r["engine"], "regime": r["regime"], "rows": count(r["rows"]), "share": pct(r["share"], 1),
            "directional accuracy": pct(r["directional_accuracy"], 1), "trades": count(r["trades"]),
            "gross / trade": _plain_bps(r["gross_bps_per_trade"]), "cost / trade": _plain_bps(r["cost_bps_per_trade"]),
            "net / trade": _plain_bps(r["net_bps_per_trade"]), "net total": _plain_bps(r["net_bps_total"]),
        } for r in regimes], ["engine", "regime", "rows", "share", "directional accuracy", "trades", "gross / trade",
                              "cost / trade", "net / trade", "net total"]))
        out += ["", "Edges in bps of notional over the taken signals of each regime.", ""]

    for section in ("performance_summary", "trade_rationale", "risk_assessment", "market_narrative"):
        n = narrative[section]
        source = "written from the numbers by templates" if n.source == "template" else (n.note or "local model")
        out += [f"## {SECTION_TITLES[section]}", "", n.text, "", f"<sub>{source}</sub>", ""]

    if consensus is not None:
        out += ["## Consensus decisions", ""]
        actions = ", ".join(f"{k} {count(v)}" for k, v in consensus["actions"].items())
        levels = ", ".join(f"{k} {count(v)}" for k, v in consensus["levels"].items())
        out += [f"- decisions: {count(consensus['decisions'])} ({actions})", f"- levels: {levels}",
                f"- mean confidence: {num(consensus['mean_confidence'], 3)}"]
        if "mean_n_votes" in consensus:
            out.append(f"- mean voting engines per bar: {num(consensus['mean_n_votes'])}")
        if sample_file:
            out.append(f"- sample of the decision log: [{sample_file.rsplit('/', 1)[-1]}]({sample_file})")
        out.append("")

    out += ["## Plots", ""]
    titles = {"equity_curve": "Equity net of costs against the baselines", "calibration": "Calibration (reliability)",
              "feature_importance": "Feature importance (gain, top 20)"}
    for name, path in plot_files.items():
        out += [f"### {titles[name]}", "", f"![{name}]({path})", ""]

    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Files", "", f"- metrics bundle: [{METRICS_FILE}](training_run_{run_id}/{METRICS_FILE})",
            f"- cost report: [{COST_REPORT_FILE}](training_run_{run_id}/{COST_REPORT_FILE})", ""]
    return "\n".join(out)


__all__ = [
    "PLOT_FILES",
    "TrainingReport",
    "build_training_report",
    "check_run_id",
    "clean",
    "render_markdown",
    "report_paths",
]
