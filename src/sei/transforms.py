r"""Random image transforms for equivariant imaging: scale, circular shift, rotation, composition.

Each transform is a :class:`deepinv.transform.Transform` (``_get_params`` / ``_transform``, so
``inverse`` works) that draws **one set of parameters per image** and returns a batch of the same
size. Randomness comes from the ``rng`` passed to the call, else from the generator given to the
constructor, else from torch's global RNG (never from a fresh unseeded ``torch.Generator()``, which
is what deepinv falls back to and which ignores ``torch.manual_seed``).

All warps use ``grid_sample`` with ``align_corners=False``: pixel :math:`j` of a length-:math:`n`
axis sits at the normalised position :math:`p_j = (2j + 1)/n - 1`, so an identity warp samples the
pixel centres exactly and returns its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from deepinv.transform import Transform
from deepinv.transform.base import TransformParam

from sei.errors import SeiUserError

__all__ = ["Compose", "Rotate", "Scale", "Shift", "pixel_centres", "scale_grid"]


def _uniform(shape: tuple[int, ...], rng: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform draws in [0, 1), on ``rng``'s device when given, moved to ``device``."""
    if rng is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=rng, device=rng.device).to(device)


def _integers(high: int, count: int, rng: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``count`` integers uniform in ``[0, high)``."""
    if rng is None:
        return torch.randint(high, (count,), device=device)
    return torch.randint(high, (count,), generator=rng, device=rng.device).to(device)


def pixel_centres(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""Normalised pixel-centre coordinates of an ``(H, W)`` image, shape ``(H, W, 2)`` in ``(x, y)``
    order as ``grid_sample`` expects: :math:`p = ((2j+1)/W - 1, (2i+1)/H - 1)`."""
    xs = (2 * torch.arange(width, dtype=dtype, device=device) + 1) / width - 1
    ys = (2 * torch.arange(height, dtype=dtype, device=device) + 1) / height - 1
    # indexing="ij" keeps rows along H and columns along W; the public Scale used the default "ij"
    # meshgrid on (x, y) and so transposed the grid whenever H != W.
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def scale_grid(factor: torch.Tensor, centre: torch.Tensor, height: int, width: int) -> torch.Tensor:
    r"""Sampling grid of the scale transform, shape ``(B, H, W, 2)``.

    .. math::

        q = c + \frac{p - c}{s}

    :param torch.Tensor factor: shrink factors :math:`s`, shape ``(B,)``.
    :param torch.Tensor centre: centres :math:`c \in [-1, 1]^2` in ``(x, y)`` order, shape ``(B, 2)``.
    """
    grid = pixel_centres(height, width, centre.dtype, centre.device)[None]
    centre = centre[:, None, None, :]
    return centre + (grid - centre) / factor.to(centre.dtype)[:, None, None, None]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflection padding (truncated at 3 sigma)."""
    radius = max(1, int(3 * sigma + 0.5))
    radius = min(radius, x.shape[-2] - 1, x.shape[-1] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    channels = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class _SeededTransform(Transform):
    """Shared plumbing: per-call ``rng`` and no fallback to an unseeded generator."""

    def __init__(self, rng: torch.Generator | None = None) -> None:
        super().__init__()
        # deepinv substitutes torch.Generator() (seeded 67280421310721 whatever torch.manual_seed says);
        # None here means torch's global RNG, which follows the run seed.
        self.rng = rng

    def _draw(self, x: torch.Tensor, rng: torch.Generator | None) -> dict[str, Any]:
        raise NotImplementedError

    def _get_params(self, x: torch.Tensor) -> dict[str, Any]:
        return self._draw(x, self.rng)

    def forward(self, x: torch.Tensor, rng: torch.Generator | None = None, **params: Any) -> torch.Tensor:
        """Transform ``x`` (B, C, H, W) with fresh parameters drawn from ``rng`` (or given ``params``)."""
        if not params:
            params = self._draw(x, self.rng if rng is None else rng)
        return self.transform(x, **params)


class Scale(_SeededTransform):
    r"""Random scale transform of Scale-Equivariant Imaging (docs/methods.md, "The maths").

    For each image, a shrink factor :math:`s` is drawn uniformly from ``factors`` and a centre
    :math:`c` uniformly in :math:`[-1, 1]^2`; the output pixel at normalised position :math:`p`
    reads the input at

    .. math::

        q = c + \frac{p - c}{s}

    with bicubic interpolation and reflection padding. The content shrinks by :math:`1/s` around
    :math:`c`; the output has the input's size. Unlike deepinv's ``Scale`` the grid is correct for
    non-square images and :math:`s = 1` is an exact identity.

    :param Sequence[float] factors: shrink factors to draw from.
    :param bool antialias: blur each image by a Gaussian of std :math:`(1/s - 1)/2` pixels before
        shrinking (off by default, as in the paper).
    :param str mode: ``grid_sample`` interpolation (``"bicubic"`` or ``"bilinear"``).
    :param str padding_mode: ``grid_sample`` padding (``"reflection"``, ``"border"`` or ``"zeros"``).
    :param torch.Generator rng: default generator (``None``: torch's global RNG).

    :Examples:

    >>> import torch
    >>> x = torch.rand(2, 3, 37, 31)
    >>> bool((Scale(factors=[1.0])(x) - x).abs().max() < 1e-5)
    True
    """

    def __init__(
        self,
        factors: Sequence[float] = (0.75, 0.5),
        antialias: bool = False,
        mode: str = "bicubic",
        padding_mode: str = "reflection",
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        if len(factors) == 0 or any(float(s) <= 0 for s in factors):
            raise SeiUserError(
                f"scale factors must be a non-empty list of positive numbers, got {list(factors)}"
            )
        self.factors = tuple(float(s) for s in factors)
        self.antialias = antialias
        self.mode = mode
        self.padding_mode = padding_mode

    def _draw(self, x: torch.Tensor, rng: torch.Generator | None) -> dict[str, Any]:
        batch = x.shape[0]
        choice = _integers(len(self.factors), batch, rng, x.device)
        factor = torch.tensor(self.factors, dtype=x.dtype, device=x.device)[choice]
        centre = 2 * _uniform((batch, 2), rng, x.device).to(x.dtype) - 1
        return {
            "factor": TransformParam(factor, neg=lambda s: 1 / s),
            "centre": TransformParam(centre, neg=lambda c: c),
        }

    def _antialiased(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        for value in torch.unique(factor).tolist():
            if value >= 1:
                continue
            rows = factor == value
            out[rows] = _gaussian_blur(x[rows], (1 / value - 1) / 2)
        return out

    def _transform(
        self, x: torch.Tensor, factor: torch.Tensor, centre: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        # TransformParam (which carries the inverse rule) is dropped so the output is a plain tensor.
        factor = (
            torch.as_tensor(factor, device=x.device).as_subclass(torch.Tensor).reshape(-1).expand(x.shape[0])
        )
        centre = torch.as_tensor(centre, dtype=x.dtype, device=x.device).as_subclass(torch.Tensor)
        centre = centre.reshape(-1, 2).expand(x.shape[0], 2)
        if self.antialias:
            x = self._antialiased(x, factor)
        grid = scale_grid(factor, centre, x.shape[-2], x.shape[-1])
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode, align_corners=False)


class Shift(_SeededTransform):
    r"""Random circular integer shift, one per image, any offset: :math:`(Tx)_{i,j} = x_{i-d_y, j-d_x}`
    with indices modulo the size and :math:`d_y \in [0, H)`, :math:`d_x \in [0, W)` uniform.

    :param torch.Generator rng: default generator (``None``: torch's global RNG).

    :Examples:

    >>> import torch
    >>> x = torch.arange(12.0).view(1, 1, 3, 4)
    >>> Shift()(x, shifts=torch.tensor([[1, 2]])).flatten().tolist()[:4]
    [10.0, 11.0, 8.0, 9.0]
    """

    def _draw(self, x: torch.Tensor, rng: torch.Generator | None) -> dict[str, Any]:
        rows = _integers(x.shape[-2], x.shape[0], rng, x.device)
        cols = _integers(x.shape[-1], x.shape[0], rng, x.device)
        return {"shifts": torch.stack([rows, cols], dim=1)}

    def _transform(self, x: torch.Tensor, shifts: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        shifts = torch.as_tensor(shifts).reshape(-1, 2).expand(x.shape[0], 2).tolist()
        return torch.stack(
            [torch.roll(image, (dy, dx), dims=(-2, -1)) for image, (dy, dx) in zip(x, shifts, strict=True)]
        )


class Rotate(_SeededTransform):
    r"""Random rotation about the image centre, one angle per image, same output size.

    With ``multiples_of_90=False`` the angle :math:`\theta` is uniform in :math:`[0, 360)` degrees
    and the output pixel at offset :math:`u` (in pixels, from the centre) reads the input at
    :math:`R_{\theta} u` (:math:`u` in (column, row) order, so that :math:`\theta = 90` is
    ``torch.rot90(x, 1)``), interpolated; pixels are square, so non-square images rotate without
    shearing, and corners that fall outside are filled by ``padding_mode``.
    With ``multiples_of_90=True`` the rotation is exact (``torch.rot90``): :math:`k \in \{0,1,2,3\}`
    quarter turns for square images; a quarter turn would change a non-square image's shape, so for
    non-square images only :math:`k \in \{0, 2\}` (0 and 180 degrees) is drawn.

    :param bool multiples_of_90: exact quarter turns instead of arbitrary angles.
    :param str mode: ``"bilinear"`` or ``"bicubic"``.
    :param str padding_mode: ``"reflection"``, ``"zeros"`` or ``"border"``.
    :param torch.Generator rng: default generator (``None``: torch's global RNG).

    :Examples:

    >>> import torch
    >>> x = torch.rand(1, 1, 5, 5)
    >>> turned = Rotate(multiples_of_90=True)(x, quarter_turns=torch.tensor([1]))
    >>> bool(torch.equal(turned, torch.rot90(x, 1, (-2, -1))))
    True
    """

    def __init__(
        self,
        multiples_of_90: bool = False,
        mode: str = "bilinear",
        padding_mode: str = "reflection",
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        self.multiples_of_90 = multiples_of_90
        self.mode = mode
        self.padding_mode = padding_mode

    def _draw(self, x: torch.Tensor, rng: torch.Generator | None) -> dict[str, Any]:
        if self.multiples_of_90:
            square = x.shape[-2] == x.shape[-1]
            turns = _integers(4 if square else 2, x.shape[0], rng, x.device)
            return {"quarter_turns": turns if square else 2 * turns}
        return {"theta": 360 * _uniform((x.shape[0],), rng, x.device).to(x.dtype)}

    def _transform(
        self,
        x: torch.Tensor,
        theta: torch.Tensor | None = None,
        quarter_turns: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if quarter_turns is not None:
            turns = torch.as_tensor(quarter_turns).reshape(-1).expand(x.shape[0]).tolist()
            return torch.stack(
                [torch.rot90(image, k, dims=(-2, -1)) for image, k in zip(x, turns, strict=True)]
            )
        height, width = x.shape[-2:]
        angle = torch.deg2rad(
            torch.as_tensor(theta, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        )
        cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
        # normalised coordinates (align_corners=False) are 2u/W, 2v/H for pixel offsets (u, v) from the
        # centre: rotate in pixel units so non-square images do not shear.
        grid = pixel_centres(height, width, x.dtype, x.device)
        u, v = grid[..., 0] * width / 2, grid[..., 1] * height / 2
        # counter-clockwise as displayed (rows pointing down), so theta=90 is torch.rot90(x, 1)
        source_u = cos * u - sin * v
        source_v = sin * u + cos * v
        grid = torch.stack([2 * source_u / width, 2 * source_v / height], dim=-1)
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode, align_corners=False)


class Compose(_SeededTransform):
    r"""Apply transforms in sequence, :math:`T = T_n \circ \dots \circ T_1`, each drawing its own
    per-image parameters from the same ``rng``.

    :param Transform transforms: the transforms, applied first to last.

    :Examples:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> Compose(Rotate(), Shift())(torch.rand(2, 3, 8, 10), rng=g).shape
    torch.Size([2, 3, 8, 10])
    """

    def __init__(self, *transforms: Transform, rng: torch.Generator | None = None) -> None:
        super().__init__(rng)
        if not transforms:
            raise SeiUserError("Compose needs at least one transform")
        self.transforms = torch.nn.ModuleList(transforms)

    def _draw(self, x: torch.Tensor, rng: torch.Generator | None) -> dict[str, Any]:
        # Parameters are keyed "<index>.<name>" so that two transforms with the same parameter name
        # (deepinv's ``*`` chaining merges them into one dict and one overwrites the other) stay apart.
        params: dict[str, Any] = {}
        for index, transform in enumerate(self.transforms):
            drawn = (
                transform._draw(x, rng)
                if isinstance(transform, _SeededTransform)
                else transform.get_params(x)
            )
            params.update({f"{index}.{name}": value for name, value in drawn.items()})
        return params

    def _split(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{} for _ in self.transforms]
        for key, value in params.items():
            index, name = key.split(".", 1)
            parts[int(index)][name] = value
        return parts

    def _transform(self, x: torch.Tensor, **params: Any) -> torch.Tensor:
        for transform, own in zip(self.transforms, self._split(params), strict=True):
            x = transform.transform(x, **own)
        return x

    def inverse(self, x: torch.Tensor, batchwise: bool = True, **params: Any) -> torch.Tensor:
        """Undo the composition: inverse transforms in reverse order."""
        for transform, own in reversed(list(zip(self.transforms, self._split(params), strict=True))):
            x = transform.inverse(x, **own)
        return x
