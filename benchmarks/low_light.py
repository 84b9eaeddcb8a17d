"""Low light: SEI with PG-SURE against Richardson-Lucy, Wiener and SEI with the Gaussian SURE, at peak photon
counts of 10, 30 and 100. A small CPU-scale run, not the issue's full benchmark (see docs/scientific_images.md).

Images: the 10 bundled test photographs (``samples``, test split), short side 128, RGB. Physics: Gaussian_R2
circular blur, Poisson-Gaussian noise with gain 25.5 / 8.5 / 2.55 (10 / 30 / 100 photons at full scale) and
noise level 1, float measurements (unclipped, as a float TIFF holds them). Methods:

- ``measurement``: the blurry, noisy image;
- ``wiener_oracle``: the Wiener filter (``physics.prox_l2``) at the regularisation with the best mean PSNR on
  the ground truth (an oracle), searched over 12 values;
- ``rl_oracle``: Richardson-Lucy with the circular blur (its natural setting: Poisson noise) from a flat start, at the iteration
  count with the best mean PSNR on the ground truth (an oracle), searched over 1-200 iterations;
- ``sei_pg_auto``: SEI (PG-SURE + scale equivariance) trained from scratch on the 10 measurements only, gain and
  noise level estimated by ``estimate_poisson_gaussian``;
- ``sei_gaussian``: the same training with the Gaussian SURE at the data's average noise variance (the best a
  Gaussian model can be told), re-measuring with Gaussian noise.

Training: unet-small, Adam 5e-4, batches of 8 random 48x48 crops, ``--steps`` steps (default 200), one seed.
Metric: RGB PSNR over the whole image. Writes benchmarks/results/low_light.json.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/low_light.py [--steps 200] [--only sei_pg_auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sei.data import load_images
from sei.losses import build_method
from sei.models import create_model
from sei.noise_estimation import estimate_poisson_gaussian
from sei.physics import make_physics

GAINS = {10: 25.5, 30: 8.5, 100: 2.55}  # peak photons -> gain (8-bit units)
LEVEL = 1.0
METHODS = ("measurement", "wiener_oracle", "rl_oracle", "sei_pg_auto", "sei_gaussian")
OUT = Path(__file__).parent / "results" / "low_light.json"


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((estimate.clamp(0, 1) - truth) ** 2).mean()))


def mean_psnr(estimates: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    return sum(psnr(e, t) for e, t in zip(estimates, truths, strict=True)) / len(truths)


def wiener_oracle(physics, ys, xs) -> tuple[float, dict]:
    best = max(
        (mean_psnr([physics.prox_l2(0, y, g) for y in ys], xs), g) for g in torch.logspace(0, 4, 12).tolist()
    )
    return best[0], {"gamma": best[1]}


def rl_oracle(physics, ys, xs) -> tuple[float, dict]:
    estimates = [torch.full_like(y, float(y.mean())) for y in ys]  # the usual flat start
    best, best_iterations = -1.0, 0
    for iteration in range(1, 201):
        estimates = [
            e * physics.A_adjoint(y.clamp_min(0) / physics.A(e).clamp_min(1e-6))
            for e, y in zip(estimates, ys, strict=True)
        ]
        value = mean_psnr(estimates, xs)
        if value > best:
            best, best_iterations = value, iteration
    return best, {"iterations": best_iterations}


def train_sei(physics, ys, steps: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("unet-small", task="deblurring")
    objective = build_method("proposed", physics, autocast_dtype=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = []
        for _ in range(8):
            y = ys[int(torch.randint(len(ys), (1,), generator=generator))]
            top = int(torch.randint(y.shape[-2] - 47, (1,), generator=generator))
            left = int(torch.randint(y.shape[-1] - 47, (1,), generator=generator))
            batch.append(y[..., top : top + 48, left : left + 48])
        optimizer.zero_grad()
        objective(model, torch.cat(batch), physics, rng=generator)["loss"].backward()
        optimizer.step()
    return model.eval()


def run(steps: int, only: list[str] | None) -> dict:
    images = [image.float() for _, image in load_images("samples", split="test", resize=128)]
    results = json.loads(OUT.read_text()) if OUT.exists() else {"cells": {}}
    for photons, gain in GAINS.items():
        physics = make_physics(
            "deblurring", kernel="Gaussian_R2", noise_level=LEVEL, noise_model="poisson-gaussian", gain=gain
        )
        xs = [x[None] for x in images]
        ys = [physics.measure(x, seed=index) for index, x in enumerate(xs)]
        for method in METHODS:
            if only and method not in only:
                continue
            start = time.perf_counter()
            facts: dict = {}
            if method == "measurement":
                value = mean_psnr(ys, xs)
            elif method == "wiener_oracle":
                value, facts = wiener_oracle(physics, ys, xs)
            elif method == "rl_oracle":
                value, facts = rl_oracle(physics, ys, xs)
            else:
                if method == "sei_pg_auto":
                    estimate = estimate_poisson_gaussian([y[0] for y in ys])
                    facts = {"gain_estimate": estimate.gain_level, "level_estimate": estimate.noise_level}
                    trained = make_physics(
                        "deblurring",
                        kernel="Gaussian_R2",
                        noise_level=estimate.noise_level,
                        noise_model="poisson-gaussian",
                        gain=estimate.gain_level,
                    )
                else:
                    average = (
                        float(torch.cat([physics.gain * y + physics.sigma**2 for y in ys], -1).mean().sqrt())
                        * 255
                    )
                    facts = {"gaussian_level": average}
                    trained = make_physics("deblurring", kernel="Gaussian_R2", noise_level=average)
                model = train_sei(trained, ys, steps)
                with torch.no_grad():
                    value = mean_psnr([model(y) for y in ys], xs)
                facts["steps"] = steps
            cell = {"psnr": value, "seconds": time.perf_counter() - start, **facts}
            results["cells"][f"{photons}/{method}"] = cell
            print(
                f"{photons:>4} photons  {method:<15}{value:7.2f} dB  {cell['seconds']:6.0f} s  {facts}",
                flush=True,
            )
            results["meta"] = {
                "images": len(images),
                "size": "short side 128",
                "level": LEVEL,
                "kernel": "Gaussian_R2 (circular)",
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
            }
            OUT.write_text(json.dumps(results, indent=1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--only", action="append", choices=METHODS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args.steps, args.only)


if __name__ == "__main__":
    main()
