"""Market regimes: causal per-symbol labels, a market-wide vote with hysteresis, change signals, scores.

See ``docs/regimes.md`` for the method, the cut-offs and the signal file schema.
"""

from clm.regimes.classify import OUTPUT_COLUMNS, classify_regimes, warmup_bars
from clm.regimes.config import (
    CLASSES,
    LIQUIDITY_LEVELS,
    TREND_DIRECTIONS,
    VOLATILITY_LEVELS,
    RegimeConfig,
)
from clm.regimes.market import (
    MARKET_COLUMNS,
    market_regime,
    read_regime_signals,
    regime_changes,
    signal_bytes,
    signal_name,
    write_regime_signals,
)
from clm.regimes.score import (
    RegimeScore,
    regime_plot,
    regime_report_markdown,
    score_regimes,
)

__all__ = [
    "CLASSES",
    "LIQUIDITY_LEVELS",
    "MARKET_COLUMNS",
    "OUTPUT_COLUMNS",
    "TREND_DIRECTIONS",
    "VOLATILITY_LEVELS",
    "RegimeConfig",
    "RegimeScore",
    "classify_regimes",
    "market_regime",
    "read_regime_signals",
    "regime_changes",
    "regime_plot",
    "regime_report_markdown",
    "score_regimes",
    "signal_bytes",
    "signal_name",
    "warmup_bars",
    "write_regime_signals",
]
