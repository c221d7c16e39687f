"""Serving benchmark: ``Champion.predict`` on one row and on a 500-symbol batch, against raw LightGBM.

Both champions are built the way production builds them, in a temporary lake: bars ingested and
validated, ``materialise_features`` (``FeatureConfig()``: all sets), labels (horizons 1 and 12),
regimes, then ``lightgbm_regressor`` and ``lightgbm_classifier`` trained by
``clm.training.store.train_engine`` (the LightGBM defaults the assets use - 31 leaves, 63 bins -
but ``--rounds`` 200 rounds without early stopping: on these near-random returns early stopping
keeps a handful of trees, which would flatter every timing; purged walk-forward, ``--folds``
folds), evaluated (``evaluate_stored``), registered with their evaluation metrics in the
lake's registry and loaded with ``Champion.load`` (checksums verified). Building is not timed.

(a) Single row, real bars: ``tests/data/binance_spot_5m`` (10 BTC pairs, 20 days of 5-minute bars;
    ``--data`` for another folder). The pooled champion (regressor primary, classifier voting) gets
    ``--calls`` dict calls (10,000), cycling over the last 1,000 warm feature rows as dicts (feature
    -> value, symbol, regime), after 500 warm-up calls; each call is timed alone with
    ``time.perf_counter_ns`` (garbage collector on, halt file checked on every call, as served).
    In the same run, on the same rows prepared once as float64 numpy rows (encoded and scaled as the
    models expect, not timed): the raw primary booster, ``booster.predict(row, num_threads=1)``, and
    both boosters back to back (the least a two-engine vote must do). Reported: p50, p99, max and
    the champion / raw ratios. A cross-check first: the champion's prediction equals the raw
    booster's and the engine's own ``predict`` on every row (|diff| <= 1e-12).
(b) Batch: a synthetic market of ``--batch-symbols`` (500) symbols x 4 days, a pooled champion, a
    DataFrame of each symbol's latest warm row (features, symbol, timestamp, regime); ``--batch-reps``
    (200) calls after 10 warm-ups.

Targets (2 cores): single-row p99 under 300 us; the 500-row batch under 10 ms (median; p99 is
reported). Exits 1 when a target misses or the cross-check fails; JSON into benchmarks/results/.

    python benchmarks/serving.py [--calls 10000] [--batch-symbols 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPOT = ROOT / "tests" / "data" / "binance_spot_5m"
HORIZON = 12
TARGET_ROW_P99_US = 300.0
TARGET_BATCH_MS = 10.0
TOLERANCE = 1e-12
ENGINES = ("lightgbm_regressor", "lightgbm_classifier")
CYCLE_ROWS = 1000
WARMUP_CALLS = 500


def _pct(ns: np.ndarray) -> dict:
    return {"p50_us": float(np.percentile(ns, 50) / 1e3), "p99_us": float(np.percentile(ns, 99) / 1e3),
            "max_us": float(ns.max() / 1e3), "mean_us": float(ns.mean() / 1e3), "calls": int(ns.size)}


def build_champion_lake(root: Path, source, folds: int, rounds: int, log) -> tuple:
    """Ingest, features, labels, regimes, train, evaluate, register, load: (lake, registry, champion, info)."""
    import polars as pl

    from clm.data import ingest
    from clm.evaluation.splits import SplitConfig
    from clm.features import FeatureConfig
    from clm.features.store import materialise_features
    from clm.labels import LabelConfig
    from clm.labels.store import materialise_labels
    from clm.lake import Lake
    from clm.regimes.config import RegimeConfig
    from clm.regimes.store import materialise_regimes
    from clm.registry import POOLED, Lineage, NewModel, open_registry
    from clm.registry.lineage import code_version
    from clm.serving import Champion
    from clm.training import TrainingConfig
    from clm.training.store import evaluate_stored, train_engine

    started = time.perf_counter()
    lake = Lake(root)
    result = ingest.run_ingest(source, "bench")
    candles = result.validation.candles
    first, last = candles["timestamp"].min().date(), candles["timestamp"].max().date()
    days = ingest.window_dates(first, last + dt.timedelta(days=1))
    ingest.write_ingest(lake, result, days[0], days[-1] + dt.timedelta(days=1))
    materialise_features(lake, days, FeatureConfig())
    materialise_labels(lake, days, LabelConfig(horizons=(1, HORIZON)))
    materialise_regimes(lake, days, RegimeConfig())
    config = TrainingConfig(horizon=HORIZON, split=SplitConfig(n_folds=folds, embargo_bars=HORIZON))
    runs = {}
    for engine in ENGINES:
        log(f"    training {engine} ...")
        options = {"n_estimators": rounds, "early_stopping_rounds": None} if rounds else None
        runs[engine] = train_engine(lake, engine, options, config)
    evaluation = evaluate_stored(lake, horizon=HORIZON, engines=list(ENGINES))
    registry = open_registry(lake)
    for engine, stored in runs.items():
        row = evaluation.overall.filter(pl.col("engine") == engine).row(0, named=True)
        metrics = {k: v for k, v in row.items() if k != "engine" and isinstance(v, (int, float))
                   and not (isinstance(v, float) and not np.isfinite(v))}
        metrics["typical_abs_return"] = float(stored.run.predictions["target_return"].abs().median())
        lineage = Lineage(("", ""), stored.feature_version, len(stored.run.features), {"horizon": HORIZON},
                          code_version(), "", {}, {}, dict(stored.manifest.files))
        registry.register(NewModel(engine, stored.version, POOLED, HORIZON, stored.path, lineage, metrics))
    champion = Champion.load(None, HORIZON, lake=lake, registry=registry)
    info = {
        "bars": candles.height, "symbols": candles["symbol"].n_unique(), "days": len(days),
        "features": len(champion.primary.features), "build_s": round(time.perf_counter() - started, 1),
        "trees": {m.name: int(m.engine.booster.num_trees()) for m in champion.models},
        "champion": champion.describe(),
    }
    return lake, registry, champion, info


def warm_rows(lake, champion):
    """Warm feature rows of the current version with each row's regime (as serving sees them)."""
    import polars as pl

    from clm.features.store import FEATURES
    from clm.regimes.store import REGIMES

    rows = lake.read(FEATURES).filter(pl.col("warm")).drop("date", "version").sort("symbol", "timestamp")
    if lake.has_table(REGIMES):
        regimes = lake.read(REGIMES).select("symbol", "timestamp", pl.col("regime").cast(pl.String))
        rows = rows.join(regimes, on=["symbol", "timestamp"], how="left")
    return rows


def encoded(model, frame) -> np.ndarray:
    """The rows as the booster takes them (the engine's own encoding, via polars: not timed)."""
    import polars as pl

    from clm.models.tabular import encode_features

    enc = encode_features(frame, model.engine.features, model.engine.categorical, model.engine.scaler)
    return np.ascontiguousarray(enc.cast({c: pl.Float64 for c in enc.columns}).to_numpy())


def run_single(args, log) -> dict:
    from clm.data.sources.files import FolderSource

    with tempfile.TemporaryDirectory(prefix="clm-serving-bench-") as tmp:
        log(f"  (a) single row: building a champion on {args.data} ...")
        lake, _registry, champion, info = build_champion_lake(Path(tmp) / "lake", FolderSource(args.data),
                                                              args.folds, args.rounds, log)
        rows = warm_rows(lake, champion).tail(CYCLE_ROWS)
        dicts = rows.to_dicts()
        primary = champion.primary
        other = [m for m in champion.models if m is not primary]
        primary_rows = encoded(primary, rows)
        other_rows = [encoded(m, rows) for m in other]
        booster = primary.engine.booster
        boosters = [m.engine.booster for m in other]

        # cross-check: champion == raw booster == the engine's own predict, on every row
        own = primary.engine.predict(rows)
        raw = booster.predict(primary_rows, num_threads=1)
        served = np.array([champion.predict(d).prediction for d in dicts])
        check = {"rows": len(dicts), "max_abs_diff_vs_raw": float(np.abs(served - raw).max()),
                 "max_abs_diff_vs_engine": float(np.abs(served - own).max())}
        check["agree"] = max(check["max_abs_diff_vs_raw"], check["max_abs_diff_vs_engine"]) <= TOLERANCE

        n, m = args.calls, len(dicts)
        singles = [primary_rows[i : i + 1] for i in range(m)]
        other_singles = [[o[i : i + 1] for o in other_rows] for i in range(m)]

        def timed(fn) -> np.ndarray:
            for i in range(WARMUP_CALLS):
                fn(i % m)
            out = np.empty(n, dtype=np.int64)
            clock = time.perf_counter_ns
            for i in range(n):
                t0 = clock()
                fn(i % m)
                out[i] = clock() - t0
            return out

        predict = champion.predict
        results = {}
        log(f"  timing {n:,} calls each ...")
        results["champion"] = _pct(timed(lambda i: predict(dicts[i])))
        results["raw_primary"] = _pct(timed(lambda i: booster.predict(singles[i], num_threads=1)))

        def both(i):
            booster.predict(singles[i], num_threads=1)
            for b, r in zip(boosters, other_singles[i], strict=True):
                b.predict(r, num_threads=1)

        results["raw_all_engines"] = _pct(timed(both))
        for stat in ("p50_us", "p99_us"):
            results[f"ratio_{stat[:3]}_vs_raw_primary"] = results["champion"][stat] / results["raw_primary"][stat]
            results[f"ratio_{stat[:3]}_vs_raw_all"] = results["champion"][stat] / results["raw_all_engines"][stat]
        return {**info, "timings": results, "cross_check": check}


def run_batch(args, log) -> dict:
    import polars as pl

    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource

    with tempfile.TemporaryDirectory(prefix="clm-serving-bench-") as tmp:
        log(f"  (b) batch: building a pooled champion on {args.batch_symbols} synthetic symbols ...")
        source = SyntheticSource(SyntheticConfig(symbols=args.batch_symbols, days=args.batch_days, seed=7))
        lake, _registry, champion, info = build_champion_lake(Path(tmp) / "lake", source, args.folds, args.rounds,
                                                              log)
        rows = warm_rows(lake, champion)
        batch = rows.group_by("symbol").agg(pl.all().sort_by("timestamp").last()).sort("symbol")
        out = champion.predict(batch)
        own = champion.primary.engine.predict(batch)
        diff = float(np.abs(out["prediction"].to_numpy() - own).max())
        for _ in range(10):
            champion.predict(batch)
        times = np.empty(args.batch_reps, dtype=np.int64)
        for i in range(args.batch_reps):
            t0 = time.perf_counter_ns()
            champion.predict(batch)
            times[i] = time.perf_counter_ns() - t0
        return {**info, "rows": batch.height, "median_ms": float(np.median(times) / 1e6),
                "p99_ms": float(np.percentile(times, 99) / 1e6), "max_ms": float(times.max() / 1e6),
                "reps": args.batch_reps, "max_abs_diff_vs_engine": diff, "agree": diff <= TOLERANCE}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SPOT, help="folder of real 5-minute bars (single row)")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--folds", type=int, default=2, help="walk-forward folds of the training runs")
    parser.add_argument("--rounds", type=int, default=200,
                        help="boosting rounds, no early stopping (0: the LightGBM defaults, early stopping on)")
    parser.add_argument("--batch-symbols", type=int, default=500)
    parser.add_argument("--batch-days", type=int, default=4)
    parser.add_argument("--batch-reps", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "serving.json")
    args = parser.parse_args()

    import lightgbm
    import polars as pl

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    errors = {}
    single = batch = None
    try:
        single = run_single(args, log)
    except Exception as exc:  # noqa: BLE001 - reported, the other part still runs
        errors["single"] = f"{type(exc).__name__}: {exc}"
    gc.collect()
    try:
        batch = run_batch(args, log)
    except Exception as exc:  # noqa: BLE001
        errors["batch"] = f"{type(exc).__name__}: {exc}"

    def target(value, goal, passed):
        return {"value": value, "target": goal, "pass": bool(passed) if value is not None else False}

    champ = (single or {}).get("timings", {}).get("champion", {})
    agree = (single or {}).get("cross_check", {}).get("agree")
    targets = {
        "single_row_p99_us": target(champ.get("p99_us"), f"< {TARGET_ROW_P99_US:g} us",
                                    champ.get("p99_us", 1e9) < TARGET_ROW_P99_US),
        "single_row_matches_raw": target(agree, f"|diff| <= {TOLERANCE:g}", agree),
        "batch_500_median_ms": target((batch or {}).get("median_ms"), f"< {TARGET_BATCH_MS:g} ms (median)",
                                      (batch or {}).get("median_ms", 1e9) < TARGET_BATCH_MS),
        "batch_matches_engine": target((batch or {}).get("agree"), f"|diff| <= {TOLERANCE:g}",
                                       (batch or {}).get("agree")),
    }
    summary = {
        "cpu_count": os.cpu_count(), "lightgbm": lightgbm.__version__, "polars": pl.__version__,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "single": single, "batch": batch, "targets": targets, "errors": errors,
        "elapsed_s": time.perf_counter() - t_start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2, default=str))

    load = summary["load_average"]
    print(f"serving benchmark: {os.cpu_count()} cores, lightgbm {lightgbm.__version__}, polars {pl.__version__};"
          f" load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after (1 min)")
    if single:
        t = single["timings"]
        trees = ", ".join(f"{k} {v} trees" for k, v in single["trees"].items())
        print(f"  (a) one row: {single['symbols']} real symbols, {single['bars']:,} bars, {single['features']}"
              f" features; champion = {trees}; {t['champion']['calls']:,} calls each")
        print(f"      {'':28s} {'p50 us':>8s} {'p99 us':>8s} {'max us':>8s}")
        for name, label in (("champion", "Champion.predict(dict)"), ("raw_primary", "raw booster.predict (primary)"),
                            ("raw_all_engines", "raw, both boosters")):
            r = t[name]
            print(f"      {label:28s} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['max_us']:>8.0f}")
        print(f"      champion / raw primary: p50 {t['ratio_p50_vs_raw_primary']:.2f}x, p99"
              f" {t['ratio_p99_vs_raw_primary']:.2f}x; champion / both boosters: p50 {t['ratio_p50_vs_raw_all']:.2f}x,"
              f" p99 {t['ratio_p99_vs_raw_all']:.2f}x")
        c = single["cross_check"]
        print(f"      cross-check on {c['rows']} rows: max |diff| vs raw {c['max_abs_diff_vs_raw']:.1e}, vs the engine"
              f" {c['max_abs_diff_vs_engine']:.1e}")
    if batch:
        trees = ", ".join(f"{k} {v} trees" for k, v in batch["trees"].items())
        print(f"  (b) batch: {batch['rows']} symbols (one row each), {batch['features']} features; {trees}:"
              f" median {batch['median_ms']:.2f} ms, p99 {batch['p99_ms']:.2f} ms, max {batch['max_ms']:.2f} ms over"
              f" {batch['reps']} calls; max |diff| vs the engine {batch['max_abs_diff_vs_engine']:.1e}")
    for name, t in targets.items():
        value = t["value"]
        shown = value if isinstance(value, bool) or value is None else f"{value:.3g}"
        print(f"  target {name}: {'PASS' if t['pass'] else 'FAIL'} ({shown}; target {t['target']})")
    for name, err in errors.items():
        print(f"  {name}: FAILED ({err})")
    print(f"  results: {args.json}  ({summary['elapsed_s']:.0f} s)")
    return 0 if all(t["pass"] for t in targets.values()) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
