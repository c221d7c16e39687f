"""Model artefacts: a flat folder of files plus ``manifest.json`` (file name -> sha256).

The manifest is built from content only (engine name, file names, digests; no timestamps, no
host names), so training the same model twice gives byte-identical manifests and the manifest's
own ``digest`` can serve as a content address for the model. Every load calls ``verify_manifest``
first: a file that is missing or whose sha256 differs raises ``ArtifactError`` naming it, before
any bytes are parsed. File names are plain names inside the folder: no path separators, no ``..``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clm.lake import fsync_write

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """An artefact folder is incomplete, tampered with or malformed."""


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name; raise ``ArtifactError`` otherwise."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ArtifactError(f"invalid artefact file name {name!r}")
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise ArtifactError(f"unsafe artefact file name {name!r}: no path separators or '..'")
    if name == MANIFEST_FILE:
        raise ArtifactError(f"{MANIFEST_FILE!r} is reserved for the manifest itself")
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(payload: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, fixed indent, no NaN/inf, trailing newline)."""
    return (json.dumps(payload, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


def write_bytes(directory: Path, name: str, data: bytes) -> Path:
    """Write one artefact file atomically (``clm.lake.fsync_write``) after checking its name."""
    path = Path(directory) / check_file_name(name)
    fsync_write(path, data)
    return path


def write_json(directory: Path, name: str, payload: Any) -> Path:
    """Write ``payload`` as canonical JSON (see ``canonical_json``)."""
    return write_bytes(directory, name, canonical_json(payload))


def read_json(directory: Path, name: str) -> Any:
    path = Path(directory) / check_file_name(name)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"artefact file {name!r} is missing in {directory}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artefact file {name!r} is not valid JSON: {exc}") from exc


def json_safe(value: Any) -> Any:
    """Non-finite floats -> None, tuples -> lists, recursively (for metadata and configs)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class ArtifactManifest:
    """``files``: file name -> sha256 hex digest; ``engine``: the registered engine name."""

    engine: str
    files: dict[str, str] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.engine, str) or not self.engine:
            raise ArtifactError(f"manifest engine must be a non-empty string, got {self.engine!r}")
        if not isinstance(self.files, Mapping) or not self.files:
            raise ArtifactError("manifest must list at least one file")
        files = {}
        for name, digest in sorted(self.files.items()):
            check_file_name(name)
            if not (isinstance(digest, str) and len(digest) == 64):
                raise ArtifactError(f"manifest digest of {name!r} is not a sha256 hex digest")
            files[name] = digest
        object.__setattr__(self, "files", files)
        if self.version != MANIFEST_VERSION:
            raise ArtifactError(
                f"unsupported manifest version {self.version!r} (expected {MANIFEST_VERSION})"
            )

    def to_dict(self) -> dict:
        return {"version": self.version, "engine": self.engine, "files": dict(self.files)}

    @classmethod
    def from_dict(cls, data: Any) -> ArtifactManifest:
        if not isinstance(data, dict) or not {"engine", "files"} <= set(data):
            raise ArtifactError(f"malformed manifest: expected keys 'engine' and 'files', got {data!r}")
        return cls(
            engine=data["engine"],
            files=data["files"],
            version=data.get("version", MANIFEST_VERSION),
        )

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        """sha256 of the manifest bytes: one content address for the whole artefact."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def write_manifest(directory: Path, files: Iterable[str], *, engine: str) -> ArtifactManifest:
    """Hash ``files`` (plain names inside ``directory``) and write ``manifest.json`` atomically."""
    directory = Path(directory)
    names = sorted(set(files))
    digests = {}
    for name in names:
        path = directory / check_file_name(name)
        if not path.is_file():
            raise ArtifactError(f"artefact file {name!r} does not exist in {directory}")
        digests[name] = sha256_file(path)
    manifest = ArtifactManifest(engine=engine, files=digests)
    fsync_write(directory / MANIFEST_FILE, manifest.to_bytes())
    return manifest


def read_manifest(directory: Path) -> ArtifactManifest:
    """Parse ``manifest.json`` without checking the files (use ``verify_manifest`` to load)."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"no {MANIFEST_FILE} in {directory}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{MANIFEST_FILE} in {directory} is not valid JSON: {exc}") from exc
    return ArtifactManifest.from_dict(data)


def verify_manifest(directory: Path, *, engine: str | None = None) -> dict:
    """Recompute every listed file's sha256; return the manifest as a dict.

    Raises ``ArtifactError`` naming the first file that is missing or differs, or when ``engine``
    is given and the manifest was written by another engine.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if engine is not None and manifest.engine != engine:
        raise ArtifactError(
            f"artefact in {directory} was written by engine {manifest.engine!r}, not {engine!r}"
        )
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"artefact file {name!r} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"artefact file {name!r} fails its sha256 check "
                f"(manifest {expected[:12]}..., file {actual[:12]}...)"
            )
    return manifest.to_dict()


CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


def read_engine_config(directory: Path, engine: str) -> dict:
    """Verify ``directory``'s manifest, then return its ``config.json`` if ``engine`` wrote it."""
    directory = Path(directory)
    verify_manifest(directory, engine=engine)
    payload = read_json(directory, CONFIG_FILE)
    if payload.get("format_version") != FORMAT_VERSION or payload.get("engine") != engine:
        raise ArtifactError(f"{CONFIG_FILE} in {directory} is not a {engine} config (format {FORMAT_VERSION})")
    return payload
