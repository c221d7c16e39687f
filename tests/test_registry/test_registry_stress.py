"""Acceptance: 8 processes register, promote, reject and roll back at random on a few keys for
``CLM_REGISTRY_STRESS_SECONDS`` (default 30) while a checker polls. Never two ACTIVE models for one key,
no model row lost, and status_history complete: replaying it gives every model's final status, and its
length is exactly the registrations plus the changes the workers saw succeed.

Workers are separate interpreters (this file run as a script), like Dagster's run processes.
"""

import collections
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from clm.models.artifacts import write_json, write_manifest
from clm.registry import (
    POOLED,
    TRANSITIONS,
    DuckDBRegistry,
    Lineage,
    ModelKey,
    NewModel,
    RegistryError,
    Status,
)

WORKERS = 8
KEYS = [ModelKey("lgbm", POOLED, 12), ModelKey("lgbm", "BTC/USD", 12), ModelKey("xgb", POOLED, 6)]
REPO = Path(__file__).resolve().parents[2]


def open_registry(root: Path) -> DuckDBRegistry:
    return DuckDBRegistry(root / "registry" / "registry.duckdb", artifact_root=root / "models",
                          active_policy_path=root / "active_policy.yaml", lock_timeout_s=120)


def new_model(root: Path, key: ModelKey, name: str) -> NewModel:
    version = name.ljust(12, "0") + "e" * 20
    folder = root / "models" / key.model_type / version
    write_json(folder, "model.json", {"name": name})
    manifest = write_manifest(folder, ["model.json"], engine=key.model_type)
    lineage = Lineage(training_window=("2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"),
                      feature_version="fv", feature_count=3, label_config={}, code_version="git:stress",
                      data_hash="0" * 64, seeds={}, config={}, artifact_checksums=manifest.files)
    return NewModel(model_type=key.model_type, version=version, scope=key.scope, horizon=key.horizon,
                    file_path=str(folder), lineage=lineage)


def worker(root: Path, index: int, seconds: float) -> dict:
    """Random operations; each success adds a known number of history rows because every key always has an
    ACTIVE model (seeded so, and nothing here retires an ACTIVE model without a replacement)."""
    registry = open_registry(root)
    rng = random.Random(index)
    ok, refused = collections.Counter(), collections.Counter()
    registered, changes, mine = [], 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        key = rng.choice(KEYS)
        roll = rng.random()
        try:
            if roll < 0.15:
                model = new_model(root, key, f"w{index}n{len(registered):06d}")
                record = registry.register(model, actor=f"worker-{index}")
                assert record.status == Status.SHADOW, record  # the key has an ACTIVE model
                registered.append(record.model_id)
                mine.append(model)  # its history row is counted with the registrations
                op = "register"
            elif roll < 0.20 and mine:
                record = registry.register(rng.choice(mine), actor=f"worker-{index}")  # idempotent: no row
                op = "re-register"
            elif roll < 0.55:
                shadows = registry.list_models(model_type=key.model_type, scope=key.scope, horizon=key.horizon,
                                               status=Status.SHADOW)
                if not shadows:
                    continue
                registry.promote(rng.choice(shadows).model_id, actor=f"worker-{index}")
                changes += 2  # the challenger ACTIVE, the champion RETIRED
                op = "promote"
            elif roll < 0.90:
                registry.rollback(key, actor=f"worker-{index}")
                changes += 2
                op = "rollback"
            else:
                shadows = registry.list_models(model_type=key.model_type, scope=key.scope, horizon=key.horizon,
                                               status=Status.SHADOW)
                if not shadows:
                    continue
                registry.set_status(rng.choice(shadows).model_id, Status.REJECTED, actor=f"worker-{index}")
                changes += 1
                op = "reject"
            ok[op] += 1
        except RegistryError as exc:  # raced: nothing to roll back to, or the model changed since it was listed
            refused[type(exc).__name__] += 1
    return {"ok": dict(ok), "refused": dict(refused), "registered": registered, "changes": changes}


def checker(registry: DuckDBRegistry, stop: threading.Event, seen: dict) -> None:
    while not stop.is_set():
        try:
            active = registry.list_models(status=Status.ACTIVE)
            per_key = collections.Counter(record.key for record in active)
            if any(n > 1 for n in per_key.values()) or set(per_key) != set(KEYS):
                seen["violations"].append({str(k): n for k, n in per_key.items()})
            mirror = yaml.safe_load(registry.active_policy_path.read_text())  # never half-written
            if set(mirror["active"]) != {str(k) for k in KEYS}:
                seen["violations"].append(mirror["active"])
            seen["polls"] += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test, not swallowed
            seen["errors"].append(repr(exc))
        time.sleep(0.05)


def replay(history, records) -> None:
    """From registration on, every model's changes chain up to its final status, each allowed by TRANSITIONS,
    and applying them in commit order never puts two ACTIVE models on one key."""
    status, key_of = {}, {r.model_id: r.key for r in records}
    active = collections.defaultdict(set)
    for change in history:
        if change.from_status is None:
            assert change.model_id not in status, change
        else:
            assert status[change.model_id] == change.from_status, change
            assert change.to_status in TRANSITIONS[change.from_status], change
            active[key_of[change.model_id]].discard(change.model_id)
        status[change.model_id] = change.to_status
        if change.to_status == Status.ACTIVE:
            active[key_of[change.model_id]].add(change.model_id)
            assert len(active[key_of[change.model_id]]) == 1, change
    assert status == {r.model_id: r.status for r in records}


def test_eight_processes_never_break_the_registry(tmp_path):
    seconds = float(os.environ.get("CLM_REGISTRY_STRESS_SECONDS", "30"))
    root = tmp_path / "lake"
    registry = open_registry(root)
    seeded = [registry.register(new_model(root, key, f"seed{i}{n}")) for i, key in enumerate(KEYS) for n in range(2)]
    assert {r.key for r in seeded if r.status == Status.ACTIVE} == set(KEYS)

    seen = {"violations": [], "errors": [], "polls": 0}
    stop = threading.Event()
    watch = threading.Thread(target=checker, args=(registry, stop, seen), daemon=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, __file__, str(root), str(i), str(seconds)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(WORKERS)]
    watch.start()
    try:
        outputs = [p.communicate(timeout=seconds + 300) for p in procs]
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
        watch.join(timeout=30)
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    assert seen["errors"] == [] and seen["violations"] == []
    assert seen["polls"] >= 3
    ok, refused = collections.Counter(), collections.Counter()
    for report in reports:
        ok.update(report["ok"])
        refused.update(report["refused"])
    print(f"{seconds:g} s, {WORKERS} workers: ok {dict(ok)}, refused {dict(refused)}, checker polls {seen['polls']}")
    assert ok["promote"] > 0 and ok["rollback"] > 0 and ok["register"] > 0, reports

    records = registry.list_models()
    registered = [r.model_id for r in seeded] + [m for report in reports for m in report["registered"]]
    assert len(registered) == len(set(registered))
    assert sorted(r.model_id for r in records) == sorted(registered)  # no row lost, none invented
    per_key = collections.Counter(r.key for r in records if r.status == Status.ACTIVE)
    assert per_key == {key: 1 for key in KEYS}

    history = registry.history()
    assert [h.event_id for h in history] == list(range(1, len(history) + 1))
    assert len(history) == len(registered) + sum(report["changes"] for report in reports)
    replay(history, records)

    mirror = yaml.safe_load(registry.active_policy_path.read_text())
    assert {k: v["model_id"] for k, v in mirror["active"].items()} == {
        str(r.key): r.model_id for r in records if r.status == Status.ACTIVE}
    assert [(h["model_id"], h["to"]) for h in mirror["history"]] == [
        (h.model_id, h.to_status.value) for h in history[-200:]]


if __name__ == "__main__":
    root_arg, index_arg, seconds_arg = sys.argv[1:4]
    print(json.dumps(worker(Path(root_arg), int(index_arg), float(seconds_arg))), flush=True)
