"""The reference to beat: deepinv's own SEI recipe, rebuilt on this machine, scored on our test images.

Recipe (as measured before this project existed): deepinv ``UNet(scales=3)`` (about 2.1 M
parameters, residual), ``SureGaussianLoss(sigma, tau=0.01) + EILoss(Scale(), no_grad=True)``,
Adam 5e-4 halved at 70% and 90% of the steps, batch 8 of 48x48 patches cut online from 256x256
tiles of the photo pool (blurred and noised online with deepinv's ``BlurFFT``), Gaussian_R2, noise
level 5, 1500 steps. Test PSNR on the 10 ``samples`` test photographs (fixed seeded measurements,
the same as ``sei test``) is logged against wall time, so that time to quality can be compared with
our runs. Writes benchmarks/results/anchor_deepinv.json.

    python benchmarks/anchor_deepinv.py [--steps 1500] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import deepinv as dinv
import torch

from sei.data import MeasuredImages, load_images
from sei.evaluation import image_metrics
from sei.physics import make_physics

HERE = Path(__file__).resolve().parent


def tiles(root: Path, size: int = 256) -> torch.Tensor:
    """Centre 256x256 tiles of the training photographs (short side resized to 256)."""
    crops = []
    for _, image in load_images(str(root), split="train", resize=size):
        top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
        crops.append(image[:, top : top + size, left : left + size])
    return torch.stack(crops)


def evaluate(model: torch.nn.Module, physics, measured: MeasuredImages) -> float:
    model.eval()
    scores = []
    with torch.no_grad():
        for index in range(len(measured)):
            _, x, y = measured[index]
            scores.append(image_metrics(model(y[None], physics)[0], x)[0])
    model.train()
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train_root", type=Path, default=HERE / "photo_pool")
    parser.add_argument("--eval_every", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    sigma = ours.sigma
    physics = dinv.physics.BlurFFT(
        img_size=(3, 48, 48),
        filter=ours.kernel.float()[None, None],
        noise_model=dinv.physics.GaussianNoise(sigma),
    )
    test_physics = ours  # the same circular blur; fixed measurements identical to `sei test`'s
    measured = MeasuredImages(list(load_images("samples", split="test")), test_physics, seed=0)
    model = dinv.models.UNet(in_channels=3, out_channels=3, scales=3, residual=True)
    parameters = sum(p.numel() for p in model.parameters())
    loss_sure = dinv.loss.SureGaussianLoss(sigma=sigma, tau=0.01)
    loss_ei = dinv.loss.EILoss(transform=dinv.transform.Scale(), no_grad=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(0.7 * args.steps), int(0.9 * args.steps)], gamma=0.5
    )
    pool = tiles(args.train_root)
    generator = torch.Generator().manual_seed(0)
    curve = []
    train_seconds = 0.0
    for step in range(1, args.steps + 1):
        started = time.perf_counter()
        chosen = torch.randint(len(pool), (8,), generator=generator)
        corners = torch.randint(0, 256 - 48 + 1, (8, 2), generator=generator)
        x = torch.stack(
            [
                pool[i, :, t : t + 48, s : s + 48]
                for i, (t, s) in zip(chosen.tolist(), corners.tolist(), strict=True)
            ]
        )
        y = physics(x)
        x_net = model(y, physics)
        loss = (
            loss_sure(y=y, x_net=x_net, physics=physics, model=model).mean()
            + loss_ei(x_net=x_net, physics=physics, model=model).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        train_seconds += time.perf_counter() - started
        if step % args.eval_every == 0 or step == args.steps:
            psnr = evaluate(model, test_physics, measured)
            curve.append({"step": step, "train_seconds": round(train_seconds, 1), "psnr": psnr})
            print(f"step {step:5d}  {train_seconds:7.0f} s  test PSNR {psnr:.2f} dB", flush=True)
            write(
                curve, parameters, args
            )  # after every evaluation: an interrupted run still leaves its curve


def write(curve: list[dict], parameters: int, args: argparse.Namespace) -> None:
    last = curve[-1]
    status = "" if last["step"] == args.steps else f" (interrupted at step {last['step']} of {args.steps})"
    markdown = (
        f"deepinv UNet(scales=3) ({parameters / 1e6:.2f} M parameters), SURE + EILoss(Scale), "
        f"{args.threads} thread(s){status}: test PSNR **{last['psnr']:.2f} dB** after {last['step']} steps "
        f"and {last['train_seconds']:.0f} s of training ({last['train_seconds'] / last['step']:.2f} "
        "s/step). Curve: "
        + ", ".join(f"{p['psnr']:.2f} dB at {p['train_seconds']:.0f} s" for p in curve)
        + "."
    )
    result = {
        "recipe": "deepinv UNet scales=3 + SureGaussianLoss + EILoss(Scale, no_grad)",
        "parameters": parameters,
        "threads": args.threads,
        "steps_planned": args.steps,
        "curve": curve,
        "markdown": markdown,
    }
    (HERE / "results" / "anchor_deepinv.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
