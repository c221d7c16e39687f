"""Resources read their settings from the environment and open the right source."""

import dagster as dg
import pytest

from clm.data.sources.files import FolderSource
from clm.data.sources.synthetic import SyntheticSource
from resources import LakeResource, MarketDataResource, build_resources


def test_build_resources_uses_env_vars_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("CLM_LAKE", str(tmp_path))
    monkeypatch.setenv("CLM_SOURCE", "landing")
    resources = build_resources()
    assert isinstance(resources["lake"].root, dg.EnvVar)
    assert resources["lake"].root.get_value() == str(tmp_path)
    monkeypatch.delenv("CLM_SOURCE")
    assert build_resources()["market_data"].source == "synthetic"


def test_lake_resource_builds_one_lake(tmp_path):
    resource = LakeResource(root=str(tmp_path))
    assert resource.lake is resource.lake
    assert resource.lake.root == tmp_path.resolve()


def test_market_data_resource_opens_sources(tmp_path):
    lake = LakeResource(root=str(tmp_path)).lake
    source, source_id = MarketDataResource(source="synthetic").open(lake)
    assert isinstance(source, SyntheticSource) and source_id == "synthetic"
    source, source_id = MarketDataResource(source="landing").open(lake)
    assert isinstance(source, FolderSource) and source_id == "landing" and lake.landing_dir.is_dir()
    with pytest.raises(FileNotFoundError, match="neither 'synthetic', 'landing' nor an existing path"):
        MarketDataResource(source=str(tmp_path / "missing")).open(lake)


def test_bad_synthetic_settings_name_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_SYNTH_DAYS", "abc")
    with pytest.raises(ValueError, match="CLM_SYNTH_DAYS"):
        MarketDataResource(source="synthetic").open(LakeResource(root=str(tmp_path)).lake)
