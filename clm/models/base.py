"""The engine contract: what every model engine (LightGBM, NHITS, PatchTST, ...) provides.

* ``Engine`` (a runtime-checkable Protocol): ``fit`` on a training and a validation frame, ``predict``
  a frame, ``save`` to a folder (returns its ``ArtifactManifest``), ``load`` from one (verifying the
  manifest first), ``metadata`` (JSON-able).
* ``predict`` returns a 1-D float64 array, one value per row: for ``task == "regression"`` the
  predicted target (e.g. the forward return); for ``task == "classification"`` the probability of
  the positive class ("up"). Engines that predict several classes document their own shape.
* Engines are looked up by name: ``engine_from_config("lightgbm_regressor", {...})``. The engine list
  is config, not code: ``ENGINE_MODULES`` are imported on first look-up (never at import time, so
  ``import clm.models`` pulls in neither torch nor lightgbm); a module whose optional dependency is
  missing simply registers nothing and is reported in the error for an unknown name.
* A registered engine class has ``config_class`` (an ``EngineConfig`` subclass) and is built as
  ``cls(config)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import polars as pl

from clm.models.artifacts import ArtifactManifest

Task = Literal["regression", "classification"]
TASKS = ("regression", "classification")
LogFn = Callable[[str], None]

# Modules that define engines; imported lazily by ``load_engines``. A missing module (not yet
# written) is skipped; one whose dependency is missing is recorded in ``UNAVAILABLE``.
ENGINE_MODULES: tuple[str, ...] = (
    "clm.models.lightgbm_engine",
    "clm.models.torch_engine",
    "clm.models.nhits",
    "clm.models.patchtst",
    "clm.models.xgboost_engine",
)
ENGINES: dict[str, type] = {}
UNAVAILABLE: dict[str, str] = {}  # module -> reason it could not be imported
_LOADED: set[str] = set()


def no_log(message: str) -> None:  # default ``log`` callback
    return None


@dataclass(frozen=True)
class EngineConfig:
    """Base for engine configs: frozen, validated in ``__post_init__``, JSON round-trippable."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None):
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown option(s) {unknown}; known options: {sorted(known)}"
            )
        return cls(**data)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class FitReport:
    """What one ``fit`` did. ``best_iteration`` is 1-based (boosting round or epoch)."""

    engine: str
    best_iteration: int
    metric: str
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    train_rows: int = 0
    validation_rows: int = 0
    stopped_early: bool = False

    @property
    def best_validation_loss(self) -> float | None:
        if not self.validation_loss:
            return None
        return self.validation_loss[self.best_iteration - 1]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["best_validation_loss"] = self.best_validation_loss
        return out


@runtime_checkable
class Engine(Protocol):
    name: ClassVar[str]
    task: ClassVar[Task]

    def fit(
        self,
        train: pl.DataFrame,
        validation: pl.DataFrame,
        *,
        features: list[str],
        target: str,
        log: LogFn = no_log,
        feature_version: str | None = None,
    ) -> FitReport: ...

    def predict(self, frame: pl.DataFrame) -> np.ndarray: ...

    def save(self, directory: Path) -> ArtifactManifest: ...

    @classmethod
    def load(cls, directory: Path) -> Engine: ...

    def metadata(self) -> dict: ...


E = TypeVar("E", bound=type)


def register_engine(name: str) -> Callable[[E], E]:
    """Class decorator: ``ENGINES[name] = cls`` and ``cls.name = name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"engine name must be a non-empty string, got {name!r}")

    def decorator(cls: E) -> E:
        existing = ENGINES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"engine {name!r} is already registered by {existing.__qualname__}")
        if getattr(cls, "task", None) not in TASKS:
            raise ValueError(f"engine {name!r} must set task to one of {TASKS}")
        if not (isinstance(getattr(cls, "config_class", None), type)
                and issubclass(cls.config_class, EngineConfig)):
            raise ValueError(f"engine {name!r} must set config_class to an EngineConfig subclass")
        cls.name = name
        ENGINES[name] = cls
        return cls

    return decorator


def load_engines(modules: Iterable[str] = ENGINE_MODULES) -> dict[str, type]:
    """Import the engine modules once (each registers its engines); returns ``ENGINES``."""
    for module in modules:
        if module in _LOADED:
            continue
        _LOADED.add(module)
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the module itself does not exist: nothing to register
                continue
            UNAVAILABLE[module] = f"missing dependency {exc.name!r}"
        except ImportError as exc:
            UNAVAILABLE[module] = str(exc)
    return ENGINES


def known_engines() -> list[str]:
    return sorted(load_engines())


def engine_class(name: str) -> type:
    """The class registered as ``name``; engine modules are imported one by one until it is found
    (so asking for a LightGBM engine never imports torch)."""
    for module in ENGINE_MODULES:
        if name in ENGINES:
            break
        load_engines((module,))
    engines = ENGINES
    if name not in engines:
        load_engines()
        unavailable = (
            "; unavailable: " + ", ".join(f"{m} ({why})" for m, why in sorted(UNAVAILABLE.items()))
            if UNAVAILABLE
            else ""
        )
        raise ValueError(f"unknown engine {name!r}; known engines: {sorted(engines)}{unavailable}")
    return engines[name]


def engine_from_config(name: str, config: Mapping[str, Any] | EngineConfig | None = None) -> Engine:
    """Build engine ``name`` from a config dict (unknown options raise, listing the known ones)."""
    cls = engine_class(name)
    if not isinstance(config, EngineConfig):
        config = cls.config_class.from_dict(config)
    elif not isinstance(config, cls.config_class):
        raise ValueError(
            f"engine {name!r} takes a {cls.config_class.__name__}, got {type(config).__name__}"
        )
    return cls(config)


def check_features(
    frame: pl.DataFrame | pl.LazyFrame,
    features: Iterable[str],
    target: str | None = None,
    *,
    what: str = "frame",
) -> list[str]:
    """Raise ``ValueError`` naming every missing column, before any training starts.

    Also refuses an empty or duplicated feature list and a target used as a feature (a leak).
    Returns the features as a list.
    """
    if isinstance(features, str):
        raise ValueError("features must be a list of column names, not a string")
    features = list(features)
    if not features:
        raise ValueError("features must name at least one column")
    duplicates = sorted({f for f in features if features.count(f) > 1})
    if duplicates:
        raise ValueError(f"duplicated feature columns {duplicates}")
    if target is not None and target in features:
        raise ValueError(f"target {target!r} is also listed as a feature")
    names = set(frame.collect_schema().names())
    missing = [c for c in features if c not in names]
    if target is not None and target not in names:
        missing.append(target)
    if missing:
        raise ValueError(f"{what} lacks columns {missing} (features/target)")
    return features


def load_engine(directory: Path) -> Engine:
    """Load whatever engine wrote ``directory`` (named in its manifest); the engine verifies it."""
    from clm.models.artifacts import read_manifest

    return engine_class(read_manifest(Path(directory)).engine).load(Path(directory))
