"""Lineage facts computed at training time: which code and which data made a model."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from clm.models.artifacts import read_manifest
from clm.registry.base import Lineage, NewModel

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the clm package


@functools.cache
def source_hash(root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the package's Python sources (relative path and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def code_version(root: Path = PACKAGE_ROOT) -> str:
    """``git:<commit>`` (``-dirty`` when the package has uncommitted changes) in a checkout, else
    ``clm-<package version>+src.<source hash>`` (an installed copy has no git history)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            version = metadata.version("clm")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return f"clm-{version}+src.{source_hash(root)[:16]}"
    return f"git:{commit}" + (f"-dirty+src.{source_hash(root)[:16]}" if dirty else "")


def data_hash(frame: pl.DataFrame, keys: tuple[str, ...] = ("symbol", "timestamp")) -> str:
    """sha256 of the rows in key order: the same training rows give the same hash (for one polars
    version, whose row hashing this uses; the version is part of the hash input)."""
    ordered = frame.sort([k for k in keys if k in frame.columns]) if frame.height else frame
    digest = hashlib.sha256(f"polars {pl.__version__}; columns {ordered.columns}".encode())
    for seed in (0, 1):  # two independent 64-bit row hashes
        digest.update(ordered.hash_rows(seed=seed).to_numpy().tobytes())
    return digest.hexdigest()


def artifact_model(
    *,
    model_type: str,
    version: str,
    scope: str,
    horizon: int,
    folder: str | Path,
    training_window: tuple[str, str],
    feature_version: str | None,
    feature_count: int,
    label_config: Mapping[str, Any],
    data_hash: str,
    seeds: Mapping[str, int],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    notes: str = "",
) -> NewModel:
    """What ``Registry.register`` takes for one artefact folder: its lineage completed with the code version
    and the sha256 of every file its ``manifest.json`` lists (the manifest is read, not trusted blindly:
    the registry refuses a folder that does not exist, and loaders verify every file before use)."""
    lineage = Lineage(
        training_window=training_window, feature_version=feature_version, feature_count=feature_count,
        label_config=label_config, code_version=code_version(), data_hash=data_hash, seeds=seeds, config=config,
        artifact_checksums=read_manifest(Path(folder)).files,
    )
    return NewModel(model_type=model_type, version=version, scope=scope, horizon=horizon, file_path=str(folder),
                    lineage=lineage, metrics=dict(metrics or {}), notes=notes)
