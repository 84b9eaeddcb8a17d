"""Validation during training, and the monitor that acts on it.

:func:`validate` scores the network: PSNR/SSIM on held-out images, or with no ground truth the SURE
estimate on training measurements, and for the finite-difference divergence the gap that reveals a
network gaming that estimator. :class:`ValidationMonitor` runs it at the planned steps and calls its
hook ``on_validation(step, record, model) -> stop``, where the gaming check and ``--stop_on_gaming``
live.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sei.physics import Operator

GAMING_GAP = (
    -0.5
)  # val_sure_gap below this (sigma^2 units): honest networks measured within +-0.1, gamed ones -2 to -8

VALIDATION_MEASUREMENTS = 4  # training measurements that the measurement-domain validation scores
VALIDATION_CROP = (
    256  # their centre crop, in measurement pixels: validation must not cost as much as training
)


def validation_crops(training: Any, margin: int, circular: bool) -> list[tuple[torch.Tensor, int]]:
    """``(y, margin)`` pairs for the SURE validation: the centre crop of the first few training
    measurements. A whole simulated measurement is circular, so SURE needs no margin there; a crop,
    or a user's measurement (the scene continues past its frame), gets the operator's border margin."""
    crops = []
    for index in range(min(len(training), VALIDATION_MEASUREMENTS)):
        _, _, y = training[index]
        height, width = y.shape[-2:]
        top, left = max(0, (height - VALIDATION_CROP) // 2), max(0, (width - VALIDATION_CROP) // 2)
        crop = y[..., top : top + VALIDATION_CROP, left : left + VALIDATION_CROP]
        whole = crop.shape[-2:] == y.shape[-2:]
        crops.append((crop, 0 if whole and circular else margin))
    return crops


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    physics: Operator,
    held_out: Any,
    training: Any,
    objective: Any,
    device: torch.device,
) -> dict[str, float]:
    """Validation PSNR on held-out images; with no ground truth anywhere, the SURE estimate of the
    measurement-domain error on (centre crops of) training measurements (exact divergence: an unbiased
    proxy, see docs/methods.md). A method trained with the finite-difference divergence also gets
    ``val_sure_gap``: finite-difference minus exact SURE on the same measurements and probes, in
    units of sigma^2; about 0 for an honest network, strongly negative once it games the estimator."""
    from sei.data import MeasuredImages
    from sei.evaluation import image_metrics
    from sei.losses import SureLoss, build_method

    model.eval()
    record: dict[str, float] = {}
    if held_out is not None and len(held_out):
        metrics = []
        for index in range(len(held_out)):
            _, x, y = held_out[index]
            estimate = model(y[None].to(device))[0].float().cpu()
            metrics.append(image_metrics(estimate, x))
        record["val_psnr"] = sum(m[0] for m in metrics) / len(metrics)
        record["val_ssim"] = sum(m[1] for m in metrics) / len(metrics)
    losses = getattr(objective, "losses", {})  # an Objective; anything else is validated without the gap
    finite_difference = any(
        isinstance(loss, SureLoss) and loss.divergence == "finite-difference" for loss in losses.values()
    )
    divergences = ["exact"] if finite_difference or "val_psnr" not in record else []
    if finite_difference:
        divergences.append("finite-difference")
    crops = (
        validation_crops(training, physics.margin, circular=isinstance(training, MeasuredImages))
        if divergences
        else []
    )
    estimates: dict[str, float] = {}
    for divergence in divergences:
        generator = torch.Generator(device=device).manual_seed(0)  # the same probes for both estimators
        values = []
        for y, margin in crops:
            sure = build_method(
                "sure", physics, margin=margin, autocast_dtype=None, sure_divergence=divergence
            )
            with torch.enable_grad():
                values.append(float(sure(model, y[None].to(device), physics, rng=generator)["loss"].detach()))
        estimates[divergence] = sum(values) / len(values)
    if "val_psnr" not in record:
        record["val_sure"] = estimates["exact"]
    if finite_difference:
        # in units of the noise variance (for Poisson-Gaussian noise, its mean over the crops: gain * y +
        # sigma^2)
        scale = physics.sigma**2 + (
            getattr(physics, "gain", 0.0) * sum(float(y.mean()) for y, _ in crops) / max(len(crops), 1)
        )
        record["val_sure_gap"] = (estimates["finite-difference"] - estimates["exact"]) / scale
    model.train()
    return record


class ValidationMonitor:
    """Validates the network every ``interval`` steps and at the last one, and decides whether the run
    goes on: :meth:`on_validation` warns when the network games the finite-difference SURE and, with
    ``stop_on_gaming``, keeps the weights of the last honest validation and stops the run there."""

    def __init__(
        self,
        physics: Operator,
        held_out: Any,
        training: Any,
        objective: Any,
        device: torch.device,
        interval: int,
        stop_on_gaming: bool,
    ) -> None:
        self.physics, self.held_out, self.training = physics, held_out, training
        self.objective, self.device = objective, device
        self.interval, self.stop_on_gaming = interval, stop_on_gaming
        self.last_honest: tuple[int, dict[str, torch.Tensor]] | None = (
            None  # (step, weights) of the last good validation
        )
        self.kept_step: int | None = None  # the step whose weights the run ends with, once stopped

    def due(self, step: int, last: bool) -> bool:
        return bool(self.interval and step % self.interval == 0) or last

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        return validate(model, self.physics, self.held_out, self.training, self.objective, self.device)

    def panel(self, model: torch.nn.Module) -> torch.Tensor:
        from sei.run_log import validation_panel

        return validation_panel(model, self.physics, self.held_out, self.training, self.device)

    def on_validation(self, step: int, record: dict[str, float], model: torch.nn.Module) -> bool:
        """The hook after each validation: ``True`` stops the run (with the weights of :attr:`kept_step`)."""
        gamed = record.get("val_sure_gap", 0.0) < GAMING_GAP
        if gamed:
            print(
                f"sei: warning: at step {step} the finite-difference SURE is {-record['val_sure_gap']:.1f} "
                "sigma^2 below the exact one: the network is gaming the estimator (docs/methods.md, "
                "defect 8); use --sure_divergence exact or --stop_on_gaming",
                file=sys.stderr,
                flush=True,
            )
        if self.stop_on_gaming and not gamed:
            self.last_honest = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif self.stop_on_gaming and self.last_honest is not None:
            self.kept_step, weights = self.last_honest
            model.load_state_dict(weights)
            print(
                f"sei: stopping: keeping the weights of step {self.kept_step}, the last validation before "
                "the gaming",
                file=sys.stderr,
                flush=True,
            )
            return True
        return False
