"""Deblur or upsample your own images (a file or a folder) with trained weights; no ground truth.

INPUT and OUTPUT are both files or both folders (a folder's images keep their relative paths).
Large images go through tiled inference (bounded memory, blended overlaps). PNG outputs are 8-bit;
an output ending in .npy keeps the float32 estimate. A TIFF input (16-bit or float, grayscale or RGB,
a multi-page stack = a batch of 2-D images) is written back as a TIFF of its own sample type and
channels: a 16-bit input never comes back as 8-bit.

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

from sei.cli.degrade import add_format_argument, add_physics_arguments
from sei.cli.test import add_ensemble_argument, add_option_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sei.models import RECONSTRUCTORS

    parser.add_argument("input", type=Path, help="a measurement image (or .npy) or a folder of them")
    parser.add_argument("output", type=Path, help="output file or folder")
    add_physics_arguments(parser, auto_noise=True, noise_model=True)
    parser.set_defaults(task=None, noise_level=None)
    parser.add_argument(
        "--weights",
        default=None,
        help="a .safetensors/.pt file or a pretrained name (default: the shipped model for the task)",
    )
    parser.add_argument(
        "--model_kind",
        "--model-kind",
        default=None,
        help=f"a training-free method instead of weights: {', '.join(RECONSTRUCTORS)}",
    )
    parser.add_argument("--device", default="cpu")
    add_option_argument(parser)
    add_ensemble_argument(parser)
    parser.add_argument(
        "--tile", type=int, default=256, help="tile side in measurement pixels (0: whole image at once)"
    )
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in measurement pixels")
    add_format_argument(parser)
    parser.add_argument(
        "--side_by_side", "--side-by-side", action="store_true", help="also write input | output figures"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, and no line per image")


def run(args: argparse.Namespace) -> int:
    from sei.cli.degrade import output_paths
    from sei.cli.test import load_from_flags
    from sei.figures import image_grid
    from sei.imageio import (
        MEASUREMENT_SUFFIXES,
        read_images,
        write_image,
        write_like,
    )
    from sei.inference import tiled
    from sei.runtime import progress_bar, resolve_device

    pairs = output_paths(args.input, args.output, args.format, MEASUREMENT_SUFFIXES)
    device = resolve_device(args.device)
    # all first: a bad file fails before anything is written. A TIFF (16-bit, float, a multi-page stack = a
    # batch of 2-D images) comes back in its own sample type and channels, a 16-bit PNG as 16-bit; others as
    # before
    stacks = [_keep_depth(source, *read_images(source)) for source, _ in pairs]
    measurements = [y for images, _ in stacks for y in images]
    loaded = load_from_flags(args, device, lambda physics: measurements)
    scale = loaded.physics.scale
    items = zip(pairs, stacks, strict=True)
    if len(pairs) > 1:
        items = progress_bar(items, total=len(pairs), unit="image", desc=f"reconstructing {args.input}")
    for (source, target), (images, stored) in items:
        estimates = []
        for y in images:
            y = y[None].to(device)
            with torch.no_grad():
                estimate = (
                    tiled(loaded.reconstruct, y, scale, args.tile, args.overlap)
                    if args.tile
                    else loaded.reconstruct(y)
                )
            estimates.append(estimate.cpu())
        if stored is None:
            write_image(estimates[0][0], target)
        else:
            write_like(torch.cat(estimates), target, stored)
        if args.side_by_side:
            image_grid(
                [[("input", images[0]), ("reconstruction", estimates[0][0])]],
                target.with_name(target.stem + "_side_by_side.png"),
            )
        if not args.quiet:
            print(f"{source} -> {target}")
    return 0


def _keep_depth(source: Path, images: torch.Tensor, stored: object) -> tuple[torch.Tensor, object]:
    """``(images, how to write them)``: the stored format for a TIFF or a 16-bit file, ``None`` (write as
    before: 8-bit PNG, float .npy) otherwise."""
    from sei.cli.degrade import is_tiff

    return images, stored if is_tiff(source) or stored.dtype == "uint16" else None
