"""Does SEI with PG-SURE need the exact gain? What a wrong gain costs, against the `auto` estimate.

The question behind "UNSURE for Poisson-Gaussian noise": learning the gain during training is only worth its
cost (a slow ascent, an estimate biased upwards: docs/noise_level.md) if the error of the `auto` estimate
(docs/scientific_images.md: a few per cent at 30-100 photons) costs PSNR. This measures the cost: the same
SEI training (PG-SURE + scale equivariance) told the true gain times 0.5, 0.8, 1, 1.25 and 2 (the true
Gaussian
level), told the `auto` estimate of both, and the Gaussian SURE at the data's average noise variance; the true
gain
is trained with two more seeds, to show the run-to-run spread that smaller differences drown in.

Data: the photographs of benchmarks/low_light.py (the 10 bundled test photographs, short side 128, Gaussian_R2
valid blur, Poisson-Gaussian noise at 10 and 100 photons full scale with noise level 1, written as 16-bit TIFF
and read back; run benchmarks/low_light.py first, or this script makes them). Network: a small residual CNN
(4 convolutions of 16 channels, from scratch), so that the 18 trainings fit in a few CPU minutes; Adam 1e-3,
batches of 8 random 48x48 crops, ``--steps`` steps (default 200), one seed, one thread. Metric: mean RGB PSNR
over the region the measurement covers. Writes benchmarks/results/pg_gain_sensitivity.json (resumable: cells
already there are skipped unless ``--force``).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pg_gain_sensitivity.py [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from low_light import GAINS, KERNEL, LEVEL, WORK, mean_psnr, measure_16bit, photo_images, random_crops, truth
from sei.losses import build_method
from sei.noise_estimation import estimate_poisson_gaussian
from sei.physics import make_physics

OUT = Path(__file__).resolve().parent / "results" / "pg_gain_sensitivity.json"
PHOTONS = (10, 100)
FACTORS = (0.5, 0.8, 1.0, 1.25, 2.0)
SPREAD_SEEDS = (1, 2)


class SmallNet(torch.nn.Module):
    """A residual CNN: 4 convolutions of 16 channels (3x3), ReLU between them."""

    def __init__(self, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU()]
        for _ in range(depth - 2):
            layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(width, 3, 3, padding=1))
        self.body = torch.nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.body(y)


def train(physics, ys: list[torch.Tensor], xs: list[torch.Tensor], steps: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = SmallNet()
    objective = build_method("proposed", physics, autocast_dtype=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        objective(model, random_crops(ys, generator), physics, rng=generator)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        return mean_psnr([model.eval()(y) for y in ys], xs)


def run(steps: int, force: bool) -> dict:
    results = json.loads(OUT.read_text()) if OUT.exists() else {"cells": {}}
    results["meta"] = {
        "images": "10 bundled test photographs, short side 128, 16-bit TIFF",
        "kernel": f"{KERNEL} (valid)",
        "level": LEVEL,
        "network": "SmallNet (4 conv, 16 channels), from scratch",
        "steps": steps,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    test, _ = photo_images()
    for photons in PHOTONS:
        gain = GAINS[photons]
        physics = make_physics(
            "deblurring", kernel=KERNEL, noise_level=LEVEL, noise_model="poisson-gaussian", gain=gain
        )
        ys = [measure_16bit(physics, name, x, WORK / "photos" / str(photons) / "test") for name, x in test]
        xs = [truth(x, physics) for _, x in test]
        estimate = estimate_poisson_gaussian([y[0] for y in ys])
        variants: dict[str, tuple[float, float, str, int]] = {
            f"gain x{factor:g}": (gain * factor, LEVEL, "poisson-gaussian", 0) for factor in FACTORS
        }
        for seed in SPREAD_SEEDS:  # the true gain again with other seeds: the run-to-run spread
            variants[f"gain x1 seed {seed}"] = (gain, LEVEL, "poisson-gaussian", seed)
        variants["auto"] = (estimate.gain_level, estimate.noise_level, "poisson-gaussian", 0)
        variance = torch.cat([(physics.gain * y + physics.sigma**2).flatten() for y in ys])
        variants["gaussian SURE"] = (0.0, float(variance.mean().sqrt()) * 255, "gaussian", 0)
        for name, (told_gain, told_level, model, seed) in variants.items():
            key = f"{photons}/{name}"
            if key in results["cells"] and not force:
                continue
            start = time.perf_counter()
            told = make_physics(
                "deblurring",
                kernel=KERNEL,
                noise_level=told_level,
                noise_model=model,
                gain=told_gain if model == "poisson-gaussian" else None,
            )
            value = train(told, ys, xs, steps, seed)
            results["cells"][key] = {
                "psnr": value,
                "gain": told_gain,
                "level": told_level,
                "seconds": time.perf_counter() - start,
            }
            print(f"{photons:>4} photons  {name:<14} gain {told_gain:7.3f}  {value:6.2f} dB", flush=True)
            OUT.write_text(json.dumps(results, indent=1) + "\n")
    return results


def table(results: dict) -> str:
    names = [f"gain x{factor:g}" for factor in FACTORS] + ["auto", "gaussian SURE"]
    header = "| photons | " + " | ".join(names) + " | gain x1, seeds 0-2 (spread) |"
    lines = [header, "|---|" + "---|" * (len(names) + 1)]
    for photons in PHOTONS:
        cells = [results["cells"].get(f"{photons}/{name}") for name in names]
        seeds = [
            results["cells"].get(f"{photons}/gain x1" + (f" seed {s}" if s else ""))
            for s in (0, *SPREAD_SEEDS)
        ]
        values = [c["psnr"] for c in seeds if c is not None]
        spread = f"{min(values):.2f}-{max(values):.2f} ({max(values) - min(values):.2f})" if values else "-"
        lines.append(
            f"| {photons} | "
            + " | ".join("-" if c is None else f"{c['psnr']:.2f}" for c in cells)
            + f" | {spread} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if not args.report:
        torch.set_num_threads(args.threads)
        run(args.steps, args.force)
    print(table(json.loads(OUT.read_text())))


if __name__ == "__main__":
    main()
