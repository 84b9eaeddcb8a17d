"""Reading and writing images as float tensors in [0, 1], shape ``(C, H, W)``.

Handles what real folders contain: 8- and 16-bit integers, float TIFFs, palettes, alpha (dropped),
grayscale (made RGB unless asked otherwise), EXIF orientation, float ``.npy`` measurements written
by ``sei degrade`` and DICOM slices (rescaled to Hounsfield units, then windowed). Anything
unreadable raises a :class:`~sei.errors.SeiUserError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from sei.errors import SeiUserError

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm") + DICOM_SUFFIXES
MEASUREMENT_SUFFIXES = IMAGE_SUFFIXES + (".npy",)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601, as the evaluation protocol's Y channel
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


def array_to_tensor(array: np.ndarray, channels: int | None = 3) -> torch.Tensor:
    """An ``(H, W)`` or ``(H, W, C)`` array as float32 ``(C, H, W)``.

    Integers are scaled by their type's maximum (so 16-bit data lands in [0, 1] too), booleans map
    to {0, 1}, floats are kept as they are; a fourth (alpha) channel is dropped.

    :param channels: 3 makes grayscale RGB, 1 makes colour luminance, ``None`` keeps what the array has.

    >>> array_to_tensor(np.full((2, 5), 65535, dtype=np.uint16)).shape
    torch.Size([3, 2, 5])
    """
    if array.dtype == np.bool_:
        values = array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float64) / float(np.iinfo(array.dtype).max)
    else:
        values = array.astype(np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {array.shape}")
    if values.shape[-1] in (2, 4):  # drop alpha
        values = values[..., :-1]
    tensor = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1))).float()
    return convert_channels(tensor, channels)


def convert_channels(tensor: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Make ``(C, H, W)`` have ``channels`` channels: gray to RGB by repetition, RGB to gray by BT.601 luma."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    if channels == 3 and tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1).contiguous()
    if channels == 1 and tensor.shape[0] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=tensor.dtype).view(3, 1, 1)
        return (tensor * weights).sum(0, keepdim=True)
    return tensor


def read_dicom(path: str | Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """One DICOM slice as float64 ``(H, W)`` in [0, 1].

    Stored values go through the file's ``RescaleSlope``/``RescaleIntercept`` (Hounsfield units for
    CT). With ``window=(center, width)`` the HU range ``center ± width/2`` maps to [0, 1] (clamped), the
    radiologists' convention, e.g. ``(40, 400)`` for soft tissue; without it the slice's own minimum and
    maximum map to 0 and 1, so no information is clipped.
    """
    import pydicom  # optional dependency (the ``samples`` extra); only DICOM users need it

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.astype(np.float64)
    except Exception as error:  # pydicom raises many types (InvalidDicomError, missing codec, ...)
        raise SeiUserError(f"cannot read DICOM {path}: {error}") from error
    if pixels.ndim != 2:
        raise SeiUserError(f"{path}: expected one 2-D DICOM slice, got pixel data of shape {pixels.shape}")
    hounsfield = pixels * float(getattr(dataset, "RescaleSlope", 1.0)) + float(getattr(dataset, "RescaleIntercept", 0.0))
    if window is not None:
        center, width = window
        if width <= 0:
            raise SeiUserError(f"DICOM window width must be > 0, got {width}")
        low = center - width / 2
        return np.clip((hounsfield - low) / width, 0.0, 1.0)
    low, high = hounsfield.min(), hounsfield.max()
    return (hounsfield - low) / (high - low) if high > low else np.zeros_like(hounsfield)


def read_image(path: str | Path, channels: int | None = 3, dicom_window: tuple[float, float] | None = None) -> torch.Tensor:
    """Load an image as float32 ``(C, H, W)`` in [0, 1] (``.npy`` measurements: as stored, unclipped).

    :param channels: 3 makes grayscale RGB, 1 makes colour luminance, ``None`` keeps what the file has.
    :param dicom_window: ``(center, width)`` in HU for DICOM files; see :func:`read_dicom`.
    """
    path = Path(path)
    if not path.is_file():
        raise SeiUserError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False).astype(np.float64)
        except Exception as error:
            raise SeiUserError(f"cannot read {path}: {error}") from error
        if array.ndim not in (2, 3):
            raise SeiUserError(f"{path}: expected an (H, W, C) array, got shape {array.shape}")
    elif suffix in DICOM_SUFFIXES:
        array = read_dicom(path, dicom_window)
    else:
        try:
            with Image.open(path) as image:
                image.load()
                array = _pil_to_array(ImageOps.exif_transpose(image))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise SeiUserError(f"cannot read image {path}: {error}") from error
    finite = np.isfinite(array)
    if not finite.all():  # a float file with holes: restoring it would spread NaN over the output
        raise SeiUserError(
            f"{path} contains {int((~finite).sum())} NaN or infinite value(s); fill or mask them before restoring "
            "(sei needs a finite measurement everywhere)"
        )
    return array_to_tensor(array, channels)


def resize_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(C, H, W)`` so that its shorter side is ``size``, keeping the aspect ratio.

    Bicubic with antialiasing (as the paper's ``Resize(256)``), clamped back to [0, 1] because bicubic
    overshoots at edges. The longer side is rounded to the nearest pixel.

    >>> resize_short_side(torch.rand(3, 100, 150), 64).shape
    torch.Size([3, 64, 96])
    """
    if size < 1:
        raise ValueError(f"resize size must be >= 1, got {size}")
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    if target == (height, width):
        return image
    resized = F.interpolate(image[None].float(), size=target, mode="bicubic", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` float in [0, 1] -> ``(H, W, C)`` uint8 (clamped and rounded)."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return array.transpose(1, 2, 0)


def bit_depth(path: str | Path) -> int:
    """The integer bit depth a file stores (8 or 16); 32 for float images and ``.npy`` measurements."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return 32
    if path.suffix.lower() in DICOM_SUFFIXES:
        return 16
    try:
        with Image.open(path) as image:
            mode = image.mode
    except (UnidentifiedImageError, OSError) as error:
        raise SeiUserError(f"cannot read image {path}: {error}") from error
    return 16 if mode.startswith("I;16") or mode == "I" else 32 if mode == "F" else 8


def write_image(image: torch.Tensor, path: str | Path, bits: int = 8) -> None:
    """Save ``(C, H, W)``: 8-bit PNG/JPEG/TIFF (16-bit grayscale PNG/TIFF with ``bits=16``), or unclipped
    float32 ``(H, W, C)`` for ``.npy``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError("write_image takes one image, not a batch")
        image = image[0]
    if path.suffix.lower() == ".npy":
        np.save(path, image.detach().float().cpu().numpy().transpose(1, 2, 0))
        return
    if bits == 16:
        _write_16_bit(image, path)
        return
    array = to_uint8(image)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def _write_16_bit(image: torch.Tensor, path: Path) -> None:
    """16-bit grayscale PNG/TIFF, so a 16-bit input keeps its precision. (Pillow reads 16-bit colour PNGs
    as 8-bit, so such inputs arrive here as 8-bit and are written back as 8-bit.)"""
    if image.shape[0] != 1:
        raise SeiUserError(f"16-bit output is grayscale here; write {path.stem}.npy for float colour output")
    array = image.detach().double().clamp(0, 1).mul(65535).round().cpu().numpy()[0].astype(np.uint16)
    Image.fromarray(array).save(path)


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files and folders skipped), sorted by relative path."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and path.suffix.lower() in suffixes and not any(part.startswith(".") for part in relative.parts):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
