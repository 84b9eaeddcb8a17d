"""The main job on bundled data: degrade a real photograph and write a side-by-side figure.

examples:
  sei demo                      # writes outputs/demo/
  sei demo --out_dir /tmp/demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out_dir", "--out-dir", type=Path, default=Path("outputs/demo"))


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from skimage import data

    from sei.imageio import to_uint8, write_image
    from sei.physics import make_physics

    image = torch.from_numpy(data.astronaut().astype(np.float32) / 255).permute(2, 0, 1)[None]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    panels = [("sharp", image[0])]
    for task, options, label in [("deblurring", {"kernel": "Gaussian_R2"}, "Gaussian_R2"), ("sr", {"sr_factor": 4}, "SR x4")]:
        physics = make_physics(task, noise_level=5, **options)
        measurement = physics.measure(image, seed=0)
        write_image(measurement[0], args.out_dir / f"measurement_{label.replace(' ', '_')}.png")
        panels.append((f"{label}, noise 5", measurement[0]))
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for axis, (title, panel) in zip(axes, panels, strict=True):
        axis.imshow(to_uint8(panel), interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(args.out_dir / "side_by_side.png", dpi=100)
    plt.close(figure)
    print(f"wrote {args.out_dir / 'side_by_side.png'}")
    return 0
