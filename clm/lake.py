"""The lake: the one place that knows where tables, reports, signals and landing files live.

Bulk tables are hive-partitioned Parquet (``<table>/date=YYYY-MM-DD/part-0.parquet``)
written atomically (temp file, fsync, rename), so a reader never sees half a file and re-writing a
partition replaces it. A DuckDB catalog of views lets any SQL client query the tables by name.
Everything that builds a path goes through this class, so an object-store root can replace the
local one without touching callers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PARTITION_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
PART_FILE = "part-0.parquet"
CATALOG_FILE = "catalog.duckdb"
# duckdb-cli on PyPI (1.5.x) cannot open files in duckdb 2.0's default storage format.
CATALOG_STORAGE_VERSION = "v1.5.0"
ALL_PARTITIONS = "*"


class LakeError(RuntimeError):
    pass


class TableNotFound(LakeError):
    pass


def _check_table(table: str) -> str:
    if not TABLE_NAME.match(table):
        raise LakeError(f"invalid table name {table!r}: use lower-case letters, digits and '_'")
    return table


def _partition_value(column: str, value: Any) -> str:
    if isinstance(value, dt.datetime):
        text = value.date().isoformat()
    elif isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = str(value)
    if not PARTITION_VALUE.match(text) or ".." in text:
        raise LakeError(f"unsafe partition value {column}={text!r}")
    return text


def fsync_write(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write bytes to ``path`` atomically: a crash leaves the old file or the new one, never half.

    ``exclusive``: create only, never replace (a hard link to the finished temp file, which fails when
    the name exists: ``FileExistsError``); on a file system without hard links, a rename after a check.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            if path.exists():
                raise FileExistsError(f"{path} exists") from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)



def swap_dir_into_place(staging: Path, target: Path) -> None:
    """Rename a finished folder over ``target``: an older folder there is moved aside first and removed after,
    so a reader sees the old folder or the new one, never a mix."""
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, target)

def write_parquet_atomic(df: pl.DataFrame, path: Path) -> int:
    """Write one Parquet file atomically; returns its size in bytes.

    Same frame -> same bytes: no timestamps or random ids go into the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


class Lake:
    """A lake rooted at a local folder."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Lake:
        env = os.environ if environ is None else environ
        return cls(env.get("CLM_LAKE") or "data_lake")

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ---- well-known places -------------------------------------------------------------------
    def table_path(self, table: str) -> Path:
        return self.root / _check_table(table)

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILE

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    @property
    def landing_rejected_dir(self) -> Path:
        """Outside ``landing/`` so the landing source never reads what was rejected."""
        return self.root / "landing_rejected"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def signals_dir(self, kind: str) -> Path:
        return self.root / "signals" / _check_table(kind)

    def telemetry_file(self, day: dt.date) -> Path:
        return self.root / "telemetry" / "feedback" / f"events_{day:%Y%m%d}.jsonl"

    def model_dir(self, engine: str, version: str) -> Path:
        """Where one trained model's artifact files live: ``models/<engine>/<version>/``."""
        return self.root / "models" / _check_table(engine) / _partition_value("version", version)

    @property
    def telemetry_dir(self) -> Path:
        return self.root / "telemetry" / "feedback"

    @property
    def registry_path(self) -> Path:
        """The DuckDB file of the model registry (``clm.registry``); apart from the catalog, so catalog
        readers never wait on a registry writer."""
        return self.root / "registry" / "registry.duckdb"

    @property
    def active_policy_path(self) -> Path:
        """``active_policy.yaml``: the ACTIVE model per key and the history of changes, mirrored from the registry."""
        return self.root / "active_policy.yaml"

    @property
    def policies_dir(self) -> Path:
        """RL policy snapshots (``clm.rl.store``): ``models/policies/<agent>/v0001/`` ..."""
        return self.root / "models" / "policies"

    @property
    def halt_path(self) -> Path:
        """``signals/halt.json``: while it exists, serving refuses to trade (written on CRITICAL drift)."""
        return self.root / "signals" / "halt.json"

    @property
    def exports_dir(self) -> Path:
        """Where ``clm models export`` writes champions: ``exports/<model_type>/<version>/``."""
        return self.root / "exports"

    def export_dir(self, model_type: str, version: str) -> Path:
        return self.exports_dir / _check_table(model_type) / _partition_value("version", version)

    # ---- tables --------------------------------------------------------------------------------
    def write_table(
        self,
        table: str,
        df: pl.DataFrame,
        partition_by: Sequence[str] = (),
        *,
        replace: Iterable[Any] | str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Write ``df`` as hive partitions of ``table`` and return what was written.

        ``replace`` names the values of the first partition column that this write owns entirely
        (e.g. the dates of a run): files under them that this write does not produce are removed,
        so re-materialising a partition replaces it and never duplicates it. ``None`` owns the
        first-level values present in ``df``; ``ALL_PARTITIONS`` owns the whole table (or version).
        ``version`` writes under ``<table>/version=<version>/``, beside other versions, never over them.
        """
        base = self.table_path(table)
        if version is not None:
            base = base / f"version={_partition_value('version', version)}"
        partition_by = list(partition_by)
        written: list[Path] = []
        total_bytes = 0
        if not partition_by:
            path = base / PART_FILE
            total_bytes += write_parquet_atomic(df, path)
            written.append(path)
            owned_dirs = [base]  # an unpartitioned table is always replaced whole
        else:
            # One pass over the frame (partition_by), not one filter per partition.
            groups = df.sort(partition_by, maintain_order=True).partition_by(
                partition_by, as_dict=True, include_key=False, maintain_order=True
            )
            for key, chunk in groups.items():
                part = base.joinpath(
                    *(f"{col}={_partition_value(col, val)}" for col, val in zip(partition_by, key, strict=True))
                )
                path = part / PART_FILE
                total_bytes += write_parquet_atomic(chunk, path)
                written.append(path)
            first = partition_by[0]
            if replace == ALL_PARTITIONS:
                owned_dirs = [base]
            else:
                values = df.get_column(first).unique().to_list() if replace is None else list(replace)
                owned_dirs = sorted({base / f"{first}={_partition_value(first, v)}" for v in values})
        removed = self._remove_stale(owned_dirs, set(written))
        return {
            "table": table,
            "files_written": len(written),
            "files_removed": removed,
            "rows": df.height,
            "bytes": total_bytes,
            "path": str(base),
        }

    def _remove_stale(self, owned_dirs: Iterable[Path], keep: set[Path]) -> int:
        removed = 0
        for folder in owned_dirs:
            if not folder.is_dir():
                continue
            for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
                here = Path(dirpath)
                for name in filenames:
                    path = here / name
                    if name.endswith(".parquet") and path not in keep:
                        path.unlink()
                        removed += 1
                if here != self.root and not any(here.iterdir()):
                    here.rmdir()
        return removed

    def has_table(self, table: str) -> bool:
        path = self.table_path(table)
        return path.is_dir() and any(path.rglob("*.parquet"))

    def tables(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and TABLE_NAME.match(p.name) and self.has_table(p.name)
        )

    # ---- versioned tables ------------------------------------------------------------------------
    def set_current_version(self, table: str, version: str, manifest: Mapping[str, Any]) -> Path:
        """Record ``version``'s manifest and make it the one readers and the catalog see by default."""
        version = _partition_value("version", version)
        self.write_json(f"{_check_table(table)}/_versions/{version}.json", dict(manifest))
        return self.write_json(f"{table}/_current_version.json", {"version": version})

    def current_version(self, table: str) -> str | None:
        path = self.table_path(table) / "_current_version.json"
        if not path.is_file():
            return None
        return _partition_value("version", json.loads(path.read_text())["version"])

    def versions(self, table: str) -> list[str]:
        base = self.table_path(table)
        if not base.is_dir():
            return []
        return sorted(p.name.split("=", 1)[1] for p in base.glob("version=*") if p.is_dir())

    def version_manifest(self, table: str, version: str) -> Any:
        return self.read_json(f"{_check_table(table)}/_versions/{_partition_value('version', version)}.json")

    def files(self, table: str, **partitions: Iterable[Any]) -> list[Path]:
        """Parquet files of ``table``, optionally restricted to partition values (e.g. ``date=[...]``).

        A versioned table reads its current version unless ``version=[...]`` is given.
        """
        base = self.table_path(table)
        current = self.current_version(table)
        if current is not None and "version" not in partitions:
            partitions = {**partitions, "version": [current]}
        if not partitions:
            return sorted(base.rglob("*.parquet"))
        wanted = {col: {_partition_value(col, v) for v in values} for col, values in partitions.items()}
        out = []
        for path in sorted(base.rglob("*.parquet")):
            parts = dict(seg.split("=", 1) for seg in path.relative_to(base).parts[:-1] if "=" in seg)
            if all(parts.get(col) in vals for col, vals in wanted.items()):
                out.append(path)
        return out

    def scan(self, table: str, **partitions: Iterable[Any]) -> pl.LazyFrame:
        """A lazy scan of ``table`` with its hive columns; raises TableNotFound if it has no files."""
        if not self.has_table(table):
            raise TableNotFound(f"table {table!r} has no data in {self.table_path(table)}; materialise it first")
        files = self.files(table, **partitions)
        if not files:
            raise TableNotFound(f"table {table!r} has no partitions matching {partitions}")
        return pl.scan_parquet(
            [str(f) for f in files],
            hive_partitioning=True,
            missing_columns="insert",
            extra_columns="ignore",
        )

    def scan_or_empty(self, table: str, schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
        """Like ``scan`` but an absent table reads as no rows of ``schema``."""
        if not self.has_table(table):
            return pl.LazyFrame(schema=dict(schema))
        return self.scan(table)

    def read(self, table: str, **partitions: Iterable[Any]) -> pl.DataFrame:
        return self.scan(table, **partitions).collect()

    # ---- documents -----------------------------------------------------------------------------
    def write_json(self, relative: str, payload: Any) -> Path:
        """Write a JSON document under the lake root atomically (sorted keys: same content, same bytes)."""
        path = self._inside(relative)
        fsync_write(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())
        return path

    def write_bytes(self, relative: str, data: bytes) -> Path:
        path = self._inside(relative)
        fsync_write(path, data)
        return path

    def read_json(self, relative: str) -> Any:
        return json.loads(self._inside(relative).read_text())

    def _inside(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise LakeError(f"path {relative!r} escapes the lake root {self.root}")
        return path

    # ---- SQL catalog ---------------------------------------------------------------------------
    def view_sql(self, table: str) -> str:
        """A versioned table's view shows its current version only (``version`` comes from the path)."""
        base = self.table_path(table)
        current = self.current_version(table)
        if current is not None:
            base = base / f"version={current}"
        glob = str(base / "**" / "*.parquet").replace("'", "''")
        return (
            f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
        )

    def refresh_catalog(self) -> list[str]:
        """Rebuild ``catalog.duckdb`` with one view per table, atomically (build, then rename).

        Only called from the ``duckdb_writer`` pool; readers keep a consistent old file until they reopen.
        """
        import duckdb

        tables = self.tables()
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalog.", suffix=".duckdb", dir=self.root)
        os.close(fd)
        os.unlink(tmp)  # duckdb must create the file itself
        try:
            con = duckdb.connect()
            con.execute(f"ATTACH '{tmp}' AS catalog (STORAGE_VERSION '{CATALOG_STORAGE_VERSION}')")
            for table in tables:
                con.execute(f'CREATE OR REPLACE VIEW catalog.main."{table}" AS {self.view_sql(table)}')
            con.execute("DETACH catalog")
            con.close()
            Path(tmp + ".wal").unlink(missing_ok=True)
            os.replace(tmp, self.catalog_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tables

    def connect(self):
        """An in-memory DuckDB connection with a view per lake table (always current, takes no lock)."""
        import duckdb

        con = duckdb.connect()
        for table in self.tables():
            con.execute(f'CREATE VIEW "{table}" AS {self.view_sql(table)}')
        return con

    def sql(self, query: str) -> pl.DataFrame:
        con = self.connect()
        try:
            return con.sql(query).pl()
        finally:
            con.close()
