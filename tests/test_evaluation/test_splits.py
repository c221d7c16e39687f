"""Purged walk-forward / chronological splits: no label interval of a training or validation row
overlaps a test row's, on hand-built multi-symbol frames and over random configs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm.evaluation import (
    AUDIT_SCHEMA,
    Fold,
    SplitConfig,
    assign_folds,
    chronological_split,
    fold_audit,
    make_folds,
    purged_walk_forward,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TF = 300
BAR = timedelta(seconds=TF)
US = TF * 1_000_000  # one bar in microseconds


def frame(
    n_bars: int = 2000,
    symbols: tuple[str, ...] = ("A", "B", "C"),
    *,
    span: int = 49,
    max_span: int | None = None,
    null_rate: float = 0.02,
    offsets: tuple[int, ...] | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """``symbols`` x ``n_bars`` 5-minute rows; ``label_end = timestamp + span`` bars (or a random
    span in 1..max_span), null for the last ``span`` bars of each symbol and a random ``null_rate``.
    ``offsets`` start symbols that many bars later (they then end later too)."""
    rng = np.random.default_rng(seed)
    offsets = offsets or (0,) * len(symbols)
    parts = []
    for sym, off in zip(symbols, offsets, strict=True):
        i = np.arange(n_bars, dtype=np.int64) + off
        spans = rng.integers(1, max_span + 1, n_bars) if max_span else np.full(n_bars, span)
        end = i + spans
        null = (end > off + n_bars - 1) | (rng.random(n_bars) < null_rate)
        parts.append(
            pl.DataFrame(
                {
                    "symbol": [sym] * n_bars,
                    "timestamp": T0.timestamp() * 1e6 + i * US,
                    "label_end": np.where(null, np.nan, T0.timestamp() * 1e6 + end * US),
                }
            )
        )
    us = pl.Datetime("us", "UTC")
    return pl.concat(parts).with_columns(
        pl.col("timestamp").cast(pl.Int64).cast(us),
        pl.col("label_end").fill_nan(None).cast(pl.Int64).cast(us),
    )


def _us(series: pl.Series) -> np.ndarray:
    return series.dt.epoch("us").to_numpy()


def overlaps(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Whether any closed interval ``[timestamp, label_end]`` of ``a`` meets one of ``b``."""
    if a.is_empty() or b.is_empty():
        return False
    b = b.sort("timestamp")
    b_start, b_end = _us(b["timestamp"]), _us(b["label_end"])
    reach = np.maximum.accumulate(b_end)  # furthest end among b intervals starting at or before
    idx = np.searchsorted(b_start, _us(a["label_end"]), side="right")
    hit = idx > 0
    return bool(np.any(reach[idx[hit] - 1] >= _us(a["timestamp"])[hit]))


def check_fold(df: pl.DataFrame, fold: Fold) -> dict[str, pl.DataFrame]:
    """The leakage properties of one fold; returns its rows per split."""
    s = assign_folds(df, fold)
    parts = {name: s.filter(pl.col("split") == name) for name in ("train", "validation", "test")}
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    assert not overlaps(train, test)
    assert not overlaps(validation, test)
    assert not overlaps(train, validation)
    # no training label reaches into the validation window, nor a validation label into test
    assert train["label_end"].max() is None or train["label_end"].max() < fold.validation_start
    assert validation.is_empty() or validation["label_end"].max() < fold.test_start
    # the embargo margin: labels end more than embargo_bars bars before the next window
    assert train.is_empty() or train["label_end"].max() < fold.validation_start - fold.embargo
    assert validation.is_empty() or validation["label_end"].max() < fold.test_start - fold.embargo
    # every split lies in its window, and no unlabelled row is used
    for name, lo, hi in (
        ("train", fold.train_start, fold.train_end),
        ("validation", fold.validation_start, fold.validation_end),
        ("test", fold.test_start, fold.test_end),
    ):
        part = parts[name]
        assert part.filter((pl.col("timestamp") < lo) | (pl.col("timestamp") >= hi)).is_empty()
        assert part["label_end"].null_count() == 0
    return parts


def check_audit(df: pl.DataFrame, folds: list[Fold]) -> pl.DataFrame:
    audit = fold_audit(df, folds)
    assert audit.schema == AUDIT_SCHEMA
    assert audit["fold"].to_list() == [f.fold for f in folds]
    parts = ["train", "validation", "test", "purged", "embargoed", "unlabelled"]
    total = sum(audit[f"rows_{p}"].cast(pl.Int64) for p in parts)
    assert (total == audit["rows_total"].cast(pl.Int64)).all()
    for f, row in zip(folds, audit.iter_rows(named=True), strict=True):
        in_fold = df.filter(
            pl.col("timestamp").is_between(f.train_start, f.test_end, closed="left")
        )
        assert row["rows_total"] == in_fold.height
        assert row["rows_unlabelled"] == in_fold["label_end"].null_count()
        counts = dict(assign_folds(df, f)["split"].value_counts().iter_rows())
        for name in ("train", "validation", "test"):
            assert row[f"rows_{name}"] == counts.get(name, 0)
    return audit


# --- the key property --------------------------------------------------------------------------


def test_default_walk_forward_has_no_leakage_on_three_symbols():
    df = frame(offsets=(0, 0, 100))  # C starts (and ends) 100 bars later: folds stay global
    folds = make_folds(df, SplitConfig(), timeframe_seconds=TF)
    assert len(folds) == 5
    for fold in folds:
        parts = check_fold(df, fold)
        assert all(not p.is_empty() for p in parts.values())
        assert set(parts["test"]["symbol"]) == {"A", "B", "C"}
    audit = check_audit(df, folds)
    assert (audit["symbols"] == 3).all()
    assert (audit["rows_purged"] > 0).all() and (audit["rows_embargoed"] > 0).all()


def test_overlap_check_is_not_vacuous():
    """Windows by timestamp alone (no purge) do leak: the overlap check sees it."""
    df = frame()
    fold = make_folds(df, SplitConfig(), timeframe_seconds=TF)[2]
    labelled = df.filter(pl.col("label_end").is_not_null())
    naive_train = labelled.filter(pl.col("timestamp") < fold.validation_start)
    naive_test = labelled.filter(pl.col("timestamp") >= fold.test_start)
    naive_validation = labelled.filter(
        pl.col("timestamp").is_between(fold.validation_start, fold.test_start, closed="left")
    )
    assert overlaps(naive_train, naive_validation)
    assert overlaps(naive_validation, naive_test)
    assert not overlaps(naive_train.head(10), naive_test)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["purged_walk_forward", "chronological"]),
    n_folds=st.integers(2, 8),
    embargo=st.integers(0, 20),
    min_train=st.floats(0.2, 0.7),
    validation=st.sampled_from([0.0, 0.05, 0.1, 0.25]),
    max_span=st.integers(1, 60),
    n_bars=st.integers(300, 1200),
    seed=st.integers(0, 2**16),
)
def test_no_leakage_over_random_configs(
    method, n_folds, embargo, min_train, validation, max_span, n_bars, seed
):
    config = SplitConfig(
        method=method,
        n_folds=n_folds,
        embargo_bars=embargo,
        min_train_fraction=min_train,
        validation_fraction=validation,
        chronological=(0.7, validation, 0.3 - validation),
    )
    df = frame(n_bars, ("A", "B"), max_span=max_span, null_rate=0.05, offsets=(0, 37), seed=seed)
    try:
        folds = make_folds(df, config, timeframe_seconds=TF)
    except ValueError as e:
        needed = int(re.search(r"needs at least (\d+) bars", str(e)).group(1))
        assert needed > n_bars + 37
        # the advertised length works (max_span stays the longest label, whatever the seed)
        bigger = frame(needed - 37, ("A", "B"), span=max_span, null_rate=0.0, offsets=(0, 37))
        folds = make_folds(bigger, config, timeframe_seconds=TF)
        df = bigger
    assert len(folds) == (n_folds if method == "purged_walk_forward" else 1)
    for fold in folds:
        parts = check_fold(df, fold)
        assert not parts["train"].is_empty()
    check_audit(df, folds)


# --- fold layout -------------------------------------------------------------------------------


def test_walk_forward_layout_is_chronological_and_expanding():
    df = frame(null_rate=0.0)
    config = SplitConfig(n_folds=4, min_train_fraction=0.4, validation_fraction=0.1)
    folds = purged_walk_forward(df.lazy(), config, timeframe_seconds=TF)
    assert [f.fold for f in folds] == [0, 1, 2, 3]
    first_test = int(np.ceil(2000 * 0.4))
    assert folds[0].test_start == T0 + first_test * BAR
    assert folds[-1].test_end == T0 + 2000 * BAR  # the last bar's open + one bar
    for a, b in zip(folds, folds[1:]):
        assert a.test_end == b.test_start  # consecutive, non-overlapping test windows
        assert a.train_end < b.train_end  # expanding training
    for f in folds:
        assert f.train_start == T0
        assert f.train_end == f.validation_start and f.validation_end == f.test_start
        before = (f.test_start - T0) // BAR
        assert (f.validation_end - f.validation_start) // BAR == round(before * 0.1)
        assert (f.test_end - f.test_start) // BAR in (300, 301)  # 1200 test bars / 4
        assert f.embargo == 12 * BAR


def test_chronological_split_proportions():
    df = frame(null_rate=0.0)
    config = SplitConfig(method="chronological", chronological=(0.8, 0.1, 0.1))
    (fold,) = make_folds(df, config, timeframe_seconds=TF)
    assert fold == chronological_split(df, config, timeframe_seconds=TF)[0]
    assert (fold.train_start, fold.validation_start, fold.test_start, fold.test_end) == (
        T0,
        T0 + 1600 * BAR,
        T0 + 1800 * BAR,
        T0 + 2000 * BAR,
    )
    parts = check_fold(df, fold)
    # per symbol: train 1600 - 49 purged - 12 embargoed, validation 200 - 61,
    # test 200 - 49 unlabelled
    assert {k: v.height // 3 for k, v in parts.items()} == {
        "train": 1539,
        "validation": 139,
        "test": 151,
    }
    (row,) = check_audit(df, [fold]).iter_rows(named=True)
    assert (row["rows_purged"], row["rows_embargoed"], row["rows_unlabelled"]) == (
        3 * 98,
        3 * 24,
        3 * 49,
    )


def test_validation_can_be_off():
    df = frame(null_rate=0.0)
    folds = make_folds(df, SplitConfig(validation_fraction=0.0), timeframe_seconds=TF)
    for f in folds:
        assert f.validation_start == f.validation_end == f.test_start
        parts = check_fold(df, f)
        assert parts["validation"].is_empty()
        assert parts["train"]["label_end"].max() < f.test_start - f.embargo


def test_short_validation_window_is_widened_to_keep_a_row():
    df = frame(700, ("A",), null_rate=0.0)  # fold 0: 210 bars before test, 10% = 21 < 62
    folds = make_folds(df, SplitConfig(), timeframe_seconds=TF)
    assert (folds[0].validation_end - folds[0].validation_start) // BAR == 49 + 12 + 1
    assert check_fold(df, folds[0])["validation"].height == 1


# --- purge and embargo, exactly ------------------------------------------------------------------


def test_purge_and_embargo_boundaries_row_by_row():
    fold = Fold(
        fold=0,
        train_start=T0,
        train_end=T0 + 100 * BAR,
        validation_start=T0 + 100 * BAR,
        validation_end=T0 + 150 * BAR,
        test_start=T0 + 150 * BAR,
        test_end=T0 + 200 * BAR,
        embargo=5 * BAR,
        embargo_bars=5,
    )
    # (timestamp bar, label_end bar or None, expected split)
    rows = [
        (10, 94, "train"),  # ends 6 bars before validation: outside the 5-bar embargo
        (10, 95, None),  # embargoed: ends 5 bars before validation_start
        (90, 99, None),  # embargoed
        (90, 100, None),  # purged: reaches validation_start
        (99, 160, None),  # purged: reaches the test window
        (20, None, None),  # unlabelled
        (100, 144, "validation"),
        (100, 145, None),  # embargoed against test
        (140, 150, None),  # purged against test
        (150, 199, "test"),
        (199, 260, "test"),  # a test label may run past test_end
        (180, None, None),  # unlabelled test row: never used
        (200, 210, None),  # after the fold
    ]
    ts = [T0 + r[0] * BAR for r in rows]
    le = [None if r[1] is None else T0 + r[1] * BAR for r in rows]
    df = pl.DataFrame(
        {
            "symbol": ["A"] * len(rows),
            "timestamp": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "label_end": pl.Series(le, dtype=pl.Datetime("us", "UTC")),
        }
    )
    assert assign_folds(df, fold)["split"].to_list() == [r[2] for r in rows]
    (a,) = fold_audit(df, [fold]).iter_rows(named=True)
    assert (a["rows_total"], a["rows_train"], a["rows_validation"], a["rows_test"]) == (12, 1, 1, 2)
    assert (a["rows_purged"], a["rows_embargoed"], a["rows_unlabelled"]) == (3, 3, 2)
    assert a["symbols"] == 1


def test_embargo_rows_are_excluded_and_counted():
    df = frame(null_rate=0.0)
    with_embargo = make_folds(df, SplitConfig(embargo_bars=12), timeframe_seconds=TF)
    without = make_folds(df, SplitConfig(embargo_bars=0), timeframe_seconds=TF)
    a, b = check_audit(df, with_embargo), check_audit(df, without)
    assert (b["rows_embargoed"] == 0).all()
    # 12 bars x 3 symbols at each of the two boundaries (train|validation, validation|test)
    assert (a["rows_embargoed"] == 2 * 12 * 3).all()
    assert (a["rows_purged"] == 2 * 49 * 3).all()
    for fold in with_embargo:
        s = assign_folds(df, fold)
        lo = fold.validation_start - fold.embargo
        dropped = s.filter(
            pl.col("timestamp") < fold.train_end,
            pl.col("label_end").is_between(lo, fold.validation_start, closed="left"),
        )
        assert dropped.height == 36 and dropped["split"].null_count() == 36


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "kfold"}, "method"),
        ({"n_folds": 1}, "n_folds"),
        ({"n_folds": 51}, "n_folds"),
        ({"n_folds": 3.0}, "n_folds"),
        ({"n_folds": True}, "n_folds"),
        ({"embargo_bars": -1}, "embargo_bars"),
        ({"min_train_fraction": 0.0}, "min_train_fraction"),
        ({"min_train_fraction": 1.0}, "min_train_fraction"),
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"validation_fraction": 0.6}, "validation_fraction"),
        ({"validation_fraction": float("nan")}, "validation_fraction"),
        ({"chronological": (0.8, 0.2)}, "chronological"),
        ({"chronological": (0.8, 0.1, 0.2)}, "chronological"),
        ({"chronological": (0.0, 0.5, 0.5)}, "chronological"),
        ({"chronological": (0.9, 0.1, 0.0)}, "chronological"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SplitConfig(**kwargs)


def test_short_range_names_the_bars_needed():
    df = frame(100, ("A", "B"))
    with pytest.raises(ValueError, match=r"100 bars .* needs at least 411 bars"):
        make_folds(df, SplitConfig(), timeframe_seconds=TF)
    assert len(make_folds(frame(411), SplitConfig(), timeframe_seconds=TF)) == 5
    with pytest.raises(ValueError, match="needs at least 411 bars"):
        make_folds(frame(410), SplitConfig(), timeframe_seconds=TF)
    with pytest.raises(ValueError, match="needs at least"):
        make_folds(df, SplitConfig(method="chronological"), timeframe_seconds=TF)


def test_frame_errors():
    df = frame(500)
    with pytest.raises(ValueError, match="empty"):
        make_folds(df.clear(), SplitConfig(), timeframe_seconds=TF)
    with pytest.raises(ValueError, match=r"\['timestamp'\]"):
        make_folds(df.drop("timestamp"), SplitConfig(), timeframe_seconds=TF)
    folds = make_folds(df, SplitConfig(), timeframe_seconds=TF)
    with pytest.raises(ValueError, match=r"\['symbol', 'label_end'\]"):
        fold_audit(df.drop("symbol", "label_end"), folds)
    with pytest.raises(ValueError, match="label_end"):
        assign_folds(df.drop("label_end"), folds[0])
    with pytest.raises(ValueError, match="UTC"):
        make_folds(
            df.with_columns(pl.col("timestamp").dt.replace_time_zone(None)),
            SplitConfig(),
            timeframe_seconds=TF,
        )
    with pytest.raises(ValueError, match="drop_warmup"):
        fold_audit(df.with_columns(warm=pl.col("timestamp") > T0), folds)
    with pytest.raises(ValueError, match="timeframe_seconds"):
        make_folds(df, SplitConfig(), timeframe_seconds=0)
    with pytest.raises(ValueError, match="SplitConfig"):
        make_folds(df, {"n_folds": 3}, timeframe_seconds=TF)


def test_fold_errors():
    ok = dict(
        fold=0,
        train_start=T0,
        train_end=T0 + BAR,
        validation_start=T0 + BAR,
        validation_end=T0 + 2 * BAR,
        test_start=T0 + 2 * BAR,
        test_end=T0 + 3 * BAR,
    )
    Fold(**ok)
    with pytest.raises(ValueError, match="contiguous"):
        Fold(**{**ok, "validation_start": T0 + 2 * BAR})
    with pytest.raises(ValueError, match="test_start must be before test_end"):
        Fold(**{**ok, "test_end": T0 + 2 * BAR})
    with pytest.raises(ValueError, match="train_start"):
        Fold(**{**ok, "train_start": datetime(2024, 1, 1)})
