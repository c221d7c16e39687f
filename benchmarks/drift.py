"""Drift benchmark: KS and PSI on 64 features, 100k reference rows vs 20k recent rows, against scipy.

Both sides get the same seeded float64 columns in the same run on the same machine. The features:
5 shifted by 0.5 sigma, 8 by small shifts (0.02-0.1 sigma: the moderate D whose exact p-value scipy
computes slowly), 3 with a wider spread (x1.1-1.3), the rest unchanged.

    scipy      ``scipy.stats.ks_2samp(reference[:, j], recent[:, j])`` looped over the features
               (method 'auto': asymptotic at these sizes)
    clm fit    ``DriftReference.fit``: each reference feature sorted once, its PSI bins fixed (once per
               reference window, reused by every check against it)
    clm check  ``DriftReference.compare``: KS (D and p) and PSI of every feature of the recent window;
               also with one thread (informational)
    naive PSI  ``np.quantile`` bins on the unsorted reference and ``np.histogram`` per feature: the
               cross-check of clm's PSI (informational time)

Times are the best of ``--reps`` repetitions (the first is reported too). The parent checks that every
feature has the same D as scipy (to 1e-12), a p-value within 2% of scipy's and the same PSI as the
naive computation (to 1e-9), prints a table, writes JSON and exits non-zero when a target is missed.
Target (2 cores): a check (``compare``, the reference fitted once) at least 5x faster than the scipy
loop; fit + check together is reported beside it.

    python benchmarks/drift.py [--features 64] [--reference 100000] [--recent 20000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from timing import fmt, repeat, timing

TARGET_SPEEDUP = 5.0  # scipy loop time / clm check time, at least
D_TOLERANCE = 1e-12
P_RELATIVE = 0.02
PSI_TOLERANCE = 1e-9
TINY = 1e-300  # p-values below this are 0 for the comparison (both sides underflow)


def make_data(features: int, n_reference: int, n_recent: int, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(reference, recent) as (rows, features) column-major arrays, and what was changed per feature."""
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((features, n_reference)).T
    recent = rng.standard_normal((features, n_recent)).T
    changes = ["none"] * features
    for j in range(min(5, features)):
        recent[:, j] += 0.5
        changes[j] = "shift 0.5"
    for j, shift in zip(range(5, min(13, features)), np.linspace(0.02, 0.1, 8), strict=False):
        recent[:, j] += shift
        changes[j] = f"shift {shift:.3f}"
    for j, scale in zip(range(13, min(16, features)), (1.1, 1.2, 1.3), strict=False):
        recent[:, j] *= scale
        changes[j] = f"scale {scale}"
    return reference, recent, changes


def scipy_loop(reference: np.ndarray, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import ks_2samp

    results = [ks_2samp(reference[:, j], recent[:, j]) for j in range(reference.shape[1])]
    return np.array([r.statistic for r in results]), np.array([r.pvalue for r in results])


def naive_psi(reference: np.ndarray, recent: np.ndarray, bins: int) -> np.ndarray:
    """PSI the textbook way: quantile edges on the reference, duplicates (and the minimum) dropped, histograms."""
    from clm.drift import PSI_EPSILON

    out = []
    for j in range(reference.shape[1]):
        ref, rec = reference[:, j], recent[:, j]
        edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
        edges = edges[edges > ref.min()]
        grid = np.concatenate(([-np.inf], edges, [np.inf]))
        p = np.maximum(np.histogram(ref, grid)[0] / ref.size, PSI_EPSILON)
        q = np.maximum(np.histogram(rec, grid)[0] / rec.size, PSI_EPSILON)
        out.append(float(np.sum((q - p) * np.log(q / p))))
    return np.array(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--recent", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "drift.json")
    args = parser.parse_args()

    import scipy

    from clm.drift import DriftReference
    from clm.drift.statistics import DEFAULT_BINS, default_threads

    t_start = time.perf_counter()
    load_before = os.getloadavg()  # other work on the machine skews every time below: it is reported
    reference, recent, changes = make_data(args.features, args.reference, args.recent, args.seed)
    names = [f"f{j:02d}" for j in range(args.features)]

    (scipy_d, scipy_p), scipy_times = repeat(lambda: scipy_loop(reference, recent), args.reps)
    fitted, fit_times = repeat(lambda: DriftReference.fit(reference, names, bins=DEFAULT_BINS), args.reps)
    table, check_times = repeat(lambda: fitted.compare(recent), args.reps)
    _, serial_times = repeat(lambda: fitted.compare(recent, threads=1), args.reps)
    psi_naive, naive_times = repeat(lambda: naive_psi(reference, recent, DEFAULT_BINS), 1)

    d = table["ks_statistic"].to_numpy()
    p = table["ks_p_value"].to_numpy()
    psi = table["psi"].to_numpy()
    d_diff = np.abs(d - scipy_d)
    both_tiny = (p < TINY) & (scipy_p < TINY)
    p_rel = np.where(both_tiny, 0.0, np.abs(p - scipy_p) / np.maximum(scipy_p, TINY))
    psi_diff = np.abs(psi - psi_naive)

    scipy_s, fit_s, check_s = min(scipy_times), min(fit_times), min(check_times)
    speedup = scipy_s / check_s
    speedup_fit = scipy_s / (fit_s + check_s)
    targets = {
        "ks_statistic_equal": {"value": float(d_diff.max()), "target": f"max |D - scipy D| <= {D_TOLERANCE:g}",
                               "pass": bool(d_diff.max() <= D_TOLERANCE)},
        "ks_p_value_close": {"value": float(p_rel.max()), "target": f"max relative p difference <= {P_RELATIVE:.0%}",
                             "pass": bool(p_rel.max() <= P_RELATIVE)},
        "psi_equal": {"value": float(psi_diff.max()), "target": f"max |PSI - naive PSI| <= {PSI_TOLERANCE:g}",
                      "pass": bool(psi_diff.max() <= PSI_TOLERANCE)},
        "check_speedup": {"value": speedup, "target": f">= {TARGET_SPEEDUP}x faster than the scipy loop",
                          "pass": bool(speedup >= TARGET_SPEEDUP)},
    }
    per_feature = [
        {"feature": n, "change": c, "ks_statistic": float(a), "scipy_ks_statistic": float(b), "ks_p_value": float(pa),
         "scipy_ks_p_value": float(pb), "psi": float(s), "naive_psi": float(sn)}
        for n, c, a, b, pa, pb, s, sn in zip(names, changes, d, scipy_d, p, scipy_p, psi, psi_naive, strict=True)
    ]
    summary = {
        "features": args.features,
        "reference_rows": args.reference,
        "recent_rows": args.recent,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "threads": default_threads(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "timings": {
            "scipy_loop": timing(scipy_times),
            "clm_fit": timing(fit_times),
            "clm_check": timing(check_times),
            "clm_check_one_thread": timing(serial_times),
            "naive_psi": timing(naive_times),
        },
        "speedup_check": speedup,
        "speedup_fit_and_check": speedup_fit,
        "speedup_check_one_thread": scipy_s / min(serial_times),
        "per_feature": per_feature,
        "targets": targets,
        "elapsed_s": time.perf_counter() - t_start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))

    load = summary["load_average"]
    print(f"drift benchmark: {args.features} features, {args.reference:,} reference vs {args.recent:,} recent rows, "
          f"{os.cpu_count()} cores ({default_threads()} threads), numpy {np.__version__}, scipy {scipy.__version__}; "
          f"load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after (1 min)")
    print(f"  {'contender':34s} {'best s':>8s} {'first s':>8s} {'reps':>4s} {'scipy / time':>12s}")
    rows = [
        ("scipy ks_2samp loop", scipy_times),
        ("clm fit (sort once, PSI bins)", fit_times),
        ("clm check (KS + PSI, 64 features)", check_times),
        ("clm check, one thread", serial_times),
        ("clm fit + check", [f + c for f, c in zip(fit_times, check_times, strict=True)]),
        ("naive numpy PSI (cross-check)", naive_times),
    ]
    for label, times in rows:
        print(f"  {label:34s} {min(times):>8.3f} {times[0]:>8.3f} {len(times):>4d} {scipy_s / min(times):>11.1f}x")
    print(f"  statistics: max |D - scipy| {d_diff.max():.1e}, max relative p difference {p_rel.max():.1e} "
          f"(p from {p.min():.1e} to {p.max():.2f}), max |PSI - naive| {psi_diff.max():.1e}")
    for name, t in targets.items():
        print(f"  target {name}: {'PASS' if t['pass'] else 'FAIL'} ({fmt(t['value'], '.3g')}; target {t['target']})")
    print(f"  results: {args.json}  ({summary['elapsed_s']:.0f} s)")
    return 0 if all(t["pass"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
