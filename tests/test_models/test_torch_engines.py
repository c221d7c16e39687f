"""N-HiTS / PatchTST engines: shapes, learning, determinism, artefacts, windows, config checks."""

import hashlib
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from clm.models import ArtifactError, engine_from_config  # noqa: E402
from clm.models.nhits import NHITS, NHITSConfig, NHITSEngine  # noqa: E402
from clm.models.patchtst import PatchTST, PatchTSTConfig, PatchTSTEngine, RevIN, patch_count  # noqa: E402
from clm.models.torch_engine import SCRIPT_FILE, WEIGHTS_FILE  # noqa: E402
from clm.models.windows import make_windows  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TINY = {
    "nhits": dict(hidden_size=32, mlp_layers=2, pool_sizes=(2, 1), n_freq_downsample=(2, 1), n_blocks=(1, 1)),
    "patchtst": dict(patch_length=8, stride=4, d_model=16, n_heads=2, d_ff=32, n_layers=1, dropout=0.0),
}


def sine_frame(n=1200, period=20, noise=0.1, seed=0, symbol="SIN"):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = np.sin(2 * np.pi * t / period) + noise * rng.standard_normal(n)
    return pl.DataFrame({
        "symbol": [symbol] * n,
        "timestamp": [T0 + timedelta(minutes=5 * i) for i in range(n)],
        "segment_id": np.zeros(n, dtype=np.int32),
        "y": y,
        "target": np.append(y[1:], np.nan),
    })


def tiny(name, **overrides):
    options = dict(
        context_length=32, prediction_length=4, series="y", series_transform="none", max_steps=300,
        windows_batch_size=32, val_check_steps=50, learning_rate=3e-3, seed=7, device="cpu",
        num_threads=1, **TINY[name],
    )
    options.update(overrides)
    return engine_from_config(name, options)


def fit(name, frame=None, **overrides):
    frame = sine_frame() if frame is None else frame
    engine = tiny(name, **overrides)
    engine.fit(frame[:900], frame[900:], features=[], target="target")
    return engine


@pytest.fixture(scope="module", params=["nhits", "patchtst"])
def fitted(request):
    return request.param, fit(request.param)


# ------------------------------------------------------------------------------------ shapes
def test_forward_shapes():
    x = torch.randn(5, 48)
    assert NHITS(48, 6, hidden_size=16)(x).shape == (5, 6)
    assert NHITS(48, 6, n_exog=2, hidden_size=16)(torch.randn(5, 3, 48)).shape == (5, 6)
    model = PatchTST(48, 6, n_channels=1, patch_length=8, stride=4, d_model=16, n_heads=2, d_ff=32)
    assert model(x).shape == (5, 6)
    multi = PatchTST(48, 6, n_channels=3, patch_length=8, stride=4, d_model=16, n_heads=2, d_ff=32, norm="layer")
    assert multi(torch.randn(5, 3, 48)).shape == (5, 3, 6)


def test_revin_round_trip_is_identity():
    revin = RevIN(3)
    with torch.no_grad():
        revin.weight.copy_(torch.tensor([0.5, 2.0, -1.5]))
        revin.bias.copy_(torch.tensor([0.1, -3.0, 7.0]))
    x = torch.randn(4, 3, 50) * 10 + 5
    z, mean, std = revin.normalize(x)
    assert torch.allclose(((z - revin.bias[None, :, None]) / revin.weight[None, :, None]).mean(-1),
                          torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(revin.denormalize(z, mean, std), x, atol=1e-4)


@pytest.mark.parametrize("length,patch,stride", [(96, 16, 8), (32, 8, 4), (50, 7, 3), (10, 4, 4), (64, 32, 1)])
def test_patch_count(length, patch, stride):
    model = PatchTST(length, 4, patch_length=patch, stride=stride, d_model=16, n_heads=1, d_ff=8, n_layers=1)
    patches = model.patches(torch.arange(length, dtype=torch.float32)[None, :])
    assert patches.shape == (1, patch_count(length, patch, stride), patch)
    assert patch_count(length, patch, stride) == (length - patch) // stride + 2
    assert float(patches[0, -1, -1]) == length - 1  # end padding repeats the last value


# ---------------------------------------------------------------------------------- learning
def test_beats_naive_last_value_on_sine(fitted):
    name, engine = fitted
    valid = sine_frame()[900:]
    pred = engine.predict(valid)
    y_next = valid["target"].to_numpy()
    ok = np.isfinite(pred) & np.isfinite(y_next)
    assert ok.sum() > 200 and np.isnan(pred[: engine.config.context_length - 1]).all()
    model_mae = np.abs(pred[ok] - y_next[ok]).mean()
    naive_mae = np.abs(valid["y"].to_numpy()[ok] - y_next[ok]).mean()
    assert model_mae < 0.75 * naive_mae, (name, model_mae, naive_mae)
    report = engine.report
    assert report.metric == "mae" and len(report.validation_loss) == len(report.train_loss) >= 1
    assert 1 <= report.best_iteration <= len(report.validation_loss)


# ------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", ["nhits", "patchtst"])
def test_same_seed_gives_identical_weights_and_files(name, tmp_path):
    overrides = dict(max_steps=40, val_check_steps=20, dropout=0.1)
    a, b = fit(name, **overrides), fit(name, **overrides)
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ma = a.save(tmp_path / "a")
    saved = {}  # b saved from another thread: another call stack must not change the bytes
    worker = threading.Thread(target=lambda: saved.update(m=b.save(tmp_path / "b")))
    worker.start()
    worker.join()
    mb = saved["m"]
    assert ma.digest == mb.digest
    assert ma.files == mb.files and set(ma.files) == {WEIGHTS_FILE, SCRIPT_FILE, "config.json"}
    for file in ma.files:
        digest = [hashlib.sha256((tmp_path / d / file).read_bytes()).hexdigest() for d in "ab"]
        assert digest[0] == digest[1] == ma.files[file]
    c = fit(name, **{**overrides, "seed": 8})
    assert not all(torch.equal(sa[k], c.module.state_dict()[k]) for k in sa)


# --------------------------------------------------------------------------------- artefacts
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_save_load_round_trip_and_torchscript(fitted, tmp_path, monkeypatch):
    name, engine = fitted
    frame = sine_frame(n=300, seed=3)
    engine.save(tmp_path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = type(engine).load(tmp_path)
    assert calls and all(c.get("weights_only") is True for c in calls)
    np.testing.assert_array_equal(loaded.predict(frame), engine.predict(frame))
    assert loaded.metadata()["engine"] == name and loaded.metadata()["features"] == []

    scripted = torch.jit.load(str(tmp_path / SCRIPT_FILE))
    windows = make_windows(frame, context_length=32, series="y", transform="none")
    x = torch.from_numpy(windows.batch())
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), engine.module(x).numpy(), rtol=1e-5, atol=1e-6)


def test_tampered_weights_refuse_to_load(fitted, tmp_path):
    name, engine = fitted
    engine.save(tmp_path)
    data = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=WEIGHTS_FILE):
        type(engine).load(tmp_path)


def test_exogenous_features_are_channels(tmp_path):
    frame = sine_frame(n=400).with_columns(pl.col("y").shift(1).fill_null(0.0).alias("lag"))
    for name in ("nhits", "patchtst"):
        engine = tiny(name, max_steps=5, val_check_steps=5)
        engine.fit(frame[:300], frame[300:], features=["lag"], target="target")
        engine.save(tmp_path / name)
        loaded = engine_from_config(name, engine.config.to_dict()).load(tmp_path / name)
        assert loaded.features == ["lag"]
        np.testing.assert_array_equal(loaded.predict(frame), engine.predict(frame))
        with pytest.raises(ValueError, match="lag"):
            engine.predict(frame.drop("lag"))


def test_import_does_not_load_torch():
    code = ("import sys, clm.models as m; names = m.known_engines(); "
            "assert {'nhits', 'patchtst'} <= set(names), names; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------- windows
def test_windows_never_cross_a_series_boundary():
    parts = []
    for symbol, segment, n in [("A", 0, 30), ("A", 1, 7), ("A", 2, 25), ("B", 0, 40)]:
        code = {"A": 0, "B": 1}[symbol] * 10_000 + segment * 1000
        parts.append(pl.DataFrame({
            "symbol": [symbol] * n,
            "segment_id": [segment] * n,
            "timestamp": [T0 + timedelta(minutes=5 * (i + 100 * segment)) for i in range(n)],
            "v": np.arange(n, dtype=np.float64) + code,
        }))
    frame = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=1)  # order must not matter
    frame = frame.with_columns(pl.when(pl.col("v") == 10_005).then(None).otherwise(pl.col("v")).alias("v"))
    w = make_windows(frame, context_length=10, prediction_length=3, series="v", transform="none")
    batch = w.batch()[:, 0, :]
    assert np.all(np.diff(batch, axis=1) == 1)  # consecutive rows of one series
    assert np.all(batch // 1000 == batch[:, :1] // 1000)  # one series per window
    # A0: 30-13+1 = 18, A1: too short, A2: 25-13+1 = 13, B0: 40 rows but v=10005 missing -> 40-13+1-6
    assert len(w) == 18 + 0 + 13 + (28 - 6)
    anchors = frame["v"].to_numpy()[w.row_index]
    np.testing.assert_array_equal(anchors, batch[:, 9])
    assert set(w.symbols) == {"A", "B"}
    inputs, targets = w.split()
    assert inputs.shape == (len(w), 1, 10) and targets.shape == (len(w), 1, 3)

    returns = make_windows(frame.with_columns(pl.col("v") + 1.0), context_length=10, series="v")
    # no return at a series' first row, nor at the missing row and the one after it (B rows 5, 6)
    assert len(returns) == (29 - 10 + 1) + (24 - 10 + 1) + (33 - 10 + 1)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "cls,field,value",
    [
        (NHITSConfig, "context_length", 9), (NHITSConfig, "context_length", 513),
        (NHITSConfig, "prediction_length", 0), (NHITSConfig, "prediction_length", 49),
        (NHITSConfig, "learning_rate", 0.0), (NHITSConfig, "learning_rate", 2.0),
        (NHITSConfig, "max_steps", 0), (NHITSConfig, "windows_batch_size", 0),
        (NHITSConfig, "batch_size", 0), (NHITSConfig, "early_stopping_patience", 0),
        (NHITSConfig, "gradient_clip", -1.0), (NHITSConfig, "device", "tpu"),
        (NHITSConfig, "mixed_precision", "yes"), (NHITSConfig, "seed", -1), (NHITSConfig, "loss", "huber"),
        (NHITSConfig, "n_freq_downsample", (4, 2)), (NHITSConfig, "output_steps", 13),
        (NHITSConfig, "max_steps", True),
        (PatchTSTConfig, "patch_length", 3), (PatchTSTConfig, "patch_length", 33),
        (PatchTSTConfig, "stride", 0), (PatchTSTConfig, "d_model", 8), (PatchTSTConfig, "d_model", 1024),
        (PatchTSTConfig, "n_heads", 0), (PatchTSTConfig, "n_heads", 17), (PatchTSTConfig, "n_heads", 6),
        (PatchTSTConfig, "norm", "group"),
    ],
)
def test_config_errors_name_the_field(cls, field, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field} must be"):
        cls(**{field: value})


def test_patch_longer_than_context_and_unknown_option():
    with pytest.raises(ValueError, match="patch_length"):
        PatchTSTConfig(context_length=16, patch_length=20)
    with pytest.raises(ValueError, match="unknown option"):
        engine_from_config("nhits", {"epochs": 3})
    assert isinstance(engine_from_config("patchtst", {"d_model": 32, "n_heads": 4}), PatchTSTEngine)
    assert NHITSConfig.from_dict(NHITSConfig(pool_sizes=[4, 1], n_freq_downsample=[2, 1],
                                             n_blocks=[1, 1]).to_dict()).pool_sizes == (4, 1)
    assert isinstance(NHITSEngine(), NHITSEngine)
