"""Restore your own degraded images: one command, no ground truth, within a time budget.

Give a folder (or file) of measurements and the forward model: the PSF for a blur (--kernel FILE or
a name), or the SR factor. The noise level is estimated from the measurements unless given;
photon-limited data (microscopy, astronomy, low light) take --noise poisson-gaussian with --gain G|auto
(training then uses PG-SURE). The closest shipped model is fine-tuned with SEI on those very
measurements for as long as the budget allows (after reserving the time to reconstruct them), then
every measurement is restored.

Outputs in OUTPUT: the restored images (same names and format; 16-bit grayscale stays 16-bit, float
.npy stays float), side_by_side/ figures, summary.json, and run/ (the trained weights, checkpoints and
curves: `sei reconstruct more/ out/ --weights OUTPUT/run/weights.safetensors` reuses them).

examples:
  sei restore blurry_photos/ restored/ --kernel psf.npy --time_limit 10m
  sei restore blurry_photos/ restored/ --kernel psf.npy --noise_level 3 --time_limit 30m --device cuda
  sei restore lowres/ upscaled/ --task sr --sr_factor 2 --time_limit 5m
  sei restore blurry_photos/ restored/ --kernel psf.npy --resume --time_limit 10m   # train 10 more minutes
  sei restore stacks/ restored/ --kernel psf.npy --noise poisson-gaussian --gain auto --noise_level auto
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sei.cli.degrade import add_physics_arguments
from sei.cli.test import add_ensemble_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a measurement (image or .npy) or a folder of them")
    parser.add_argument("output", type=Path, help="output folder")
    add_physics_arguments(parser, auto_noise=True, noise_model=True)
    parser.add_argument(
        "--time_limit",
        "--time-limit",
        default="10m",
        help="wall-clock budget for the whole command, e.g. 90s, 10m, 1h (default 10m)",
    )
    parser.add_argument(
        "--init",
        default="auto",
        help="auto (the closest shipped model, default), none (from scratch), or a weights name or file",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--tile", type=int, default=256, help="tile side for the reconstruction, in measurement pixels"
    )
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in measurement pixels")
    parser.add_argument("--seed", type=int, default=0)
    add_ensemble_argument(parser)
    parser.add_argument(
        "--no-side_by_side",
        "--no-side-by-side",
        dest="side_by_side",
        action="store_false",
        help="skip the figures",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the training already in OUTPUT/run with a new budget"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a restoration already in OUTPUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import sei.cli
    from sei.restore import restore
    from sei.runtime import parse_duration

    result = restore(
        args.input,
        args.output,
        task=args.task,
        kernel=args.kernel,
        sr_factor=args.sr_factor,
        noise_level="auto" if args.noise_level is None else args.noise_level,
        noise=args.noise or "gaussian",
        gain=args.gain,
        time_limit=parse_duration(args.time_limit),
        init=args.init,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        resume=args.resume,
        overwrite=args.overwrite,
        side_by_side=args.side_by_side,
        progress=not args.quiet,
        seed=args.seed,
        ensemble=args.ensemble,
        started=sei.cli.STARTED,
    )
    level = f"{result.noise_level:.3g}" + (" (estimated)" if result.noise_estimated else "")
    if result.gain is not None:
        level = (
            f"Poisson gain {result.gain:.3g}"
            + (" (estimated)" if result.gain_estimated else "")
            + f", {level}"
        )
    print(
        f"restored {len(result.outputs)} image(s) into {args.output} in {result.total_seconds:.0f} s "
        f"({result.steps} training steps from {result.init or 'scratch'}, noise level {level}); weights: "
        f"{result.weights}"
    )
    return 0
