r"""Self-supervised and supervised training objectives: partial SURE, equivariance, supervised, CSS.

The losses are :class:`deepinv.loss.Loss` subclasses with deepinv's keyword protocol
``forward(x_net, x, y, physics, model, **kwargs)`` and return one value per image, so they mix with
deepinv's own losses. :func:`build_method` composes them into the methods of the paper
(docs/methods.md); the resulting :class:`Objective` runs the network passes itself::

    objective = build_method("proposed", physics)
    terms = objective(model, y, physics, rng=generator)
    terms["loss"].backward()

Every random draw (SURE probe, re-measurement noise, transform parameters, CSS noise) is taken
from the ``rng`` passed in (torch's global RNG when ``None``), so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from deepinv.loss import Loss
from deepinv.transform import Transform

from sei.errors import SeiUserError
from sei.physics import Operator, gaussian_like
from sei.problem import METHODS, SURE_FREE_METHODS, canonical_method
from sei.runtime import AutocastDtype, NetworkRunner, resolve_autocast_dtype
from sei.transforms import Rotate, Scale, Shift

__all__ = [
    "METHODS",
    "CSSLoss",
    "EquivarianceLoss",
    "ModelRandomness",
    "Objective",
    "SupervisedLoss",
    "SureLoss",
    "build_method",
    "interior_mask",
    "resolve_autocast_dtype",
]

Model = Callable[[torch.Tensor], torch.Tensor]

# Defaults of the speed levers, set by what benchmarks/sei_step.py measured (docs/performance.md,
# "One SEI training step"): each lever that paid on its own is on; torch.compile did not pay.
DEFAULT_BATCHED_SURE_PASSES: bool | None = None  # automatic: one 2B batch when that is exact
DEFAULT_AUTOCAST_DTYPE: AutocastDtype = "auto"
SURE_DIVERGENCES = ("exact", "finite-difference")
# The paper's finite difference stays the default: it was faster and, on SR x2, better within the
# budgets measured; the exact divergence cannot be gamed (SureLoss's docstring, docs/methods.md).
DEFAULT_SURE_DIVERGENCE = "finite-difference"
DEFAULT_CHANNELS_LAST = True
# UNSURE (SureLoss(unsure=True)): gradient ascent on the noise variance eta with momentum, as in
# deepinv's SureGaussianLoss (momentum 0.9, step 1e-4 there). Our step is relative to the initial
# eta, so it means the same at every noise level: deepinv's absolute 1e-4 at its sigma = 0.1 is a
# relative 0.01. docs/methods.md, "Unknown noise level: UNSURE".
DEFAULT_UNSURE_STEP_SIZE = 0.01
DEFAULT_UNSURE_MOMENTUM = 0.9


def _per_image_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: shape ``(B,)``."""
    return values.flatten(1).mean(dim=1)


def interior_mask(reference: torch.Tensor, margin: int) -> torch.Tensor:
    """``1`` inside, ``0`` on a border of width ``margin``, shaped ``(1, 1, H, W)`` like ``reference``."""
    height, width = reference.shape[-2:]
    if 2 * margin >= min(height, width):
        raise SeiUserError(
            f"a {height}x{width} measurement has no interior left after a SURE margin of {margin} pixels; "
            f"use patches larger than {2 * margin}"
        )
    mask = torch.zeros((1, 1, height, width), dtype=reference.dtype, device=reference.device)
    mask[..., margin : height - margin, margin : width - margin] = 1
    return mask


class ModelRandomness:
    """A snapshot of torch's RNG state (CPU, and the CUDA devices the model lives on), to replay it.

    Dropout and stochastic depth draw their masks from torch's global RNG. Taking a snapshot before
    :math:`f(y)` and replaying it for :math:`f(y + \\tau b)` gives both passes the same masks; the
    global RNG is left as if the replayed pass had not run.

    :param torch.nn.Module | None model: the network (its parameters' CUDA devices are captured).
    """

    def __init__(self, model: Any = None) -> None:
        parameters = model.parameters() if isinstance(model, torch.nn.Module) else []
        self.devices = sorted({p.device.index or 0 for p in parameters if p.device.type == "cuda"})
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = [torch.cuda.get_rng_state(device) for device in self.devices]

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with the captured RNG state, then restore the state from before the body."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu_state)
            for device, state in zip(self.devices, self.cuda_states, strict=True):
                torch.cuda.set_rng_state(state, device)
            yield


class SureLoss(Loss):
    r"""Partial Stein's unbiased risk estimate for Gaussian (and Poisson-Gaussian) noise, Monte-Carlo
    divergence with one probe.

    With :math:`M` the mask that is 1 inside and 0 on a border of width ``margin``, :math:`m` the
    number of interior entries, :math:`b \sim \mathcal{N}(0, I)` drawn as :math:`Mb` and
    :math:`\hat x = f(y)`:

    .. math::

        \mathcal{L}_{\mathrm{SURE}} = \frac1m \|M(A\hat x - y)\|^2
        + \frac{2\sigma^2}{m\tau}\, (Mb)^\top \big(A f(y + \tau M b) - A\hat x\big) - \sigma^2

    Its expectation over the noise equals :math:`\frac1m \mathbb{E}\|M(A\hat x - Ax)\|^2`. The
    divergence term is computed as :math:`(A^\top M b)^\top (f(y + \tau M b) - \hat x)`, which needs
    the exact adjoint that :mod:`sei.physics` operators have.

    The border is left out because patches cropped from a larger measurement do not obey the circular blur
    there (``margin = (k-1)//2`` for a ``k x k`` kernel, 0 for super-resolution).

    ``divergence="exact"`` replaces the finite difference by its limit
    :math:`\tau \to 0`, :math:`(A^\top M b)^\top J_f(y)\, M b`, computed by one extra backward pass
    (double backpropagation during training). Why not the paper's finite difference: a network can
    tell :math:`y + \tau M b` from :math:`y` by its noise level (:math:`\sqrt{\sigma^2 + \tau^2}`
    against :math:`\sigma`) and learn to answer perturbed inputs differently, which drives the
    estimated divergence, and SURE, far below their true values. We measured it: SR x2, unet-small,
    after ~2000 steps the finite-difference divergence at :math:`\tau = 0.01` was -0.60 while the
    exact one was +0.56 (and the finite difference at :math:`\tau` = 0.003 or 0.03 agreed with the exact
    one), SURE reported :math:`-1.73\sigma^2` for a true error of :math:`+0.58\sigma^2`, and the test
    PSNR fell after its peak (docs/results.md). The exact divergence has nothing to detect. It is not
    the default: per step it costs 2.7-3x the finite difference on a bf16 CPU (its pass runs in
    float32, see :class:`Objective`), and within 3000 steps it was better on Gaussian_R2 but worse on
    SR x2 (docs/results.md). Training validation measures the gap between the two estimators and
    warns when it opens (``sei.training.validation.validate``).

    **UNSURE** (``unsure=True``; Tachella, Davies, Jacques, ICLR 2025): the noise level is unknown.
    :math:`\sigma^2` becomes a variable :math:`\eta` (initialised from ``sigma``, else
    ``physics.sigma``), the loss :math:`\frac1m \|M(A\hat x - y)\|^2 + 2\eta\,\mathrm{div} - \eta`
    is minimised over the network and :math:`\mathcal{L}_\eta = \frac1m \|M(A\hat x - y)\|^2
    + 2\eta\,\mathrm{div}` is maximised over :math:`\eta` (linear in :math:`\eta`: its saddle point
    constrains the expected divergence to zero). Each training call (module in training mode, grad
    enabled) takes one ascent step with momentum on the batch-mean gradient
    :math:`g = 2\,\overline{\mathrm{div}}` (all-reduced to its mean over the processes under
    ``torch.distributed``):
    :math:`v \leftarrow \mu v + (1-\mu) g`, :math:`\eta \leftarrow \max(0, \eta + s\,\eta_0\, v)`,
    where :math:`\eta_0` is the initial value (the step is relative to it). The value returned
    uses the :math:`\eta` from before the step. :math:`\eta`, :math:`\eta_0` and :math:`v` are buffers
    (``eta``, ``eta_initial``, ``eta_velocity``), so ``state_dict()`` captures them; :attr:`noise_std` is
    the current estimate :math:`\sqrt\eta`. The learned :math:`\eta` estimates :math:`\sigma^2` from
    above (docs/methods.md, "Unknown noise level: UNSURE").

    **PG-SURE** (Poisson-Gaussian noise,
    :math:`y = \gamma\,\mathcal{P}(Ax/\gamma) + \mathcal{N}(0, \sigma^2)`; Le Montagner et al. 2014; used
    whenever the physics' ``gain`` :math:`\gamma` is non-zero, or a ``gain`` is given): the noise variance of
    entry :math:`i` is :math:`\gamma (Ax)_i + \sigma^2`, estimated without bias by
    :math:`v_i = \gamma y_i + \sigma^2`, and

    .. math::

        \mathcal{L}_{\mathrm{PG}} = \frac1m \|M(A\hat x - y)\|^2
        + \frac{2}{m\tau}\, (M v \odot b)^\top \big(A f(y + \tau M b) - A\hat x\big)
        - \frac1m \mathbf 1^\top M v

    (with ``divergence="exact"``, the limit :math:`\tau \to 0`). For :math:`\gamma = 0` it is the Gaussian
    SURE above. It is unbiased for every estimator whose second derivatives vanish (e.g. any linear one)
    and otherwise up to the terms of the Poisson finite difference beyond first order (of order
    :math:`\gamma\sigma^2 \partial^2 f` and :math:`\gamma^2 \partial^2 f`), which deepinv's ``SurePGLoss``
    also leaves out by default (``second_derivative=False``): the same estimator with a Gaussian probe
    instead of a Rademacher one, and our border mask. UNSURE is Gaussian only.

    :param float tau: probe step :math:`\tau` of the finite difference.
    :param int | None margin: border width; ``None`` takes ``physics.margin``.
    :param float | None sigma: noise std; ``None`` takes ``physics.sigma``. With ``unsure``: the
        initial guess only.
    :param str divergence: ``"finite-difference"`` (the paper's, default) or ``"exact"``.
    :param bool unsure: learn the noise variance (UNSURE) instead of using ``sigma``.
    :param float step_size: UNSURE ascent step :math:`s`, relative to the initial :math:`\eta`.
    :param float momentum: UNSURE momentum :math:`\mu \in [0, 1)`.
    :param float | None gain: Poisson gain :math:`\gamma` in [0, 1] units; ``None`` takes ``physics.gain``
        (0, Gaussian SURE, for Gaussian physics). ``0`` forces the Gaussian SURE.

    Extra keyword arguments of ``forward``: ``rng`` (generator of the probe), ``randomness`` (a
    :class:`ModelRandomness` taken before ``x_net = model(y)``: the probe pass replays it, so both
    passes share dropout masks), ``probe`` and ``perturbed`` (:math:`Mb` and :math:`f(y+\tau Mb)`
    already computed, e.g. in one batch with :math:`f(y)`), or, for the exact divergence, ``probe``
    and ``inputs`` (the tensor, requiring grad, that ``x_net`` was computed from).
    """

    needs_estimate = True
    uses_ground_truth = False

    def __init__(
        self,
        tau: float = 0.01,
        margin: int | None = None,
        sigma: float | None = None,
        divergence: str = DEFAULT_SURE_DIVERGENCE,
        unsure: bool = False,
        step_size: float = DEFAULT_UNSURE_STEP_SIZE,
        momentum: float = DEFAULT_UNSURE_MOMENTUM,
        gain: float | None = None,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise SeiUserError(f"SURE tau must be positive, got {tau}")
        if divergence not in SURE_DIVERGENCES:
            raise SeiUserError(
                f"SURE divergence must be one of {', '.join(SURE_DIVERGENCES)}, got {divergence!r}"
            )
        self.tau = float(tau)
        self.divergence = divergence
        self.margin = margin
        self.sigma = sigma
        if gain is not None and (not math.isfinite(gain) or gain < 0):
            raise SeiUserError(f"the Poisson gain of PG-SURE must be >= 0, got {gain}")
        if unsure and gain:
            raise SeiUserError(
                "UNSURE learns a Gaussian noise level; for Poisson-Gaussian noise give the gain and "
                "noise level, or estimate them with --gain auto --noise_level auto"
            )
        self.gain = gain
        self.unsure = bool(unsure)
        if self.unsure:
            if not math.isfinite(step_size) or step_size <= 0:
                raise SeiUserError(f"UNSURE step size must be positive, got {step_size}")
            if not 0 <= momentum < 1:
                raise SeiUserError(f"UNSURE momentum must be in [0, 1), got {momentum}")
            if sigma is not None and (not math.isfinite(sigma) or sigma <= 0):
                raise SeiUserError(f"UNSURE needs a positive initial noise std, got {sigma}")
            self.step_size, self.momentum = float(step_size), float(momentum)
            # nan: initialised from physics.sigma at the first call
            initial = float("nan") if sigma is None else float(sigma) ** 2
            self.register_buffer("eta", torch.tensor(initial))
            self.register_buffer("eta_initial", torch.tensor(initial))
            self.register_buffer("eta_velocity", torch.tensor(0.0))

    @property
    def noise_std(self) -> torch.Tensor | None:
        r"""UNSURE: the current noise-std estimate :math:`\sqrt{\eta}` (a detached 0-d tensor, ``nan``
        before the first call when initialised from the physics); ``None`` otherwise."""
        return self.eta.detach().clamp_min(0).sqrt() if self.unsure else None

    def _variance(self, physics: Operator, device: torch.device) -> torch.Tensor | float:
        """sigma^2 of the divergence term: the fixed one, or (UNSURE) a copy of eta on ``device``."""
        if not self.unsure:
            return float(physics.sigma if self.sigma is None else self.sigma) ** 2
        if torch.isnan(self.eta):  # first call without an initial guess: start from the physics' sigma
            if not physics.sigma > 0:
                raise SeiUserError("UNSURE needs a positive initial noise level; the physics has sigma = 0")
            self.eta.fill_(float(physics.sigma) ** 2)
            self.eta_initial.fill_(float(physics.sigma) ** 2)
        if self.eta.device != device:  # follow the data, so the ascent step needs no host transfer
            for name in ("eta", "eta_initial", "eta_velocity"):
                setattr(self, name, getattr(self, name).to(device))
        return self.eta.clone()  # the ascent updates the buffer in place; autograd keeps this copy

    def _ascend(self, divergence: torch.Tensor) -> None:
        r"""One UNSURE ascent step on :math:`\eta` from the per-image divergences of this batch."""
        gradient = 2 * divergence.detach().mean().to(self.eta.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(gradient)  # every rank takes the same step
            gradient = gradient / torch.distributed.get_world_size()
        self.eta_velocity.mul_(self.momentum).add_((1 - self.momentum) * gradient)
        self.eta.add_(self.step_size * self.eta_initial * self.eta_velocity).clamp_(min=0)

    def _gain(self, physics: Operator) -> float:
        r"""The Poisson gain :math:`\gamma` in [0, 1] units: the fixed one, else the physics' (0 for Gaussian
        noise)."""
        gain = float(getattr(physics, "gain", 0.0) if self.gain is None else self.gain)
        if self.unsure and gain:
            raise SeiUserError(
                "UNSURE learns a Gaussian noise level and the physics has Poisson-Gaussian noise; give "
                "the gain and noise level, or estimate them (--gain auto --noise_level auto)"
            )
        return gain

    def _margin(self, physics: Operator) -> int:
        return int(physics.margin if self.margin is None else self.margin)

    def draw_probe(
        self, y: torch.Tensor, physics: Operator, rng: torch.Generator | None = None
    ) -> torch.Tensor:
        """The probe :math:`Mb`: standard normal inside, zero on the border."""
        return gaussian_like(y, rng) * interior_mask(y, self._margin(physics))

    def forward(
        self,
        x_net: torch.Tensor,
        x: torch.Tensor | None,
        y: torch.Tensor,
        physics: Operator,
        model: Model,
        rng: torch.Generator | None = None,
        randomness: ModelRandomness | None = None,
        probe: torch.Tensor | None = None,
        perturbed: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        variance = self._variance(physics, y.device)
        gain = self._gain(physics)
        mask = interior_mask(y, self._margin(physics))
        interior = mask.sum() * y.shape[1]
        if probe is None:
            probe = gaussian_like(y, rng) * mask
        fidelity = (mask * (physics.A(x_net) - y) ** 2).flatten(1).sum(1) / interior
        # PG-SURE: the divergence is weighted by each entry's noise variance, estimated as gain * y + sigma^2
        weights = None if gain == 0 else (gain * y.detach() + variance) * mask
        with torch.no_grad():
            weighted_probe = probe if weights is None else probe * weights
            back_projected = physics.A_adjoint(weighted_probe, img_size=tuple(x_net.shape[-2:]))
        if self.divergence == "exact":
            divergence = (
                self._exact_divergence(x_net, y, model, probe, back_projected, inputs, randomness) / interior
            )
            return self._combine(fidelity, divergence, variance, weights, interior)
        if perturbed is None:
            if randomness is None:
                perturbed = model(y + self.tau * probe)
            else:
                with randomness.replay():
                    perturbed = model(y + self.tau * probe)
        # (Mb)^T A (f(y + tau Mb) - f(y)) = (A^T Mb)^T (f(y + tau Mb) - f(y)): the adjoint applies to a
        # constant, so the divergence costs one operator pass without gradient instead of two with.
        divergence = (back_projected * (perturbed - x_net)).flatten(1).sum(1) / (self.tau * interior)
        return self._combine(fidelity, divergence, variance, weights, interior)

    def _combine(
        self,
        fidelity: torch.Tensor,
        divergence: torch.Tensor,
        variance: torch.Tensor | float,
        weights: torch.Tensor | None = None,
        interior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if (
            weights is not None
        ):  # PG-SURE: the divergence is already weighted; the offset is the mean variance
            return fidelity + 2 * divergence - weights.flatten(1).sum(1) / interior
        value = fidelity + 2 * variance * divergence - variance
        if self.unsure and self.training and torch.is_grad_enabled():
            self._ascend(divergence)
        return value

    @staticmethod
    def _exact_divergence(
        x_net: torch.Tensor,
        y: torch.Tensor,
        model: Model,
        probe: torch.Tensor,
        back_projected: torch.Tensor,
        inputs: torch.Tensor | None,
        randomness: ModelRandomness | None,
    ) -> torch.Tensor:
        r"""Per sample :math:`(A^\top Mb)^\top J_f(y)\, Mb`, as
        :math:`(Mb)^\top \big(J_f(y)^\top A^\top M b\big)`: one vector-Jacobian product, kept differentiable
        so the loss trains through it."""
        with torch.enable_grad():
            estimate = x_net
            if inputs is None:  # called on its own: one more pass, with a graph back to the input
                inputs = y.detach().requires_grad_(True)
                with randomness.replay() if randomness is not None else contextlib.nullcontext():
                    estimate = model(inputs)
            (pulled,) = torch.autograd.grad(estimate, inputs, grad_outputs=back_projected, create_graph=True)
        return (probe * pulled).flatten(1).sum(1)


class EquivarianceLoss(Loss):
    r"""Equivariant-imaging loss with a random transform :math:`T` and a fresh re-measurement.

    .. math::

        x_2 = T(\operatorname{sg}(\hat x)), \quad y_2 = A x_2 + n', \quad
        \mathcal{L}_{\mathrm{EQ}} = \frac1n \|f(y_2) - x_2\|^2

    with :math:`n'` fresh noise of the physics' model (Gaussian of its :math:`\sigma`, or Poisson-Gaussian),
    or Gaussian noise of the std given as ``noise_std`` (the :class:`Objective` passes UNSURE's current
    estimate). With ``stop_gradient`` the transform runs under ``no_grad`` **and** its output is detached:
    ``no_grad`` alone leaks the graph when the transform returns its input (deepinv issue 262). Without it,
    gradients also flow through :math:`x_2` into :math:`\hat x`.

    :param Transform transform: the random transform (e.g. :class:`sei.transforms.Scale`).
    :param bool stop_gradient: treat :math:`x_2` as a constant.
    """

    needs_estimate = True
    uses_ground_truth = False

    def __init__(self, transform: Transform, stop_gradient: bool = True) -> None:
        super().__init__()
        self.transform = transform
        self.stop_gradient = stop_gradient

    def forward(
        self,
        x_net: torch.Tensor,
        x: torch.Tensor | None,
        y: torch.Tensor,
        physics: Operator,
        model: Model,
        rng: torch.Generator | None = None,
        noise_std: torch.Tensor | float | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.stop_gradient:
            with torch.no_grad():
                target = self.transform(x_net.detach(), rng=rng)
            target = target.detach()
        else:
            target = self.transform(x_net, rng=rng)
        if noise_std is None:
            remeasured = physics.noise(physics.A(target), rng=rng)
        else:
            clean = physics.A(target)
            remeasured = clean + noise_std * gaussian_like(clean, rng)
        return _per_image_mean((model(remeasured) - target) ** 2)


class SupervisedLoss(Loss):
    r"""Supervised mean squared error :math:`\frac1n \|f(y) - x\|^2` (needs the ground truth ``x``)."""

    needs_estimate = True
    uses_ground_truth = True

    def forward(
        self,
        x_net: torch.Tensor,
        x: torch.Tensor | None,
        y: torch.Tensor,
        physics: Operator,
        model: Model,
        **kwargs: Any,
    ) -> torch.Tensor:
        if x is None:
            raise SeiUserError(
                "the supervised loss needs ground-truth images x; use a self-supervised method otherwise"
            )
        return _per_image_mean((x_net - x) ** 2)


class CSSLoss(Loss):
    r"""Degrade-the-measurement-again loss ("CSS", in the spirit of zero-shot super-resolution).

    .. math::

        z = A y + n', \qquad \mathcal{L}_{\mathrm{CSS}} = \frac1n \|f(z) - y\|^2

    For deblurring :math:`A y` blurs :math:`y` once more; for super-resolution it downsamples
    :math:`y` again by the factor :math:`r`. When :math:`f(z)` is smaller than :math:`y` (a side not
    divisible by :math:`r`), the target is the top-left part of :math:`y` of that size. ``x_net``
    and the ground truth are not used.
    """

    needs_estimate = False
    uses_ground_truth = False

    def forward(
        self,
        x_net: torch.Tensor | None,
        x: torch.Tensor | None,
        y: torch.Tensor,
        physics: Operator,
        model: Model,
        rng: torch.Generator | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        estimate = model(physics.noise(physics.A(y), rng=rng))
        target = y[..., : estimate.shape[-2], : estimate.shape[-1]]
        return _per_image_mean((estimate - target) ** 2)


class Objective(torch.nn.Module):
    r"""A training method: a weighted sum of losses, :math:`\mathcal{L} = \sum_k w_k \mathcal{L}_k`,
    that runs the network passes itself.

    ``objective(model, y, physics, x=None, rng=None)`` returns a dict: ``"loss"`` is the scalar to
    backpropagate; every other key is one term's batch mean, detached, for logging.

    :param str name: canonical method name.
    :param Mapping losses: term name -> (loss, weight).
    :param bool | None batched_sure_passes: compute :math:`f(y)` and :math:`f(y + \tau b)` as one
        batch of :math:`2B`. In training mode, dropout / stochastic depth would give the two halves
        different per-sample masks and batch normalisation would couple them, so for such a model
        ``True`` raises :class:`SeiUserError` and ``None`` (automatic) falls back to two passes that
        share the masks; ``False`` always runs two passes.
    :param autocast_dtype: run the network under ``torch.autocast`` in this dtype (the physics and the
        losses stay in float32); ``None``: float32; ``"auto"``: see :func:`resolve_autocast_dtype`.
        The pass whose exact SURE divergence is taken always runs in float32 (it is differentiated twice).
    :param bool channels_last: give the network its inputs in channels-last memory format.
    """

    def __init__(
        self,
        name: str,
        losses: Mapping[str, tuple[Loss, float]],
        batched_sure_passes: bool | None = DEFAULT_BATCHED_SURE_PASSES,
        autocast_dtype: AutocastDtype = DEFAULT_AUTOCAST_DTYPE,
        channels_last: bool = DEFAULT_CHANNELS_LAST,
    ) -> None:
        super().__init__()
        self.name = name
        self.losses = torch.nn.ModuleDict({key: loss for key, (loss, _) in losses.items()})
        self.weights = {key: float(weight) for key, (_, weight) in losses.items()}
        self.batched_sure_passes = batched_sure_passes
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last

    @property
    def uses_ground_truth(self) -> bool:
        """Whether the method needs the ground truth ``x`` (only the supervised one)."""
        return any(loss.uses_ground_truth for loss in self.losses.values())

    @property
    def needs_estimate(self) -> bool:
        """Whether the method evaluates :math:`f(y)` (all but CSS)."""
        return any(loss.needs_estimate for loss in self.losses.values())

    def _sure(self) -> SureLoss | None:
        return next((loss for loss in self.losses.values() if isinstance(loss, SureLoss)), None)

    @property
    def unsure(self) -> bool:
        """Whether the method learns the noise level (UNSURE)."""
        sure = self._sure()
        return sure is not None and sure.unsure

    def noise_level(self) -> float | None:
        """UNSURE's current noise-std estimate in 8-bit units (``sqrt(eta) * 255``); ``None`` when the
        noise level is not learned, ``nan`` before the first call if no initial guess was given. It
        lives in the objective's buffers: checkpoint ``objective.state_dict()`` to resume exactly."""
        sure = self._sure()
        return None if sure is None or not sure.unsure else float(sure.noise_std) * 255.0

    def _batch_sure_passes(self, model: Model) -> bool:
        coupling = _batch_coupling_layer(model) if self.batched_sure_passes is not False else None
        if self.batched_sure_passes and coupling is not None:
            raise SeiUserError(
                "batched_sure_passes=True needs f(y) and f(y + tau b) to be the same function, but "
                f"{coupling}; use batched_sure_passes=None (automatic) or False"
            )
        return self.batched_sure_passes is not False and coupling is None

    def _runner(self, model: Model, device: torch.device, full_precision: bool = False) -> Model:
        autocast_dtype = None if full_precision else resolve_autocast_dtype(self.autocast_dtype, device)
        if autocast_dtype is None and not self.channels_last:
            return model
        return NetworkRunner(model, autocast_dtype, self.channels_last)

    def forward(
        self,
        model: Model,
        y: torch.Tensor,
        physics: Operator,
        x: torch.Tensor | None = None,
        rng: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        if self.uses_ground_truth and x is None:
            raise SeiUserError(f"method {self.name!r} needs ground-truth images x")
        run = self._runner(model, y.device)
        sure = self._sure()
        x_net: torch.Tensor | None = None
        sure_inputs: dict[str, Any] = {}
        if sure is not None and sure.divergence == "exact":
            inputs = y.detach().requires_grad_(True)
            # float32 for this pass: its vector-Jacobian product is differentiated again, and under
            # bf16 autocast that second derivative drifted (SURE alone, SR x2: the loss rose from
            # 0.00024 to 0.00038 in 300 steps where float32 lowered it to 0.00020)
            with (
                torch.enable_grad()
            ):  # the divergence needs the graph back to the input, even when evaluating
                x_net = self._runner(model, y.device, full_precision=True)(inputs)
            sure_inputs = {"probe": sure.draw_probe(y, physics, rng), "inputs": inputs}
        elif sure is not None and self._batch_sure_passes(model):
            probe = sure.draw_probe(y, physics, rng)
            x_net, perturbed = run(torch.cat([y, y + sure.tau * probe])).chunk(2)
            sure_inputs = {"probe": probe, "perturbed": perturbed}
        elif self.needs_estimate:
            randomness = ModelRandomness(model)
            x_net = run(y)
            sure_inputs = {"randomness": randomness}
        total = torch.zeros((), device=y.device)
        terms: dict[str, torch.Tensor] = {}
        noise_std: torch.Tensor | None = None
        # UNSURE: re-measure with the estimate the SURE term uses (from before its ascent step)
        if sure is not None and sure.unsure:
            sure._variance(physics, y.device)
            noise_std = sure.noise_std.clone()
        for key, loss in self.losses.items():
            extra = sure_inputs if loss is sure else {}
            if noise_std is not None and isinstance(loss, EquivarianceLoss):
                extra = {"noise_std": noise_std}
            value = loss(x_net=x_net, x=x, y=y, physics=physics, model=run, rng=rng, **extra).mean()
            total = total + self.weights[key] * value
            terms[key] = value.detach()
        terms["loss"] = total
        return terms


def _batch_coupling_layer(model: Model) -> str | None:
    """The first layer that makes one 2B pass differ from two B passes, described, or ``None``.

    In training mode, dropout and stochastic depth draw per-sample masks (the two halves would get
    different masks) and batch normalisation normalises with statistics of the whole batch (each half
    would depend on the other).
    """
    if not isinstance(model, torch.nn.Module):
        return None
    for name, module in model.named_modules():
        if not module.training:
            continue
        dropout = isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0
        # timm's and deepinv's DropPath (stochastic depth) expose their rate as drop_prob.
        if dropout or getattr(module, "drop_prob", 0.0) > 0:
            return f"layer {name!r} ({type(module).__name__}) draws per-sample masks"
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            return f"layer {name!r} ({type(module).__name__}) normalises with batch statistics"
    return None


def build_method(
    name: str,
    physics: Operator,
    alpha: float = 1.0,
    stop_gradient: bool = True,
    tau: float = 0.01,
    scale_factors: Sequence[float] = (0.75, 0.5),
    scale_antialias: bool = False,
    scale_interpolation: str = "bicubic",
    margin: int | None = None,
    batched_sure_passes: bool | None = DEFAULT_BATCHED_SURE_PASSES,
    autocast_dtype: AutocastDtype = DEFAULT_AUTOCAST_DTYPE,
    channels_last: bool = DEFAULT_CHANNELS_LAST,
    sure_divergence: str = DEFAULT_SURE_DIVERGENCE,
    unsure: bool = False,
    unsure_init: float | None = None,
    unsure_step_size: float = DEFAULT_UNSURE_STEP_SIZE,
    unsure_momentum: float = DEFAULT_UNSURE_MOMENTUM,
) -> Objective:
    r"""Build a training method of the paper.

    The SURE term follows the physics' noise model: Gaussian SURE for Gaussian noise, PG-SURE for
    Poisson-Gaussian noise (see :class:`SureLoss`); the equivariance and CSS terms re-measure with that model.

    - ``proposed`` (``sei``): partial SURE :math:`+\ \alpha` scale equivariance.
    - ``ei-shift`` / ``ei-rotate``: partial SURE :math:`+\ \alpha` shift / rotation equivariance.
    - ``sure``: partial SURE alone.
    - ``sup`` (``supervised``): :math:`\|f(y) - x\|^2`.
    - ``css``: :math:`\|f(Ay + n') - y\|^2`.

    :param str name: method name (see :data:`sei.problem.METHODS`).
    :param physics: the forward operator (gives :math:`\sigma` and the default margin).
    :param float alpha: weight of the equivariance term.
    :param bool stop_gradient: detach the transformed estimate in the equivariance term.
    :param float tau: SURE probe step.
    :param Sequence[float] scale_factors: shrink factors of the scale transform.
    :param bool scale_antialias: low-pass filter before shrinking (see :class:`sei.transforms.Scale`).
    :param str scale_interpolation: the scale transform's interpolation, ``"bicubic"`` or ``"bilinear"``.
    :param int | None margin: partial-SURE border; ``None`` takes ``physics.margin``.
    :param bool | None batched_sure_passes: see :class:`Objective`.
    :param autocast_dtype: see :class:`Objective`.
    :param bool channels_last: see :class:`Objective`.
    :param str sure_divergence: the paper's ``"finite-difference"`` (default) or ``"exact"`` (see
        :class:`SureLoss`).
    :param bool unsure: learn the noise level (UNSURE, see :class:`SureLoss`): the SURE term's
        :math:`\sigma^2` becomes the learned :math:`\eta`, and the equivariance term re-measures with
        noise of std :math:`\sqrt\eta`. Read the estimate with :meth:`Objective.noise_level`.
    :param float | None unsure_init: initial noise-std guess in 8-bit units; ``None`` takes the
        physics' nominal one.
    :param float unsure_step_size: ascent step, relative to the initial :math:`\eta`.
    :param float unsure_momentum: ascent momentum.

    :Examples:

    >>> from sei.physics import make_physics
    >>> objective = build_method("sei", make_physics("sr", sr_factor=2))
    >>> objective.name, sorted(objective.losses), objective.uses_ground_truth
    ('proposed', ['equivariance', 'sure'], False)
    """
    canonical = canonical_method(name)
    if unsure and canonical in SURE_FREE_METHODS:
        raise SeiUserError(
            f"unsure learns the noise level of the SURE term, and method {canonical!r} has none"
        )
    if unsure and getattr(physics, "poisson", False):
        raise SeiUserError(
            "unsure learns a Gaussian noise level; with Poisson-Gaussian noise give --gain and "
            "--noise_level, or estimate both (auto)"
        )
    if not unsure and unsure_init is not None:
        raise SeiUserError("unsure_init is the initial guess of UNSURE; pass unsure=True")
    losses: dict[str, tuple[Loss, float]]
    if canonical == "sup":
        losses = {"supervised": (SupervisedLoss(), 1.0)}
    elif canonical == "css":
        losses = {"css": (CSSLoss(), 1.0)}
    else:
        initial = None  # SURE reads the operator's sigma; UNSURE starts from this guess
        if unsure:
            initial = physics.sigma if unsure_init is None else float(unsure_init) / 255.0
            if not math.isfinite(initial) or initial <= 0:
                raise SeiUserError(
                    f"UNSURE needs a positive initial noise level, got {initial * 255:g} (8-bit units)"
                )
        sure = SureLoss(
            tau=tau,
            margin=margin,
            sigma=initial,
            divergence=sure_divergence,
            unsure=unsure,
            step_size=unsure_step_size,
            momentum=unsure_momentum,
        )
        losses = {"sure": (sure, 1.0)}
        transform = {
            "proposed": lambda: Scale(
                factors=scale_factors, antialias=scale_antialias, mode=scale_interpolation
            ),
            "ei-shift": Shift,
            "ei-rotate": Rotate,
            "sure": None,
        }[canonical]
        if transform is not None:
            losses["equivariance"] = (EquivarianceLoss(transform(), stop_gradient=stop_gradient), alpha)
    return Objective(
        canonical,
        losses,
        batched_sure_passes=batched_sure_passes,
        autocast_dtype=autocast_dtype,
        channels_last=channels_last,
    )
