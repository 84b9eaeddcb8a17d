"""Networks by name (``create_model``) and reconstructions without training (``create_reconstructor``).

Every network is called as ``model(y)`` or, deepinv style, ``model(y, physics)`` and returns the
estimate at the target resolution (``r`` times larger for SR); any input size works.

Registered names (each registered beside its architecture, in ``sei.models.cpu`` and ``sei.models.swinir``;
options not written there are the constructor's defaults):

- ``swinir``: the paper's network (SwinIR classical-SR "medium" configuration, 11.5 M parameters).
- ``swinir-light``: SwinIR's lightweight configuration (embed 60, depths [6]*4).
- ``swinir-tiny``: embed 36, depths [2, 2]; a CPU candidate.
- ``unet-small``: residual U-Net; the default on CPU (best test PSNR per CPU-second of SEI training
  in ``benchmarks/cpu_networks.py``; table in docs/models.md).
- ``unet-base``: a larger residual U-Net (4 scales, 2 blocks a scale).
- ``dncnn-small``: a DnCNN-like residual stack; a CPU candidate.
"""

from __future__ import annotations

from sei.models.baselines import BOUNDARIES, RECONSTRUCTORS, create_reconstructor
from sei.models.cpu import DnCNN, ResUNet  # registers unet-small, unet-base, dncnn-small
from sei.models.registry import create_model, list_models, register_model
from sei.models.swinir import SwinIR  # registers swinir, swinir-light, swinir-tiny

DEFAULT_GPU_MODEL = "swinir"
DEFAULT_CPU_MODEL = "unet-small"

__all__ = [
    "BOUNDARIES",
    "DEFAULT_CPU_MODEL",
    "DEFAULT_GPU_MODEL",
    "RECONSTRUCTORS",
    "DnCNN",
    "ResUNet",
    "SwinIR",
    "create_model",
    "create_reconstructor",
    "list_models",
    "register_model",
]
