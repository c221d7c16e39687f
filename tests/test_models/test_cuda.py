"""N-HiTS / PatchTST on CUDA with mixed precision: trains there, learns, and its saved weights serve on the CPU.

Skipped without a CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/test_models/test_cuda.py``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

from clm.models.torch_engine import resolve_device  # noqa: E402

from .test_torch_engines import fit, sine_frame  # noqa: E402

ENGINES = ["nhits", "patchtst"]


@pytest.fixture(scope="module", params=ENGINES)
def cuda_fitted(request):
    return request.param, fit(request.param, device="cuda", mixed_precision=True)


def test_auto_picks_cuda():
    assert resolve_device("auto") == "cuda"


def test_trains_on_cuda_with_autocast(cuda_fitted):
    name, engine = cuda_fitted
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert engine.fit_summary["device"] == "cuda", name
    assert engine.fit_summary["autocast_dtype"] == expected, name
    assert engine.metadata()["device"] == "cuda"
    # between calls the module rests on the CPU, as saved
    assert all(p.device.type == "cpu" for p in engine.module.parameters())


def test_cuda_model_learns_the_sine(cuda_fitted):
    name, engine = cuda_fitted
    valid = sine_frame()[900:]
    pred = engine.predict(valid)
    y_next = valid["target"].to_numpy()
    ok = np.isfinite(pred) & np.isfinite(y_next)
    model_mae = np.abs(pred[ok] - y_next[ok]).mean()
    naive_mae = np.abs(valid["y"].to_numpy()[ok] - y_next[ok]).mean()
    assert model_mae < 0.75 * naive_mae, (name, model_mae, naive_mae)


def test_cuda_weights_serve_on_cpu(cuda_fitted, tmp_path):
    name, engine = cuda_fitted
    frame = sine_frame(n=300, seed=3)
    on_gpu = engine.predict(frame)  # autocast inference on CUDA
    engine.save(tmp_path)
    loaded = type(engine).load(tmp_path)
    loaded.config = type(loaded.config).from_dict({**loaded.config.to_dict(), "device": "cpu"})
    on_cpu = loaded.predict(frame)
    ok = np.isfinite(on_gpu)
    assert ok.sum() > 200 and np.array_equal(ok, np.isfinite(on_cpu))
    # bfloat16 autocast vs float32 on the CPU: close, not equal
    assert np.abs(on_gpu[ok] - on_cpu[ok]).max() < 0.05 * np.abs(on_cpu[ok]).max(), name
    scripted = torch.jit.load(str(tmp_path / "model.ts"), map_location="cuda")
    x = torch.randn(4, 1, engine.config.context_length, device="cuda")
    with torch.no_grad():
        assert torch.isfinite(scripted(x)).all()


@pytest.mark.parametrize("name", ENGINES)
def test_full_precision_cuda_matches_cpu_training_closely(name):
    """Same seed, same windows: float32 training on CUDA ends near the CPU's (not bit-equal: other kernels)."""
    overrides = dict(max_steps=100, val_check_steps=50)
    cpu = fit(name, **overrides)
    gpu = fit(name, device="cuda", **overrides)
    frame = sine_frame(n=300, seed=3)
    a, b = cpu.predict(frame), gpu.predict(frame)
    ok = np.isfinite(a)
    assert np.abs(a[ok] - b[ok]).max() < 0.05, name
