"""``clm policies list|promote|rollback``: the RL policies in the model registry, from a terminal.

Thin: listing, promotion and rollback are ``clm models``' own commands (``clm.registry.cli``) restricted to
the policy model types (``rl_meta_strategy``, ``rl_sizing``); the one thing added is the link to the online
learner: a policy that becomes ACTIVE starts a new ``rl_versions`` version (``clm.rl.policies.activate_policy``).
``active_policy.yaml`` (the registry's mirror) lists the ACTIVE policies with every other champion, and their
status changes in its history.
"""

from __future__ import annotations

import argparse

from clm.registry import cli as models_cli
from clm.registry.base import POLICY_MODEL_TYPES, POOLED, ModelKey, Status

# registry metrics shown by `clm policies list` (the held-out replay of clm.rl.offline)
LIST_METRICS = (("heldout_total_net_return", "net", "+.2%"), ("vs_fixed_size_bps", "vs_fix", "+.2f"),
                ("vs_random_bps", "vs_rnd", "+.2f"))


def _policy(registry, model_id: str):
    record = registry.get(model_id)
    if record.model_type not in POLICY_MODEL_TYPES:
        raise ValueError(f"{model_id} is a {record.model_type} model, not an RL policy "
                         f"({', '.join(POLICY_MODEL_TYPES)}); use `clm models`")
    return record


def _activate(lake, registry, record) -> None:
    from clm.rl.policies import activate_policy
    from clm.rl.store import RLStoreError

    try:
        started = activate_policy(lake.policies_dir, registry, record)
    except RLStoreError as exc:
        raise ValueError(f"{record.model_id} is ACTIVE in the registry, but the online learner could not start "
                         f"from it: {exc}") from None
    print(f"online learner: {started.agent} continues from version {started.version} (from {record.model_id})")


def cmd_list(args: argparse.Namespace) -> int:
    from clm.rl.store import RLStore

    lake, registry = models_cli._open(args)
    status = [Status(s.upper()) for s in args.status] if args.status else None
    types = [args.type] if args.type else list(POLICY_MODEL_TYPES)
    records = sorted((r for t in types for r in registry.list_models(model_type=t, status=status)),
                     key=lambda r: r.created_at, reverse=True)
    if not records:
        print("no RL policies registered (the rl_policies asset trains them: `make run` or job rl_policy_training)")
        return 0
    print(models_cli.format_models(records, metrics=LIST_METRICS))
    print(f"{len(records)} policies, {sum(r.status == Status.ACTIVE for r in records)} ACTIVE "
          f"(mirror: {lake.active_policy_path})")
    store = RLStore(lake.policies_dir, registry)
    for agent in sorted({r.lineage.config.get("agent") for r in records if r.lineage.config.get("agent")}):
        current = store.current(agent)
        if current is not None:
            source = current.metrics.get("policy_model_id")
            print(f"online learner: {agent} at version {current.version}"
                  + (f" (started from {source})" if source else f" ({current.reason})"))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    lake, registry = models_cli._open(args)
    _policy(registry, args.model_id)
    models_cli.cmd_promote(args)
    _activate(lake, registry, registry.get(args.model_id))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    lake, registry = models_cli._open(args)
    models_cli.cmd_rollback(args)
    _activate(lake, registry, registry.active(ModelKey(args.model_type, args.scope, args.horizon)))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    policies = sub.add_parser("policies", help="RL policies trained offline: list, promote, rollback (as for models)")
    policies.add_argument("--registry-url",
                          help="registry backend (default: CLM_REGISTRY_URL, else DuckDB in the lake)")
    psub = policies.add_subparsers(dest="policies_command", required=True)
    p = psub.add_parser("list", help="registered policies with status, held-out replay results and lineage")
    p.add_argument("--status", action="append", choices=[s.lower() for s in Status] + list(Status),
                   help="only these statuses (repeatable)")
    p.add_argument("--type", choices=POLICY_MODEL_TYPES, help="only this policy type")
    p.set_defaults(func=cmd_list)
    p = psub.add_parser("promote", help="make a SHADOW policy ACTIVE (the current one RETIRED); the online "
                                        "learner continues from it")
    p.add_argument("model_id")
    p.add_argument("--note", default="", help="why (kept in status_history and active_policy.yaml)")
    p.set_defaults(func=cmd_promote)
    p = psub.add_parser("rollback", help="return a policy type to its previous ACTIVE policy; the online learner "
                                         "continues from it")
    p.add_argument("model_type", choices=POLICY_MODEL_TYPES)
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--note", default="")
    p.set_defaults(func=cmd_rollback, scope=POOLED)


__all__ = ["add_parser"]
