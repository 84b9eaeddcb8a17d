"""Properties of the losses and methods: SURE unbiasedness, partial border, shared masks, stop-gradient,
training on a real photograph."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from conftest import fit_psnr
from sei.errors import SeiUserError
from sei.losses import (
    METHODS,
    CSSLoss,
    EquivarianceLoss,
    ModelRandomness,
    SupervisedLoss,
    SureLoss,
    build_method,
    resolve_autocast_dtype,
)
from sei.physics import make_physics
from sei.transforms import Scale


class TinyNet(torch.nn.Module):
    """Residual conv net; for SR, bicubic upsampling first (output r times larger)."""

    def __init__(self, factor: int = 1, dropout: float = 0.0, width: int = 8) -> None:
        super().__init__()
        self.factor = factor
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(width, 3, 3, padding=1)
        )
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.factor > 1:
            y = torch.nn.functional.interpolate(y, scale_factor=self.factor, mode="bicubic")
        return y + self.dropout(self.body(y))


def _crop(image: torch.Tensor, size: int, top: int = 200, left: int = 180) -> torch.Tensor:
    return image[None, :, top : top + size, left : left + size].contiguous()


def _interior_mse(physics, z: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``(z - reference)^2`` inside the operator's border margin (where SURE counts)."""
    margin = physics.margin
    height, width = z.shape[-2:]
    return ((z - reference)[..., margin : height - margin, margin : width - margin] ** 2).flatten(1).mean(1)


@pytest.mark.parametrize("divergence", ["exact", "finite-difference"])
@pytest.mark.parametrize("task", ["deblurring", "sr"])
def test_sure_is_unbiased_for_a_wiener_filter(task, divergence, astronaut):
    physics = make_physics(task, noise_level=25)
    size = 40
    x = _crop(astronaut, size).double().repeat(400, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    y = physics(x, rng=generator)

    def wiener(
        measurement: torch.Tensor,
    ) -> torch.Tensor:  # linear in y: prox of gamma/2 |Ax - y|^2 + 1/2 |x|^2
        return physics.prox_l2(0, measurement, 30.0, img_size=(size, size))

    x_net = wiener(y)
    sure = SureLoss(divergence=divergence)(x_net, None, y, physics, wiener, rng=generator)
    true_mse = _interior_mse(physics, physics.A(x_net), physics.A(x))
    difference = sure - true_mse
    half_width = 4 * difference.std() / len(difference) ** 0.5
    assert difference.mean().abs() < half_width
    # the test has power: the residual alone (no divergence term) is biased far outside the interval
    residual = _interior_mse(physics, physics.A(x_net), y) - physics.sigma**2
    assert (residual - true_mse).mean().abs() > 5 * half_width


def test_exact_divergence_cannot_be_gamed_by_a_network_that_detects_the_probe(astronaut):
    """A network can tell y + tau b from y by its noise level and answer it differently. This one is
    a Wiener filter that adds a Laplacian of its input whenever the input is noisier than the
    measurements: on real measurements it is exactly the Wiener filter, yet the finite-difference
    SURE reports far less than its true error (the network we trained learned to do this, see
    SureLoss). The exact divergence sees only the function around y, so its SURE stays unbiased."""
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=25)
    size, sigma, tau = 40, physics.sigma, 0.1
    x = _crop(astronaut, size).double().repeat(200, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    y = physics(x, rng=generator)
    laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64).expand(3, 1, 3, 3)

    def high_pass(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            torch.nn.functional.pad(z, (1, 1, 1, 1), mode="circular"), laplacian, groups=3
        )

    def cheat(z: torch.Tensor) -> torch.Tensor:
        wiener = physics.prox_l2(0, z, 30.0, img_size=(size, size))
        noisier = (high_pass(z) ** 2).flatten(1).mean(
            1
        ) > 20 * sigma**2 * 1.5  # 20 sigma^2: the noise's energy
        return wiener + noisier.view(-1, 1, 1, 1).double() * high_pass(z)

    x_net = cheat(y)
    assert torch.equal(
        x_net, physics.prox_l2(0, y, 30.0, img_size=(size, size))
    )  # never triggered on real data
    true_mse = _interior_mse(physics, physics.A(x_net), physics.A(x))
    estimates = {
        divergence: SureLoss(tau=tau, divergence=divergence)(
            x_net, None, y, physics, cheat, rng=torch.Generator().manual_seed(1)
        )
        for divergence in ("exact", "finite-difference")
    }
    exact_error = (estimates["exact"] - true_mse).detach()
    assert exact_error.mean().abs() < 4 * exact_error.std() / len(exact_error) ** 0.5
    gamed_error = (estimates["finite-difference"] - true_mse).detach()
    assert gamed_error.mean() < -true_mse.mean()  # reports a negative error: below zero on average


@pytest.mark.parametrize("task", ["deblurring", "sr"])
def test_exact_divergence_is_the_limit_of_the_finite_difference(task):
    """Loss and parameter gradient of the exact SURE equal the finite difference's as tau -> 0
    (float64, a ReLU network with pixel shuffle like unet-small): the double backpropagation is right."""
    physics = make_physics(
        task,
        kernel="Gaussian_R1" if task == "deblurring" else None,
        sr_factor=2 if task == "sr" else None,
        noise_level=5,
    )
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 12 if task == "sr" else 3, 3, padding=1),
    ]
    model = torch.nn.Sequential(*layers, *([torch.nn.PixelShuffle(2)] if task == "sr" else [])).double()
    y = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    results = []
    for divergence, tau in (("exact", 0.01), ("finite-difference", 1e-7)):
        model.zero_grad()
        objective = build_method(
            "sure",
            physics,
            tau=tau,
            sure_divergence=divergence,
            autocast_dtype=None,
            batched_sure_passes=False,
        )
        loss = objective(model, y, physics, rng=torch.Generator().manual_seed(3))["loss"]
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (exact, exact_grad), (limit, limit_grad) = results
    assert torch.allclose(exact, limit, rtol=1e-8)
    assert (exact_grad - limit_grad).norm() < 1e-6 * limit_grad.norm()


def test_exact_divergence_pass_ignores_autocast():
    """The pass that is differentiated twice runs in float32 even when the objective autocasts to
    bf16 (bf16 double backpropagation drifted in training): SURE alone then equals the float32 one."""
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    torch.manual_seed(0)
    model = TinyNet(factor=2)
    y = torch.rand(2, 3, 16, 16)
    results = []
    for dtype in (None, torch.bfloat16):
        model.zero_grad()
        objective = build_method("sure", physics, autocast_dtype=dtype, sure_divergence="exact")
        loss = objective(model, y, physics, rng=torch.Generator().manual_seed(0))["loss"]
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_partial_sure_ignores_the_border_exactly():
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    margin = physics.margin
    assert margin == 6
    generator = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 30, 26)
    x_net, perturbed = torch.rand_like(y), torch.rand_like(y)
    loss = SureLoss(divergence="finite-difference")
    probe = loss.draw_probe(y, physics, generator)
    assert torch.all(probe[..., :margin, :] == 0) and torch.all(probe[..., -margin:] == 0)
    assert torch.all(probe[..., margin:-margin, margin:-margin] != 0)
    corrupted = y.clone()
    corrupted[..., :margin, :] = 5.0
    corrupted[..., :, -margin:] = -3.0
    kwargs = {"probe": probe, "perturbed": perturbed}
    assert torch.equal(
        loss(x_net, None, y, physics, None, **kwargs), loss(x_net, None, corrupted, physics, None, **kwargs)
    )
    full = SureLoss(margin=0, divergence="finite-difference")
    assert not torch.allclose(
        full(x_net, None, y, physics, None, **kwargs), full(x_net, None, corrupted, physics, None, **kwargs)
    )
    with pytest.raises(SeiUserError, match="no interior"):
        loss(x_net[..., :12, :12], None, y[..., :12, :12], physics, None, rng=generator)


class NoisyIdentity(torch.nn.Module):
    """f(y) = y + dropout(offset): with one fixed mask its divergence is exactly that of the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.full((1, 3, 1, 1), 0.2))
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.dropout(self.offset.expand_as(y))


def test_sure_passes_share_the_dropout_mask(astronaut):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=10)
    y = physics(_crop(astronaut, 32).repeat(4, 1, 1, 1), rng=torch.Generator().manual_seed(0))
    model = NoisyIdentity()
    loss = SureLoss(divergence="finite-difference")

    def sure(shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)  # the same mask for f(y) in every variant
        randomness = ModelRandomness(model) if shared else None
        x_net = model(y)
        value = loss(
            x_net, None, y, physics, model, rng=torch.Generator().manual_seed(1), randomness=randomness
        )
        # the same loss for the deterministic map t -> t + (x_net - y): identity Jacobian, same f(y)
        exact = loss(x_net, None, y, physics, lambda t: t + (x_net - y), rng=torch.Generator().manual_seed(1))
        return value, exact

    with torch.no_grad():
        shared, exact = sure(shared=True)
        independent, _ = sure(shared=False)
        torch.manual_seed(0)
        through_objective = build_method("sure", physics, autocast_dtype=None)(
            model, y, physics, rng=torch.Generator().manual_seed(1)
        )["sure"]
    shared_error = (shared - exact).abs().max()
    independent_error = (independent - exact).abs().mean()
    assert independent_error > 1e-4  # different masks: (m1 - m2) * offset / tau swamps the divergence
    assert shared_error < 1e-3 * independent_error
    assert torch.allclose(through_objective, shared.mean(), rtol=1e-5)


def test_replay_leaves_the_global_rng_as_if_not_replayed():
    randomness = ModelRandomness()
    first = torch.rand(3)
    with randomness.replay():
        assert torch.equal(torch.rand(3), first)
    after = torch.rand(3)
    torch.set_rng_state(randomness.cpu_state)
    torch.rand(3)
    assert torch.equal(torch.rand(3), after)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_treats_the_transformed_estimate_as_a_constant(stop_gradient, astronaut):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    y = physics(_crop(astronaut, 24).repeat(2, 1, 1, 1), rng=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = TinyNet()

    def gradient(loss_fn) -> torch.Tensor:
        model.zero_grad()
        loss_fn().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    loss = EquivarianceLoss(Scale(), stop_gradient=stop_gradient)
    ours = gradient(
        lambda: loss(model(y), None, y, physics, model, rng=torch.Generator().manual_seed(3)).mean()
    )

    def constant_target() -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)  # the same draws as inside the loss
        with torch.no_grad():
            target = Scale()(model(y), rng=generator)
        remeasured = physics.noise(physics.A(target), rng=generator)
        return ((model(remeasured) - target) ** 2).mean()

    reference = gradient(constant_target)
    if stop_gradient:
        assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-8)
    else:
        assert (ours - reference).norm() > 1e-3 * reference.norm()


def _recording_identity() -> tuple[list[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """An identity network that keeps every input it is given (in the returned list)."""
    seen: list[torch.Tensor] = []

    def model(t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return t

    return seen, model


def test_equivariance_remeasures_with_fresh_noise():
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    seen, model = _recording_identity()

    x_net = torch.full((1, 3, 16, 16), 0.5)
    EquivarianceLoss(Scale(factors=[1.0]))(
        x_net, None, x_net, physics, model, rng=torch.Generator().manual_seed(0)
    )
    residual = seen[0] - physics.A(x_net)
    assert abs(float(residual.std()) - physics.sigma) < 0.2 * physics.sigma


def test_css_degrades_the_measurement_again_for_sr():
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    y = torch.rand(2, 3, 24, 24)
    inputs: list[torch.Tensor] = []
    net = TinyNet(factor=2)

    def model(t: torch.Tensor) -> torch.Tensor:
        inputs.append(t)
        return net(t)

    value = CSSLoss()(None, None, y, physics, model, rng=torch.Generator().manual_seed(0))
    assert inputs[0].shape == (2, 3, 12, 12)
    expected_input = physics.noise(physics.A(y), rng=torch.Generator().manual_seed(0))
    assert torch.equal(inputs[0], expected_input)
    assert torch.allclose(value, ((net(expected_input) - y) ** 2).flatten(1).mean(1))


def test_registry_names_inputs_and_errors():
    """docs/methods.md's table of methods (name, aliases, needs x, calls f(y)) is what the registry builds."""
    import re
    from pathlib import Path

    physics = make_physics("sr", sr_factor=2)
    text = (Path(__file__).parents[1] / "docs" / "methods.md").read_text()
    rows = re.findall(
        r"^\| `([\w-]+)`(?: \(`([\w-]+)`\))? +\|(?:[^|\\]|\\.)*\| (yes|no) +\| (yes|no) +\|$", text, re.M
    )
    assert {name for name, *_ in rows} == set(METHODS.values())
    for name, alias, needs_x, calls_f in rows:
        for spelling in filter(None, (name, alias)):
            objective = build_method(spelling, physics)
            assert objective.name == METHODS[spelling] == name
            assert (objective.uses_ground_truth, objective.needs_estimate) == (
                needs_x == "yes",
                calls_f == "yes",
            )
    assert set(METHODS) == {spelling for row in rows for spelling in row[:2] if spelling}
    assert sorted(build_method("ei-shift", physics, alpha=0.3).weights.items()) == [
        ("equivariance", 0.3),
        ("sure", 1.0),
    ]
    assert sorted(build_method("sure", physics).losses) == ["sure"]
    with pytest.raises(
        SeiUserError,
        match=r"unknown method 'ei'.*proposed, sei, sup, supervised, css, ei-shift, ei-rotate, sure",
    ):
        build_method("ei", physics)
    with pytest.raises(SeiUserError, match="ground-truth"):
        build_method("sup", physics)(TinyNet(2), torch.rand(1, 3, 8, 8), physics)
    with pytest.raises(SeiUserError, match="ground-truth"):
        SupervisedLoss()(torch.rand(1, 3, 8, 8), None, None, physics, None)


@pytest.mark.parametrize("divergence", ["exact", "finite-difference"])
def test_batched_and_channels_last_match_the_plain_passes(divergence, astronaut):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    y = physics(_crop(astronaut, 24).repeat(3, 1, 1, 1), rng=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = TinyNet()
    results = []
    plain = {"batched_sure_passes": False, "channels_last": False}
    for options in (plain, plain | {"batched_sure_passes": True}, plain | {"channels_last": True}):
        model.zero_grad()
        objective = build_method(
            "proposed", physics, autocast_dtype=None, sure_divergence=divergence, **options
        )
        terms = objective(model, y, physics, rng=torch.Generator().manual_seed(4))
        terms["loss"].backward()
        results.append((terms["loss"].detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    for loss, grad in results[1:]:
        assert torch.allclose(loss, results[0][0], rtol=1e-5)
        assert torch.allclose(grad, results[0][1], rtol=1e-4, atol=1e-7)


class TinyBatchNormNet(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.body.insert(1, torch.nn.BatchNorm2d(8))


@pytest.mark.parametrize(
    "make_model", [lambda: TinyNet(dropout=0.1), TinyBatchNormNet], ids=["dropout", "batchnorm"]
)
def test_batched_passes_only_where_exact(make_model):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    y = torch.rand(2, 3, 24, 24)
    torch.manual_seed(0)
    model = make_model()
    with pytest.raises(SeiUserError, match="per-sample masks|batch statistics"):
        build_method("proposed", physics, batched_sure_passes=True, sure_divergence="finite-difference")(
            model, y, physics
        )
    # automatic (the default): falls back to the two mask-sharing passes, bit-identical to False
    values = []
    for batched in (None, False):
        torch.manual_seed(1)
        objective = build_method(
            "proposed", physics, batched_sure_passes=batched, sure_divergence="finite-difference"
        )
        values.append(objective(model, y, physics, rng=torch.Generator().manual_seed(2))["loss"])
    assert torch.equal(values[0], values[1])
    build_method("proposed", physics, batched_sure_passes=True, sure_divergence="finite-difference")(
        model.eval(), y, physics
    )  # eval mode: allowed


def test_objective_is_reproducible_from_its_generator(astronaut):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    y = physics(_crop(astronaut, 24).repeat(2, 1, 1, 1), rng=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = TinyNet()
    for name in ("proposed", "ei-rotate", "css"):
        objective = build_method(name, physics)
        first = objective(model, y, physics, rng=torch.Generator().manual_seed(7))["loss"]
        again = objective(model, y, physics, rng=torch.Generator().manual_seed(7))["loss"]
        other = objective(model, y, physics, rng=torch.Generator().manual_seed(8))["loss"]
        assert torch.equal(first, again) and not torch.equal(first, other)


def test_bfloat16_autocast_keeps_losses_in_float32(astronaut):
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    y = physics(_crop(astronaut, 24).repeat(2, 1, 1, 1), rng=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = TinyNet()
    full = build_method("proposed", physics, autocast_dtype=None)(
        model, y, physics, rng=torch.Generator().manual_seed(1)
    )
    half = build_method("proposed", physics, autocast_dtype=torch.bfloat16)(
        model, y, physics, rng=torch.Generator().manual_seed(1)
    )
    assert half["loss"].dtype == torch.float32
    assert torch.allclose(half["equivariance"], full["equivariance"], rtol=0.05)


def test_automatic_autocast_dtype():
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert resolve_autocast_dtype("auto", torch.device("cuda")) is None
    assert resolve_autocast_dtype(None, torch.device("cpu")) is None
    assert resolve_autocast_dtype(torch.float16, torch.device("cpu")) == torch.float16


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("proposed", "deblurring"),
        ("proposed", "sr"),
        ("sup", "deblurring"),
        ("css", "deblurring"),
        ("css", "sr"),
        ("ei-shift", "deblurring"),
        ("ei-rotate", "deblurring"),
        ("sure", "deblurring"),
    ],
)
def test_each_method_trains_on_a_real_photo(name, task, astronaut):
    physics = make_physics(
        task,
        kernel="Gaussian_R1" if task == "deblurring" else None,
        sr_factor=2 if task == "sr" else None,
        noise_level=5,
    )
    factor = 2 if task == "sr" else 1
    generator = torch.Generator().manual_seed(0)
    x = torch.stack(
        [astronaut[:, t : t + 32, s : s + 32] for t, s in [(60, 200), (180, 220), (260, 150), (300, 300)]]
    )
    y = physics(x, rng=generator)
    torch.manual_seed(0)
    model = TinyNet(factor=factor)
    objective = build_method(name, physics)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate() -> float:  # the same draws every time, so the values are comparable
        with torch.no_grad():
            return float(objective(model, y, physics, x=x, rng=torch.Generator().manual_seed(99))["loss"])

    before = evaluate()
    for _ in range(40):
        optimizer.zero_grad()
        objective(model, y, physics, x=x, rng=generator)["loss"].backward()
        optimizer.step()
    assert evaluate() < before - 1e-5


@pytest.mark.parametrize(
    "loss",
    [SureLoss(), EquivarianceLoss(Scale()), SupervisedLoss(), CSSLoss()],
    ids=["sure", "equivariance", "supervised", "css"],
)
def test_losses_follow_the_deepinv_keyword_protocol(loss):
    """deepinv calls a loss by keyword (its Trainer adds ``epoch``); the arguments keep deepinv's
    positional order ``(x_net, x, y, physics, model)``, and the value is one number per image."""
    from deepinv.loss import Loss

    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    x = torch.rand(3, 3, 20, 18, generator=torch.Generator().manual_seed(0))
    y = physics(x, rng=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = TinyNet()
    by_keyword = loss(
        model=model, physics=physics, y=y, x=x, x_net=model(y), epoch=0, rng=torch.Generator().manual_seed(2)
    )
    by_position = loss(model(y), x, y, physics, model, rng=torch.Generator().manual_seed(2))
    assert isinstance(loss, Loss) and by_keyword.shape == (3,)
    assert torch.equal(by_keyword, by_position)


def test_supervised_loss_is_the_per_image_mse_to_the_sharp_image():
    physics = make_physics("deblurring", kernel="Gaussian_R1")
    generator = torch.Generator().manual_seed(0)
    estimate, truth = torch.rand(2, 3, 8, 8, generator=generator), torch.rand(2, 3, 8, 8, generator=generator)
    value = SupervisedLoss()(estimate, truth, None, physics, None)
    assert torch.allclose(value, ((estimate - truth) ** 2).mean(dim=(1, 2, 3)))
    estimate.requires_grad_(True)
    SupervisedLoss()(estimate, truth, None, physics, None).sum().backward()
    assert torch.allclose(estimate.grad, 2 * (estimate - truth) / estimate[0].numel())


# ------------------------------------------------------------------------------------------------
# UNSURE: the noise level is learned (SureLoss(unsure=True), build_method(..., unsure=True))


def _best_response(physics, y_population: torch.Tensor):
    r"""The linear estimators that solve UNSURE's inner problem for the measurement spectrum.

    Per frequency :math:`k` of the measurements, with :math:`c_k = \mathbb{E}|\hat y_k|^2 / m`, the
    minimiser over circulant filters :math:`h` of :math:`\mathbb{E}\|h y - y\|^2/m + 2\eta\,\mathrm{div}\,h`
    is :math:`h_k = 1 - \eta / c_k` (the linear case of :math:`y + \eta \nabla \log p(y)`). Its
    divergence :math:`\mathrm{mean}_k(1 - \eta/c_k)` is zero at :math:`\eta^\star = 1/\mathrm{mean}_k(1/c_k)`
    (a harmonic mean: above :math:`\sigma^2`, by the share of frequencies the signal dominates). The
    estimator :math:`f(y) = A^{+} h y` gives :math:`A f(y) = h y`; for a blur, frequencies where the
    transfer function is below 1e-3 cannot be reached (:math:`h_k = 0` there, and :math:`\eta^\star`
    is the harmonic mean over the others). Returns ``(estimator(eta), eta_star)``."""
    pixels = y_population.shape[-1] * y_population.shape[-2]
    spectrum = (torch.fft.fft2(y_population).abs() ** 2).mean(0) / pixels
    if physics.task == "deblurring":
        delta = torch.zeros_like(y_population[:1])
        delta[..., 0, 0] = 1
        transfer = torch.fft.fft2(physics.A(delta))[0]
        reach = transfer.abs() ** 2 > 1e-6
        inverse = torch.where(reach, 1 / transfer, 0)

        def invert(h: torch.Tensor) -> torch.Tensor:
            return torch.fft.ifft2(torch.fft.fft2(h) * inverse).real
    else:
        reach = torch.ones_like(spectrum, dtype=torch.bool)
        invert = physics.A_dagger
    eta_star = float(reach.sum() / (reach / spectrum).sum())

    def estimator(eta: float):
        gain = torch.where(reach, 1 - eta / spectrum, 0)
        return lambda z: invert(torch.fft.ifft2(torch.fft.fft2(z) * gain).real)

    return estimator, eta_star


@pytest.mark.parametrize("divergence", ["exact", "finite-difference"])
@pytest.mark.parametrize(("task", "excess"), [("deblurring", 0.15), ("sr", 0.35)])
def test_unsure_ascent_converges_to_the_saddle_point(task, excess, divergence, astronaut):
    """The ascent on eta, against the estimator that best responds to the current eta, converges
    to the saddle point eta*: within 3% after 100 steps from twice the true noise std (4 sigma^2).
    eta* overestimates the noise variance, by the share of frequencies the signal dominates: 12% for
    this Gaussian_R2-blurred crop (among the frequencies the blur passes above 1e-3), 28% for SR x2
    (docs/methods.md, UNSURE); the std by 6% and 13%."""
    physics = make_physics(task, noise_level=5)
    x = _crop(astronaut, 40).double()
    generator = torch.Generator().manual_seed(0)
    estimator, eta_star = _best_response(physics, physics(x.repeat(256, 1, 1, 1), rng=generator))
    sigma2 = physics.sigma**2
    assert 1 < eta_star / sigma2 < 1 + excess
    y = physics(x.repeat(4, 1, 1, 1), rng=generator)
    loss = SureLoss(margin=0, sigma=2 * physics.sigma, divergence=divergence, unsure=True, step_size=0.05)
    for _ in range(100):
        model = estimator(float(loss.eta))
        loss(model(y), None, y, physics, model, rng=generator)
    assert abs(float(loss.eta) / eta_star - 1) < 0.03
    assert abs(float(loss.noise_std) / physics.sigma - 1) < (1 + excess) ** 0.5 - 1 + 0.02


def _unsure_run(objective, model, optimizer, y, physics, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        torch.manual_seed(step)
        optimizer.zero_grad()
        objective(model, y, physics, rng=generator)["loss"].backward()
        optimizer.step()


@pytest.mark.parametrize("divergence", ["exact", "finite-difference"])
def test_unsure_state_dict_resumes_exactly(divergence, astronaut):
    """eta and its momentum are buffers of the objective: a run resumed from objective.state_dict()
    (with the model's and optimizer's) continues bit for bit like the uninterrupted one."""
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    y = physics(_crop(astronaut, 24).repeat(2, 1, 1, 1), rng=torch.Generator().manual_seed(0))

    def fresh():
        torch.manual_seed(0)
        model = TinyNet()
        objective = build_method(
            "proposed", physics, sure_divergence=divergence, unsure=True, unsure_init=8.0
        )
        return objective, model, torch.optim.Adam(model.parameters(), lr=3e-3)

    objective, model, optimizer = fresh()
    buffers = ["losses.sure.eta", "losses.sure.eta_initial", "losses.sure.eta_velocity"]
    assert sorted(objective.state_dict()) == buffers
    assert objective.noise_level() == pytest.approx(8.0)
    _unsure_run(objective, model, optimizer, y, physics, range(3))
    saved = {
        name: {k: v.clone() for k, v in part.state_dict().items()}
        for name, part in [("objective", objective), ("model", model)]
    }
    saved["optimizer"] = copy.deepcopy(optimizer.state_dict())
    assert objective.noise_level() != pytest.approx(8.0)  # it moved
    _unsure_run(objective, model, optimizer, y, physics, range(3, 6))

    resumed, resumed_model, resumed_optimizer = fresh()
    resumed.load_state_dict(saved["objective"])
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    _unsure_run(resumed, resumed_model, resumed_optimizer, y, physics, range(3, 6))
    for key, value in objective.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert resumed.noise_level() == objective.noise_level()


def test_unsure_equivariance_remeasures_with_the_estimate():
    """With UNSURE the equivariance term's fresh noise has the learned std, not the physics' nominal
    one; the estimate moves only in training calls with grad enabled."""
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    seen, model = _recording_identity()

    y = torch.full((2, 3, 32, 32), 0.5)
    objective = build_method(
        "proposed", physics, scale_factors=(1.0,), unsure=True, unsure_init=20.0, autocast_dtype=None
    )
    before = objective.state_dict()["losses.sure.eta"].clone()
    with torch.no_grad():
        objective(model, y, physics, rng=torch.Generator().manual_seed(0))
    assert torch.equal(objective.state_dict()["losses.sure.eta"], before)  # no ascent step without grad
    residual = seen[-1] - physics.A(y)
    assert abs(float(residual.std()) * 255 - 20.0) < 0.05 * 20.0
    objective.eval()
    objective(model, y, physics, rng=torch.Generator().manual_seed(0))
    assert torch.equal(objective.state_dict()["losses.sure.eta"], before)  # nor in eval mode
    objective.train()
    objective(model, y, physics, rng=torch.Generator().manual_seed(0))
    assert not torch.equal(objective.state_dict()["losses.sure.eta"], before)
    nominal = build_method("proposed", physics, scale_factors=(1.0,), autocast_dtype=None)
    seen.clear()
    nominal(model, y, physics, rng=torch.Generator().manual_seed(0))
    assert abs(float((seen[-1] - physics.A(y)).std()) * 255 - 5.0) < 0.05 * 5.0


def test_unsure_sure_term_uses_eta_and_plain_sure_is_unchanged(astronaut):
    """The logged SURE of an UNSURE objective is the loss with eta in place of sigma^2: with eta at
    the true sigma^2 it is the plain SURE value, to float32 rounding; plain SURE has no buffers."""
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    y = physics(_crop(astronaut, 32).repeat(2, 1, 1, 1), rng=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = TinyNet(factor=2)
    plain = build_method("sure", physics, autocast_dtype=None)
    unsure = build_method("sure", physics, autocast_dtype=None, unsure=True)
    assert dict(plain.state_dict()) == {} and plain.noise_level() is None and not plain.unsure
    assert unsure.unsure and unsure.noise_level() == pytest.approx(5.0)
    with torch.no_grad():
        values = [
            objective(model, y, physics, rng=torch.Generator().manual_seed(1))["sure"]
            for objective in (plain, unsure)
        ]
    assert torch.allclose(values[0], values[1], rtol=1e-5)


def test_unsure_settings_that_make_no_sense():
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    for method in ("sup", "css"):
        with pytest.raises(SeiUserError, match="has none"):
            build_method(method, physics, unsure=True)
    with pytest.raises(SeiUserError, match="pass unsure=True"):
        build_method("sure", physics, unsure_init=5.0)
    with pytest.raises(SeiUserError, match="positive initial noise level"):
        build_method("sure", physics, unsure=True, unsure_init=0.0)
    with pytest.raises(SeiUserError, match="positive initial noise level"):
        build_method("sure", make_physics("sr", sr_factor=2, noise_level=0), unsure=True)
    with pytest.raises(SeiUserError, match="step size"):
        build_method("proposed", physics, unsure=True, unsure_step_size=0.0)
    with pytest.raises(SeiUserError, match="momentum"):
        SureLoss(unsure=True, momentum=1.0)


def _unsure_rank(rank: int, world_size: int, address: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=world_size)
    try:
        loss = SureLoss(sigma=0.02, unsure=True)
        for step in range(3):  # each rank sees different divergences
            loss._ascend(torch.tensor([0.1 * (rank + 1), 0.3 * step]))
        results[rank] = (float(loss.eta), float(loss.eta_velocity))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch and sei: several seconds
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_unsure_step_is_the_same_on_every_rank(tmp_path):
    """Under torch.distributed the ascent uses the gradient averaged over the ranks: every rank ends
    with the same eta, the one a single process gets from the mean divergence."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_unsure_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", results), nprocs=2, join=True)
    single = SureLoss(sigma=0.02, unsure=True)
    for step in range(3):
        single._ascend(torch.tensor([0.15, 0.3 * step]))  # the mean over both ranks' batches
    assert results[0] == results[1]
    assert results[0][0] == pytest.approx(float(single.eta), rel=1e-6)


def _train_sr_from_measurements(
    astronaut, steps: int, told: float = 5.0, **unsure
) -> tuple[float, float | None]:
    """SURE alone, SR x2, a small net on 49 crops of the photograph measured at noise level 5, the loss
    told the level ``told``; (PSNR on the crops, learned level or None)."""
    physics = make_physics("sr", sr_factor=2, noise_level=5)
    told_physics = make_physics("sr", sr_factor=2, noise_level=told)
    generator = torch.Generator().manual_seed(0)
    corners = [(t, s) for t in range(40, 440, 64) for s in range(40, 440, 64)]
    x = torch.stack([astronaut[:, t : t + 64, s : s + 64] for t, s in corners])
    y = physics(x, rng=generator)
    torch.manual_seed(0)
    model = TinyNet(factor=2, width=16)
    objective = build_method("sure", told_physics, autocast_dtype=None, **unsure)
    psnr = fit_psnr(model, objective, y, x, told_physics, generator, steps)
    return psnr, objective.noise_level()


@pytest.mark.slow  # three trainings of 400 steps
def test_unsure_training_from_measurements_only(astronaut):
    """Told half the true noise level (2.5 for 5), SURE learns the noise (measured 28.22 dB against
    28.89 with the truth); UNSURE started from that same wrong guess ends within 0.2 dB of SURE with
    the truth (measured 28.83), and its learned level rises through the truth (measured 6.2: the
    estimate is biased upward, docs/methods.md, UNSURE)."""
    reference, _ = _train_sr_from_measurements(astronaut, 400)
    wrong, _ = _train_sr_from_measurements(astronaut, 400, told=2.5)
    psnr, level = _train_sr_from_measurements(astronaut, 400, told=2.5, unsure=True)
    assert wrong < reference - 0.4
    assert psnr > reference - 0.2 and psnr > wrong + 0.4
    assert 5.0 < level < 8.0


def test_scale_transform_settings_reach_the_equivariance_term():
    """The ablation's settings (factors, antialiasing, interpolation) are the ones SEI's transform uses."""
    from sei.losses import build_method
    from sei.physics import make_physics

    objective = build_method(
        "proposed",
        make_physics("deblurring"),
        scale_factors=(0.5,),
        scale_antialias=True,
        scale_interpolation="bilinear",
    )
    transform = objective.losses["equivariance"].transform
    assert (transform.factors, transform.antialias, transform.mode) == ((0.5,), True, "bilinear")
    default = build_method("proposed", make_physics("deblurring")).losses["equivariance"].transform
    assert (default.factors, default.antialias, default.mode) == ((0.75, 0.5), False, "bicubic")


def test_an_unknown_scale_interpolation_is_a_user_error():
    from sei.errors import SeiUserError
    from sei.training import TrainConfig, run_config

    with pytest.raises(SeiUserError, match="bicubic or bilinear"):
        run_config(TrainConfig(scale_interpolation="nearest"), None)
