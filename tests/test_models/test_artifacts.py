"""Artefact manifests (content-only sha256, atomic, verified on load) and the engine contract."""

import json
from dataclasses import dataclass

import polars as pl
import pytest

from clm.models import base
from clm.models.artifacts import (
    MANIFEST_FILE,
    ArtifactError,
    ArtifactManifest,
    canonical_json,
    check_file_name,
    read_manifest,
    verify_manifest,
    write_bytes,
    write_json,
    write_manifest,
)


def _folder(tmp_path, name="a"):
    d = tmp_path / name
    write_bytes(d, "model.txt", b"trees\n")
    write_json(d, "config.json", {"b": 1, "a": [1.5, None]})
    return d


def test_round_trip_and_identical_content_gives_identical_manifest(tmp_path):
    one, two = _folder(tmp_path, "one"), _folder(tmp_path, "two")
    m1 = write_manifest(one, ["model.txt", "config.json"], engine="dummy")
    m2 = write_manifest(two, ["config.json", "model.txt", "model.txt"], engine="dummy")
    assert (one / MANIFEST_FILE).read_bytes() == (two / MANIFEST_FILE).read_bytes()
    assert m1 == m2 and m1.digest == m2.digest
    assert list(m1.files) == ["config.json", "model.txt"]
    assert verify_manifest(one) == m1.to_dict()
    assert read_manifest(one) == m1
    assert "time" not in (one / MANIFEST_FILE).read_text()
    assert not [p for p in one.iterdir() if p.name.endswith(".tmp")]


def test_tampered_or_missing_file_is_named(tmp_path):
    d = _folder(tmp_path)
    write_manifest(d, ["model.txt", "config.json"], engine="dummy")
    (d / "model.txt").write_bytes(b"trees!\n")
    with pytest.raises(ArtifactError, match="'model.txt'.*sha256"):
        verify_manifest(d)
    (d / "model.txt").write_bytes(b"trees\n")
    verify_manifest(d)
    (d / "config.json").unlink()
    with pytest.raises(ArtifactError, match="'config.json'.*missing"):
        verify_manifest(d)


def test_manifest_problems(tmp_path):
    d = _folder(tmp_path)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        verify_manifest(d)
    with pytest.raises(ArtifactError, match="'absent.bin' does not exist"):
        write_manifest(d, ["absent.bin"], engine="dummy")
    write_manifest(d, ["model.txt"], engine="dummy")
    with pytest.raises(ArtifactError, match="engine 'dummy', not 'other'"):
        verify_manifest(d, engine="other")
    (d / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        verify_manifest(d)
    (d / MANIFEST_FILE).write_text(json.dumps({"engine": "dummy", "files": {"../x": "0" * 64}}))
    with pytest.raises(ArtifactError, match="unsafe"):
        verify_manifest(d)
    with pytest.raises(ArtifactError, match="at least one file"):
        ArtifactManifest(engine="dummy", files={})


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", "", ".", "x..y", MANIFEST_FILE])
def test_unsafe_names_are_rejected(tmp_path, name):
    with pytest.raises(ArtifactError):
        check_file_name(name)
    with pytest.raises(ArtifactError):
        write_bytes(tmp_path, name, b"x")


def test_canonical_json_is_deterministic_and_refuses_nan():
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


# ------------------------------------------------------------------ base: features and registry
def test_check_features_names_missing_columns():
    frame = pl.DataFrame({"a": [1.0], "b": [2.0], "y": [0.1]})
    assert base.check_features(frame, ["a", "b"], "y") == ["a", "b"]
    with pytest.raises(ValueError, match=r"\['c', 'target'\]"):
        base.check_features(frame, ["a", "c"], "target")
    with pytest.raises(ValueError, match="also listed as a feature"):
        base.check_features(frame, ["a", "y"], "y")
    with pytest.raises(ValueError, match="duplicated"):
        base.check_features(frame, ["a", "a"], "y")
    with pytest.raises(ValueError, match="at least one"):
        base.check_features(frame, [], "y")
    with pytest.raises(ValueError, match="not a string"):
        base.check_features(frame, "a", "y")


def test_registry(monkeypatch):
    base.load_engines()  # register every real engine first, so the copy below does not swallow them
    monkeypatch.setattr(base, "ENGINES", dict(base.ENGINES))

    @dataclass(frozen=True)
    class DummyConfig(base.EngineConfig):
        depth: int = 3

    @base.register_engine("dummy_engine")
    class Dummy:
        task = "regression"
        config_class = DummyConfig

        def __init__(self, config):
            self.config = config

    engine = base.engine_from_config("dummy_engine", {"depth": 5})
    assert engine.config.depth == 5 and Dummy.name == "dummy_engine"
    assert base.engine_from_config("dummy_engine").config == DummyConfig()
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dept'\]; known options: \['depth'\]"):
        base.engine_from_config("dummy_engine", {"dept": 5})
    with pytest.raises(ValueError, match="unknown engine 'nope'; known engines: .*dummy_engine"):
        base.engine_from_config("nope", {})
    with pytest.raises(ValueError, match="already registered"):
        base.register_engine("dummy_engine")(type("Other", (), {"task": "regression", "config_class": DummyConfig}))
    with pytest.raises(ValueError, match="task"):
        base.register_engine("bad")(type("Bad", (), {"task": "ranking", "config_class": DummyConfig}))


def test_fit_report_to_dict():
    report = base.FitReport(engine="e", best_iteration=2, metric="l2",
                            train_loss=[3.0, 2.0, 1.0], validation_loss=[3.0, 2.5, 2.7])
    assert report.best_validation_loss == 2.5
    assert json.loads(json.dumps(report.to_dict()))["best_validation_loss"] == 2.5
