"""File-based market-data sources: Binance kline CSV, freqtrade Feather/JSON, generic CSV/Parquet.

Every defect ends up either as one row-level quarantine row (``row`` = 1-based line number for CSV,
1-based element index for freqtrade JSON, 1-based row index for Feather/Parquet) or as one
file-level quarantine row (``row`` null, ``reason`` ``file_error``, ``value`` a message naming
the file). Nothing raises for a bad file and nothing is dropped silently, so
``rows_read == bars.height + row-level quarantine rows`` holds per file and per batch.

Rules worth knowing:

* A rejected row gives exactly ONE quarantine row: the first defect found, in the order
  utf-8 / field count / timestamp / open / high / low / close / volume / spread / symbol.
* ``field`` is the column name as written in the file (the standard Binance or freqtrade name when
  the file has no header).
* File-level rejections count 0 rows read (their rows are not counted one by one).
* Only parse defects are checked here; prices <= 0, high < low, duplicates, ordering and
  alignment pass through to validation.
* An empty ``spread``/``spread_bps`` value is not a defect (it becomes null); nan/inf/garbage is.
* Truncated freqtrade JSON is salvaged: every complete ``[...]`` element is parsed, a trailing
  partial element is quarantined as ``truncated_record``; a document cut between two elements gives
  one ``truncated_document`` row with ``row`` null (bars are still kept). Any other structural
  damage rejects the file.
* CSV fields are split on the delimiter (``,``, ``;``, tab or ``|``, detected from the first line);
  quoted fields may not contain the delimiter.
* freqtrade non-price candle files (``-funding_rate``, ``-mark``, ``-index``, ``-premiumIndex``)
  are skipped with a file-level row: they are not tradeable bars.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import polars as pl

from clm.data.schema import (
    QUARANTINE_SCHEMA,
    RAW_BAR_SCHEMA,
    UTC_TS,
    empty,
    normalise_symbol,
    quarantine_rows,
)
from clm.data.sources.base import FileReport, SourceBatch

SUPPORTED_SUFFIXES = (".csv", ".feather", ".arrow", ".ipc", ".json", ".parquet", ".csv.gz")

BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
FREQTRADE_COLUMNS = ("date", "open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close", "volume")
# Names accepted for the bar-open time, in order of preference.
TIME_ALIASES = ("date", "datetime", "timestamp", "time", "open_time", "ts")
NON_PRICE_CANDLE_TYPES = {"funding_rate", "mark", "index", "premiumindex"}
EXPECTED_LAYOUTS = (
    "Binance kline CSV (12 columns open_time..ignore, with or without header); "
    "freqtrade Feather/JSON (date, open, high, low, close, volume); "
    "generic CSV/Parquet with columns date, open, high, low, close, volume "
    "[, spread | spread_bps][, symbol] (any case; use column_map to rename)"
)
MAX_VALUE_CHARS = 200

_TF_RE = re.compile(r"^(?P<base>.+?)-(?P<tf>\d+(?:mo|[smhdwM]))(?:-(?P<rest>.*))?$")
_BOM = b"\xef\xbb\xbf"
_ROW = "__row"


class _FileError(Exception):
    """The whole file is rejected; the message names the problem (the file is added by the caller)."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _matched_suffix(name: str) -> str | None:
    lower = name.lower()
    # Longest first so that ".csv.gz" wins over a hypothetical ".gz".
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return None


def _is_ignored(rel_parts: tuple[str, ...]) -> bool:
    """Hidden files/folders, README files and __pycache__ are skipped silently."""
    if any(part.startswith(".") or part == "__pycache__" for part in rel_parts):
        return True
    return rel_parts[-1].upper().startswith("README")


def _split_name(name: str) -> tuple[str, str | None, str | None]:
    """``BTCUSDT-5m-2024-01-01.csv`` -> (``BTCUSDT``, ``5m``, ``2024-01-01``)."""
    suffix = _matched_suffix(name)
    stem = name[: -len(suffix)] if suffix else Path(name).stem
    match = _TF_RE.match(stem)
    if not match:
        return stem, None, None
    return match.group("base"), match.group("tf"), match.group("rest")


def symbol_from_filename(name: str) -> str:
    """Symbol encoded in a file name: the text before the first ``-<timeframe>``, normalised.

    ``BTCUSDT-5m-2024-01-01.csv`` -> ``BTCUSDT``; ``XRP_USDT_USDT-5m-futures.feather`` ->
    ``XRP_USDT_USDT``; ``prices.csv`` -> ``PRICES``. Raises ``ValueError`` for an unusable name.
    """
    return normalise_symbol(_split_name(name)[0])


def _trunc(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).str.slice(0, MAX_VALUE_CHARS)


def _clean_text(expr: pl.Expr) -> pl.Expr:
    """Strip whitespace and one layer of surrounding double quotes."""
    return expr.str.strip_chars().str.strip_chars('"').str.strip_chars()


# --------------------------------------------------------------------------------------------
# timestamps
# --------------------------------------------------------------------------------------------


# Plausible bar times; anything outside is a parse defect (and could not even be shown as a datetime).
_TS_MIN_US = -2_208_988_800_000_000  # 1900-01-01
_TS_MAX_US = 7_258_118_400_000_000  # 2200-01-01


def _bounded(us: pl.Expr) -> pl.Expr:
    ok = (us >= _TS_MIN_US) & (us < _TS_MAX_US)
    return pl.from_epoch(pl.when(ok).then(us), time_unit="us").dt.replace_time_zone("UTC")


def _epoch_int_to_utc(n: pl.Expr) -> pl.Expr:
    """Integer epoch numbers in s / ms / us / ns, the unit decided per value by magnitude."""
    a = n.abs()
    us = (
        pl.when(a < 100_000_000_000)  # < 1e11: seconds (until year 5138)
        .then(n * 1_000_000)
        .when(a < 100_000_000_000_000)  # < 1e14: milliseconds (13 digits today)
        .then(n * 1_000)
        .when(a < 100_000_000_000_000_000)  # < 1e17: microseconds (16 digits today)
        .then(n)
        .otherwise(n // 1_000)  # nanoseconds
    )
    return _bounded(us)


def _epoch_float_to_utc(f: pl.Expr) -> pl.Expr:
    """Fractional epoch numbers, same magnitude rule as ``_epoch_int_to_utc``."""
    af = f.abs()
    us = (
        pl.when(f.is_finite())
        .then(
            pl.when(af < 1e11)
            .then(f * 1e6)
            .when(af < 1e14)
            .then(f * 1e3)
            .when(af < 1e17)
            .then(f)
            .otherwise(f / 1e3)
            .round(0)
        )
        .cast(pl.Int64, strict=False)
    )
    return _bounded(us)


def _iso_to_utc(frame: pl.DataFrame, col: str) -> pl.Series:
    """ISO-8601 strings with or without offset (naive means UTC) -> UTC timestamps (null if not)."""
    norm = frame.select(
        pl.col(col)
        .str.replace(r"^(\d{4})/(\d{1,2})/(\d{1,2})", "$1-$2-$3")
        .str.replace(r"^(\d{4}-\d{1,2}-\d{1,2})[Tt ]+", "$1 ")
        .str.replace(r"\s*(?:Z|z|UTC|GMT)$", "+00:00")
        .str.replace(r"(\d)\s+([+-]\d{2}:?\d{2})$", "$1$2")
        .alias("__norm")
    )  # materialised once: the five parses below all read it
    n = pl.col("__norm")
    aware = [
        n.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC")
        for fmt in ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z")
    ]
    naive = [
        n.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")
    ]
    return norm.select(_bounded(pl.coalesce(*aware, *naive).dt.epoch("us")).alias("__iso")).to_series()


def _timestamp_stage(raw: pl.DataFrame) -> pl.DataFrame:
    """Add ``__ts`` (UTC) and ``__r_timestamp`` (reason or null) for a time column of any dtype.

    Text goes through the cheap integer-epoch parse first; fractional epochs and ISO strings are
    parsed only on the rows that need them.
    """
    dtype = raw.schema["timestamp"]
    c = pl.col("timestamp")
    if isinstance(dtype, pl.Datetime):
        # Work on the physical integers: a cast of an out-of-range value would raise (or panic).
        phys = c.to_physical()
        if dtype.time_unit == "ns":
            us = phys // 1_000
        elif dtype.time_unit == "ms":
            us = pl.when(phys.abs() < 9_000_000_000_000_000).then(phys * 1_000)
        else:
            us = phys
        parsed = _bounded(us)  # the physical value is UTC whatever the zone
    elif isinstance(dtype, pl.Date):
        parsed = _bounded(c.to_physical().cast(pl.Int64) * 86_400_000_000)
    elif dtype.is_integer():
        parsed = _epoch_int_to_utc(c.cast(pl.Int64, strict=False))
    elif dtype.is_float() or dtype.is_decimal():
        parsed = _epoch_float_to_utc(c.cast(pl.Float64))
    else:  # text, already stripped by _clean_columns
        frame = raw.with_columns(
            _epoch_int_to_utc(c.cast(pl.Int64, strict=False)).alias("__ts"),
            (c.is_null() | (c == "")).alias("__ts_empty"),
        )
        todo = frame.filter(pl.col("__ts").is_null() & ~pl.col("__ts_empty"))
        if todo.height:
            fixed = todo.select(
                pl.col(_ROW),
                pl.coalesce(
                    _epoch_float_to_utc(c.cast(pl.Float64, strict=False)),
                    _iso_to_utc(todo, "timestamp"),
                ).alias("__slow"),
            )
            frame = (
                frame.join(fixed, on=_ROW, how="left", maintain_order="left")
                .with_columns(pl.coalesce("__ts", "__slow").alias("__ts"))
                .drop("__slow")
            )
        return _timestamp_reason(frame)
    return _timestamp_reason(raw.with_columns(parsed.alias("__ts"), c.is_null().alias("__ts_empty")))


def _timestamp_reason(frame: pl.DataFrame) -> pl.DataFrame:
    reason = (
        pl.when(pl.col("__ts_empty"))
        .then(pl.lit("missing_value"))
        .when(pl.col("__ts").is_null())
        .then(pl.lit("invalid_timestamp"))
    )
    return frame.with_columns(reason.alias("__r_timestamp")).drop("__ts_empty")


def _number_value(col: str, dtype: pl.DataType) -> pl.Expr:
    c = pl.col(col)
    return c.cast(pl.Float64) if dtype.is_numeric() else c.cast(pl.Float64, strict=False)


def _number_reason(col: str, dtype: pl.DataType, *, optional: bool = False) -> pl.Expr:
    """Reason or null, given ``__v_<col>`` holds the Float64 value; ``optional`` accepts empties."""
    c, value = pl.col(col), pl.col(f"__v_{col}")
    if dtype.is_numeric():
        is_empty, invalid = c.is_null(), pl.lit(False)
    else:
        is_empty, invalid = c.is_null() | (c == ""), value.is_null()
    reason = pl.when(is_empty).then(pl.lit(None if optional else "missing_value", dtype=pl.String))
    return (
        reason.when(invalid)
        .then(pl.lit("invalid_number"))
        .when(~value.is_finite())
        .then(pl.lit("non_finite"))
    )


def _clean_columns(raw: pl.DataFrame) -> pl.DataFrame:
    """Text columns: strip whitespace and quotes once. Types the parsers do not know (lists,
    structs, binary, booleans, ...) are handled as text."""
    exprs = []
    for name, dtype in raw.schema.items():
        if name.startswith("__"):
            continue
        if name == "symbol":  # whatever its type (categorical, numbers, ...), a symbol is text
            exprs.append(_clean_text(pl.col(name).cast(pl.String, strict=False)).alias(name))
            continue
        if isinstance(dtype, (pl.Datetime, pl.Date)) or dtype.is_numeric():
            continue
        text = pl.col(name)
        if not isinstance(dtype, pl.String):
            text = text.cast(pl.String, strict=False)
        exprs.append(_clean_text(text).alias(name))
    return raw.with_columns(exprs) if exprs else raw


# --------------------------------------------------------------------------------------------
# the shared row-level stage
# --------------------------------------------------------------------------------------------


def _finish(
    raw: pl.DataFrame,
    *,
    source_file: str,
    labels: Mapping[str, str],
    spread_mode: str | None,
    file_symbol: str | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn raw columns into (bars, quarantine).

    ``raw`` holds ``__row``, optional ``__pre_reason``/``__pre_value`` (text-level defects), and the
    canonical columns ``timestamp``, ``open``..``volume``, optionally ``spread`` and ``symbol``,
    of any dtype. ``labels`` maps canonical names to the names used in the file.
    """
    if "__pre_reason" not in raw.schema:
        raw = raw.with_columns(
            pl.lit(None, dtype=pl.String).alias("__pre_reason"),
            pl.lit(None, dtype=pl.String).alias("__pre_value"),
        )
    raw = _clean_columns(raw)
    schema = raw.schema
    raw = _timestamp_stage(raw)
    numeric = [*PRICE_FIELDS, *(["spread"] if spread_mode is not None else [])]
    raw = raw.with_columns([_number_value(n, schema[n]).alias(f"__v_{n}") for n in numeric])
    checks: list[tuple[str, pl.Expr]] = [("timestamp", pl.col("__r_timestamp"))]
    checks += [(n, _number_reason(n, schema[n], optional=n == "spread")) for n in numeric]
    computed = []

    if "symbol" in schema:
        sym_text = pl.col("symbol")
        uniques = raw.select(sym_text.unique().drop_nulls()).to_series().to_list()
        mapping: dict[str, str | None] = {}
        for raw_symbol in uniques:  # one call per distinct symbol, not per row
            try:
                mapping[raw_symbol] = normalise_symbol(raw_symbol) if raw_symbol else None
            except ValueError:
                mapping[raw_symbol] = None
        symbol_expr = sym_text.replace_strict(mapping, default=None, return_dtype=pl.String)
        checks.append(
            (
                "symbol",
                pl.when(sym_text.is_null() | (sym_text == ""))
                .then(pl.lit("missing_value"))
                .when(symbol_expr.is_null())
                .then(pl.lit("invalid_symbol")),
            )
        )
    else:
        symbol_expr = pl.lit(file_symbol, dtype=pl.String)
    computed.append(symbol_expr.alias("__symbol"))

    frame = raw.with_columns(*computed, *[r.alias(f"__r_{n}") for n, r in checks[1:]])
    reason = pl.coalesce(pl.col("__pre_reason"), *[pl.col(f"__r_{n}") for n, _ in checks])
    field_expr = pl.when(pl.col("__pre_reason").is_not_null()).then(pl.lit(None, dtype=pl.String))
    value_expr = pl.when(pl.col("__pre_reason").is_not_null()).then(pl.col("__pre_value"))
    for name, _ in checks:
        hit = pl.col(f"__r_{name}").is_not_null()
        dtype = schema[name]
        if isinstance(dtype, (pl.Datetime, pl.Date)):
            # Out-of-range datetimes cannot be formatted: show the stored integer and its unit.
            unit = dtype.time_unit if isinstance(dtype, pl.Datetime) else "days"
            raw_value = pl.format("{} ({} since epoch)", pl.col(name).to_physical(), pl.lit(unit))
        else:
            raw_value = pl.col(name).cast(pl.String)
        field_expr = field_expr.when(hit).then(pl.lit(labels.get(name, name)))
        value_expr = value_expr.when(hit).then(raw_value)
    frame = frame.with_columns(
        reason.alias("__reason"), field_expr.alias("__field"), _trunc(value_expr).alias("__value")
    )

    ok = pl.col("__reason").is_null()
    if spread_mode == "spread":
        spread_bps = pl.col("__v_spread") / pl.col("__v_close") * 1e4
    elif spread_mode == "spread_bps":
        spread_bps = pl.col("__v_spread")
    else:
        spread_bps = pl.lit(None, dtype=pl.Float64)
    bars = frame.filter(ok).select(
        pl.lit(source_file, dtype=pl.String).alias("source_file"),
        pl.col(_ROW).cast(pl.Int64).alias("source_row"),
        pl.col("__symbol").alias("symbol"),
        pl.col("__ts").cast(UTC_TS).alias("timestamp"),
        *[pl.col(f"__v_{n}").alias(n) for n in PRICE_FIELDS],
        spread_bps.cast(pl.Float64).alias("spread_bps"),
    )
    quarantine = frame.filter(~ok).select(
        pl.lit(source_file, dtype=pl.String).alias("source_file"),
        pl.col(_ROW).cast(pl.Int64).alias("row"),
        pl.col("__field").alias("field"),
        pl.col("__value").alias("value"),
        pl.col("__reason").alias("reason"),
        pl.col("__symbol").alias("symbol"),
        pl.col("__ts").cast(UTC_TS).alias("timestamp"),
    )
    return bars.select([pl.col(c).cast(t) for c, t in RAW_BAR_SCHEMA.items()]), quarantine.select(
        [pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()]
    )


# --------------------------------------------------------------------------------------------
# column layouts
# --------------------------------------------------------------------------------------------


def _resolve_columns(
    names: list[str], column_map: Mapping[str, str] | None
) -> tuple[dict[str, int], str | None]:
    """Map canonical names to column positions; returns (positions, spread_mode)."""
    cmap = {str(k).strip().lower(): str(v).strip().lower() for k, v in (column_map or {}).items()}
    plain = [n.strip().strip('"').strip().lower() for n in names]
    keys = [cmap.get(n, n) for n in plain]
    positions: dict[str, int] = {}
    for alias in TIME_ALIASES:
        if alias in keys:
            positions["timestamp"] = keys.index(alias)
            break
    for name in (*PRICE_FIELDS, "symbol"):
        if name in keys:
            positions[name] = keys.index(name)
    spread_mode = None
    if "spread_bps" in keys:
        positions["spread"], spread_mode = keys.index("spread_bps"), "spread_bps"
    elif "spread" in keys:
        positions["spread"], spread_mode = keys.index("spread"), "spread"
    missing = [n for n in ("timestamp", *PRICE_FIELDS) if n not in positions]
    if missing:
        missing_txt = ", ".join("date" if n == "timestamp" else n for n in missing)
        raise _FileError(
            f"unknown column layout: found columns {list(names)}, missing {missing_txt}; "
            f"expected one of: {EXPECTED_LAYOUTS}"
        )
    return positions, spread_mode


def _file_symbol(source_file: str, symbol: str | None, needed: bool) -> str | None:
    if symbol is not None:
        return symbol
    if not needed:
        return None
    try:
        return symbol_from_filename(Path(source_file).name)
    except ValueError as exc:
        raise _FileError(f"cannot take a symbol from the file name: {exc}") from None


# --------------------------------------------------------------------------------------------
# text formats
# --------------------------------------------------------------------------------------------


def _decode_lines(data: bytes) -> pl.DataFrame:
    """Split on newlines and decode each line separately: ``__text`` (lossy) and ``__bad``.

    The whole buffer is decoded once (the lossy decoder never creates or eats a newline, so lines
    stay aligned with the raw bytes) and split by polars; only lines that show a replacement
    character are re-checked strictly, and ``__bad`` holds the repr of the raw bytes of those that
    really are invalid UTF-8.
    """
    text = data.decode("utf-8", errors="replace")
    frame = pl.DataFrame({"__text": [text]}).select(pl.col("__text").str.split("\n").explode())
    suspects = (
        frame.with_row_index("__i")
        .filter(pl.col("__text").str.contains("\ufffd", literal=True))["__i"]
        .to_list()
    )
    bad: dict[int, str] = {}
    if suspects:
        raw_lines = data.split(b"\n")
        for i in suspects:  # only lines with a replacement character
            try:
                raw_lines[i].decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = repr(raw_lines[i])[:MAX_VALUE_CHARS]
    bad_series = pl.Series("__bad", [None] * frame.height, dtype=pl.String)
    if bad:
        bad_series = bad_series.scatter(list(bad), list(bad.values()))
    return frame.with_columns(bad_series)


def _read_bytes(path: Path, suffix: str) -> bytes:
    data = path.read_bytes()
    if suffix == ".csv.gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _FileError(f"corrupt gzip: {exc}") from None
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    return data


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _text_rows(
    lines: pl.DataFrame, *, n_fields: int, delimiter: str, positions: Mapping[str, int]
) -> pl.DataFrame:
    """Split decoded lines into canonical string columns plus text-level defects."""
    n = pl.col("__text").str.count_matches(delimiter, literal=True) + 1
    pre_reason = (
        pl.when(pl.col("__bad").is_not_null())
        .then(pl.lit("invalid_utf8"))
        .when(n != n_fields)
        .then(pl.lit("wrong_field_count"))
    )
    pre_value = (
        pl.when(pl.col("__bad").is_not_null())
        .then(pl.col("__bad"))
        .when(n != n_fields)
        .then(_trunc(pl.col("__text")))
    )
    fields = pl.col("__text").str.split_exact(delimiter, max(positions.values()))
    return lines.select(
        pl.col(_ROW),
        pre_reason.alias("__pre_reason"),
        pre_value.alias("__pre_value"),
        *[fields.struct.field(f"field_{i}").alias(name) for name, i in positions.items()],
    )


def _parse_csv(
    data: bytes, source_file: str, column_map: Mapping[str, str] | None, symbol: str | None
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    lines = _decode_lines(data).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(_ROW),
        pl.col("__text").str.strip_suffix("\r"),
    ).filter(pl.col("__bad").is_not_null() | (pl.col("__text").str.strip_chars() != ""))
    if lines.height == 0:
        raise _FileError("empty file (no bytes or only blank lines)")
    readable = lines.filter(pl.col("__bad").is_null())
    if readable.height == 0:
        raise _FileError("no line decodes as UTF-8; cannot tell the column layout")
    first_row, first = readable[_ROW][0], readable["__text"][0]
    delimiter = max((",", ";", "\t", "|"), key=first.count) if any(d in first for d in ",;\t|") else ","
    head = [f.strip().strip('"').strip() for f in first.split(delimiter)]
    has_header = not any(_is_number(f) for f in head if f)  # a header has no numeric field

    if has_header:
        names = head
        positions, spread_mode = _resolve_columns(names, column_map)
        keys = [n.lower() for n in names]
        is_binance = (
            "close_time" in keys
            and "open_time" in keys
            and positions["timestamp"] == keys.index("open_time")
        )
        layout = "binance_kline_csv" if is_binance else "generic_csv"
        labels = {canon: names[i] for canon, i in positions.items()}
        n_fields = len(names)
        body = lines.filter(pl.col(_ROW) != first_row)
        if body.height == 0:
            raise _FileError(f"empty file (only a header: {names})")
    else:
        n_per_line = pl.col("__text").str.count_matches(delimiter, literal=True) + 1
        counts = lines.select(n_per_line.mode().min()).item()
        if counts != len(BINANCE_KLINE_COLUMNS):
            raise _FileError(
                f"unknown column layout: no header row and {counts} fields per line "
                f"(first line {first[:80]!r}); expected one of: {EXPECTED_LAYOUTS}"
            )
        layout, spread_mode, body = "binance_kline_csv", None, lines
        n_fields = len(BINANCE_KLINE_COLUMNS)
        positions = {"timestamp": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}
        labels = {canon: BINANCE_KLINE_COLUMNS[i] for canon, i in positions.items()}

    file_symbol = _file_symbol(source_file, symbol, needed="symbol" not in positions)
    raw = _text_rows(body, n_fields=n_fields, delimiter=delimiter, positions=positions)
    bars, quarantine = _finish(
        raw, source_file=source_file, labels=labels, spread_mode=spread_mode, file_symbol=file_symbol
    )
    return bars, quarantine, layout


_JSON_ELEMENT = re.compile(rb"\[([^\[\]]*)\]")
_JSON_REST = re.compile(rb"^[\s,]*(?:(?P<closed>\]\s*)|\[(?P<partial>[^\[\]]*))?$", re.S)


def _parse_freqtrade_json(
    data: bytes, source_file: str, symbol: str | None
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    doc = data.strip()
    if not doc:
        raise _FileError("empty file (no bytes or only whitespace)")
    if not doc.startswith(b"["):
        raise _FileError(
            f"unknown JSON layout (document starts with {doc[:20]!r}); expected a freqtrade "
            "candle list [[ms, open, high, low, close, volume], ...]"
        )
    inner = doc[1:].replace(b"\n", b" ").replace(b"\r", b" ")
    elements = _JSON_ELEMENT.findall(inner)
    rest = _JSON_REST.match(_JSON_ELEMENT.sub(b"", inner))
    if rest is None:
        raise _FileError(
            "JSON does not parse as a freqtrade candle list [[ms, open, high, low, close, volume], ...]"
        )
    partial = rest.group("partial")
    if not elements and partial is None:
        raise _FileError("empty file (JSON list holds no candles)")
    file_symbol = _file_symbol(source_file, symbol, needed=True)

    chunks = elements + ([partial] if partial is not None else [])
    decoded = _decode_lines(b"\n".join(chunks)).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(_ROW)
    )
    positions = {"timestamp": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}
    raw = _text_rows(decoded, n_fields=len(FREQTRADE_COLUMNS), delimiter=",", positions=positions)
    # JSON null is a missing value, not a malformed number.
    raw = raw.with_columns(
        [
            pl.when(pl.col(c).str.strip_chars() == "null")
            .then(pl.lit(""))
            .otherwise(pl.col(c))
            .alias(c)
            for c in positions
        ]
    )
    if partial is not None:
        last = pl.col(_ROW) == len(chunks)
        raw = raw.with_columns(
            pl.when(last)
            .then(pl.lit("truncated_record"))
            .otherwise(pl.col("__pre_reason"))
            .alias("__pre_reason"),
            pl.when(last)
            .then(pl.lit("[" + partial.decode("utf-8", errors="replace")[: MAX_VALUE_CHARS - 1]))
            .otherwise(pl.col("__pre_value"))
            .alias("__pre_value"),
        )
    labels = {canon: FREQTRADE_COLUMNS[i] for canon, i in positions.items()}
    bars, quarantine = _finish(
        raw, source_file=source_file, labels=labels, spread_mode=None, file_symbol=file_symbol
    )
    if rest.group("closed") is None and partial is None:
        quarantine = pl.concat(
            [
                quarantine,
                quarantine_rows(
                    source_file,
                    "truncated_document",
                    values=[
                        f"{source_file}: JSON list is not closed; "
                        "candles after the last complete one are lost"
                    ],
                    symbol=file_symbol,
                ),
            ]
        )
    return bars, quarantine, "freqtrade_json"


# --------------------------------------------------------------------------------------------
# columnar formats
# --------------------------------------------------------------------------------------------


def _read_feather_v1(data: bytes) -> pl.DataFrame | pl.Series:
    import pyarrow.feather  # only for Feather v1 files, which polars cannot read

    return pl.from_arrow(pyarrow.feather.read_table(io.BytesIO(data)))


def _read_ipc(path: Path) -> pl.DataFrame:
    """Arrow IPC file (Feather v2), else IPC stream, else Feather v1."""
    errors = []
    data = path.read_bytes()
    for reader in (
        lambda: pl.read_ipc(io.BytesIO(data)),
        lambda: pl.read_ipc_stream(io.BytesIO(data)),
        lambda: _read_feather_v1(data),
    ):
        try:
            frame = reader()
        except (Exception, pl.exceptions.PanicException) as exc:  # noqa: BLE001 - any reader failure
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(frame, pl.DataFrame):
            return frame
    first_error = errors[0][:300] if errors else "not a table"
    raise _FileError(f"unreadable Arrow IPC/Feather file (truncated or corrupt?): {first_error}")


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (Exception, pl.exceptions.PanicException) as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {exc}"[:300]
        raise _FileError(f"unreadable Parquet file (truncated or corrupt?): {detail}") from None


def _parse_columnar(
    frame: pl.DataFrame,
    source_file: str,
    column_map: Mapping[str, str] | None,
    symbol: str | None,
    kind: str,
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    names = frame.columns
    positions, spread_mode = _resolve_columns(names, column_map)
    if frame.height == 0:
        raise _FileError(f"empty file (no rows; columns {names})")
    if kind == "ipc":
        lower = {n.lower() for n in names}
        layout = "freqtrade_feather" if lower <= set(FREQTRADE_COLUMNS) else "generic_ipc"
    else:
        layout = "generic_parquet"
    for canon, i in positions.items():
        dtype = frame.schema[names[i]]
        if dtype.is_nested() or isinstance(dtype, (pl.Binary, pl.Object)):
            raise _FileError(f"column {names[i]!r} has type {dtype}, which cannot hold {canon} values")
    file_symbol = _file_symbol(source_file, symbol, needed="symbol" not in positions)
    raw = frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(_ROW),
        *[pl.col(names[i]).alias(canon) for canon, i in positions.items()],
    )
    labels = {canon: names[i] for canon, i in positions.items()}
    bars, quarantine = _finish(
        raw, source_file=source_file, labels=labels, spread_mode=spread_mode, file_symbol=file_symbol
    )
    return bars, quarantine, layout


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def detect_timeframe_seconds(timestamps: pl.Series) -> int | None:
    """Bar spacing: the mode of the positive differences of the sorted unique timestamps.

    Differences are rounded to whole seconds (exchange timestamps can carry millisecond jitter);
    ties go to the smaller spacing. ``None`` with fewer than two distinct timestamps.
    """
    s = timestamps.drop_nulls()
    if isinstance(s.dtype, pl.Date):
        s = s.cast(pl.Datetime("us"))
    s = s.unique().sort()
    if s.len() < 2:
        return None
    secs = (s.diff().dt.total_microseconds().drop_nulls() / 1e6).round(0).cast(pl.Int64).alias("secs")
    secs = secs.filter(secs > 0)
    if secs.len() == 0:
        return None
    counts = secs.value_counts(name="n").sort(["n", "secs"], descending=[True, False])
    return int(counts["secs"][0])


def _timeframe(bars: pl.DataFrame) -> int | None:
    per_symbol = [
        tf
        for _, group in bars.group_by("symbol", maintain_order=True)
        if (tf := detect_timeframe_seconds(group["timestamp"])) is not None
    ]
    if not per_symbol:
        return None
    return min(set(per_symbol), key=lambda tf: (-per_symbol.count(tf), tf))


def read_market_file(
    path: Path,
    *,
    column_map: Mapping[str, str] | None = None,
    symbol: str | None = None,
    source_file: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, FileReport]:
    """Read one file into (bars in RAW_BAR_SCHEMA, quarantine in QUARANTINE_SCHEMA, report).

    ``source_file`` is the name written into both frames (default: the file name). ``symbol`` is used
    when the file has no ``symbol`` column, instead of the symbol in the file name. Never raises for
    a bad file: a rejected file gives one quarantine row with ``row`` null and ``report.error`` set.
    """
    path = Path(path)
    source_file = source_file or path.name
    report = FileReport(path=source_file)
    try:
        suffix = _matched_suffix(path.name)
        if suffix is None:
            raise _FileError(
                f"unsupported file type {''.join(path.suffixes) or '(no suffix)'!r}; "
                f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
            )
        _, _, candle_type = _split_name(path.name)
        if candle_type and candle_type.lower() in NON_PRICE_CANDLE_TYPES:
            raise _FileError(f"freqtrade {candle_type!r} candles are not price bars; skipped")
        if symbol is not None:
            try:
                symbol = normalise_symbol(symbol)
            except ValueError as exc:
                raise _FileError(str(exc)) from None
        if suffix in (".csv", ".csv.gz"):
            data = _read_bytes(path, suffix)
            bars, quarantine, layout = _parse_csv(data, source_file, column_map, symbol)
        elif suffix == ".json":
            data = _read_bytes(path, suffix)
            bars, quarantine, layout = _parse_freqtrade_json(data, source_file, symbol)
        elif suffix == ".parquet":
            bars, quarantine, layout = _parse_columnar(
                _read_parquet(path), source_file, column_map, symbol, "parquet"
            )
        else:
            bars, quarantine, layout = _parse_columnar(
                _read_ipc(path), source_file, column_map, symbol, "ipc"
            )
    except (Exception, pl.exceptions.PanicException) as exc:  # noqa: BLE001 - never stop a load
        if isinstance(exc, _FileError):
            detail = str(exc)
        else:
            detail = f"unexpected error {type(exc).__name__}: {exc}"
        message = f"file_error: {source_file}: {detail}"
        report.error = message
        return empty(RAW_BAR_SCHEMA), quarantine_rows(source_file, "file_error", values=[message]), report

    row_level = quarantine.filter(pl.col("row").is_not_null()).height
    report.layout = layout
    report.rows_parsed = bars.height
    report.rows_quarantined = row_level
    report.rows_read = bars.height + row_level
    report.symbols = sorted(bars["symbol"].unique().to_list())
    report.timeframe_seconds = _timeframe(bars)
    return bars, quarantine, report


def file_time_range(path: Path, **kw) -> tuple[datetime, datetime] | None:
    """(first, last) bar open time in a file (UTC), or ``None`` when it yields no bars."""
    bars, _, _ = read_market_file(Path(path), **kw)
    if bars.height == 0:
        return None
    return bars["timestamp"].min(), bars["timestamp"].max()


class FolderSource:
    """A folder (recursively) or a single file of market data."""

    def __init__(
        self,
        path: str | Path,
        *,
        column_map: Mapping[str, str] | None = None,
        symbol: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.root = self.path.resolve()
        self.column_map = dict(column_map) if column_map else None
        self.symbol = normalise_symbol(symbol) if symbol is not None else None
        self.name = f"files:{self.root}"

    def files(self) -> list[tuple[Path, str]]:
        """(path, source_file) for every file the source reads, sorted by relative path."""
        if not self.root.exists():
            raise FileNotFoundError(
                f"market data path {str(self.path)!r} does not exist (resolved: {self.root})"
            )
        if self.root.is_file():
            return [(self.root, self.root.name)]
        entries = []
        for p in self.root.rglob("*"):
            if not p.is_file():
                continue
            rel = p.relative_to(self.root)
            if _is_ignored(rel.parts):
                continue
            entries.append((p, rel.as_posix()))
        entries.sort(key=lambda e: e[1])
        if not any(_matched_suffix(rel) for _, rel in entries):
            raise ValueError(
                f"no supported market-data files under {self.root} "
                f"(looked recursively for {', '.join(SUPPORTED_SUFFIXES)})"
            )
        return entries

    def load(self) -> SourceBatch:
        bars, quarantine, reports = [], [], []
        for path, rel in self.files():
            b, q, report = read_market_file(
                path, column_map=self.column_map, symbol=self.symbol, source_file=rel
            )
            bars.append(b)
            quarantine.append(q)
            reports.append(report)
        return SourceBatch(
            source=self.name,
            bars=pl.concat(bars, how="vertical") if bars else empty(RAW_BAR_SCHEMA),
            quarantine=(
                pl.concat(quarantine, how="vertical") if quarantine else empty(QUARANTINE_SCHEMA)
            ),
            rows_read=sum(r.rows_read for r in reports),
            files=reports,
        )
