"""Noise-level estimators on the 10 bundled test photographs: relative error of the estimated level.

Tasks: Gaussian_R2 blur and a defocus disk (uniform, radius 3), each circular and 'valid' (the circular
blur with the kernel margin cut away, so the borders do not wrap), and bicubic SR x2 and x4; noise
levels 1, 2, 5, 10, 20; every measurement clipped and rounded to 8 bits, as a PNG holds it.
Estimators: sei's ``spectral`` (blur only), ``pca``, ``weak_texture`` and ``mad`` (Haar), deepinv 0.5's
``PatchCovarianceNoiseEstimator``, and deepinv's ``WaveletNoiseEstimator`` formula (db8, median of the
three finest detail bands / 0.6745) computed with PyWavelets, since deepinv's needs ``ptwt``, which is
not installed. ``auto`` is what ``estimate_noise_level`` picks. The estimators were chosen on the
*training* photographs; these test photographs were not looked at before. Per cell: median and max
over the 10 images of |estimate / level - 1|. Writes benchmarks/results/noise_estimation.json.

    OMP_NUM_THREADS=1 python benchmarks/noise_estimation.py [--sizes 256 native] [--cheap]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import deepinv as dinv
import torch

from sei.data import load_images
from sei.noise_estimation import estimate_noise_level
from sei.physics import Blur, make_physics

LEVELS = (1, 2, 5, 10, 20)
OURS = ("spectral", "pca", "weak_texture", "mad")


def disk_kernel(radius: int = 3) -> torch.Tensor:
    grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    return disk / disk.sum()


TASKS = {
    "Gaussian_R2": lambda level: make_physics("deblurring", kernel="Gaussian_R2", noise_level=level),
    "disk_R3": lambda level: Blur(disk_kernel(3), noise_level=level, kernel_label="disk_R3"),
    "sr_x2": lambda level: make_physics("sr", sr_factor=2, noise_level=level),
    "sr_x4": lambda level: make_physics("sr", sr_factor=4, noise_level=level),
}


def quantise(y: torch.Tensor) -> torch.Tensor:
    return y.clamp(0, 1).mul(255).round().div(255)


def wavelet_db8(y: torch.Tensor) -> float:
    """deepinv's WaveletNoiseEstimator formula, in 8-bit units."""
    import numpy as np
    import pywt

    _, (ch, cv, cd) = pywt.dwt2(y.numpy(), "db8", axes=(-2, -1))
    coefficients = np.concatenate([ch.ravel(), cv.ravel(), cd.ravel()])
    return float(np.median(np.abs(coefficients)) / 0.6745 * 255)


def estimators(task: str, physics, cheap: bool = False) -> dict:
    chosen = {"auto": lambda y: estimate_noise_level(y, physics).level}
    for name in OURS:
        if (name == "spectral" and task.startswith("sr")) or (cheap and name == "weak_texture"):
            continue
        chosen[name] = lambda y, name=name: estimate_noise_level(y, physics, method=name).level
    patch_covariance = dinv.models.PatchCovarianceNoiseEstimator()
    chosen["deepinv_patch_covariance"] = lambda y: float(patch_covariance(y[None].float())[0]) * 255
    chosen["deepinv_wavelet_db8"] = wavelet_db8
    return chosen


def run(resize: int | None, cheap: bool = False) -> list[dict]:
    images = [(name, image.double()) for name, image in load_images("samples", split="test", resize=resize)]
    records = []
    for task, build in TASKS.items():
        variants = ("circular", "valid") if not task.startswith("sr") else ("",)
        for variant in variants:
            for level in LEVELS:
                physics = build(level)
                ys = []
                for index, (_, x) in enumerate(images):
                    y = physics.measure(x[None], seed=1000 * level + index)[0]
                    if variant == "valid":
                        margin = physics.margin
                        y = y[:, margin:-margin, margin:-margin]
                    ys.append(quantise(y))
                for name, estimate in estimators(task, physics, cheap).items():
                    start = time.perf_counter()
                    errors = [estimate(y) / level - 1 for y in ys]
                    seconds = (time.perf_counter() - start) / len(ys)
                    absolute = [abs(e) for e in errors]
                    worst = max(range(len(ys)), key=lambda i: absolute[i])
                    records.append(
                        {
                            "size": "native" if resize is None else f"short side {resize}",
                            "task": task + (f" ({variant})" if variant else ""),
                            "level": level,
                            "estimator": name,
                            "median_abs_rel_error": statistics.median(absolute),
                            "max_abs_rel_error": max(absolute),
                            "median_signed_rel_error": statistics.median(errors),
                            "worst_image": images[worst][0],
                            "seconds_per_image": seconds,
                            "errors": dict(zip([n for n, _ in images], errors, strict=True)),
                        }
                    )
                    r = records[-1]
                    print(
                        f"{r['size']:<15}{r['task']:<24}{level:>4}  {name:<26}"
                        f"{r['median_abs_rel_error']:>8.3f}{r['max_abs_rel_error']:>8.3f}"
                        f"  {images[worst][0]:<18}{1e3 * seconds:>8.0f} ms",
                        flush=True,
                    )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["256"], help="short sides, or 'native' (resize=None)")
    parser.add_argument("--cheap", action="store_true", help="leave out weak_texture (the slowest)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{'size':<15}{'task':<24}{'lvl':>4}  {'estimator':<26}{'median':>8}{'max':>8}  {'worst image':<18}"
        f"{'time':>11}"
    )
    records = []
    for size in args.sizes:
        records += run(None if size == "native" else int(size), args.cheap)
    out = Path(__file__).parent / "results" / "noise_estimation.json"
    out.parent.mkdir(exist_ok=True)
    if out.exists():  # keep the records of the sizes not rerun
        done = {r["size"] for r in records}
        records = [r for r in json.loads(out.read_text())["records"] if r["size"] not in done] + records
    meta = {
        "threads": args.threads,
        "levels": list(LEVELS),
        "quantised": "8-bit (clipped, rounded)",
        "torch": torch.__version__,
        "deepinv": dinv.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
