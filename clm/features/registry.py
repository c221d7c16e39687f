"""Registered features: what each one is, how many bars it needs, and a hash of its definition.

A feature's ``definition_hash`` is taken over its canonical expression tree (and, for context
features, the timeframe or cross-section it is computed on), never over code text, so renaming a
helper does not move it and changing a window does. The hash of a selection (``version_hash``)
names the feature store version the features are written under and goes into model lineage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from clm.features.expr import Node, digest, warmup

# Bump when the meaning of the compiled operators changes (both back-ends), so old versions stay apart.
ENGINE_VERSION = 1

CATEGORIES = (
    "momentum", "volatility", "volume", "structure", "indicator", "time", "regime", "trend", "context",
)


@dataclass(frozen=True)
class Feature:
    """One output column.

    ``node`` is evaluated per series on the bars themselves, or, with ``timeframe`` set, on bars
    resampled to that timeframe and joined back as of the last *closed* higher bar. With ``cross``
    set the node's value is combined across symbols at the same timestamp: the universe mean, the
    reference symbol's value, or this symbol's value minus the universe mean.
    """

    name: str
    category: str
    node: Node
    formula: str
    params: tuple[tuple[str, object], ...] = ()
    timeframe: str | None = None
    cross: Literal["mean", "reference", "relative"] | None = None
    reference_symbol: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"feature {self.name!r}: unknown category {self.category!r}")
        if self.cross == "reference" and not self.reference_symbol:
            raise ValueError(f"feature {self.name!r}: a reference feature needs reference_symbol")

    @property
    def definition(self) -> str:
        parts = [f"engine={ENGINE_VERSION}", f"name={self.name}", f"node={self.node.key}"]
        if self.timeframe:
            parts.append(f"timeframe={self.timeframe}")
        if self.cross:
            parts.append(f"cross={self.cross}")
        if self.cross == "reference":
            parts.append(f"reference={self.reference_symbol}")
        return ";".join(parts)

    @property
    def definition_hash(self) -> str:
        return digest(self.definition)

    @property
    def node_warmup(self) -> int:
        """Warm-up in bars of the series the node runs on (higher-timeframe bars for context)."""
        return warmup(self.node)

    def warmup_bars(self, timeframe_seconds: int) -> int:
        """Warm-up in base bars; a higher-timeframe feature also waits for its first full higher bar."""
        if not self.timeframe:
            return self.node_warmup
        ratio = math.ceil(timeframe_to_seconds(self.timeframe) / timeframe_seconds)
        return (self.node_warmup + 2) * ratio


def timeframe_to_seconds(label: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        value, unit = int(label[:-1]), label[-1]
        seconds = value * units[unit]
    except (KeyError, ValueError):
        raise ValueError(f"bad timeframe {label!r}: use e.g. '15m', '1h', '4h', '1d'") from None
    if seconds <= 0 or 86400 % seconds:
        raise ValueError(f"bad timeframe {label!r}: it must divide a day")
    return seconds


@dataclass(frozen=True)
class FeatureSelection:
    """An ordered, validated list of features (one name, one definition)."""

    features: tuple[Feature, ...]
    sets: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        seen: dict[str, Feature] = {}
        for f in self.features:
            other = seen.get(f.name)
            if other is not None and other.definition != f.definition:
                raise ValueError(f"feature {f.name!r} is defined twice with different definitions")
            seen[f.name] = f
        object.__setattr__(self, "features", tuple(seen.values()))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def by_name(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def version_hash(self) -> str:
        """Names the feature-store version: any change to any selected definition moves it."""
        return digest("\n".join(sorted(f"{f.name}:{f.definition_hash}" for f in self.features)))

    def warmup_bars(self, timeframe_seconds: int) -> int:
        return max((f.warmup_bars(timeframe_seconds) for f in self.features), default=0)

    def describe(self, timeframe_seconds: int) -> list[dict[str, object]]:
        """One row per feature, for reports and asset metadata."""
        return [
            {
                "name": f.name,
                "category": f.category,
                "warmup_bars": f.warmup_bars(timeframe_seconds),
                "timeframe": f.timeframe or "base",
                "cross": f.cross or "",
                "params": dict(f.params),
                "formula": f.formula,
                "hash": f.definition_hash,
            }
            for f in self.features
        ]

    def subset(self, names: Sequence[str]) -> FeatureSelection:
        wanted = set(names)
        return FeatureSelection(tuple(f for f in self.features if f.name in wanted), self.sets)
