"""Has a trained network learned to game SURE's finite-difference divergence? And what does the exact one
cost?

Part 1, for each weights file: on 10 test patches (the ``samples`` test split, one fixed noisy
measurement each) the true measurement-domain error |A f(y) - A x|^2/m, the divergence estimated by
finite differences at several probe steps tau, the exact divergence (one vector-Jacobian product),
and SURE with each. An honest network gives the same divergence at every small tau; a network that
recognises the perturbed input y + tau b (its noise level is sqrt(sigma^2 + tau^2)) shows a dip at
the tau it was trained with, and SURE below the true error (see sei.losses.SureLoss).

Part 2: seconds per SEI training step (unet-small, batch 8 of 48x48, the build_method defaults)
with the exact divergence and with the finite difference, interleaved medians.

    python benchmarks/sure_divergence.py --weights sei-sr_x2-noise5 runs/x/weights.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from _timing import median_seconds
from sei.data import MeasuredImages, load_images
from sei.losses import build_method, interior_mask
from sei.models import create_model
from sei.weights import load_weights

TAUS = (1e-3, 3e-3, 1e-2, 3e-2)


def diagnose(spec: str, probes: int = 8) -> dict:
    model, metadata = load_weights(spec)
    model.train()
    from sei.physics import make_physics

    task = metadata.get("task", "deblurring")
    physics = make_physics(
        task,
        kernel=metadata.get("kernel"),
        sr_factor=metadata.get("sr_factor"),
        noise_level=float(metadata.get("noise_level", 5)),
    )
    factor = physics.scale
    measured = MeasuredImages(list(load_images("samples", split="test")), physics, seed=0)
    pairs = [measured[i] for i in range(len(measured))]
    top = 8  # patches of the training size (48 measurement pixels) where the measurements are that large
    size = min(48, min(min(p[2].shape[-2:]) for p in pairs) - top)
    y = torch.stack([p[2][:, top : top + size, top : top + size] for p in pairs])
    x = torch.stack(
        [p[1][:, top * factor : (top + size) * factor, top * factor : (top + size) * factor] for p in pairs]
    )
    mask = interior_mask(
        y, physics.margin
    )  # partial SURE, as in training: crops break the circular blur at the border
    sigma, m = physics.sigma, float(mask.sum()) * y.shape[1]
    generator = torch.Generator().manual_seed(1)
    probes_b = [torch.randn(y.shape, generator=generator) * mask for _ in range(probes)]
    inputs = y.clone().requires_grad_(True)
    estimate = model(inputs)
    with torch.no_grad():
        fidelity = float((mask * (physics.A(estimate) - y) ** 2).flatten(1).sum(1).mean() / m)
        true_error = float((mask * (physics.A(estimate) - physics.A(x)) ** 2).flatten(1).sum(1).mean() / m)
    divergences: dict[str, float] = {}
    exact = []
    for b in probes_b:
        back = physics.A_adjoint(b, img_size=tuple(estimate.shape[-2:]))
        (pulled,) = torch.autograd.grad(estimate, inputs, grad_outputs=back, retain_graph=True)
        exact.append(float((b * pulled).flatten(1).sum(1).mean() / m))
    divergences["exact"] = sum(exact) / len(exact)
    with torch.no_grad():
        base = estimate.detach()
        for tau in TAUS:
            values = []
            for b in probes_b:
                back = physics.A_adjoint(b, img_size=tuple(base.shape[-2:]))
                values.append(
                    float((back * (model(y + tau * b) - base)).flatten(1).sum(1).mean() / (tau * m))
                )
            divergences[f"tau={tau:g}"] = sum(values) / len(values)
    sure = {
        name: (fidelity + 2 * sigma**2 * value - sigma**2) / sigma**2 for name, value in divergences.items()
    }
    return {
        "weights": str(spec),
        "true_error_over_sigma2": true_error / sigma**2,
        "divergence": divergences,
        "sure_over_sigma2": sure,
    }


def step_seconds(task: str, repeats: int) -> dict[str, float]:
    from sei.physics import make_physics

    physics = make_physics(
        task,
        kernel="Gaussian_R2" if task == "deblurring" else None,
        sr_factor=2 if task == "sr" else None,
        noise_level=5,
    )
    torch.manual_seed(0)
    model = create_model("unet-small", task=task, sr_factor=2 if task == "sr" else None)
    y = torch.rand(8, 3, 48, 48)
    steps = {}
    for divergence in ("exact", "finite-difference"):
        objective = build_method("proposed", physics, sure_divergence=divergence)

        def step(objective=objective) -> None:
            model.zero_grad()
            objective(model, y, physics, rng=torch.Generator().manual_seed(0))["loss"].backward()

        steps[divergence] = step
    return median_seconds(steps, repeats=repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", nargs="*", default=["sei-sr_x2-noise5", "sei-sr_x4-noise5", "sei-gaussian_r2-noise5"]
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "sure_divergence.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    diagnoses = [diagnose(spec) for spec in args.weights]
    names = list(diagnoses[0]["divergence"]) if diagnoses else []
    print(
        "| weights | true error / sigma^2 | "
        + " | ".join(f"div {n}" for n in names)
        + " | SURE exact / sigma^2 | SURE tau=0.01 / sigma^2 |"
    )
    print("|---|---:|" + "---:|" * len(names) + "---:|---:|")
    for d in diagnoses:
        cells = " | ".join(f"{d['divergence'][n]:.3f}" for n in names)
        print(
            f"| {d['weights']} | {d['true_error_over_sigma2']:.2f} | {cells} | "
            f"{d['sure_over_sigma2']['exact']:.2f} | {d['sure_over_sigma2']['tau=0.01']:.2f} |"
        )
    timings = {task: step_seconds(task, args.repeats) for task in ("deblurring", "sr")}
    print(
        "\n| task | exact s/step | finite-difference s/step | exact / finite-difference "
        "|\n|---|---:|---:|---:|"
    )
    for task, t in timings.items():
        print(
            f"| {task} | {t['exact']:.3f} | {t['finite-difference']:.3f} | "
            f"{t['exact'] / t['finite-difference']:.2f} |"
        )
    result = {
        "diagnoses": diagnoses,
        "step_seconds": timings,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
