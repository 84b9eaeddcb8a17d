"""Cost of one training step of every method and network, measured side by side on one core.

A reviewer compares methods at equal wall time as well as at equal steps. Wall times of the training
runs themselves are unusable for that on a shared machine (the load changes from run to run), so this
script times one full optimizer step (the method's objective as ``sei train`` builds it, backward,
Adam) of every (network, method) pair in one process, interleaved so that machine noise hits all
alike, and reports medians. ``benchmarks/report.py`` multiplies a run's step count by its median step
cost to draw the PSNR-against-seconds curves.

The same table chooses the larger CPU network of the capacity study: its parameter count and step cost
next to ``unet-small``'s.

    python benchmarks/step_cost.py [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from _timing import median_seconds
from sei.losses import build_method
from sei.models import create_model
from sei.physics import make_physics
from sei.runtime import AMP_DTYPES

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "step_cost.json"
METHODS = ("sup", "proposed", "css", "ei-shift", "ei-rotate", "sure")
# (registry name, constructor overrides): the CPU network, the capacity study's larger network, and the
# candidates it was chosen among (timed with SEI only)
NETWORKS = {
    "unet-small": ("unet-small", {}),
    "unet-base": ("unet-base", {}),
    "unet c48 b2": ("unet-small", {"channels": 48, "blocks": 2}),
    "unet c64": ("unet-small", {"channels": 64}),
}
PROBLEMS = {
    "gaussian_r2": {"task": "deblurring", "kernel": "Gaussian_R2"},
    "sr_x2": {"task": "sr", "sr_factor": 2},
}
BATCH, PATCH = 8, 48


def step_function(network: str, method: str, problem: str, generator: torch.Generator):
    """One optimizer step of ``method`` on ``network`` as ``sei train`` runs it (defaults: bf16 autocast
    where the CPU has it, batched SURE passes), on a fixed random batch."""
    name, options = NETWORKS[network]
    physics = make_physics(**PROBLEMS[problem], noise_level=5)
    model = create_model(
        name, task=physics.task, sr_factor=physics.scale if physics.task == "sr" else None, **options
    )
    objective = build_method(method, physics, autocast_dtype=AMP_DTYPES["auto"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(BATCH, 3, PATCH * physics.scale, PATCH * physics.scale, generator=generator)
    y = physics(x)

    def step() -> None:
        terms = objective(model, y, physics, x=x, rng=generator)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for problem in PROBLEMS:
        functions, params = {}, {}
        for network in args.networks:
            for method in args.methods if network in ("unet-small", "unet-base") else ["proposed"]:
                functions[(network, method)], params[network] = step_function(
                    network, method, problem, generator
                )
        medians = median_seconds(functions, repeats=args.repeats, warmup=2)
        for (network, method), seconds in medians.items():
            rows.append(
                {"problem": problem, "network": network, "params": params[network], "method": method,
                 "median_ms": round(1000 * seconds, 1)}
            )  # fmt: skip
            print(
                f"{problem:<12} {network:<20} {params[network] / 1e6:5.2f} M  {method:<10} "
                f"{1000 * seconds:8.1f} ms"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "threads": args.threads,
                "repeats": args.repeats,
                "batch": [BATCH, 3, PATCH, PATCH],
                "machine": platform.machine(),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
