"""Two-sample drift statistics, KS and PSI, against a reference that is fitted once.

A drift check compares a recent window with the same reference many times (every check, every
feature), so ``DriftReference.fit`` sorts each reference feature once and fixes its PSI bins once;
``compare`` then sorts only the recent values and finds their ranks in the reference with
``np.searchsorted``: O(n_recent log n_reference) per feature, no merge of the two samples.

KS agrees with ``scipy.stats.ks_2samp(a, b)`` (two-sided, ``method='auto'``):

- D comes from the same integer counts scipy uses, so it is bit-identical. With both samples
  sorted, F_ref - F_recent is largest just before a recent value (only reference values lie between)
  and smallest at a recent value, so the counts of reference values below / at most each recent value
  are all that is needed.
- The p-value is the one scipy's 'auto' picks: when both samples have at most ``MAX_EXACT_N`` values
  (scipy's ``MAX_AUTO_N``, 10,000) scipy's exact distribution, obtained by calling ``ks_2samp`` on
  those (small, so cheap) samples, whose D is then scipy's too (scipy rounds it to a multiple of
  1/lcm(n1, n2) there); otherwise scipy's asymptotic two-sided p-value
  ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``, for every feature in one vectorised call.

PSI (population stability index), sum over bins of (q - p) ln(q / p), p the reference share and q
the recent share of a bin. Bins are fixed on the reference: the inner edges are the reference's
1/bins, ..., (bins-1)/bins quantiles (linear interpolation, numpy's default), duplicates merged and
edges at the reference minimum dropped, so every bin holds reference values; the outer edges are
-inf and +inf and a bin is [lower, upper). A reference with ties (a discrete feature) therefore has
fewer bins (``psi_bins`` says how many), and a constant reference has one bin, so its PSI is 0 by
construction and only KS can see it change (D = 1 when every recent value differs). An empty bin's
share is floored at ``PSI_EPSILON`` (1e-4) on both sides, so PSI stays finite; a bin empty on both
sides adds 0. Conventions: PSI < 0.1 stable, 0.1-0.25 moderate, >= 0.25 significant (``policy.yaml``).

Missing values (null, NaN, +-inf) are dropped per feature and counted (``missing_*``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

MAX_EXACT_N = 10_000  # scipy.stats.ks_2samp: 'auto' is exact when both samples have at most this many values
PSI_EPSILON = 1e-4  # floor of a bin's share in PSI, so an empty bin does not make PSI infinite
DEFAULT_BINS = 10
# Columns of a feature frame that are keys or flags, never features.
KEY_COLUMNS = frozenset({"symbol", "timestamp", "segment_id", "warm", "date", "version", "__window"})

STATISTICS_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "n_reference": pl.Int64(),
    "n_recent": pl.Int64(),
    "missing_reference": pl.Int64(),
    "missing_recent": pl.Int64(),
    "ks_statistic": pl.Float64(),
    "ks_p_value": pl.Float64(),
    "ks_method": pl.String(),
    "psi": pl.Float64(),
    "psi_bins": pl.Int64(),
}

Data = pl.DataFrame | pl.LazyFrame | np.ndarray | Mapping[str, Any]


# ---- inputs ---------------------------------------------------------------------------------------
def numeric_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """The feature columns of a frame: numeric, not a key (``KEY_COLUMNS``); booleans are flags, not features."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    return [name for name, dtype in schema.items() if dtype.is_numeric() and name not in KEY_COLUMNS]


def _columns(data: Data, names: Sequence[str] | None) -> tuple[list[str], list[np.ndarray]]:
    """(names, one float64 array per name); a frame's nulls become NaN. A 2-D array is (rows, features)."""
    if isinstance(data, pl.LazyFrame):
        names = list(names) if names is not None else numeric_columns(data)
        data = data.select(names).collect()
    if isinstance(data, pl.DataFrame):
        names = list(names) if names is not None else numeric_columns(data)
        missing = [n for n in names if n not in data.columns]
        if missing:
            raise KeyError(f"columns not in the frame: {missing}")
        return names, [data.get_column(n).cast(pl.Float64).to_numpy() for n in names]
    if isinstance(data, Mapping):
        names = list(names) if names is not None else list(data)
        missing = [n for n in names if n not in data]
        if missing:
            raise KeyError(f"columns not in the data: {missing}")
        return names, [np.asarray(data[n], dtype=np.float64).ravel() for n in names]
    values = np.asarray(data, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"expected a (rows, features) array, got shape {values.shape}")
    names = list(names) if names is not None else [f"f{j}" for j in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise ValueError(f"{len(names)} names for {values.shape[1]} columns")
    return names, [values[:, j] for j in range(values.shape[1])]


def _sorted_finite(column: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values sorted, and how many were missing (null/NaN/inf)."""
    finite = np.isfinite(column)
    if finite.all():
        return np.sort(column), 0
    kept = column[finite]
    return np.sort(kept), int(column.size - kept.size)


# ---- KS -----------------------------------------------------------------------------------------
def ks_statistic_sorted(reference: np.ndarray, recent: np.ndarray) -> float:
    """Two-sided KS D of two sorted, finite, non-empty samples; bit-identical to ``ks_2samp``'s statistic."""
    n1, n2 = reference.size, recent.size
    below = np.searchsorted(reference, recent, side="left")  # reference values < each recent value
    at_index = np.minimum(below, n1 - 1)
    if np.any(reference[at_index] == recent):  # ties across the samples: count reference values <= too
        at_most = np.searchsorted(reference, recent, side="right")
    else:
        at_most = below
    if n2 > 1 and np.any(recent[1:] == recent[:-1]):  # ties within the recent sample
        recent_below = np.searchsorted(recent, recent, side="left")
        recent_at_most = np.searchsorted(recent, recent, side="right")
    else:
        recent_below = np.arange(n2)
        recent_at_most = recent_below + 1
    # Same float operations as scipy: count / n1 - count / n2, on the same counts.
    d_plus = max(0.0, float(np.max(below / n1 - recent_below / n2)))
    d_minus = float(np.clip(-np.min(at_most / n1 - recent_at_most / n2), 0.0, 1.0))
    return d_minus if d_minus > d_plus else d_plus


def _pelz_good_cdf(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(D_n <= x) by the Pelz-Good series, term for term scipy's ``_kolmogn_PelzGood``, vectorised
    (scipy evaluates it one value at a time in Python: ~0.4 ms each, most of a check's p-value time)."""
    if x.size == 0:
        return np.zeros(0)
    z = np.sqrt(n) * x
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    pi2, pi4, pi6 = np.pi**2, np.pi**4, np.pi**6
    q = np.exp(-pi2 / 8 / z2)
    k1a, k1b = -z2, pi2 / 4
    k2a, k2b, k2c = 6 * z6 + 2 * z4, (2 * z4 - 5 * z2) * pi2 / 4, pi4 * (1 - 2 * z2) / 16
    k3d, k3c = pi6 * (5 - 30 * z2) / 64, pi4 * (-60 * z2 + 212 * z4) / 16
    k3b, k3a = pi2 * (135 * z4 - 96 * z6) / 4, -30 * z6 - 90 * z**8
    maxk = np.ceil(16 * z / np.pi).astype(np.int64)
    k0 = np.zeros_like(z)
    k1, k2, k3 = k0.copy(), k0.copy(), k0.copy()
    for k in range(int(maxk.max()), 0, -1):  # Horner over c_k q^(k^2); a value joins at its own maxk
        m2 = (2 * k - 1) ** 2
        on = k <= maxk
        qpower = np.power(q, 8 * k)
        k0 = np.where(on, k0 * qpower + 1.0, k0)
        k1 = np.where(on, k1 * qpower + (k1a + k1b * m2), k1)
        k2 = np.where(on, k2 * qpower + (k2a + k2b * m2 + k2c * m2**2), k2)
        k3 = np.where(on, k3 * qpower + (k3a + k3b * m2 + k3c * m2**2 + k3d * m2**3), k3)
    scale = q * np.sqrt(2 * np.pi)
    k0, k1, k2, k3 = k0 * scale / z, k1 * scale / (6 * z4), k2 * scale / (72 * z**7), k3 * scale / (6480 * z**10)
    q = np.exp(-pi2 / 2 / z2)
    extra2, extra3 = np.zeros_like(z), np.zeros_like(z)
    for k in range(int(maxk.max()), 0, -1):
        term = np.where(k <= maxk, k * k * q ** (k * k), 0.0)
        extra2 += term
        extra3 += (np.sqrt(3) * z + np.pi * k) * (np.sqrt(3) * z - np.pi * k) * term
    k2 += extra2 * pi2 * np.sqrt(2 * np.pi) / (-36 * z3)
    k3 += extra3 * pi2 * np.sqrt(2 * np.pi) / (216 * z6)
    return k0 + k1 / np.sqrt(n) + k2 / n + k3 / n**1.5


def smirnov_sf(n: int, d: float) -> float:
    """P(D+_n >= d), the exact one-sided tail, by the Birnbaum-Tingey (Smirnov 1944) sum
    d * sum_{v=0}^{floor(n(1-d))} C(n, v) (d + v/n)^(v-1) (1 - d - v/n)^(n-v), all terms at once in logs.

    scipy's ``smirnov`` sums the same terms one by one in double-double arithmetic (~13 ms at n = 16,667,
    once per moderately drifting feature); here they are one vector (~0.2 ms), to ~1e-10 relative.
    """
    from scipy.special import gammaln

    v = np.arange(0, math.floor(n * (1.0 - d)) + 1, dtype=np.float64)
    evn = d + v / n
    with np.errstate(divide="ignore"):  # 1 - d - v/n == 0 in the last term: a zero term
        log_terms = (gammaln(n + 1.0) - gammaln(v + 1.0) - gammaln(n - v + 1.0)
                     + (v - 1.0) * np.log(evn) + (n - v) * np.log1p(-evn))
    top = float(log_terms.max())
    return float(d * math.exp(top) * np.exp(log_terms - top).sum()) if math.isfinite(top) else 0.0


def kstwo_sf(d: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """``scipy.stats.kstwo.sf(d, n)``, with scipy's two large-n closed forms vectorised.

    scipy (Simard & L'Ecuyer) picks, for n > 140 and 1 < n d < n - 1, d < 0.5: 0 when n d^2 >= 370,
    ``2 smirnov(n, d)`` when n d^2 >= 2.2, else 1 - the Durbin matrix (n <= 100,000 and n d^1.5 <= 1.4)
    or 1 - Pelz-Good. The same choice is made here, with ``smirnov_sf`` and the Pelz-Good series
    vectorised (scipy evaluates both one value at a time); every other case (small n, the Durbin
    matrix, the edges) is ``kstwo.sf`` itself.
    """
    from scipy.stats import kstwo

    d, n = np.broadcast_arrays(np.asarray(d, dtype=np.float64), np.asarray(n, dtype=np.float64))
    shape = d.shape
    d, n = d.ravel(), n.ravel()
    out = np.full(d.shape, np.nan)
    nd2 = n * d * d
    regular = (n > 140) & (d > 0) & (d < 0.5) & (n * d > 1) & (n * d < n - 1)
    zero = regular & (nd2 >= 370.0)
    tail = regular & (nd2 >= 2.2) & ~zero
    durbin = regular & (nd2 < 2.2) & (n <= 100_000) & (n * d**1.5 <= 1.4)
    pelz = regular & (nd2 < 2.2) & ~durbin & (-np.pi**2 / 8 / np.where(nd2 > 0, nd2, 1.0) >= -708)
    out[zero] = 0.0
    out[tail] = [2 * smirnov_sf(int(ni), di) for ni, di in zip(n[tail], d[tail], strict=True)]
    out[pelz] = 1.0 - _pelz_good_cdf(n[pelz], d[pelz])
    rest = ~(zero | tail | pelz)
    if rest.any():
        out[rest] = kstwo.sf(d[rest], n[rest])
    return np.clip(out, 0.0, 1.0).reshape(shape)


def ks_asymptotic_p_value(d: np.ndarray | float, n1: np.ndarray | int, n2: np.ndarray | int) -> np.ndarray:
    """scipy's asymptotic two-sided p-value, ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``, vectorised."""
    n1 = np.asarray(n1, dtype=np.float64)
    n2 = np.asarray(n2, dtype=np.float64)
    return kstwo_sf(d, np.round(n1 * n2 / (n1 + n2)))


def ks_exact(reference: np.ndarray, recent: np.ndarray) -> tuple[float, float]:
    """scipy's own (D, p) for small samples: exact, D rounded to a multiple of 1/lcm(n1, n2) as scipy does
    there (it falls back to asymptotic itself when the exact computation fails)."""
    from scipy.stats import ks_2samp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "exact calculation unsuccessful": scipy's own fallback
        result = ks_2samp(reference, recent)
    return float(result.statistic), float(result.pvalue)


def ks_method(n1: int, n2: int) -> str:
    return "exact" if max(n1, n2) <= MAX_EXACT_N else "asymp"


def ks_2samp_fast(reference: Any, recent: Any) -> tuple[float, float]:
    """(D, p) of two unsorted samples, as ``scipy.stats.ks_2samp``; missing values dropped."""
    a, _ = _sorted_finite(np.asarray(reference, dtype=np.float64).ravel())
    b, _ = _sorted_finite(np.asarray(recent, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("KS needs at least one finite value in each sample")
    if ks_method(a.size, b.size) == "exact":
        return ks_exact(a, b)
    d = ks_statistic_sorted(a, b)
    return d, float(ks_asymptotic_p_value(d, a.size, b.size))


# ---- PSI ----------------------------------------------------------------------------------------
def _quantiles_sorted(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantiles of a sorted array (numpy's default method), without re-sorting."""
    position = q * (values.size - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, values.size - 1)
    fraction = position - lower
    return values[lower] + (values[upper] - values[lower]) * fraction


def psi_edges(reference_sorted: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges on a sorted reference: quantiles, duplicates merged, none at or below the minimum."""
    if reference_sorted.size == 0:
        return np.empty(0)
    edges = np.unique(_quantiles_sorted(reference_sorted, np.arange(1, bins) / bins))
    return edges[edges > reference_sorted[0]]


def bin_counts(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of a sorted sample in the bins (-inf, e0), [e0, e1), ..., [e_last, +inf)."""
    cuts = np.searchsorted(values_sorted, edges, side="left")
    return np.diff(np.concatenate(([0], cuts, [values_sorted.size])))


def psi(reference_share: np.ndarray, recent_share: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two bin-share vectors; shares floored at ``epsilon``."""
    p = np.maximum(np.asarray(reference_share, dtype=np.float64), epsilon)
    q = np.maximum(np.asarray(recent_share, dtype=np.float64), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


# ---- the reference ------------------------------------------------------------------------------
def default_threads() -> int:
    """Worker threads for per-feature work: numpy's sort and searchsorted release the GIL."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _map(fn: Callable[[Any], Any], items: Iterable[Any], threads: int | None) -> list[Any]:
    items = list(items)
    threads = default_threads() if threads is None else threads
    if threads <= 1 or len(items) < 2 * threads:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (4 * threads))))


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class FeatureReference:
    """One feature of the reference: its finite values sorted, its PSI bins and their shares."""

    name: str
    values: np.ndarray
    missing: int
    edges: np.ndarray
    shares: np.ndarray

    @property
    def n(self) -> int:
        return int(self.values.size)

    @classmethod
    def fit(cls, name: str, column: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureReference:
        values, missing = _sorted_finite(np.asarray(column, dtype=np.float64))
        edges = psi_edges(values, bins)
        counts = bin_counts(values, edges)
        shares = counts / values.size if values.size else np.zeros(counts.size)
        return cls(name, values, missing, edges, shares)

    def compare(self, column: np.ndarray) -> tuple[int, int, float | None, float | None, str | None, float | None]:
        """(n, missing, D, p or None when asymptotic (computed for all features at once), method, PSI)."""
        values, missing = _sorted_finite(column)
        if not (self.n and values.size):
            return int(values.size), missing, None, None, None, None
        method = ks_method(self.n, values.size)
        if method == "exact":
            d, p = ks_exact(self.values, values)
        else:
            d, p = ks_statistic_sorted(self.values, values), None
        value = psi(self.shares, bin_counts(values, self.edges) / values.size)
        return int(values.size), missing, d, p, method, value


@dataclass(frozen=True, eq=False)
class DriftReference:
    """The reference window, fitted once (sorted per feature, PSI bins fixed) and compared many times."""

    features: tuple[FeatureReference, ...]
    bins: int = DEFAULT_BINS

    @classmethod
    def fit(cls, data: Data, features: Sequence[str] | None = None, *, bins: int = DEFAULT_BINS,
            threads: int | None = None) -> DriftReference:
        """Fit on a frame (its numeric non-key columns unless ``features`` names them), a mapping of
        columns, or a (rows, features) array. ``threads``: workers over features (default: the cores)."""
        if bins < 2:
            raise ValueError(f"PSI needs at least 2 bins, got {bins}")
        names, columns = _columns(data, features)
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {names}")
        fitted = _map(lambda item: FeatureReference.fit(item[0], item[1], bins), zip(names, columns, strict=True),
                      threads)
        return cls(tuple(fitted), bins)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def compare(self, recent: Data, *, threads: int | None = None) -> pl.DataFrame:
        """Per-feature KS and PSI of ``recent`` against the reference (``STATISTICS_SCHEMA``).

        Statistics are null for a feature with no finite value in either window.
        """
        _, columns = _columns(recent, self.names)
        results = _map(lambda item: item[0].compare(item[1]), zip(self.features, columns, strict=True), threads)
        n_recent, missing, d, p, method, psi_values = (list(col) for col in zip(*results, strict=True)) if results \
            else ([], [], [], [], [], [])
        n_reference = [f.n for f in self.features]
        asymptotic = [i for i, m in enumerate(method) if m == "asymp"]
        if asymptotic:  # one vectorised call for every large-sample feature
            p_values = ks_asymptotic_p_value([d[i] for i in asymptotic], [n_reference[i] for i in asymptotic],
                                             [n_recent[i] for i in asymptotic])
            for i, value in zip(asymptotic, p_values, strict=True):
                p[i] = float(value)
        return pl.DataFrame(
            {
                "feature": self.names,
                "n_reference": n_reference,
                "n_recent": n_recent,
                "missing_reference": [f.missing for f in self.features],
                "missing_recent": missing,
                "ks_statistic": d,
                "ks_p_value": p,
                "ks_method": method,
                "psi": psi_values,
                "psi_bins": [int(f.shares.size) if f.n else None for f in self.features],
            },
            schema=STATISTICS_SCHEMA,
        )
