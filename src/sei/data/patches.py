"""Training pairs: aligned random crops of ``(x, y)``.

A crop is chosen in measurement space (``patch_size`` pixels of ``y``); for SR the target crop is
``r * patch_size`` pixels of ``x`` at ``r`` times the position, which is where ``A`` maps it. The
position is a pure function of ``(seed, epoch, index)``, so every run, DataLoader worker and DDP rank
crops the same pixels: nothing depends on global random state or on which process asks.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sei.data.measurements import Measurement
from sei.runtime import derive_seed


def crop_seed(seed: int, epoch: int, index: int) -> int:
    """The 63-bit seed of one crop, the same on every machine (Python's ``hash`` is salted per process)."""
    return derive_seed("crop", seed, epoch, index)


def reflect_pad(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Grow ``(C, H, W)`` to at least ``height x width`` by mirroring at the bottom and right edges.

    Repeated as often as needed, since one reflection can at most double a side (a 20x20 image and a
    96-pixel patch); mirroring keeps image statistics, where zero rows would teach the network black
    borders.

    >>> reflect_pad(torch.arange(3.0).view(1, 1, 3), 1, 7).flatten().tolist()
    [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0]
    """
    while image.shape[-2] < height or image.shape[-1] < width:
        pad_bottom = min(height - image.shape[-2], image.shape[-2] - 1) if image.shape[-2] < height else 0
        pad_right = min(width - image.shape[-1], image.shape[-1] - 1) if image.shape[-1] < width else 0
        if pad_bottom == 0 and pad_right == 0:  # a single row or column cannot be mirrored: repeat it
            return F.pad(
                image[None],
                (0, max(0, width - image.shape[-1]), 0, max(0, height - image.shape[-2])),
                mode="replicate",
            )[0]
        image = F.pad(image[None], (0, pad_right, 0, pad_bottom), mode="reflect")[0]
    return image


class PatchDataset(Dataset):
    """Aligned random crops of measured images, one per image per epoch.

    :param measured: ``(identity, x or None, y)`` sequence (:class:`~sei.data.MeasuredImages` or
        :class:`~sei.data.MeasurementFolder`).
    :param int patch_size: crop side in measurement pixels (the paper's 48).
    :param int seed: base seed of the crop positions.

    ``patches[i]`` is ``{"y", "x" (only with ground truth), "identity"}``. An image smaller than the
    patch is reflect-padded (with one warning); the SR factor is read from the shapes of ``x`` and ``y``.

    :Examples:

    >>> from sei.data import MeasuredImages
    >>> from sei.physics import make_physics
    >>> images = [("demo/ramp", torch.linspace(0, 1, 3 * 64 * 80).reshape(3, 64, 80))]
    >>> patches = PatchDataset(MeasuredImages(images, make_physics("sr", sr_factor=2)), patch_size=16)
    >>> item = patches[0]
    >>> tuple(item["y"].shape), tuple(item["x"].shape), item["identity"]
    ((3, 16, 16), (3, 32, 32), 'demo/ramp')
    """

    def __init__(self, measured: Sequence[Measurement], patch_size: int = 48, seed: int = 0) -> None:
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if len(measured) == 0:
            raise ValueError("no measured images to crop patches from")
        self.measured = measured
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.factors = [self._factor(identity, x, y) for identity, x, y in measured]
        small = [identity for identity, _, y in measured if min(y.shape[-2:]) < self.patch_size]
        if small:
            warnings.warn(
                f"{len(small)} measurement(s) smaller than the {self.patch_size}-pixel patch are "
                f"reflect-padded (first: {small[0]}); consider a smaller --patch_size",
                stacklevel=2,
            )

    @staticmethod
    def _factor(identity: str, x: torch.Tensor | None, y: torch.Tensor) -> int:
        """The SR factor implied by the shapes (1 for deblurring); a mismatch means misaligned data."""
        if x is None:
            return 1
        factor = x.shape[-1] // y.shape[-1]
        if factor < 1 or tuple(x.shape[-2:]) != (y.shape[-2] * factor, y.shape[-1] * factor):
            raise ValueError(
                f"{identity}: x {tuple(x.shape)} is not an integer multiple of y {tuple(y.shape)}; modcrop x"
            )
        return factor

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` (call before each epoch, like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.measured)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= index < len(self):
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        identity, x, y = self.measured[index]
        factor, size = self.factors[index], self.patch_size
        if min(y.shape[-2:]) < size:
            y = reflect_pad(y, size, size)
            x = None if x is None else reflect_pad(x, size * factor, size * factor)
        generator = torch.Generator().manual_seed(crop_seed(self.seed, self.epoch, index))
        top = int(torch.randint(0, y.shape[-2] - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, y.shape[-1] - size + 1, (1,), generator=generator))
        item: dict[str, torch.Tensor | str] = {
            "y": y[:, top : top + size, left : left + size].clone(),
            "identity": identity,
        }
        if x is not None:
            item["x"] = x[
                :, factor * top : factor * (top + size), factor * left : factor * (left + size)
            ].clone()
        return item
