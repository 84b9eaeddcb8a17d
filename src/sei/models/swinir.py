"""SwinIR (Liang et al., ICCV-W 2021) as the paper trains it, on top of ``deepinv.models.SwinIR``.

Subclassing deepinv's module (rather than wrapping it) keeps the parameter names of the original
SwinIR repository (``conv_first``, ``layers.0.residual_group.blocks.0...``, ``conv_after_body``,
``conv_before_upsample.0``, ``upsample.0``, ``conv_last``), so the paper's weight files load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from deepinv.models import SwinIR as _DeepinvSwinIR

from sei.errors import SeiUserError
from sei.models.common import pad_to_multiple
from sei.models.registry import register_model
from sei.problem import output_scale

if TYPE_CHECKING:
    from deepinv.physics import Physics  # any deepinv operator: the networks do not use it


class SwinIR(_DeepinvSwinIR):
    r"""SwinIR for deblurring (global residual :math:`\hat x = y + g(y)`) or SR (upsampler on the LR input).

    Differences from ``deepinv.models.SwinIR.forward``: it takes ``(y, physics)``, picks the upsampler
    from the task, and does not rewrite ``self.mean`` on every call.

    :param str task: ``"deblurring"`` or ``"sr"``.
    :param int sr_factor: SR factor (ignored for deblurring).
    :param str upsampler: SR head, ``"pixelshuffle"`` (classical) or ``"pixelshuffledirect"`` (light).
    """

    def __init__(
        self,
        task: str = "deblurring",
        sr_factor: int | None = None,
        img_size: int = 64,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        resi_connection: str = "1conv",
        upsampler: str = "pixelshuffle",
    ) -> None:
        scale = output_scale(task, sr_factor)
        if upsampler not in ("pixelshuffle", "pixelshuffledirect"):
            raise SeiUserError(
                f"unknown SwinIR upsampler {upsampler!r}: choose 'pixelshuffle' or 'pixelshuffledirect'"
            )
        super().__init__(
            img_size=img_size,
            in_chans=3,
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(num_heads),
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            upscale=scale,
            img_range=1.0,
            upsampler=upsampler if scale > 1 else "",
            resi_connection=resi_connection,
            pretrained=None,
        )
        self.register_buffer(
            "rgb_mean", torch.tensor((0.4488, 0.4371, 0.4040)).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, y: torch.Tensor, physics: Physics | None = None, **kwargs: Any) -> torch.Tensor:
        height, width = y.shape[-2:]
        x = pad_to_multiple(y, self.window_size) - self.rgb_mean.to(y.dtype)
        features = self.conv_first(x)
        features = self.conv_after_body(self.forward_features(features)) + features
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(features)))
        elif self.upsampler == "pixelshuffledirect":
            out = self.upsample(features)
        else:  # deblurring: global residual, the body predicts y's missing detail
            out = x + self.conv_last(features)
        out = out + self.rgb_mean.to(y.dtype)
        return out[..., : height * self.upscale, : width * self.upscale]


# the registered SwinIR family (options not written here are the constructor's defaults, the paper's)
# swinir: the paper's network, SwinIR's classical-SR "medium" configuration (embed 180, depths/heads
# [6]*6, window 8, 11.5 M parameters); loads the paper's weights
register_model("swinir", SwinIR)
# swinir-light: SwinIR's lightweight configuration (embed 60, depths/heads [6]*4, one-step pixel shuffle)
register_model(
    "swinir-light", SwinIR, embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, upsampler="pixelshuffledirect"
)
# swinir-tiny: embed 36, depths [2, 2] (0.09 M parameters, no stochastic depth), a CPU candidate
register_model(
    "swinir-tiny",
    SwinIR,
    embed_dim=36,
    depths=[2, 2],
    num_heads=[6, 6],
    drop_path_rate=0.0,
    upsampler="pixelshuffledirect",
)
