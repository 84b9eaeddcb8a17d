"""Ship trained runs as the package's pretrained models and write their model card.

Copies ``RUN/weights.safetensors`` to ``src/sei/pretrained/<name>.safetensors`` for each finished
run, evaluates each shipped model by name (offline, as a user would) on the 10 test photographs of
``samples``, and writes docs/model_card.md with the training facts from the run folder.

The facts of each shipped model (training seconds, flags, training data) are kept in
``src/sei/pretrained/TRAINING.json`` (not packaged), so that models shipped earlier, whose run folders
are gone, keep their rows of the model card when another model is re-shipped.

    python scripts/ship_models.py                 # runs under benchmarks/work/shipped/
    python scripts/ship_models.py --only sei-gaussian_r2-noise5   # re-ship one, keep the others
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
from pathlib import Path

import torch

from sei.data import MeasuredImages, load_images
from sei.evaluation import SSIM_IMPLEMENTATION, Evaluation, image_metrics
from sei.inference import load_reconstructor
from sei.physics.noise import peak_photons
from sei.weights import PRETRAINED, PRETRAINED_DIR

ROOT = Path(__file__).resolve().parents[1]  # the repository
RUNS = {
    "sei-gaussian_r2-noise5": "gaussian_r2",
    "sei-box_r3-noise5": "box_r3",
    # the 30-photon starting point of benchmarks/low_light.py (its pretrained(30)), copied to shipped/
    "sei-gaussian_r2-photon30": "gaussian_r2_photon30",
    "sei-sr_x2-noise5": "sr_x2",
    "sei-sr_x4-noise5": "sr_x4",
}
FACTS = PRETRAINED_DIR / "TRAINING.json"
CONFIG_KEYS = (
    "batch_size",
    "patch_size",
    "lr",
    "seed",
    "max_steps",
    "stop_on_gaming",
    "sure_divergence",
    "dataset",
)


def load_facts() -> dict:
    return json.loads(FACTS.read_text()) if FACTS.exists() else {}


def training_data(dataset: str | None) -> str:
    """What the run trained on, from the pool's manifest (scripts/photo_pool.py) when there is one."""
    manifest_path = ROOT / str(dataset) / "manifest.json"
    if not dataset or not manifest_path.is_file():
        return str(dataset)
    manifest = json.loads(manifest_path.read_text())
    held = len(manifest.get("held_out", []))
    text = (
        f"{len(manifest['tiles'])} tiles from {manifest['photos']} photographs "
        f"(pool format {manifest['settings']['format']}"
    )
    return text + (
        f"; the {held} held-out photographs of docs/own_measurements.md left out)" if held else ")"
    )


def run_facts(folder: Path) -> dict:
    """Training facts of a finished run folder."""
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    seconds = None
    if (folder / "metrics.csv").exists():
        with open(folder / "metrics.csv") as handle:
            seconds = round(float(list(csv.DictReader(handle))[-1]["seconds"]))
    return {
        "train_seconds": seconds,
        "config": {k: config.get(k) for k in CONFIG_KEYS},
        "training_data": training_data(config.get("dataset")),
    }


def write_checksums() -> None:
    """``pretrained/SHA256SUMS``: what sei.weights checks a shipped file against before loading it."""
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
        for path in sorted(PRETRAINED_DIR.glob("*.safetensors"))
    ]
    (PRETRAINED_DIR / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def evaluate(name: str) -> tuple[dict, dict, dict]:
    loaded = load_reconstructor(name, None, None, None, None, None, torch.device("cpu"))
    physics = loaded.physics
    measured = MeasuredImages(list(load_images("samples", split="test")), physics, seed=0)
    model, baseline = Evaluation(), Evaluation()
    for index in range(len(measured)):
        identity, x, y = measured[index]
        with torch.no_grad():
            estimate = loaded.reconstruct(y[None])[0]
        model.add(identity, *image_metrics(estimate, x))
        shown = physics.initial_estimate(y[None])[0]
        baseline.add(identity, *image_metrics(shown, x))
    return model.summary(), baseline.summary(), loaded.description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "work" / "shipped")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(RUNS),
        help="ship only this run (repeatable); the other models stay as they are, with their facts",
    )
    args = parser.parse_args()
    rows, facts = [], load_facts()
    for name, folder in RUNS.items():
        source = args.runs / folder / "weights.safetensors"
        if source.exists() and (not args.only or name in args.only):
            PRETRAINED_DIR.mkdir(exist_ok=True)
            shutil.copyfile(source, PRETRAINED[name].path)
            facts[name] = run_facts(args.runs / folder)
            FACTS.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        if not PRETRAINED[name].path.exists():
            continue
        write_checksums()
        summary, baseline, metadata = evaluate(name)
        known = facts.get(name, {})
        config = known.get("config", {})
        seconds = "" if known.get("train_seconds") is None else str(known["train_seconds"])
        size_mb = PRETRAINED[name].path.stat().st_size / 1e6
        rows.append((name, metadata, config, summary, baseline, seconds, size_mb, known.get("training_data")))
        print(
            f"{name}: PSNR {summary['psnr_mean']:.2f} dB (input {baseline['psnr_mean']:.2f}), SSIM "
            f"{summary['ssim_mean']:.4f}"
        )
    lines = [
        "# Model card: the shipped SEI models",
        "",
        "Small networks trained with **SEI** (partial SURE + scale equivariance, stop-gradient) on "
        "measurements",
        "only, on a 2-core CPU. They ship inside the package (`src/sei/pretrained/`) and load by name with "
        "no",
        "download: `sei reconstruct in.png out.png --weights sei-gaussian_r2-noise5`.",
        "",
        "| name | task | network | steps | train CPU s | size | test PSNR | input PSNR | gain | test SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, metadata, _, summary, baseline, seconds, size_mb, _ in rows:
        task = metadata.get("kernel") or f"SR x{metadata.get('sr_factor')}"
        noise = f"noise {metadata.get('noise_level'):g}"
        if metadata.get("noise_model") == "poisson-gaussian":
            noise = (
                f"Poisson-Gaussian, {peak_photons(metadata['gain']):g} photons (gain {metadata['gain']:g}), "
                f"read noise {metadata.get('noise_level'):g}"
            )
        lines.append(
            f"| `{name}` | {task}, {noise} | {metadata['model']['name']} | "
            f"{metadata.get('steps')} | {seconds} | {size_mb:.1f} MB | {summary['psnr_mean']:.2f} ± "
            f"{summary['psnr_std']:.2f} | {baseline['psnr_mean']:.2f} | "
            f"{summary['psnr_mean'] - baseline['psnr_mean']:+.2f} | {summary['ssim_mean']:.4f} |"
        )
    example = rows[0][2] if rows else {}
    lines += [
        "",
        "- **Training data**: the offline DIV2K-like pool of Debian wallpaper photographs",
        "  (`scripts/photo_pool.py`, attribution generated there), tiles of short side 256; one fixed noisy",
        "  measurement per image; the ground truth was never used by the loss. Per model:",
        *[f"  - `{name}`: {data}" for name, *_, data in rows if data],
        f"- **Recipe**: batch {example.get('batch_size')} of "
        f"{example.get('patch_size')}x{example.get('patch_size')} measurement patches, Adam lr "
        f"{example.get('lr')}, constant for half of the steps then linear decay to 1%, seed "
        f"{example.get('seed')}, bf16 autocast of the network passes (the CPU default, `--amp auto`). "
        "Reproduce with the `sei train` line in",
        "  each run's `config.json` (`benchmarks/work/shipped/<run>/`).",
        "- **Test**: the 10 photographs of the `samples` test split (sporco barbara, kodim23, monarch, "
        "sail, tulips;",
        "  scikit-image astronaut, coffee, chelsea; scikit-learn china, flower), short side 256, seeded "
        "measurements;",
        "  input PSNR is the blurry image (deblurring) or its bicubic upsampling (SR).",
        f"- **Metric**: Y-PSNR after 8-bit quantisation, no shaving; SSIM: {SSIM_IMPLEMENTATION}.",
        "- **Limits**: trained for one blur (or bicubic SR) at one noise level; other kernels or noise "
        "levels need",
        "  retraining (`sei train --measurements` needs only degraded images). Circular-blur training; "
        "real photos",
        "  blurred at their borders may show border artefacts. Not the paper's SwinIR: see docs/results.md.",
        "- **Licence**: the weights are BSD-3-Clause like the code.",
    ]
    for name, metadata, config, *_ in rows:
        if config.get("stop_on_gaming"):
            lines.append(
                f"- **`{name}`** was trained with `--stop_on_gaming` (at most {config.get('max_steps')} "
                f"steps): it kept the weights of step {metadata.get('steps')}, the last validation before "
                "the network began to game SURE's finite-difference divergence (measured on training "
                "measurements; docs/methods.md, defect 8)."
            )
    (ROOT / "docs" / "model_card.md").write_text("\n".join(lines) + "\n")
    print("wrote docs/model_card.md")


if __name__ == "__main__":
    main()
