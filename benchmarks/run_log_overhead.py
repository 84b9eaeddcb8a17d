"""What the run log costs a training run (docs/training.md, "Watching a run"): the time to write one
metrics row per backend, and one validation panel (network pass + PNG into the event file), with the
size the panel adds to the event file. One thread, the CPU network, the first bundled test photograph.

    python benchmarks/run_log_overhead.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from sei.data import MeasuredImages, load_images
from sei.models import create_model
from sei.physics import make_physics
from sei.run_log import TENSORBOARD_DIR, open_run_log, validation_panel

ROWS = 500
PANELS = 7


def main() -> None:
    torch.set_num_threads(1)
    terms = {
        "epoch": 1.0,
        "lr": 5e-4,
        "seconds": 10.0,
        "step_seconds": 0.5,
        "sure": 1e-3,
        "equivariance": 2e-3,
        "loss": 3e-3,
    }
    for backends in ("csv", "tensorboard", "csv,tensorboard"):
        with tempfile.TemporaryDirectory() as folder:
            log = open_run_log(Path(folder), backends)
            started = time.perf_counter()
            for step in range(1, ROWS + 1):
                log.scalars(step, "train", terms)
            log.flush()
            per_row = (time.perf_counter() - started) / ROWS
            log.close()
        print(f"{backends:<16} {per_row * 1e3:.3f} ms per metrics row ({len(terms)} values)")
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    held_out = MeasuredImages(list(load_images("samples", split="test"))[:1], physics, seed=0)
    model = create_model("unet-small", task="deblurring")
    with tempfile.TemporaryDirectory() as folder:
        log = open_run_log(Path(folder), "tensorboard")
        seconds = []
        for step in range(PANELS):
            started = time.perf_counter()
            log.image(
                step,
                "validation/panel",
                validation_panel(model, physics, held_out, held_out, torch.device("cpu")),
            )
            log.flush()
            seconds.append(time.perf_counter() - started)
        log.close()
        size = sum(path.stat().st_size for path in (Path(folder) / TENSORBOARD_DIR).iterdir())
    print(
        f"validation panel: median {statistics.median(seconds) * 1e3:.0f} ms, {size / PANELS / 1024:.0f} "
        "KiB per panel in the event file"
    )


if __name__ == "__main__":
    main()
