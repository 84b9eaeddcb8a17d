"""Small convolutional networks that train on a 2-core CPU (candidates for the default CPU model).

Both work at the measurement's resolution: for SR a pixel-shuffle head produces the ``r x r`` larger
estimate at the very end, so every convolution costs ``r^2`` times less than refining a bicubic
upsampling would. Both predict a residual on top of ``y`` (deblurring) or of bicubic-upsampled ``y``
(SR), which starts training from the ``id``/``up`` baseline instead of from noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sei.models.common import pad_to_multiple, upsample_bicubic
from sei.models.registry import register_model
from sei.problem import output_scale

if TYPE_CHECKING:
    from deepinv.physics import Physics  # any deepinv operator: the networks do not use it


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR style, no batch norm: SURE needs a per-image map)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _head(channels: int, scale: int) -> nn.Module:
    """Features -> RGB at ``scale`` times the size (a pixel shuffle for SR).

    The last convolution starts at zero, so an untrained network returns ``y`` (or its bicubic
    upsampling): training starts from the baseline instead of from a random image.
    """
    conv = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv if scale == 1 else nn.Sequential(conv, nn.PixelShuffle(scale))


class ResUNet(nn.Module):
    """A residual U-Net: ``levels`` scales (stride-2 convs down, pixel shuffle up, additive skips).

    The coarse levels give a receptive field large enough for the Gaussian_R3 / Box_R4 blurs at a
    fraction of the cost of full-resolution layers.

    :param int channels: features at full resolution (doubled at each coarser level).
    :param int levels: number of resolutions (the input is padded to a multiple of ``2**(levels-1)``).
    :param int blocks: residual blocks per level on each side.
    """

    def __init__(
        self,
        task: str = "deblurring",
        sr_factor: int | None = None,
        channels: int = 32,
        levels: int = 3,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        self.scale = output_scale(task, sr_factor)
        self.multiple = 2 ** (levels - 1)
        widths = [channels * 2**level for level in range(levels)]
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.encoders = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(w) for _ in range(blocks)]) for w in widths
        )
        self.downs = nn.ModuleList(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1) for w in widths[:-1])
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * w, 4 * w, 1), nn.PixelShuffle(2)) for w in widths[:-1]
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(w) for _ in range(blocks)]) for w in widths[:-1]
        )
        self.head = _head(channels, self.scale)

    def forward(self, y: torch.Tensor, physics: Physics | None = None, **kwargs: Any) -> torch.Tensor:
        height, width = y.shape[-2:]
        x = pad_to_multiple(y, self.multiple)
        features = self.conv_in(x)
        skips = []
        for level, encoder in enumerate(self.encoders):
            features = encoder(features)
            if level < len(self.downs):
                skips.append(features)
                features = torch.relu(self.downs[level](features))
        for level in reversed(range(len(self.ups))):
            features = self.decoders[level](self.ups[level](features) + skips[level])
        out = upsample_bicubic(x, self.scale) + self.head(features)
        return out[..., : height * self.scale, : width * self.scale]


class DnCNN(nn.Module):
    """A DnCNN-like plain stack of 3x3 conv + ReLU predicting the residual (no batch norm).

    :param int channels: features per layer.
    :param int depth: number of convolutions.
    """

    def __init__(
        self, task: str = "deblurring", sr_factor: int | None = None, channels: int = 48, depth: int = 10
    ) -> None:
        super().__init__()
        self.scale = output_scale(task, sr_factor)
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        for layer in self.body:
            if isinstance(layer, nn.Conv2d):
                # He init: PyTorch's default shrinks a plain ReLU stack's activations layer after layer,
                # and the head then gets almost no gradient (measured: 300x less than the U-Net's)
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.head = _head(channels, self.scale)

    def forward(self, y: torch.Tensor, physics: Physics | None = None, **kwargs: Any) -> torch.Tensor:
        return upsample_bicubic(y, self.scale) + self.head(self.body(y))


# the registered CPU networks (options not written here are the constructor's defaults)
# unet-small: 3 scales, 32-128 channels (0.6 M parameters); the default on CPU, the fastest learner
# (best test PSNR per CPU-second of SEI training in benchmarks/cpu_networks.py; table in docs/models.md)
register_model("unet-small", ResUNet)
# unet-base: 4 scales, 32-256 channels, 2 blocks a scale (4.5 M parameters, about 2x unet-small's step).
# The larger CPU network of the capacity study (benchmarks/step_cost.py): 7x unet-small's parameters,
# most of them at the coarse scales, where a convolution costs least.
register_model("unet-base", ResUNet, levels=4, blocks=2)
# dncnn-small: 10 convs of 48 channels (0.17 M parameters)
register_model("dncnn-small", DnCNN)
