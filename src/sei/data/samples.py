"""``samples``: real photographs that pip packages ship, so every command works with no download.

The split is written here, not computed, so that it never changes with package versions or load
order. The test split is the ten colour photographs that benchmarks report on; everything else that
is a real photograph (no synthetic phantoms, logos or binary masks) trains. An image whose package is
missing, or whose loader would need the network, is skipped with a warning naming it.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sei.imageio import array_to_tensor, read_image


@dataclass(frozen=True)
class SampleImage:
    """One packaged photograph: ``identity`` is ``samples/<name>``."""

    name: str
    package: str  # the pip distribution that ships it, named in warnings
    load: Callable[[], np.ndarray | Path]  # an array, or the path of a file inside the package
    split: str  # "train" or "test"


def _package_file(module: str, *parts: str) -> Callable[[], Path]:
    """A file inside an installed package, located without importing it (sklearn imports slowly)."""

    def locate() -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"no module named {module!r}")
        return Path(next(iter(spec.submodule_search_locations)), *parts)

    return locate


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _pywt(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import pywt.data

        return getattr(pywt.data, name)()

    return load


SAMPLES: tuple[SampleImage, ...] = (
    # test: the ten colour photographs of the benchmarks (never train on these)
    *(
        SampleImage(n, "sporco", _package_file("sporco", "data", f"{n}.png"), "test")
        for n in ("barbara", "kodim23", "monarch", "sail", "tulips")
    ),
    *(SampleImage(n, "scikit-image", _skimage(n), "test") for n in ("astronaut", "coffee", "chelsea")),
    *(
        SampleImage(n, "scikit-learn", _package_file("sklearn", "datasets", "images", f"{n}.jpg"), "test")
        for n in ("china", "flower")
    ),
    # train: the other real photographs (grayscale ones are repeated to RGB like any gray image)
    *(
        SampleImage(n, "scikit-image", _skimage(n), "train")
        for n in (
            "rocket",
            "camera",
            "clock",
            "coins",
            "moon",
            "hubble_deep_field",
            "retina",
            "immunohistochemistry",
            "brick",
            "grass",
            "gravel",
            "text",
            "page",
        )
    ),
    SampleImage(
        "grace_hopper",
        "matplotlib",
        _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        "train",
    ),
    *(SampleImage(n, "PyWavelets", _pywt(n), "train") for n in ("ascent", "aero")),
)


def load_samples(split: str, channels: int | None = 3) -> list[tuple[str, torch.Tensor]]:
    """The ``samples`` images of one split at native size, as ``(identity, (C, H, W))`` pairs."""
    images = []
    for sample in SAMPLES:
        if sample.split != split:
            continue
        try:
            source = sample.load()
            image = (
                read_image(source, channels)
                if isinstance(source, Path)
                else array_to_tensor(source, channels)
            )
        except Exception as error:  # noqa: BLE001 - any failure (missing package, needs network) means skip
            warnings.warn(f"samples: skipping {sample.name} ({sample.package}): {error}", stacklevel=2)
            continue
        images.append((f"samples/{sample.name}", image))
    return images
