"""Low light: SEI with PG-SURE against Richardson-Lucy, Wiener, PnP (Anscombe) and SEI with the Gaussian SURE,
on scientific images and photographs at peak photon counts of 10, 30 and 100, valid blur, 16-bit TIFF inputs.

Images (all offline, RGB; grayscale sources replicated to 3 channels):

- ``scientific``: scikit-image's astronomy and microscopy images (they ship in the wheel):
  ``hubble_deep_field``, ``moon``, ``cell`` (microscopy), ``immunohistochemistry``, ``retina`` (fundus). Each
  is resized to short side 256 (bicubic, antialiased), centre-cropped to 256x256 and cut into four 128x128
  quadrants: the two on the diagonal are TEST images, the two others TRAINING images (10 and 10).
- ``photos``: the 10 bundled test photographs (``samples``, test split), short side 128; TRAINING images: the
  bundled training photographs that are not among the scientific images (rocket, camera, clock, coins, brick,
  grass, gravel, text, page, grace_hopper, ascent, aero), short side 128.

Measurements: Gaussian_R2 blur, *valid* (``sei degrade --boundary valid``: only the pixels whose whole kernel
lies inside the image, 12 fewer per axis), Poisson-Gaussian noise with gain 25.5 / 8.5 / 2.55 (10 / 30 / 100
photons at full scale) and noise level 1 (8-bit units), each image with its own seed. Every measurement is
written as a **16-bit TIFF** the way a camera stores counts: a pedestal of 0.05 is added (so that the Gaussian
read noise is not clipped at 0) and the values are divided by a headroom of 4 (so that photon counts above the
full-scale mean are not clipped at 65535); it is read back with ``sei.imageio.read_tiff`` and the two known
camera constants are undone. The ground truth is the image cropped by the kernel margin (6 pixels each side),
the region the measurement covers; every method returns an estimate of that region.

Methods (each cell timed):

- ``measurement``: the blurry, noisy image;
- ``wiener``: ``sei``'s Wiener filter on the smooth periodic extension (``boundary="extend"``), its
  regularisation chosen on the TRAINING measurements (best mean PSNR, 11 values);
- ``rl``: Richardson-Lucy (the EM algorithm of Poisson noise, its natural setting) on the smooth periodic
  extension, flat start, the iteration count chosen on the TRAINING measurements (1-100); the cell also
  records the PSNR at the count that would be best on the test images (``best_on_test``, an oracle no user
  has);
- ``pnp_anscombe``: the generalized Anscombe transform of the measurement, FFDNet denoising there (noise std 1
  in that domain), the closed-form unbiased inverse (Makitalo and Foi), then PnP-HQS deblurring (FFDNet, DPIR
  schedule) of the denoised measurement at a residual noise level chosen on the TRAINING measurements (2, 4, 8
  or 16);
- ``sei_pg_auto``: SEI (PG-SURE + scale equivariance) fine-tuned from the shipped ``sei-gaussian_r2-noise5``
  on the test measurements only (no ground truth, as ``sei restore`` does), gain and noise level estimated
  from those measurements by ``estimate_poisson_gaussian`` (``--gain auto --noise_level auto``);
- ``sei_gaussian``: the same fine-tuning with the Gaussian SURE at the data's true average noise variance (the
  best a Gaussian model can be told), re-measuring with Gaussian noise.

Training: unet-small (the shipped model's network), Adam 5e-4, batches of 8 random 48x48 crops, ``--steps``
steps (default 300), one seed, one thread; the test PSNR is recorded every 50 steps (``curve``) to show
whether it still rises at the end of the budget.
Metric: RGB PSNR over the covered region, mean over the images.
Results go to benchmarks/results/low_light.json, one cell per (images, photons, method); cells already there
are skipped unless ``--force`` (the run resumes where it stopped). ``--report`` prints the table only.
A budget other than 300 (``--steps 1500``) records the SEI cells beside the table's, keyed ``@1500``, and
prints them in a second table; ``--kind`` and ``--photons`` split the work between processes (one lock file
guards the results).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/low_light.py [--steps 300] [--only rl] \\
        [--kind photos] [--photons 10] [--force] [--report]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sei.data import load_images
from sei.imageio import read_tiff, resize_short_side, write_tiff
from sei.losses import build_method
from sei.noise_estimation import estimate_poisson_gaussian
from sei.physics import functional as Fn
from sei.physics import make_physics, measurement_seed, valid_blur
from sei.runtime import atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "low_light.json"
WORK = HERE / "work" / "low_light"
KERNEL = "Gaussian_R2"
GAINS = {10: 25.5, 30: 8.5, 100: 2.55}  # peak photons -> gain (8-bit units)
LEVEL = 1.0  # Gaussian read noise, 8-bit units
PEDESTAL = 0.05  # camera offset added before writing the 16-bit file (so read noise is not clipped at 0)
HEADROOM = 4.0  # the 16-bit file holds values up to this many times full scale
INIT = "sei-gaussian_r2-noise5"
METHODS = ("measurement", "wiener", "rl", "pnp_anscombe", "sei_pg_auto", "sei_gaussian")
KINDS = ("scientific", "photos")
SCIENTIFIC = ("hubble_deep_field", "moon", "cell", "immunohistochemistry", "retina")
PHOTO_TRAINING = (
    "rocket",
    "camera",
    "clock",
    "coins",
    "brick",
    "grass",
    "gravel",
    "text",
    "page",
    "grace_hopper",
    "ascent",
    "aero",
)
CURVE_EVERY = 50
DEFAULT_STEPS = 300  # the table's SEI budget; a cell of another budget is kept beside it, keyed "@steps"
SEI_METHODS = ("sei_pg_auto", "sei_gaussian")


# ---------------------------------------------------------------- images and measurements


def _rgb(image: torch.Tensor) -> torch.Tensor:
    return image.expand(3, -1, -1).clone() if image.shape[0] == 1 else image[:3]


def scientific_images() -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    from skimage import data

    from sei.imageio import array_to_tensor

    test, train = [], []
    for name in SCIENTIFIC:
        image = resize_short_side(array_to_tensor(getattr(data, name)(), channels=3), 256).clamp(0, 1)
        height, width = image.shape[-2:]
        top, left = (height - 256) // 2, (width - 256) // 2
        square = image[:, top : top + 256, left : left + 256]
        quadrants = [square[:, i : i + 128, j : j + 128] for i in (0, 128) for j in (0, 128)]
        test += [(f"{name}_tl", quadrants[0]), (f"{name}_br", quadrants[3])]
        train += [(f"{name}_tr", quadrants[1]), (f"{name}_bl", quadrants[2])]
    return test, train


def photo_images() -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    test = [
        (name.split("/")[-1], _rgb(x).clamp(0, 1))
        for name, x in load_images("samples", split="test", resize=128)
    ]
    train = [
        (name.split("/")[-1], _rgb(x).clamp(0, 1))
        for name, x in load_images("samples", split="train", resize=128)
        if name.split("/")[-1] in PHOTO_TRAINING
    ]
    return test, train


def measure_16bit(physics, name: str, x: torch.Tensor, folder: Path) -> torch.Tensor:
    """The valid-blur Poisson-Gaussian measurement of ``x``, written as a 16-bit TIFF and read back."""
    path = folder / f"{name}.tif"
    if not path.is_file():
        y = physics.seeded_noise(valid_blur(x[None], physics.kernel), measurement_seed(name, 0))
        folder.mkdir(parents=True, exist_ok=True)
        write_tiff((y + PEDESTAL) / HEADROOM, path, "uint16")
    stored, layout = read_tiff(path, channels=3)
    assert layout.dtype == "uint16", layout
    return stored * HEADROOM - PEDESTAL


def truth(x: torch.Tensor, physics) -> torch.Tensor:
    return Fn.crop_border(x[None], physics.margin)


# ---------------------------------------------------------------- metrics


def psnr(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((estimate.clamp(0, 1) - target) ** 2).mean()))


def random_crops(
    ys: list[torch.Tensor], generator: torch.Generator, count: int = 8, size: int = 48
) -> torch.Tensor:
    """A training batch: ``count`` random ``size``-pixel crops of random measurements, drawn in order."""
    batch = []
    for _ in range(count):
        y = ys[int(torch.randint(len(ys), (1,), generator=generator))]
        top = int(torch.randint(y.shape[-2] - size + 1, (1,), generator=generator))
        left = int(torch.randint(y.shape[-1] - size + 1, (1,), generator=generator))
        batch.append(y[..., top : top + size, left : left + size])
    return torch.cat(batch)


def mean_psnr(estimates: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    return sum(psnr(e, t) for e, t in zip(estimates, targets, strict=True)) / len(targets)


# ---------------------------------------------------------------- classical methods


def wiener(physics, ys: list[torch.Tensor], reg: float) -> list[torch.Tensor]:
    from sei.models.baselines import Wiener

    method = Wiener(physics, reg=reg, boundary="extend")
    return [method(y) for y in ys]


def choose_wiener(physics, train_ys, train_xs) -> float:
    grid = [float(v) for v in np.logspace(-4, 1, 11)]
    return max(grid, key=lambda reg: mean_psnr(wiener(physics, train_ys, reg), train_xs))


def rl_curve(physics, ys: list[torch.Tensor], xs: list[torch.Tensor], iterations: int = 100) -> list[float]:
    """Mean PSNR after each Richardson-Lucy iteration (1..iterations), on the smooth periodic extension."""
    margin = 2 * max(physics.kernel_size)
    padded = [Fn.smooth_periodic_extension(y.clamp_min(0), margin).clamp_min(0) for y in ys]
    estimates = [torch.full_like(p, float(p.mean())) for p in padded]
    curve = []
    for _ in range(iterations):
        estimates = [
            e * physics.A_adjoint(p / physics.A(e).clamp_min(1e-6))
            for e, p in zip(estimates, padded, strict=True)
        ]
        curve.append(mean_psnr([Fn.crop_border(e, margin) for e in estimates], xs))
    return curve


def anscombe(y: torch.Tensor, gain: float, sigma: float) -> torch.Tensor:
    """Generalized Anscombe transform of ``y`` in [0, 1] units with gain and sigma in [0, 1] units: in photon
    counts ``c = y / gain``, ``2 sqrt(c + 3/8 + (sigma / gain)^2)`` has noise of std about 1."""
    return 2 * torch.sqrt((y / gain + 0.375 + (sigma / gain) ** 2).clamp_min(0))


def inverse_anscombe(z: torch.Tensor, gain: float, sigma: float) -> torch.Tensor:
    """The closed-form approximation of the exact unbiased inverse (Makitalo and Foi, 2011), minus the
    Gaussian part, back in [0, 1] units."""
    z = z.clamp_min(1.0)
    r = math.sqrt(1.5)
    counts = 0.25 * z**2 + 0.25 * r / z - 1.375 / z**2 + 0.625 * r / z**3 - 0.125 - (sigma / gain) ** 2
    return gain * counts.clamp_min(0)


def pnp_anscombe(physics, ys, residual_level: float, denoise) -> list[torch.Tensor]:
    from sei.models.baselines import PnPHQS

    deblur = PnPHQS(make_physics("deblurring", kernel=KERNEL, noise_level=residual_level), boundary="extend")
    out = []
    for y in ys:
        z = anscombe(y, physics.gain, physics.sigma)
        low, high = float(z.min()), float(z.max())
        scale = max(high - low, 1e-6)
        with torch.no_grad():
            denoised = denoise((z - low) / scale, 1.0 / scale) * scale + low
            out.append(deblur(inverse_anscombe(denoised, physics.gain, physics.sigma)))
    return out


# ---------------------------------------------------------------- SEI


def train_sei(trained, ys, xs, steps: int, seed: int = 0) -> tuple[torch.nn.Module, list[list[float]]]:
    """Fine-tune the shipped model on the measurements ``ys`` with ``trained``'s noise model; the test PSNR
    every ``CURVE_EVERY`` steps (the ground truth is only looked at for that record)."""
    from sei.weights import load_weights_with_physics

    torch.manual_seed(seed)
    model, _, _ = load_weights_with_physics(INIT)
    model.train()
    objective = build_method("proposed", trained, autocast_dtype=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(seed)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            value = mean_psnr([model(y) for y in ys], xs)
        model.train()
        return value

    curve = [[0, evaluate()]]
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        objective(model, random_crops(ys, generator), trained, rng=generator)["loss"].backward()
        optimizer.step()
        if step % CURVE_EVERY == 0 or step == steps:
            curve.append([step, evaluate()])
            print(f"  step {step}: {curve[-1][1]:.2f} dB", flush=True)
    return model.eval(), curve


# ---------------------------------------------------------------- the run


def cell_key(kind: str, photons: int, method: str, steps: int) -> str:
    suffix = f"@{steps}" if method in SEI_METHODS and steps != DEFAULT_STEPS else ""
    return f"{kind}/{photons}/{method}{suffix}"


def load_results() -> dict:
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if "cells" not in results or results.get("meta", {}).get("protocol") != 2:
        results = {"cells": {}}  # the earlier circular-blur run's cells are not comparable
    return results


def save_cell(key: str, cell: dict, meta: dict) -> None:
    """Add one cell; a lock file lets several low_light.py processes (one per image kind or light level)
    share the results file."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results()
        results["meta"] = meta
        results["cells"][key] = cell
        atomic_write_text(OUT, json.dumps(results, indent=1) + "\n")


def init_digest() -> str:
    """The SHA-256 of the shipped model the SEI cells start from (re-shipping it changes their start)."""
    from sei.weights import PRETRAINED

    return hashlib.sha256(PRETRAINED[INIT].path.read_bytes()).hexdigest()[:12]


def run(
    steps: int,
    only: list[str] | None,
    force: bool,
    kinds: list[str] | None = None,
    photon_levels: list[int] | None = None,
) -> None:
    results = load_results()
    meta = {
        "protocol": 2,
        "kernel": f"{KERNEL} (valid)",
        "level": LEVEL,
        "gains": {str(k): v for k, v in GAINS.items()},
        "pedestal": PEDESTAL,
        "headroom": HEADROOM,
        "init": INIT,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    denoiser = None
    for kind in kinds or KINDS:
        test, train = scientific_images() if kind == "scientific" else photo_images()
        for photons, gain in GAINS.items():
            if photon_levels and photons not in photon_levels:
                continue
            physics = make_physics(
                "deblurring", kernel=KERNEL, noise_level=LEVEL, noise_model="poisson-gaussian", gain=gain
            )
            folder = WORK / kind / str(photons)
            ys = [measure_16bit(physics, name, x, folder / "test") for name, x in test]
            xs = [truth(x, physics) for _, x in test]
            train_ys = [measure_16bit(physics, name, x, folder / "train") for name, x in train]
            train_xs = [truth(x, physics) for _, x in train]
            for method in METHODS:
                key = cell_key(kind, photons, method, steps)
                if (only and method not in only) or (key in results["cells"] and not force):
                    continue
                start = time.perf_counter()
                facts: dict = {}
                if method == "measurement":
                    value = mean_psnr(ys, xs)
                elif method == "wiener":
                    reg = choose_wiener(physics, train_ys, train_xs)
                    value, facts = mean_psnr(wiener(physics, ys, reg), xs), {"reg": reg}
                elif method == "rl":
                    chosen = int(np.argmax(rl_curve(physics, train_ys, train_xs))) + 1
                    curve = rl_curve(physics, ys, xs)
                    value = curve[chosen - 1]
                    facts = {
                        "iterations": chosen,
                        "best_on_test": max(curve),
                        "best_on_test_iterations": int(np.argmax(curve)) + 1,
                    }
                elif method == "pnp_anscombe":
                    if denoiser is None:
                        from sei.models.baselines import load_ffdnet

                        denoiser = load_ffdnet()
                    grid = (2.0, 4.0, 8.0, 16.0)
                    scores = {
                        r: mean_psnr(pnp_anscombe(physics, train_ys, r, denoiser), train_xs) for r in grid
                    }
                    residual = max(scores, key=scores.get)
                    value = mean_psnr(pnp_anscombe(physics, ys, residual, denoiser), xs)
                    facts = {"residual_level": residual}
                else:
                    if method == "sei_pg_auto":
                        estimate = estimate_poisson_gaussian([y[0] for y in ys])
                        facts = {"gain_estimate": estimate.gain_level, "level_estimate": estimate.noise_level}
                        trained = make_physics(
                            "deblurring",
                            kernel=KERNEL,
                            noise_level=estimate.noise_level,
                            noise_model="poisson-gaussian",
                            gain=estimate.gain_level,
                        )
                    else:
                        variance = torch.cat([(physics.gain * y + physics.sigma**2).flatten() for y in ys])
                        average = float(variance.mean().sqrt()) * 255
                        facts = {"gaussian_level": average}
                        trained = make_physics("deblurring", kernel=KERNEL, noise_level=average)
                    model, curve = train_sei(trained, ys, xs, steps)
                    value = curve[-1][1]
                    facts.update({"steps": steps, "curve": curve, "init_sha256": init_digest()})
                cell = {"psnr": value, "seconds": time.perf_counter() - start, **facts}
                shown = {
                    k: (round(v, 3) if isinstance(v, float) else v) for k, v in facts.items() if k != "curve"
                }
                print(
                    f"{kind:<11}{photons:>4} photons  {method:<13}{value:7.2f} dB  {cell['seconds']:6.0f} s  "
                    f"{shown}",
                    flush=True,
                )
                save_cell(key, cell, meta)


def long_table(results: dict) -> str:
    """The SEI cells of other budgets (``--steps N``): their PSNR at the table's budget (read off their own
    curve: same seed and learning rate, so it is the table's run continued) and at the end, against RL and
    PnP."""
    cells = results["cells"]
    rows = []

    def order(key: str) -> tuple:
        kind, photons, tail = key.split("/")
        return KINDS.index(kind), int(photons), tail

    for key, cell in sorted(cells.items(), key=lambda item: order(item[0])):
        kind, photons, tail = key.split("/")
        method, _, steps = tail.partition("@")
        if not steps:
            continue
        at_default = dict((int(s), v) for s, v in cell["curve"]).get(DEFAULT_STEPS)
        best_step, best = max(((int(s), v) for s, v in cell["curve"]), key=lambda point: point[1])
        rl, pnp = cells.get(f"{kind}/{photons}/rl"), cells.get(f"{kind}/{photons}/pnp_anscombe")
        rows.append(
            f"| {kind} | {photons} | {method} | {steps} | "
            + ("-" if at_default is None else f"{at_default:.2f}")
            + f" | **{cell['psnr']:.2f}** | {best:.2f} at {best_step} | "
            + ("-" if rl is None else f"{cell['psnr'] - rl['psnr']:+.2f}")
            + " | "
            + ("-" if pnp is None else f"{cell['psnr'] - pnp['psnr']:+.2f}")
            + " |"
        )
    if not rows:
        return ""
    header = (
        f"| images | photons | method | steps | PSNR at {DEFAULT_STEPS} | PSNR at the end "
        "| best on the curve | minus RL | minus PnP |"
    )
    return "\n".join([header, "|" + "---|" * 9, *rows])


def table(results: dict) -> str:
    cells = results["cells"]
    header = (
        "| images | photons | measurement | Wiener | Richardson-Lucy (best on test) | PnP, Anscombe "
        "| SEI, Gaussian SURE | SEI, PG-SURE, auto | SEI - RL |"
    )
    lines = [header, "|" + "---|" * 9]
    for kind in KINDS:
        for photons in GAINS:

            def get(method: str, kind: str = kind, photons: int = photons) -> float | None:
                cell = cells.get(f"{kind}/{photons}/{method}")
                return None if cell is None else cell["psnr"]

            def fmt(value: float | None) -> str:
                return "-" if value is None else f"{value:.2f}"

            rl = cells.get(f"{kind}/{photons}/rl")
            rl_text = (
                "-" if rl is None else f"{rl['psnr']:.2f} ({rl['iterations']} it.; {rl['best_on_test']:.2f})"
            )
            sei, rl_value = get("sei_pg_auto"), get("rl")
            gap = "-" if sei is None or rl_value is None else f"{sei - rl_value:+.2f}"
            lines.append(
                f"| {kind} | {photons} | {fmt(get('measurement'))} | {fmt(get('wiener'))} | {rl_text} | "
                f"{fmt(get('pnp_anscombe'))} | {fmt(get('sei_gaussian'))} | **{fmt(sei)}** | {gap} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"SEI fine-tuning steps (another budget than {DEFAULT_STEPS} is kept beside the table's cells)",
    )
    parser.add_argument("--only", action="append", choices=METHODS)
    parser.add_argument("--kind", action="append", choices=KINDS, help="only these images (repeatable)")
    parser.add_argument(
        "--photons", action="append", type=int, choices=list(GAINS), help="only these light levels"
    )
    parser.add_argument("--force", action="store_true", help="recompute cells already in the json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="print the table from the json only")
    args = parser.parse_args()
    if not args.report:
        torch.set_num_threads(args.threads)
        run(args.steps, args.only, args.force, args.kind, args.photons)
    results = load_results()
    print(table(results))
    longer = long_table(results)
    if longer:
        print("\nLonger SEI budgets\n\n" + longer)


if __name__ == "__main__":
    main()
