"""Networks by name (``create_model``) and reconstructions without training (``create_reconstructor``).

Every network is called as ``model(y)`` or, deepinv style, ``model(y, physics)`` and returns the
estimate at the target resolution (``r`` times larger for SR); any input size works.

Registered names:

- ``swinir``: the paper's network (SwinIR classical-SR "medium" configuration, 11.5 M parameters).
- ``swinir-light``: SwinIR's lightweight configuration (embed 60, depths [6]*4).
- ``swinir-tiny``: embed 36, depths [2, 2]; a CPU candidate.
- ``unet-small``: residual U-Net; the default on CPU (best test PSNR per CPU-second of SEI training
  in ``benchmarks/cpu_networks.py``; table in docs/models.md).
- ``dncnn-small``: a DnCNN-like residual stack; a CPU candidate.
"""

from __future__ import annotations

from torch import nn

from sei.models.baselines import BOUNDARIES, RECONSTRUCTORS, create_reconstructor
from sei.models.cpu import DnCNN, ResUNet
from sei.models.registry import create_model, list_models, register_model
from sei.models.swinir import SwinIR

DEFAULT_GPU_MODEL = "swinir"
DEFAULT_CPU_MODEL = "unet-small"

__all__ = [
    "BOUNDARIES",
    "DEFAULT_CPU_MODEL",
    "DEFAULT_GPU_MODEL",
    "RECONSTRUCTORS",
    "create_model",
    "create_reconstructor",
    "list_models",
    "register_model",
]

_PAPER_SWINIR = {
    "img_size": 64,
    "embed_dim": 180,
    "depths": [6] * 6,
    "num_heads": [6] * 6,
    "window_size": 8,
    "mlp_ratio": 2.0,
    "drop_path_rate": 0.1,
    "resi_connection": "1conv",
    "upsampler": "pixelshuffle",
}


@register_model(_PAPER_SWINIR)
def swinir(task: str, sr_factor: int | None, **kwargs) -> nn.Module:
    """SwinIR as in the paper (embed 180, depths/heads [6]*6, window 8); loads the paper's weights."""
    return SwinIR(task, sr_factor, **kwargs)


@register_model(
    {
        **_PAPER_SWINIR,
        "embed_dim": 60,
        "depths": [6] * 4,
        "num_heads": [6] * 4,
        "upsampler": "pixelshuffledirect",
    }
)
def swinir_light(task: str, sr_factor: int | None, **kwargs) -> nn.Module:
    """SwinIR's lightweight configuration (embed 60, depths/heads [6]*4, one-step pixel shuffle)."""
    return SwinIR(task, sr_factor, **kwargs)


@register_model(
    {
        **_PAPER_SWINIR,
        "embed_dim": 36,
        "depths": [2, 2],
        "num_heads": [6, 6],
        "drop_path_rate": 0.0,
        "upsampler": "pixelshuffledirect",
    }
)
def swinir_tiny(task: str, sr_factor: int | None, **kwargs) -> nn.Module:
    """A tiny SwinIR (embed 36, depths [2, 2], 0.09 M parameters, no stochastic depth) for CPU work."""
    return SwinIR(task, sr_factor, **kwargs)


@register_model({"channels": 32, "levels": 3, "blocks": 1})
def unet_small(task: str, sr_factor: int | None, **kwargs) -> nn.Module:
    """Residual U-Net, 3 scales, 32-128 channels (0.6 M parameters); the fastest learner on CPU."""
    return ResUNet(task, sr_factor, **kwargs)


@register_model({"channels": 32, "levels": 4, "blocks": 2})
def unet_base(task: str, sr_factor: int | None, **kwargs) -> nn.Module:
    """Residual U-Net, 4 scales, 32-256 channels, 2 blocks a scale (4.5 M parameters, about 2x unet-small's step).

    The larger CPU network of the capacity study (benchmarks/step_cost.py): 7x unet-small's parameters,
    most of them at the coarse scales, where a convolution costs least.
    """
    return ResUNet(task, sr_factor, **kwargs)


@register_model({"channels": 48, "depth": 10})
def dncnn_small(task: str, sr_factor: int | None, **kwargs) -> nn.Module:
    """DnCNN-like residual stack, 10 convs of 48 channels (0.17 M parameters)."""
    return DnCNN(task, sr_factor, **kwargs)
