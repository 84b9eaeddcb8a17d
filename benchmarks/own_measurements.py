"""Restore your own degraded photographs with no ground truth: the benchmark of that path.

Test images: the 10 held-out photographs of the photo pool (``scripts/photo_pool.py``, ``HELD_OUT``),
real photographs of about 1 MP that no shipped model saw in training. Each is blurred the way a camera
blurs, by a *valid* (non-circular) convolution: the scene continues past the frame, so only the region
where the whole kernel fits inside the photograph is kept (``k - 1`` pixels fewer each way). Then
Gaussian noise of level 5 (8-bit units) and an 8-bit PNG. The ground truth is the photograph cropped
by the kernel margin (``k // 2`` pixels each side), the region the measurement covers.

Two PSFs, given as ``.npy`` files as a user would: ``Gaussian_R2`` (the shipped deblurring model's) and a
defocus disk of radius 4 that no shipped model was trained for. Methods, on the same files, each timed:

- ``measurement``: the blurry image itself;
- ``wiener``: ``sei reconstruct --model_kind wiener --kernel K.npy --noise_level auto``;
- ``rl_oracle``: scikit-image ``richardson_lucy`` (measurement reflect-padded by the kernel size, then
  cropped back), at the iteration count with the best mean PSNR *on the ground truth* (an oracle: a user
  cannot choose it); the count is searched with an identical torch loop, then skimage is run at it;
- ``pnp``: ``sei reconstruct --model_kind pnp --kernel K.npy --noise_level auto``;
- ``shipped``: ``sei reconstruct --weights sei-gaussian_r2-noise5`` as it is (for the disk: a mismatched PSF);
- ``finetune_5m``: ``sei train --measurements in/ --init sei-gaussian_r2-noise5 --time_limit 5m``, then
  ``sei reconstruct`` with its weights;
- ``scratch_10m``: SEI from scratch on the measurements, ``sei train --measurements in/ --time_limit 10m``;
- ``restore_10m``: the one command ``sei restore in/ OUT --kernel K.npy --time_limit 10m``.

Metrics: Y-PSNR and SSIM of ``sei.evaluation.image_metrics`` on the 8-bit outputs. Every ``sei`` command
runs with one thread (``OMP_NUM_THREADS=1``); the trainings run ``--jobs`` at a time (default 2).
Results go to ``benchmarks/results/own_measurements.json``, one cell per (kernel, method); cells already
there are skipped unless ``--force``. The figure and docs/own_measurements.md are written from the json.

    python benchmarks/own_measurements.py                        # everything not done yet
    python benchmarks/own_measurements.py --only wiener --only rl_oracle
    python benchmarks/own_measurements.py --report               # table, figure and doc from the json only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from _timing import run_sei

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HELD_OUT = HERE / "photo_pool_held_out"
WORK = HERE / "work" / "own_measurements"
RESULTS = HERE / "results" / "own_measurements.json"
FIGURE = ROOT / "docs" / "figures" / "own_measurements.jpg"
DOC = ROOT / "docs" / "own_measurements.md"
NOISE_LEVEL = 5.0  # 8-bit units
SEED = 0
KERNELS = ("gaussian_r2", "disk_r4")
METHODS = (
    "measurement",
    "wiener",
    "rl_oracle",
    "pnp",
    "shipped",
    "finetune_5m",
    "scratch_10m",
    "restore_10m",
)
TRAINED = ("finetune_5m", "scratch_10m", "restore_10m")  # the slow ones: run last, --jobs at a time
LABELS = {
    "measurement": "measurement (blurry, noisy)",
    "wiener": "Wiener (`--noise_level auto`)",
    "rl_oracle": "Richardson-Lucy, oracle iterations",
    "pnp": "PnP (FFDNet HQS, `--noise_level auto`)",
    "shipped": "shipped `sei-gaussian_r2-noise5` as it is",
    "finetune_5m": "shipped model fine-tuned 5 min on the measurements",
    "scratch_10m": "SEI from scratch, 10 min on the measurements",
    "restore_10m": "`sei restore --time_limit 10m` (one command)",
}
RL_COUNTS = (5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100)
# figure: two photographs, a crop of each (centre in photograph pixels, side)
FIGURE_CROPS = (
    ("lomiri-wallpapers-16.04__friends_by_Aitzol_Berasategi", (340, 380)),
    ("lomiri-wallpapers-20.04__Kleiber_by_Lukas_Baubkus", (620, 400)),
)
CROP = 176
_lock = threading.Lock()
SUBSET: int | None = None  # --subset N: reconstruct and score only the first N photographs (slow methods)


# --- data ------------------------------------------------------------------------------------


def make_kernel(name: str) -> np.ndarray:
    """``gaussian_r2``: sei's Gaussian_R2 (13x13, std 2); ``disk_r4``: a uniform disk of radius 4 (9x9)."""
    if name == "gaussian_r2":
        from sei.physics.kernels import gaussian_kernel

        return gaussian_kernel(2.0).numpy()
    radius = int(name.removeprefix("disk_r"))
    offsets = np.arange(-radius, radius + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.float64)
    return disk / disk.sum()


def valid_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'Valid' convolution of ``(C, H, W)`` by an odd ``(k, k)`` kernel: ``(C, H - k + 1, W - k + 1)``
    (scipy.signal.convolve2d(mode="valid") per channel; conv2d correlates, so the kernel is flipped)."""
    weight = kernel.flip(0, 1).to(x)[None, None].expand(x.shape[0], 1, *kernel.shape)
    return torch.nn.functional.conv2d(x[None], weight, groups=x.shape[0])[0]


def margin_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The region of a photograph that the valid blur by a ``size``-wide odd kernel covers."""
    m = size // 2
    return x[..., m : x.shape[-2] - m, m : x.shape[-1] - m]


def prepare_data() -> dict:
    """Kernels (.npy), measurements and cropped ground truths under WORK/data; deterministic, made once."""
    from sei.imageio import read_image, write_image
    from sei.physics import measurement_seed

    photos = sorted(HELD_OUT.glob("*.png"))
    if len(photos) < 10:
        sys.exit(f"{HELD_OUT} holds {len(photos)} photographs: run `python scripts/photo_pool.py` first")
    data = WORK / "data"
    for name in KERNELS:
        kernel_path = data / "kernels" / f"{name}.npy"
        kernel_path.parent.mkdir(parents=True, exist_ok=True)
        kernel = make_kernel(name)
        if not kernel_path.is_file():
            np.save(kernel_path, kernel)
        for photo in photos:
            measured, truth = data / name / "measured" / photo.name, data / name / "truth" / photo.name
            if measured.is_file() and truth.is_file():
                continue
            x = read_image(photo).double()
            blurred = valid_blur(x, torch.from_numpy(kernel))
            generator = torch.Generator().manual_seed(measurement_seed(f"own/{name}/{photo.stem}", SEED))
            noise = torch.randn(blurred.shape, generator=generator, dtype=torch.float64)
            write_image(
                (blurred + NOISE_LEVEL / 255 * noise).float(), measured
            )  # 8-bit PNG: clamped, rounded
            write_image(margin_crop(x, kernel.shape[0]).float(), truth)
    return {"photos": [p.name for p in photos], "data": str(data.relative_to(ROOT))}


def folder(kernel: str, what: str) -> Path:
    return WORK / "data" / kernel / what


def kernel_file(kernel: str) -> Path:
    return WORK / "data" / "kernels" / f"{kernel}.npy"


# --- metrics and results -----------------------------------------------------------------------


def score(estimates: Path, kernel: str) -> dict:
    """Per-image and mean Y-PSNR / SSIM of the PNGs in ``estimates`` against the cropped ground truths."""
    from sei.evaluation import image_metrics
    from sei.imageio import read_image

    images = {}
    truths = sorted(folder(kernel, "truth").glob("*.png"))
    if SUBSET:  # --subset: only the first images were reconstructed
        truths = truths[:SUBSET]
    for truth in truths:
        estimate = read_image(estimates / truth.name)
        reference = read_image(truth)
        if estimate.shape != reference.shape:
            raise RuntimeError(
                f"{estimates / truth.name}: {tuple(estimate.shape)}, expected {tuple(reference.shape)}"
            )
        psnr, ssim = image_metrics(estimate, reference)
        images[truth.stem] = {"psnr": round(psnr, 3), "ssim": round(ssim, 4)}
    return {
        "psnr": round(float(np.mean([v["psnr"] for v in images.values()])), 3),
        "ssim": round(float(np.mean([v["ssim"] for v in images.values()])), 4),
        "images": images,
    }


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"setup": {}, "cells": {}}


@contextlib.contextmanager
def _locked_results():
    """The results, to update in place, then written atomically; locked across threads and processes."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results()
        yield results
        from sei.runtime import atomic_write_text

        atomic_write_text(RESULTS, json.dumps(results, indent=1, sort_keys=True) + "\n")


def save_cell(key: str, cell: dict) -> None:
    with _locked_results() as results:
        results["cells"][key] = cell


def save_setup(setup: dict) -> None:
    with _locked_results() as results:
        results["setup"] = setup


def training_facts(run: Path) -> dict:
    """Steps done and the noise level used, from a ``sei train`` run folder."""
    facts = {}
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        facts["steps"] = int(rows[-1]["step"]) if rows else 0
    if (run / "config.json").is_file():
        facts["noise_level_used"] = json.loads((run / "config.json").read_text()).get("noise_level")
    return facts


# --- running sei -------------------------------------------------------------------------------


def sei(args: list[str], log: Path) -> tuple[int, float]:
    """Run ``sei ARGS`` with one thread, output appended to ``log``; (exit code, wall seconds)."""
    return run_sei(args, log, cwd=ROOT)


def reconstruct_cell(kernel: str, method: str, log: Path, out: Path, options: list[str]) -> dict:
    source = folder(kernel, "measured")
    if SUBSET:  # the first SUBSET measurements only, in a folder of their own
        subset = folder(kernel, f"measured_first{SUBSET}")
        subset.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*.png"))[:SUBSET]:
            if not (subset / path.name).exists():
                shutil.copyfile(path, subset / path.name)
        source = subset
    code, seconds = sei(["reconstruct", str(source), str(out), *options], log)
    if code != 0:
        raise RuntimeError(f"sei reconstruct failed (exit {code}); see {log}")
    cell = {"wall_s": round(seconds, 1), "command": "sei reconstruct in/ out/ " + " ".join(options)}
    return {**cell, "images_subset": SUBSET} if SUBSET else cell


NOISE_FLAGS = ["--noise_level", "auto"]  # the tool is never told the level


def run_cell(kernel: str, method: str) -> dict:
    base = WORK / "runs" / kernel / method
    if base.exists():
        shutil.rmtree(base)
    out, log = base / "out", base / "log.txt"
    kfile = str(kernel_file(kernel))
    noise = NOISE_FLAGS
    cell: dict = {"load_average_at_start": round(os.getloadavg()[0], 2), "threads": 1}
    if method == "measurement":
        return {**cell, "wall_s": 0.0, "command": "-", **score(folder(kernel, "measured"), kernel)}
    if method == "rl_oracle":
        return {**cell, **richardson_lucy_cell(kernel, out)}
    if method in ("wiener", "pnp"):
        cell.update(
            reconstruct_cell(kernel, method, log, out, ["--model_kind", method, "--kernel", kfile, *noise])
        )
        cell["noise_level"] = "auto"
    elif method == "shipped":
        cell.update(reconstruct_cell(kernel, method, log, out, ["--weights", "sei-gaussian_r2-noise5"]))
    elif method in ("finetune_5m", "scratch_10m"):
        limit = "5m" if method == "finetune_5m" else "10m"
        init = ["--init", "sei-gaussian_r2-noise5"] if method == "finetune_5m" else []
        train = [
            "train",
            "--measurements",
            str(folder(kernel, "measured")),
            "--kernel",
            kfile,
            *noise,
            *init,
            "--time_limit",
            limit,
            "--out_dir",
            str(base / "run"),
            "--quiet",
        ]
        code, train_s = sei(train, log)
        if code != 0:
            raise RuntimeError(f"sei train failed (exit {code}); see {log}")
        recon = reconstruct_cell(
            kernel, method, log, out, ["--weights", str(base / "run" / "weights.safetensors")]
        )
        cell.update(training_facts(base / "run"))
        cell.update(
            {
                "train_s": round(train_s, 1),
                "reconstruct_s": recon["wall_s"],
                "wall_s": round(train_s + recon["wall_s"], 1),
                "command": " ".join(["sei", *train[:1], "in/", *train[3:]]) + "; " + recon["command"],
                "noise_level": "auto",
            }
        )
    elif method == "restore_10m":
        code, seconds = sei(
            ["restore", str(folder(kernel, "measured")), str(out), "--kernel", kfile, "--time_limit", "10m"],
            log,
        )
        if code != 0:
            raise RuntimeError(f"sei restore failed (exit {code}); see {log}")
        cell.update(
            {
                "wall_s": round(seconds, 1),
                "command": "sei restore in/ OUT --kernel K.npy --time_limit 10m",
                "noise_level": "unknown (estimated by the command)",
                **training_facts(out / "run"),
            }
        )
        if (out / "summary.json").is_file():
            cell["summary"] = json.loads((out / "summary.json").read_text())
    return {**cell, **score(out, kernel)}


# --- Richardson-Lucy ---------------------------------------------------------------------------


def _same_convolution(image: torch.Tensor, spectrum: torch.Tensor, size: int) -> torch.Tensor:
    """scipy.signal.convolve(image, kernel, mode="same") of ``(C, H, W)`` (zero outside) by an odd
    ``size``-wide kernel given as ``rfft2(kernel, s=(H + size - 1, W + size - 1))``."""
    height, width = image.shape[-2:]
    shape = (height + size - 1, width + size - 1)
    full = torch.fft.irfft2(torch.fft.rfft2(image, s=shape) * spectrum, s=shape)
    top = (size - 1) // 2
    return full[..., top : top + height, top : top + width]


def richardson_lucy_path(
    y: torch.Tensor, kernel: torch.Tensor, counts: tuple[int, ...]
) -> dict[int, torch.Tensor]:
    """skimage.restoration.richardson_lucy (0.26: start at 0.5, ``filter_epsilon`` None, clip to [-1, 1] at
    the end) at several iteration counts in one pass; the same reflect padding as :func:`skimage_rl`."""
    pad = kernel.shape[0]
    padded = torch.nn.functional.pad(y[None], (pad,) * 4, mode="reflect")[0].double()
    shape = (padded.shape[-2] + pad - 1, padded.shape[-1] + pad - 1)
    forward, backward = (torch.fft.rfft2(k.double(), s=shape) for k in (kernel, kernel.flip(0, 1)))
    estimate = torch.full_like(padded, 0.5)
    snapshots = {}
    for iteration in range(1, max(counts) + 1):
        relative = padded / (_same_convolution(estimate, forward, pad) + 1e-12)
        estimate = estimate * _same_convolution(relative, backward, pad)
        if iteration in counts:
            snapshots[iteration] = estimate.clamp(-1, 1)[..., pad:-pad, pad:-pad].float()
    return snapshots


def skimage_rl(y: torch.Tensor, kernel: np.ndarray, iterations: int) -> torch.Tensor:
    from skimage.restoration import richardson_lucy

    pad = kernel.shape[0]
    padded = np.pad(y.double().numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = np.stack([richardson_lucy(channel, kernel, num_iter=iterations) for channel in padded])
    return torch.from_numpy(out[:, pad:-pad, pad:-pad]).float()


def richardson_lucy_cell(kernel_name: str, out: Path) -> dict:
    """Search the count on the ground truth (the oracle), then run scikit-image at it, timed."""
    from sei.evaluation import image_metrics
    from sei.imageio import read_image, write_image

    torch.set_num_threads(1)
    kernel = np.load(kernel_file(kernel_name))
    measured = sorted(folder(kernel_name, "measured").glob("*.png"))
    totals = dict.fromkeys(RL_COUNTS, 0.0)
    started = time.perf_counter()
    for path in measured:
        truth = read_image(folder(kernel_name, "truth") / path.name)
        for count, estimate in richardson_lucy_path(
            read_image(path), torch.from_numpy(kernel), RL_COUNTS
        ).items():
            totals[count] += image_metrics(estimate, truth)[0] / len(measured)
    search_s = time.perf_counter() - started
    best = max(totals, key=totals.get)
    started = time.perf_counter()
    for path in measured:
        write_image(skimage_rl(read_image(path), kernel, best), out / path.name)
    seconds = time.perf_counter() - started
    result = score(out, kernel_name)
    return {
        "wall_s": round(seconds, 1),
        "iterations": best,
        "search_s": round(search_s, 1),
        "search_psnr": {str(k): round(v, 3) for k, v in totals.items()},
        "command": f"skimage richardson_lucy(num_iter={best}) per channel, reflect-padded by the kernel size",
        "noise_level": "not used",
        **result,
    }


# --- report ------------------------------------------------------------------------------------


def table(results: dict) -> list[str]:
    cells = results["cells"]
    header = "| method | " + " | ".join(f"{k}: PSNR | SSIM | wall s" for k in KERNELS) + " |"
    lines = [header, "|---|" + "---:|---:|---:|" * len(KERNELS)]
    for method in METHODS:
        row = [LABELS[method]]
        for kernel in KERNELS:
            cell = cells.get(f"{kernel}/{method}")
            if cell:
                extra = f" ({cell['iterations']} it.)" if method == "rl_oracle" else ""
                if cell.get("images_subset"):
                    extra += f" ({cell['images_subset']} of 10 images)"
                row += [f"{cell['psnr']:.2f}{extra}", f"{cell['ssim']:.4f}", f"{cell['wall_s']:.0f}"]
            else:
                row += ["-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(results: dict) -> list[str]:
    cells = results["cells"]
    lines = []
    for kernel in KERNELS:
        one, rl, pnp = (cells.get(f"{kernel}/{m}") for m in ("restore_10m", "rl_oracle", "pnp"))
        if not one:
            lines.append(f"- {kernel}: `sei restore` not measured yet.")
            continue
        checks = [("wall time <= 600 s", one["wall_s"] <= 600, f"{one['wall_s']:.0f} s")]
        if rl:
            checks.append(
                (
                    ">= 2.5 dB above oracle RL",
                    one["psnr"] - rl["psnr"] >= 2.5,
                    f"{one['psnr'] - rl['psnr']:+.2f} dB",
                )
            )
        if pnp:
            # a PnP run on the first photographs only is compared on those same photographs
            ours = float(np.mean([one["images"][name]["psnr"] for name in pnp["images"]]))
            where = f", on its {len(pnp['images'])} photographs" if pnp.get("images_subset") else ""
            checks.append(
                (">= 0.5 dB above PnP", ours - pnp["psnr"] >= 0.5, f"{ours - pnp['psnr']:+.2f} dB{where}")
            )
        lines.append(
            f"- {kernel}: "
            + "; ".join(f"{what}: **{'met' if ok else 'missed'}** ({value})" for what, ok, value in checks)
        )
    return lines


def figure(results: dict) -> None:
    """Crops of two photographs, every measured method side by side, one row per (photo, kernel)."""
    from PIL import Image, ImageDraw

    methods = ["truth", *[m for m in METHODS if any(f"{k}/{m}" in results["cells"] for k in KERNELS)]]
    label_h, gap = 28, 4
    rows = [(kernel, stem, centre) for kernel in KERNELS for stem, centre in FIGURE_CROPS]
    sheet = Image.new("RGB", (len(methods) * (CROP + gap), len(rows) * (CROP + label_h + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (kernel, stem, (cx, cy)) in enumerate(rows):
        margin = make_kernel(kernel).shape[0] // 2
        box = (
            cx - margin - CROP // 2,
            cy - margin - CROP // 2,
            cx - margin + CROP // 2,
            cy - margin + CROP // 2,
        )
        for c, method in enumerate(methods):
            source = {"truth": folder(kernel, "truth"), "measurement": folder(kernel, "measured")}.get(
                method, WORK / "runs" / kernel / method / "out"
            ) / f"{stem}.png"
            x, y = c * (CROP + gap), r * (CROP + label_h + gap)
            cell = results["cells"].get(f"{kernel}/{method}")
            if source.is_file():
                sheet.paste(Image.open(source).convert("RGB").crop(box), (x, y + label_h))
            title = (
                method
                if method == "truth"
                else f"{method} {cell['images'][stem]['psnr']:.1f} dB"
                if cell and stem in cell["images"]
                else method
                if not cell
                else f"{method}: not run"
            )
            draw.text((x + 2, y + 2), title, fill="black")
            draw.text((x + 2, y + 14), kernel, fill="gray")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(FIGURE, quality=85, optimize=True)


BEGIN, END = "<!-- own_measurements.py: generated from the json, begin -->", "<!-- generated, end -->"


def generated(results: dict) -> list[str]:
    """The part of docs/own_measurements.md rewritten on every run: table, figure, targets."""
    lines = [
        BEGIN,
        "",
        *table(results),
        "",
        "![crops](figures/own_measurements.jpg)",
        "",
        "Crops of two photographs, one row per (PSF, photograph); titles: the whole image's PSNR.",
        "",
        "**Targets** of the one command (`sei restore`, noise level not given, at most 10 min on this",
        "2-core machine, >= 2.5 dB above the oracle Richardson-Lucy and >= 0.5 dB above PnP, on both PSFs):",
        "",
        *targets(results),
    ]
    return [*lines, "", END]


def write_doc(results: dict) -> None:
    """Replace the generated block of the doc (the hand-written text around it stays); a skeleton if none."""
    block = "\n".join(generated(results))
    if DOC.is_file() and BEGIN in DOC.read_text():
        text = DOC.read_text()
        DOC.write_text(text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :])
        return
    DOC.write_text(f"# Restoring your own measurements\n\n## Results\n\n{block}\n")


def report(results: dict) -> None:
    print("\n".join(table(results)))
    print("\n".join(targets(results)))
    figure(results)
    write_doc(results)
    print(
        f"wrote {FIGURE.relative_to(ROOT)} ({FIGURE.stat().st_size / 1e3:.0f} KB) and {DOC.relative_to(ROOT)}"
    )


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", action="append", default=[], choices=METHODS, help="run only this method (repeatable)"
    )
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    parser.add_argument("--force", action="store_true", help="run cells already in the json again")
    parser.add_argument("--jobs", type=int, default=2, help="trainings side by side (one thread each)")
    parser.add_argument(
        "--report", action="store_true", help="only print the table and write the figure and doc"
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=None,
        help=(
            "reconstruction cells only: the first N photographs (for a method too slow for all 10 in the "
            "time at hand)"
        ),
    )
    args = parser.parse_args()
    global SUBSET
    SUBSET = args.subset
    torch.set_num_threads(1)
    if not args.report:
        setup = prepare_data()
        setup.update(
            {
                "noise_level": NOISE_LEVEL,
                "seed": SEED,
                "kernels": {k: list(make_kernel(k).shape) for k in KERNELS},
                "boundary": "valid convolution; ground truth cropped by k // 2",
            }
        )
        save_setup(setup)
        done = load_results()["cells"]
        todo = [
            (k, m)
            for m in (args.only or METHODS)
            for k in args.kernels
            if args.force or f"{k}/{m}" not in done
        ]

        def job(kernel: str, method: str) -> None:
            try:
                cell = run_cell(kernel, method)
            except Exception as error:  # one failed cell must not stop the others
                print(f"{kernel}/{method}: FAILED: {error}", flush=True)
                return
            save_cell(f"{kernel}/{method}", cell)
            print(
                f"{kernel}/{method}: PSNR {cell['psnr']:.2f} dB, SSIM {cell['ssim']:.4f}, "
                f"{cell['wall_s']:.0f} s",
                flush=True,
            )

        for kernel, method in [(k, m) for k, m in todo if m not in TRAINED]:
            job(kernel, method)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for future in [pool.submit(job, k, m) for k, m in todo if m in TRAINED]:
                future.result()
    report(load_results())


if __name__ == "__main__":
    main()
