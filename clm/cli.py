"""``clm``: run the asset graph through Dagster, query the lake, print summaries.

The CLI never imports dagster: it drives the ``dagster`` command, so every run is a real Dagster
run with its history, logs and metadata in the instance at ``DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from clm.data import ingest
from clm.lake import Lake, LakeError
from clm.models.artifacts import ArtifactError
from clm.registry import cli as models_cli
from clm.registry.base import RegistryError
from clm.rl import cli as policies_cli

RUN_CONFIG = {
    "execution": {"config": {"in_process": {}}},
    "loggers": {"console": {"config": {"log_level": "INFO"}}},
}


def _dagster_bin() -> str:
    local = Path(sys.executable).with_name("dagster")
    found = str(local) if local.exists() else shutil.which("dagster")
    if not found:
        raise SystemExit("the 'dagster' command is not installed in this environment (run 'make run' to set up .venv)")
    return found


# everything but the RL reset, which answers a regime change (regime_sensor), not a data refresh
DEFAULT_SELECTION = "not group:rl"


def run_graph(source: str, lake: Lake, *, selection: str = DEFAULT_SELECTION) -> int:
    """Materialise the whole graph for the source's date range as one in-process Dagster run."""
    from clm.data.sources import source_date_range

    if source not in ("synthetic", "landing"):
        source = str(Path(source).expanduser().resolve())
    span = source_date_range(source, lake)
    if span is None:
        print(f"clm: source {source!r} has no readable bars; nothing to ingest", file=sys.stderr)
        return 2
    start, end = span
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("clm: DAGSTER_HOME is not set; run history will not be kept (the Makefile sets it)", file=sys.stderr)
    elif not Path(home).is_dir():
        print(f"clm: DAGSTER_HOME {home} does not exist; 'make run' (or 'make home') creates it with the "
              "instance settings in dagster.yaml", file=sys.stderr)
        return 2
    env = {**os.environ, "CLM_SOURCE": source, "CLM_LAKE": str(lake.root)}
    cmd = [_dagster_bin(), "asset", "materialize", "-m", "definitions", "--select", selection,
           "--partition-range", f"{start.isoformat()}...{end.isoformat()}", "--config-json", json.dumps(RUN_CONFIG)]
    print(f"clm: materialising {selection!r} for {start} .. {end} from source {source!r} into {lake.root}", flush=True)
    started = time.perf_counter()
    code = subprocess.call(cmd, env=env)
    print(f"clm: dagster run finished with exit code {code} in {time.perf_counter() - started:.1f}s", flush=True)
    return code


def table_counts(lake: Lake) -> dict[str, int]:
    counts = {}
    for table in lake.tables():
        counts[table] = lake.scan(table).select(pl.len()).collect().item()
    return counts


def _feature_lines(lake: Lake) -> list[str]:
    version = lake.current_version("features")
    if version is None:
        return []
    manifest = lake.version_manifest("features", version)
    stats = lake.scan("features").select(pl.len().alias("rows"), pl.col("warm").sum().alias("warm")).collect()
    lines = [
        f"  features:           version {version} ({len(manifest['features'])} features: "
        f"{', '.join(manifest['sets'])}); {stats['rows'][0]:,} rows, {stats['warm'][0]:,} warm; "
        f"look-back {manifest['lookback_days']} days",
    ]
    others = [v for v in lake.versions("features") if v != version]
    if others:
        lines.append(f"    older versions kept: {', '.join(others)}")
    if lake.has_table("labels"):
        labels = lake.scan("labels")
        horizons = sorted(int(c.rsplit("_", 1)[1]) for c in labels.collect_schema() if c.startswith("forward_return_"))
        valid = labels.select(
            pl.len().alias("rows"), *(pl.col(f"forward_return_{h}").is_not_null().sum().alias(str(h)) for h in horizons)
        ).collect()
        shares = ", ".join(f"{h} bars {valid[str(h)][0] / max(1, valid['rows'][0]):.1%}" for h in horizons)
        lines.append(f"  labels:             {valid['rows'][0]:,} rows; valid forward returns: {shares}")
    try:
        regimes = lake.read_json("reports/regime_map.json")
    except FileNotFoundError:
        return lines
    scores = ", ".join(f"{s['level']} {s['balanced_accuracy']:.3f}" for s in regimes["scores"])
    lines.append(
        f"  regimes:            market now {regimes['last_market_regime']}, {regimes['market_changes']} changes; "
        + (f"balanced accuracy vs truth: {scores}" if scores else "no ground truth to score against")
        + " (reports/regime_map.md)"
    )
    return lines


def _training_lines(lake: Lake) -> list[str]:
    if not lake.has_table("evaluation"):
        return []
    table = lake.read("evaluation").sort("engine")
    lines = ["  out-of-sample, net of costs (purged walk-forward; docs/training.md):"]
    for row in table.iter_rows(named=True):
        def fmt(key: str, spec: str = ".3f") -> str:
            value = row.get(key)
            return "n/a" if value is None else format(value, spec)
        lines.append(
            f"    {row['engine']:<22}hit {fmt('directional_accuracy')}  IC {fmt('ic')}  Sharpe {fmt('model_sharpe', '.2f')}"
            f" (buy&hold {fmt('baseline_buy_and_hold_sharpe', '.2f')}, momentum {fmt('baseline_momentum_sign_sharpe', '.2f')})"
            f"  DSR {fmt('model_dsr', '.2f')}"
        )
    if lake.has_table("decision_log"):
        actions = lake.scan("decision_log").group_by("action").len().sort("action").collect()
        lines.append("    consensus decisions: " + ", ".join(f"{a} {n:,}" for a, n in actions.iter_rows()))
    return lines


def _registry_lines(lake: Lake) -> list[str]:
    from clm.registry import Status, open_registry

    if not lake.registry_path.exists():
        return []
    records = open_registry(lake).list_models()
    counts = {s: sum(r.status == s for r in records) for s in Status}
    lines = ["  model registry:     " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
             + " (clm models list; active_policy.yaml)"]
    for r in sorted((r for r in records if r.status == Status.ACTIVE), key=lambda r: str(r.key)):
        lines.append(f"    champion {str(r.key):<36}{r.model_id}")
    reports = sorted(lake.reports_dir.glob("training_run_*.md"), key=lambda p: p.stat().st_mtime)
    if reports:
        lines.append(f"  training report:    {reports[-1]}")
    return lines


def _verdict_part(report: dict, baseline: str) -> str:
    """The clause of the offline run's verdict about one baseline ('beats fixed-size by ... (95% CI ..., significant)')."""
    text = report["evaluation"]["verdict"].split(": ", 1)[-1]
    return next((part for part in text.split("; ") if f" {baseline} by" in part), "")


def _policy_lines(lake: Lake) -> list[str]:
    """The newest offline RL training run: its held-out replay against the baselines (clm.rl.offline)."""
    reports = sorted(lake.policies_dir.glob("offline-*/training_report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return []
    try:
        report = json.loads(reports[-1].read_text())
        policies = report["evaluation"]["policies"]
        held = report["data"]["held_out"]["trades"]
        verdict = report["evaluation"]["verdict"].split(":")[0].removeprefix("the agent ")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"  RL policies:        {reports[-1]} cannot be read: {exc}"]

    def net(name: str) -> str:
        value = (policies.get(name) or {}).get("total_net_return")
        return "n/a" if value is None else f"{value:+.2%}"

    agent_net = (policies.get("agent") or {}).get("total_net_return")
    if agent_net is not None and agent_net < 0:
        verdict += ", and it lost money"  # beating losing baselines is no profit
    clauses = {name: _verdict_part(report, name) for name in ("fixed-size", "random")}
    significance = "; ".join(
        f"vs {name}: {'not significant' if 'not significant' in part else 'significant'}"
        for name, part in clauses.items() if part
    )
    return [f"  RL policies:        newest offline run, held-out replay of {held:,} candidate trades net of costs: "
            f"agent {net('agent')}, fixed-size {net('fixed_size')}, random {net('random')}: the agent {verdict}"
            + (f" ({significance})" if significance else ""),
            f"    report: {reports[-1]} (clm policies list)"]


def summary_text(lake: Lake) -> str:
    try:
        report = lake.read_json(ingest.INTEGRITY_REPORT)
    except FileNotFoundError:
        return f"no integrity report in {lake.root} yet: run 'make run' first"
    totals = report.get("totals", {})
    lines = [
        "CLM summary",
        f"  lake:               {lake.root}",
        f"  symbols:            {totals.get('symbols', 0):,}",
        f"  bars:               {totals.get('bars', 0):,}",
        f"  filled bars:        {totals.get('filled_bars', 0):,}",
        f"  gaps filled:        {totals.get('gaps_filled', 0):,}",
        f"  segment breaks:     {totals.get('gaps_segment_breaks', 0):,}",
        f"  outliers flagged:   {totals.get('outliers', 0):,}",
        f"  vendor mismatches:  {totals.get('vendor_mismatches', 0):,}",
        f"  quarantined rows:   {totals.get('quarantined', 0):,}",
    ]
    for reason, count in sorted(report.get("quarantined_by_reason", {}).items()):
        lines.append(f"    {reason:<32}{count:,}")
    if lake.has_table(ingest.QUARANTINE):
        rejected = lake.read(ingest.QUARANTINE).filter(pl.col("reason") == "file_error").sort("source_file")
        if rejected.height:
            lines.append("  files rejected:")
            lines += [f"    {message}" for message in rejected["value"].to_list()]
    breaks = report.get("segment_breaks", [])
    if breaks:
        lines.append("  segment breaks (gaps too long to fill):")
        for b in breaks:
            lines.append(
                f"    {b['symbol']:<14}{b['gap_start']} -> {b['gap_end']}  {b['missing_bars']} bars missing"
                f" ({b['minutes']:g} min)"
            )
    try:
        dnt = lake.read("do_not_trade")
    except LakeError:
        dnt = None
    if dnt is not None and dnt.height:
        lines.append("  do not trade:")
        for row in dnt.iter_rows(named=True):
            lines.append(f"    {row['symbol']:<14}{row['reason']}")
    lines += _feature_lines(lake)
    lines += _training_lines(lake)
    lines += _registry_lines(lake)
    lines += _policy_lines(lake)
    lines.append("  tables written:")
    counts = table_counts(lake)
    width = max((len(t) for t in counts), default=0) + 2
    for table, count in counts.items():
        lines.append(f"    {table:<{width}}{count:,} rows")
    lines.append(f"  query: clm sql \"select symbol, count(*) from candles group by 1\"  (or duckdb {lake.catalog_path})")
    return "\n".join(lines)


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    lake = Lake.from_env()
    try:
        frame = lake.sql(args.query)
    except duckdb.Error as exc:
        print(f"clm sql: {exc}\n(tables in {lake.root}: {', '.join(lake.tables()) or 'none'})", file=sys.stderr)
        return 2
    with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=200):
        print(frame)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    lake = Lake.from_env()
    source = args.source or os.environ.get("CLM_SOURCE") or "synthetic"
    code = run_graph(source, lake)
    if code == 0:
        print(summary_text(lake))
    return code


def cmd_ingest(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        print(f"clm ingest: {path} does not exist", file=sys.stderr)
        return 2
    args.source = str(path.resolve())
    return cmd_run(args)


def cmd_summary(args: argparse.Namespace) -> int:
    print(summary_text(Lake.from_env()))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    lake = Lake.from_env()
    tables = lake.refresh_catalog()
    print(f"{lake.catalog_path}: {len(tables)} views ({', '.join(tables)})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from clm.status import build_status, status_text

    report = build_status(Lake.from_env(), recent_jobs=args.jobs)
    print(json.dumps(report.to_dict(), indent=2) if args.json else status_text(report))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from clm import metrics

    lake = Lake.from_env()
    if args.textfile:
        print(f"clm metrics: wrote {metrics.write_textfile(args.textfile, lake)}")
        return 0
    if args.serve is None:
        print(metrics.exposition(lake), end="")
        return 0
    server, thread = metrics.serve(args.serve, host=args.host, lake=lake)
    print(f"clm metrics: serving http://{args.host}:{server.server_port}/metrics (Ctrl-C to stop)", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def cmd_halt(args: argparse.Namespace) -> int:
    from clm.automation.halt import clear_halt, read_halt, write_halt

    lake = Lake.from_env()
    if args.clear and args.reason:
        print("clm halt: --clear and --reason exclude each other", file=sys.stderr)
        return 2
    if args.clear:
        previous = read_halt(lake)
        if clear_halt(lake):
            print(f"clm halt: cleared ({lake.halt_path} removed; it said: {(previous or {}).get('reason')}); "
                  "serving trades again")
        else:
            print(f"clm halt: trading was not halted ({lake.halt_path} does not exist)")
        return 0
    if args.reason:
        write_halt(lake, args.reason, source="cli")
        print(f"clm halt: trading halted ({lake.halt_path}): {args.reason}")
        return 0
    state = read_halt(lake)
    if state is None:
        print(f"trading is not halted ({lake.halt_path} does not exist)")
    else:
        print(f"TRADING HALTED: {state['reason']}")
        for key in ("source", "written_at", "details", "previous"):
            value = state.get(key)
            if value:
                print(f"  {key}: {value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)}")
        print(f"  file: {lake.halt_path}\n  resume with: clm halt --clear")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sql", help="run a SQL query over the lake's tables (DuckDB)")
    p.add_argument("query")
    p.add_argument("--max-rows", type=int, default=50)
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("run", help="materialise the whole asset graph for a source (default: CLM_SOURCE or synthetic)")
    p.add_argument("--source", help="'synthetic', 'landing' or a path")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ingest", help="ingest a file or folder of market data through the asset graph")
    p.add_argument("path")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("summary", help="print the summary of what the lake holds")
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("catalog", help="rebuild the DuckDB catalog of views (normally done by the lake_catalog asset)")
    p.set_defaults(func=cmd_catalog)
    p = sub.add_parser("status", help="at a glance: champions, challengers and their shadow progress, last and next "
                                      "retrain, drift, halt, RL versions, recent jobs")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.add_argument("--jobs", type=int, default=10, help="recent jobs to list (default 10)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("metrics", help="Prometheus metrics of the registry and lake: print, --serve or --textfile")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--serve", type=int, metavar="PORT", help="serve /metrics on HOST:PORT until stopped")
    out.add_argument("--textfile", metavar="PATH", help="write them for node_exporter's textfile collector")
    p.add_argument("--host", default="127.0.0.1", help="address --serve binds (default 127.0.0.1)")
    p.set_defaults(func=cmd_metrics)
    p = sub.add_parser("halt", help="show the trading halt; --clear lifts it, --reason sets one")
    p.add_argument("--clear", action="store_true", help="remove the halt file: serving trades again")
    p.add_argument("--reason", help="halt trading now, with this reason")
    p.set_defaults(func=cmd_halt)
    models_cli.add_parser(sub)
    policies_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return 0
    except (LakeError, FileNotFoundError, ValueError, RegistryError, ArtifactError) as exc:
        command = " ".join(filter(None, [args.command, getattr(args, "models_command", None),
                                         getattr(args, "policies_command", None)]))
        print(f"clm {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
