"""Deblur or upsample your own images (a file or a folder) with trained weights; no ground truth.

Large images go through tiled inference (bounded memory, blended overlaps). PNG outputs are
8-bit; an output ending in .npy keeps the float32 estimate.

examples:
  sei reconstruct blurry.png sharp.png --weights sei-gaussian_r2-noise5
  sei reconstruct lowres/ upscaled/ --weights runs/sei_x2/weights.safetensors --tile 256
  sei reconstruct blurry.png sharp.png --model_kind wiener --kernel Gaussian_R2
  sei reconstruct blurry/ sharp/ --model_kind pnp --kernel psf.npy --noise_level auto
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sei.cli.degrade import add_physics_arguments
from sei.errors import SeiUserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a measurement image (or .npy) or a folder of them")
    parser.add_argument("output", type=Path, help="output file or folder")
    add_physics_arguments(parser, auto_noise=True)
    parser.set_defaults(task=None, noise_level=None)
    parser.add_argument("--weights", default=None, help="a .safetensors/.pt file or a pretrained name (default: the shipped model for the task)")
    parser.add_argument("--model_kind", "--model-kind", default=None, help="a training-free method instead of weights: wiener, pnp, bm3d, dip, up, id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an option of a training-free method, e.g. iterations=1000 or reg=0.01 (repeatable)")
    parser.add_argument("--tile", type=int, default=256, help="tile side in measurement pixels (0: whole image at once)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in measurement pixels")
    parser.add_argument("--format", choices=("png", "npy"), default="png", help="file type written into an output folder")
    parser.add_argument("--side_by_side", "--side-by-side", action="store_true", help="also write input | output figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, and no line per image")


def run(args: argparse.Namespace) -> int:
    from sei.cli.test import parse_options
    from sei.figures import image_grid
    from sei.imageio import MEASUREMENT_SUFFIXES, list_images, read_image, write_image
    from sei.inference import load_for_measurements, resolve_device, tiled
    from sei.runtime import progress_bar

    if args.input.is_dir():
        sources = list_images(args.input, MEASUREMENT_SUFFIXES)
        if not sources:
            raise SeiUserError(f"no images found in {args.input}")
        if args.output.exists() and not args.output.is_dir():
            raise SeiUserError(f"{args.input} is a folder, so OUTPUT must be a folder too")
        pairs = [(s, (args.output / s.relative_to(args.input)).with_suffix("." + args.format)) for s in sources]
    elif args.input.is_file():
        pairs = [(args.input, args.output)]
    else:
        raise SeiUserError(f"input not found: {args.input}")
    device = resolve_device(args.device)
    measurements = [read_image(source) for source, _ in pairs]  # all first: a bad file fails before anything is written
    loaded, _ = load_for_measurements(args.weights, args.model_kind, args.task, args.kernel, args.sr_factor, args.noise_level,
                                      device, parse_options(args.option), lambda physics: measurements)
    scale = loaded.physics.factor if loaded.physics.task == "sr" else 1
    items = zip(pairs, measurements, strict=True)
    if len(pairs) > 1:
        items = progress_bar(items, total=len(pairs), unit="image", desc=f"reconstructing {args.input}")
    for (source, target), y in items:
        y = y[None].to(device)
        with torch.no_grad():
            estimate = tiled(loaded.reconstruct, y, scale, args.tile, args.overlap) if args.tile else loaded.reconstruct(y)
        write_image(estimate[0].cpu(), target)
        if args.side_by_side:
            image_grid([[("input", y[0].cpu()), ("reconstruction", estimate[0].cpu())]], target.with_name(target.stem + "_side_by_side.png"))
        if not args.quiet:
            print(f"{source} -> {target}")
    return 0
