"""Poisson-Gaussian noise estimation (``estimate_poisson_gaussian``, the variance-mean fit) on the 10 bundled
test photographs: error of the estimated gain and Gaussian std over a grid of (gain, noise level).

Gains 2.55, 8.5 and 25.5 (8-bit units) are peak photon counts of 100, 30 and 10 at full scale; Gaussian
noise levels 0 (Poisson alone), 2 and 5. Tasks: Gaussian_R2 blur ('valid': the circular blur with the
kernel margin cut away) and bicubic SR x2. Every measurement is clipped to [0, 1] and rounded to 16 bits,
as a 16-bit TIFF holds it. Each photograph is estimated on its own. Per cell: median and max over the
images of |gain estimate / gain - 1|, of |level estimate - level| (8-bit units), and of the relative error
of the mean noise variance gain * mean(y) + level^2 (what PG-SURE's offset uses). Writes
benchmarks/results/pg_noise_estimation.json.

    OMP_NUM_THREADS=1 python benchmarks/pg_noise_estimation.py [--size 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sei.data import load_images
from sei.noise_estimation import estimate_poisson_gaussian
from sei.physics import make_physics

GAINS = (2.55, 8.5, 25.5)
LEVELS = (0.0, 2.0, 5.0)
TASKS = {
    "Gaussian_R2 (valid)": lambda gain, level: make_physics(
        "deblurring", kernel="Gaussian_R2", noise_level=level, noise_model="poisson-gaussian", gain=gain
    ),
    "sr_x2": lambda gain, level: make_physics(
        "sr", sr_factor=2, noise_level=level, noise_model="poisson-gaussian", gain=gain
    ),
}


def quantise_16(y: torch.Tensor) -> torch.Tensor:
    return y.clamp(0, 1).mul(65535).round().div(65535)


def run(size: int | None) -> list[dict]:
    images = [(name, image.double()) for name, image in load_images("samples", split="test", resize=size)]
    records = []
    for task, build in TASKS.items():
        for gain in GAINS:
            for level in LEVELS:
                physics = build(gain, level)
                gains, levels, variance_errors = [], [], []
                start = time.perf_counter()
                for index, (_, x) in enumerate(images):
                    y = physics.measure(x[None], seed=index)[0]
                    if physics.task == "deblurring":
                        margin = physics.margin
                        y = y[:, margin:-margin, margin:-margin]
                    estimate = estimate_poisson_gaussian(quantise_16(y))
                    gains.append(estimate.gain_level)
                    levels.append(estimate.noise_level)
                    # what PG-SURE uses: the mean noise variance gain * y + sigma^2 over the measurement
                    true_variance = float(gain * y.mean() * 255 + level**2)
                    estimated = float(estimate.gain_level * y.mean() * 255 + estimate.noise_level**2)
                    variance_errors.append(abs(estimated / true_variance - 1))
                seconds = (time.perf_counter() - start) / len(images)
                gain_errors = [abs(g / gain - 1) for g in gains]
                level_errors = [abs(s - level) for s in levels]
                record = {
                    "task": task,
                    "gain": gain,
                    "peak_photons": round(255 / gain, 1),
                    "level": level,
                    "gain_median_abs_rel_error": statistics.median(gain_errors),
                    "gain_max_abs_rel_error": max(gain_errors),
                    "level_median_abs_error": statistics.median(level_errors),
                    "level_max_abs_error": max(level_errors),
                    "variance_median_abs_rel_error": statistics.median(variance_errors),
                    "variance_max_abs_rel_error": max(variance_errors),
                    "gain_estimates": dict(zip([n for n, _ in images], gains, strict=True)),
                    "level_estimates": dict(zip([n for n, _ in images], levels, strict=True)),
                    "seconds_per_image": seconds,
                }
                records.append(record)
                print(
                    f"{task:<22}{gain:>6}{level:>5}  gain err median "
                    f"{record['gain_median_abs_rel_error']:6.3f} max "
                    f"{record['gain_max_abs_rel_error']:6.3f}   level err median "
                    f"{record['level_median_abs_error']:5.2f} max {record['level_max_abs_error']:5.2f}  "
                    f"var err median {record['variance_median_abs_rel_error']:5.3f} max "
                    f"{record['variance_max_abs_rel_error']:5.3f}  {1e3 * seconds:4.0f} ms",
                    flush=True,
                )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="short side of the photographs (0: native)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = run(args.size or None)
    out = Path(__file__).parent / "results" / "pg_noise_estimation.json"
    meta = {
        "size": args.size or "native",
        "quantised": "16-bit (clipped, rounded)",
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
