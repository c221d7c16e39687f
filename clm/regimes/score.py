"""Score regimes against a known truth (the synthetic market's ``synthetic_regimes``) and report it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from clm.checks import ENGINE
from clm.markdown import markdown_table
from clm.regimes.config import CLASSES

# The truth's five regimes in the seed taxonomy's four classes.
TRUTH_MAP = {
    "trend_up": "trend",
    "trend_down": "trend",
    "range": "range",
    "panic": "panic",
    "illiquid": "illiquid",
}
COLOURS = {"trend": "#2e7d32", "range": "#9e9e9e", "panic": "#c62828", "illiquid": "#1565c0"}


@dataclass(frozen=True)
class RegimeScore:
    """Confusion matrix (rows truth, columns predicted, in ``classes`` order) and what follows from it.

    ``recall[c]`` is None for a class the truth never shows; ``balanced_accuracy`` is the mean recall
    over the classes that do. ``rows_warmup`` rows had no prediction (warm-up) and are not scored;
    ``rows_unmatched`` had no truth at their timestamp.
    """

    level: str  # "symbol" or "market"
    classes: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    rows_scored: int
    rows_warmup: int
    rows_unmatched: int

    @property
    def support(self) -> dict[str, int]:
        return {c: sum(row) for c, row in zip(self.classes, self.confusion, strict=True)}

    @property
    def predicted(self) -> dict[str, int]:
        return {c: sum(row[j] for row in self.confusion) for j, c in enumerate(self.classes)}

    @property
    def recall(self) -> dict[str, float | None]:
        return {
            c: (row[i] / sum(row) if sum(row) else None)
            for i, (c, row) in enumerate(zip(self.classes, self.confusion, strict=True))
        }

    @property
    def precision(self) -> dict[str, float | None]:
        predicted = self.predicted
        return {
            c: (self.confusion[i][i] / predicted[c] if predicted[c] else None) for i, c in enumerate(self.classes)
        }

    @property
    def balanced_accuracy(self) -> float:
        recalls = [r for r in self.recall.values() if r is not None]
        return sum(recalls) / len(recalls) if recalls else float("nan")

    @property
    def accuracy(self) -> float:
        hits = sum(self.confusion[i][i] for i in range(len(self.classes)))
        return hits / self.rows_scored if self.rows_scored else float("nan")

    def confusion_frame(self) -> pl.DataFrame:
        """``truth`` then one count column per predicted class."""
        return pl.DataFrame(
            {
                "truth": list(self.classes),
                **{c: [row[j] for row in self.confusion] for j, c in enumerate(self.classes)},
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for asset metadata and JSON reports."""
        return {
            "level": self.level,
            "classes": list(self.classes),
            "confusion": [list(row) for row in self.confusion],
            "recall": self.recall,
            "precision": self.precision,
            "support": self.support,
            "balanced_accuracy": self.balanced_accuracy,
            "accuracy": self.accuracy,
            "rows_scored": self.rows_scored,
            "rows_warmup": self.rows_warmup,
            "rows_unmatched": self.rows_unmatched,
        }


def score_regimes(
    predicted: pl.DataFrame | pl.LazyFrame, truth: pl.DataFrame | pl.LazyFrame, *, column: str | None = None
) -> RegimeScore:
    """Score ``classify_regimes`` output (column ``regime``) or ``market_regime`` output (column
    ``market_regime``) against ``truth`` (``timestamp, regime`` in the synthetic five-regime names).

    Every predicted row is matched to the truth at its timestamp; for per-symbol rows that is the
    market-wide truth, which every synthetic symbol shares.
    """
    lazy = predicted.lazy()
    names = lazy.collect_schema().names()
    if column is None:
        column = "market_regime" if "market_regime" in names else "regime"
    if column not in names or "timestamp" not in names:
        raise ValueError(f"score_regimes: predictions need columns 'timestamp' and {column!r}, have {names}")
    level = "market" if column == "market_regime" else "symbol"
    truth_frame = truth.lazy().select(
        "timestamp", pl.col("regime").replace_strict(TRUTH_MAP, return_dtype=pl.String).alias("_truth")
    )
    joined = (
        lazy.select("timestamp", pl.col(column).alias("_predicted"))
        .join(truth_frame, on="timestamp", how="left")
        .group_by("_truth", "_predicted")
        .len()
        .collect(engine=ENGINE)
    )
    unknown = set(joined["_predicted"].drop_nulls().to_list()) - set(CLASSES)
    if unknown:
        raise ValueError(f"score_regimes: unknown predicted regime(s) {sorted(unknown)}")
    counts = {(t, p): n for t, p, n in joined.iter_rows()}
    confusion = tuple(tuple(counts.get((t, p), 0) for p in CLASSES) for t in CLASSES)
    warmup = sum(n for (_, p), n in counts.items() if p is None)
    unmatched = sum(n for (t, p), n in counts.items() if t is None and p is not None)
    return RegimeScore(
        level=level,
        classes=CLASSES,
        confusion=confusion,
        rows_scored=sum(map(sum, confusion)),
        rows_warmup=warmup,
        rows_unmatched=unmatched,
    )


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def regime_report_markdown(scores: Sequence[RegimeScore], *, title: str = "Regime map") -> str:
    """Markdown: per score a summary line and the confusion matrix with recall and support."""
    lines = [f"## {title}", ""]
    for score in scores:
        label = (
            "per symbol (each symbol vs the market truth)"
            if score.level == "symbol"
            else "market-wide (hysteresis)"
        )
        lines += [
            f"### {label}",
            "",
            f"balanced accuracy **{score.balanced_accuracy:.3f}**, accuracy {score.accuracy:.3f}, "
            f"{score.rows_scored:,} rows scored, {score.rows_warmup:,} warm-up rows excluded"
            + (f", {score.rows_unmatched:,} rows without truth" if score.rows_unmatched else ""),
            "",
        ]
        recall, precision, support = score.recall, score.precision, score.support
        rows = []
        for truth, counts in zip(score.classes, score.confusion, strict=True):
            row: dict[str, Any] = {"truth \\ predicted": truth}
            row.update(dict(zip(score.classes, counts, strict=True)))
            row.update(recall=_pct(recall[truth]), support=support[truth])
            rows.append(row)
        rows.append({"truth \\ predicted": "precision", **{c: _pct(precision[c]) for c in score.classes}})
        lines += [markdown_table(rows, ["truth \\ predicted", *score.classes, "recall", "support"]), ""]
    return "\n".join(lines).rstrip() + "\n"


def regime_plot(
    scores: Sequence[RegimeScore],
    market: pl.DataFrame | None = None,
    truth: pl.DataFrame | None = None,
) -> bytes:
    """PNG: a row-normalised confusion heatmap per score; below, truth vs market regime over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    timeline = market is not None and truth is not None
    n = max(1, len(scores))
    fig = plt.figure(figsize=(11, 7.5 if timeline else 4.2), dpi=90)
    grid = fig.add_gridspec(
        2 if timeline else 1, n, height_ratios=[3, 1.4] if timeline else None, hspace=0.45 if timeline else None
    )
    for k, score in enumerate(scores):
        ax = fig.add_subplot(grid[0, k])
        matrix = [[v / sum(row) if sum(row) else 0.0 for v in row] for row in score.confusion]
        ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
        for i, row in enumerate(score.confusion):
            for j, value in enumerate(row):
                colour = "white" if matrix[i][j] > 0.6 else "black"
                ax.text(j, i, f"{matrix[i][j]:.2f}\n{value:,}", ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(score.classes)), score.classes, fontsize=8)
        ax.set_yticks(range(len(score.classes)), score.classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_title(f"{score.level}: balanced accuracy {score.balanced_accuracy:.3f}", fontsize=10)
    if timeline:
        ax = fig.add_subplot(grid[1, :])
        codes = {c: i for i, c in enumerate(CLASSES)}
        frame = (
            market.lazy()
            .select("timestamp", "market_regime")
            .join(
                truth.lazy().select(
                    "timestamp", pl.col("regime").replace_strict(TRUTH_MAP, return_dtype=pl.String).alias("truth")
                ),
                on="timestamp",
                how="left",
            )
            .sort("timestamp")
            .with_columns(
                pl.col(c).replace_strict(codes, default=None, return_dtype=pl.Float64).fill_null(float("nan"))
                for c in ("truth", "market_regime")
            )
            .collect(engine=ENGINE)
        )
        if frame.height:
            start, end = frame["timestamp"][0], frame["timestamp"][-1]
            cmap = ListedColormap([COLOURS[c] for c in CLASSES]).with_extremes(bad="white")
            import matplotlib.dates as mdates

            ax.imshow(
                [frame["truth"].to_list(), frame["market_regime"].to_list()],
                aspect="auto",
                cmap=cmap,
                vmin=-0.5,
                vmax=len(CLASSES) - 0.5,
                interpolation="nearest",
                extent=(mdates.date2num(start), mdates.date2num(end), 1.5, -0.5),
            )
            ax.xaxis_date()
            ax.set_yticks([0, 1], ["truth", "market"])
            # not fig.autofmt_xdate(): it would hide the heatmaps' tick labels
            ax.tick_params(axis="x", labelrotation=20)
        ax.set_title("truth vs market regime (white: warm-up)", fontsize=10)
        ax.legend(
            handles=[Patch(color=COLOURS[c], label=c) for c in CLASSES],
            ncol=len(CLASSES),
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.35),
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
