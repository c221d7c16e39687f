"""``clm models list|show|promote|rollback|retire|export``: the registry from a terminal.

Every change goes through ``clm.registry.Registry`` (one transaction, with its ``status_history`` row
and the ``active_policy.yaml`` mirror); a refused change prints why and exits 2 with the registry unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence

from clm.lake import Lake
from clm.registry.base import POOLED, ModelKey, ModelRecord, Status, active_forecasters

LIST_METRICS = (("directional_accuracy|oos_directional_accuracy", "hit", ".3f"), ("model_sharpe", "sharpe", ".2f"),
                ("model_dsr", "dsr", ".2f"))


def _open(args: argparse.Namespace):
    from clm.registry import open_registry

    lake = Lake.from_env()
    return lake, open_registry(lake, getattr(args, "registry_url", None) or os.environ.get("CLM_REGISTRY_URL"))


def _metric(record: ModelRecord, names: str, spec: str) -> str:
    """The first of ``a|b`` the record has (the evaluation's metric, else the training run's own)."""
    value = next((record.metrics[n] for n in names.split("|") if record.metrics.get(n) is not None), None)
    return "n/a" if value is None else format(value, spec)


def format_models(records: Iterable[ModelRecord], *, metrics: Sequence[tuple[str, str, str]] = LIST_METRICS) -> str:
    """One line per model; ``metrics``: (registry metric names ``a|b``, column header, format spec)."""
    records = list(records)
    if not records:
        return "no models registered (run 'make run' to train some)"
    header = (f"{'model_id':<44} {'key':<34} {'status':<8} {'created (UTC)':<17} "
              + " ".join(f"{short:>7}" for _, short, _ in metrics) + "  lineage")
    lines = [header]
    for r in records:
        window = r.lineage.training_window
        lineage = (f"data {window[0][:10]}..{window[1][:10]} features {str(r.feature_version or '-')[:10]} "
                   f"code {r.lineage.code_version[:18]}")
        lines.append(
            f"{r.model_id:<44} {str(r.key):<34} {r.status:<8} {r.created_at:%Y-%m-%d %H:%M} "
            + " ".join(f"{_metric(r, name, spec):>7}" for name, _, spec in metrics) + f"  {lineage}"
        )
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    _, registry = _open(args)
    status = [Status(s.upper()) for s in args.status] if args.status else None
    records = registry.list_models(model_type=args.type, horizon=args.horizon, status=status)
    print(format_models(records))
    active = [r for r in records if r.status == Status.ACTIVE]
    if records:
        print(f"{len(records)} models, {len(active)} ACTIVE")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, registry = _open(args)
    record = registry.get(args.model_id)
    payload = {
        "model_id": record.model_id, "key": str(record.key), "status": str(record.status),
        "version": record.version, "file_path": record.file_path, "file_size_bytes": record.file_size_bytes,
        "artifacts_pruned": record.artifacts_pruned, "created_at": record.created_at.isoformat(),
        "promoted_at": record.promoted_at.isoformat() if record.promoted_at else None,
        "retired_at": record.retired_at.isoformat() if record.retired_at else None,
        "training_data_range": dict(record.training_data_range), "feature_count": record.feature_count,
        "notes": record.notes, "metrics": dict(record.metrics), "lineage": record.lineage.to_dict(),
        "history": [
            {"at": h.changed_at.isoformat(), "from": str(h.from_status) if h.from_status else None,
             "to": str(h.to_status), "actor": h.actor, "reason": h.reason, **({"evidence": dict(h.evidence)}
                                                                              if h.evidence else {})}
            for h in registry.history(record.model_id)
        ],
    }
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    _, registry = _open(args)
    before = registry.get(args.model_id)
    previous = registry.active(before.key)
    record = registry.promote(args.model_id, note=args.note, actor="cli")
    print(f"{record.model_id} is now ACTIVE for {record.key}"
          + (f"; {previous.model_id} RETIRED" if previous and previous.model_id != record.model_id else ""))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    _, registry = _open(args)
    key = ModelKey(args.model_type, args.scope, args.horizon)
    current = registry.active(key)
    record = registry.rollback(key, note=args.note, actor="cli")
    print(f"{key}: back to {record.model_id}" + (f" ({current.model_id} RETIRED)" if current else ""))
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    _, registry = _open(args)
    record = registry.retire(args.model_id, note=args.note, actor="cli")
    print(f"{record.model_id} RETIRED")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clm.registry.export import export_model

    lake, registry = _open(args)
    if args.model_ids:
        records = [registry.get(model_id) for model_id in args.model_ids]
    else:
        records = active_forecasters(registry)
        if not records:
            print("clm models export: no ACTIVE model to export (run 'make run' first)", file=sys.stderr)
            return 2
    for record in records:
        plan = export_model(lake, registry, record, dry_run=args.dry_run)
        if args.dry_run:
            print(f"would write {plan.target} ({len(plan.files)} files, {plan.total_bytes:,} bytes):")
            for name, size in sorted(plan.files.items()):
                print(f"  {name:<48}{size:>12,}")
        else:
            print(f"exported {record.model_id} to {plan.target} ({len(plan.files)} files, {plan.total_bytes:,} bytes)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the model registry: list, show, promote, rollback, retire, export")
    models.add_argument("--registry-url", help="registry backend (default: CLM_REGISTRY_URL, else DuckDB in the lake)")
    msub = models.add_subparsers(dest="models_command", required=True)
    p = msub.add_parser("list", help="registered models with status, lineage and key metrics, newest first")
    p.add_argument("--status", action="append", choices=[s.lower() for s in Status] + list(Status),
                   help="only these statuses (repeatable)")
    p.add_argument("--type", help="only this model type (engine)")
    p.add_argument("--horizon", type=int)
    p.set_defaults(func=cmd_list)
    p = msub.add_parser("show", help="one model: record, metrics, lineage and status history (JSON)")
    p.add_argument("model_id")
    p.set_defaults(func=cmd_show)
    p = msub.add_parser("promote", help="make a SHADOW model ACTIVE (the current champion of its key is RETIRED)")
    p.add_argument("model_id")
    p.add_argument("--note", default="", help="why (kept in status_history and active_policy.yaml)")
    p.set_defaults(func=cmd_promote)
    p = msub.add_parser("rollback", help="return a key to its previous ACTIVE model")
    p.add_argument("model_type")
    p.add_argument("--scope", default=POOLED, help=f"'{POOLED}' (default) or a symbol")
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--note", default="")
    p.set_defaults(func=cmd_rollback)
    p = msub.add_parser("retire", help="retire an ACTIVE or SHADOW model")
    p.add_argument("model_id")
    p.add_argument("--note", default="")
    p.set_defaults(func=cmd_retire)
    p = msub.add_parser("export", help="write champions to exports/<model_type>/<version>/ (default: every ACTIVE model)")
    p.add_argument("model_ids", nargs="*")
    p.add_argument("--dry-run", action="store_true", help="write nothing; print what would be written")
    p.set_defaults(func=cmd_export)

