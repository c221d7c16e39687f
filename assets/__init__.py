"""Software-defined assets: thin wiring of lake I/O and metadata around ``clm``."""

from assets.catalog import lake_catalog
from assets.features import features, labels
from assets.market_data import ingest_market_data
from assets.monitoring import drift_detector, model_supervisor, shadow_test
from assets.regimes import detect_regimes, regime_map
from assets.reports import data_integrity, training_report
from assets.rl import rl_online_update, rl_reset
from assets.rl_policies import rl_policies
from assets.summary import daily_summary
from assets.telemetry import feedback_events
from assets.training import consensus, evaluation, model_assets
from assets.universe import universe

all_assets = [
    ingest_market_data, universe, features, labels, detect_regimes, regime_map, data_integrity, feedback_events,
    *model_assets, evaluation, consensus, training_report, shadow_test, model_supervisor, drift_detector, daily_summary,
    lake_catalog, rl_reset, rl_online_update,
    rl_policies,
]
