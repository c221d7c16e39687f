"""Ingest benchmark: generate, validate and write 50 symbols x 180 days of 5-minute bars (2.59M bars).

CLM's pipeline (synthetic source -> ``validate_bars`` -> hive Parquet in a lake) runs in one child
process and the same validation written in plain pandas runs in another, so each has its own peak
RSS and both are measured in the same run on the same machine. Targets: CLM under 15 s and under
2 GiB, at least 5x faster than the pandas peer.

    python benchmarks/ingest.py [--symbols 50] [--days 180] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_SECONDS = 15.0
TARGET_RSS_GIB = 2.0
TARGET_SPEEDUP = 5.0


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def run_clm(symbols: int, days: int) -> dict:
    """The product's own path: synthetic source -> run_ingest (validate) -> write_ingest (lake)."""
    import datetime as dt

    from clm.data import ingest
    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
    from clm.lake import Lake

    config = SyntheticConfig(symbols=symbols, days=days)
    t0 = time.perf_counter()
    result = ingest.run_ingest(SyntheticSource(config), "synthetic")
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        written = ingest.write_ingest(Lake(root), result, config.start, config.start + dt.timedelta(days=days))
    t3 = time.perf_counter()
    return {
        "rows": result.rows_read,
        "generate_s": result.seconds["load"],
        "validate_s": result.seconds["validate"],
        "write_s": t3 - t2,
        "total_s": t3 - t0,
        "files": sum(w["files_written"] for w in written.values()),
        "peak_rss_gib": _peak_rss_gib(),
        "quarantined": result.rows_quarantined,
        "candles": result.validation.candles.height,
        "filled_bars": result.validation.filled_bars,
    }


def pandas_validate(df):
    """The same rules as ``clm.data.validation`` in idiomatic pandas (groupby/rolling, no row loops)."""
    import pandas as pd

    df = df.sort_values(["symbol", "source_file", "source_row"], kind="stable").reset_index(drop=True)
    price = df[["open", "high", "low", "close"]]
    bad = (price <= 0).any(axis=1) | (df["volume"] < 0)
    bad |= (df["high"] < df[["open", "close"]].max(axis=1)) | (df["low"] > df[["open", "close"]].min(axis=1))
    prior_max = df.groupby(["symbol", "source_file"])["timestamp"].transform(lambda s: s.cummax().shift())
    bad |= df["timestamp"] < prior_max
    bad |= df.duplicated(["symbol", "timestamp"], keep="first")
    ns = df["timestamp"].astype("int64")
    step = df.groupby("symbol")["timestamp"].transform(lambda s: s.sort_values().diff().mode().iloc[0])
    bad |= (ns % step.astype("int64")) != 0
    kept = df[~bad].sort_values(["symbol", "timestamp"])
    out = []
    for _, g in kept.groupby("symbol", sort=True):
        g = g.set_index("timestamp")
        freq = g.index.to_series().diff().mode().iloc[0]
        full = g.reindex(pd.date_range(g.index[0], g.index[-1], freq=freq))
        missing = full["close"].isna()
        run_id = (~missing).cumsum()
        run_len = missing.groupby(run_id).transform("sum")
        fill = missing & (run_len <= 3)
        full["is_filled"] = fill
        full["close"] = full["close"].ffill()
        for col in ("open", "high", "low"):
            full[col] = full[col].where(~fill, full["close"])
        full["volume"] = full["volume"].where(~fill, 0.0)
        full = full[~missing | fill]
        breaks = full.index.to_series().diff() > freq
        full["segment_id"] = breaks.cumsum()
        r = np.log(full["close"]).diff()
        med = r.rolling(288, min_periods=20).median().shift()
        mad = (r - med).abs().rolling(288, min_periods=20).median().shift() * 1.4826
        full["outlier_z"] = (r - med) / mad
        full["is_outlier"] = full["outlier_z"].abs() > 10
        out.append(full)
    return pd.concat(out), int(bad.sum())


def run_pandas(symbols: int, days: int) -> dict:
    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource

    batch = SyntheticSource(SyntheticConfig(symbols=symbols, days=days)).load()
    frame = batch.bars.to_pandas()
    t0 = time.perf_counter()
    candles, quarantined = pandas_validate(frame)
    t1 = time.perf_counter()
    return {"rows": len(frame), "validate_s": t1 - t0, "peak_rss_gib": _peak_rss_gib(), "quarantined": quarantined,
            "candles": len(candles)}


def _child(part: str, symbols: int, days: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", part, "--symbols", str(symbols), "--days", str(days)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--child", choices=["clm", "pandas"])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "ingest.json")
    args = parser.parse_args()
    if args.child:
        fn = run_clm if args.child == "clm" else run_pandas
        print(json.dumps(fn(args.symbols, args.days)))
        return 0
    clm = _child("clm", args.symbols, args.days)
    peer = _child("pandas", args.symbols, args.days)
    speedup = peer["validate_s"] / clm["validate_s"]
    summary = {
        "bars": clm["rows"],
        "clm": clm,
        "pandas_peer": peer,
        "validate_speedup_vs_pandas": speedup,
        "rows_per_s": clm["rows"] / clm["total_s"],
        "cpu_count": os.cpu_count(),
        "targets": {"total_s": TARGET_SECONDS, "peak_rss_gib": TARGET_RSS_GIB, "speedup": TARGET_SPEEDUP},
    }
    summary["met"] = {
        "total_s": clm["total_s"] < TARGET_SECONDS,
        "peak_rss_gib": clm["peak_rss_gib"] < TARGET_RSS_GIB,
        "speedup": speedup >= TARGET_SPEEDUP,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"ingest benchmark: {clm['rows']:,} bars ({args.symbols} symbols x {args.days} days, 5m), {os.cpu_count()} cores")
    print(f"  CLM    generate {clm['generate_s']:.2f}s  validate {clm['validate_s']:.2f}s  write {clm['write_s']:.2f}s"
          f" ({clm['files']:,} files)  total {clm['total_s']:.2f}s  {summary['rows_per_s']:,.0f} rows/s"
          f"  peak RSS {clm['peak_rss_gib']:.2f} GiB")
    print(f"  pandas validate {peer['validate_s']:.2f}s  peak RSS {peer['peak_rss_gib']:.2f} GiB")
    print(f"  validation speed-up vs pandas: {speedup:.1f}x")
    for name, ok in summary["met"].items():
        print(f"  target {name}: {'met' if ok else 'MISSED'} (target {summary['targets'][name]})")
    print(f"  results: {args.json}")
    return 0 if all(summary["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
