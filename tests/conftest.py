"""Shared fixtures: real photographs that pip packages ship (no download); the ``cuda`` marker."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items) -> None:
    """A test marked ``cuda`` needs a CUDA device: skipped where there is none (benchmarks/gpu_check.py
    runs them on a GPU machine with ``pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def _skimage(name: str) -> torch.Tensor:
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    return torch.from_numpy(array[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """scikit-image's astronaut, (3, 512, 512) in [0, 1]."""
    return _skimage("astronaut")


@pytest.fixture(scope="session")
def coffee_small() -> torch.Tensor:
    """A non-square crop of scikit-image's coffee, (3, 96, 128)."""
    return _skimage("coffee")[:, 100:196, 200:328].contiguous()


@pytest.fixture(scope="session")
def astronaut_path(tmp_path_factory) -> str:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return str(path)
