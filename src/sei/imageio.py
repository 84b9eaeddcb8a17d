"""Reading and writing images as float tensors in [0, 1], shape ``(C, H, W)``.

Handles what real folders contain: 8- and 16-bit integers, float TIFFs, palettes, alpha (dropped),
grayscale (made RGB unless asked otherwise) and EXIF orientation. Anything unreadable raises a
:class:`~sei.errors.SeiUserError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from sei.errors import SeiUserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")
MEASUREMENT_SUFFIXES = IMAGE_SUFFIXES + (".npy",)
Image.MAX_IMAGE_PIXELS = 400_000_000  # allow large scientific images, still refuse decompression bombs


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Pixel values as float64 in [0, 1], shape (H, W, C), alpha dropped."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.float64)[..., None] / 65535.0
    if mode == "I":
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(np.int32).max)
        return array[..., None] / peak
    if mode == "F":
        return np.asarray(image, dtype=np.float64)[..., None]
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float64) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] in (2, 4):  # drop alpha
        array = array[..., :-1]
    return array


def read_image(path: str | Path, channels: int | None = 3) -> torch.Tensor:
    """Load an image as float32 ``(C, H, W)`` in [0, 1].

    :param channels: 3 makes grayscale RGB, 1 makes colour luminance, ``None`` keeps what the file has.
    """
    path = Path(path)
    if not path.is_file():
        raise SeiUserError(f"image not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False).astype(np.float64)
        except Exception as error:
            raise SeiUserError(f"cannot read {path}: {error}") from error
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise SeiUserError(f"{path}: expected an (H, W, C) array, got shape {array.shape}")
    else:
        try:
            with Image.open(path) as image:
                image.load()
                array = _pil_to_array(ImageOps.exif_transpose(image))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise SeiUserError(f"cannot read image {path}: {error}") from error
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()
    if channels == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1).contiguous()
    elif channels == 1 and tensor.shape[0] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        tensor = (tensor * weights).sum(0, keepdim=True)
    elif channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    return tensor


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` float in [0, 1] -> ``(H, W, C)`` uint8 (clamped and rounded)."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return array.transpose(1, 2, 0)


def write_image(image: torch.Tensor, path: str | Path) -> None:
    """Save ``(C, H, W)``: 8-bit PNG/JPEG/TIFF, or unclipped float32 ``(H, W, C)`` for ``.npy``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError("write_image takes one image, not a batch")
        image = image[0]
    if path.suffix.lower() == ".npy":
        np.save(path, image.detach().float().cpu().numpy().transpose(1, 2, 0))
        return
    array = to_uint8(image)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
