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

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from sei.data.sources import Images
from sei.errors import SeiUserError
from sei.imageio import MEASUREMENT_SUFFIXES, list_images, read_image
from sei.physics import Operator, measurement_seed
from sei.runtime import atomic_write

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


def physics_key(physics: Operator) -> str:
    """A digest of the operator: its ``describe()`` metadata and every buffer (a custom kernel file is
    labelled ``custom`` in the metadata, so the kernel values themselves must enter the key)."""
    digest = hashlib.sha256(json.dumps(physics.describe(), sort_keys=True).encode())
    for name, buffer in sorted(physics.state_dict().items()):
        digest.update(name.encode())
        digest.update(buffer.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _content_key(physics_digest: str, identity: str, seed: int, x: torch.Tensor) -> str:
    """Disk-cache key: operator, identity, seed, and the image itself (its size and pixels depend on
    ``resize`` and ``channels``, which the identity does not say)."""
    digest = hashlib.sha256(f"{physics_digest}|{identity}|{seed}|{tuple(x.shape)}".encode())
    digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class MeasuredImages(Sequence):
    r"""Images with their one fixed measurement, computed once when constructed and kept in memory.

    Computed eagerly on purpose: DataLoader workers are forked from the constructed object and share
    the result, instead of each worker (of each epoch) measuring again.

    :param images: ``(identity, x)`` pairs, as from :func:`~sei.data.load_images`.
    :param physics: a sei operator (``.A``, ``.measure(x, seed)``, ``.describe()``, ``.scale``).
    :param int seed: base seed; the noise seed of an image is ``measurement_seed(identity, seed)``.
    :param cache_dir: folder where measurements are also stored and reused across runs (``.pt`` files
        keyed on the operator, identity, seed and image content).

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
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        from tqdm import tqdm

        self.physics = physics
        self.seed = int(seed)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        factor = physics.scale
        digest = physics_key(physics) if self.cache_dir is not None else ""
        self.items: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for index in tqdm(range(len(images)), desc="measuring", disable=not progress, leave=False):
            identity, x = images[index]
            x = modcrop(x, factor) if factor > 1 else x
            self.items.append((identity, x, self._measure(identity, x, digest)))

    def _measure(self, identity: str, x: torch.Tensor, digest: str) -> torch.Tensor:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{_content_key(digest, identity, self.seed, x)}.pt"
            if path.is_file():
                return torch.load(path, weights_only=True)
        with torch.no_grad():
            y = self.physics.measure(x[None], seed=measurement_seed(identity, self.seed))[0].contiguous()
        if path is not None:
            atomic_write(path, lambda handle: torch.save(y, handle))
        return y

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
