"""One SEI training step (partial SURE + scale equivariance, stop-gradient): ours against deepinv's recipe.

Same network (deepinv UNet(3, 3, scales=3, batch_norm=False, channels_per_scale=[32, 64, 128]), a small
residual UNet), batch 8 of 48x48
Gaussian_R2 deblurring patches of scikit-image's astronaut, forward + backward, medians of interleaved
repeats. Forms:

- ``bare``: the network passes SEI needs and nothing else: f(y), f(y + tau b), f(y2) on precomputed
  inputs, then the backward of the sum of their means (no physics, no transform, no loss maths);
- ``deepinv``: ``SureGaussianLoss`` + ``EILoss(Scale(), no_grad=True)``;
- ``ours``: ``sei.losses.build_method("proposed", ...)``, with each speed lever and their combinations:
  ``batched`` (f(y) and f(y + tau b) as one batch of 2B), ``bf16`` (bfloat16 autocast of the network),
  ``channels_last`` (network inputs in channels-last format), ``compile`` (torch.compile of the network);
  each next to the bare passes under the same lever.

Then a short training (Adam, same seed and data) for float32 and every lever that pays, and the test
PSNR of each. Writes benchmarks/results/sei_step.json and prints a table.

    python benchmarks/sei_step.py [--threads 1] [--repeats 9] [--train-steps 200] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch

from _timing import median_seconds
from sei.evaluation import psnr
from sei.losses import build_method
from sei.physics import make_physics

BATCH, PATCH = 8, 48
PLAIN = {"batched_sure_passes": False, "autocast_dtype": None, "channels_last": False}
LEVERS: dict[str, dict] = {
    name: PLAIN | options
    for name, options in {
        "": {},
        "batched": {"batched_sure_passes": True},
        "bf16": {"autocast_dtype": torch.bfloat16},
        "channels_last": {"channels_last": True},
        "batched+bf16": {"batched_sure_passes": True, "autocast_dtype": torch.bfloat16},
        "bf16+channels_last": {"autocast_dtype": torch.bfloat16, "channels_last": True},
        "batched+bf16+channels_last": {
            "batched_sure_passes": True,
            "autocast_dtype": torch.bfloat16,
            "channels_last": True,
        },
    }.items()
}
CHANNELS = [32, 64, 128]  # 0.5 M parameters: a step takes seconds on one shared core


def astronaut() -> torch.Tensor:
    from skimage import data

    return torch.from_numpy(data.astronaut().astype(np.float32) / 255).permute(2, 0, 1).contiguous()


def patches(
    image: torch.Tensor, count: int, generator: torch.Generator, rows: tuple[int, int]
) -> torch.Tensor:
    """``count`` random PATCHxPATCH crops whose top rows lie in ``rows``."""
    tops = torch.randint(rows[0], rows[1] - PATCH, (count,), generator=generator).tolist()
    lefts = torch.randint(0, image.shape[-1] - PATCH, (count,), generator=generator).tolist()
    return torch.stack([image[:, t : t + PATCH, s : s + PATCH] for t, s in zip(tops, lefts, strict=True)])


def make_network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return dinv.models.UNet(3, 3, scales=3, batch_norm=False, channels_per_scale=CHANNELS)


def bare_step(
    net: torch.nn.Module,
    inputs: list[torch.Tensor],
    batched_sure_passes: bool | None = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Callable[[], None]:
    """f(y), f(y + tau b), f(y2) on fixed inputs and the backward of the sum of their means."""
    if channels_last:
        inputs = [tensor.contiguous(memory_format=torch.channels_last) for tensor in inputs]

    def step() -> None:
        with torch.autocast(
            "cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ):
            if batched_sure_passes:
                outputs = [net(torch.cat(inputs[:2])), net(inputs[2])]
            else:
                outputs = [net(tensor) for tensor in inputs]
        sum(out.float().mean() for out in outputs).backward()
        net.zero_grad(set_to_none=True)

    return step


def ours_step(net: torch.nn.Module, y: torch.Tensor, physics, **levers) -> Callable[[], None]:
    objective = build_method("proposed", physics, **levers)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        objective(net, y, physics, rng=generator)["loss"].backward()
        net.zero_grad(set_to_none=True)

    return step


def deepinv_step(net: torch.nn.Module, y: torch.Tensor, physics) -> Callable[[], None]:
    sure = dinv.loss.SureGaussianLoss(sigma=physics.sigma, tau=0.01)
    ei = dinv.loss.EILoss(dinv.transform.Scale(), no_grad=True)

    def step() -> None:
        x_net = net(y, physics)
        loss = (
            sure(y=y, x_net=x_net, physics=physics, model=net).mean()
            + ei(x_net=x_net, physics=physics, model=net).mean()
        )
        loss.backward()
        net.zero_grad(set_to_none=True)

    return step


def patch_psnr(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """sei.evaluation's PSNR of the clamped estimate on RGB, over the whole batch of 16-pixel test
    patches, not quantised: the levers are compared with each other on small patches (too small for the
    paper's per-image protocol, whose SSIM needs 11 pixels of valid window), not with the paper."""
    return psnr(estimate.clamp(0, 1), target)


def split(image: torch.Tensor, physics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed training measurements (top rows of the image) and held-out test pairs (bottom rows)."""
    generator = torch.Generator().manual_seed(1)
    train_x = patches(image, 64, generator, (0, 320))
    test_x = patches(image, 16, generator, (352, image.shape[-2]))
    return physics(train_x, rng=generator), test_x, physics(test_x, rng=generator)


def train_psnr(image: torch.Tensor, physics, steps: int, seed: int, **levers) -> float:
    """Train from the same initialisation on the same measurements; PSNR on held-out patches."""
    train_y, test_x, test_y = split(image, physics)
    net = make_network(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    objective = build_method("proposed", physics, **levers)
    rng = torch.Generator().manual_seed(2 + seed)
    for _ in range(steps):
        index = torch.randint(0, len(train_y), (BATCH,), generator=rng)
        objective(net, train_y[index], physics, rng=rng)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        return patch_psnr(net(test_y), test_x)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="2 only if the machine is quiet")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile lever (slow to compile)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image = astronaut()
    physics = make_physics("deblurring", kernel="Gaussian_R2", noise_level=5)
    generator = torch.Generator().manual_seed(0)
    x = patches(image, BATCH, generator, (0, image.shape[-2]))
    y = physics(x, rng=generator)
    net = make_network(0)
    with torch.no_grad():
        probe_input = y + 0.01 * torch.randn(y.shape, generator=generator)
        y2 = physics(dinv.transform.Scale()(net(y)), rng=generator)
    inputs = [y, probe_input, y2]

    steps: dict[str, Callable[[], None]] = {"deepinv": deepinv_step(net, y, physics)}
    for lever, options in LEVERS.items():
        steps[f"bare {lever}".strip()] = bare_step(net, inputs, **options)
        steps[f"ours {lever}".strip()] = ours_step(net, y, physics, **options)
    steps["ours, build_method defaults"] = ours_step(net, y, physics)
    compile_seconds = None
    if not args.no_compile:
        compiled = torch.compile(copy.deepcopy(net))
        start = time.perf_counter()
        bare_step(compiled, inputs)()
        ours_step(compiled, y, physics, **PLAIN)()
        compile_seconds = time.perf_counter() - start
        steps["bare compile"] = bare_step(compiled, inputs)
        steps["ours compile"] = ours_step(compiled, y, physics, **PLAIN)
    times = median_seconds(steps, repeats=args.repeats, warmup=2)

    deepinv_time, bare_time = times["deepinv"], times["bare"]
    rows = [
        {
            "form": name,
            "median_ms": 1e3 * seconds,
            "speedup_vs_deepinv": deepinv_time / seconds,
            "ratio_to_bare": seconds / bare_time,
        }
        for name, seconds in times.items()
    ]
    print(f"{'form':<32}{'median ms':>11}{'vs deepinv':>12}{'/ bare fp32':>13}")
    for row in rows:
        print(
            f"{row['form']:<32}{row['median_ms']:>11.1f}{row['speedup_vs_deepinv']:>11.2f}x{row['ratio_to_bare']:>13.2f}"
        )
    overhead = {
        lever or "fp32": times[f"ours {lever}".strip()] / times[f"bare {lever}".strip()] for lever in LEVERS
    }
    if not args.no_compile:
        overhead["compile"] = times["ours compile"] / times["bare compile"]
    print("ours / bare under the same lever:", {k: round(v, 3) for k, v in overhead.items()})

    accuracy = {}
    if args.train_steps > 0:
        # float32 twice (the seed-to-seed spread is the yardstick), bf16 alone and the fastest lever set:
        # batching and memory format only reorder float32 sums
        # (test_batched_and_channels_last_match_the_plain_passes), bf16 rounds.
        fastest = min((k for k in LEVERS if k), key=lambda k: times[f"ours {k}"])
        configs = {"float32": (PLAIN, 0), "float32, other init": (PLAIN, 1)}
        configs |= {k: (LEVERS[k], 0) for k in dict.fromkeys(["bf16", fastest])}
        for name, (options, seed) in configs.items():
            accuracy[name] = train_psnr(image, physics, args.train_steps, seed, **options)
        _, test_x, test_y = split(image, physics)
        accuracy["input y (no training)"] = patch_psnr(test_y, test_x)
        print(f"test PSNR after {args.train_steps} steps:", {k: round(v, 2) for k, v in accuracy.items()})

    result = {
        "network": f"deepinv.models.UNet(3, 3, scales=3, batch_norm=False, channels_per_scale={CHANNELS})",
        "batch": [BATCH, 3, PATCH, PATCH],
        "task": "deblurring Gaussian_R2, noise_level 5",
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "deepinv": dinv.__version__,
        "compile_seconds": compile_seconds,
        "rows": rows,
        "ours_over_bare_same_lever": overhead,
        "train_steps": args.train_steps,
        "test_psnr": {k: (None if math.isnan(v) else v) for k, v in accuracy.items()},
    }
    out = Path(__file__).parent / "results" / "sei_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
