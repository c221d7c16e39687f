"""`clm models ...` and the champion export, through the real CLI entry point and a real registry."""

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from clm.cli import main
from clm.lake import Lake
from clm.models.artifacts import write_json, write_manifest
from clm.registry import POOLED, Lineage, NewModel, Status, open_registry
from clm.registry.export import read_export_manifest


def _model(lake: Lake, n: int, model_type: str = "lightgbm_regressor") -> NewModel:
    version = f"{n:04d}" + "a" * 60
    folder = lake.model_dir(model_type, version)
    write_json(folder, "model.json", {"trees": n})
    manifest = write_manifest(folder, ["model.json"], engine=model_type)
    lineage = Lineage(training_window=("2024-01-01T00:00:00+00:00", "2024-01-09T00:00:00+00:00"),
                      feature_version="f" * 16, feature_count=44, label_config={"horizon": 12},
                      code_version="git:0123456789", data_hash="d" * 64, seeds={"seed": 0},
                      config={"engine": {"num_leaves": 31}}, artifact_checksums=manifest.files)
    return NewModel(model_type=model_type, version=version, scope=POOLED, horizon=12, file_path=str(folder),
                    lineage=lineage, metrics={"directional_accuracy": 0.5 + n / 100, "model_sharpe": -1.0 * n})


@pytest.fixture
def lake(tmp_path, monkeypatch):
    root = tmp_path / "lake"
    monkeypatch.setenv("CLM_LAKE", str(root))
    monkeypatch.delenv("CLM_REGISTRY_URL", raising=False)
    lake = Lake(root)
    registry = open_registry(lake)
    for n in (1, 2, 3):
        registry.register(_model(lake, n))
    return lake


def _state(lake):
    registry = open_registry(lake)
    return [(r.model_id, r.status) for r in registry.list_models()], len(registry.history())


def test_list_show_promote_rollback_retire(lake, capsys):
    registry = open_registry(lake)
    first, second, third = sorted(registry.list_models(), key=lambda r: r.version)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert first.model_id in out and "ACTIVE" in out and "SHADOW" in out and "3 models, 1 ACTIVE" in out
    assert "code git:0123456789" in out and "2024-01-01..2024-01-09" in out
    assert main(["models", "show", second.model_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "SHADOW" and shown["lineage"]["feature_count"] == 44 and shown["history"]
    assert main(["models", "promote", second.model_id, "--note", "better after costs"]) == 0
    assert f"{first.model_id} RETIRED" in capsys.readouterr().out
    assert registry.get(second.model_id).status == Status.ACTIVE
    assert registry.history(second.model_id)[-1].reason.endswith("better after costs")
    policy = yaml.safe_load(lake.active_policy_path.read_text())
    assert policy["active"]["lightgbm_regressor/pooled/h12"]["model_id"] == second.model_id
    assert main(["models", "rollback", "lightgbm_regressor", "--horizon", "12", "--note", "live PnL fell"]) == 0
    assert registry.get(first.model_id).status == Status.ACTIVE
    assert registry.get(second.model_id).status == Status.RETIRED
    assert main(["models", "retire", third.model_id]) == 0
    assert registry.get(third.model_id).status == Status.RETIRED
    assert main(["models", "list", "--status", "active"]) == 0
    assert "1 models, 1 ACTIVE" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["models", "show", "nope-h12-000"], "nope-h12-000"),
    (["models", "promote", "nope-h12-000"], "nope-h12-000"),
    (["models", "rollback", "lightgbm_regressor"], "no earlier ACTIVE model"),
    (["models", "export", "nope-h12-000"], "nope-h12-000"),
])
def test_refusals_are_clear_and_change_nothing(lake, capsys, argv, message):
    before = _state(lake)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert _state(lake) == before


def test_invalid_status_change_is_refused(lake, capsys):
    registry = open_registry(lake)
    shadow = registry.list_models(status=Status.SHADOW)[0]
    registry.set_status(shadow.model_id, Status.REJECTED, note="worse")
    before = _state(lake)
    assert main(["models", "promote", shadow.model_id]) == 2
    assert "REJECTED" in capsys.readouterr().err
    assert _state(lake) == before


def test_export_dry_run_writes_nothing_and_export_is_complete_and_verified(lake, capsys):
    lake.write_table("decision_log", pl.DataFrame({
        "timestamp": pl.datetime_range(pl.datetime(2024, 1, 8, time_zone="UTC"), pl.datetime(2024, 1, 8, 1, time_zone="UTC"),
                                       "5m", eager=True),
    }).with_columns(pl.lit("SYN000USD").alias("symbol"), pl.lit(0.4).alias("score"), pl.lit("{}").alias("votes"),
                    pl.lit(0.3).alias("confidence"), pl.lit("weak").alias("level"), pl.lit("long").alias("action")))
    lake.write_json("reports/data_integrity.json", {"totals": {"bars": 10}})
    lake.write_json("reports/regime_map.json", {"scores": []})
    active = open_registry(lake).list_models(status=Status.ACTIVE)[0]
    assert main(["models", "export", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would write" in out and "model/model.json" in out and "decision_log_sample.csv" in out
    assert not lake.exports_dir.exists()
    assert main(["models", "export"]) == 0
    target = lake.export_dir(active.model_type, active.version)
    manifest = read_export_manifest(target)
    assert manifest["model_id"] == active.model_id and manifest["features_hash"] == "f" * 16
    assert manifest["code_version"] == "git:0123456789" and manifest["training_window"][0].startswith("2024-01-01")
    assert set(manifest["checksums"]) == {"model/model.json", "model/manifest.json", "model.json", "lineage.json",
                                          "metrics.json", "regime_map.json", "data_integrity.json",
                                          "decision_log_sample.csv"}
    assert pl.read_csv(target / "decision_log_sample.csv").height == 13
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no staging folder left behind
    (target / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="metrics.json does not match its checksum"):
        read_export_manifest(target)


def test_export_refuses_a_tampered_artefact(lake, capsys):
    active = open_registry(lake).list_models(status=Status.ACTIVE)[0]
    Path(active.file_path, "model.json").write_text('{"trees": 999}')
    assert main(["models", "export"]) == 2
    assert "model.json" in capsys.readouterr().err
    assert not lake.exports_dir.exists() or not any(lake.exports_dir.rglob("manifest.json"))
