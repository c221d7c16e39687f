"""Market-data sources behind one interface, chosen by a spec string.

``synthetic`` -> the seeded generator (``CLM_SYNTH_*`` settings); ``landing`` -> the lake's landing
folder; anything else -> a file or folder path (Binance kline CSV, freqtrade Feather/JSON, generic
CSV/Parquet).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from clm.data.sources.base import FileReport, MarketDataSource, SourceBatch
from clm.lake import Lake


def open_source(spec: str, lake: Lake) -> tuple[MarketDataSource, str]:
    """The source for ``spec`` and a stable id used to key its quarantine rows in the lake."""
    from clm.data.sources.files import FolderSource
    from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource

    spec = (spec or "synthetic").strip()
    if spec == "synthetic":
        return SyntheticSource(SyntheticConfig.from_env()), "synthetic"
    if spec == "landing":
        lake.landing_dir.mkdir(parents=True, exist_ok=True)
        return FolderSource(lake.landing_dir), "landing"
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(
            f"market-data source {spec!r} is neither 'synthetic', 'landing' nor an existing path ({path})"
        )
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return FolderSource(path), f"files-{digest}"


def source_date_range(spec: str, lake: Lake) -> tuple[dt.date, dt.date] | None:
    """First and last bar date (inclusive) a source covers, without validating it."""
    from clm.data.sources.files import SUPPORTED_SUFFIXES, FolderSource, file_time_range
    from clm.data.sources.synthetic import SyntheticConfig

    spec = (spec or "synthetic").strip()
    if spec == "synthetic":
        config = SyntheticConfig.from_env()
        return config.start, config.start + dt.timedelta(days=config.days - 1)
    source = FolderSource(lake.landing_dir if spec == "landing" else spec)
    spans = []
    for path, _ in source.files():  # clear FileNotFoundError / ValueError for a bad path
        if not path.name.lower().endswith(SUPPORTED_SUFFIXES):
            continue
        try:
            span = file_time_range(path)
        except Exception:  # a bad file is reported, with its reason, by the ingest run itself
            continue
        if span is not None:
            spans.append(span)
    if not spans:
        return None
    return min(s[0] for s in spans).date(), max(s[1] for s in spans).date()


__all__ = ["FileReport", "MarketDataSource", "SourceBatch", "open_source", "source_date_range"]
