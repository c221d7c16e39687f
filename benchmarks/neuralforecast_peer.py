"""neuralforecast's NHITS or PatchTST on the peer series of ``benchmarks/train.py`` (bench only).

Runs inside ``.venv-nf`` (torch 2.13.0 then neuralforecast 3.3.0; ``make .venv-nf/.installed``),
never in the project's venv, and imports nothing from ``clm``. Input: the parent's Parquet of close
prices (``symbol, timestamp, close, valid_start``). The series is the one-bar log return
``ln(close[t] / close[t-1])``; bars before ``valid_start`` train the model (``NeuralForecast.fit``
with ``val_size=0``: no validation during training, so every run takes ``max_steps`` steps), then
the fitted model forecasts every window whose ``h`` targets lie in the validation bars
(``cross_validation(use_fitted=True, refit=False, step_size=1)``: inputs may reach back into the
training bars). Settings besides the ones passed (input size, horizon, steps, windows batch,
learning rate, seed): MAE loss, a constant learning rate (``num_lr_decays=-1``; NHITS's default
would halve it 3 times), gradient clipping at 1.0 (as clm), CPU, no progress bar, logger or
checkpointing; every other hyper-parameter is neuralforecast's default.

Writes the forecasts (``symbol, anchor, forecast``: the ``h`` steps after the anchor bar) to
``--out`` and prints one JSON line: the training wall time of each fit (best and all), the
parameter count, and the versions.

    .venv-nf/bin/python benchmarks/neuralforecast_peer.py --model nhits --series S.parquet --out F.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import warnings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("nhits", "patchtst"), required=True)
    parser.add_argument("--series", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--h", type=int, default=12)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--windows-batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTORCH_LIGHTNING_DISABLE_VERSION_CHECK", "1")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import numpy as np
    import pandas as pd
    import torch
    from neuralforecast import NeuralForecast, __version__ as nf_version
    from neuralforecast.losses.pytorch import MAE
    from neuralforecast.models import NHITS, PatchTST

    raw = pd.read_parquet(args.series).sort_values(["symbol", "timestamp"])
    raw["y"] = np.log(raw["close"] / raw.groupby("symbol")["close"].shift(1))
    raw = raw.dropna(subset=["y"])
    df = raw.rename(columns={"symbol": "unique_id", "timestamp": "ds"})[["unique_id", "ds", "y", "valid_start"]]
    df["ds"] = pd.to_datetime(df["ds"])
    train = df[df["ds"] < df["valid_start"]][["unique_id", "ds", "y"]].reset_index(drop=True)
    full = df[["unique_id", "ds", "y"]].reset_index(drop=True)
    test_sizes = (df["ds"] >= df["valid_start"]).groupby(df["unique_id"]).sum()

    common = dict(
        h=args.h, input_size=args.input_size, max_steps=args.max_steps, windows_batch_size=args.windows_batch_size,
        learning_rate=args.learning_rate, random_seed=args.seed, loss=MAE(), num_lr_decays=-1,
        early_stop_patience_steps=-1, val_check_steps=args.max_steps, gradient_clip_val=1.0, accelerator="cpu",
        devices=1, enable_progress_bar=False, logger=False, enable_model_summary=False, enable_checkpointing=False,
    )
    cls = NHITS if args.model == "nhits" else PatchTST

    times, nf = [], None
    for _ in range(args.reps):
        nf = NeuralForecast(models=[cls(**common)], freq="5min")
        start = time.perf_counter()
        nf.fit(df=train, val_size=0)
        times.append(time.perf_counter() - start)
    model = nf.models[0]
    column = str(model)

    parts = []
    for size, ids in test_sizes.groupby(test_sizes).groups.items():  # one pass per validation length
        cv = nf.cross_validation(df=full[full["unique_id"].isin(list(ids))], n_windows=None, test_size=int(size),
                                 step_size=1, use_fitted=True, refit=False)
        parts.append(cv)
    cv = pd.concat(parts).sort_values(["unique_id", "cutoff", "ds"])
    forecasts = (
        cv.groupby(["unique_id", "cutoff"], sort=True)[column].apply(lambda s: s.to_numpy(dtype=np.float64).tolist())
        .reset_index()
        .rename(columns={"unique_id": "symbol", "cutoff": "anchor", column: "forecast"})
    )
    bad = forecasts["forecast"].map(len) != args.h
    if bad.any():
        raise RuntimeError(f"{int(bad.sum())} windows without {args.h} forecast steps")
    forecasts.to_parquet(args.out, index=False)
    out = {
        "train_s": min(times), "train_times_s": times, "steps": int(model.global_step if hasattr(model, "global_step")
                                                                     else args.max_steps),
        "parameters": int(sum(p.numel() for p in model.parameters())), "windows": int(len(forecasts)),
        "neuralforecast": nf_version, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "settings": {k: (str(v) if k == "loss" else v) for k, v in common.items()},
    }
    sys.stdout.flush()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
