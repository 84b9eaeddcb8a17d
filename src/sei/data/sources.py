"""Where images come from: the paper's datasets, a folder, or the embedded ``samples``.

:func:`load_images` returns a sequence of ``(identity, image)`` with ``image`` float32 ``(C, H, W)``
in [0, 1], resized so that the shorter side is 256 unless told otherwise. The identity names the
image the same way on every machine (``div2k/0801``, ``urban100/img_091``, ``ct/test/0007``,
``samples/astronaut``, ``folder/<relative path>``): measurement noise is seeded from it.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch

from sei.data.download import RemoteFile, install
from sei.data.samples import load_samples
from sei.errors import SeiUserError
from sei.imageio import IMAGE_SUFFIXES, array_to_tensor, list_images, read_image, resize_short_side

DATA_ROOT_ENV = "SEI_DATA_ROOT"
SPLITS = ("train", "test")
DEFAULT_DATASET = "samples"
DEFAULT_RESIZE = 256

Images = Sequence[tuple[str, torch.Tensor]]


def default_data_root() -> Path:
    """Where datasets are downloaded: ``$SEI_DATA_ROOT``, else ``~/.cache/sei/data``."""
    configured = os.environ.get(DATA_ROOT_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sei" / "data"


# --- loaders of the downloaded datasets: (dataset folder, split) -> [(identity, reader)] -------------

Reader = Callable[[], torch.Tensor]


def _numbered_files(
    folder: Path, name: str, pattern: str, ranges: dict[str, range], split: str
) -> list[tuple[str, Path]]:
    """Image files whose stem matches ``pattern`` (one number group) with that number in the split's
    range, found anywhere under ``folder`` so that the archive's inner layout does not matter."""
    wanted = ranges[split]
    found: dict[int, Path] = {}
    for path in list_images(folder):
        match = re.fullmatch(pattern, path.stem)
        if match and int(match.group(1)) in wanted:
            found[int(match.group(1))] = path
    if len(found) != len(wanted):
        missing = sorted(set(wanted) - set(found))
        raise SeiUserError(
            f"{name} {split} split is incomplete under {folder}: {len(missing)} of {len(wanted)} images "
            f"missing (first {missing[:3]}); run `sei data download {name} --force`"
        )
    return [(found[number].stem, found[number]) for number in wanted]


def _validate_images(pattern: str, count: int) -> Callable[[Path], None]:
    """An extracted-archive check: at least ``count`` image files with the expected names."""

    def validate(folder: Path) -> None:
        names = [p for p in list_images(folder) if re.fullmatch(pattern, p.stem)]
        if len(names) < count:
            raise SeiUserError(f"archive holds {len(names)} images named like {pattern!r}, expected {count}")

    return validate


def _div2k(folder: Path, split: str, channels: int | None) -> list[tuple[str, Reader]]:
    files = _numbered_files(
        folder, "div2k", r"(\d{4})", {"train": range(1, 801), "test": range(801, 901)}, split
    )
    return [(f"div2k/{stem}", _file_reader(path, channels)) for stem, path in files]


def _urban100(folder: Path, split: str, channels: int | None) -> list[tuple[str, Reader]]:
    files = _numbered_files(
        folder, "urban100", r"img_(\d{3})", {"train": range(1, 91), "test": range(91, 101)}, split
    )
    return [(f"urban100/{stem}", _file_reader(path, channels)) for stem, path in files]


CT_FILE = "dinv_dataset0.h5"
CT_KEYS = {"train": "x_train", "test": "x_test"}
CT_SIZES = {"train": 4992, "test": 100}


def _ct_slice(array: np.ndarray) -> np.ndarray:
    """One slice of deepinv's HDF5 layout, ``(1, H, W)``, ``(H, W)`` or ``(H, W, 1)``, as ``(H, W)``."""
    array = np.squeeze(np.asarray(array))
    if array.ndim != 2:
        raise SeiUserError(f"{CT_FILE}: expected grayscale slices, got a slice of shape {array.shape}")
    return array


def validate_ct(path: Path, sizes: dict[str, int] | None = None) -> None:
    """Check the HDF5 file's structure: no md5 is published for it, so content is what we can verify."""
    import h5py

    sizes = CT_SIZES if sizes is None else sizes
    try:
        with h5py.File(path, "r") as file:
            for split, key in CT_KEYS.items():
                if key not in file or len(file[key]) != sizes[split]:
                    found = len(file[key]) if key in file else "no"
                    raise SeiUserError(
                        f"{path.name}: expected {sizes[split]} slices in {key!r}, found {found}"
                    )
                _ct_slice(file[key][0])
    except OSError as error:
        raise SeiUserError(f"{path.name} is not a readable HDF5 file ({error}); download it again") from error


def _ct(folder: Path, split: str, channels: int | None) -> list[tuple[str, Reader]]:
    import h5py

    path = folder / CT_FILE
    with h5py.File(path, "r") as file:
        count = len(file[CT_KEYS[split]])

    def reader(index: int) -> Reader:
        def read() -> torch.Tensor:
            # opened per read: h5py handles must not cross the fork into DataLoader workers
            with h5py.File(path, "r") as file:
                return array_to_tensor(_ct_slice(file[CT_KEYS[split]][index]), channels)

        return read

    return [(f"ct/{split}/{index:04d}", reader(index)) for index in range(count)]


def _samples(folder: Path, split: str, channels: int | None) -> list[tuple[str, Reader]]:
    """The packaged photographs (``folder`` is unused: nothing is downloaded); decoded now, they are small."""
    return [(identity, lambda image=image: image) for identity, image in load_samples(split, channels)]


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable dataset of the paper: its files and how to list a split once installed."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    list_split: Callable[[Path, str, int | None], list[tuple[str, Reader]]]

    def folder(self, root: str | Path | None = None) -> Path:
        return Path(root if root is not None else default_data_root()).expanduser() / self.name

    def files_for(self, split: str | None) -> tuple[RemoteFile, ...]:
        return tuple(f for f in self.files if split is None or split in f.splits)

    def installed(self, root: str | Path | None = None, split: str | None = None) -> bool:
        return all((self.folder(root) / f.target).exists() for f in self.files_for(split))

    def download(
        self,
        root: str | Path | None = None,
        split: str | None = None,
        mirror: str | None = None,
        progress: bool = True,
        force: bool = False,
    ) -> Path:
        """Download and install the files of ``split`` (all files when ``None``); return the folder."""
        for remote in self.files_for(split):
            install(remote, self.folder(root), mirror=mirror, progress=progress, force=force)
        return self.folder(root)


DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
HF_URL = "https://huggingface.co/"

DATASETS: dict[str, DatasetSpec] = {
    "div2k": DatasetSpec(
        "div2k",
        "DIV2K high-resolution photographs: train 0001-0800, test 0801-0900 (about 3.9 GB)",
        (
            RemoteFile(
                DIV2K_URL + "DIV2K_train_HR.zip",
                "bdc2d9338d4e574fe81bf7d158758658",
                "DIV2K_train_HR",
                ("train",),
                _validate_images(r"\d{4}", 800),
            ),
            RemoteFile(
                DIV2K_URL + "DIV2K_valid_HR.zip",
                "9fcdda83005c5e5997799b69f955ff88",
                "DIV2K_valid_HR",
                ("test",),
                _validate_images(r"\d{4}", 100),
            ),
        ),
        _div2k,
    ),
    "urban100": DatasetSpec(
        "urban100",
        "Urban100 buildings: train img_001-090, test img_091-100 (about 130 MB)",
        (
            RemoteFile(
                HF_URL + "datasets/eugenesiow/Urban100/resolve/main/data/Urban100_HR.tar.gz",
                "65d9d84a34b72c6f7ca1e26a12df1e4c",
                "Urban100_HR",
                ("train", "test"),
                _validate_images(r"img_\d{3}", 100),
            ),
        ),
        _urban100,
    ),
    "ct": DatasetSpec(
        "ct",
        "CT slices of the equivariant bootstrap paper: train 4992, test 100, grayscale repeated to RGB",
        (
            RemoteFile(
                HF_URL + "jtachella/equivariant_bootstrap/resolve/main/Tomography/" + CT_FILE,
                None,
                CT_FILE,
                ("train", "test"),
                validate_ct,
            ),
        ),
        _ct,
    ),
    "samples": DatasetSpec(
        "samples",
        "real photographs shipped by pip packages (scikit-image, sporco, scikit-learn, ...): no download",
        (),
        _samples,
    ),
}


# --- sequences ---------------------------------------------------------------------------------


def _file_reader(path: Path, channels: int | None, dicom_window: tuple[float, float] | None = None) -> Reader:
    return lambda: read_image(path, channels, dicom_window)


class LazyImages(Sequence):
    """Images read (and resized) when indexed, so that listing 800 DIV2K files costs nothing and
    native-size images are never all in memory; nothing is cached here (measurements cache)."""

    def __init__(self, entries: list[tuple[str, Reader]], resize: int | None) -> None:
        self.entries = entries
        self.resize = resize

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]: ...

    @overload
    def __getitem__(self, index: slice) -> LazyImages: ...

    def __getitem__(self, index: int | slice) -> tuple[str, torch.Tensor] | LazyImages:
        if isinstance(index, slice):  # still lazy: ``images[:5]`` reads five images, not all
            return LazyImages(self.entries[index], self.resize)
        identity, read = self.entries[index]
        image = read()
        return identity, image if self.resize is None else resize_short_side(image, self.resize)


def load_folder(
    folder: str | Path,
    channels: int | None = 3,
    resize: int | None = DEFAULT_RESIZE,
    on_error: str = "skip",
    dicom_window: tuple[float, float] | None = None,
) -> list[tuple[str, torch.Tensor]]:
    """Every image under ``folder`` (recursive), decoded now so that unreadable files are found at once.

    :param on_error: ``"skip"`` warns with the file's name and leaves it out; ``"raise"`` stops.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    folder = Path(folder)
    paths = list_images(folder, IMAGE_SUFFIXES)
    if not paths:
        raise SeiUserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    images = []
    for path in paths:
        try:
            image = read_image(path, channels, dicom_window)
        except SeiUserError as error:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping unreadable image: {error}", stacklevel=2)
            continue
        # resized one at a time: a folder of 2K photographs never sits in memory at native size
        images.append(
            (
                f"folder/{path.relative_to(folder).as_posix()}",
                image if resize is None else resize_short_side(image, resize),
            )
        )
    if not images:
        raise SeiUserError(f"none of the {len(paths)} image files under {folder} could be read")
    return images


def load_images(
    name_or_path: str | Path | None = None,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
    resize: int | None = DEFAULT_RESIZE,
    channels: int | None = 3,
    on_error: str = "skip",
    dicom_window: tuple[float, float] | None = None,
    mirror: str | None = None,
) -> Images:
    """The images of a dataset split, or of a folder, as ``(identity, (C, H, W) float32 in [0, 1])``.

    :param name_or_path: a name in :data:`DATASETS` or a folder; ``None`` means ``samples``.
    :param split: ``"train"`` or ``"test"`` (a folder has no split: all its images, for both).
    :param root: data root (default :func:`default_data_root`).
    :param download: fetch a missing dataset instead of failing.
    :param resize: shorter side after bicubic antialiased resizing (the paper's 256); ``None`` keeps native
        size.
    :param channels: 3 (gray repeated to RGB), 1 (colour to luma) or ``None`` (as stored).
    :param on_error: for folders, ``"skip"`` (warn) or ``"raise"`` on an unreadable file.
    :param dicom_window: ``(center, width)`` HU window for DICOM files; default min-max per slice.
    :param mirror: URL prefix or folder holding the dataset files (default ``$SEI_DATA_MIRROR``).

    >>> images = load_images("samples", split="test")
    >>> len(images), images[0][0], tuple(images[0][1].shape)
    (10, 'samples/barbara', (3, 256, 313))
    """
    if split not in SPLITS:
        raise SeiUserError(f"unknown split {split!r}: choose 'train' or 'test'")
    name = DEFAULT_DATASET if name_or_path is None else str(name_or_path)
    if name in DATASETS:
        spec = DATASETS[name]
        if not spec.installed(root, split):
            if not download:
                raise SeiUserError(
                    f"dataset {name} ({split}) is not under {spec.folder(root)}; run `sei data download "
                    f"{name}` or pass --download (set {DATA_ROOT_ENV} or --data-root to use another folder)"
                )
            spec.download(root, split=split, mirror=mirror)
        return LazyImages(spec.list_split(spec.folder(root), split, channels), resize)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_folder(path, channels, resize, on_error, dicom_window)
    raise SeiUserError(
        f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} or give a folder of images"
    )
