"""Does DIP lose anything under bf16 autocast + channels-last? Seconds per iteration and test PSNR, float32 vs
bf16.

DIP is the costliest baseline of the reproduction grid (4000 decoder iterations per image for
Gaussian blur). The same speed levers as training (``--amp auto``: bf16 on CPUs that compute it
natively, channels-last) are on by default in ``sei.models.baselines.DeepImagePrior``; this script
measures both settings on the same held-out photographs, in one run, one thread each in turn.

    python benchmarks/dip_precision.py --images 3 --iterations 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sei.data import MeasuredImages, load_images
from sei.evaluation import image_metrics
from sei.models.baselines import DeepImagePrior
from sei.physics import make_physics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="first N photographs of the samples test split")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--kernel", default="Gaussian_R2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dip_precision.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    physics = make_physics("deblurring", kernel=args.kernel, noise_level=5)
    pairs = MeasuredImages(load_images("samples", split="test"), physics, seed=0)
    rows: dict[str, dict[str, list[float]]] = {
        amp: {"psnr": [], "s_per_iteration": []} for amp in ("none", "auto")
    }
    for index in range(min(args.images, len(pairs))):
        _, x, y = pairs[index]
        for amp, row in rows.items():  # interleaved, so machine noise hits both alike
            start = time.perf_counter()
            estimate = DeepImagePrior(physics, iterations=args.iterations, amp=amp, progress=False)(y[None])
            row["s_per_iteration"].append((time.perf_counter() - start) / args.iterations)
            row["psnr"].append(image_metrics(estimate[0], x)[0])
            print(
                f"image {index} amp={amp}: {row['psnr'][-1]:.2f} dB, "
                f"{row['s_per_iteration'][-1] * 1e3:.1f} ms/iteration",
                flush=True,
            )

    base = statistics.median(rows["none"]["s_per_iteration"])
    print("\n| amp | mean PSNR (dB) | median ms/iteration | speed-up |\n|---|---|---|---|")
    for amp, row in rows.items():
        median = statistics.median(row["s_per_iteration"])
        print(f"| {amp} | {statistics.mean(row['psnr']):.2f} | {median * 1e3:.1f} | {base / median:.2f}x |")
    result = {
        "kernel": args.kernel,
        "iterations": args.iterations,
        "threads": args.threads,
        "images": len(rows["none"]["psnr"]),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
