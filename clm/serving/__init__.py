"""Serving: the champion models of a symbol and horizon, and what to trade now.

* ``Champion.load(symbol, horizon)`` -> ``.predict(dict | DataFrame)`` (``clm.serving.champion``).
* ``ranking_table`` / ``do_not_trade`` / ``assess`` (``clm.serving.ranking``): every symbol of the
  universe is either tradable (ranked by net edge after costs) or not, with its reason.
"""

from clm.serving.champion import (
    Champion,
    FrameViews,
    HaltWatch,
    MissingFeatures,
    ModelBook,
    NoActiveModel,
    Prediction,
    ServingError,
    TradingHalted,
    halt_reason,
)
from clm.serving.ranking import Assessment, assess, do_not_trade, ranking_table

__all__ = [
    "Assessment",
    "Champion",
    "FrameViews",
    "HaltWatch",
    "MissingFeatures",
    "ModelBook",
    "NoActiveModel",
    "Prediction",
    "ServingError",
    "TradingHalted",
    "assess",
    "do_not_trade",
    "halt_reason",
    "ranking_table",
]
