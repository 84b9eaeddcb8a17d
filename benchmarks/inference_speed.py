"""Inference throughput and peak memory of `sei reconstruct`, tiled and whole-image, on this CPU.

Each configuration runs in its own process so that its peak resident memory (ru_maxrss) is its own.
Images are real photographs (scikit-image's astronaut, tiled up to the requested size), measured with
Gaussian_R2 blur or SR x2 at noise level 5. Writes benchmarks/results/inference_speed.json.

    python benchmarks/inference_speed.py [--threads 2] [--model unet-small]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(model: str, task: str, megapixels: float, tile: int, threads: int) -> dict:
    """Runs in a child process: one reconstruction, timed, with its peak memory."""
    import numpy as np
    import torch
    from skimage import data

    from sei.inference import tiled
    from sei.models import create_model
    from sei.physics import make_physics

    torch.set_num_threads(threads)
    scale = 2 if task == "sr" else 1
    side_h = int((megapixels * 1e6 * 3 / 4) ** 0.5) // 8 * 8  # 4:3 output image
    side_w = side_h * 4 // 3
    photo = torch.from_numpy(data.astronaut().astype(np.float32) / 255).permute(2, 0, 1)
    reps = (side_h // 512 + 1, side_w // 512 + 1)
    x = photo.repeat(1, *reps)[:, :side_h, :side_w][None]
    physics = make_physics(
        task, kernel="Gaussian_R2" if task == "deblurring" else None, sr_factor=2 if task == "sr" else None
    )
    with torch.no_grad():
        y = physics.measure(x, seed=0)
        network = create_model(model, task=task, sr_factor=2 if task == "sr" else None).eval()
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        out = tiled(network, y, scale=scale, tile=tile, overlap=32) if tile else network(y)
        seconds = time.perf_counter() - started
    assert out.shape[-2:] == x.shape[-2:]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "task": task,
        "output_megapixels": round(x.shape[-1] * x.shape[-2] / 1e6, 2),
        "tile": tile,
        "threads": threads,
        "seconds": round(seconds, 2),
        "megapixels_per_second": round(x.shape[-1] * x.shape[-2] / 1e6 / seconds, 3),
        "peak_rss_mb": round(peak / 1024),
        "peak_rss_above_inputs_mb": round((peak - baseline) / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="unet-small")
    parser.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, megapixels, tile, model = args.child
        print(json.dumps(measure(model, task, float(megapixels), int(tile), args.threads)))
        return
    configurations = [
        ("deblurring", 2.0, 0),
        ("deblurring", 2.0, 256),
        ("deblurring", 12.0, 256),
        ("sr", 12.0, 256),
    ]
    records = []
    for task, megapixels, tile in configurations:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--child",
                task,
                str(megapixels),
                str(tile),
                args.model,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        records.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'task':<12}{'MP out':>8}{'tile':>6}{'seconds':>9}{'MP/s':>8}{'peak RSS MB':>13}")
    for r in records:
        print(
            f"{r['task']:<12}{r['output_megapixels']:>8}{r['tile'] or 'whole':>6}{r['seconds']:>9}"
            f"{r['megapixels_per_second']:>8}{r['peak_rss_mb']:>13}"
        )
    out = HERE / "results" / "inference_speed.json"
    out.write_text(json.dumps(records, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
