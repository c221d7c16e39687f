"""Test-wide settings: every test runs against a throw-away lake and a tiny synthetic market."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Set before definitions.py is imported so its resources read CLM_LAKE through dg.EnvVar at run time.
_SESSION_LAKE = tempfile.mkdtemp(prefix="clm-test-lake-")
os.environ["CLM_LAKE"] = _SESSION_LAKE
os.environ.setdefault("CLM_SOURCE", "synthetic")
# Graph tests train the LightGBM engines only; the torch engines are trained in tests/test_models and
# tests/test_training, and by `make run`.
os.environ.setdefault("CLM_ENGINES", "lightgbm_classifier,lightgbm_regressor")
os.environ.pop("DAGSTER_HOME", None)  # tests use ephemeral Dagster instances

DATA = Path(__file__).parent / "data"


@pytest.fixture
def lake_root(tmp_path, monkeypatch):
    root = tmp_path / "lake"
    monkeypatch.setenv("CLM_LAKE", str(root))
    return root


@pytest.fixture
def tiny_market(monkeypatch):
    monkeypatch.setenv("CLM_SOURCE", "synthetic")
    monkeypatch.setenv("CLM_SYNTH_SYMBOLS", "3")
    monkeypatch.setenv("CLM_SYNTH_DAYS", "3")
    monkeypatch.setenv("CLM_SYNTH_START", "2024-01-01")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_LAKE, ignore_errors=True)
