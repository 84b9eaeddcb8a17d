r"""Forward operators of the paper as deepinv ``LinearPhysics``: circular FFT blur and bicubic SR.

.. math::

    y = A x + n, \qquad n \sim \mathcal{N}(0, \sigma^2 I), \qquad \sigma = \text{noise\_level} / 255

Why not deepinv's own classes: ``deepinv.physics.BlurFFT`` recomputes its OTF whenever the image
size changes and mutates itself in ``A``; ``Blur(padding="circular")`` convolves in space (slow for
13x13 and larger kernels); ``Downsampling`` has no exact adjoint of the antialiased bicubic filter.
Here ``A`` is pure, derived tensors are cached per (size, dtype, device), and every operator has an
exact adjoint, a closed-form ``prox_l2`` and a closed-form pseudo-inverse.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from deepinv.physics import GaussianNoise, LinearPhysics, PoissonGaussianNoise

from sei.physics import functional as Fn
from sei.physics import noise as noise_facts
from sei.problem import DEFAULT_NOISE_LEVEL, DEFAULT_NOISE_MODEL, POISSON_GAUSSIAN

_CACHE_SIZE = 16
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _LRU:
    """A small least-recently-used cache of derived tensors keyed on shape, dtype and device."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self.items: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = build()
        self.items[key] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


def _working(x: torch.Tensor) -> torch.Tensor:
    """FFTs and bicubic resampling need at least float32: upcast half precision inputs."""
    return x.float() if x.dtype in _LOW_PRECISION else x


def gaussian_like(reference: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``reference``, drawn with ``rng`` on the generator's device."""
    if rng is None:
        return torch.randn_like(reference)
    noise = torch.randn(reference.shape, generator=rng, device=rng.device, dtype=reference.dtype)
    return noise.to(reference.device)


class Operator(LinearPhysics):
    """The public type of sei's forward operators (:class:`Blur`, :class:`BicubicSR`), used in signatures.

    A deepinv ``LinearPhysics`` (``A``, ``A_adjoint``, ``A_dagger``, ``prox_l2``, ``forward``) that also
    knows its problem: ``task``, ``scale`` (estimate pixels per measurement pixel), ``initial_estimate(y)``
    (the first guess at the image size), ``margin`` (partial SURE's border), ``describe()`` (metadata),
    and its noise: white Gaussian or Poisson-Gaussian (:mod:`sei.physics.noise`), fresh on every call,
    optionally seeded (``measure(x, seed)``).

    Attributes: ``noise_level`` and ``sigma`` (the Gaussian std in 8-bit and [0, 1] units),
    ``noise_kind`` (``"gaussian"`` or ``"poisson-gaussian"``), ``gain_level`` and ``gain`` (the Poisson
    gain in 8-bit and [0, 1] units; 0 for Gaussian noise). (deepinv's own ``noise_model`` attribute is
    the matching deepinv module.)
    """

    task: str = ""

    def __init__(
        self, noise_level: float, noise_kind: str = DEFAULT_NOISE_MODEL, gain: float | None = None
    ) -> None:
        kind, gain_level = noise_facts.check_noise_model(noise_kind, gain)
        sigma = float(noise_level) / noise_facts.INTENSITY_SCALE
        gamma = gain_level / noise_facts.INTENSITY_SCALE
        if kind == POISSON_GAUSSIAN:
            deepinv_noise = PoissonGaussianNoise(gain=gamma, sigma=sigma)
        else:
            deepinv_noise = GaussianNoise(sigma=sigma)
        super().__init__(noise_model=deepinv_noise)
        self.noise_level = float(noise_level)
        self.sigma = sigma
        self.noise_kind = kind
        self.gain_level = gain_level
        self.gain = gamma

    @property
    def poisson(self) -> bool:
        """Whether the noise is Poisson-Gaussian (signal-dependent)."""
        return self.noise_kind == POISSON_GAUSSIAN

    def noise(self, x: torch.Tensor, rng: torch.Generator | None = None, **kwargs: Any) -> torch.Tensor:
        """Add fresh noise of this model to the noiseless measurement ``x`` (drawn with ``rng`` when
        given)."""
        if self.poisson:
            return noise_facts.poisson_gaussian_sample(x, self.sigma, self.gain, rng)
        if self.sigma == 0:
            return x
        return x + self.sigma * gaussian_like(x, rng)

    def forward(self, x: torch.Tensor, rng: torch.Generator | None = None, **kwargs: Any) -> torch.Tensor:
        return self.noise(self.A(x, **kwargs), rng=rng)

    def measure(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """A reproducible measurement: the noise is drawn on the CPU from ``seed``, so the same
        (image, seed) gives the same ``y`` on every machine and device. Poisson noise refuses an image
        with negative intensities (one-line error)."""
        if self.poisson:
            noise_facts.check_nonnegative(x)
        return self.seeded_noise(self.A(x), seed)

    def seeded_noise(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        """``clean`` (a noiseless measurement) plus this model's noise, drawn on the CPU from ``seed``."""
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        if self.poisson:
            noisy = noise_facts.poisson_gaussian_sample(
                clean.detach().cpu().float(), self.sigma, self.gain, generator
            )
            return noisy.to(device=clean.device, dtype=clean.dtype)
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
        return clean + self.sigma * noise.to(device=clean.device, dtype=clean.dtype)

    def variance(self, y: torch.Tensor) -> torch.Tensor | float:
        """Unbiased estimate of each entry's noise variance from the measurement ``y`` (a float for Gaussian
        noise)."""
        return noise_facts.noise_variance(y, self.sigma, self.gain)

    def describe_noise(self) -> dict[str, Any]:
        """The noise model in the operator's metadata: ``noise_level``, plus ``noise_model`` and ``gain``
        when it is not Gaussian (Gaussian metadata stays as it always was)."""
        facts: dict[str, Any] = {"noise_level": self.noise_level}
        if self.poisson:
            facts.update(noise_model=self.noise_kind, gain=self.gain_level)
        return facts

    @property
    def margin(self) -> int:
        """Border width (in measurement pixels) that a patch cropped from a larger measurement gets
        wrong under this operator; partial SURE leaves it out."""
        return 0

    @property
    def scale(self) -> int:
        """How many estimate pixels one measurement pixel spans per axis: 1 for a blur, the factor for SR."""
        return 1

    def initial_estimate(self, y: torch.Tensor, img_size: tuple[int, ...] | None = None) -> torch.Tensor:
        """The cheap first guess at the image size: ``y`` itself for a blur, its bicubic upsampling for
        SR. It is the ``id`` / ``up`` baseline, the measurement shown beside an estimate, and where the
        iterative reconstructors start."""
        return y

    def describe(self) -> dict[str, Any]:
        """Plain metadata describing the operator (stored with weights and results)."""
        raise NotImplementedError


class Blur(Operator):
    r"""Circular blur :math:`A x = k \circledast x`, computed as ``irfft2(rfft2(x) * OTF)``.

    :param torch.Tensor kernel: 2-D kernel (normalised to sum 1 by :func:`sei.physics.get_kernel`).
    :param float noise_level: noise std in 8-bit units (sigma = noise_level / 255).
    :param str kernel_label: name stored in metadata.

    :Examples:

    >>> import torch
    >>> from sei.physics import make_physics
    >>> physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    >>> x = torch.rand(2, 3, 37, 31, dtype=torch.float64)
    >>> y = torch.rand(2, 3, 37, 31, dtype=torch.float64)
    >>> lhs = (physics.A(x) * y).sum(); rhs = (x * physics.A_adjoint(y)).sum()
    >>> bool(abs(lhs - rhs) / abs(lhs) < 1e-12)
    True
    """

    task = "deblurring"

    def __init__(
        self,
        kernel: torch.Tensor,
        noise_level: float = DEFAULT_NOISE_LEVEL,
        kernel_label: str = "custom",
        noise_kind: str = DEFAULT_NOISE_MODEL,
        gain: float | None = None,
    ) -> None:
        super().__init__(noise_level, noise_kind, gain)
        self.register_buffer("kernel", kernel.to(torch.float64))
        self.kernel_label = kernel_label
        self._otfs = _LRU()

    def otf(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The cached OTF for this image size, built in float64 and cast to ``dtype``'s complex type."""
        key = (height, width, dtype, str(device))
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64

        def build() -> torch.Tensor:
            return Fn.psf_to_otf(self.kernel.to(device=device, dtype=torch.float64), height, width).to(
                complex_dtype
            )

        return self._otfs.get(key, build)

    def _otf_for(self, x: torch.Tensor) -> torch.Tensor:
        return self.otf(x.shape[-2], x.shape[-1], x.dtype, x.device)

    def A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        x = _working(x)
        return Fn.fft_blur(x, self._otf_for(x))

    def A_adjoint(self, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        y = _working(y)
        return Fn.fft_blur_adjoint(y, self._otf_for(y))

    def A_adjoint_A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        x = _working(x)
        otf = self._otf_for(x)
        return torch.fft.irfft2(torch.fft.rfft2(x) * otf.abs() ** 2, s=x.shape[-2:])

    def A_A_adjoint(self, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.A_adjoint_A(y)

    def prox_l2(self, z: Any, y: torch.Tensor, gamma: float, **kwargs: Any) -> torch.Tensor:
        r"""Closed form of :math:`\arg\min_x \frac{\gamma}{2}\|Ax-y\|^2 + \frac12\|x-z\|^2` in Fourier."""
        y = _working(y)
        otf = self._otf_for(y)
        numerator = gamma * torch.fft.rfft2(y) * otf.conj()
        if isinstance(z, torch.Tensor):
            numerator = numerator + torch.fft.rfft2(_working(z))
        elif z:  # a scalar starting point
            numerator = numerator + torch.fft.rfft2(torch.full_like(y, float(z)))
        return torch.fft.irfft2(numerator / (gamma * otf.abs() ** 2 + 1), s=y.shape[-2:])

    def A_dagger(self, y: torch.Tensor, rcond: float = 1e-3, **kwargs: Any) -> torch.Tensor:
        """Truncated pseudo-inverse: divide by the OTF where ``|OTF| > rcond``, zero elsewhere."""
        y = _working(y)
        otf = self._otf_for(y)
        keep = otf.abs() > rcond
        inverse = torch.where(keep, 1.0 / torch.where(keep, otf, torch.ones_like(otf)), torch.zeros_like(otf))
        return torch.fft.irfft2(torch.fft.rfft2(y) * inverse, s=y.shape[-2:])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.kernel.shape)  # type: ignore[return-value]

    @property
    def margin(self) -> int:
        return (max(self.kernel.shape) - 1) // 2

    def describe(self) -> dict[str, Any]:
        return {"task": "deblurring", "kernel": self.kernel_label, **self.describe_noise()}


class BicubicSR(Operator):
    r"""Super-resolution operator: antialiased bicubic downsampling by an integer factor.

    ``A`` is torch's ``interpolate(x, scale_factor=1/r, mode="bicubic", antialias=True)``. Because
    that filter is separable, ``A x = R_h x R_w^T`` with small 1-D matrices (cached per size), which
    gives the exact adjoint ``R_h^T y R_w`` (the authors used bicubic upsampling instead), the exact
    pseudo-inverse and a closed-form ``prox_l2``. The high-resolution size defaults to ``r`` times the
    measurement size; pass ``img_size=(H, W)`` otherwise.

    :Examples:

    >>> import torch
    >>> physics = BicubicSR(factor=2, noise_level=0)
    >>> physics.A(torch.ones(1, 3, 37, 31)).shape
    torch.Size([1, 3, 18, 15])
    """

    task = "sr"

    def __init__(
        self,
        factor: int = 2,
        noise_level: float = DEFAULT_NOISE_LEVEL,
        noise_kind: str = DEFAULT_NOISE_MODEL,
        gain: float | None = None,
    ) -> None:
        super().__init__(noise_level, noise_kind, gain)
        self.factor = int(factor)
        self._matrices = _LRU(4 * _CACHE_SIZE)

    @property
    def scale(self) -> int:
        return self.factor

    def initial_estimate(self, y: torch.Tensor, img_size: tuple[int, ...] | None = None) -> torch.Tensor:
        return self.upsample(y, img_size)

    def _matrix(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = ("R", length, dtype, str(device))
        return self._matrices.get(key, lambda: Fn.downsampling_matrix(length, self.factor, dtype, device))

    def _pinv(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        def build() -> torch.Tensor:
            exact = self._matrix(length, torch.float64, device)
            return torch.linalg.pinv(exact).to(dtype)

        return self._matrices.get(("pinv", length, dtype, str(device)), build)

    def _eig(
        self, length: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            exact = self._matrix(length, torch.float64, device)
            values, vectors = torch.linalg.eigh(exact.T @ exact)
            return values.clamp_min(0).to(dtype), vectors.to(dtype)

        return self._matrices.get(("eig", length, dtype, str(device)), build)

    def hr_size(self, y: torch.Tensor, img_size: tuple[int, ...] | None = None) -> tuple[int, int]:
        if img_size is not None:
            return int(img_size[-2]), int(img_size[-1])
        return y.shape[-2] * self.factor, y.shape[-1] * self.factor

    def A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return Fn.bicubic_downsample(_working(x), self.factor)

    def A_adjoint(
        self, y: torch.Tensor, img_size: tuple[int, ...] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        y = _working(y)
        height, width = self.hr_size(y, img_size)
        rows = self._matrix(height, y.dtype, y.device)
        cols = self._matrix(width, y.dtype, y.device)
        return Fn.separable_apply(y, rows.T, cols.T)

    def A_dagger(
        self, y: torch.Tensor, img_size: tuple[int, ...] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Exact minimum-norm least-squares solution, through the 1-D pseudo-inverses."""
        y = _working(y)
        height, width = self.hr_size(y, img_size)
        return Fn.separable_apply(
            y, self._pinv(height, y.dtype, y.device), self._pinv(width, y.dtype, y.device)
        )

    def prox_l2(
        self, z: Any, y: torch.Tensor, gamma: float, img_size: tuple[int, ...] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        r"""Closed form of :math:`(\gamma A^\top A + I)^{-1}(\gamma A^\top y + z)`: ``A^T A`` is the Kronecker
        product of two 1-D Gram matrices, diagonalised by their eigenvectors."""
        y = _working(y)
        if isinstance(z, torch.Tensor):
            img_size = tuple(z.shape[-2:])
        height, width = self.hr_size(y, img_size)
        rhs = gamma * self.A_adjoint(y, img_size=(height, width))
        if isinstance(z, torch.Tensor):
            rhs = rhs + _working(z)
        elif z:
            rhs = rhs + float(z)
        values_h, vectors_h = self._eig(height, y.dtype, y.device)
        values_w, vectors_w = self._eig(width, y.dtype, y.device)
        spectral = Fn.separable_apply(rhs, vectors_h.T, vectors_w.T)
        spectral = spectral / (gamma * values_h[:, None] * values_w[None, :] + 1)
        return Fn.separable_apply(spectral, vectors_h, vectors_w)

    def upsample(self, y: torch.Tensor, img_size: tuple[int, ...] | None = None) -> torch.Tensor:
        """Bicubic upsampling: the cheap pseudo-inverse used as the ``up`` baseline."""
        return Fn.bicubic_upsample(_working(y), self.factor, self.hr_size(y, img_size))

    def describe(self) -> dict[str, Any]:
        return {"task": "sr", "sr_factor": self.factor, **self.describe_noise()}
