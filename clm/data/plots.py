"""Pictures of the data a person should look at rather than read."""

from __future__ import annotations

import io

import polars as pl

MAX_SYMBOLS = 12


def integrity_plot(candles: pl.LazyFrame | pl.DataFrame, gaps: pl.DataFrame) -> bytes:
    """PNG: hourly closes per symbol (rebased to 1), segment breaks as red lines, filled bars as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lazy = candles.lazy()
    symbols = lazy.select(pl.col("symbol").unique().sort()).collect()["symbol"].to_list()[:MAX_SYMBOLS]
    hourly = (
        lazy.filter(pl.col("symbol").is_in(symbols))
        .sort("symbol", "timestamp")
        .group_by_dynamic("timestamp", every="1h", group_by="symbol")
        .agg(pl.col("close").last(), pl.col("is_filled").any())
        .with_columns(rebased=pl.col("close") / pl.col("close").first().over("symbol"))
        .collect()
    )
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=90)
    for symbol, frame in hourly.partition_by("symbol", as_dict=True, maintain_order=True).items():
        ax.plot(frame["timestamp"].to_list(), frame["rebased"].to_list(), linewidth=0.8, label=symbol[0])
        filled = frame.filter(pl.col("is_filled"))
        if filled.height:
            ax.scatter(filled["timestamp"].to_list(), filled["rebased"].to_list(), s=10, color="black", zorder=3)
    breaks = gaps.filter(pl.col("action") == "segment_break", pl.col("symbol").is_in(symbols))
    for start, end in breaks.select("gap_start", "gap_end").iter_rows():
        ax.axvspan(start, end, color="red", alpha=0.35)
        ax.axvline(start, color="red", linewidth=0.6)
    ax.set_title("close (hourly, rebased to 1); red: segment breaks, black dots: hours with filled bars")
    ax.legend(ncol=6, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
