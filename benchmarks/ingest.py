"""Ingest benchmark: generate, validate and write 50 symbols x 180 days of 5-minute bars (2.59M bars).

CLM's pipeline (synthetic source -> ``validate_bars`` -> hive Parquet in a lake) runs in one child
process and the same validation written in plain pandas (``pandas_peer.py``: the same rules,
precedence and outputs) runs in another, so each has its own peak RSS and both are measured in the
same run on the same machine. Both read the same input: the synthetic bars plus seeded defects
(dropped runs of bars, corrupt rows, duplicates, a second vendor for one symbol; ``--clean`` turns
them off). The parent cross-checks the two outputs (counts per table and rule, content digests,
outlier z-scores). Targets: CLM under 15 s and under 2 GiB, at least 5x faster than the pandas
peer; exit status 0 only when every target is met and the outputs agree.

    python benchmarks/ingest.py [--symbols 50] [--days 180] [--clean] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
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
DEFECT_SEED = 20240101
VENDOR_FILE = "vendor_b"  # sorts after "synthetic", so the synthetic bar is the one kept
# defect kinds, injected round-robin into ~0.01% of the bars
CORRUPTIONS = (
    "negative_close", "zero_open", "negative_volume", "high_below_low", "low_above_high",
    "nan_close", "inf_volume", "misaligned", "out_of_order", "duplicate",
)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# input: synthetic bars plus seeded defects, built identically for both children


def inject_defects(bars, seed: int = DEFECT_SEED):
    """Seeded defects on the synthetic frame (symbol-major, one file, source_row 1..n per symbol).

    Drops ~0.1% of the bars in runs of 1-13 (filled gaps and segment breaks), corrupts ~0.01%
    (every kind in ``CORRUPTIONS``; duplicates are inserted right after their original) and adds a
    second vendor file with 3 days of one symbol whose closes differ by ~4 bps (sd). Returns the
    frame in ``RAW_BAR_SCHEMA``, sorted by (symbol, source_file, source_row), and what was injected.
    """
    import polars as pl

    from clm.data.schema import RAW_BAR_SCHEMA

    rng = np.random.default_rng(seed)
    n = bars.height
    n_symbols = bars["symbol"].n_unique()
    n_bars = n // n_symbols
    if n != n_symbols * n_bars or bars["source_file"].n_unique() != 1 or n_bars < 100:
        raise ValueError("inject_defects expects the synthetic source's layout (>= 100 bars a symbol)")
    step = int(bars["timestamp"].dt.epoch("us")[1] - bars["timestamp"].dt.epoch("us")[0])
    pos = np.arange(n, dtype=np.int64) % n_bars  # bar index within its symbol

    # runs of dropped bars, away from the ends of each symbol
    run_lengths = np.array([1, 1, 1, 2, 3, 4, 5, 8, 13])
    lengths = rng.choice(run_lengths, size=max(4, round(1e-3 * n / run_lengths.mean())))
    starts = rng.integers(0, n_symbols, lengths.size) * n_bars + rng.integers(20, n_bars - 20, lengths.size)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    drop = np.zeros(n, dtype=bool)
    drop[np.repeat(starts, lengths) + offsets] = True

    # corrupt rows: distinct, kept, at least 20 bars from either end of their symbol
    candidates = np.flatnonzero(~drop & (pos >= 20) & (pos < n_bars - 20))
    picked = np.sort(rng.choice(candidates, max(2 * len(CORRUPTIONS), round(1e-4 * n)), replace=False))
    kind = np.resize(np.arange(len(CORRUPTIONS)), picked.size)
    rng.shuffle(kind)
    cols = {c: bars[c].to_numpy().copy() for c in ("open", "high", "low", "close", "volume")}
    ts = bars["timestamp"].dt.epoch("us").to_numpy().copy()
    o, h, lo, c, v = (cols[k] for k in ("open", "high", "low", "close", "volume"))
    at = {name: picked[kind == i] for i, name in enumerate(CORRUPTIONS)}
    c[at["negative_close"]] *= -1
    o[at["zero_open"]] = 0.0
    v[at["negative_volume"]] *= -1
    i = at["high_below_low"]
    h[i] = np.minimum(np.minimum(o[i], c[i]), lo[i]) * 0.999
    i = at["low_above_high"]
    lo[i] = np.maximum(np.maximum(o[i], c[i]), h[i]) * 1.001
    c[at["nan_close"]] = np.nan
    v[at["inf_volume"]] = np.inf
    ts[at["misaligned"]] += 17 * 1_000_000
    ts[at["out_of_order"]] -= 10 * step

    main = bars.with_columns(
        pl.Series("timestamp", ts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        *[pl.Series(k, arr) for k, arr in cols.items()],
    )

    # the second vendor: 3 days of one symbol from the clean bars, closes ~4 bps apart
    vendor_symbol = 1 % n_symbols
    bars_per_day = 86_400 * 1_000_000 // step
    first_day = min(10, max(0, n_bars // bars_per_day - 3))
    lo_row = vendor_symbol * n_bars + first_day * bars_per_day
    hi_row = min(lo_row + 3 * bars_per_day, (vendor_symbol + 1) * n_bars)
    vendor = bars.slice(lo_row, hi_row - lo_row)
    noise = pl.Series(1.0 + rng.normal(0.0, 4e-4, vendor.height))
    vendor = vendor.with_columns(
        pl.lit(VENDOR_FILE).alias("source_file"), (pl.col("close") * noise).alias("close")
    ).with_columns(pl.max_horizontal("high", "close").alias("high"), pl.min_horizontal("low", "close").alias("low"))

    # final row order: kept bars, each duplicate right after its original, the vendor file after
    # its symbol's synthetic bars; then source_row = 1.. per (symbol, file)
    keep = np.flatnonzero(~drop)
    dups = at["duplicate"]
    order = np.insert(keep, np.searchsorted(keep, dups, side="right"), dups)
    vendor_at = np.searchsorted(order, (vendor_symbol + 1) * n_bars)
    order = np.insert(order, vendor_at, n + np.arange(vendor.height))
    group = np.where(order < n, order // n_bars * 2, vendor_symbol * 2 + 1)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    source_row = np.arange(order.size) + 1 - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    out = (
        pl.concat([main, vendor.select(main.columns)])[order]
        .with_columns(pl.Series("source_row", source_row))
        .select(pl.col(name).cast(dtype) for name, dtype in RAW_BAR_SCHEMA.items())
    )
    injected = {
        "rows": out.height,
        "dropped_bars": int(drop.sum()),
        "dropped_runs": int(lengths.size),
        **{f"corrupt_{name}": int(rows.size) for name, rows in at.items()},
        "vendor_rows": vendor.height,
    }
    return out, injected


class BenchSource:
    """The synthetic source, optionally with ``inject_defects`` applied (the time it takes is kept)."""

    name = "synthetic"

    def __init__(self, symbols: int, days: int, defects: bool) -> None:
        from clm.data.sources.synthetic import SyntheticConfig

        self.config = SyntheticConfig(symbols=symbols, days=days)
        self.defects = defects
        self.inject_s = 0.0
        self.injected: dict = {}

    def load(self):
        from clm.data.sources.base import SourceBatch
        from clm.data.sources.synthetic import SyntheticSource

        batch = SyntheticSource(self.config).load()
        if not self.defects:
            self.injected = {"rows": batch.bars.height}
            return batch
        t0 = time.perf_counter()
        bars, self.injected = inject_defects(batch.bars)
        self.inject_s = time.perf_counter() - t0
        return SourceBatch(
            source=batch.source, bars=bars, quarantine=batch.quarantine, rows_read=bars.height,
            files=batch.files, regimes=batch.regimes,
        )


# ---------------------------------------------------------------------------------------------
# what the cross-check compares: counts and content digests of the outputs (pandas frames)

# columns hashed per table; the first SORT_KEYS[table] of them order the rows (a unique key)
DIGEST_COLUMNS = {
    "candles": ["symbol", "timestamp", "open", "high", "low", "close", "volume", "spread_bps",
                "quote_volume", "is_filled", "segment_id", "is_outlier", "source"],
    "quarantine": ["source_file", "row", "symbol", "timestamp", "reason", "field", "value"],
    "gaps": ["symbol", "gap_start", "gap_end", "missing_bars", "action"],
    "mismatches": ["symbol", "timestamp", "field", "other_source", "kept_source", "kept_value",
                   "other_value", "diff_bps"],
    "calendars": ["symbol", "calendar", "timeframe_seconds"],
}
SORT_KEYS = {"candles": 2, "quarantine": 5, "gaps": 2, "mismatches": 4, "calendars": 1}


def _digest(frame, columns: list[str], keys: int) -> str:
    """Order-independent content hash: rows sorted by the first ``keys`` columns, canonical bytes."""
    import pandas as pd

    frame = frame[columns].reset_index(drop=True)
    if "value" in columns and len(frame):  # numbers as floats: formatting is not a rule
        numeric = frame["field"] != "timestamp"
        frame.loc[numeric, "value"] = frame.loc[numeric, "value"].to_numpy(object).astype(float).astype(str)
    h = hashlib.sha256()
    encoded = []
    for col in columns:
        s = frame[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            arr = s.dt.tz_convert(None).to_numpy("datetime64[us]").view("int64")
        elif s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            arr, uniques = pd.factorize(s.astype(object), sort=True)
            h.update("\x1f".join(map(str, uniques)).encode())
        else:
            arr = s.to_numpy(dtype="float64", na_value=np.nan, copy=True)
            arr[np.isnan(arr)] = np.nan  # one NaN bit pattern
        encoded.append(np.ascontiguousarray(arr))
    order = np.lexsort(encoded[:keys][::-1]) if len(frame) else np.arange(0)
    for arr in encoded:
        h.update(arr[order].tobytes())
    return h.hexdigest()[:16]


def cross_check_data(tables: dict) -> dict:
    candles, gaps, q = tables["candles"], tables["gaps"], tables["quarantine"]
    counts = {
        "candles": len(candles),
        "filled_bars": int(candles["is_filled"].sum()),
        "segments": int(candles[["symbol", "segment_id"]].drop_duplicates().shape[0]),
        "outliers": int(candles["is_outlier"].sum()),
        "outlier_z_scored": int(candles["outlier_z"].notna().sum()),
        **{f"quarantine.{k}": int(n) for k, n in q["reason"].value_counts().sort_index().items()},
        **{f"gaps.{k}": int(n) for k, n in gaps["action"].value_counts().sort_index().items()},
        "gaps.missing_bars": int(gaps["missing_bars"].sum()),
        "mismatches": len(tables["mismatches"]),
        **{f"calendars.{k}": int(n) for k, n in tables["calendars"]["calendar"].value_counts().sort_index().items()},
    }
    digests = {name: _digest(tables[name], cols, SORT_KEYS[name]) for name, cols in DIGEST_COLUMNS.items()}
    outliers = candles.loc[candles["is_outlier"], ["symbol", "timestamp"]]
    digests["outlier_bars"] = _digest(outliers, ["symbol", "timestamp"], 2)
    return {"counts": counts, "digests": digests}


# ---------------------------------------------------------------------------------------------
# the two children


def run_clm(symbols: int, days: int, defects: bool, dump: Path | None) -> dict:
    """The product's own path: synthetic source -> run_ingest (validate) -> write_ingest (lake)."""
    import datetime as dt

    from clm.data import ingest
    from clm.lake import Lake

    source = BenchSource(symbols, days, defects)
    t0 = time.perf_counter()
    result = ingest.run_ingest(source, "synthetic")
    t2 = time.perf_counter()
    start = source.config.start
    with tempfile.TemporaryDirectory() as root:
        written = ingest.write_ingest(Lake(root), result, start, start + dt.timedelta(days=days))
    t3 = time.perf_counter()
    out = {
        "rows": result.rows_read,
        "generate_s": result.seconds["load"],
        "inject_s": source.inject_s,
        "validate_s": result.seconds["validate"],
        "write_s": t3 - t2,
        "total_s": t3 - t0,
        "files": sum(w["files_written"] for w in written.values()),
        "peak_rss_gib": _peak_rss_gib(),  # before the cross-check work below
        "injected": source.injected,
    }
    v = result.validation
    tables = {name: getattr(v, name).to_pandas() for name in DIGEST_COLUMNS}
    out["cross_check"] = cross_check_data(tables)
    if dump is not None:
        np.save(dump / "clm_outlier_z.npy", tables["candles"]["outlier_z"].to_numpy("float64", na_value=np.nan))
    return out


def run_pandas(symbols: int, days: int, defects: bool, dump: Path | None) -> dict:
    from pandas_peer import pandas_validate

    source = BenchSource(symbols, days, defects)
    frame = source.load().bars.to_pandas()
    t0 = time.perf_counter()
    tables = pandas_validate(frame)
    t1 = time.perf_counter()
    out = {
        "rows": len(frame),
        "validate_s": t1 - t0,
        "peak_rss_gib": _peak_rss_gib(),
        "injected": source.injected,
        "cross_check": cross_check_data(tables),
    }
    if dump is not None:
        np.save(dump / "pandas_outlier_z.npy", tables["candles"]["outlier_z"].to_numpy("float64", na_value=np.nan))
    return out


def _child(part: str, args: argparse.Namespace, dump: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", part, "--symbols", str(args.symbols), "--days", str(args.days),
           "--dump", str(dump)] + (["--clean"] if args.clean else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child {part!r} failed with exit status {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(clm: dict, peer: dict, dump: Path) -> dict:
    """Exact agreement of counts and digests; outlier z-scores compared value by value."""
    a, b = clm["cross_check"], peer["cross_check"]
    keys = list(dict.fromkeys([*a["counts"], *b["counts"]]))
    count_diffs = {k: (a["counts"].get(k), b["counts"].get(k)) for k in keys if a["counts"].get(k) != b["counts"].get(k)}
    digest_diffs = [k for k in a["digests"] if a["digests"][k] != b["digests"].get(k)]
    z_clm, z_pd = np.load(dump / "clm_outlier_z.npy"), np.load(dump / "pandas_outlier_z.npy")
    z = {"compared": False}
    if z_clm.shape == z_pd.shape:
        both = ~np.isnan(z_clm) & ~np.isnan(z_pd)
        diff = np.abs(z_clm[both] - z_pd[both])
        z = {
            "compared": True,
            "null_pattern_equal": bool((np.isnan(z_clm) == np.isnan(z_pd)).all()),
            "bars_differing": int((diff > 0).sum()),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "max_rel_diff": float((diff / np.maximum(np.abs(z_clm[both]), 1e-300)).max()) if diff.size else 0.0,
        }
    inputs_equal = clm["injected"] == peer["injected"] and clm["rows"] == peer["rows"]
    agree = inputs_equal and not count_diffs and not digest_diffs and z.get("null_pattern_equal", False)
    return {"outputs_agree": agree, "inputs_equal": inputs_equal, "count_diffs": count_diffs,
            "digest_diffs": digest_diffs, "outlier_z": z}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--clean", action="store_true", help="no injected defects")
    parser.add_argument("--child", choices=["clm", "pandas"])
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "ingest.json")
    args = parser.parse_args()
    if args.child:
        fn = run_clm if args.child == "clm" else run_pandas
        print(json.dumps(fn(args.symbols, args.days, not args.clean, args.dump)))
        return 0

    from clm.data.validation import ValidationConfig
    from pandas_peer import DEFAULTS

    defaults = ValidationConfig().model_dump()
    if any(defaults[k] != val for k, val in DEFAULTS.items()):
        raise SystemExit(f"pandas_peer.DEFAULTS {DEFAULTS} no longer match ValidationConfig() {defaults}")
    with tempfile.TemporaryDirectory() as dump:
        clm = _child("clm", args, Path(dump))
        peer = _child("pandas", args, Path(dump))
        check = compare(clm, peer, Path(dump))
    speedup = peer["validate_s"] / clm["validate_s"]
    summary = {
        "bars": clm["rows"],
        "defects": not args.clean,
        "clm": clm,
        "pandas_peer": peer,
        "validate_speedup_vs_pandas": speedup,
        "rows_per_s": clm["rows"] / clm["total_s"],
        "cpu_count": os.cpu_count(),
        "cross_check": check,
        "targets": {"total_s": TARGET_SECONDS, "peak_rss_gib": TARGET_RSS_GIB, "speedup": TARGET_SPEEDUP},
    }
    summary["met"] = {
        "total_s": clm["total_s"] < TARGET_SECONDS,
        "peak_rss_gib": clm["peak_rss_gib"] < TARGET_RSS_GIB,
        "speedup": speedup >= TARGET_SPEEDUP,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))

    inj = clm["injected"]
    defects = (f"defects: {inj['dropped_bars']:,} dropped bars in {inj['dropped_runs']:,} runs, "
               f"{sum(n for k, n in inj.items() if k.startswith('corrupt_')):,} corrupt rows, "
               f"{inj['vendor_rows']:,} second-vendor rows" if not args.clean else "no defects (--clean)")
    print(f"ingest benchmark: {clm['rows']:,} bars ({args.symbols} symbols x {args.days} days, 5m), "
          f"{os.cpu_count()} cores; {defects}")
    print(f"  CLM    generate {clm['generate_s']:.2f}s (defects {clm['inject_s']:.2f}s)  validate {clm['validate_s']:.2f}s"
          f"  write {clm['write_s']:.2f}s ({clm['files']:,} files)  total {clm['total_s']:.2f}s"
          f"  {summary['rows_per_s']:,.0f} rows/s  peak RSS {clm['peak_rss_gib']:.2f} GiB")
    print(f"  pandas validate {peer['validate_s']:.2f}s  peak RSS {peer['peak_rss_gib']:.2f} GiB")
    print(f"  validation speed-up vs pandas: {speedup:.1f}x")
    a, b = clm["cross_check"]["counts"], peer["cross_check"]["counts"]
    print(f"  cross-check {'':26s} {'CLM':>11s} {'pandas':>11s}")
    for key in dict.fromkeys([*a, *b]):
        flag = "" if a.get(key) == b.get(key) else "  <- differs"
        print(f"    {key:36s} {a.get(key, '-'):>11,} {b.get(key, '-'):>11,}{flag}")
    digests = clm["cross_check"]["digests"]
    print("    content digests: " + ", ".join(f"{k} {'=' if k not in check['digest_diffs'] else 'DIFFER'}" for k in digests))
    z = check["outlier_z"]
    if z["compared"]:
        print(f"    outlier_z: nulls {'identical' if z['null_pattern_equal'] else 'DIFFER'}, {z['bars_differing']:,} values differ"
              f" (max |diff| {z['max_abs_diff']:.1e}, rel {z['max_rel_diff']:.1e}: numpy log vs libm log, last bits)")
    print(f"  outputs_agree: {str(check['outputs_agree']).lower()}")
    for name, ok in summary["met"].items():
        print(f"  target {name}: {'met' if ok else 'MISSED'} (target {summary['targets'][name]})")
    print(f"  results: {args.json}")
    return 0 if all(summary["met"].values()) and check["outputs_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
