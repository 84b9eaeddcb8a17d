"""Reading and writing images as float tensors in [0, 1], shape ``(C, H, W)``.

Handles what real folders contain: 8- and 16-bit integers, float TIFFs, palettes, alpha (dropped),
grayscale (made RGB unless asked otherwise), EXIF orientation, float ``.npy`` measurements written
by ``sei degrade`` and DICOM slices (rescaled to Hounsfield units, then windowed). Anything
unreadable raises a :class:`~sei.errors.SeiUserError` naming the file.

TIFF files go through tifffile (:func:`read_tiff`, :func:`write_tiff`): 8/16-bit integer and float32
samples, grayscale or RGB, and multi-page stacks, read as a batch of 2-D images and written back in the
type they came in (:func:`write_like`), so a 16-bit input never comes back as 8-bit
(docs/scientific_images.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from sei.errors import SeiUserError
from sei.runtime import atomic_write

DICOM_SUFFIXES = (".dcm", ".dicom")
TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_DTYPES = ("uint8", "uint16", "float32")  # what write_tiff writes
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
    """Make ``(C, H, W)`` have ``channels`` channels: gray to RGB by repetition, RGB to gray by BT.601
    luma."""
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
    hounsfield = pixels * float(getattr(dataset, "RescaleSlope", 1.0)) + float(
        getattr(dataset, "RescaleIntercept", 0.0)
    )
    if window is not None:
        center, width = window
        if width <= 0:
            raise SeiUserError(f"DICOM window width must be > 0, got {width}")
        low = center - width / 2
        return np.clip((hounsfield - low) / width, 0.0, 1.0)
    low, high = hounsfield.min(), hounsfield.max()
    return (hounsfield - low) / (high - low) if high > low else np.zeros_like(hounsfield)


def read_image(
    path: str | Path, channels: int | None = 3, dicom_window: tuple[float, float] | None = None
) -> torch.Tensor:
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
    elif suffix in TIFF_SUFFIXES:
        stack, _ = read_tiff(path, channels)
        if stack.shape[0] != 1:
            raise SeiUserError(
                f"{path} is a stack of {stack.shape[0]} images; this command reads one image per file "
                "(sei reconstruct and sei degrade take stacks)"
            )
        return stack[0]
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
            f"{path} contains {int((~finite).sum())} NaN or infinite value(s); fill or mask them before "
            "restoring (sei needs a finite measurement everywhere)"
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
    resized = F.interpolate(
        image[None].float(), size=target, mode="bicubic", antialias=True, align_corners=False
    )
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
    if path.suffix.lower() in TIFF_SUFFIXES:
        return {"uint8": 8, "uint16": 16}.get(tiff_layout(path).dtype, 32)
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
    if path.suffix.lower() in TIFF_SUFFIXES:
        write_tiff(image[None], path, {8: "uint8", 16: "uint16", 32: "float32"}[bits])
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
        if (
            path.is_file()
            and path.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in relative.parts)
        ):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# --- TIFF: 16-bit and float data, multi-page stacks ---------------------------------------------------


@dataclass(frozen=True)
class StoredFormat:
    """How an image file stores its pixels, so that a result can be written back the same way.

    ``dtype`` is ``"uint8"``, ``"uint16"`` or ``"float32"`` (other integer types are read as the closest
    of these), ``channels`` 1 (grayscale) or 3 (RGB), ``pages`` the number of 2-D images in the file.
    """

    dtype: str = "uint8"
    channels: int = 3
    pages: int = 1
    axes: str = "YXS"


def tiff_layout(path: str | Path) -> StoredFormat:
    """The layout of a TIFF file (first series), without reading its pixels; unsupported layouts raise
    a one-line :class:`SeiUserError`."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            rgb = tiff.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    except (tifffile.TiffFileError, OSError, IndexError, ValueError) as error:
        raise SeiUserError(f"cannot read TIFF {path}: {error}") from error
    return _layout(path, axes, shape, dtype, rgb)


def _layout(path: Path, axes: str, shape: tuple[int, ...], dtype: np.dtype, rgb: bool) -> StoredFormat:
    if dtype.kind not in "uif":
        raise SeiUserError(
            f"{path}: unsupported TIFF sample type {dtype} (sei reads integer and float samples)"
        )
    if "Y" not in axes or "X" not in axes or axes.index("X") != axes.index("Y") + 1:
        raise SeiUserError(
            f"{path}: unsupported TIFF layout (axes {axes!r}, shape {shape}): no 2-D (Y, X) planes"
        )
    colour = (
        rgb
        and "S" in axes
        and shape[axes.index("S")] in (3, 4)
        and axes.index("S") in (len(axes) - 1, axes.index("Y") - 1)
    )
    planes = [
        size
        for axis, size in zip(axes, shape, strict=True)
        if axis not in ("Y", "X") and not (colour and axis == "S")
    ]
    if axes.index("X") != len(axes) - 1 and not (colour and axes[-1] == "S"):
        raise SeiUserError(
            f"{path}: unsupported TIFF layout (axes {axes!r}, shape {shape}): samples after the "
            "image plane that are not RGB"
        )
    pages = int(np.prod(planes)) if planes else 1
    if pages == 0 or shape[axes.index("Y")] == 0 or shape[axes.index("X")] == 0:
        raise SeiUserError(f"{path}: the TIFF holds no pixels (shape {shape})")
    stored = (
        "float32"
        if dtype.kind == "f"
        else "uint8"
        if dtype.itemsize == 1
        else "uint16"
        if dtype.itemsize == 2
        else "float32"
    )
    return StoredFormat(dtype=stored, channels=3 if colour else 1, pages=pages, axes=axes)


def read_tiff(path: str | Path, channels: int | None = 3) -> tuple[torch.Tensor, StoredFormat]:
    """A TIFF as float32 ``(N, C, H, W)`` and how it was stored.

    Every axis before the image plane (pages, Z, time, channels of a microscope: anything but RGB
    samples) becomes the batch ``N`` of 2-D grayscale images; RGB(A) samples become the colour channels
    (alpha dropped). Integer samples are scaled by their type's maximum (16-bit: 65535 is 1.0), float
    samples are kept as they are (no clipping, no rescaling). 3-D deconvolution is out of scope: the
    planes of a Z stack are restored one by one.

    :param channels: 3 makes grayscale RGB, 1 makes colour luminance, ``None`` keeps what the file has.
    """
    import tifffile

    path = Path(path)
    layout = tiff_layout(path)
    try:
        array = tifffile.imread(path)
    except (tifffile.TiffFileError, OSError, ValueError) as error:
        raise SeiUserError(f"cannot read TIFF {path}: {error}") from error
    axes = layout.axes
    if layout.channels == 3 and axes[-1] != "S":  # planar RGB (S before Y, X): samples last
        array = np.moveaxis(array, axes.index("S"), -1)
    height, width = array.shape[-3:-1] if layout.channels == 3 else array.shape[-2:]
    array = array.reshape(
        (layout.pages, height, width) + ((array.shape[-1],) if layout.channels == 3 else ())
    )
    finite = np.isfinite(array) if array.dtype.kind == "f" else np.ones(1, dtype=bool)
    if not finite.all():
        raise SeiUserError(
            f"{path} contains {int((~finite).sum())} NaN or infinite value(s); fill or mask them first"
        )
    images = torch.stack([array_to_tensor(page, channels) for page in array])
    return images, layout


def write_tiff(images: torch.Tensor, path: str | Path, dtype: str = "float32") -> None:
    """Write ``(N, C, H, W)`` (or ``(C, H, W)``) as a TIFF, atomically: one page per image, C = 1 grayscale
    or 3 RGB; ``dtype`` ``"uint16"``/``"uint8"`` (values clipped to [0, 1] and scaled by 65535 / 255) or
    ``"float32"`` (values as they are)."""
    import tifffile

    path = Path(path)
    if dtype not in TIFF_DTYPES:
        raise ValueError(f"TIFF dtype must be one of {TIFF_DTYPES}, got {dtype!r}")
    if images.ndim == 3:
        images = images[None]
    if images.shape[1] not in (1, 3):
        raise SeiUserError(f"{path}: a TIFF is written with 1 or 3 channels, got {images.shape[1]}")
    values = images.detach().double().cpu()
    if dtype == "float32":
        array = values.float().numpy()
    else:
        peak = float(np.iinfo(np.dtype(dtype)).max)
        array = values.clamp(0, 1).mul(peak).round().numpy().astype(dtype)
    colour = array.shape[1] == 3
    array = array.transpose(0, 2, 3, 1) if colour else array[:, 0]
    if array.shape[0] == 1:
        array = array[0]
    atomic_write(
        path, lambda handle: tifffile.imwrite(handle, array, photometric="rgb" if colour else "minisblack")
    )


def read_images(path: str | Path, channels: int | None = 3) -> tuple[torch.Tensor, StoredFormat]:
    """Any supported file as ``(N, C, H, W)`` (N > 1 only for a multi-page TIFF) and how it was stored."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        return read_tiff(path, channels)
    image = read_image(path, channels)
    stored_channels = (
        read_image(path, channels=None).shape[0] if path.suffix.lower() != ".npy" else image.shape[0]
    )
    bits = bit_depth(path)
    dtype = {8: "uint8", 16: "uint16"}.get(bits, "float32")
    return image[None], StoredFormat(
        dtype=dtype, channels=1 if stored_channels == 1 else 3, pages=1, axes="YXS"
    )


def write_like(images: torch.Tensor, path: str | Path, stored: StoredFormat) -> None:
    """Write results ``(N, C, H, W)`` to ``path`` the way the input was stored: its sample type (a 16-bit
    input gives a 16-bit output, a float input float32), grayscale if it was grayscale, one page per image.
    A ``.npy`` path takes float32 (one image); a PNG takes 8 or 16 bits (grayscale) and one image."""
    path = Path(path)
    if stored.channels == 1 and images.shape[1] == 3:
        images = images.mean(1, keepdim=True)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        write_tiff(images, path, stored.dtype)
        return
    if images.shape[0] != 1:
        raise SeiUserError(
            f"{path}: {images.shape[0]} images (a stack) are written as a multi-page .tif; change the suffix"
        )
    if suffix == ".npy":
        write_image(images[0], path)
        return
    if stored.dtype != "uint8":
        if stored.dtype == "float32" or images.shape[1] != 1 or suffix != ".png":
            raise SeiUserError(
                f"the input is {stored.dtype}; writing {path.name} would round it to 8 bits: write a "
                ".tif (same sample type) or .npy (float) instead"
            )
        write_image(images[0], path, bits=16)
        return
    write_image(images[0], path)
