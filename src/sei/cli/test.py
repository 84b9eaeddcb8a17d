"""Evaluate trained weights or a training-free method on a test set: PSNR and SSIM.

Metrics follow the paper's protocol (8-bit quantisation, Y channel, no shaving; SSIM with an
11x11 Gaussian window, implementation named in the output). Weights files with metadata need no
task flags.

examples:
  sei test --weights runs/sei_g2/weights.safetensors
  sei test --weights sei-gaussian_r2-noise5 --per_image --json results.json
  sei test --task sr --sr_factor 2 --model_kind up
  sei test --task deblurring --kernel Gaussian_R2 --model_kind pnp --save_images out/pnp
  sei test --dataset div2k --download --weights Div2K-Train_Deblurring_Gaussian_R2_Noise5_SEI --device cuda:0
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sei.cli.degrade import add_physics_arguments
from sei.errors import SeiUserError

if TYPE_CHECKING:
    import torch

    from sei.inference import Loaded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sei.models import RECONSTRUCTORS

    add_physics_arguments(parser, auto_noise=True, noise_model=True)
    parser.set_defaults(task=None, noise_level=None)
    parser.add_argument(
        "--dataset", default="samples", help="div2k, urban100, ct, samples (default) or a folder of images"
    )
    parser.add_argument("--data_root", "--data-root", default=None)
    parser.add_argument("--download", action="store_true", help="download the test set if it is missing")
    parser.add_argument(
        "--resize", type=int, default=256, help="short side of the test images (0 keeps native size)"
    )
    parser.add_argument(
        "--max_images", "--max-images", type=int, default=None, help="evaluate only the first N images"
    )
    parser.add_argument(
        "--model_kind",
        "--model-kind",
        default=None,
        help=(
            f"a training-free method ({', '.join(RECONSTRUCTORS)}), or a network (swinir, ...) with --weights"
        ),
    )
    parser.add_argument(
        "--weights", default=None, help="a .safetensors/.pt file or a pretrained name (`sei weights list`)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fixed test measurements")
    parser.add_argument("--device", default="cpu")
    add_option_argument(parser)
    add_ensemble_argument(parser)
    parser.add_argument("--protocol", choices=("paper", "sr-literature"), default="paper")
    parser.add_argument(
        "--tile", type=int, default=0, help="tiled inference with tiles of this size (0: whole images)"
    )
    parser.add_argument("--per_image", "--per-image", action="store_true", help="print every image's metrics")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the summary and per-image metrics as JSON"
    )
    parser.add_argument("--csv", type=Path, default=None, help="write per-image metrics as CSV")
    parser.add_argument(
        "--save_images",
        "--save-images",
        type=Path,
        default=None,
        help="write estimates and side-by-side figures here",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    """``--option KEY=VALUE`` (repeatable): the options of a training-free method (:func:`parse_options`)."""
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of a training-free method, e.g. iterations=1000 or reg=0.01 (repeatable)",
    )


def add_ensemble_argument(parser: argparse.ArgumentParser) -> None:
    """``--ensemble``: average over the flips and quarter turns the forward model commutes with."""
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="average the reconstructions of the image's flips and quarter turns that the forward model "
        "commutes with (all 8 for a symmetric PSF or SR; about 8x the time; docs/models.md)",
    )


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["iterations=500", "denoiser=bm3d"]`` -> ``{"iterations": 500, "denoiser": "bm3d"}`` (JSON values
    where they parse)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SeiUserError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def load_from_flags(
    args: argparse.Namespace, device: torch.device, measurements: Callable[[Any], list]
) -> Loaded:
    """The reconstructor the flags choose (``--weights`` or ``--model_kind``, the task and noise flags,
    ``--option``), through :func:`sei.inference.load_for_measurements`; ``measurements(physics)`` gives
    the images a ``--noise_level auto`` (or ``--gain auto``) is estimated from."""
    from sei.inference import load_for_measurements

    loaded, _ = load_for_measurements(
        args.weights,
        args.model_kind,
        args.task,
        args.kernel,
        args.sr_factor,
        args.noise_level,
        device,
        parse_options(args.option),
        measurements,
        noise_model=args.noise,
        gain=args.gain,
    )
    if args.ensemble:
        from sei.inference import ensembled

        loaded = ensembled(loaded)
    return loaded


def run(args: argparse.Namespace) -> int:
    from sei.data import MeasuredImages, load_images
    from sei.evaluation import Evaluation, image_metrics
    from sei.figures import image_grid
    from sei.imageio import write_image
    from sei.inference import tiled
    from sei.runtime import resolve_device

    device = resolve_device(args.device)
    if args.gain == "auto":
        raise SeiUserError(
            "sei test simulates its measurements: give the --gain to simulate (auto estimates the gain "
            "of your own measurements, in sei reconstruct and sei train)"
        )
    images = load_images(
        args.dataset, split="test", root=args.data_root, download=args.download, resize=args.resize or None
    )
    images = list(images)[: args.max_images] if args.max_images else images
    simulated: dict[str, MeasuredImages] = {}

    def measure(
        physics: object,
    ) -> list:  # --noise_level auto: measured at the nominal level, estimated from them
        simulated["measured"] = MeasuredImages(images, physics, seed=args.seed)
        return [y for _, _, y in simulated["measured"]]

    loaded = load_from_flags(args, device, measure)
    physics = loaded.physics
    measured = simulated.get("measured") or MeasuredImages(images, physics, seed=args.seed)
    scale = physics.scale
    shave = scale if args.protocol == "sr-literature" else 0
    evaluation = Evaluation(protocol=args.protocol)
    from sei.runtime import progress_bar

    label = args.weights or args.model_kind or "model"
    for index in progress_bar(range(len(measured)), unit="image", desc=f"testing {label} on {args.dataset}"):
        identity, x, y = measured[index]
        y_batch = y[None].to(device)
        estimate = (
            tiled(loaded.reconstruct, y_batch, scale, args.tile) if args.tile else loaded.reconstruct(y_batch)
        )
        estimate = estimate[0].float().cpu()
        value, structural = image_metrics(estimate, x, protocol=args.protocol, shave=shave)
        evaluation.add(identity, value, structural)
        if args.per_image:
            print(f"{identity}\tPSNR {value:.2f} dB\tSSIM {structural:.4f}")
        if args.save_images:
            stem = identity.replace("/", "_")
            write_image(estimate, args.save_images / f"{stem}_estimate.png")
            input_psnr = image_metrics(
                physics.initial_estimate(y_batch)[0].cpu(), x, protocol=args.protocol, shave=shave
            )[0]
            image_grid(
                [
                    [
                        (f"measurement ({input_psnr:.2f} dB)", y),
                        (f"estimate ({value:.2f} dB)", estimate),
                        ("ground truth", x),
                    ]
                ],
                args.save_images / f"{stem}_side_by_side.png",
            )
    summary = evaluation.summary()
    label = loaded.description.get("weights") or loaded.description.get("model_kind")
    print(f"{label} on {args.dataset} ({physics.describe()}):")
    print(
        f"N={summary['n']}  PSNR {summary['psnr_mean']:.2f} ± {summary['psnr_std']:.2f} dB  SSIM "
        f"{summary['ssim_mean']:.4f} ± {summary['ssim_std']:.4f}"
    )
    print(f"SSIM: {summary['ssim_implementation']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "summary": summary,
                    "setup": {**loaded.description, "dataset": args.dataset},
                    "images": evaluation.records,
                },
                indent=1,
                default=str,
            )
        )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["identity", "psnr", "ssim"])
            writer.writeheader()
            writer.writerows(evaluation.records)
    return 0
