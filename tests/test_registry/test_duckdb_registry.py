"""The DuckDB registry against real files: statuses and their history, refusals that change nothing,
pruning, the active_policy.yaml mirror, the log tables, locking, and files the duckdb CLI can open."""

import datetime as dt
import fcntl
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from clm.lake import Lake
from clm.models.artifacts import write_json, write_manifest
from clm.registry import (
    LOG_TABLES,
    POOLED,
    DuckDBRegistry,
    InvalidTransition,
    Lineage,
    ModelKey,
    NewModel,
    RegistryError,
    Status,
    UnknownModel,
    duckdb_store,
    open_registry,
)

KEY = ModelKey("lgbm", POOLED, 12)


def make_model(root: Path, n: int, *, model_type: str = "lgbm", scope: str = POOLED, horizon: int = 12,
               folder: Path | None = None) -> NewModel:
    """A real artefact folder (files + manifest.json) and the NewModel a training run would hand over."""
    version = f"{n:012d}" + "f" * 52
    folder = folder or root / "models" / model_type / version
    write_json(folder, "model.json", {"weights": list(range(n + 1))})
    write_json(folder, "config.json", {"engine": model_type, "n": n})
    manifest = write_manifest(folder, ["model.json", "config.json"], engine=model_type)
    lineage = Lineage(
        training_window=("2024-01-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"), feature_version="fv-1",
        feature_count=31, label_config={"target": "return", "horizon": horizon}, code_version="git:abc",
        data_hash="d" * 64, seeds={"seed": n}, config={"engine": {"num_leaves": 31}}, artifact_checksums=manifest.files,
    )
    return NewModel(model_type=model_type, version=version, scope=scope, horizon=horizon, file_path=str(folder),
                    lineage=lineage, metrics={"oos_directional_accuracy": 0.5 + n / 100})


@pytest.fixture
def root(tmp_path):
    return tmp_path / "lake"


@pytest.fixture
def registry(root):
    return DuckDBRegistry(root / "registry" / "registry.duckdb", artifact_root=root / "models",
                          active_policy_path=root / "active_policy.yaml")


def snapshot(registry: DuckDBRegistry):
    """Everything a caller can observe, to show a refused call left it all as it was."""
    policy = registry.active_policy_path
    return (registry.list_models(), registry.history(), {t: registry.rows(t) for t in LOG_TABLES},
            registry.rows("model_registry"), policy.read_bytes() if policy and policy.exists() else None)


def policy(registry: DuckDBRegistry) -> dict:
    return yaml.safe_load(registry.active_policy_path.read_text())


# ---- registration -------------------------------------------------------------------------------------
def test_first_model_of_a_key_is_active_later_ones_shadow(registry, root):
    first = registry.register(make_model(root, 1))
    second = registry.register(make_model(root, 2))
    other_key = registry.register(make_model(root, 3, scope="AAPL"))
    assert (first.status, second.status, other_key.status) == (Status.ACTIVE, Status.SHADOW, Status.ACTIVE)
    assert first.promoted_at is not None and second.promoted_at is None
    assert first.created_at.tzinfo == dt.UTC and first.promoted_at.tzinfo == dt.UTC
    assert registry.active(KEY) == first
    folder = Path(first.file_path)
    assert folder.is_absolute() and first.file_size_bytes == sum(p.stat().st_size for p in folder.iterdir())
    assert first.lineage == make_model(root, 1).lineage
    assert first.training_data_range == {"start": "2024-01-01T00:00:00+00:00", "end": "2024-03-01T00:00:00+00:00"}
    assert (first.feature_count, first.feature_version) == (31, "fv-1")
    assert first.training_config == {"engine": {"num_leaves": 31}}
    history = registry.history()
    assert [(h.model_id, h.from_status, h.to_status) for h in history] == [
        (first.model_id, None, Status.ACTIVE), (second.model_id, None, Status.SHADOW),
        (other_key.model_id, None, Status.ACTIVE)]
    assert [h.event_id for h in history] == [1, 2, 3] and history[0].actor == "training"


def test_register_is_idempotent_by_model_id(registry, root):
    model = make_model(root, 1)
    first = registry.register(model)
    before = snapshot(registry)
    assert registry.register(model, actor="someone else") == first
    assert snapshot(registry) == before


def test_register_refuses_an_id_collision_and_a_missing_folder(registry, root):
    model = make_model(root, 1)
    registry.register(model)
    before = snapshot(registry)
    clash = NewModel(**{**model.__dict__, "version": model.version[:12] + "0" * 52})
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(clash)
    missing = NewModel(**{**make_model(root, 2).__dict__, "file_path": str(root / "models" / "lgbm" / "nope")})
    with pytest.raises(RegistryError, match=str(root / "models" / "lgbm" / "nope")):
        registry.register(missing)
    with pytest.raises(RegistryError, match="horizon"):
        registry.register(NewModel(**{**make_model(root, 3).__dict__, "horizon": 0}))
    assert snapshot(registry) == before


def test_list_models_filters_and_orders_newest_first(registry, root):
    a = registry.register(make_model(root, 1))
    b = registry.register(make_model(root, 2))
    c = registry.register(make_model(root, 3, model_type="xgb", horizon=6))
    assert [r.model_id for r in registry.list_models()] == [c.model_id, b.model_id, a.model_id]
    assert [r.model_id for r in registry.list_models(model_type="lgbm")] == [b.model_id, a.model_id]
    assert [r.model_id for r in registry.list_models(status=Status.ACTIVE)] == [c.model_id, a.model_id]
    assert [r.model_id for r in registry.list_models(status=[Status.SHADOW, "RETIRED"])] == [b.model_id]
    assert registry.list_models(horizon=6, scope=POOLED) == [c]
    assert registry.list_models(status=[]) == []
    with pytest.raises(RegistryError, match="unknown status 'LIVE'"):
        registry.list_models(status="LIVE")


# ---- status changes -----------------------------------------------------------------------------------
def test_promote_retires_the_previous_active_in_one_step(registry, root):
    a = registry.register(make_model(root, 1))
    b = registry.register(make_model(root, 2))
    promoted = registry.promote(b.model_id, note="wins the shadow test", actor="shadow", evidence={"sharpe": 1.4})
    retired = registry.get(a.model_id)
    assert promoted.status == Status.ACTIVE and retired.status == Status.RETIRED
    assert retired.retired_at == promoted.promoted_at  # one transaction, one clock
    last = registry.history()[-2:]
    assert [(h.model_id, h.from_status, h.to_status, h.actor) for h in last] == [
        (a.model_id, Status.ACTIVE, Status.RETIRED, "shadow"), (b.model_id, Status.SHADOW, Status.ACTIVE, "shadow")]
    assert last[1].evidence["sharpe"] == 1.4 and "wins the shadow test" in last[1].reason
    assert registry.active(KEY) == promoted


def test_rollback_walks_back_through_promotions(registry, root):
    a, b, c = (registry.register(make_model(root, n)) for n in (1, 2, 3))
    registry.promote(b.model_id)
    registry.promote(c.model_id)
    assert registry.rollback(KEY, note="c misbehaves").model_id == b.model_id
    assert registry.get(c.model_id).status == Status.RETIRED
    # c was rolled back from: never a rollback target again, so the next rollback reaches a, not c.
    assert registry.rollback(KEY).model_id == a.model_id
    assert registry.get(a.model_id).retired_at is None and registry.active(KEY).model_id == a.model_id
    before = snapshot(registry)
    with pytest.raises(RegistryError, match="no earlier ACTIVE model"):
        registry.rollback(KEY)
    assert snapshot(registry) == before
    # promoting again makes the replaced model a rollback target again
    d = registry.register(make_model(root, 4))
    registry.promote(d.model_id)
    assert registry.rollback(KEY).model_id == a.model_id


def test_rollback_skips_models_retired_by_hand_and_needs_kept_artefacts(registry, root):
    a, b = (registry.register(make_model(root, n)) for n in (1, 2))
    registry.promote(b.model_id)
    registry.retire(b.model_id, note="broken feed")  # no ACTIVE model now; b was withdrawn on purpose
    assert registry.active(KEY) is None
    assert registry.rollback(KEY).model_id == a.model_id
    with pytest.raises(RegistryError, match="no earlier ACTIVE model"):
        registry.rollback(KEY)


def test_rollback_and_promote_refuse_missing_artefacts(registry, root):
    a, b, c = (registry.register(make_model(root, n)) for n in (1, 2, 3))
    registry.promote(b.model_id)
    for name in os.listdir(a.file_path):
        os.unlink(Path(a.file_path) / name)
    os.rmdir(a.file_path)
    for name in os.listdir(c.file_path):
        os.unlink(Path(c.file_path) / name)
    os.rmdir(c.file_path)
    before = snapshot(registry)
    with pytest.raises(RegistryError, match=f"{a.model_id}: its artefact folder .* is missing"):
        registry.rollback(KEY)
    with pytest.raises(RegistryError, match=f"{c.model_id}: its artefact folder .* is missing"):
        registry.promote(c.model_id)
    assert snapshot(registry) == before


def test_rejected_is_final(registry, root):
    registry.register(make_model(root, 1))
    b = registry.register(make_model(root, 2))
    rejected = registry.set_status(b.model_id, Status.REJECTED, note="loses", actor="shadow", evidence={"p": 0.2})
    assert rejected.status == Status.REJECTED
    before = snapshot(registry)
    for target in Status:
        with pytest.raises(InvalidTransition, match="none \\(final\\)"):
            registry.set_status(b.model_id, target)
    with pytest.raises(InvalidTransition):
        registry.promote(b.model_id)
    with pytest.raises(InvalidTransition):
        registry.retire(b.model_id)
    assert snapshot(registry) == before


def test_set_status_active_goes_through_promote(registry, root):
    a = registry.register(make_model(root, 1))
    b = registry.register(make_model(root, 2))
    assert registry.set_status(b.model_id, Status.ACTIVE).status == Status.ACTIVE
    assert registry.get(a.model_id).status == Status.RETIRED


@pytest.mark.parametrize("call, error, message", [
    (lambda r, ids: r.get("nope-h1-000"), UnknownModel, "'nope-h1-000'.*clm models list"),
    (lambda r, ids: r.promote("nope-h1-000"), UnknownModel, "nope-h1-000"),
    (lambda r, ids: r.retire("nope-h1-000"), UnknownModel, "nope-h1-000"),
    (lambda r, ids: r.set_status("nope-h1-000", Status.REJECTED), UnknownModel, "nope-h1-000"),
    (lambda r, ids: r.update_metrics("nope-h1-000", {"a": 1}), UnknownModel, "nope-h1-000"),
    (lambda r, ids: r.history("nope-h1-000"), UnknownModel, "nope-h1-000"),
    (lambda r, ids: r.promote(ids["active"]), InvalidTransition, "from ACTIVE to ACTIVE"),
    (lambda r, ids: r.promote(ids["retired"]), InvalidTransition, "only by a rollback"),
    (lambda r, ids: r.set_status(ids["retired"], Status.ACTIVE), InvalidTransition, "only by a rollback"),
    (lambda r, ids: r.retire(ids["retired"]), InvalidTransition, "from RETIRED to RETIRED"),
    (lambda r, ids: r.set_status(ids["active"], Status.SHADOW), InvalidTransition, "from ACTIVE to SHADOW"),
    (lambda r, ids: r.set_status(ids["active"], "LIVE"), RegistryError, "unknown status 'LIVE'"),
    (lambda r, ids: r.promote(ids["shadow"], evidence={"x": object()}), RegistryError, "evidence"),
    (lambda r, ids: r.rollback(ModelKey("lgbm", "MSFT", 12)), RegistryError, "lgbm/MSFT/h12"),
    (lambda r, ids: r.prune_retired(-1), RegistryError, "keep"),
])
def test_refused_calls_raise_clearly_and_change_nothing(registry, root, call, error, message):
    a, b, c = (registry.register(make_model(root, n)) for n in (1, 2, 3))
    registry.promote(b.model_id)
    registry.append("drift_events", [{"severity": "HIGH"}])
    ids = {"retired": a.model_id, "active": b.model_id, "shadow": c.model_id}
    before = snapshot(registry)
    with pytest.raises(error, match=message):
        call(registry, ids)
    assert snapshot(registry) == before


def test_a_failure_inside_a_transaction_rolls_all_of_it_back(registry, root, monkeypatch):
    a = registry.register(make_model(root, 1))
    b = registry.register(make_model(root, 2))
    before = snapshot(registry)

    def fail(con):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(duckdb_store, "_guard_one_active", fail)  # after both updates, before COMMIT
    with pytest.raises(RuntimeError, match="disk on fire"):
        registry.promote(b.model_id)
    monkeypatch.undo()
    assert snapshot(registry) == before
    assert registry.active(KEY).model_id == a.model_id


def test_the_database_itself_refuses_a_second_active_model(registry, root):
    registry.register(make_model(root, 1))
    b = registry.register(make_model(root, 2))
    con = duckdb.connect(str(registry.path))
    try:
        with pytest.raises(duckdb.ConstraintException):
            con.execute("UPDATE model_registry SET status = 'ACTIVE', active_key = ? WHERE model_id = ?",
                        ['["lgbm", "pooled", 12]', b.model_id])
        with pytest.raises(duckdb.ConstraintException):  # ACTIVE without its key: the CHECK
            con.execute("UPDATE model_registry SET status = 'ACTIVE' WHERE model_id = ?", [b.model_id])
    finally:
        con.close()
    assert registry.get(b.model_id).status == Status.SHADOW


def test_update_metrics_merges_without_a_status_change(registry, root):
    a = registry.register(make_model(root, 1))
    history = registry.history()
    updated = registry.update_metrics(a.model_id, {"sharpe": 1.2, "oos_directional_accuracy": 0.6,
                                                   "nan": float("nan")})
    assert updated.metrics == {"sharpe": 1.2, "oos_directional_accuracy": 0.6, "nan": None}
    assert registry.history() == history and updated.status == a.status


# ---- pruning ----------------------------------------------------------------------------------------
def test_prune_keeps_the_newest_retired_per_key(registry, root):
    models = [registry.register(make_model(root, n)) for n in range(1, 5)]
    for model in models[1:]:
        registry.promote(model.model_id)  # models 1..3 are RETIRED, oldest first; 4 is ACTIVE
    other = registry.register(make_model(root, 9, scope="AAPL"))
    pruned = registry.prune_retired(keep=1)
    assert sorted(r.model_id for r in pruned) == sorted(m.model_id for m in models[:2])
    assert all(r.artifacts_pruned and not Path(r.file_path).exists() for r in pruned)
    assert Path(models[2].file_path).is_dir() and Path(models[3].file_path).is_dir()
    assert Path(other.file_path).is_dir()
    assert not any(p.name.startswith(".pruning-") for p in (root / "models" / "lgbm").iterdir())
    assert registry.prune_retired(keep=1) == []
    # rollback reaches model 3 (kept); after that only pruned models remain, so there is nothing to roll back to
    assert registry.rollback(KEY).model_id == models[2].model_id
    with pytest.raises(RegistryError, match="no earlier ACTIVE model"):
        registry.rollback(KEY)


def test_prune_refuses_anything_but_artefact_folders_inside_the_root(registry, root, tmp_path):
    outside = tmp_path / "elsewhere" / "precious"
    a = registry.register(make_model(root, 1, folder=outside))
    b = registry.register(make_model(root, 2))
    c = registry.register(make_model(root, 3))
    registry.promote(b.model_id)
    registry.promote(c.model_id)  # a and b RETIRED; b's folder is fine, a's is outside the root
    before = snapshot(registry)
    with pytest.raises(RegistryError, match=f"refusing to prune {a.model_id}; nothing was deleted"):
        registry.prune_retired(keep=0)
    assert outside.is_dir() and Path(b.file_path).is_dir()
    assert snapshot(registry) == before

    bare = root / "models" / "lgbm" / "no-manifest"
    d = registry.register(make_model(root, 4, folder=bare))
    (bare / "manifest.json").unlink()
    registry.set_status(d.model_id, Status.RETIRED)
    no_root = DuckDBRegistry(registry.path)
    with pytest.raises(RegistryError, match="no artifact_root"):
        no_root.prune_retired(keep=0)
    with pytest.raises(RegistryError, match="refusing to prune"):
        registry.prune_retired(keep=0)
    assert bare.is_dir() and Path(b.file_path).is_dir() and outside.is_dir()


def test_prune_undoes_its_moves_when_the_transaction_fails(registry, root, monkeypatch):
    models = [registry.register(make_model(root, n)) for n in range(1, 4)]
    for model in models[1:]:
        registry.promote(model.model_id)
    before = snapshot(registry)
    real_execute = duckdb.DuckDBPyConnection.execute

    class Failing:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *args):
            if sql.startswith("UPDATE model_registry SET artifacts_pruned"):
                raise duckdb.IOException("write failed")
            return real_execute(self.con, sql, *args)

        def __getattr__(self, name):
            return getattr(self.con, name)

    original = DuckDBRegistry._connect
    monkeypatch.setattr(DuckDBRegistry, "_connect", lambda self, deadline: Failing(original(self, deadline)))
    with pytest.raises(RegistryError, match="write failed"):
        registry.prune_retired(keep=0)
    monkeypatch.undo()
    assert snapshot(registry) == before
    assert all(Path(m.file_path).is_dir() for m in models)
    assert not any(p.name.startswith(".pruning-") for p in (root / "models" / "lgbm").iterdir())


# ---- active_policy.yaml -------------------------------------------------------------------------------
def test_policy_mirror_follows_every_status_change(registry, root, monkeypatch):
    a = registry.register(make_model(root, 1))
    doc = policy(registry)
    assert doc["active"] == {"lgbm/pooled/h12": {"model_id": a.model_id, "version": a.version,
                                                 "promoted_at": a.promoted_at.isoformat(), "file_path": a.file_path}}
    b = registry.register(make_model(root, 2))
    registry.promote(b.model_id, actor="shadow", note="better")
    doc = policy(registry)
    assert doc["active"]["lgbm/pooled/h12"]["model_id"] == b.model_id
    assert doc["history"][-1] == {"at": registry.get(b.model_id).promoted_at.isoformat(), "model_id": b.model_id,
                                  "from": "SHADOW", "to": "ACTIVE", "actor": "shadow", "reason": "promoted: better"}
    assert [h["model_id"] for h in doc["history"]] == [h.model_id for h in registry.history()]
    assert doc["history"][0]["from"] is None

    monkeypatch.setattr(duckdb_store, "HISTORY_IN_MIRROR", 3)
    registry.rollback(KEY)
    doc = policy(registry)
    assert doc["active"]["lgbm/pooled/h12"]["model_id"] == a.model_id
    assert [(h["model_id"], h["to"]) for h in doc["history"]] == [
        (b.model_id, "ACTIVE"), (b.model_id, "RETIRED"), (a.model_id, "ACTIVE")]
    registry.retire(a.model_id)
    assert policy(registry)["active"] == {}

    registry.active_policy_path.unlink()  # lost (or never written after a crash): the next operation rewrites it
    registry.list_models()
    assert policy(registry)["active"] == {}
    assert registry.sync_policy_mirror() == registry.active_policy_path


def test_metrics_updates_and_reads_do_not_rewrite_the_mirror(registry, root):
    a = registry.register(make_model(root, 1))
    before = registry.active_policy_path.stat().st_mtime_ns
    time.sleep(0.01)
    registry.update_metrics(a.model_id, {"x": 1})
    registry.get(a.model_id)
    assert registry.active_policy_path.stat().st_mtime_ns == before


# ---- log tables ---------------------------------------------------------------------------------------
def test_append_assigns_ids_and_rows_read_back_newest_first(registry):
    assert registry.append("drift_events", []) == 0
    n = registry.append("drift_events", [
        {"severity": "HIGH", "drift_type": "feature", "features": ["rsi_14"], "statistics": {"psi": 0.31}},
        {"event_id": 10, "detected_at": dt.datetime(2024, 1, 2, 3, 4, 5), "severity": "LOW"},
        {"severity": "CRITICAL", "signal_file": Path("/lake/signals/halt.json"), "model_types": None},
    ])
    assert n == 3
    rows = registry.rows("drift_events")
    assert [r["event_id"] for r in rows] == [12, 11, 10]
    assert rows[1]["features"] == ["rsi_14"] and rows[1]["statistics"] == {"psi": 0.31}
    assert rows[2]["detected_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # naive means UTC
    assert rows[0]["detected_at"].tzinfo == dt.UTC and rows[0]["signal_file"] == "/lake/signals/halt.json"
    assert registry.rows("drift_events", where={"severity": "LOW"}) == [rows[2]]
    assert registry.rows("drift_events", where={"drift_type": None}, limit=1) == [rows[0]]
    registry.append("retraining_jobs", [{"job_type": "scheduled", "status": "SUCCESS", "duration_s": 12,
                                         "models_trained": ["a", "b"], "tags": {"run": 1},
                                         "started_at": "2024-05-01T10:00:00+02:00"}])
    (job,) = registry.rows("retraining_jobs")
    assert job["job_id"] == 1 and job["duration_s"] == 12.0
    assert job["started_at"] == dt.datetime(2024, 5, 1, 8, tzinfo=dt.UTC)
    for table in LOG_TABLES:
        registry.append(table, [{}])
        assert len(registry.rows(table)) >= 1


def test_append_and_rows_refuse_unknown_tables_columns_and_bad_values(registry, root):
    registry.register(make_model(root, 1))
    registry.append("shadow_test_results", [{"champion_id": "a", "challenger_id": "b", "horizon": 12}])
    before = snapshot(registry)
    with pytest.raises(RegistryError, match="unknown log table 'drift_event'"):
        registry.append("drift_event", [{"severity": "LOW"}])
    with pytest.raises(RegistryError, match="unknown log table 'model_registry'"):
        registry.append("model_registry", [{"model_id": "x"}])
    with pytest.raises(RegistryError, match="drift_events has no column 'colour'"):
        registry.append("drift_events", [{"severity": "LOW"}, {"colour": "red"}])
    with pytest.raises(RegistryError, match=r"shadow_test_results\.horizon \(row 0\): expected int"):
        registry.append("shadow_test_results", [{"horizon": "twelve"}])
    with pytest.raises(RegistryError, match=r"model_performance_logs\.win_rate"):
        registry.append("model_performance_logs", [{"win_rate": "high"}])
    with pytest.raises(RegistryError, match="not an ISO 8601 timestamp"):
        registry.append("drift_events", [{"detected_at": "yesterday"}])
    with pytest.raises(RegistryError, match="Duplicate key|PRIMARY KEY|duplicate"):
        registry.append("shadow_test_results", [{"result_id": 1}])
    with pytest.raises(RegistryError, match="unknown table 'nope'"):
        registry.rows("nope")
    with pytest.raises(RegistryError, match="model_registry has no column 'colour'"):
        registry.rows("model_registry", where={"colour": "red"})
    with pytest.raises(RegistryError, match="JSON column"):
        registry.rows("drift_events", where={"features": ["a"]})
    assert snapshot(registry) == before
    (row,) = registry.rows("model_registry", where={"status": "ACTIVE"})
    assert "active_key" not in row and row["lineage"]["feature_count"] == 31
    assert [h["to_status"] for h in registry.rows("status_history")] == ["ACTIVE"]


# ---- files, locks and backends ------------------------------------------------------------------------
def test_a_held_lock_times_out_with_a_clear_error(registry, root):
    registry.register(make_model(root, 1))
    impatient = DuckDBRegistry(registry.path, lock_timeout_s=0.3)
    fd = os.open(registry.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(RegistryError, match=f"waited 0.3 s for the lock file {registry.lock_path}"):
            impatient.list_models()
        assert 0.25 <= time.monotonic() - started < 5
    finally:
        os.close(fd)
    assert len(impatient.list_models()) == 1


def test_threads_of_one_process_take_turns(registry, root):
    for n in range(1, 6):
        registry.register(make_model(root, n))
    errors = []

    def run(seed):
        rng = random.Random(seed)
        for _ in range(6):
            try:
                shadows = registry.list_models(status=Status.SHADOW)
                if rng.random() < 0.5 and shadows:
                    registry.promote(rng.choice(shadows).model_id)
                else:
                    registry.rollback(KEY)
            except RegistryError:
                pass  # raced, or nothing to roll back to: a normal refusal
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(registry.list_models(status=Status.ACTIVE)) == 1
    status = {}
    for change in registry.history():
        assert status.get(change.model_id) == change.from_status
        status[change.model_id] = change.to_status
    assert status == {r.model_id: r.status for r in registry.list_models()}


def test_a_program_holding_the_database_open_is_named(registry, root):
    registry.register(make_model(root, 1))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True);"
         " time.sleep(60)", str(registry.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(RegistryError, match="close the program that has it open"):
            DuckDBRegistry(registry.path, lock_timeout_s=0.5).list_models()
    finally:
        holder.kill()
        holder.wait()
    assert len(registry.list_models()) == 1


def test_the_duckdb_cli_opens_the_registry_file(registry, root):
    cli = Path(sys.executable).with_name("duckdb")
    if not cli.exists():
        pytest.skip("no duckdb CLI (duckdb-cli) in this environment")
    a = registry.register(make_model(root, 1))
    registry.append("drift_events", [{"severity": "HIGH"}])
    result = subprocess.run([str(cli), "-readonly", "-csv", str(registry.path), "-c",
                             "SELECT model_id, status FROM model_registry; SELECT count(*) AS n FROM drift_events"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{a.model_id},ACTIVE" in result.stdout and "n\n1" in result.stdout


def test_open_registry_picks_the_backend_from_the_url(tmp_path):
    lake = Lake(tmp_path / "lake")
    for url in (None, ""):
        registry = open_registry(lake, url)
        assert isinstance(registry, DuckDBRegistry)
        assert registry.path == lake.registry_path
        assert registry.artifact_root == lake.root / "models"
        assert registry.active_policy_path == lake.active_policy_path
    elsewhere = tmp_path / "shared" / "reg.duckdb"
    registry = open_registry(lake, f"duckdb://{elsewhere}")
    assert registry.path == elsewhere and registry.list_models() == [] and elsewhere.exists()
    with pytest.raises(RegistryError, match="'postgresql' is not available yet"):
        open_registry(lake, "postgresql://clm@db/clm")
    with pytest.raises(RegistryError, match="absolute file path"):
        open_registry(lake, "duckdb://relative/reg.duckdb")


def test_a_newer_schema_is_refused(registry, root):
    registry.register(make_model(root, 1))
    con = duckdb.connect(str(registry.path))
    con.execute("UPDATE registry_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(RegistryError, match="schema version 99.*upgrade clm"):
        DuckDBRegistry(registry.path).list_models()
