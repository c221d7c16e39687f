"""Champion export: one self-contained, checksummed folder per model, for whatever serves it elsewhere.

``exports/<model_type>/<version>/`` holds the model's artefact files (verified before copying), its
registry record and lineage, metrics, cost report, the regime map and gate, a decision-log sample,
the data-integrity report and ``manifest.json`` (version, training window, features hash, code
version, timestamp, sha256 of every other file). The folder is built beside its target and renamed
into place, so a reader sees the old export or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clm.lake import Lake, swap_dir_into_place
from clm.models.artifacts import canonical_json, json_safe, sha256_file, verify_manifest
from clm.registry.base import GATE_MODEL_TYPE, POOLED, ModelKey, ModelRecord, Registry, Status

EXPORT_MANIFEST = "manifest.json"
EXPORT_FORMAT_VERSION = 1
INTEGRITY_REPORT = "reports/data_integrity.json"
REGIME_MAP = "reports/regime_map.json"


@dataclass
class ExportPlan:
    target: Path
    files: dict[str, int] = field(default_factory=dict)  # relative name -> size in bytes

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def _record_payload(record: ModelRecord) -> dict[str, Any]:
    return json_safe({
        "model_id": record.model_id, "model_type": record.model_type, "version": record.version,
        "scope": record.scope, "horizon": record.horizon, "status": str(record.status),
        "created_at": record.created_at.isoformat(),
        "promoted_at": record.promoted_at.isoformat() if record.promoted_at else None,
        "training_data_range": dict(record.training_data_range), "feature_count": record.feature_count,
        "feature_version": record.feature_version, "notes": record.notes,
    })


def _documents(lake: Lake, registry: Registry, record: ModelRecord) -> dict[str, bytes]:
    """Every file of the export but the model's own artefacts and the manifest."""
    from clm.reports.tables import cost_report, decision_sample

    docs: dict[str, bytes] = {
        "model.json": canonical_json(_record_payload(record)),
        "lineage.json": canonical_json(json_safe(record.lineage.to_dict())),
        "metrics.json": canonical_json(json_safe(dict(record.metrics))),
    }
    if lake.has_table("costs"):
        costs = lake.scan("costs").filter(pl.col("engine") == record.model_type).collect()
        if costs.height:
            docs["cost_report.json"] = canonical_json(json_safe(
                cost_report(costs, [record.model_type], horizon=record.horizon)))
    for relative, name in ((REGIME_MAP, "regime_map.json"), (INTEGRITY_REPORT, "data_integrity.json")):
        path = lake.root / relative
        if path.is_file():
            docs[name] = path.read_bytes()
    gate = registry.active(ModelKey(GATE_MODEL_TYPE, POOLED, record.horizon))
    if gate is not None and (Path(gate.file_path) / "gate.json").is_file():
        verify_manifest(Path(gate.file_path))
        docs["regime_gate.json"] = (Path(gate.file_path) / "gate.json").read_bytes()
    if lake.has_table("decision_log"):
        decisions = lake.read("decision_log").drop("date", strict=False)
        if record.scope != POOLED:
            decisions = decisions.filter(pl.col("symbol") == record.scope)
        sample = decision_sample(decisions)
        buffer = io.BytesIO()
        sample.write_csv(buffer)
        docs["decision_log_sample.csv"] = buffer.getvalue()
    return docs


def export_model(lake: Lake, registry: Registry, record: ModelRecord, *, dry_run: bool = False,
                 now: dt.datetime | None = None) -> ExportPlan:
    """Write (or with ``dry_run`` only plan) the export of ``record``; returns what it holds."""
    if record.status in (Status.REJECTED,) or record.artifacts_pruned:
        why = "REJECTED" if record.status == Status.REJECTED else "its artefacts were pruned"
        raise ValueError(f"model {record.model_id} cannot be exported: {why}")
    source = Path(record.file_path)
    verify_manifest(source)  # a tampered or missing artefact file stops the export, naming it
    target = lake.export_dir(record.model_type, record.version)
    artefacts = sorted(p for p in source.rglob("*") if p.is_file())
    docs = _documents(lake, registry, record)
    plan = ExportPlan(target)
    for path in artefacts:
        plan.files[f"model/{path.relative_to(source).as_posix()}"] = path.stat().st_size
    for name, data in docs.items():
        plan.files[name] = len(data)
    manifest = {
        "format_version": EXPORT_FORMAT_VERSION,
        "model_id": record.model_id, "model_type": record.model_type, "version": record.version,
        "scope": record.scope, "horizon": record.horizon, "status": str(record.status),
        "training_window": list(record.lineage.training_window),
        "features_hash": record.feature_version, "feature_count": record.feature_count,
        "code_version": record.lineage.code_version, "data_hash": record.lineage.data_hash,
        "exported_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
    }
    if dry_run:
        plan.files[EXPORT_MANIFEST] = len(canonical_json({**manifest, "checksums": {n: "0" * 64 for n in plan.files}}))
        return plan
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for path in artefacts:
            dest = staging / "model" / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        for name, data in docs.items():
            (staging / name).write_bytes(data)
        checksums = {p.relative_to(staging).as_posix(): sha256_file(p)
                     for p in sorted(staging.rglob("*")) if p.is_file()}
        if {f"model/{n}": d for n, d in _artefact_digests(source).items()} != {
                k: v for k, v in checksums.items() if k.startswith("model/")}:
            raise ValueError(f"model {record.model_id}: artefact files changed while being exported; try again")
        (staging / EXPORT_MANIFEST).write_bytes(canonical_json(json_safe({**manifest, "checksums": checksums})))
        plan.files[EXPORT_MANIFEST] = (staging / EXPORT_MANIFEST).stat().st_size
        for p in staging.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        swap_dir_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan


def _artefact_digests(source: Path) -> dict[str, str]:
    return {p.relative_to(source).as_posix(): sha256_file(p) for p in sorted(source.rglob("*")) if p.is_file()}



def read_export_manifest(directory: Path) -> dict[str, Any]:
    """The export's manifest after checking every file it lists (a consumer's first call)."""
    manifest = json.loads((Path(directory) / EXPORT_MANIFEST).read_text())
    for name, digest in manifest["checksums"].items():
        path = Path(directory) / name
        if not path.resolve().is_relative_to(Path(directory).resolve()):
            raise ValueError(f"export manifest names a path outside the export: {name!r}")
        if not path.is_file():
            raise ValueError(f"export {directory}: file {name} is missing")
        if sha256_file(path) != digest:
            raise ValueError(f"export {directory}: file {name} does not match its checksum")
    return manifest
