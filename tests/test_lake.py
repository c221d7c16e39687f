import datetime as dt
import hashlib

import duckdb
import polars as pl
import pytest

from clm.lake import ALL_PARTITIONS, Lake, LakeError, TableNotFound

UTC = dt.timezone.utc


def _bars():
    return pl.DataFrame(
        {
            "symbol": ["AAA", "AAA", "BBB"],
            "timestamp": [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC)],
            "close": [1.0, 2.0, 3.0],
        }
    ).with_columns(date=pl.col("timestamp").dt.date())


def _digest(lake: Lake, table: str) -> dict[str, str]:
    return {str(p.relative_to(lake.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in lake.files(table)}


def test_hive_layout_and_round_trip(tmp_path):
    lake = Lake(tmp_path)
    info = lake.write_table("candles", _bars(), ["date", "symbol"])
    assert info["files_written"] == 3
    names = sorted(str(p.relative_to(tmp_path)) for p in lake.files("candles"))
    assert names == [
        "candles/date=2024-01-01/symbol=AAA/part-0.parquet",
        "candles/date=2024-01-01/symbol=BBB/part-0.parquet",
        "candles/date=2024-01-02/symbol=AAA/part-0.parquet",
    ]
    back = lake.read("candles").sort("symbol", "timestamp")
    assert back["close"].to_list() == [1.0, 2.0, 3.0]
    assert back.schema["date"] == pl.Date
    assert lake.read("candles", date=[dt.date(2024, 1, 2)]).height == 1


def test_rewrite_is_byte_identical_and_replaces(tmp_path):
    lake = Lake(tmp_path)
    lake.write_table("candles", _bars(), ["date", "symbol"])
    first = _digest(lake, "candles")
    lake.write_table("candles", _bars(), ["date", "symbol"])
    assert _digest(lake, "candles") == first
    # the owned day loses the symbol that is no longer produced; the other day is untouched
    only_aaa = _bars().filter(pl.col("symbol") == "AAA", pl.col("date") == dt.date(2024, 1, 1))
    info = lake.write_table("candles", only_aaa, ["date", "symbol"], replace=[dt.date(2024, 1, 1)])
    assert info["files_removed"] == 1
    assert lake.read("candles").height == 2
    # an owned day with no rows is emptied
    lake.write_table("candles", only_aaa.clear(), ["date", "symbol"], replace=[dt.date(2024, 1, 1)])
    assert lake.read("candles")["date"].to_list() == [dt.date(2024, 1, 2)]
    lake.write_table("candles", only_aaa, ["date", "symbol"], replace=ALL_PARTITIONS)
    assert lake.read("candles")["date"].to_list() == [dt.date(2024, 1, 1)]


def test_no_temp_files_left_and_failed_write_keeps_old(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    lake.write_table("t", pl.DataFrame({"a": [1]}))

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError):
        lake.write_table("t", pl.DataFrame({"a": [2]}))
    monkeypatch.undo()
    assert lake.read("t")["a"].to_list() == [1]
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["part-0.parquet"]


def test_unsafe_names_rejected(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(LakeError):
        lake.table_path("../etc")
    with pytest.raises(LakeError):
        lake.write_table("t", pl.DataFrame({"symbol": ["../x"], "a": [1]}), ["symbol"])
    with pytest.raises(LakeError):
        lake.write_json("../outside.json", {})
    with pytest.raises(TableNotFound):
        lake.scan("missing")


def test_catalog_views_readable_by_duckdb(tmp_path):
    lake = Lake(tmp_path)
    lake.write_table("candles", _bars(), ["date", "symbol"])
    lake.write_table("universe", pl.DataFrame({"symbol": ["AAA"]}))
    assert lake.refresh_catalog() == ["candles", "universe"]
    con = duckdb.connect(str(lake.catalog_path), read_only=True)
    rows = con.sql("select symbol, count(*) from candles group by 1 order by 1").fetchall()
    con.close()
    assert rows == [("AAA", 2), ("BBB", 1)]
    assert lake.sql("select count(*) as n from universe")["n"].item() == 1
    assert not list(tmp_path.glob(".catalog*"))


def test_from_env(tmp_path):
    assert Lake.from_env({"CLM_LAKE": str(tmp_path)}).root == tmp_path.resolve()
    assert Lake.from_env({}).root.name == "data_lake"
