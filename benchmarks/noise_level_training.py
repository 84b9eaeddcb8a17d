"""SEI trained from measurements when the noise level is not known: the true level, ``auto``, UNSURE and
a wrong level (x0.5, x2), at the same number of steps.

Training data: the photo pool's tiles (``scripts/photo_pool.py``; the training data of the shipped
models), each blurred by Gaussian_R2 (circular) with Gaussian noise of level 5 and written as an 8-bit
PNG: a folder of measurements, as a user has one. Every run is ``sei train --measurements`` (SEI,
unet-small, the CPU recipe) for ``--steps`` steps, one thread each, differing only in what it is told
about the noise. Test: ``sei test --weights`` on the 10 bundled test photographs (their own seeded
measurements at level 5). Writes benchmarks/results/noise_level_training.json and prints a table;
cells already in the json are skipped unless ``--force``.

    python benchmarks/noise_level_training.py [--steps 600] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from _timing import run_sei

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POOL = HERE / "photo_pool"
WORK = HERE / "work" / "noise_level_training"
RESULTS = HERE / "results" / "noise_level_training.json"
TRUE_LEVEL = 5.0
KERNEL = "Gaussian_R2"
# what each run is told: (label, flags)
RUNS = {
    "true (5)": ["--noise_level", "5"],
    "auto": ["--noise_level", "auto"],
    "x0.5 (2.5)": ["--noise_level", "2.5"],
    "x2 (10)": ["--noise_level", "10"],
    "UNSURE from 2.5": ["--unsure", "--noise_level", "2.5"],
    "UNSURE from auto": ["--unsure", "--noise_level", "auto"],
}


def prepare() -> Path:
    """The measurement folder (made once): every pool tile blurred, noised at TRUE_LEVEL, 8-bit PNG."""
    from sei.imageio import list_images, read_image, write_image
    from sei.physics import make_physics, measurement_seed

    folder = WORK / "measurements"
    tiles = list_images(POOL)
    if not tiles:
        sys.exit(f"no tiles in {POOL}: run `python scripts/photo_pool.py` first")
    physics = make_physics("deblurring", kernel=KERNEL, noise_level=TRUE_LEVEL)
    for tile in tiles:
        target = folder / f"{tile.stem}.png"
        if not target.is_file():
            y = physics.measure(read_image(tile)[None], seed=measurement_seed(tile.stem, 0))
            write_image(y[0], target)
    return folder


def sei(args: list[str], log: Path) -> float:
    code, seconds = run_sei(args, log, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"sei {args[0]} failed (exit {code}); see {log}")
    return seconds


def run(label: str, flags: list[str], measurements: Path, steps: int) -> dict:
    folder = WORK / "runs" / label.replace(" ", "_").replace("(", "").replace(")", "")
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    train = [
        "train",
        "--measurements",
        str(measurements),
        "--kernel",
        KERNEL,
        *flags,
        "--max_steps",
        str(steps),
        "--val_interval",
        "0",
        "--out_dir",
        str(folder / "run"),
        "--overwrite",
        "--quiet",
    ]
    load = round(os.getloadavg()[0], 2)
    seconds = sei(train, log)
    sei(
        [
            "test",
            "--weights",
            str(folder / "run" / "weights.safetensors"),
            "--noise_level",
            f"{TRUE_LEVEL:g}",
            "--json",
            str(folder / "test.json"),
            "--quiet",
        ],
        log,
    )
    test = json.loads((folder / "test.json").read_text())
    config = json.loads((folder / "run" / "config.json").read_text())
    from sei.weights import read_weights

    _, metadata = read_weights(folder / "run" / "weights.safetensors")
    summary = test.get("summary", test)
    return {
        "flags": " ".join(flags),
        "steps": steps,
        "train_s": round(seconds, 1),
        "load_average_at_start": load,
        "noise_level_used": config.get("noise_estimate") or config.get("noise_level"),
        "noise_level_learned": metadata.get("noise_level_learned"),
        "psnr": round(float(summary["psnr_mean"]), 3),
        "ssim": round(float(summary["ssim_mean"]), 4),
    }


def table(results: dict) -> str:
    lines = [
        "| told | level used | level learned | test PSNR | vs true | SSIM | train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    cells = results["cells"]
    reference = cells.get("true (5)", {}).get("psnr")
    for label in RUNS:
        cell = cells.get(label)
        if not cell:
            continue
        learned = "" if cell["noise_level_learned"] is None else f"{cell['noise_level_learned']:.2f}"
        delta = "" if reference is None else f"{cell['psnr'] - reference:+.2f}"
        used = cell["noise_level_used"]
        used = f"{used:.2f}" if isinstance(used, float | int) else str(used)
        lines.append(
            f"| {label} | {used} | {learned} | {cell['psnr']:.2f} | {delta} | {cell['ssim']:.4f} | "
            f"{cell['train_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=2, help="trainings side by side (one thread each)")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--only", action="append", choices=list(RUNS), default=[])
    args = parser.parse_args()
    from sei.runtime import atomic_write_text

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    measurements = prepare()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"cells": {}}
    results["setup"] = {
        "true_level": TRUE_LEVEL,
        "kernel": KERNEL,
        "training": f"{len(list(measurements.glob('*.png')))} pool tiles",
        "test": "samples test split (10 photographs), measured at the true level",
        "steps": args.steps,
    }
    todo = [label for label in (args.only or RUNS) if args.force or label not in results["cells"]]

    lock = threading.Lock()

    def job(label: str) -> None:
        try:
            cell = run(label, RUNS[label], measurements, args.steps)
        except RuntimeError as error:
            print(f"{label}: FAILED: {error}", flush=True)
            return
        with lock:
            results["cells"][label] = cell
            atomic_write_text(RESULTS, json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(
            f"{label}: {cell['psnr']:.2f} dB (level used {cell['noise_level_used']}, learned "
            f"{cell['noise_level_learned']})",
            flush=True,
        )

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for future in [pool.submit(job, label) for label in todo]:
            future.result()
    print(table(results))


if __name__ == "__main__":
    main()
