"""Train a network: the paper's methods on a dataset, or SEI on a folder of measurements only.

Configuration precedence: preset < --config FILE (TOML or YAML) < flags. The resolved
configuration is saved as OUT/config.json. Outputs: OUT/weights.safetensors (final, with metadata),
OUT/checkpoints/, OUT/metrics.csv, OUT/validation.csv, OUT/loss.png, OUT/tensorboard/ (--log;
watch with `tensorboard --logdir OUT`); `sei weights export OUT DIR` makes a shareable model folder.

examples:
  sei train --method proposed --task deblurring --kernel Gaussian_R2 --out_dir runs/sei_g2
  sei train --method sup --task sr --sr_factor 2 --max_steps 500 --out_dir runs/sup_x2
  sei train --method proposed --dataset div2k --download --device cuda:0 --preset paper --out_dir runs/paper
  sei train --measurements my_blurry_photos/ --kernel psf.npy --noise_level 3 --out_dir runs/mine
  sei train --measurements my_blurry_photos/ --kernel psf.npy --noise_level auto \\
            --init sei-gaussian_r2-noise5 --time_limit 5m
  sei train --resume runs/sei_g2                      # continue exactly where it stopped
  sei train --resume runs/sei_g2 --max_steps 4000     # train more (the schedule is re-planned for 4000 steps)
  torchrun --nproc_per_node 4 -m sei train --device cuda --preset paper --out_dir runs/ddp
  sei train --log csv --out_dir runs/no_tb           # metrics.csv only (no TensorBoard events)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from sei import problem
from sei.cli.degrade import add_physics_arguments
from sei.errors import SeiUserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sei.models import list_models

    add_physics_arguments(parser, auto_noise=True, noise_model=True)
    parser.set_defaults(task=None, noise_level=None)  # None: not given, the config file or preset decides
    parser.add_argument(
        "--method",
        default=None,
        help=f"training method: {problem.choices(problem.METHODS)} (default {problem.DEFAULT_METHOD}; "
        + ", ".join(f"{alias} is {name}" for alias, name in problem.METHODS.items() if alias != name)
        + ")",
    )
    parser.add_argument(
        "--no-stop_gradient",
        "--no-stop-gradient",
        dest="stop_gradient",
        action="store_false",
        default=None,
        help="let gradients flow through the transformed estimate",
    )
    parser.add_argument(
        "--alpha", type=float, default=None, help="weight of the equivariance term (default 1)"
    )
    parser.add_argument(
        "--sure_divergence",
        "--sure-divergence",
        choices=("exact", "finite-difference"),
        default=None,
        help=(
            "SURE's divergence: finite-difference (the paper's, default; validation warns if the network "
            "games it) or exact"
        ),
    )
    parser.add_argument(
        "--unsure",
        action="store_true",
        default=None,
        help=(
            "learn the noise level while training (UNSURE): --noise_level (a number or auto) is only the "
            "starting guess; the learned level is logged as noise_level in metrics.csv"
        ),
    )
    parser.add_argument(
        "--stop_on_gaming",
        "--stop-on-gaming",
        action="store_true",
        default=None,
        help=(
            "end training at the last validation before the network games SURE's finite difference (one "
            "process)"
        ),
    )
    parser.add_argument(
        "--dataset", default=None, help="div2k, urban100, ct, samples (default) or a folder of images"
    )
    parser.add_argument(
        "--measurements", default=None, help="train on a folder of measurements only (no ground truth)"
    )
    parser.add_argument(
        "--data_root",
        "--data-root",
        default=None,
        help="dataset folder (default $SEI_DATA_ROOT or ~/.cache/sei/data)",
    )
    parser.add_argument(
        "--download", action="store_true", default=None, help="download the dataset if it is missing"
    )
    parser.add_argument(
        "--resize",
        type=int,
        default=None,
        help="short side of training images (0 keeps native size; default 256)",
    )
    parser.add_argument(
        "--val_dataset",
        "--val-dataset",
        default=None,
        help="held-out images for validation (default: the test split of --dataset)",
    )
    parser.add_argument(
        "--val_images",
        "--val-images",
        type=int,
        default=None,
        help="how many held-out images to validate on (default 4; 0 disables)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"network name ({', '.join(list_models())}); default: the preset's",
    )
    parser.add_argument(
        "--init",
        default=None,
        help=(
            "start from these weights: a shipped or paper name, or a .safetensors file (fine-tuning; the "
            "network comes from its metadata)"
        ),
    )
    parser.add_argument(
        "--time_limit",
        "--time-limit",
        default=None,
        help="wall-clock budget, e.g. 90s, 10m, 1h30m: the step count is planned to fit it",
    )
    parser.add_argument(
        "--preset",
        choices=("cpu", "paper"),
        default=None,
        help=(
            "default hyper-parameters: cpu (fast network) or paper (SwinIR); default paper on CUDA, cpu "
            "otherwise"
        ),
    )
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument(
        "--max_steps",
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps (wins over --epochs)",
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, default=None)
    parser.add_argument(
        "--patch_size",
        "--patch-size",
        type=int,
        default=None,
        help="patch side in measurement pixels (default 48)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default: paper's per task, or the CPU preset's)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--checkpoint_interval",
        "--checkpoint-interval",
        type=int,
        default=None,
        help="steps between checkpoints",
    )
    parser.add_argument(
        "--val_interval", "--val-interval", type=int, default=None, help="steps between validations"
    )
    parser.add_argument("--num_workers", "--num-workers", type=int, default=None)
    parser.add_argument(
        "--amp",
        choices=("auto", "none", "bf16", "fp16"),
        default=None,
        help="mixed precision of the network passes (default auto: bf16 on CPUs with native bf16)",
    )
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    parser.add_argument("--config", type=Path, default=None, help="a TOML or YAML file of configuration keys")
    parser.add_argument(
        "--out_dir", "--out-dir", type=Path, default=None, help="run folder (default runs/<method>_<task>)"
    )
    parser.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from a checkpoint file or run folder (default: --out_dir)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out_dir")
    parser.add_argument(
        "--log",
        default=None,
        metavar="BACKENDS",
        help=(
            "run log: csv, tensorboard, both (csv,tensorboard; the default) or none; TensorBoard events go "
            "to OUT/tensorboard/"
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SeiUserError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise SeiUserError(f"config file {path} must end in .toml, .yaml or .yml")
    except SeiUserError:
        raise
    except Exception as error:
        raise SeiUserError(f"cannot parse {path}: {error}") from error
    if not isinstance(data, dict):
        raise SeiUserError(f"{path} must hold a table of configuration keys")
    return data


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """Layer the config file and the flags that were given (flags win)."""
    from sei.training.config import TrainConfig

    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if values.get("resize") == 0:
        values["resize"] = None
    if values.get("measurements") and "dataset" in values:
        raise SeiUserError("give either --dataset or --measurements, not both")
    return values


def check_resume_flags(values: dict[str, Any], checkpoint: dict[str, Any], source: str) -> None:
    """A resumed run continues with its own configuration: a flag that would change it is refused
    (never dropped silently); the budget, the device and the workers may change."""
    from sei.physics.state import check_kernel
    from sei.training.config import RESUME_OVERRIDES

    stored = checkpoint["config"]
    for name, value in values.items():
        if name in RESUME_OVERRIDES or name in ("config",):
            continue
        if name == "kernel" and "physics" in checkpoint and "kernel" in checkpoint["physics"]["tensors"]:
            check_kernel(
                checkpoint["physics"]["tensors"]["kernel"], value, source
            )  # the same PSF by value passes
            continue
        if name in stored and _same(stored[name], value):
            continue
        flag = name if name in stored else f"{name} (not part of the run's configuration)"
        raise SeiUserError(
            f"--{flag} {value} differs from the resumed run's {stored.get(name)!r}; a resumed run keeps its "
            f"configuration (only {', '.join('--' + n for n in RESUME_OVERRIDES)} may change): drop the "
            "flag, or start a new run from its weights with --init "
            f"{Path(source).parent.parent / 'weights.safetensors'}"
        )


def _same(stored: Any, given: Any) -> bool:
    if isinstance(stored, list) and isinstance(given, tuple | list):
        return [float(v) for v in stored] == [float(v) for v in given]
    if isinstance(stored, int | float) and isinstance(given, int | float) and not isinstance(given, bool):
        return float(stored) == float(given)
    return stored == given


def run(args: argparse.Namespace) -> int:
    """Flags and config file -> a :class:`~sei.training.config.TrainConfig`, resolved here once (presets,
    the resumed run's configuration, ``--init``'s network, every check) before any work; the training
    loop consumes the result."""
    from sei.training.checkpoint import latest_checkpoint, load_checkpoint
    from sei.training.config import RESUME_OVERRIDES, TrainConfig, run_config
    from sei.training.loop import train

    values = build_config(args)
    out_dir = args.out_dir
    checkpoint = None
    if args.resume is not None:
        location = Path(args.resume) if args.resume != "auto" else out_dir
        if location is None:
            raise SeiUserError("--resume needs a run folder or checkpoint file (or --out_dir)")
        path = latest_checkpoint(location)
        if path is None:
            raise SeiUserError(f"nothing to resume in {location}: no checkpoint found")
        checkpoint = load_checkpoint(path)
        check_resume_flags(values, checkpoint, str(path))
        if out_dir is None:
            out_dir = location if location.is_dir() else location.parent.parent  # OUT/checkpoints/step_N.pt
        given = TrainConfig.from_dict({k: v for k, v in values.items() if k in RESUME_OVERRIDES})
    else:
        if "preset" not in values:
            values["preset"] = "paper" if str(values.get("device", "cpu")).startswith("cuda") else "cpu"
        given = TrainConfig.from_dict(values)
        out_dir = out_dir or Path("runs") / f"{given.method}_{given.task}"
    config = run_config(given, checkpoint)  # fails before any data or weights are touched
    from sei.run_log import DEFAULT, parse_backends

    log = parse_backends(args.log or DEFAULT)  # a misspelt backend fails before any work
    state = train(
        config, out_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, log=log
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if state.validation:
        last = state.validation[-1]
        print(
            f"validation at step {last['step']}: "
            f"{', '.join(f'{k} {v:.4g}' for k, v in last.items() if k != 'step')}"
        )
    if "noise_level" in state.last_terms:
        print(
            f"noise level learned by UNSURE: {state.last_terms['noise_level']:.3g} (8-bit units; an "
            "estimate from above)"
        )
    kept = f" (stopped on gaming: the weights of step {state.step})" if state.stopped_early else ""
    timed = " (the time limit was reached)" if state.out_of_time else ""
    print(f"trained {state.step} steps{kept}{timed}; weights: {out_dir / 'weights.safetensors'}")
    return 0
