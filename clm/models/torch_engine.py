"""Shared configuration, trainer and engine base for the torch sequence models (N-HiTS, PatchTST).

This module does not import torch at import time (``clm.models.base.load_engines`` imports the
engine modules to register them, and a Dagster step must not pay ~1.3 s for torch unless it trains
or predicts with one of these engines): torch is imported inside functions.

Data. ``fit(train, validation, features=..., target=...)`` builds windows per ``(symbol,
segment_id)`` series (``clm.models.windows``): channel 0 is ``config.series`` (default ``close`` as
one-bar log returns), channels ``1..`` the ``features`` (may be empty: univariate). The model learns
to forecast the next ``prediction_length`` values of channel 0 from the last ``context_length``
rows. ``target`` names the label that ``predict``'s per-row value estimates; it must be a column of
the frames (checked like every engine) and is recorded, but the forecaster trains on the series'
own future values, not on the label column. Validation windows need ``context_length`` rows of the
validation frame before their anchor (the validation frame is not glued to the train frame).

Prediction. ``predict(frame)`` returns one float64 per row of ``frame`` (in its order): the sum of
forecast steps ``output_start .. output_start + output_steps - 1`` (1-based) for the window whose
last input row is that row; NaN where the row has no complete window (the first rows of a series,
missing values). Default: step 1 only, i.e. the next bar's log return ``ln(close[t+1]/close[t])``.
For ``forward_return_h`` with ``latency_bars = L`` (``clm.labels.forward``) use
``output_start = L + 1, output_steps = h`` (requires ``prediction_length >= L + h``): the sum of
forecast log returns is the forecast cumulative log return.

Training. AdamW; every step samples ``windows_batch_size`` training windows uniformly with a seeded
generator (neuralforecast's ``windows_batch_size``); every ``val_check_steps`` steps the loss on the
validation windows (at most ``max_validation_windows``, evenly spaced) drives ReduceLROnPlateau
(``lr_factor``, ``lr_patience``) and early stopping (``early_stopping_patience`` checks without
improvement); the best checkpoint is restored at the end. Loss: MAE or MSE on values divided by the
training data's per-channel standard deviation. Gradients are clipped to ``gradient_clip`` (L2
norm; 0 = off). On CPU the run is deterministic: ``torch.manual_seed(seed)``, a seeded sampler and
``torch.use_deterministic_algorithms(True)`` (restored afterwards), ``torch.set_num_threads`` from
``num_threads`` when given. ``device="auto"`` picks CUDA when available; ``mixed_precision`` uses
autocast (bfloat16 where supported, else float16 with a gradient scaler) on CUDA only.

Artefacts. ``weights.pt`` (``torch.save`` of the ``state_dict``), ``model.ts`` (TorchScript export by
``torch.jit.trace``, CPU, eval mode: ``torch.jit.load(path)(x)`` with ``x`` float32 ``(batch,
channels, context_length)`` gives the raw forecast: N-HiTS ``(batch, H)``, PatchTST ``(batch,
channels, H)``; made reproducible by ``torchscript_bytes``; ``torch.jit.script`` compiles both
models too, but its bytes vary between processes), ``config.json`` and ``manifest.json`` (sha256 of each). ``load`` verifies
the manifest first and reads the weights with ``torch.load(..., weights_only=True)``. Nothing
time-dependent is saved, so retraining with the same seed on CPU gives byte-identical files.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from clm.checks import is_finite_number, is_int
from clm.models.artifacts import (
    CONFIG_FILE,
    FORMAT_VERSION,
    ArtifactError,
    ArtifactManifest,
    json_safe,
    read_engine_config,
    write_bytes,
    write_json,
    write_manifest,
)
from clm.models.base import EngineConfig, FitReport, LogFn, check_features, no_log
from clm.models.windows import TRANSFORMS, SeriesWindows, make_windows

WEIGHTS_FILE = "weights.pt"
SCRIPT_FILE = "model.ts"
DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("mae", "mse")
FIT_SUMMARY_KEYS = (
    "best_iteration", "best_step", "steps", "best_validation_loss", "train_rows", "validation_rows", "device",
    "autocast_dtype",
)


class _Checker:
    """Range checks whose messages name the config class and field."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.prefix = type(config).__name__

    def value(self, name: str) -> Any:
        return getattr(self.config, name)

    def fail(self, name: str, what: str) -> None:
        raise ValueError(f"{self.prefix}.{name} must be {what}, got {self.value(name)!r}")

    def int(self, name: str, low: int, high: int | None = None, optional: bool = False) -> None:
        v = self.value(name)
        if optional and v is None:
            return
        if not is_int(v) or v < low or (high is not None and v > high):
            self.fail(name, f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}")

    def num(self, name: str, low: float, high: float, high_open: bool = False) -> None:
        v = self.value(name)
        ok = is_finite_number(v) and low <= v and (v < high if high_open else v <= high)
        if not ok:
            self.fail(name, f"a number in [{low}, {high}{')' if high_open else ']'}")

    def choice(self, name: str, options: tuple) -> None:
        if self.value(name) not in options:
            self.fail(name, f"one of {options}")

    def flag(self, name: str) -> None:
        if not isinstance(self.value(name), bool):
            self.fail(name, "a bool")

    def ints(self, name: str, low: int, high: int, length: int | None = None) -> None:
        v = self.value(name)
        if isinstance(v, list):
            v = tuple(v)
            object.__setattr__(self.config, name, v)
        if not isinstance(v, tuple) or not v or not all(is_int(x) and low <= x <= high for x in v):
            self.fail(name, f"a non-empty tuple of ints in [{low}, {high}]")
        if length is not None and len(v) != length:
            self.fail(name, f"a tuple of {length} ints (one per stack)")


@dataclass(frozen=True)
class TorchConfig(EngineConfig):
    """Data and training options shared by the torch engines; see the module doc."""

    context_length: int = 96
    prediction_length: int = 12
    series: str = "close"
    series_transform: str = "log_return"
    output_start: int = 1
    output_steps: int = 1
    loss: str = "mae"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 1000
    windows_batch_size: int = 128
    batch_size: int = 1024
    val_check_steps: int = 50
    max_validation_windows: int = 8192
    early_stopping_patience: int = 10
    lr_patience: int = 3
    lr_factor: float = 0.5
    gradient_clip: float = 1.0
    seed: int = 1
    num_threads: int | None = None
    device: str = "auto"
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        c = _Checker(self)
        c.int("context_length", 10, 512)
        c.int("prediction_length", 1, 48)
        if not isinstance(self.series, str) or not self.series:
            c.fail("series", "a column name")
        c.choice("series_transform", TRANSFORMS)
        c.int("output_start", 1, 48)
        c.int("output_steps", 1, 48)
        last_step = self.output_start + self.output_steps - 1
        if is_int(self.prediction_length) and last_step > self.prediction_length:
            c.fail(
                "output_steps",
                f"<= prediction_length - output_start + 1 (the last step summed must be forecast; "
                f"prediction_length {self.prediction_length}, output_start {self.output_start})",
            )
        c.choice("loss", LOSSES)
        c.num("learning_rate", 1e-6, 1.0)
        c.num("weight_decay", 0.0, 1.0)
        c.int("max_steps", 1)
        c.int("windows_batch_size", 1)
        c.int("batch_size", 1)
        c.int("val_check_steps", 1)
        c.int("max_validation_windows", 1)
        c.int("early_stopping_patience", 1)
        c.int("lr_patience", 0)
        c.num("lr_factor", 0.0, 1.0, high_open=True)
        if not (is_finite_number(self.lr_factor) and self.lr_factor > 0):
            c.fail("lr_factor", "a number in (0, 1)")
        c.num("gradient_clip", 0.0, 1e6)
        c.int("seed", 0, 2**63 - 1)
        c.int("num_threads", 1, 1024, optional=True)
        c.choice("device", DEVICES)
        c.flag("mixed_precision")


def autocast_dtype(device: str, mixed_precision: bool) -> Any:
    """The autocast dtype on CUDA with ``mixed_precision`` (bfloat16 where supported, else float16); None on CPU."""
    import torch

    if device != "cuda" or not mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    return device


@dataclass
class TrainResult:
    train_loss: list[float]
    validation_loss: list[float]
    best_check: int  # 1-based
    steps: int
    stopped_early: bool
    device: str
    autocast_dtype: str | None  # "bfloat16"/"float16" when mixed precision ran, else None


def _loss_fn(kind: str) -> Callable:
    import torch

    if kind == "mae":
        return lambda err: err.abs().mean()
    return lambda err: torch.square(err).mean()


def train_module(
    module: Any,
    train: SeriesWindows,
    validation: SeriesWindows,
    config: TorchConfig,
    *,
    all_channels: bool,
    log: LogFn = no_log,
    tag: str = "torch",
) -> TrainResult:
    """Train ``module`` in place (see the module doc); the best checkpoint is restored.

    ``all_channels``: the module forecasts every channel ``(B, ch, H)`` and the loss covers them
    all (PatchTST); otherwise it forecasts channel 0 ``(B, H)`` (N-HiTS).
    """
    import torch

    device = resolve_device(config.device)
    cuda = device == "cuda"
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if not cuda:
        torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(config.seed)  # dropout
        sampler = torch.Generator().manual_seed(config.seed)
        module.to(device)
        # the fused kernel (CPU and CUDA) updates every parameter in one pass: ~7% of a CPU step saved
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
        _, scale_np = train.channel_stats()
        scale = torch.from_numpy(scale_np).to(device)
        loss_scale = scale[None, :, None] if all_channels else scale[0]
        loss_fn = _loss_fn(config.loss)
        amp_dtype = autocast_dtype(device, config.mixed_precision)
        grad_scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

        def autocast() -> Any:
            return torch.autocast(device, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

        n_val = len(validation)
        val_index = (
            np.linspace(0, n_val - 1, config.max_validation_windows).round().astype(np.int64)
            if n_val > config.max_validation_windows
            else np.arange(n_val)
        )
        val_x, val_y = validation.split(val_index)
        val_x = torch.from_numpy(val_x)
        val_y = torch.from_numpy(val_y if all_channels else val_y[:, 0, :])

        def evaluate() -> float:
            module.eval()
            total, count = 0.0, 0
            with torch.no_grad(), autocast():
                for lo in range(0, val_x.shape[0], config.batch_size):
                    x = val_x[lo : lo + config.batch_size].to(device)
                    y = val_y[lo : lo + config.batch_size].to(device)
                    err = (module(x).float() - y) / loss_scale
                    total += float(loss_fn(err)) * x.shape[0]
                    count += x.shape[0]
            module.train()
            return total / max(count, 1)

        train_losses: list[float] = []
        val_losses: list[float] = []
        best, best_check, best_state, bad_checks = math.inf, 0, None, 0
        running, running_n, stopped_early, step = 0.0, 0, False, 0
        n_train = len(train)
        module.train()
        for step in range(1, config.max_steps + 1):
            idx = torch.randint(n_train, (config.windows_batch_size,), generator=sampler).numpy()
            x_np, y_np = train.split(idx)
            x = torch.from_numpy(x_np).to(device)
            y = torch.from_numpy(y_np if all_channels else y_np[:, 0, :]).to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = module(x)
            loss = loss_fn((out.float() - y) / loss_scale)
            grad_scaler.scale(loss).backward()
            if config.gradient_clip > 0:
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.gradient_clip)
            grad_scaler.step(optimizer)
            grad_scaler.update()
            running += float(loss.detach())
            running_n += 1
            if step % config.val_check_steps == 0 or step == config.max_steps:
                train_losses.append(running / running_n)
                running, running_n = 0.0, 0
                val_loss = evaluate() if n_val else train_losses[-1]
                val_losses.append(val_loss)
                scheduler.step(val_loss)
                log(
                    f"[{tag}] step {step}/{config.max_steps}: train_loss {train_losses[-1]:.6g}, "
                    f"val_loss {val_loss:.6g}, lr {optimizer.param_groups[0]['lr']:.3g}"
                )
                if val_loss < best:
                    best, best_check, bad_checks = val_loss, len(val_losses), 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad_checks += 1
                    if bad_checks >= config.early_stopping_patience:
                        stopped_early = True
                        log(f"[{tag}] early stop at step {step}: best check {best_check}")
                        break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        return TrainResult(train_losses, val_losses, best_check, step, stopped_early, device,
                           str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None)
    finally:
        torch.use_deterministic_algorithms(previous_det)
        torch.set_num_threads(previous_threads)


def torchscript_bytes(module: Any, example: Any) -> bytes:
    """A reproducible TorchScript export of ``module`` (eval mode, traced on ``example``).

    Plain ``torch.jit.script``/``trace`` + ``save`` give different bytes for the same weights:
    scripted code lists module constants in Python's per-process hash order, type names get
    process-wide ``___torch_mangle_N`` counters, and the ``*.debug_pkl`` records hold the Python
    call stack of whoever called ``save``. So: trace (no constant lists) into a fresh compilation
    unit (counters start at 0), then rewrite the archive without the debug records (optional for
    ``torch.jit.load``; error messages lose source lines) and without ``.data/`` (re-written by
    the writer).
    """
    import torch
    import torch.jit._state as jit_state

    buffer = io.BytesIO()
    previous_cu = jit_state._python_cu
    jit_state._python_cu = torch._C.CompilationUnit()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13: TorchScript deprecated
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.jit.save(torch.jit.trace(module.eval(), example), buffer)
    finally:
        jit_state._python_cu = previous_cu
    reader = torch._C.PyTorchFileReader(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for name in reader.get_all_records():
        if name.endswith(".debug_pkl") or name.startswith(".data/"):
            continue
        record = reader.get_record(name)
        writer.write_record(name, record, len(record))
    writer.write_end_of_file()
    del writer
    return out.getvalue()


class TorchEngine(ABC):
    """Base of ``NHITSEngine`` / ``PatchTSTEngine``: fit/predict/save/load/metadata."""

    name: ClassVar[str]
    task: ClassVar[str] = "regression"
    config_class: ClassVar[type[TorchConfig]] = TorchConfig
    all_channels: ClassVar[bool] = False  # the module forecasts every channel (B, ch, H)
    # trains on contiguous windows of its own series, not on label rows: walk-forward hands it whole
    # time ranges (cut before the purge boundary) and the history before each test window
    sequence: ClassVar[bool] = True

    def __init__(self, config: TorchConfig | None = None) -> None:
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.features: list[str] = []
        self.target: str | None = None
        self.feature_version: str | None = None
        self.report: FitReport | None = None
        self.fit_summary: dict[str, Any] = {}
        self.module: Any = None

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def build_module(self, n_channels: int) -> Any:
        """The torch module for ``n_channels`` input channels (each model defines its own)."""

    def _prepare_module(self, module: Any, train: SeriesWindows) -> None:
        """Hook run before training (N-HiTS sets its input scaler)."""

    # ------------------------------------------------------------------ data
    def windows(self, frame: pl.DataFrame, prediction_length: int) -> SeriesWindows:
        cfg = self.config
        return make_windows(
            frame,
            context_length=cfg.context_length,
            prediction_length=prediction_length,
            series=cfg.series,
            transform=cfg.series_transform,
            features=self.features,
        )

    def _check(self, frame: pl.DataFrame, features: list[str], target: str | None, what: str) -> list[str]:
        if features:
            features = check_features(frame, features, target, what=what)
        needed = ["symbol", "timestamp", self.config.series] + ([target] if target else [])
        missing = [c for c in needed if c not in frame.collect_schema().names()]
        if missing:
            raise ValueError(f"{what} lacks columns {missing} (symbol/timestamp/series/target)")
        return list(features)

    # ------------------------------------------------------------------ Engine API
    def fit(
        self,
        train: pl.DataFrame,
        validation: pl.DataFrame,
        *,
        features: list[str] | tuple[str, ...] = (),
        target: str,
        log: LogFn = no_log,
        feature_version: str | None = None,
    ) -> FitReport:
        """Train on ``train``'s windows, early-stop on ``validation``'s (see the module doc)."""
        features = self._check(train, list(features), target, "train frame")
        self._check(validation, features, target, "validation frame")
        start = time.perf_counter()
        cfg = self.config
        self.features, self.target, self.feature_version = features, target, feature_version
        train_w = self.windows(train, cfg.prediction_length)
        valid_w = self.windows(validation, cfg.prediction_length)
        if len(train_w) == 0:
            raise ValueError(
                f"train frame has no complete window of {cfg.context_length} + {cfg.prediction_length} rows"
            )
        if len(valid_w) == 0:
            log(f"[{self.name}] validation frame has no complete window: early stopping on train loss")
        import torch

        torch.manual_seed(cfg.seed)  # weight initialisation, then training, from the same seed
        module = self.build_module(train_w.n_channels)
        self._prepare_module(module, train_w)
        log(
            f"[{self.name}] training on {len(train_w)} windows ({train.height} rows), "
            f"validation {len(valid_w)} windows, {sum(p.numel() for p in module.parameters())} parameters"
        )
        result = train_module(
            module, train_w, valid_w, cfg, all_channels=self.all_channels, log=log, tag=self.name
        )
        self.module = module.cpu().eval()
        seconds = time.perf_counter() - start
        self.report = FitReport(
            engine=self.name, best_iteration=result.best_check, metric=cfg.loss,
            train_loss=result.train_loss, validation_loss=result.validation_loss, seconds=seconds,
            train_rows=len(train_w), validation_rows=len(valid_w), stopped_early=result.stopped_early,
        )
        self.fit_summary = {
            "best_iteration": result.best_check,
            "best_step": min(result.best_check * cfg.val_check_steps, result.steps),
            "steps": result.steps,
            "metric": cfg.loss,
            "best_validation_loss": result.validation_loss[result.best_check - 1]
            if result.validation_loss else None,
            "train_rows": len(train_w),
            "validation_rows": len(valid_w),
            "device": result.device,
            "autocast_dtype": result.autocast_dtype,
        }
        log(f"[{self.name}] done in {seconds:.1f}s: {self.fit_summary}")
        return self.report

    def _require_fitted(self) -> Any:
        if self.module is None:
            raise RuntimeError(f"{self.name} is not fitted (call fit or load first)")
        return self.module

    def forecast(self, frame: pl.DataFrame) -> tuple[np.ndarray, SeriesWindows]:
        """Raw forecasts ``(n_windows, prediction_length)`` of channel 0 and their windows.

        Runs on the configured device (CUDA under ``device="auto"`` when present, with autocast when
        ``mixed_precision``); the module itself stays on the CPU between calls, as saved."""
        import torch

        module = self._require_fitted()
        self._check(frame, self.features, None, "prediction frame")
        w = self.windows(frame, 0)
        out = np.zeros((len(w), self.config.prediction_length), dtype=np.float64)
        device = resolve_device(self.config.device)
        amp_dtype = autocast_dtype(device, self.config.mixed_precision)
        module.eval()
        try:
            if device != "cpu":
                module.to(device)
            with torch.inference_mode(), torch.autocast(device, dtype=amp_dtype or torch.float32,
                                                        enabled=amp_dtype is not None):
                for lo in range(0, len(w), self.config.batch_size):
                    x = torch.from_numpy(w.batch(slice(lo, lo + self.config.batch_size))).to(device)
                    y = module(x)
                    if self.all_channels:
                        y = y[:, 0, :]
                    out[lo : lo + x.shape[0]] = y.double().cpu().numpy()
        finally:
            if device != "cpu":
                module.cpu()
        return out, w

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Per row of ``frame``: the sum of the configured forecast steps; NaN without a window."""
        raw, w = self.forecast(frame)
        lo = self.config.output_start - 1
        values = raw[:, lo : lo + self.config.output_steps].sum(axis=1)
        result = np.full(frame.height, np.nan)
        result[w.row_index] = values
        return result

    # ------------------------------------------------------------------ artefacts
    def _config_payload(self) -> dict:
        import torch

        return json_safe({
            "format_version": FORMAT_VERSION,
            "engine": self.name,
            "task": self.task,
            "config": self.config.to_dict(),
            "features": self.features,
            "channels": [self.config.series, *self.features],
            "target": self.target,
            "feature_version": self.feature_version,
            "fit": self.fit_summary,
            "torch_version": torch.__version__,
        })

    def save(self, directory: Path) -> ArtifactManifest:
        """Write ``weights.pt``, ``model.ts``, ``config.json`` and (last) ``manifest.json``."""
        import torch

        module = self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        write_bytes(directory, WEIGHTS_FILE, buffer.getvalue())
        example = torch.zeros(2, 1 + len(self.features), self.config.context_length)
        write_bytes(directory, SCRIPT_FILE, torchscript_bytes(module, example))
        write_json(directory, CONFIG_FILE, self._config_payload())
        return write_manifest(directory, [WEIGHTS_FILE, SCRIPT_FILE, CONFIG_FILE], engine=self.name)

    @classmethod
    def load(cls, directory: Path) -> TorchEngine:
        """Verify the manifest, then rebuild the module and load ``weights.pt`` (weights only)."""
        import torch

        directory = Path(directory)
        payload = read_engine_config(directory, cls.name)
        engine = cls(cls.config_class.from_dict(payload["config"]))
        engine.features = list(payload["features"])
        engine.target = payload.get("target")
        engine.feature_version = payload.get("feature_version")
        engine.fit_summary = dict(payload.get("fit") or {})
        module = engine.build_module(1 + len(engine.features))
        try:
            state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception as exc:  # verified bytes that still do not fit the module
            raise ArtifactError(f"{WEIGHTS_FILE} in {directory} does not load: {exc}") from exc
        engine.module = module.eval()
        return engine

    def metadata(self) -> dict:
        module = self.module
        return json_safe({
            "engine": self.name,
            "task": self.task,
            "config": self.config.to_dict(),
            "features": self.features,
            "target": self.target,
            "feature_version": self.feature_version,
            "parameters": sum(p.numel() for p in module.parameters()) if module is not None else None,
            **{k: self.fit_summary.get(k) for k in FIT_SUMMARY_KEYS},
            "seconds": self.report.seconds if self.report is not None else None,
        })


