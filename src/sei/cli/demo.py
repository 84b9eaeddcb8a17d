"""The main job on bundled data: the shipped SEI models restore real photographs, offline.

For each model shipped inside the package (Gaussian_R2 deblurring, SR x2, ...), the bundled test
photographs (the `samples` test split, from pip packages) are degraded with seeded noise, restored
by the model and by a training-free baseline, and scored with the paper's protocol. Prints PSNR
before and after, and writes one side-by-side figure per model.

examples:
  sei demo                      # writes outputs/demo/
  sei demo --images 3 --out_dir /tmp/demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out_dir", "--out-dir", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--images", type=int, default=10, help="how many bundled test photographs to use")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from sei.data import MeasuredImages, load_images
    from sei.errors import SeiUserError
    from sei.evaluation import image_metrics
    from sei.figures import image_grid
    from sei.inference import load_reconstructor
    from sei.runtime import resolve_device
    from sei.weights import PRETRAINED

    device = resolve_device(args.device)
    names = [name for name, cfg in PRETRAINED.items() if cfg.path.exists()]
    if not names:
        raise SeiUserError(
            f"no shipped models found in the package (expected some of {', '.join(PRETRAINED)})"
        )
    images = list(load_images("samples", split="test"))[: args.images]
    print(
        f"{len(images)} bundled test photographs; PSNR (dB, Y channel, 8-bit) of the measurement, a "
        "training-free baseline, and SEI"
    )
    print(f"{'model':<26}{'task':<22}{'measurement':>12}{'baseline':>16}{'SEI':>8}{'gain':>8}")
    for name in names:
        model = load_reconstructor(name, None, None, None, None, None, device)
        physics = model.physics
        baseline_kind = "up" if physics.task == "sr" else "wiener"
        baseline = load_reconstructor(
            None,
            baseline_kind,
            physics.task,
            getattr(physics, "kernel_label", None) if physics.task == "deblurring" else None,
            getattr(physics, "factor", None),
            physics.noise_level,
            device,
            noise_model=physics.noise_kind,  # a photon-limited model's baseline is told the Poisson gain too
            gain=physics.gain_level if physics.poisson else None,
        )
        measured = MeasuredImages(images, physics, seed=0)
        totals = {"measurement": 0.0, "baseline": 0.0, "sei": 0.0}
        rows = []
        for index in range(len(measured)):
            identity, x, y = measured[index]
            y_batch = y[None].to(device)
            with torch.no_grad():
                estimate = model.reconstruct(y_batch)[0].float().cpu()
                reference = baseline.reconstruct(y_batch)[0].float().cpu()
            shown = physics.initial_estimate(y_batch)[0].cpu()
            scores = {
                "measurement": image_metrics(shown, x)[0],
                "baseline": image_metrics(reference, x)[0],
                "sei": image_metrics(estimate, x)[0],
            }
            for key, value in scores.items():
                totals[key] += value / len(measured)
            if index < 3:
                rows.append(
                    [
                        (f"{identity.split('/')[-1]}: measurement {scores['measurement']:.2f} dB", shown),
                        (f"{baseline_kind} {scores['baseline']:.2f} dB", reference),
                        (f"SEI {scores['sei']:.2f} dB", estimate),
                        ("ground truth", x),
                    ]
                )
        image_grid(rows, args.out_dir / f"{name}.png", dpi=80)
        task = physics.describe()
        label = task.get("kernel") or f"SR x{task.get('sr_factor')}"
        problem_label = f"{label}, noise {int(physics.noise_level)}"
        baseline_label = f"{baseline_kind} {totals['baseline']:.2f}"
        print(
            f"{name:<26}{problem_label:<22}{totals['measurement']:>12.2f}{baseline_label:>16}"
            f"{totals['sei']:>8.2f}{totals['sei'] - totals['measurement']:>+8.2f}"
        )
    print(f"figures: {args.out_dir}/")
    return 0
