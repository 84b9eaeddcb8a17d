r"""One fixed noisy measurement per image, and measurement-only folders.

The paper trains from a fixed set of measurements :math:`y_i = A x_i + n_i`: the noise of image
:math:`i` is drawn once, from a seed derived from the image's identity and the run seed
(:func:`sei.physics.measurement_seed`), on the CPU. So ``y_i`` is the same across runs, machines,
batch orders, DataLoader workers and DDP ranks, and a network never sees two noise draws of one image
(which would leak supervision to self-supervised methods).

Both classes below are sequences of ``(identity, x or None, y)``, which is all that
:class:`~sei.data.patches.PatchDataset` needs. CSS pairs :math:`(A y + n', y)` are not built here:
the CSS loss makes them from ``y`` on the fly with fresh noise, so the data side only delivers ``y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sei.data.sources import Images
from sei.errors import SeiUserError
from sei.imageio import MEASUREMENT_SUFFIXES, list_images, read_image
from sei.physics import Operator, measurement_seed

Measurement = tuple[str, torch.Tensor | None, torch.Tensor]


def modcrop(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Crop ``(..., H, W)`` at the bottom and right to multiples of ``factor``, so that an SR
    measurement is exactly ``factor`` times smaller (the SR literature's ``modcrop``).

    >>> modcrop(torch.zeros(3, 37, 31), 4).shape
    torch.Size([3, 36, 28])
    """
    height, width = image.shape[-2:]
    if height < factor or width < factor:
        raise SeiUserError(f"an image of {height}x{width} is smaller than the sr factor {factor}")
    return image[..., : height - height % factor, : width - width % factor]


class MeasuredImages(Sequence):
    r"""Images with their one fixed measurement, computed once when constructed and kept in memory.

    Computed eagerly on purpose: DataLoader workers are forked from the constructed object and share
    the result, instead of each worker (of each epoch) measuring again.

    :param images: ``(identity, x)`` pairs, as from :func:`~sei.data.load_images`.
    :param physics: a sei operator (``.A``, ``.measure(x, seed)``, ``.describe()``, ``.scale``).
    :param int seed: base seed; the noise seed of an image is ``measurement_seed(identity, seed)``.

    ``measured[i]`` is ``(identity, x, y)``; for SR, ``x`` is modcropped so that it is exactly ``r``
    times ``y``.

    :Examples:

    >>> from sei.physics import make_physics
    >>> images = [("demo/ramp", torch.linspace(0, 1, 3 * 37 * 31).reshape(3, 37, 31))]
    >>> measured = MeasuredImages(images, make_physics("sr", sr_factor=2), seed=0)
    >>> identity, x, y = measured[0]
    >>> identity, tuple(x.shape), tuple(y.shape)
    ('demo/ramp', (3, 36, 30), (3, 18, 15))
    """

    def __init__(
        self,
        images: Images,
        physics: Operator,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        from tqdm import tqdm

        self.physics = physics
        self.seed = int(seed)
        factor = physics.scale
        self.items: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for index in tqdm(range(len(images)), desc="measuring", disable=not progress, leave=False):
            identity, x = images[index]
            x = modcrop(x, factor) if factor > 1 else x
            with torch.no_grad():
                y = physics.measure(x[None], seed=measurement_seed(identity, self.seed))[0].contiguous()
            self.items.append((identity, x, y))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Measurement:  # type: ignore[override]
        return self.items[index]


class MeasurementFolder(Sequence):
    """Measurements without ground truth: a folder of a user's degraded images (``.png``, ..., or the
    float ``.npy`` that ``sei degrade`` writes), for training and reconstructing from ``y`` alone.

    ``folder[i]`` is ``(identity, None, y)`` with identity ``measurement/<relative path>``, indexed like
    :class:`MeasuredImages`. The measurements are used as they are: no resizing, which would change
    the noise and the blur that the physics describes.
    """

    def __init__(self, path: str | Path, channels: int | None = 3) -> None:
        path = Path(path)
        files = [path] if path.is_file() else list_images(path, MEASUREMENT_SUFFIXES) if path.is_dir() else []
        if not files:
            raise SeiUserError(f"no measurements ({', '.join(MEASUREMENT_SUFFIXES)}) found at {path}")
        base = path.parent if path.is_file() else path
        self.items: list[Measurement] = [
            (f"measurement/{file.relative_to(base).as_posix()}", None, read_image(file, channels))
            for file in files
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Measurement:  # type: ignore[override]
        return self.items[index]
