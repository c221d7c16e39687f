"""Markets shared by the regime tests: generated once per session (they are pure functions of a seed)."""

from pathlib import Path

import polars as pl
import pytest

from clm.data.sources.files import FolderSource
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.regimes import classify_regimes

BINANCE = Path(__file__).parents[1] / "data" / "binance_spot_5m"


def synthetic_market(**overrides) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(candles, truth) of a synthetic market; no overrides = the default 10 symbols x 30 days, seed 42."""
    config = SyntheticConfig(**overrides) if overrides else SyntheticConfig.from_env({})
    batch = SyntheticSource(config).load()
    return validate_bars(batch.bars).candles, batch.regimes


@pytest.fixture(scope="session")
def make_market():
    """The ``synthetic_market`` factory (test modules cannot import conftest under importlib mode)."""
    return synthetic_market


@pytest.fixture(scope="session")
def default_market() -> tuple[pl.DataFrame, pl.DataFrame]:
    return synthetic_market()


@pytest.fixture(scope="session")
def default_regimes(default_market) -> pl.DataFrame:
    return classify_regimes(default_market[0])


@pytest.fixture(scope="session")
def binance_candles() -> pl.DataFrame:
    return validate_bars(FolderSource(BINANCE).load().bars).candles
