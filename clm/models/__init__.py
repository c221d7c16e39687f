"""Model engines behind one contract (``base.Engine``); artefacts with sha256 manifests.

Importing this package imports neither lightgbm nor torch: engine modules are imported on the first
``engine_from_config`` / ``known_engines`` call, and heavy libraries inside their functions.
"""

from clm.models.artifacts import (
    MANIFEST_FILE,
    ArtifactError,
    ArtifactManifest,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from clm.models.base import (
    ENGINES,
    Engine,
    EngineConfig,
    FitReport,
    check_features,
    engine_class,
    engine_from_config,
    known_engines,
    load_engine,
    load_engines,
    register_engine,
)

__all__ = [
    "ENGINES",
    "MANIFEST_FILE",
    "ArtifactError",
    "ArtifactManifest",
    "Engine",
    "EngineConfig",
    "FitReport",
    "check_features",
    "engine_class",
    "engine_from_config",
    "known_engines",
    "load_engine",
    "load_engines",
    "register_engine",
    "read_manifest",
    "verify_manifest",
    "write_manifest",
]
