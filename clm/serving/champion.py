"""The champion: the ACTIVE models of one symbol and horizon, loaded once, predicting in microseconds.

``Champion.load(symbol, horizon)`` asks the registry for the ACTIVE models of ``horizon`` whose scope
is ``symbol`` or ``pooled`` (per model type a symbol-scoped model beats a pooled one), loads each
through ``clm.models.base.load_engine`` (every file's sha256 is checked against its manifest first)
and the ACTIVE ``regime_gate`` of the horizon when one is registered. ``symbol=None`` loads the
pooled models only: that champion predicts rows of any symbol (the symbol is a model feature).

``predict`` takes one bar as a dict (feature -> value, optional ``symbol``, ``regime``, ``timestamp``)
and returns a ``Prediction``, or a polars DataFrame and returns one output row per input row:

* ``prediction`` and ``model_id`` come from the primary engine: the best tabular engine by the
  registry metrics (net ``model_sharpe``, then directional accuracy); a champion made of sequence
  engines only has a sequence primary. Tabular engines answer any single row, hence preferred.
* each engine's prediction becomes a signal in [-1, 1] as in ``clm.evaluation.consensus.to_signal``:
  ``2p - 1`` for a classifier's P(up); ``tanh(pred / scale)`` for a return forecast, ``scale`` being
  the standard deviation of the model's last out-of-sample fold (what training scaled it with;
  registry metric ``signal_scale`` overrides it; unknown: ``sign(pred)``).
* ``confidence`` = ``|signal|`` of the primary (0 when it abstains).
* ``consensus`` S = the reliability-weighted vote of the engines the regime gate enables for the row's
  regime (no regime, or one the gate never saw: its overall set; no gate: every engine):
  ``r = max(0, 2 * acc - 1)`` from the registry's out-of-sample directional accuracy (unknown or
  below 0.5: 0), penalised by correlation as in ``consensus.py`` (``r / (1 + sum of the other
  voters' positive signal correlations)``, the correlations measured once at load on the last
  out-of-sample fold, where ``consensus.py`` uses a trailing window it has and serving does not),
  normalised over the voters; no voter: S = 0.
* ``action``: ``long`` / ``short`` when ``|S| > min_consensus`` (its sign), else ``stand_aside``.
* Sequence engines (N-HiTS, PatchTST) need ``context_length`` bars of ``ret_1``: they vote only on a
  DataFrame with that much contiguous history for a symbol, on that symbol's last row; on a dict,
  and on earlier rows, they abstain (their signal is None).

Speed. The dict path never touches polars: at load each tabular engine's feature order, scaler and
categorical codes become numpy arrays (``TabularEngine.matrix_layout``, which scales bit for bit as
the polars ``FeatureScaler`` the model was trained through: one ulp can cross a tree split); a call
builds one float64 row and hands it to LightGBM's single-row C API on one thread (``predict_row``),
skipping the ~15 us of Python set-up a one-row ``booster.predict`` pays. A DataFrame goes through
one polars ``select`` per feature layout, then numpy and ``predict_matrix`` (the engine's threads):
a polars call costs ~0.1 ms whatever its size, so the batch path makes as few as it can. Same
doubles, same trees: the values equal the engine's own ``predict`` on the equivalent frame.

Halt. While ``lake.halt_path`` exists, ``predict`` raises ``TradingHalted`` quoting its reason. The
file is checked with one ``os.stat`` on every call by default (about 1 us against a budget of
300 us): caching the answer for N ms would let trades through for up to N ms after a CRITICAL
drift halt, which is not worth 1 us. ``halt_check_interval_s`` > 0 trades that for fewer syscalls
where stat is slow (a network file system). A stat that fails for any reason other than "no such
file" counts as halted: the check fails closed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clm.evaluation.gate import RegimeGate
from clm.lake import Lake, TableNotFound
from clm.models.artifacts import ArtifactError, read_json, read_manifest, verify_manifest
from clm.models.base import load_engine
from clm.registry.base import GATE_MODEL_TYPE, POOLED, ModelRecord, Registry, Status, is_forecaster

GATE_FILE = "gate.json"
OOS_PREDICTIONS = "oos_predictions"  # clm.training.store.OOS_PREDICTIONS
PER_SYMBOL_ENGINE = "per_symbol"  # clm.models.per_symbol.ENGINE
PRIMARY_METRICS = ("model_sharpe",)  # net of costs; then reliability
MIN_CORRELATION_PAIRS = 30  # as consensus.ConsensusConfig.min_history
ACTIONS = ("long", "short", "stand_aside")


class ServingError(RuntimeError):
    """Serving refused a request; the message says why and what to do."""


class NoActiveModel(ServingError, LookupError):
    pass


class TradingHalted(ServingError):
    """``signals/halt.json`` exists (written on CRITICAL drift): no prediction may be traded."""


class MissingFeatures(ServingError, ValueError):
    def __init__(self, missing: Sequence[str], where: str = "features"):
        self.missing = list(missing)
        shown = ", ".join(self.missing[:20]) + (f" (+{len(self.missing) - 20} more)" if len(self.missing) > 20 else "")
        super().__init__(f"{where} lack {len(self.missing)} feature(s) the champion needs: {shown}")


# ------------------------------------------------------------------------------------------------
# halt
# ------------------------------------------------------------------------------------------------


def halt_reason(lake: Lake) -> str | None:
    """The halt file's reason (its JSON ``reason``, else its text), or None when trading is not halted."""
    path = lake.halt_path
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:  # present but unreadable, or the check itself failed: fail closed
        return f"cannot read {path}: {exc}"
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = None
    if isinstance(payload, Mapping):
        for key in ("reason", "message", "detail"):
            if payload.get(key):
                return str(payload[key])
        return json.dumps(payload, sort_keys=True)[:500]
    return text.strip()[:500] or "(no reason given)"


class HaltWatch:
    """Raises ``TradingHalted`` while the halt file exists (see the module doc for the interval)."""

    def __init__(self, lake: Lake, interval_s: float = 0.0):
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s >= 0):
            raise ValueError(f"halt_check_interval_s must be a finite number >= 0, got {interval_s!r}")
        self.lake = lake
        self.path = str(lake.halt_path)
        self.interval_ns = int(interval_s * 1e9)
        self._next_ns = 0
        self._halted = False

    def check(self) -> None:
        if self.interval_ns:
            now = time.monotonic_ns()
            if now < self._next_ns:
                if self._halted:
                    self._raise()
                return
            self._next_ns = now + self.interval_ns
        try:
            os.stat(self.path)
        except FileNotFoundError:
            self._halted = False
            return
        except OSError:
            pass  # cannot tell: halted
        self._halted = True
        self._raise()

    def _raise(self) -> None:
        reason = halt_reason(self.lake) or "(the halt file went away while being read)"
        raise TradingHalted(f"trading is halted: {self.path} exists; reason: {reason}. "
                            "Remove the file to resume once the cause is resolved.")


class _NeverHalted:
    def check(self) -> None:
        return None


_NO_HALT = _NeverHalted()


# ------------------------------------------------------------------------------------------------
# served models
# ------------------------------------------------------------------------------------------------


def _metric(metrics: Mapping[str, Any], names: Sequence[str]) -> float | None:
    for name in names:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def reliability_weight(accuracy: float | None) -> float:
    """``max(0, 2 * acc - 1)`` as in ``consensus.py``; unknown accuracy votes with weight 0."""
    return 0.0 if accuracy is None or accuracy < 0.5 else max(0.0, 2.0 * accuracy - 1.0)


@dataclass
class ServedModel:
    """One loaded engine with what serving needs of it, precomputed."""

    record: ModelRecord
    engine: Any
    kind: str  # "probability" (a classifier's P(up)) or "return"
    sequence: bool
    context_length: int
    accuracy: float | None
    weight: float
    signal_scale: float | None = None
    typical_move: float | None = None  # median |forward return|: a classifier's probability -> an edge
    # tabular fast path: model-order features; numeric ones by name and position; categoricals
    features: tuple[str, ...] = ()
    numeric_names: tuple[str, ...] = ()
    numeric_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    centre: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))  # 1 / scale when ``reciprocal``
    reciprocal: bool = False
    categorical: tuple[tuple[int, str, dict[str, int]], ...] = ()
    fast: bool = False

    @property
    def name(self) -> str:
        return self.record.model_type

    @property
    def model_id(self) -> str:
        return self.record.model_id

    def rank_key(self) -> tuple:
        """Higher is better: net Sharpe, then directional accuracy, then the name (deterministic)."""
        sharpe = _metric(self.record.metrics, PRIMARY_METRICS)
        return (
            sharpe if sharpe is not None else -math.inf,
            self.accuracy if self.accuracy is not None else -math.inf,
            self.name,
        )

    def signal(self, value: float) -> float | None:
        if value != value:  # NaN: no view
            return None
        if self.kind == "probability":
            return 2.0 * value - 1.0
        if self.signal_scale:
            return math.tanh(value / self.signal_scale)
        return float(np.sign(value))

    def signals(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "probability":
            return 2.0 * values - 1.0
        if self.signal_scale:
            return np.tanh(values / self.signal_scale)
        return np.sign(values)


def _prepare(record: ModelRecord, engine: Any) -> ServedModel:
    task = getattr(engine, "task", None)
    sequence = bool(getattr(engine, "sequence", False))
    scoped = record.scope != POOLED
    # a symbol-scoped record's own out-of-sample accuracy is the per-symbol reliability consensus.py uses
    names = ("oos_directional_accuracy", "directional_accuracy") if scoped else (
        "directional_accuracy", "oos_directional_accuracy")
    accuracy = _metric(record.metrics, names)
    served = ServedModel(
        record=record, engine=engine, kind="probability" if task == "classification" else "return",
        sequence=sequence, context_length=int(engine.config.context_length) if sequence else 0,
        accuracy=accuracy, weight=reliability_weight(accuracy),
        signal_scale=_metric(record.metrics, ("signal_scale",)),
        typical_move=_metric(record.metrics, ("typical_abs_return",)),
    )
    if not sequence and hasattr(engine, "matrix_layout"):
        layout = engine.matrix_layout()
        features, codes = layout.features, layout.codes
        numeric = [i for i, name in enumerate(features) if name not in codes]
        served.features = tuple(features)
        served.numeric_names = tuple(features[i] for i in numeric)
        served.numeric_pos = np.asarray(numeric, dtype=np.int64)
        # bit for bit the arithmetic the model was trained on (MatrixLayout.reciprocal)
        served.centre = layout.centre[numeric]
        served.scale = 1.0 / layout.scale[numeric] if layout.reciprocal else layout.scale[numeric]
        served.reciprocal = layout.reciprocal
        served.categorical = tuple((features.index(name), name, mapping) for name, mapping in sorted(codes.items()))
        served.fast = hasattr(engine, "predict_matrix") and hasattr(engine, "predict_row")
    elif not sequence:
        served.features = tuple(getattr(engine, "features", ()))
    return served


def artifact_dir(lake: Lake, record: ModelRecord) -> Path:
    path = Path(record.file_path)
    return path if path.is_absolute() else lake.root / path


def _load_record(lake: Lake, record: ModelRecord, symbol: str | None) -> Any:
    """The record's engine, verified; errors name the model, its folder and the failing file."""
    directory = artifact_dir(lake, record)
    if record.artifacts_pruned:
        raise ServingError(f"model {record.model_id} ({record.key}) is ACTIVE but its artefacts were pruned "
                           f"from {directory}: roll back or promote another model (`clm models list`)")
    try:
        if read_manifest(directory).engine == PER_SYMBOL_ENGINE:  # one folder per symbol behind one manifest
            from clm.models.per_symbol import PerSymbolModel

            models = PerSymbolModel.load(directory).models
            if symbol not in models:
                raise ServingError(f"model {record.model_id} in {directory} has no model for symbol {symbol!r} "
                                   f"(it has {sorted(models)})")
            engine = models[symbol]
        else:
            engine = load_engine(directory)
    except ArtifactError as exc:
        raise ArtifactError(
            f"model {record.model_id} ({record.key}) in {directory} failed verification: {exc}") from exc
    if engine.name != record.model_type:
        raise ServingError(f"model {record.model_id} is registered as {record.model_type!r} but {directory} holds "
                           f"a {engine.name!r} model")
    return engine


def _load_gate(lake: Lake, record: ModelRecord) -> RegimeGate:
    directory = artifact_dir(lake, record)
    try:
        verify_manifest(directory, engine=GATE_MODEL_TYPE)
        return RegimeGate.from_dict(read_json(directory, GATE_FILE))
    except ArtifactError as exc:
        raise ArtifactError(f"regime gate {record.model_id} in {directory} failed verification: {exc}") from exc
    except ValueError as exc:
        raise ArtifactError(f"regime gate {record.model_id}: {directory / GATE_FILE} is not a gate: {exc}") from exc


class ModelBook:
    """The ACTIVE models of one horizon, read once; champions of many symbols share loaded engines.

    Calibration that the registry metrics lack (a return engine's signal scale, a classifier's
    typical move, the engines' signal correlations) is measured on each engine's last out-of-sample
    fold in the lake (``oos_predictions``), read once for the whole book.
    """

    def __init__(self, lake: Lake, registry: Registry, horizon: int):
        self.lake, self.registry, self.horizon = lake, registry, horizon
        # the forecasters and the gate (RL policies are champions of their own keys but serve no forecast)
        self.records = [r for r in registry.list_models(horizon=horizon, status=Status.ACTIVE)
                        if is_forecaster(r.model_type) or r.model_type == GATE_MODEL_TYPE]
        self._served: dict[tuple[str, str | None], ServedModel] = {}
        self._gates: dict[str, RegimeGate] = {}
        self._oos: pl.DataFrame | None = None
        self._correlations: dict[tuple[str, str], float] = {}

    def selection(self, symbol: str | None) -> tuple[list[ModelRecord], ModelRecord | None]:
        """Per model type the symbol's ACTIVE record, else the pooled one; and the gate's."""
        chosen: dict[str, ModelRecord] = {}
        for record in self.records:
            if record.scope not in (POOLED, symbol):
                continue
            current = chosen.get(record.model_type)
            if current is None or (current.scope == POOLED and record.scope != POOLED):
                chosen[record.model_type] = record
        gate = chosen.pop(GATE_MODEL_TYPE, None)
        return [chosen[name] for name in sorted(chosen)], gate

    def served(self, record: ModelRecord, symbol: str | None) -> ServedModel:
        key = (record.model_id, symbol if self._is_per_symbol_folder(record) else None)
        if key not in self._served:
            self._served[key] = _prepare(record, _load_record(self.lake, record, symbol))
        return self._served[key]

    def _is_per_symbol_folder(self, record: ModelRecord) -> bool:
        try:
            return read_manifest(artifact_dir(self.lake, record)).engine == PER_SYMBOL_ENGINE
        except ArtifactError:
            return False

    def gate(self, record: ModelRecord) -> RegimeGate:
        if record.model_id not in self._gates:
            self._gates[record.model_id] = _load_gate(self.lake, record)
        return self._gates[record.model_id]

    def champion(self, symbol: str | None, **options: Any) -> Champion:
        records, gate_record = self.selection(symbol)
        if not records:
            scopes = f"{symbol!r} or {POOLED!r}" if symbol else repr(POOLED)
            raise NoActiveModel(
                f"no ACTIVE model for horizon {self.horizon} with scope {scopes} (keys <model_type>/"
                f"{symbol or POOLED}/h{self.horizon}); train and register one, or see `clm models list`"
            )
        models = [self.served(r, symbol) for r in records]
        self._calibrate(models)
        gate = self.gate(gate_record) if gate_record is not None else None
        correlations = {(a.name, b.name): self._correlation(a, b) for a in models for b in models if a is not b}
        return Champion(symbol, self.horizon, models, gate=gate, gate_record=gate_record, lake=self.lake,
                        correlations=correlations, **options)

    # ---- calibration from the out-of-sample record -----------------------------------------------
    def _calibrate(self, models: list[ServedModel]) -> None:
        need = [m for m in models if (m.kind == "return" and m.signal_scale is None)
                or (m.kind == "probability" and m.typical_move is None) or (m.weight > 0 and len(models) > 1)]
        if not need:
            return
        oos = self._last_folds()
        for m in models:
            rows = self._rows_of(oos, m.record)
            if rows is None:
                continue
            if m.kind == "return" and m.signal_scale is None:
                sd = rows["prediction"].std(ddof=1)
                m.signal_scale = float(sd) if sd is not None and math.isfinite(sd) and sd > 0 else None
            if m.kind == "probability" and m.typical_move is None:
                move = rows["target_return"].abs().median()
                m.typical_move = float(move) if move is not None and math.isfinite(move) else None

    def _last_folds(self) -> pl.DataFrame:
        """Every ACTIVE engine's last out-of-sample fold (of its own version when the table says)."""
        if self._oos is not None:
            return self._oos
        engines = sorted({r.model_type for r in self.records if r.model_type != GATE_MODEL_TYPE})
        empty = pl.DataFrame(schema={"engine": pl.String, "model_version": pl.String, "symbol": pl.String,
                                     "timestamp": pl.Datetime("us", "UTC"), "prediction": pl.Float64,
                                     "signal": pl.Float64, "target_return": pl.Float64})
        try:
            lf = self.lake.scan(OOS_PREDICTIONS, engine=engines)
        except TableNotFound:
            self._oos = empty
            return empty
        names = lf.collect_schema().names()
        version = pl.col("model_version") if "model_version" in names else pl.lit(None, pl.String)
        lf = lf.with_columns(version.cast(pl.String).alias("model_version"))
        last = lf.group_by("engine", "model_version").agg(pl.col("fold").max())
        self._oos = (
            lf.join(last, on=["engine", "model_version", "fold"], how="semi")
            .select("engine", "model_version", pl.col("symbol").cast(pl.String), "timestamp",
                    pl.col("prediction").cast(pl.Float64), pl.col("signal").cast(pl.Float64),
                    pl.col("target_return").cast(pl.Float64))
            .filter(pl.col("prediction").is_not_null() & pl.col("prediction").is_finite())
            .collect()
        )
        return self._oos

    @staticmethod
    def _rows_of(oos: pl.DataFrame, record: ModelRecord) -> pl.DataFrame | None:
        rows = oos.filter(pl.col("engine") == record.model_type)
        own = rows.filter(pl.col("model_version") == record.version)
        rows = own if own.height else rows
        if record.scope != POOLED:
            mine = rows.filter(pl.col("symbol") == record.scope)
            rows = mine if mine.height else rows
        return rows if rows.height else None

    def _correlation(self, a: ServedModel, b: ServedModel) -> float:
        key = tuple(sorted((a.model_id, b.model_id)))
        if key not in self._correlations:
            value = 0.0
            oos = self._last_folds()
            ra, rb = self._rows_of(oos, a.record), self._rows_of(oos, b.record)
            if ra is not None and rb is not None:
                pairs = ra.select("symbol", "timestamp", pl.col("signal").alias("a")).join(
                    rb.select("symbol", "timestamp", pl.col("signal").alias("b")), on=["symbol", "timestamp"]
                ).drop_nulls()
                if pairs.height >= MIN_CORRELATION_PAIRS:
                    c = pairs.select(pl.corr("a", "b")).item()
                    value = float(c) if c is not None and math.isfinite(c) else 0.0
            self._correlations[key] = value
        return self._correlations[key]


def open_default_registry(lake: Lake) -> Registry:
    from clm.registry import open_registry

    return open_registry(lake)


# ------------------------------------------------------------------------------------------------
# the champion
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One bar's answer. ``signals``: engine -> signal in [-1, 1], None where it abstained."""

    symbol: str
    prediction: float | None
    confidence: float
    consensus: float
    model_id: str
    signals: Mapping[str, float | None]
    regime: str | None
    action: str
    timestamp: Any = None
    voters: tuple[str, ...] = ()


@dataclass(frozen=True)
class FrameViews:
    """Per row of a frame (n rows, k engines in ``Champion.names`` order)."""

    symbols: pl.Series
    regimes: pl.Series
    values: np.ndarray  # (n, k) raw predictions, NaN where the engine abstained
    signals: np.ndarray  # (n, k) in [-1, 1], NaN where it abstained
    enabled: np.ndarray  # (n, k) the gate lets the engine vote in the row's regime
    voting: np.ndarray  # (n, k) enabled, weight > 0 and a signal
    consensus: np.ndarray  # (n,) S


class Champion:
    """What ``Champion.load`` returns; see the module doc."""

    def __init__(self, symbol: str | None, horizon: int, models: Sequence[ServedModel], *,
                 gate: RegimeGate | None, gate_record: ModelRecord | None, lake: Lake,
                 correlations: Mapping[tuple[str, str], float] | None = None, min_consensus: float = 0.0,
                 correlation_penalty: float = 1.0, halt_check_interval_s: float = 0.0, enforce_halt: bool = True):
        """``enforce_halt=False`` is for evaluation (shadow tests, supervision), which must go on while trading
        is halted: a halt stops trades, and the challenger that could end it still has to be judged."""
        if not models:
            raise ValueError("a champion needs at least one model")
        for name, value in (("min_consensus", min_consensus), ("correlation_penalty", correlation_penalty)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.symbol, self.horizon, self.lake = symbol, horizon, lake
        self.models = tuple(models)
        self.names = tuple(m.name for m in self.models)
        self.gate, self.gate_record = gate, gate_record
        self.min_consensus = float(min_consensus)
        self.correlation_penalty = float(correlation_penalty)
        self.correlations = dict(correlations or {})
        tabular = [i for i, m in enumerate(self.models) if not m.sequence]
        pool = tabular or list(range(len(self.models)))
        self.primary_index = max(pool, key=lambda i: self.models[i].rank_key())
        self.primary = self.models[self.primary_index]
        self._tabular = tuple(tabular)
        self._sequence = tuple(i for i, m in enumerate(self.models) if m.sequence)
        self._halt = HaltWatch(lake, halt_check_interval_s) if enforce_halt else _NO_HALT
        # regime -> engine indices the gate enables (None / unseen regimes: the overall set)
        everyone = frozenset(range(len(self.models)))
        if gate is None:
            self._enabled: dict[Any, frozenset[int]] = {}
            self._overall = everyone
        else:
            index = {name: i for i, name in enumerate(self.names)}
            self._enabled = {regime: frozenset(index[e] for e in engines if e in index)
                             for regime, engines in gate.enabled.items()}
            self._overall = self._enabled.get("overall", frozenset())
        self._weight_cache: dict[tuple[int, ...], tuple[float, ...]] = {}
        vocabularies: dict[tuple, dict[str, int]] = {}  # equal vocabularies -> one object: coded once per call
        for m in self.models:
            m.categorical = tuple((pos, name, vocabularies.setdefault((name, tuple(codes.items())), codes))
                                  for pos, name, codes in m.categorical)
        self._required = sorted({f for i in tabular for f in self._needed(self.models[i])})

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, symbol: str | None, horizon: int, *, lake: Lake | None = None, registry: Registry | None = None,
             **options: Any) -> Champion:
        """The ACTIVE models of ``horizon`` for ``symbol`` (None or ``pooled``: the pooled models only),
        verified and ready. ``options``: ``min_consensus``, ``correlation_penalty``, ``halt_check_interval_s``."""
        lake = lake if lake is not None else Lake.from_env()
        registry = registry if registry is not None else open_default_registry(lake)
        if symbol == POOLED:
            symbol = None
        return ModelBook(lake, registry, horizon).champion(symbol, **options)

    @property
    def model_id(self) -> str:
        return self.primary.model_id

    @property
    def model_ids(self) -> dict[str, str]:
        return {m.name: m.model_id for m in self.models}

    @property
    def required_features(self) -> list[str]:
        """The feature names a dict must hold (the symbol comes from the champion when it has one)."""
        return list(self._required)

    def describe(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol or POOLED,
            "horizon": self.horizon,
            "primary": self.primary.model_id,
            "gate": self.gate_record.model_id if self.gate_record else None,
            "engines": [{
                "model_id": m.model_id, "model_type": m.name, "scope": m.record.scope, "kind": m.kind,
                "sequence": m.sequence, "accuracy": m.accuracy, "weight": m.weight,
                "signal_scale": m.signal_scale, "typical_move": m.typical_move,
            } for m in self.models],
        }

    def __repr__(self) -> str:
        return (f"Champion({self.symbol or POOLED!r}, h{self.horizon}, primary={self.model_id}, "
                f"engines={list(self.names)}, gate={self.gate_record.model_id if self.gate_record else None})")

    @staticmethod
    def _needed(model: ServedModel) -> list[str]:
        return [f for f in model.features if f != "symbol"]

    # ---- consensus -------------------------------------------------------------------------------
    def enabled_for(self, regime: str | None) -> frozenset[int]:
        return self._enabled.get(regime, self._overall) if regime is not None else self._overall

    def _weights(self, voters: tuple[int, ...]) -> tuple[float, ...]:
        """Normalised weights of ``voters`` (indices with weight > 0): reliability, correlation-penalised."""
        cached = self._weight_cache.get(voters)
        if cached is None:
            raw = []
            for e in voters:
                crowd = sum(max(0.0, self.correlations.get((self.names[e], self.names[f]), 0.0))
                            for f in voters if f != e)
                raw.append(self.models[e].weight / (1.0 + self.correlation_penalty * crowd))
            total = sum(raw)
            cached = tuple(w / total for w in raw) if total > 0 else tuple(0.0 for _ in raw)
            self._weight_cache[voters] = cached
        return cached

    def _action(self, score: float) -> str:
        if score > self.min_consensus:
            return "long"
        if score < -self.min_consensus:
            return "short"
        return "stand_aside"

    # ---- prediction ------------------------------------------------------------------------------
    def predict(self, features: Mapping[str, Any] | pl.DataFrame) -> Prediction | pl.DataFrame:
        """A dict -> ``Prediction``; a DataFrame -> a DataFrame (see the module doc)."""
        if isinstance(features, pl.DataFrame):
            return self._predict_frame(features)
        if isinstance(features, Mapping):
            return self._predict_row(features)
        raise TypeError(f"predict takes a dict of features or a polars DataFrame, got {type(features).__name__}")

    def _row_symbol(self, value: Any) -> str:
        if value is None:
            if self.symbol is None:
                raise ServingError("the pooled champion needs the row's 'symbol'")
            return self.symbol
        if self.symbol is not None and value != self.symbol:
            raise ServingError(f"this champion serves {self.symbol!r}, not {value!r}: load Champion.load({value!r}, "
                               f"{self.horizon}) or the pooled champion (symbol=None)")
        return str(value)

    def _predict_row(self, features: Mapping[str, Any]) -> Prediction:
        self._halt.check()
        symbol = self._row_symbol(features.get("symbol"))
        regime = features.get("regime")
        models = self.models
        signals: dict[str, float | None] = {}
        values: list[float] = [math.nan] * len(models)
        extracted: dict[tuple[str, ...], np.ndarray] = {}
        for i, m in enumerate(models):
            if m.sequence:
                signals[m.name] = None  # a sequence engine needs a history a single bar does not carry
                continue
            raw = extracted.get(m.numeric_names)
            if raw is None:
                raw = extracted[m.numeric_names] = self._extract(features, m.numeric_names)
            if m.fast:
                row = np.empty(len(m.features), dtype=np.float64)
                row[m.numeric_pos] = (raw - m.centre) * m.scale if m.reciprocal else (raw - m.centre) / m.scale
                for pos, name, codes in m.categorical:
                    value = symbol if name == "symbol" else features.get(name)
                    row[pos] = codes.get(str(value), 0) if value is not None else 0
                value = m.engine.predict_row(row)
            else:  # an engine without the numpy path (e.g. XGBoost): a one-row frame of the right types
                categorical = {name for _pos, name, _codes in m.categorical}
                frame = pl.DataFrame(
                    {n: [symbol if n == "symbol" else features.get(n)] for n in m.features},
                    schema={n: pl.String if n in categorical else pl.Float64 for n in m.features})
                value = float(m.engine.predict(frame)[0])
            values[i] = value
            signals[m.name] = m.signal(value)
        enabled = self.enabled_for(regime)
        voters = tuple(i for i in range(len(models))
                       if i in enabled and models[i].weight > 0 and signals[models[i].name] is not None)
        score = 0.0
        if voters:
            for w, e in zip(self._weights(voters), voters, strict=True):
                score += w * signals[models[e].name]
        primary = self.primary
        value = values[self.primary_index]
        signal = signals[primary.name]
        return Prediction(
            symbol=symbol,
            prediction=None if value != value else value,
            confidence=abs(signal) if signal is not None else 0.0,
            consensus=score,
            model_id=primary.model_id,
            signals=signals,
            regime=regime,
            action=self._action(score) if voters else "stand_aside",
            timestamp=features.get("timestamp"),
            voters=tuple(models[e].name for e in voters),
        )

    @staticmethod
    def _extract(features: Mapping[str, Any], names: tuple[str, ...]) -> np.ndarray:
        try:
            return np.array([features[n] for n in names], dtype=np.float64)
        except KeyError:
            raise MissingFeatures([n for n in names if n not in features], "the row's features") from None
        except (TypeError, ValueError):
            bad = []
            for n in names:
                try:
                    float(features[n]) if features[n] is not None else None
                except (TypeError, ValueError):
                    bad.append(f"{n}={features[n]!r}")
            raise ServingError(f"feature values must be numbers (or None for missing): {', '.join(bad)}") from None

    def views(self, frame: pl.DataFrame) -> FrameViews:
        """Every engine's raw prediction, signal, gate and vote for each row of ``frame``: what
        ``predict`` summarises (``clm.serving.ranking`` picks its edge from these)."""
        self._halt.check()
        n = frame.height
        k = len(self.models)
        symbols = self._frame_symbols(frame)
        regimes = frame.get_column("regime") if "regime" in frame.columns else pl.Series(
            "regime", [None] * n, dtype=pl.String)
        if regimes.dtype != pl.String:
            regimes = regimes.cast(pl.String)
        missing = [f for f in self._required if f not in frame.columns]
        if missing:
            raise MissingFeatures(missing, "the frame's columns")
        values = np.full((n, k), np.nan)
        # every polars call costs ~0.1 ms whatever its size: one select per feature layout, the rest
        # in numpy and on Python lists of n values
        extracted: dict[tuple[str, ...], np.ndarray] = {}
        labels: dict[str, list] = {"symbol": symbols.to_list()}
        coded: dict[int, np.ndarray] = {}
        work = frame if "symbol" in frame.columns and frame.schema["symbol"] == pl.String else None
        for i in self._tabular:
            m = self.models[i]
            if not n:
                continue
            if not m.fast:
                if work is None:
                    work = frame.with_columns(symbols.alias("symbol"))
                values[:, i] = m.engine.predict(work)
                continue
            raw = extracted.get(m.numeric_names)
            if raw is None:
                raw = extracted[m.numeric_names] = (
                    frame.select([pl.col(c).cast(pl.Float64) for c in m.numeric_names]).to_numpy()
                    if m.numeric_names else np.zeros((n, 0)))
            matrix = np.empty((n, len(m.features)), dtype=np.float64)
            matrix[:, m.numeric_pos] = (raw - m.centre) * m.scale if m.reciprocal else (raw - m.centre) / m.scale
            for pos, name, codes in m.categorical:  # vocabulary index + 1; unknown or null: 0
                key = id(codes)  # engines trained on one frame share one vocabulary object (__init__)
                if key not in coded:
                    if name not in labels:
                        labels[name] = frame.get_column(name).cast(pl.String).to_list()
                    coded[key] = np.fromiter((codes.get(x, 0) for x in labels[name]), dtype=np.float64, count=n)
                matrix[:, pos] = coded[key]
            values[:, i] = m.engine.predict_matrix(matrix)
        if self._sequence and work is None:
            work = frame.with_columns(symbols.alias("symbol"))
        for i in self._sequence:
            values[:, i] = self._sequence_values(self.models[i], work)
        signals = np.full((n, k), np.nan)
        for i, m in enumerate(self.models):
            finite = np.isfinite(values[:, i])
            signals[finite, i] = m.signals(values[finite, i])
        # voters: enabled for the row's regime, weight > 0, a signal; weights per distinct voter set
        index: dict[Any, int] = {}
        rows = np.fromiter((index.setdefault(r, len(index)) for r in regimes.to_list()), dtype=np.int64, count=n)
        table = np.array([[e in self.enabled_for(r) for e in range(k)] for r in index], dtype=bool).reshape(-1, k)
        enabled = table[rows] if n else np.zeros((0, k), dtype=bool)
        weight_ok = np.array([m.weight > 0 for m in self.models])
        voting = enabled & weight_ok & np.isfinite(signals)
        bits = voting @ (1 << np.arange(k, dtype=np.int64))
        weights = np.zeros((n, k))
        for code in np.unique(bits):
            voters = tuple(e for e in range(k) if code >> e & 1)
            if voters:
                row_weights = np.zeros(k)
                row_weights[list(voters)] = self._weights(voters)
                weights[bits == code] = row_weights
        score = (weights * np.nan_to_num(signals, nan=0.0)).sum(axis=1)
        return FrameViews(symbols, regimes, values, signals, enabled, voting, score)

    def _predict_frame(self, frame: pl.DataFrame) -> pl.DataFrame:
        v = self.views(frame)
        n, k, p = frame.height, len(self.models), self.primary_index
        # per row a small code (its voter set, its action); Python objects only per distinct code
        bits = v.voting @ (1 << np.arange(k, dtype=np.int64))
        codes, inverse = np.unique(bits, return_inverse=True)
        voters = pl.Series("voters", [[self.names[e] for e in range(k) if c >> e & 1] for c in codes],
                           dtype=pl.List(pl.String)).gather(inverse.reshape(-1))
        side = np.where(v.consensus > self.min_consensus, 0, np.where(v.consensus < -self.min_consensus, 1, 2))
        side[bits == 0] = 2  # nobody voted
        action = pl.Series("action", list(ACTIONS), dtype=pl.String).gather(side)
        columns: list[pl.Series] = [v.symbols.alias("symbol")]
        if "timestamp" in frame.columns:
            columns.append(frame.get_column("timestamp"))
        columns += [
            pl.Series("prediction", v.values[:, p], nan_to_null=True),
            pl.Series("confidence", np.nan_to_num(np.abs(v.signals[:, p]), nan=0.0)),
            pl.Series("consensus", v.consensus),
            pl.Series("model_id", [self.primary.model_id] * n, dtype=pl.String),
            pl.DataFrame({m.name: pl.Series(v.signals[:, i], nan_to_null=True) for i, m in enumerate(self.models)},
                         schema={m.name: pl.Float64 for m in self.models}).to_struct("signals"),
            v.regimes.alias("regime"),
            action,
            voters,
        ]
        return pl.DataFrame(columns)

    def _frame_symbols(self, frame: pl.DataFrame) -> pl.Series:
        if "symbol" not in frame.columns:
            if self.symbol is None:
                raise ServingError("the pooled champion needs a 'symbol' column")
            return pl.Series("symbol", [self.symbol] * frame.height, dtype=pl.String)
        symbols = frame.get_column("symbol")
        if symbols.dtype != pl.String:
            symbols = symbols.cast(pl.String)
        if symbols.null_count():
            raise ServingError(f"{symbols.null_count()} row(s) have no symbol")
        if self.symbol is not None:
            others = sorted(set(symbols.to_list()) - {self.symbol})
            if others:
                raise ServingError(f"this champion serves {self.symbol!r}, not {others[:10]}: use the pooled "
                                   f"champion (Champion.load(None, {self.horizon})) for several symbols")
        return symbols

    def _sequence_values(self, m: ServedModel, frame: pl.DataFrame) -> np.ndarray:
        """The engine's forecast on each symbol's last row (by time) from its last ``context_length``
        rows; NaN elsewhere, and where the history is short, broken or lacks the series columns."""
        out = np.full(frame.height, np.nan)
        series = m.engine.config.series
        if frame.height < m.context_length or not {"timestamp", series} <= set(frame.columns):
            return out
        ordered = frame.with_row_index("__row").sort("symbol", "timestamp")
        counts = ordered.group_by("symbol").len()
        if counts["len"].max() < m.context_length:
            return out
        tail = ordered.group_by("symbol", maintain_order=True).tail(m.context_length)
        tail = tail.join(counts.filter(pl.col("len") >= m.context_length).select("symbol"), on="symbol", how="semi")
        if tail.is_empty():
            return out
        predicted = np.asarray(m.engine.predict(tail.drop("__row")), dtype=np.float64)
        last = tail.with_columns(pl.Series("__value", predicted)).group_by("symbol").agg(
            pl.col("__row").last(), pl.col("__value").last())
        out[last["__row"].to_numpy()] = last["__value"].to_numpy()
        return out
