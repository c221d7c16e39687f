"""The landing folder: which files are new, and which daily partitions they touch."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from clm.data.sources.files import SUPPORTED_SUFFIXES, file_time_range
from clm.lake import fsync_write


@dataclass
class LandingScan:
    new_files: list[str]  # paths relative to the landing folder
    first_date: dt.date | None
    last_date: dt.date | None  # inclusive
    rejected: dict[str, str] = field(default_factory=dict)  # relative path -> reason
    cursor: dict[str, str] = field(default_factory=dict)

    @property
    def run_key(self) -> str:
        digest = hashlib.sha256("\n".join(f"{p}={self.cursor[p]}" for p in self.new_files).encode())
        return f"landing-{digest.hexdigest()[:16]}"


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def _candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def scan_landing(folder: Path, cursor: dict[str, str]) -> LandingScan:
    """Files added or changed since ``cursor`` and the date range their bars cover.

    A file with no readable bars is reported in ``rejected`` (the caller moves it aside) and never
    blocks the others.
    """
    new_cursor = dict(cursor)
    new_files: list[str] = []
    rejected: dict[str, str] = {}
    first: dt.date | None = None
    last: dt.date | None = None
    for path in _candidates(folder):
        rel = path.relative_to(folder).as_posix()
        stamp = _stamp(path)
        if cursor.get(rel) == stamp:
            continue
        if not path.name.lower().endswith(SUPPORTED_SUFFIXES):
            rejected[rel] = f"unsupported file type (supported: {', '.join(SUPPORTED_SUFFIXES)})"
            continue
        try:
            span = file_time_range(path)
        except Exception as exc:  # the reason goes to the operator; the sensor carries on
            span = None
            reason = f"unreadable: {exc}"
        else:
            reason = "no readable bars"
        if span is None:
            rejected[rel] = reason
            continue
        new_cursor[rel] = stamp
        new_files.append(rel)
        lo, hi = span[0].date(), span[1].date()
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    return LandingScan(new_files, first, last, rejected, new_cursor)


def reject_file(folder: Path, rejected_dir: Path, relative: str, reason: str) -> Path:
    """Move a file out of ``folder`` into ``rejected_dir`` with a ``.reason.txt`` next to it (landing and
    signal files alike). A symbolic link is moved itself, never the file it points to, which may lie anywhere."""
    root = folder.resolve()
    given = folder / relative
    parent = given.parent.resolve()
    if not parent.is_relative_to(root) or given.name in ("", ".", ".."):
        raise ValueError(f"{relative!r} is outside {folder}")
    source = parent / given.name
    target = rejected_dir / source.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), target)
    fsync_write(target.with_name(target.name + ".reason.txt"), (reason + "\n").encode())
    return target
