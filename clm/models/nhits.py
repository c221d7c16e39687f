"""N-HiTS (Challu et al., AAAI 2023): hierarchical interpolation for time-series forecasting.

Architecture (defaults as in neuralforecast's ``NHITS`` except the MLP depth: ``mlp_layers`` is 2
where neuralforecast stacks 4 Linear layers of 512 units, a cheaper default for the 2-core
``make run``; ``benchmarks/train.py`` sets 4 when it compares with neuralforecast):

* ``S`` stacks (default 3) of ``B`` blocks (default 1 each). Stack ``s`` has a pooling size ``k_s``
  (default ``(2, 2, 1)``) and an expressiveness ratio / ``n_freq_downsample`` ``r_s`` (default
  ``(4, 2, 1)``): early stacks see a coarse input and emit few knots (low frequencies), the last
  stack sees the raw input and emits a knot per step (high frequencies).
* Block: multi-rate input sampling ``MaxPool1d(kernel=k_s, stride=k_s, ceil_mode=True)`` over the
  target's residual window; the pooled window, concatenated with the flattened exogenous history
  (not pooled, as in neuralforecast), goes through an MLP (``mlp_layers`` Linear+ReLU layers of
  ``hidden_size`` units, optional dropout) and a linear layer emitting ``max(L // r_s, 1)``
  backcast knots and ``max(H // r_s, 1)`` forecast knots. Hierarchical interpolation: the knots
  are linearly interpolated (``F.interpolate``, ``align_corners=True``) to the input length ``L``
  and to the horizon ``H``.
* Doubly residual stacking: every block's backcast is subtracted from the residual input of the
  next block; the forecasts of all blocks are summed (plus, with ``naive_level``, the last input
  value as the starting level, like neuralforecast).

Input/output: ``x`` is ``(batch, L)`` (target only) or ``(batch, 1 + E, L)`` where channel 0 is
the target and channels ``1..E`` are exogenous features known up to the window's last bar. The
output is ``(batch, H)``: the target's next ``H`` values. Inputs are standardised per channel with
the ``loc`` / ``scale`` buffers (set by the trainer from the training data, saved with the
weights and inside the TorchScript export) and the forecast is mapped back to the target's units.
"""

import functools
from dataclasses import dataclass
from typing import Any

from clm.models.base import register_engine
from clm.models.torch_engine import TorchConfig, TorchEngine, _Checker


@functools.cache
def _classes() -> dict[str, type]:
    """The nn.Module classes, defined on first use so importing this module does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class NHITSBlock(nn.Module):
        def __init__(
            self,
            context_length: int,
            prediction_length: int,
            n_exog: int,
            pool_size: int,
            downsample: int,
            hidden_size: int,
            mlp_layers: int,
            dropout: float,
        ) -> None:
            super().__init__()
            self.context_length = context_length
            self.prediction_length = prediction_length
            self.n_backcast_knots = max(context_length // downsample, 1)
            self.n_forecast_knots = max(prediction_length // downsample, 1)
            self.pool = nn.MaxPool1d(kernel_size=pool_size, stride=pool_size, ceil_mode=True)
            pooled = -(-context_length // pool_size)
            layers: list[nn.Module] = [nn.Linear(pooled + n_exog * context_length, hidden_size), nn.ReLU()]
            for _ in range(mlp_layers - 1):
                layers += [nn.Linear(hidden_size, hidden_size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(hidden_size, self.n_backcast_knots + self.n_forecast_knots))
            self.mlp = nn.Sequential(*layers)

        def forward(self, residual: torch.Tensor, exog: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # residual: (B, L); exog: (B, E * L), possibly with E == 0
            pooled = self.pool(residual.unsqueeze(1)).squeeze(1)
            theta = self.mlp(torch.cat([pooled, exog], dim=1))
            back_knots = theta[:, : self.n_backcast_knots].unsqueeze(1)
            fore_knots = theta[:, self.n_backcast_knots :].unsqueeze(1)
            backcast = _interpolate(back_knots, self.context_length)
            forecast = _interpolate(fore_knots, self.prediction_length)
            return backcast, forecast


    def _interpolate(knots: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 1, K) knots -> (B, size): linear interpolation (identity when K == size)."""
        if knots.shape[-1] == size:
            return knots.squeeze(1)
        if knots.shape[-1] == 1:
            return knots.squeeze(1).expand(knots.shape[0], size)
        return F.interpolate(knots, size=size, mode="linear", align_corners=True).squeeze(1)


    class NHITS(nn.Module):
        """N-HiTS forecaster: ``forward(x) -> (batch, prediction_length)``; see the module doc."""

        def __init__(
            self,
            context_length: int = 96,
            prediction_length: int = 12,
            n_exog: int = 0,
            pool_sizes: tuple[int, ...] = (2, 2, 1),
            n_freq_downsample: tuple[int, ...] = (4, 2, 1),
            n_blocks: tuple[int, ...] = (1, 1, 1),
            hidden_size: int = 512,
            mlp_layers: int = 2,
            dropout: float = 0.0,
            naive_level: bool = True,
        ) -> None:
            super().__init__()
            if not (len(pool_sizes) == len(n_freq_downsample) == len(n_blocks)):
                raise ValueError("pool_sizes, n_freq_downsample and n_blocks need one entry per stack")
            self.context_length = context_length
            self.prediction_length = prediction_length
            self.n_exog = n_exog
            self.naive_level = naive_level
            self.blocks = nn.ModuleList(
                NHITSBlock(
                    context_length, prediction_length, n_exog, pool, down, hidden_size, mlp_layers, dropout
                )
                for pool, down, count in zip(pool_sizes, n_freq_downsample, n_blocks)
                for _ in range(count)
            )
            self.register_buffer("loc", torch.zeros(1 + n_exog))
            self.register_buffer("scale", torch.ones(1 + n_exog))

        def set_scaler(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
            self.loc.copy_(loc.to(self.loc))
            self.scale.copy_(scale.to(self.scale))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 2:
                x = x.unsqueeze(1)
            x = (x - self.loc[None, :, None]) / self.scale[None, :, None]
            residual = x[:, 0, :]
            exog = x[:, 1:, :].reshape(x.shape[0], -1)
            if self.naive_level:
                forecast = residual[:, -1:].expand(x.shape[0], self.prediction_length)
            else:
                forecast = torch.zeros(x.shape[0], self.prediction_length, dtype=x.dtype, device=x.device)
            for block in self.blocks:
                backcast, block_forecast = block(residual, exog)
                residual = residual - backcast
                forecast = forecast + block_forecast
            return forecast * self.scale[0] + self.loc[0]

    return {"NHITS": NHITS, "NHITSBlock": NHITSBlock}


def __getattr__(name: str):
    if name in ("NHITS", "NHITSBlock",):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class NHITSConfig(TorchConfig):
    """``TorchConfig`` plus the N-HiTS architecture (neuralforecast's NHITS defaults but ``mlp_layers``,
    see the module doc)."""

    pool_sizes: tuple[int, ...] = (2, 2, 1)
    n_freq_downsample: tuple[int, ...] = (4, 2, 1)
    n_blocks: tuple[int, ...] = (1, 1, 1)
    hidden_size: int = 512
    mlp_layers: int = 2
    dropout: float = 0.0
    naive_level: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        c = _Checker(self)
        c.ints("pool_sizes", 1, max(self.context_length, 1))
        stacks = len(self.pool_sizes)
        c.ints("n_freq_downsample", 1, 512, length=stacks)
        c.ints("n_blocks", 1, 16, length=stacks)
        c.int("hidden_size", 4, 4096)
        c.int("mlp_layers", 1, 8)
        c.num("dropout", 0.0, 1.0, high_open=True)
        c.flag("naive_level")


@register_engine("nhits")
class NHITSEngine(TorchEngine):
    """N-HiTS forecaster of ``config.series`` (default: close log returns); exogenous features
    are flattened into every block's MLP input. ``predict``: see ``clm.models.torch_engine``."""

    task = "regression"
    config_class = NHITSConfig
    all_channels = False

    def build_module(self, n_channels: int) -> Any:
        cfg = self.config
        return _classes()["NHITS"](
            context_length=cfg.context_length,
            prediction_length=cfg.prediction_length,
            n_exog=n_channels - 1,
            pool_sizes=cfg.pool_sizes,
            n_freq_downsample=cfg.n_freq_downsample,
            n_blocks=cfg.n_blocks,
            hidden_size=cfg.hidden_size,
            mlp_layers=cfg.mlp_layers,
            dropout=cfg.dropout,
            naive_level=cfg.naive_level,
        )

    def _prepare_module(self, module: Any, train: Any) -> None:
        import torch

        loc, scale = train.channel_stats()
        module.set_scaler(torch.from_numpy(loc), torch.from_numpy(scale))
