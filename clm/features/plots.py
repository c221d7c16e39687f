"""A picture of a feature version: how features relate and whether any is degenerate."""

from __future__ import annotations

import io

import numpy as np
import polars as pl

SAMPLE_ROWS = 100_000


def feature_overview_plot(features: pl.DataFrame, names: list[str], *, seed: int = 0) -> bytes:
    """PNG: Spearman correlations between features (warm rows, a seeded sample) and each feature's
    share of distinct values, so redundant pairs and near-constant features stand out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warm = features.filter(pl.col("warm")).select(names)
    if warm.height > SAMPLE_ROWS:
        warm = warm.sample(SAMPLE_ROWS, seed=seed)
    ranks = warm.select(pl.col(n).rank("average") for n in names).fill_null(strategy="mean")
    matrix = None
    if warm.height > 2:
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant column has no correlation
            matrix = np.nan_to_num(np.corrcoef(ranks.to_numpy(), rowvar=False), nan=0.0)
    distinct = [warm[n].n_unique() / max(1, warm.height) for n in names]

    fig, (heat, bars) = plt.subplots(1, 2, figsize=(14, 7.5), dpi=80, gridspec_kw={"width_ratios": [3, 1]})
    if matrix is not None:
        image = heat.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        fig.colorbar(image, ax=heat, fraction=0.04)
    heat.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    heat.set_yticks(range(len(names)), names, fontsize=6)
    heat.set_title(f"Spearman correlation, {warm.height:,} warm rows")
    bars.barh(range(len(names)), distinct, color="tab:blue")
    bars.set_yticks(range(len(names)), names, fontsize=6)
    bars.invert_yaxis()
    if any(distinct):
        bars.set_xscale("log")
    bars.set_title("distinct values / rows")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
