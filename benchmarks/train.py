"""Training benchmark: every engine on 50 symbols x 180 days of 5-minute bars (2.59M bars), and our
N-HiTS / PatchTST against neuralforecast's on the same real series.

(a) Pipeline, each step in its own child process (as Dagster runs each asset in its own process),
    on the same input: the parent generates the synthetic market (``clm.data.sources.synthetic``,
    not timed: it stands in for the data source) and writes the raw bars to a temporary Parquet.

    prepare    ``validate_bars``, ``compute_features`` (``FeatureConfig()``: all sets),
               ``build_labels`` (horizons 1 and 12, ATR from the features), ``classify_regimes``,
               ``training_frame`` (``TrainingConfig()``); writes the frame and the candles
    <engine>   ``walk_forward`` (``TrainingConfig()``: 5 purged folds) of each engine with the options
               the assets use (``DEFAULT_OPTIONS`` in ``assets/training.py``, read without importing
               dagster; LightGBM defaults); reading the frame is timed too
    evaluate   ``evaluate_engines`` on every engine's out-of-sample predictions

    Per stage: wall time and the child's peak RSS. Target (2 cores): everything after the bars
    exist under 8 minutes in total and every child under 6 GiB. The engines share a time budget
    (``--budget``, default the 8-minute target): each gets an equal share of what is left (time
    an engine does not use goes to the later ones); one still running at the end of its share is
    stopped and reported with what it had done (folds finished, fits ended) and the total becomes
    a lower bound (a FAIL): the benchmark itself stays bounded (about 10 minutes in all).

(b) Peers, each in its own child process: our ``nhits`` / ``patchtst`` engines (this venv) and
    neuralforecast 3.3.0's ``NHITS`` / ``PatchTST`` (``benchmarks/neuralforecast_peer.py`` in
    ``.venv-nf``: ``make .venv-nf/.installed``) on the same real series (``tests/data/binance_spot_5m``,
    close -> one-bar log returns), the same split by time (the last ``--valid-fraction`` of the bars
    is validation), input 96, horizon 12, 200 steps, ``windows_batch_size`` 32, learning rate 1e-3,
    seed 1, MAE loss, constant learning rate, gradient clipping at 1.0 and no validation during
    training on both sides (the model after the last step is the one scored). Validation MAE over
    every window whose 12 target steps lie in the validation bars (inputs may reach back into the
    training bars), all 12 steps, computed by the parent from each side's forecasts against the
    same truth. Training time: the wall time of the fit call (``engine.fit`` / ``NeuralForecast.fit``:
    data preparation included on both sides), best of ``--peer-reps``. Targets: our MAE <= 1.02 x
    theirs, our training time <= theirs / 1.5. If ``.venv-nf`` is missing or neuralforecast fails,
    the peer targets report "skipped: <reason>" and do not fail the run.

    python benchmarks/train.py [--symbols 50] [--days 180] [--quick] [--only pipeline peers] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import fmt

ROOT = Path(__file__).resolve().parents[1]
TIMEFRAME_SECONDS = 300
ENGINES = ("lightgbm_classifier", "lightgbm_regressor", "nhits", "patchtst")
TARGET_TOTAL_S = 8 * 60
TARGET_RSS_GIB = 6.0
TARGET_MAE_RATIO = 1.02  # ours / theirs, at most
TARGET_SPEEDUP = 1.5  # their training time / ours, at least
QUICK = {"symbols": 10, "days": 30}
BUDGET_S = 480  # wall time for the pipeline's children; each engine gets an equal share of what is left
PROGRESS = "@progress"

NF_PYTHON = ROOT / ".venv-nf" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "neuralforecast_peer.py"
SPOT = ROOT / "tests" / "data" / "binance_spot_5m"
PEER = {"input_size": 96, "h": 12, "max_steps": 200, "windows_batch_size": 32, "learning_rate": 1e-3, "seed": 1}
PEER_MODELS = ("nhits", "patchtst")
# sizes matched to neuralforecast's defaults: its NHITS block is Linear(in, 512) then its three
# ``mlp_units`` layers of 512 -> 512 (four hidden Linear layers; clm's default ``mlp_layers`` is 2)
PEER_OURS = {"nhits": {"mlp_layers": 4}, "patchtst": {}}


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def default_options() -> dict:
    """``DEFAULT_OPTIONS`` of ``assets/training.py`` (the budgets the assets train with), read as a
    literal so the benchmark neither imports dagster nor drifts from the assets."""
    tree = ast.parse((ROOT / "assets" / "training.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEFAULT_OPTIONS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("assets/training.py has no DEFAULT_OPTIONS literal")


# ---------------------------------------------------------------------------------------------
# (a) the pipeline's children


def write_bars(symbols: int, days: int, path: Path) -> dict:
    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource

    t0 = time.perf_counter()
    bars = SyntheticSource(SyntheticConfig(symbols=symbols, days=days)).load().bars
    t1 = time.perf_counter()
    bars.write_parquet(path)
    return {"rows": bars.height, "symbols": symbols, "days": days, "generate_s": t1 - t0,
            "write_s": time.perf_counter() - t1}


def run_prepare(work: Path) -> dict:
    import polars as pl

    from clm.data.validation import validate_bars
    from clm.features import FeatureConfig, compute_features, select_features
    from clm.labels.forward import LabelConfig, build_labels
    from clm.regimes.classify import classify_regimes
    from clm.training.runs import TrainingConfig, training_frame

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    bars = pl.read_parquet(work / "bars.parquet")
    read_s = time.perf_counter() - t0

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        stages[name] = time.perf_counter() - start
        return out

    candles = timed("validate_bars", functools.partial(validate_bars, bars)).candles
    del bars
    symbols = candles["symbol"].unique().to_list()
    selection = select_features(FeatureConfig(), symbols, TIMEFRAME_SECONDS)
    features = timed("compute_features", lambda: compute_features(candles, selection,
                                                                  timeframe_seconds=TIMEFRAME_SECONDS))
    config = TrainingConfig()
    label_config = LabelConfig(horizons=(1, config.horizon))
    labels = timed("build_labels", lambda: build_labels(
        candles.select("symbol", "timestamp", "segment_id", "high", "low", "close", "is_filled")
        .join(features.select("symbol", "timestamp", "atr_14"), on=["symbol", "timestamp"], how="left"),
        label_config))
    regimes = timed("classify_regimes", lambda: classify_regimes(candles, features=features,
                                                                 timeframe_seconds=TIMEFRAME_SECONDS))
    frame = timed("training_frame", lambda: training_frame(features, labels, regimes, config))
    out = {"stages_s": stages, "read_s": read_s, "candles": candles.height, "features": len(selection.names),
           "frame_rows": frame.height, "frame_columns": frame.width,
           "labelled_rows": int(frame[config.target].is_not_null().sum()),
           "peak_rss_gib": _peak_rss_gib()}
    frame.write_parquet(work / "frame.parquet")
    candles.write_parquet(work / "candles.parquet")
    return out


def run_engine(work: Path, engine: str) -> dict:
    import polars as pl

    from clm.training.runs import TrainingConfig, walk_forward

    options = default_options().get(engine, {})
    t0 = time.perf_counter()
    frame = pl.read_parquet(work / "frame.parquet")
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()

    def log(message: str) -> None:  # progress on stderr: what a stopped child had done is read from it
        print(f"{PROGRESS} {time.perf_counter() - t0:.2f} {message}", file=sys.stderr, flush=True)

    run = walk_forward(frame, engine, options, TrainingConfig(), timeframe_seconds=TIMEFRAME_SECONDS, log=log)
    seconds = time.perf_counter() - t0
    run.predictions.write_parquet(work / f"predictions_{engine}.parquet")
    fit_s = [r.get("seconds") for r in run.reports]
    return {"options": options, "read_s": read_s, "walk_forward_s": seconds, "fit_s": fit_s,
            "fit_total_s": sum(s or 0.0 for s in fit_s), "folds": len(run.reports),
            "predictions": run.predictions.height,
            "train_rows": [r.get("train_rows") for r in run.reports],
            "best_iterations": [r.get("best_iteration") for r in run.reports],
            "features": len(run.features), "peak_rss_gib": _peak_rss_gib()}


def run_evaluate(work: Path, engines: list[str]) -> dict:
    import polars as pl

    from clm.training.evaluate import evaluate_engines
    from clm.training.runs import TrainingConfig

    t0 = time.perf_counter()
    predictions = pl.concat([pl.read_parquet(work / f"predictions_{e}.parquet") for e in engines])
    keys = predictions.select("symbol", "timestamp").unique()
    candles = pl.scan_parquet(work / "candles.parquet").join(keys.lazy(), on=["symbol", "timestamp"],
                                                            how="semi").collect()
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = evaluate_engines(predictions, candles, timeframe_seconds=TIMEFRAME_SECONDS,
                              horizon=TrainingConfig().horizon)
    seconds = time.perf_counter() - t0
    cols = [c for c in ("engine", "n_rows", "directional_accuracy", "ic", "mae", "model_sharpe") if c in
            result.overall.columns]
    return {"read_s": read_s, "evaluate_s": seconds, "predictions": predictions.height,
            "detail_rows": result.detail.height, "overall": result.overall.select(cols).to_dicts(),
            "peak_rss_gib": _peak_rss_gib()}


# ---------------------------------------------------------------------------------------------
# (b) the peers: the same series, windows and truth for both sides


def peer_series(symbols: list[str] | None, valid_fraction: float):
    """Close prices of the real 5-minute series, and the first validation timestamp per series
    (the last ``valid_fraction`` of each series' bars)."""
    import polars as pl

    frames = []
    for path in sorted(SPOT.glob("*-5m.feather")):
        symbol = path.name.removesuffix("-5m.feather")
        if symbols and symbol not in symbols:
            continue
        df = pl.read_ipc(path).select(
            pl.lit(symbol).alias("symbol"), pl.col("date").dt.replace_time_zone(None).alias("timestamp"), "close"
        ).sort("timestamp")
        gaps = df["timestamp"].diff().dt.total_seconds().drop_nulls()
        if (gaps != TIMEFRAME_SECONDS).any():  # both sides see rows in order: keep only gap-free series
            continue
        frames.append(df)
    if not frames:
        raise ValueError(f"no gap-free series in {SPOT} for {symbols}")
    frame = pl.concat(frames)
    cut = frame.group_by("symbol").agg(
        pl.col("timestamp").sort().get(pl.len() - (pl.len().cast(pl.Float64) * valid_fraction).round().cast(pl.Int64))
        .alias("valid_start")
    )
    return frame.join(cut, on="symbol").sort("symbol", "timestamp")


def validation_targets(series, h: int):
    """One row per validation window: symbol, anchor timestamp (the last input bar: the last bar
    before the window's first target) and its ``h`` true log returns."""
    import polars as pl

    rows = []
    for (symbol,), g in series.group_by("symbol", maintain_order=True):
        ts = g["timestamp"].to_numpy()
        r = np.log(g["close"].to_numpy()[1:] / g["close"].to_numpy()[:-1])  # r[i] is the return into bar i+1
        first = int((g["timestamp"] < g["valid_start"]).sum())  # first validation bar
        anchors = np.arange(first - 1, len(ts) - h)  # targets anchor+1 .. anchor+h all in validation
        truth = np.stack([r[anchors + k] for k in range(h)], axis=1)  # return into bar anchor+1+k
        rows.append(pl.DataFrame({"symbol": symbol, "anchor": ts[anchors], "truth": truth}))
    return pl.concat(rows)


def run_ours(work: Path, model: str, reps: int) -> dict:
    import polars as pl
    import torch

    from clm.models.base import engine_from_config

    series = pl.read_parquet(work / "peer_series.parquet")
    train = series.filter(pl.col("timestamp") < pl.col("valid_start")).drop("valid_start")
    full = series.drop("valid_start")
    options = {"context_length": PEER["input_size"], "prediction_length": PEER["h"], "max_steps": PEER["max_steps"],
               "windows_batch_size": PEER["windows_batch_size"], "learning_rate": PEER["learning_rate"],
               "seed": PEER["seed"], "series": "close", "series_transform": "log_return", "output_start": 1,
               "output_steps": PEER["h"], "loss": "mae", "gradient_clip": 1.0, "device": "cpu",
               # no validation during training (neuralforecast: val_size=0): the last step's model is scored
               "val_check_steps": PEER["max_steps"], **PEER_OURS[model]}
    times, engine = [], None
    for _ in range(reps):
        engine = engine_from_config(model, options)
        start = time.perf_counter()
        engine.fit(train.with_columns(pl.lit(0.0).alias("y")), train.head(0).with_columns(pl.lit(0.0).alias("y")),
                   features=[], target="y")
        times.append(time.perf_counter() - start)
    raw, windows = engine.forecast(full)
    forecasts = pl.DataFrame({"symbol": windows.symbols, "anchor": windows.timestamps, "forecast": raw})
    forecasts.write_parquet(work / f"forecast_ours_{model}.parquet")
    return {"train_s": min(times), "train_times_s": times, "steps": engine.fit_summary.get("steps"),
            "train_windows": engine.fit_summary.get("train_rows"),
            "parameters": sum(p.numel() for p in engine.module.parameters()),
            "torch_threads": torch.get_num_threads(), "options": options, "peak_rss_gib": _peak_rss_gib()}


def peer_mae(work: Path, side: str, model: str, targets) -> dict:
    """MAE over every validation window and all its steps; the windows both sides forecast."""
    import polars as pl

    path = work / f"forecast_{side}_{model}.parquet"
    forecasts = pl.read_parquet(path).with_columns(pl.col("anchor").cast(targets.schema["anchor"]))
    joined = targets.join(forecasts, on=["symbol", "anchor"], how="left")
    missing = int(joined["forecast"].is_null().sum())
    truth = np.stack(joined["truth"].to_numpy())
    if missing:
        return {"windows": targets.height, "missing_windows": missing, "mae": None}
    pred = np.stack(joined["forecast"].to_numpy())
    err = np.abs(pred - truth)
    return {"windows": targets.height, "missing_windows": 0, "values": int(err.size), "mae": float(err.mean()),
            "mae_by_step": err.mean(axis=0).tolist(), "zero_forecast_mae": float(np.abs(truth).mean())}


# ---------------------------------------------------------------------------------------------
# children


def run_child(args: argparse.Namespace) -> dict:
    work = args.dir
    if args.child == "prepare":
        return run_prepare(work)
    if args.child == "evaluate":
        return run_evaluate(work, args.engines)
    if args.child.startswith("ours_"):
        return run_ours(work, args.child.removeprefix("ours_"), args.peer_reps)
    return run_engine(work, args.child)


def _run(cmd: list[str], timeout: float | None, env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        wall = time.perf_counter() - t0
        err = exc.stderr or b""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        return {"error": f"stopped after {wall:.0f} s (its share of the time budget)", "timed_out": True,
                "process_s": wall, "progress": _progress(err)}
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": f"exit status {proc.returncode}: {tail}", "process_s": wall}
    try:
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": wall}
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no result from the child: {proc.stdout[-300:]!r}", "process_s": wall}


def _progress(stderr: str) -> dict:
    """What a stopped engine child had done: per finished fold, when its fit and its fold ended."""
    import re

    folds, fits = [], []
    for line in stderr.splitlines():
        if not line.startswith(PROGRESS):
            continue
        _, at, message = line.split(" ", 2)
        if re.search(r"fold \d+/\d+: trained on", message):
            folds.append(float(at))
        elif re.search(r"\] done in ", message):  # torch engines: the fit itself ended
            fits.append(float(at))
    return {"folds_done": len(folds), "fold_end_s": folds, "fit_end_s": fits}


def _child(name: str, args: argparse.Namespace, work: Path, timeout: float | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--dir", str(work), "--peer-reps", str(args.peer_reps),
           "--engines", *args.engines]
    print(f"  running {name} ...", file=sys.stderr, flush=True)
    return _run(cmd, timeout)


def _nf_child(model: str, args: argparse.Namespace, work: Path) -> dict:
    if not NF_PYTHON.exists():
        return {"skipped": f"{NF_PYTHON.relative_to(ROOT)} is missing (make .venv-nf/.installed)"}
    cmd = [str(NF_PYTHON), str(PEER_SCRIPT), "--model", model, "--series", str(work / "peer_series.parquet"),
           "--out", str(work / f"forecast_nf_{model}.parquet"), "--reps", str(args.peer_reps),
           *[f"--{k.replace('_', '-')}={v}" for k, v in PEER.items()]]
    print(f"  running neuralforecast {model} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = _run(cmd, 600, env)
    if "error" in out:
        return {"skipped": f"neuralforecast failed: {out['error']}"}
    return out


# ---------------------------------------------------------------------------------------------


def run_pipeline(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    inputs = write_bars(args.symbols, args.days, work / "bars.parquet")
    results = {"prepare": _child("prepare", args, work)}
    if "error" in results["prepare"]:
        return {"inputs": inputs, "children": results}
    trained = []
    for i, engine in enumerate(args.engines):
        left = args.budget - (time.perf_counter() - started)
        if left <= 0:
            results[engine] = {"error": "not run: the run's time budget was spent", "timed_out": True,
                               "process_s": 0.0}
            continue
        share = left / (len(args.engines) - i + 0.5)  # what is left, shared with the later engines and evaluate
        results[engine] = _child(engine, args, work, timeout=share)
        if "error" not in results[engine]:
            trained.append(engine)
    if trained:
        args_eval = argparse.Namespace(**{**vars(args), "engines": trained})
        results["evaluate"] = _child("evaluate", args_eval, work)
    return {"inputs": inputs, "children": results}


def run_peers(args: argparse.Namespace, work: Path) -> dict:
    import polars as pl

    series = peer_series(args.peer_symbols, args.valid_fraction)
    series.write_parquet(work / "peer_series.parquet")
    targets = validation_targets(series, PEER["h"])
    info = {"symbols": series["symbol"].unique().sort().to_list(), "bars": series.height,
            "train_bars": int((series["timestamp"] < series["valid_start"]).sum()),
            "validation_windows": targets.height, "valid_fraction": args.valid_fraction}
    out = {"series": info, "config": PEER, "models": {}}
    for model in PEER_MODELS:
        ours = _child(f"ours_{model}", args, work)
        theirs = _nf_child(model, args, work)
        if "error" not in ours:
            ours.update(peer_mae(work, "ours", model, targets))
        if "skipped" not in theirs:
            theirs.update(peer_mae(work, "nf", model, targets))
        out["models"][model] = {"ours": ours, "neuralforecast": theirs}
    del pl
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--quick", action="store_true",
                        help=f"pipeline on {QUICK['symbols']} symbols x {QUICK['days']} days, one peer repetition")
    parser.add_argument("--only", nargs="+", choices=("pipeline", "peers"), default=["pipeline", "peers"])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="seconds for the pipeline's children; an engine still running then is stopped")
    parser.add_argument("--peer-reps", type=int, default=2, help="fits per peer model (best time reported)")
    parser.add_argument("--peer-symbols", nargs="+", default=None,
                        help="series of tests/data/binance_spot_5m (default: all gap-free ones)")
    parser.add_argument("--valid-fraction", type=float, default=0.2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args), default=str))
        return 0
    if args.quick:
        args.symbols, args.days, args.peer_reps = QUICK["symbols"], QUICK["days"], 1

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="clm-train-bench-") as tmp:
        work = Path(tmp)
        pipeline = run_pipeline(args, work) if "pipeline" in args.only else None
        peers = run_peers(args, work) if "peers" in args.only else None

    def target(value, goal, passed, skipped=None):
        if skipped:
            return {"value": None, "target": goal, "pass": None, "skipped": skipped}
        return {"value": value, "target": goal, "pass": bool(passed) if value is not None else False}

    targets, errors = {}, {}
    if pipeline is not None:
        children = pipeline["children"]
        errors.update({k: v["error"] for k, v in children.items() if "error" in v})
        stage_s = dict(children.get("prepare", {}).get("stages_s", {}))
        for name, r in children.items():
            if name == "prepare":
                stage_s["read_bars"] = r.get("read_s", 0.0)
            elif name == "evaluate":
                stage_s["evaluate"] = r.get("read_s", 0.0) + r.get("evaluate_s", 0.0)
            elif "error" not in r:
                stage_s[name] = r["read_s"] + r["walk_forward_s"]
            else:
                stage_s[name] = r.get("process_s", 0.0)  # a lower bound: stopped or failed
        total = sum(stage_s.values())
        pipeline["stages_s"] = stage_s
        pipeline["total_s"] = total
        rss = max((r.get("peak_rss_gib", 0.0) for r in children.values()), default=None)
        pipeline["peak_rss_gib"] = rss
        complete = not any("error" in r for r in children.values()) and set(args.engines) <= set(children)
        targets["pipeline_total_s"] = target(total, f"< {TARGET_TOTAL_S} s (all stages after the bars exist)"
                                             + ("" if complete else "; incomplete: a lower bound"),
                                             complete and total < TARGET_TOTAL_S)
        targets["pipeline_peak_rss_gib"] = target(rss, f"< {TARGET_RSS_GIB} GiB (largest child)"
                                                  + ("" if complete else "; incomplete: a child was stopped"),
                                                  complete and rss is not None and rss < TARGET_RSS_GIB)
    if peers is not None:
        for model, sides in peers["models"].items():
            ours, theirs = sides["ours"], sides["neuralforecast"]
            if "error" in ours:
                errors[f"ours_{model}"] = ours["error"]
            skipped = theirs.get("skipped")
            mae_ratio = speedup = None
            if not skipped and "error" not in ours:
                if ours.get("mae") is not None and theirs.get("mae"):
                    mae_ratio = ours["mae"] / theirs["mae"]
                if ours.get("train_s") and theirs.get("train_s"):
                    speedup = theirs["train_s"] / ours["train_s"]
            sides["mae_ratio"], sides["speedup"] = mae_ratio, speedup
            targets[f"{model}_mae_vs_nf"] = target(mae_ratio, f"<= {TARGET_MAE_RATIO}x neuralforecast's validation MAE",
                                                   mae_ratio is not None and mae_ratio <= TARGET_MAE_RATIO, skipped)
            targets[f"{model}_speed_vs_nf"] = target(speedup, f">= {TARGET_SPEEDUP}x faster training than neuralforecast",
                                                     speedup is not None and speedup >= TARGET_SPEEDUP, skipped)

    summary = {"cpu_count": os.cpu_count(), "load_average": {"before": load_before, "after": os.getloadavg()},
               "quick": args.quick, "pipeline": pipeline, "peers": peers, "targets": targets, "errors": errors,
               "elapsed_s": time.perf_counter() - t_start}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2, default=str))

    load = summary["load_average"]
    print(f"training benchmark: {os.cpu_count()} cores; load average {load['before'][0]:.2f} before, "
          f"{load['after'][0]:.2f} after (1 min)")
    if pipeline is not None:
        inp, ch = pipeline["inputs"], pipeline["children"]
        prep = ch.get("prepare", {})
        print(f"  (a) pipeline: {inp['rows']:,} bars ({inp['symbols']} symbols x {inp['days']} days, 5m; generated in"
              f" {inp['generate_s']:.1f} s, not counted); {fmt(prep.get('features'), 'd')} features,"
              f" {fmt(prep.get('frame_rows'), ',')} frame rows ({fmt(prep.get('labelled_rows'), ',')} labelled)")
        print(f"  {'stage':24s} {'wall s':>8s} {'child peak RSS GiB':>18s}  notes")
        for name, sec in pipeline["stages_s"].items():
            if name in ENGINES:
                r = ch[name]
                if "error" in r:
                    p = r.get("progress") or {}
                    done = (f"; {p['folds_done']} folds done"
                            + (f", at {', '.join(f'{t:.0f}' for t in p['fold_end_s'])} s" if p["fold_end_s"] else "")
                            + (f" (fits ended at {', '.join(f'{t:.0f}' for t in p['fit_end_s'])} s)"
                               if p.get("fit_end_s") else "")) if p else ""
                    print(f"  {name:24s} {sec:>8.1f} {'-':>18s}  FAILED: {r['error']}{done}")
                    continue
                fit = r["fit_total_s"]
                print(f"  {name:24s} {sec:>8.1f} {r['peak_rss_gib']:>18.2f}  {r['folds']} folds: fit {fit:.1f} s,"
                      f" predict + splits {r['walk_forward_s'] - fit:.1f} s, read {r['read_s']:.1f} s;"
                      f" {r['predictions']:,} OOS predictions; options {r['options'] or 'defaults'}")
            elif name == "evaluate":
                r = ch["evaluate"]
                print(f"  {name:24s} {sec:>8.1f} {fmt(r.get('peak_rss_gib'), '>18.2f'):>18s}"
                      f"  {fmt(r.get('predictions'), ',')} predictions" if "error" not in r else
                      f"  {name:24s} FAILED: {r['error']}")
            else:
                rss = f"{prep['peak_rss_gib']:.2f}" if name == "read_bars" else ""
                print(f"  {name:24s} {sec:>8.1f} {rss:>18s}  {'(prepare child)' if rss else ''}")
        print(f"  {'total':24s} {pipeline['total_s']:>8.1f} {fmt(pipeline['peak_rss_gib'], '>18.2f'):>18s}"
              f"  (largest child)")
    if peers is not None:
        s = peers["series"]
        print(f"  (b) peers on {len(s['symbols'])} real series ({', '.join(s['symbols'])}; {s['bars']:,} bars,"
              f" {s['train_bars']:,} for training), {s['validation_windows']:,} validation windows x {PEER['h']} steps;"
              f" input {PEER['input_size']}, h {PEER['h']}, {PEER['max_steps']} steps, windows_batch_size"
              f" {PEER['windows_batch_size']}, lr {PEER['learning_rate']}, seed {PEER['seed']}")
        print(f"  {'model':22s} {'params':>9s} {'train s':>8s} {'val MAE':>11s} {'MAE ratio':>9s} {'speedup':>8s}")
        for model, sides in peers["models"].items():
            for side in ("ours", "neuralforecast"):
                r = sides[side]
                label = f"{'clm' if side == 'ours' else 'neuralforecast'} {model}"
                if "error" in r or "skipped" in r:
                    print(f"  {label:22s} {r.get('error') or 'skipped: ' + r['skipped']}")
                    continue
                extra = (f" {fmt(sides['mae_ratio'], '>8.3f')}x {fmt(sides['speedup'], '>7.2f')}x"
                         if side == "ours" else "")
                print(f"  {label:22s} {r['parameters']:>9,d} {r['train_s']:>8.2f} {fmt(r.get('mae'), '>11.4e')}"
                      f"{extra}")
            zero = sides["ours"].get("zero_forecast_mae")
            if zero is not None:
                print(f"  {'':22s} (forecasting 0 everywhere: MAE {zero:.4e})")
    for name, t in targets.items():
        if t.get("skipped"):
            print(f"  target {name}: skipped: {t['skipped']} (target {t['target']})")
            continue
        print(f"  target {name}: {'PASS' if t['pass'] else 'FAIL'} ({fmt(t['value'], '.3g')}; target {t['target']})")
    for name, err in errors.items():
        print(f"  {name}: FAILED ({err})")
    print(f"  results: {args.json}  ({summary['elapsed_s']:.0f} s)")
    failed = [t for t in targets.values() if t["pass"] is False]
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
