"""Forward operators: adjoints, FFT blur vs spatial convolution, kernels, noise, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deepinv.physics import LinearPhysics

from sei.errors import SeiUserError
from sei.physics import BicubicSR, Blur, Operator, get_kernel, make_physics, measurement_seed
from sei.physics import functional as Fn

OPERATORS = {
    "gaussian_r1": lambda: make_physics("deblurring", kernel="Gaussian_R1"),
    "gaussian_r2": lambda: make_physics("deblurring", kernel="Gaussian_R2"),
    "gaussian_r3": lambda: make_physics("deblurring", kernel="Gaussian_R3"),
    "gaussian_r1.5": lambda: make_physics("deblurring", kernel="Gaussian_R1.5"),
    "box_r2": lambda: make_physics("deblurring", kernel="Box_R2"),
    "box_r4": lambda: make_physics("deblurring", kernel="Box_R4"),
    "sr_x2": lambda: make_physics("sr", sr_factor=2),
    "sr_x3": lambda: make_physics("sr", sr_factor=3),
    "sr_x4": lambda: make_physics("sr", sr_factor=4),
    "sr_x8": lambda: make_physics("sr", sr_factor=8),
}
SIZES = [(37, 31), (48, 48), (64, 40)]


def _input(physics, size, dtype=torch.float64, channels=3, batch=2):
    height, width = size
    if isinstance(physics, BicubicSR):
        r = physics.factor
        height, width = max(height // r, 2) * r, max(width // r, 2) * r
    return torch.rand(batch, channels, height, width, dtype=dtype, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_adjoint_identity_float64(name, size):
    physics = OPERATORS[name]()
    x = _input(physics, size)
    y = torch.randn_like(physics.A(x))
    lhs = (physics.A(x) * y).sum()
    rhs = (x * physics.A_adjoint(y)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-10


@pytest.mark.parametrize("name", OPERATORS)
def test_prox_l2_is_the_exact_minimiser(name):
    """The closed-form prox satisfies the optimality condition gamma A^T(Ax - y) + (x - z) = 0."""
    physics = OPERATORS[name]()
    x = _input(physics, (40, 36))
    y = physics.A(x) + 0.05 * torch.randn_like(physics.A(x))
    z = torch.rand_like(x)
    for gamma in (0.1, 10.0):
        estimate = physics.prox_l2(z, y, gamma)
        residual = gamma * physics.A_adjoint(physics.A(estimate) - y) + (estimate - z)
        assert residual.abs().max() < 1e-9


@pytest.mark.parametrize("name", ["sr_x2", "sr_x3", "sr_x4"])
def test_sr_pseudo_inverse_is_consistent_and_minimum_norm(name):
    physics = OPERATORS[name]()
    x = _input(physics, (48, 36))
    y = physics.A(x)
    estimate = physics.A_dagger(y)
    assert (physics.A(estimate) - y).abs().max() < 1e-10
    # minimum norm: the estimate has no component in the null space, so it is A^T of something
    assert estimate.norm() <= x.norm()


def test_fft_blur_equals_direct_circular_convolution():
    kernel = (
        get_kernel("Gaussian_R2") * torch.linspace(0.5, 1.5, 13, dtype=torch.float64)[:, None]
    )  # asymmetric
    kernel = kernel / kernel.sum()
    physics = Blur(kernel, noise_level=0)
    x = torch.rand(2, 3, 37, 31, dtype=torch.float64)
    pad = kernel.shape[0] // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="circular")
    # conv2d is a correlation: flip the kernel to get a convolution
    direct = F.conv2d(padded, kernel.flip(0, 1)[None, None].expand(3, 1, -1, -1), groups=3)
    assert torch.allclose(physics.A(x), direct, atol=1e-12)


def test_blur_kernel_larger_than_image_wraps_around():
    physics = make_physics("deblurring", kernel="Gaussian_R3")  # 19x19
    x = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    y = torch.randn(1, 1, 9, 11, dtype=torch.float64)
    assert abs((physics.A(x) * y).sum() - (x * physics.A_adjoint(y)).sum()) < 1e-10
    assert torch.allclose(physics.A(torch.ones_like(x)), torch.ones_like(x))  # still sums to 1


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5: MATLAB's imresize and PIL's bicubic)."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t**2 + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_sr_operator_is_antialiased_bicubic_downsampling(factor):
    """Away from the borders, output pixel i of x r is the mean of the input under Keys' cubic stretched by
    r (antialiasing) around the input position r (i + 1/2): the paper's bicubic degradation. The rows are
    read off the operator itself (functional.downsampling_matrix), so this checks the operator."""
    length = 16 * factor + 5
    rows = Fn.downsampling_matrix(length, factor, torch.float64, "cpu").numpy()
    assert rows.shape == (length // factor, length)
    centres = np.arange(length) + 0.5
    for i in range(2, length // factor - 2):
        weights = _keys_cubic((centres - factor * (i + 0.5)) / factor)
        assert np.abs(rows[i] - weights / weights.sum()).max() < 1e-12, i
    x = torch.rand(2, 3, 37, 31, dtype=torch.float64)
    y = make_physics("sr", sr_factor=factor).A(x)
    assert y.shape[-2:] == (37 // factor, 31 // factor)


def test_sr_upsample_is_bicubic_to_the_target_size():
    physics = make_physics("sr", sr_factor=3)
    y = torch.rand(1, 3, 10, 7)
    assert physics.upsample(y).shape[-2:] == (30, 21)
    assert physics.upsample(y, img_size=(31, 22)).shape[-2:] == (31, 22)


@pytest.mark.parametrize("name", ["gaussian_r2", "box_r4", "sr_x2", "sr_x3", "sr_x8"])
def test_initial_estimate_is_an_image_of_scale_times_the_measurement(name):
    """``scale`` and ``initial_estimate`` replace every ``task == "sr"`` branch outside physics: the first
    guess has the image's size, and measuring it again gives back (about) the measurement."""
    physics = OPERATORS[name]()
    assert isinstance(physics, Operator) and isinstance(physics, LinearPhysics)  # the public type, deepinv's
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    y = physics.A(x)
    guess = physics.initial_estimate(y)
    assert guess.shape[-2:] == (y.shape[-2] * physics.scale, y.shape[-1] * physics.scale) == x.shape[-2:]
    if physics.scale == 1:
        assert guess is y  # a blur's first guess is the measurement itself
    else:
        assert torch.equal(guess, physics.upsample(y))
        assert physics.scale == physics.factor
        # bicubic down of bicubic up is close to the identity (not exact: the filters are not inverse)
        assert (physics.A(guess) - y).abs().mean() < 0.1 * y.abs().mean()


@pytest.mark.parametrize(
    ("name", "size", "std"),
    [
        ("Gaussian_R1", 7, 1.0),
        ("Gaussian_R2", 13, 2.0),
        ("Gaussian_R3", 19, 3.0),
        ("Gaussian_R1.5", 11, 1.5),
        ("Box_R2", 5, None),
        ("Box_R3", 7, None),
        ("Box_R4", 9, None),
    ],
)
def test_kernel_sizes_sums_and_std(name, size, std):
    kernel = get_kernel(name)
    assert kernel.dtype == torch.float64 and kernel.shape == (size, size)
    assert abs(float(kernel.sum()) - 1) < 1e-14
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    marginal = kernel.sum(1)
    assert abs(float((marginal * offsets).sum())) < 1e-12  # centred
    if std is not None:
        measured = float((marginal * offsets**2).sum().sqrt())
        assert abs(measured - std) < 0.01 * std  # truncation at 3 std costs < 1%
    else:
        assert torch.allclose(kernel, torch.full_like(kernel, 1 / size**2))


def test_kernel_from_files(tmp_path):
    from PIL import Image

    reference = get_kernel("Gaussian_R1")
    np.save(tmp_path / "k.npy", (reference * 7).numpy())
    torch.save(reference * 3, tmp_path / "k.pt")
    Image.fromarray(np.uint8([[0, 50, 0], [50, 255, 50], [0, 50, 0]])).save(tmp_path / "k.png")
    assert torch.allclose(get_kernel(tmp_path / "k.npy"), reference)
    assert torch.allclose(get_kernel(str(tmp_path / "k.pt")), reference)
    png = get_kernel(tmp_path / "k.png")
    assert abs(float(png.sum()) - 1) < 1e-12 and png[1, 1] == png.max()


def test_kernel_errors_are_one_line_and_explain(tmp_path):
    with pytest.raises(SeiUserError, match="Valid forms: Gaussian_R"):
        get_kernel("Motion_R2")
    np.save(tmp_path / "bad3d.npy", np.ones((2, 3, 3)))
    with pytest.raises(SeiUserError, match="must be 2-D"):
        get_kernel(tmp_path / "bad3d.npy")
    np.save(tmp_path / "zero.npy", np.array([[1.0, -1.0]]))
    with pytest.raises(SeiUserError, match="sums to zero"):
        get_kernel(tmp_path / "zero.npy")
    with pytest.raises(SeiUserError, match="unknown task"):
        make_physics("denoising")
    with pytest.raises(SeiUserError, match="unsupported sr factor"):
        make_physics("sr", sr_factor=5)


@pytest.mark.parametrize("name", ["gaussian_r2", "sr_x2"])
def test_float32_matches_float64_and_channels(name):
    physics = OPERATORS[name]()
    x64 = _input(physics, (48, 40))
    assert torch.allclose(physics.A(x64.float()).double(), physics.A(x64), atol=1e-5)
    single = physics.A(x64[:, :1])
    assert torch.allclose(single, physics.A(x64)[:, :1])


def test_otf_is_cached_per_size_dtype():
    physics = make_physics("deblurring", kernel="Gaussian_R2")
    physics.A(torch.rand(1, 3, 32, 32))
    physics.A(torch.rand(4, 3, 32, 32))
    physics.A(torch.rand(1, 3, 32, 30))
    physics.A(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    assert len(physics._otfs.items) == 3


def test_noise_statistics_and_fresh_draws():
    physics = make_physics("deblurring", kernel="Box_R2", noise_level=5)
    x = torch.full((4, 3, 128, 128), 0.5)
    first, second = physics(x), physics(x)
    noise = first - physics.A(x)
    n = noise.numel()
    assert abs(float(noise.mean())) < 4 * physics.sigma / n**0.5
    assert abs(float(noise.std()) / physics.sigma - 1) < 4 / (2 * n) ** 0.5 + 1e-3
    assert not torch.equal(first, second)


def test_measure_is_deterministic_and_seeds_are_independent():
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    x = torch.rand(1, 3, 64, 64)
    a, b = physics.measure(x, seed=11), physics.measure(x, seed=11)
    c = physics.measure(x, seed=12)
    assert torch.equal(a, b)
    na, nc = (a - physics.A(x)).flatten(), (c - physics.A(x)).flatten()
    correlation = float(torch.corrcoef(torch.stack([na, nc]))[0, 1])
    assert abs(correlation) < 4 / na.numel() ** 0.5
    # the noise does not depend on the device or dtype the image lives in
    d = physics.measure(x.double(), seed=11)
    assert torch.allclose(d.float(), a, atol=1e-6)
    assert measurement_seed("div2k/0801") != measurement_seed("div2k/0802")
    assert measurement_seed("div2k/0801", 1) != measurement_seed("div2k/0801", 0)


def test_seeded_rng_noise_is_reproducible():
    physics = make_physics("deblurring", noise_level=5)
    x = torch.rand(2, 3, 16, 16)
    a = physics(x, rng=torch.Generator().manual_seed(3))
    b = physics(x, rng=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_downsampling_matrix_is_read_off_the_operator():
    for factor in (2, 3, 4):
        rows = Fn.downsampling_matrix(24, factor, torch.float64, "cpu")
        x = torch.rand(1, 1, 24, 24, dtype=torch.float64)
        assert torch.allclose(Fn.separable_apply(x, rows, rows), Fn.bicubic_downsample(x, factor), atol=1e-13)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    for name in ("gaussian_r2", "sr_x4"):
        physics = OPERATORS[name]()
        x = _input(physics, (64, 48), dtype=torch.float32)
        assert torch.allclose(physics.A(x.cuda()).cpu(), physics.A(x), atol=1e-5)
        y = physics.A(x)
        assert torch.allclose(physics.A_adjoint(y.cuda()).cpu(), physics.A_adjoint(y), atol=1e-5)


# --- 'Valid' (non-circular) convolution: how a camera blurs, and the smooth periodic extension ----------


@pytest.mark.parametrize("shape", [(13, 13), (6, 5), (1, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_valid_blur_equals_direct_convolution(shape):
    from scipy.signal import convolve2d

    from sei.physics import valid_blur

    kernel = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kernel = kernel / kernel.sum()  # asymmetric, and even sizes
    x = torch.rand(2, 3, 37, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = valid_blur(x, kernel)
    assert y.shape == (2, 3, 37 - shape[0] + 1, 31 - shape[1] + 1)
    expected = np.stack([[convolve2d(c, kernel.numpy(), mode="valid") for c in image] for image in x.numpy()])
    assert np.abs(y.numpy() - expected).max() < 1e-12
    direct = F.conv2d(x, kernel.flip(0, 1)[None, None].expand(3, 1, -1, -1), groups=3)  # torch, no padding
    assert torch.allclose(y, direct, atol=1e-12)
    assert valid_blur(x.float(), kernel).dtype == torch.float32


@pytest.mark.parametrize("kernel", ["Gaussian_R2", "Box_R4"])
def test_valid_blur_centre_equals_the_circular_blur_centre(kernel):
    from sei.physics import valid_blur, valid_crop

    physics = make_physics("deblurring", kernel=kernel, noise_level=0)
    x = torch.rand(1, 3, 40, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = valid_blur(x, physics.kernel)
    assert torch.allclose(y, valid_crop(physics.A(x), physics.kernel_size), atol=1e-12)
    assert valid_crop(x, physics.kernel_size).shape == y.shape
    with pytest.raises(ValueError, match="no valid pixel"):
        valid_blur(x[..., :8, :8], physics.kernel)


def test_smooth_periodic_extension_keeps_the_image_and_closes_the_wrap():
    from sei.physics.functional import crop_border, smooth_periodic_extension, wrap_jump_ratio

    rows = torch.linspace(0, 1, 30, dtype=torch.float64)
    y = (rows[:, None] + 0 * rows[None, :25])[None, None].expand(1, 2, 30, 25)  # a ramp: a jump at the wrap
    extended = smooth_periodic_extension(y, 7)
    assert extended.shape == (1, 2, 44, 39)
    assert torch.equal(crop_border(extended, 7), y)
    assert wrap_jump_ratio(y) > 100 and wrap_jump_ratio(extended) < 2
    blurred = make_physics("deblurring", kernel="Gaussian_R1", noise_level=0).A(torch.rand(1, 3, 32, 32))
    assert wrap_jump_ratio(blurred) < 2  # a circular blur has no jump at the wrap
