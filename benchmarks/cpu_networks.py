"""Which small network learns fastest on a CPU? Test PSNR after equal CPU-time budgets of SEI training.

Each candidate trains with the SEI loss (partial-SURE + scale equivariance) on 48x48 patches of
real photographs (scikit-image and sporco, shipped offline) for the same wall-clock budget on one
thread, and is evaluated on other photographs at a few checkpoints of that budget. The winner is
the default CPU model (``sei.models.DEFAULT_CPU_MODEL``).

    python benchmarks/cpu_networks.py --budget 150 --out benchmarks/results/cpu_networks.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sei.evaluation import image_metrics
from sei.models import create_model
from sei.physics import make_physics

TRAIN_IMAGES = [
    "skimage:astronaut",
    "skimage:coffee",
    "skimage:chelsea",
    "skimage:rocket",
    "sporco:barbara",
    "sporco:sail",
    "sporco:tulips",
]
TEST_IMAGES = ["sporco:kodim23", "sporco:monarch"]
CANDIDATES = ["unet-small", "dncnn-small", "swinir-tiny"]


def load_image(spec: str) -> torch.Tensor:
    """An RGB image in [0, 1], (3, H, W), from a package that ships it."""
    source, name = spec.split(":")
    if source == "skimage":
        from skimage import data

        array = getattr(data, name)()
    else:
        import importlib.util

        from PIL import Image

        folder = Path(next(iter(importlib.util.find_spec("sporco").submodule_search_locations))) / "data"
        array = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
    return torch.from_numpy(array[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def y_psnr(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """The paper's PSNR (sei.evaluation: luma of 8-bit quantised images) of one image ``(1, 3, H, W)``."""
    return image_metrics(estimate[0], reference[0])[0]


def sei_loss(physics):
    """SURE + scale-EI; sei.losses when it exists, else deepinv's recipe (same ranking of networks)."""
    try:
        from sei.losses import build_method

        method = build_method("proposed", physics)
        return "sei.losses", lambda model, y, rng: method(model, y, physics, rng=rng)["loss"]
    except ImportError:
        import deepinv as dinv

        sure = dinv.loss.SureGaussianLoss(sigma=physics.sigma, tau=0.01)
        ei = dinv.loss.EILoss(dinv.transform.Scale(), no_grad=True)

        def loss(model, y, rng):
            x_net = model(y, physics)
            return (
                sure(y=y, x_net=x_net, physics=physics, model=model)
                + ei(x_net=x_net, physics=physics, model=model)
            ).mean()

        return "deepinv SureGaussianLoss + EILoss(Scale)", loss


def sample_patches(pairs, size: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    patches = []
    for _ in range(batch):
        y = pairs[int(torch.randint(len(pairs), (1,), generator=gen))]
        top = int(torch.randint(y.shape[-2] - size + 1, (1,), generator=gen))
        left = int(torch.randint(y.shape[-1] - size + 1, (1,), generator=gen))
        patches.append(y[:, top : top + size, left : left + size])
    return torch.stack(patches)


def evaluate(model, physics, tests) -> float:
    model.eval()
    with torch.no_grad():
        scores = [y_psnr(model(y[None], physics), x[None]) for x, y in tests]
    model.train()
    return float(np.mean(scores))


def run_candidate(name, task, sr_factor, physics, train, tests, budget, checkpoints, lr):
    torch.manual_seed(0)
    model = create_model(name, task=task, sr_factor=sr_factor)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_label, loss_fn = sei_loss(physics)
    gen = torch.Generator().manual_seed(0)
    curve, elapsed, steps, step_times = [], 0.0, 0, []
    for checkpoint in checkpoints:
        while elapsed < checkpoint:
            y = sample_patches(train, 48, 8, gen)
            start = time.process_time()
            loss = loss_fn(model, y, gen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step = time.process_time() - start
            elapsed += step
            step_times.append(step)
            steps += 1
        curve.append(
            {
                "cpu_seconds": round(elapsed, 1),
                "steps": steps,
                "test_psnr": round(evaluate(model, physics, tests), 3),
            }
        )
        print(f"{task} {name}: {curve[-1]}", flush=True)
    return {
        "model": name,
        "params": params,
        "median_step_s": round(float(np.median(step_times)), 3),
        "curve": curve,
        "loss": loss_label,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget", type=float, default=150.0, help="CPU seconds of training per candidate and task"
    )
    parser.add_argument(
        "--tasks", default="deblurring,sr", help="comma-separated: deblurring (Gaussian_R2), sr (x2)"
    )
    parser.add_argument("--models", default=",".join(CANDIDATES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_networks.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
        "budget_cpu_s": args.budget,
        "train_images": TRAIN_IMAGES,
        "test_images": TEST_IMAGES,
        "runs": [],
    }
    if args.out.is_file():  # rerunning some candidates replaces their rows and keeps the others
        results["runs"] = json.loads(args.out.read_text())["runs"]
    for task in args.tasks.split(","):
        sr_factor = 2 if task == "sr" else None
        physics = make_physics(task, sr_factor=sr_factor, noise_level=5)
        train = [physics.measure(load_image(s)[None], seed=i)[0] for i, s in enumerate(TRAIN_IMAGES)]
        tests = []
        for i, spec in enumerate(TEST_IMAGES):
            x = load_image(spec)[:, 128:384, 256:512]  # a 256x256 crop keeps evaluation cheap
            tests.append((x, physics.measure(x[None], seed=100 + i)[0]))
        baseline = np.mean([y_psnr(physics.initial_estimate(y[None]), x[None]) for x, y in tests])
        print(f"{task}: input/up PSNR {baseline:.3f}", flush=True)
        lr = 2e-4 if task == "sr" else 1e-4
        lr *= 5  # short budgets: the paper's rates are for 50k steps
        checkpoints = [args.budget / 3, 2 * args.budget / 3, args.budget]
        for name in args.models.split(","):
            run = run_candidate(name, task, sr_factor, physics, train, tests, args.budget, checkpoints, lr)
            run.update(task=task, baseline_psnr=round(float(baseline), 3), lr=lr)
            results["runs"] = [r for r in results["runs"] if (r["task"], r["model"]) != (task, name)] + [run]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
