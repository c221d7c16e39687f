"""Small markdown renderers for reports and Dagster metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def frame_markdown(df: pl.DataFrame, max_rows: int = 50) -> str:
    text = markdown_table(df.head(max_rows).to_dicts(), df.columns)
    if df.height > max_rows:
        text += f"\n\n… {df.height - max_rows:,} more rows"
    return text
