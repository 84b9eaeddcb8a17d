"""Make measurements: blur or downsample images and add seeded Gaussian or Poisson-Gaussian noise.

INPUT and OUTPUT are both files or both folders. PNG/JPEG outputs are 8-bit; an output
ending in .npy stores the float32 measurement (H, W, C), unclipped. A TIFF input (16-bit, float,
multi-page stack = a batch of 2-D images) keeps its channels and sample type in a .tif output
(float TIFFs unclipped); a 16-bit input is never written as 8-bit.

examples:
  sei degrade photo.png blurry.png --task deblurring --kernel Gaussian_R2 --noise_level 5
  sei degrade photos/ lowres/ --task sr --sr_factor 4 --seed 1
  sei degrade photo.png measurement.npy --kernel my_psf.npy
  sei degrade photo.png blurry.png --boundary valid     # as a camera blurs: k - 1 pixels smaller
  sei degrade photo.png lowlight.npy --noise poisson-gaussian --gain 2.55 --noise_level 1
                                                        # ~100 photons at full scale
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sei import problem
from sei.errors import SeiUserError
from sei.imageio import IMAGE_SUFFIXES, list_images, read_image, read_images, write_image, write_like
from sei.physics import make_physics, measurement_seed, valid_blur

BOUNDARIES = ("circular", "valid")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="an image file or a folder of images")
    parser.add_argument("output", type=Path, help="output file (.png, .npy, ...) or folder")
    add_physics_arguments(parser, noise_model=True)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed of the noise (per-image seeds derive from it and the file name)",
    )
    add_format_argument(parser)
    parser.add_argument(
        "--boundary",
        choices=BOUNDARIES,
        default="circular",
        help="deblurring only. circular (default, the paper's protocol): the image wraps around and "
        "the output has its size. valid: blur the way a camera does, the input standing for a scene "
        "that continues past the output's frame: only pixels whose whole kernel lies inside the input "
        "are kept, so the output is (kernel size - 1) pixels smaller per axis (12 for Gaussian_R2)",
    )


def add_physics_arguments(
    parser: argparse.ArgumentParser, auto_noise: bool = False, noise_model: bool = False
) -> None:
    """The task flags shared by every command (names as in the original README); ``auto_noise``: the
    command also takes ``--noise_level auto`` (estimated from the measurements); ``noise_model``: it
    takes ``--noise gaussian|poisson-gaussian`` and ``--gain`` (and ``--gain auto`` with ``auto_noise``)."""
    parser.add_argument("--task", choices=problem.TASKS, default=problem.DEFAULT_TASK)
    parser.add_argument(
        "--kernel",
        default=None,
        help=(
            f"deblurring kernel: Gaussian_R<std>, Box_R<radius> or a file (default {problem.DEFAULT_KERNEL})"
        ),
    )
    parser.add_argument(
        "--sr_factor",
        "--sr-factor",
        type=int,
        default=None,
        help=(
            f"super-resolution factor {problem.choices(problem.SR_FACTORS)} (default "
            f"{problem.DEFAULT_SR_FACTOR})"
        ),
    )
    if auto_noise:
        parser.add_argument(
            "--noise_level",
            "--noise-level",
            type=_noise_level_flag,
            default=None,
            help="noise std in 8-bit units, or auto: estimated from the measurements",
        )
    else:
        parser.add_argument(
            "--noise_level",
            "--noise-level",
            type=float,
            default=problem.DEFAULT_NOISE_LEVEL,
            help=f"noise std in 8-bit units (default {problem.DEFAULT_NOISE_LEVEL:g})",
        )
    if noise_model:
        parser.add_argument(
            "--noise",
            choices=problem.NOISE_MODELS,
            default=None,
            help=f"noise model: {' or '.join(problem.NOISE_MODELS)} (default {problem.DEFAULT_NOISE_MODEL}); "
            "poisson-gaussian is y = gain * Poisson(Ax / gain) + "
            "N(0, noise_level^2); Poisson alone is --noise_level 0",
        )
        parser.add_argument(
            "--gain",
            type=_gain_flag if auto_noise else _fixed_gain_flag,
            default=None,
            help="Poisson gain in 8-bit units: one photon's intensity (255 / gain photons at full scale; "
            "2.55 = 100 photons)" + (", or auto: estimated from the measurements" if auto_noise else ""),
        )


def _noise_level_flag(text: str) -> float | str:
    from sei.physics.noise import parse_noise_level

    try:
        return parse_noise_level(text)
    except SeiUserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _gain_flag(text: str) -> float | str:
    from sei.physics.noise import parse_gain

    try:
        return parse_gain(text)
    except SeiUserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _fixed_gain_flag(text: str) -> float:
    value = _gain_flag(text)
    if value == "auto":
        raise argparse.ArgumentTypeError(
            "--gain auto estimates the gain of given measurements; give a number here"
        )
    return value


def measure_valid(physics, image: torch.Tensor, seed: int) -> torch.Tensor:
    """``physics.measure`` with a 'valid' convolution instead of the circular blur (same noise draw)."""
    if physics.poisson:
        from sei.physics.noise import check_nonnegative

        check_nonnegative(image)
    return physics.seeded_noise(valid_blur(image, physics.kernel), seed)


def run(args: argparse.Namespace) -> int:
    physics = make_physics(
        args.task,
        kernel=args.kernel,
        sr_factor=args.sr_factor,
        noise_level=args.noise_level,
        noise_model=args.noise or problem.DEFAULT_NOISE_MODEL,
        gain=args.gain,
    )
    boundary = getattr(args, "boundary", "circular")
    if boundary == "valid" and args.task != "deblurring":
        raise SeiUserError(
            "--boundary valid applies to deblurring: super-resolution downsamples without wrap-around"
        )
    pairs = output_paths(args.input, args.output, args.format)
    names = [s.relative_to(args.input).as_posix() if args.input.is_dir() else s.name for s, _ in pairs]
    # read all first: fail before writing anything. A TIFF keeps its channels and sample type (a stack is a
    # batch of 2-D images, each with its own seed); other files are read as RGB and written 8-bit
    stacks = [
        read_images(source, channels=None) if is_tiff(source) else (read_image(source)[None], None)
        for source, _ in pairs
    ]
    if boundary == "valid":
        kh, kw = physics.kernel_size
        for (source, _), (images, _) in zip(pairs, stacks, strict=True):
            if images.shape[-2] < kh or images.shape[-1] < kw:
                raise SeiUserError(
                    f"{source} ({images.shape[-2]}x{images.shape[-1]}) is smaller than the "
                    f"{kh}x{kw} kernel: --boundary valid leaves no pixel"
                )
    with torch.no_grad():
        for (_, target), name, (images, stored) in zip(pairs, names, stacks, strict=True):
            measurements = []
            for page, image in enumerate(images):
                seed = measurement_seed(name if len(images) == 1 else f"{name}#{page}", args.seed)
                if boundary == "valid":
                    measurements.append(measure_valid(physics, image[None], seed))
                else:
                    measurements.append(physics.measure(image[None], seed=seed))
            if stored is None:
                write_image(measurements[0][0], target)
            else:
                write_like(torch.cat(measurements), target, stored)
    print(f"wrote {len(pairs)} measurement(s) to {args.output}")
    return 0


def is_tiff(path: Path) -> bool:
    from sei.imageio import TIFF_SUFFIXES

    return path.suffix.lower() in TIFF_SUFFIXES


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format``: the file type written into an output folder (read by :func:`output_format`)."""
    parser.add_argument(
        "--format",
        choices=("png", "npy", "tif"),
        default=None,
        help="file type written into an output folder (default: tif for TIFF inputs, png otherwise)",
    )


def output_paths(
    source: Path, output: Path, requested: str | None, suffixes: tuple[str, ...] = IMAGE_SUFFIXES
) -> list[tuple[Path, Path]]:
    """``(input, output)`` file pairs: a file to a file, or every image of a folder (those with
    ``suffixes``) to the same relative path in the OUTPUT folder, with :func:`output_format`'s suffix."""
    if source.is_dir():
        images = list_images(source, suffixes)
        if not images:
            raise SeiUserError(f"no images found in {source}")
        if output.exists() and not output.is_dir():
            raise SeiUserError(f"{source} is a folder, so OUTPUT must be a folder too, not the file {output}")
        return [
            (image, (output / image.relative_to(source)).with_suffix("." + output_format(image, requested)))
            for image in images
        ]
    if source.is_file():
        if output.is_dir():
            raise SeiUserError(f"{source} is a file, so OUTPUT must be a file too, not the folder {output}")
        return [(source, output)]
    raise SeiUserError(f"input not found: {source}")


def output_format(source: Path, requested: str | None) -> str:
    """The suffix of an output in a folder: the requested one, else tif for a TIFF input and png otherwise."""
    return requested or ("tif" if is_tiff(source) else "png")
