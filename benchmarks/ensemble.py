"""The symmetry ensemble (``--ensemble``): what averaging a shipped model over the flips and quarter turns
that its forward model commutes with gains, per image, and what it costs.

For every shipped model: the ten test photographs (``samples``, test split, short side 256, the fixed seeded
measurements of ``sei test``), PSNR and SSIM (``sei test``'s protocol) of the plain network and of the
ensemble, the per-image PSNR gain (mean, its standard error, the worst image) and the wall time of both on the
ten images (median of 3 interleaved repeats, one thread). Writes benchmarks/results/ensemble.json.

    OMP_NUM_THREADS=1 python benchmarks/ensemble.py
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path

import torch

from _timing import median_seconds
from sei.data import MeasuredImages, load_images
from sei.evaluation import image_metrics
from sei.inference import physics_symmetries, symmetry_ensemble
from sei.runtime import atomic_write_text
from sei.weights import PRETRAINED, load_weights_with_physics

OUT = Path(__file__).resolve().parent / "results" / "ensemble.json"


def run() -> dict:
    torch.set_num_threads(1)
    images = load_images("samples", split="test", resize=256)
    rows = {}
    for name in PRETRAINED:
        network, _, physics = load_weights_with_physics(name)
        symmetries = physics_symmetries(physics)
        ensemble = symmetry_ensemble(network, symmetries)
        measured = MeasuredImages(images, physics, seed=0)
        plain, averaged = [], []
        with torch.no_grad():
            for _, x, y in measured:
                plain.append(image_metrics(network(y[None])[0], x))
                averaged.append(image_metrics(ensemble(y[None])[0], x))
            measurements = [y[None] for _, _, y in measured]
            seconds = median_seconds(
                {
                    "plain": lambda f=network, ys=measurements: [f(y) for y in ys],
                    "ensemble": lambda f=ensemble, ys=measurements: [f(y) for y in ys],
                },
                repeats=3,
                warmup=1,
            )
        gains = [a[0] - p[0] for a, p in zip(averaged, plain, strict=True)]
        rows[name] = {
            "symmetries": len(symmetries),
            "psnr": statistics.mean(p[0] for p in plain),
            "psnr_ensemble": statistics.mean(a[0] for a in averaged),
            "ssim": statistics.mean(p[1] for p in plain),
            "ssim_ensemble": statistics.mean(a[1] for a in averaged),
            "gain_mean": statistics.mean(gains),
            "gain_sem": statistics.stdev(gains) / math.sqrt(len(gains)),
            "gain_min": min(gains),
            "seconds": seconds["plain"],
            "seconds_ensemble": seconds["ensemble"],
        }
        row = rows[name]
        print(
            f"{name:<24} {row['psnr']:.2f} -> {row['psnr_ensemble']:.2f} dB "
            f"({row['gain_mean']:+.2f} +- {row['gain_sem']:.2f}, worst {row['gain_min']:+.2f}), "
            f"{row['seconds_ensemble'] / row['seconds']:.1f}x the time",
            flush=True,
        )
    return {
        "images": "samples test split (10), short side 256",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": 1,
        "models": rows,
    }


def table(results: dict) -> str:
    lines = [
        "| model | symmetries | PSNR | with --ensemble | gain per image (mean +- s.e., worst) | SSIM | with "
        "--ensemble | time ratio |",
        "|" + "---|" * 8,
    ]
    for name, row in results["models"].items():
        lines.append(
            f"| {name} | {row['symmetries']} | {row['psnr']:.2f} | **{row['psnr_ensemble']:.2f}** | "
            f"{row['gain_mean']:+.2f} +- {row['gain_sem']:.2f}, {row['gain_min']:+.2f} | {row['ssim']:.4f} | "
            f"{row['ssim_ensemble']:.4f} | {row['seconds_ensemble'] / row['seconds']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    results = run()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
