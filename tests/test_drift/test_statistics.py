"""KS and PSI against a fitted reference: the same D as scipy (to the bit), p-values within 2% of
``scipy.stats.ks_2samp(method='auto')`` on both sides of its exact/asymptotic switch, PSI by hand,
and the handling of nulls, ties and constant features."""

import math

import numpy as np
import polars as pl
import pytest
from scipy import special, stats

from clm.drift import MAX_EXACT_N, PSI_EPSILON, DriftReference, bin_counts, ks_2samp_fast, psi, psi_edges
from clm.drift.statistics import kstwo_sf, numeric_columns, smirnov_sf

SIZES = [  # (reference, recent): exact below MAX_EXACT_N on both sides, asymptotic above
    (5, 3), (40, 60), (300, 120), (2_000, 500), (10_000, 10_000), (10_001, 50), (30_000, 2_000), (100_000, 20_000),
]


def _samples(rng, n1, n2, kind):
    if kind == "normal":
        return rng.standard_normal(n1), rng.standard_normal(n2) + 0.05
    if kind == "shifted":
        return rng.standard_normal(n1), rng.standard_normal(n2) * 1.2 + 0.3
    if kind == "discrete":  # ties within and across the samples
        return rng.integers(0, 6, n1).astype(float), rng.integers(1, 7, n2).astype(float)
    return np.round(rng.standard_normal(n1), 1), np.round(rng.standard_normal(n2) * 1.1, 1)


@pytest.mark.parametrize("kind", ["normal", "shifted", "discrete", "rounded"])
@pytest.mark.parametrize("n1, n2", SIZES)
def test_ks_matches_scipy(n1, n2, kind):
    rng = np.random.default_rng(n1 * 7 + n2)
    a, b = _samples(rng, n1, n2, kind)
    want = stats.ks_2samp(a, b)
    d, p = ks_2samp_fast(a, b)
    assert abs(d - want.statistic) <= 1e-12
    assert d == want.statistic  # the same integer counts: bit-identical
    assert p == pytest.approx(want.pvalue, rel=0.02, abs=1e-300)


def test_the_reference_compares_every_feature_like_scipy_in_one_pass():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 30_000)).T
    recent = rng.standard_normal((4, 3_000)).T + np.array([0.0, 0.02, 0.1, 0.5])
    table = DriftReference.fit(reference, ["a", "b", "c", "d"]).compare(recent)
    for j, row in enumerate(table.iter_rows(named=True)):
        want = stats.ks_2samp(reference[:, j], recent[:, j])
        assert row["ks_statistic"] == want.statistic
        assert row["ks_p_value"] == pytest.approx(want.pvalue, rel=0.02, abs=1e-300)
        assert row["ks_method"] == "asymp"
    small = DriftReference.fit(reference[:500], ["a", "b", "c", "d"]).compare(recent[:200])
    assert small["ks_method"].to_list() == ["exact"] * 4  # scipy's 'auto' is exact when both <= 10,000
    assert MAX_EXACT_N == 10_000


def test_kstwo_sf_is_scipys_on_every_branch():
    """The vectorised Pelz-Good series and Smirnov sum give scipy's numbers (it takes ~13 ms per tail value)."""
    for n in [60, 141, 1_000, 16_667, 100_001]:  # (scipy's own tail at larger n takes ~0.4 s a value)
        d = np.concatenate([np.geomspace(1e-5, 0.99, 40), [0.0, 1.0, 0.5, 1 / n, 0.7 / n]])
        got, want = kstwo_sf(d, n), stats.kstwo.sf(d, n)
        tiny = want < 1e-300
        np.testing.assert_allclose(got[~tiny], want[~tiny], rtol=1e-8)
        assert np.all(got[tiny] < 1e-300)
    for n, d in [(200, 0.2), (16_667, 0.02), (16_667, 0.1), (500_000, 0.0025)]:
        assert smirnov_sf(n, d) == pytest.approx(special.smirnov(n, d), rel=1e-8)


def test_psi_known_value():
    reference = np.arange(1000.0)  # deciles of 0..999: ten bins of 100 values, 10% each
    edges = psi_edges(reference, 10)
    np.testing.assert_allclose(edges, np.arange(1, 10) * 99.9)
    assert bin_counts(reference, edges).tolist() == [100] * 10
    # recent: 20% in the first bin, none in the second, 10% in each of the others
    recent = np.concatenate([np.full(200, 5.0), np.repeat(np.arange(2, 10) * 99.9 + 1, 100)])
    shares = bin_counts(np.sort(recent), edges) / recent.size
    assert shares.tolist() == [0.2, 0.0] + [0.1] * 8
    expected = (0.2 - 0.1) * math.log(2) + (PSI_EPSILON - 0.1) * math.log(PSI_EPSILON / 0.1)
    assert psi(np.full(10, 0.1), shares) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.7594, abs=1e-4)
    table = DriftReference.fit({"x": reference}).compare({"x": recent})
    assert table["psi"][0] == pytest.approx(expected, rel=1e-12)
    assert table["psi_bins"][0] == 10


def test_same_sample_has_zero_drift():
    x = np.random.default_rng(3).standard_normal(5000)
    row = DriftReference.fit({"x": x}).compare({"x": x[::-1]}).row(0, named=True)
    assert row["ks_statistic"] == 0.0 and row["ks_p_value"] == 1.0 and row["psi"] == pytest.approx(0.0)


def test_ties_merge_bins_and_a_constant_reference_has_one_bin():
    rng = np.random.default_rng(4)
    discrete = rng.choice([0.0, 1.0, 2.0], p=[0.7, 0.2, 0.1], size=5000)
    edges = psi_edges(np.sort(discrete), 10)
    assert edges.tolist() == [1.0, 2.0]  # 7 deciles at 0 (the minimum: dropped), 2 at 1, 1 at 2 -> merged
    constant = np.full(3000, 7.0)
    ref = DriftReference.fit({"constant": constant, "discrete": discrete})
    same = ref.compare({"constant": np.full(500, 7.0), "discrete": discrete[:500]})
    moved = ref.compare({"constant": np.full(500, 8.0), "discrete": discrete[:500]})
    assert same["psi_bins"].to_list() == [1, 3]
    assert same["psi"][0] == 0.0 and same["ks_statistic"][0] == 0.0
    # one bin: PSI cannot see a constant move, KS does (D = 1)
    assert moved["psi"][0] == 0.0 and moved["ks_statistic"][0] == 1.0 and moved["ks_p_value"][0] < 1e-10


def test_nulls_and_non_finite_values_are_dropped_and_counted():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(2000)
    x_holes = x.copy()
    x_holes[:100] = np.nan
    x_holes[100:103] = np.inf
    frame = pl.DataFrame({"x": x_holes, "y": x}).with_columns(
        pl.when(pl.int_range(pl.len()) < 50).then(None).otherwise(pl.col("y")).alias("y")
    )
    recent = pl.DataFrame({"x": x[:400], "y": [None] * 10 + list(x[10:400])})
    table = DriftReference.fit(frame).compare(recent)
    assert table.select("feature", "n_reference", "missing_reference", "n_recent", "missing_recent").rows() == [
        ("x", 1897, 103, 400, 0),
        ("y", 1950, 50, 390, 10),
    ]
    want = stats.ks_2samp(x[103:], x[:400])
    assert table["ks_statistic"][0] == want.statistic


def test_a_feature_with_no_values_gets_null_statistics():
    table = DriftReference.fit({"x": [np.nan] * 10, "y": np.arange(10.0)}).compare({"x": [1.0], "y": [np.nan]})
    assert table["ks_statistic"].to_list() == [None, None]
    assert table["psi"].to_list() == [None, None]
    assert table["n_reference"].to_list() == [0, 10] and table["n_recent"].to_list() == [1, 0]


def test_inputs_frames_lazy_frames_mappings_and_arrays_agree():
    rng = np.random.default_rng(6)
    ref = pl.DataFrame({"symbol": ["A"] * 3000, "timestamp": range(3000), "segment_id": [0] * 3000,
                        "warm": [True] * 3000, "a": rng.standard_normal(3000), "b": rng.integers(0, 9, 3000)})
    rec = ref.sample(800, seed=1).with_columns(pl.col("a") + 0.2)
    assert numeric_columns(ref) == ["a", "b"]  # keys and the warm flag are not features
    by_frame = DriftReference.fit(ref).compare(rec)
    by_lazy = DriftReference.fit(ref.lazy()).compare(rec.lazy())
    by_map = DriftReference.fit({"a": ref["a"].to_numpy(), "b": ref["b"].to_numpy()}).compare(
        {"a": rec["a"].to_numpy(), "b": rec["b"].to_numpy()})
    by_array = DriftReference.fit(ref.select("a", "b").to_numpy(), ["a", "b"]).compare(
        rec.select("a", "b").to_numpy())
    serial = DriftReference.fit(ref, threads=1).compare(rec, threads=1)
    for other in (by_lazy, by_map, by_array, serial):
        assert other.equals(by_frame)
    with pytest.raises(KeyError, match="'b'"):
        DriftReference.fit(ref).compare(rec.drop("b"))
