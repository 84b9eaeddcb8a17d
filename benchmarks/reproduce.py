"""Reproduce the paper's claim at CPU scale: every method, same network, same budget, same test images.

Trains each run of the grid with ``sei train`` (in its own folder, resumed if interrupted), tests it
with ``sei test`` on the 10 held-out photographs of the ``samples`` test split, runs the
training-free baselines on the same images, and appends one record per run to
``benchmarks/results/reproduce.json``. Runs already recorded are skipped, so the script can be
stopped and restarted at any time. ``benchmarks/report.py`` turns the records into docs/results.md.

    python benchmarks/reproduce.py                       # the whole grid, 2 jobs at a time
    python benchmarks/reproduce.py --only gaussian_r2    # runs whose key contains a pattern
    python benchmarks/reproduce.py --anchor deepinv      # also deepinv's own recipe, side by side
    python benchmarks/reproduce.py --list                # show the grid and what is done

Training data: the DIV2K-like offline photo pool (``scripts/photo_pool.py`` builds it).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _timing import run_sei
from sei.runtime import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "reproduce.json"
WORK = HERE / "work" / "reproduce"
METHODS = ("sup", "proposed", "css", "ei-shift", "ei-rotate", "sure")


@dataclass
class Run:
    """One cell of the grid: a trained method or a training-free baseline on one task."""

    task: str
    kernel: str | None = None
    sr_factor: int | None = None
    method: str | None = None  # a training method, or None for a baseline
    model_kind: str | None = None  # a training-free baseline
    stop_gradient: bool = True
    # the grid keeps the paper's estimator; "exact" runs are the ablation of sei.losses.SureLoss's fix
    sure_divergence: str = "finite-difference"
    steps: int = 0
    extra: dict = field(default_factory=dict)
    # the reviewer's studies (grid "review"): a named study, a seed, a network, training-config keys
    study: str | None = None
    seed: int = 0
    model: str | None = None  # None: --model
    config: dict = field(default_factory=dict)  # extra `sei train --config` keys (the transform ablation)
    val_interval: int | None = None  # None: steps // 8
    pool: str | None = None  # None: the whole --train_root; "half": every other photograph of it (pool_half)

    @property
    def label(self) -> str:
        return (self.kernel or f"SR_x{self.sr_factor}").lower()

    @property
    def key(self) -> str:
        what = self.method or self.model_kind
        suffix = ("" if self.stop_gradient else "-no_stop_gradient") + (
            "-exact_divergence" if self.sure_divergence == "exact" else ""
        )
        key = f"{self.label}/{what}{suffix}" + (f"@{self.steps}" if self.method else "")
        if self.study is None:
            return key
        tags = (
            [f"s{self.seed}"]
            + ([self.model] if self.model else [])
            + ([f"pool={self.pool}"] if self.pool else [])
        )
        tags += [f"{k}={v}" for k, v in sorted(self.config.items())]
        return f"{self.study}:{key}#" + ",".join(tags)

    def task_flags(self) -> list[str]:
        flags = ["--task", self.task]
        flags += (
            ["--kernel", self.kernel] if self.task == "deblurring" else ["--sr_factor", str(self.sr_factor)]
        )
        return flags + ["--noise_level", "5"]


def grid(steps: int) -> list[Run]:
    blur = {"task": "deblurring", "kernel": "Gaussian_R2"}
    sr2 = {"task": "sr", "sr_factor": 2}
    runs = [Run(**problem, method=m, steps=steps) for problem in (blur, sr2) for m in METHODS]
    for problem in ({"task": "deblurring", "kernel": k} for k in ("Gaussian_R1", "Gaussian_R3", "Box_R3")):
        runs += [Run(**problem, method=m, steps=steps) for m in ("sup", "proposed")]
    runs += [Run(task="sr", sr_factor=4, method=m, steps=steps) for m in ("sup", "proposed")]
    runs.append(Run(**blur, method="proposed", stop_gradient=False, steps=steps))
    runs += [Run(**sr2, method=m, sure_divergence="exact", steps=steps) for m in ("proposed", "sure")]
    runs.append(Run(**blur, method="proposed", sure_divergence="exact", steps=steps))
    for problem in (
        blur,
        {"task": "deblurring", "kernel": "Gaussian_R1"},
        {"task": "deblurring", "kernel": "Gaussian_R3"},
        {"task": "deblurring", "kernel": "Box_R3"},
    ):
        runs += [Run(**problem, model_kind=k) for k in ("id", "wiener", "pnp", "bm3d", "dip")]
    for factor in (2, 4):
        runs += [Run(task="sr", sr_factor=factor, model_kind=k) for k in ("up", "wiener", "pnp", "dip")]
    return runs


def review_grid() -> list[Run]:
    """The studies a reviewer asks for, in the order they run (the most telling first; 1000-6000 steps where
    the issue asks for more: what fits this 2-core machine in a session): seeds of the key
    cells, supervised to convergence, the capacity question on a larger network, the harder blurs, and
    the scale transform's own settings. Every run uses the current photo pool."""
    blur = {"task": "deblurring", "kernel": "Gaussian_R2"}
    sr2 = {"task": "sr", "sr_factor": 2}
    key_methods = ("sup", "proposed", "ei-shift", "ei-rotate", "css")
    equivariant = ("proposed", "ei-shift", "ei-rotate")
    runs = [
        Run(**blur, method=m, steps=600, seed=s, study="seeds") for s in (0, 1, 2) for m in key_methods[:-1]
    ]
    runs += [Run(**blur, method="css", steps=600, seed=s, study="seeds") for s in (0, 1, 2)]
    runs.append(Run(**blur, method="sup", steps=6000, val_interval=500, study="converge"))
    for model in ("unet-base", "unet-small"):
        runs += [Run(**blur, method=m, steps=1000, model=model, study="capacity") for m in equivariant]
    runs += [
        Run(task="deblurring", kernel=kernel, method=m, steps=1000, study="harder")
        for kernel in ("Gaussian_R3", "Box_R3")
        for m in equivariant
    ]
    runs += [Run(**sr2, method=m, steps=600, seed=s, study="seeds") for s in (0, 1, 2) for m in key_methods]
    runs.append(Run(**sr2, method="sup", steps=6000, val_interval=500, study="converge"))
    # the larger network's own ceiling: what any loss could reach with it on this pool
    runs.append(Run(**blur, method="sup", steps=6000, val_interval=500, model="unet-base", study="converge"))
    # is the pool the limit? SEI on half the photographs against the whole pool (capacity's seed 0 and a
    # seed 1), at the capacity study's budget
    runs.append(Run(**blur, method="proposed", steps=1000, seed=1, model="unet-small", study="capacity"))
    runs += [
        Run(**blur, method="proposed", steps=1000, seed=s, model="unet-small", pool="half", study="data")
        for s in (0, 1)
    ]
    # the margin at a 4x longer budget, on both networks (unet-base is 4000 x 0.6 s: about 45 min a run)
    for model in ("unet-base", "unet-small"):
        runs += [
            Run(**blur, method=m, steps=4000, val_interval=500, model=model, study="capacity")
            for m in equivariant
        ]
    for config in (
        {"scale_factors": [0.5]},
        {"scale_factors": [0.75]},
        {"scale_factors": [0.5, 0.25]},
        {"scale_interpolation": "bilinear"},
        {"scale_antialias": True},
    ):
        runs.append(Run(**blur, method="proposed", steps=600, config=config, study="ablation"))
    return runs


def load_records() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def save_record(record: dict) -> None:
    """Add one record; a lock file lets several reproduce.py processes share the results file."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in load_records() if r["key"] != record["key"]] + [record]
        atomic_write_text(RESULTS, json.dumps(sorted(records, key=lambda r: r["key"]), indent=1))


def pool_half(root: Path) -> Path:
    """Every other photograph of the pool (by photograph, so that no photograph gives tiles to both halves:
    sorted by name, the even-numbered ones), copied with its tiles into benchmarks/work/pool_half; the
    data question of the review (is the pool the limit?) trains on it and compares with the whole pool."""
    manifest = json.loads((root / "manifest.json").read_text())
    photos = sorted({tile["photo"] for tile in manifest["tiles"]})[::2]
    kept = [tile for tile in manifest["tiles"] if tile["photo"] in photos]
    half = WORK.parent / "pool_half"
    built = (
        json.loads((half / "manifest.json").read_text())["tiles"]
        if (half / "manifest.json").exists()
        else None
    )
    if built != kept:  # first use, or the pool was rebuilt since
        shutil.rmtree(half, ignore_errors=True)
        half.mkdir(parents=True)
        for tile in kept:
            shutil.copyfile(root / tile["file"], half / tile["file"])
        summary = {**manifest, "photos": len(photos), "tiles": kept, "held_out": manifest.get("held_out", [])}
        atomic_write_text(half / "manifest.json", json.dumps(summary, indent=1))
    return half


def pool_fingerprint(root: Path) -> str:
    """Which training photographs a run saw: their count and a hash of their names and sizes."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256("".join(f"{p.relative_to(root)}:{p.stat().st_size};" for p in files).encode())
    return f"{len(files)} files, {digest.hexdigest()[:12]}"


def sei(*args: str, threads: int, log: Path) -> None:
    code, _ = run_sei(list(args), log, cwd=None, threads=threads)
    if code != 0:
        raise RuntimeError(f"sei {args[0]} failed (exit {code}); see {log}")


def wiener_reg(run: Run, train_root: Path) -> float:
    """The Wiener weight with the best mean PSNR on 12 training photographs."""
    from sei.data import load_images
    from sei.models.baselines import choose_wiener_reg
    from sei.physics import make_physics

    physics = make_physics(run.task, kernel=run.kernel, sr_factor=run.sr_factor, noise_level=5)
    images = [image for _, image in list(load_images(str(train_root), split="train"))[:12]]
    if run.task == "sr":
        images = [
            image[
                :,
                : image.shape[1] // run.sr_factor * run.sr_factor,
                : image.shape[2] // run.sr_factor * run.sr_factor,
            ]
            for image in images
        ]
    return choose_wiener_reg(physics, images)


def execute(run: Run, args: argparse.Namespace) -> dict | None:
    if any(r["key"] == run.key for r in load_records()):  # another process recorded it meanwhile
        return None
    folder = WORK / run.key.replace("/", "__").replace("@", "_")
    log = folder / "log.txt"
    started = time.perf_counter()
    train_seconds = 0.0
    test_flags = [
        "--dataset",
        "samples",
        "--json",
        str(folder / "test.json"),
        "--save_images",
        str(folder / "images"),
        "--quiet",
    ]
    train_root = pool_half(args.train_root) if run.pool == "half" else args.train_root
    if run.method:
        train_flags = [
            "train",
            *run.task_flags(),
            "--method",
            run.method,
            "--dataset",
            str(train_root),
            "--val_dataset",
            "samples",
            "--val_images",
            "10",
            "--val_interval",
            str(run.val_interval or max(run.steps // 8, 1)),
            "--max_steps",
            str(run.steps),
            "--checkpoint_interval",
            str(max(run.steps // 8, 1)),
            "--model",
            run.model or args.model,
            "--seed",
            str(run.seed),
            "--out_dir",
            str(folder),
            "--quiet",
            "--sure_divergence",
            run.sure_divergence,
        ]
        if not run.stop_gradient:
            train_flags.append("--no-stop_gradient")
        if run.config:  # beside the run folder, which a fresh start deletes
            settings = folder.parent / f"{folder.name}.toml"
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in sorted(run.config.items())))
            train_flags += ["--config", str(settings)]
        if (folder / "checkpoints").is_dir():
            train_flags.append("--resume")
        elif folder.exists():
            shutil.rmtree(folder)
        sei(*train_flags, threads=args.threads, log=log)
        train_seconds = time.perf_counter() - started
        sei(
            "test",
            "--weights",
            str(folder / "weights.safetensors"),
            *test_flags,
            threads=args.threads,
            log=log,
        )
    else:
        options = ["--model_kind", run.model_kind]
        if (
            run.model_kind == "wiener"
        ):  # its regulariser is chosen on training photographs, never on test images
            run.extra["reg"] = wiener_reg(run, args.train_root)
            options += ["--option", f"reg={run.extra['reg']}"]
        if run.model_kind == "dip":  # the paper's count for the task unless --dip_iterations says otherwise
            run.extra["iterations"] = args.dip_iterations or (
                4000 if str(run.kernel).startswith("Gaussian") else 1000
            )
            options += ["--option", f"iterations={run.extra['iterations']}"]
        sei("test", *run.task_flags(), *options, *test_flags, threads=args.threads, log=log)
        run.extra["seconds"] = round(time.perf_counter() - started, 1)
    result = json.loads((folder / "test.json").read_text())
    curve = []
    if run.method and (folder / "validation.csv").exists():  # the curve: PSNR against steps and seconds
        with open(folder / "validation.csv") as handle:
            curve = [
                {k: float(row[k]) for k in ("step", "val_psnr", "val_ssim", "train_seconds") if row.get(k)}
                for row in csv.DictReader(handle)
            ]
    summary = result["summary"]
    record = {
        "key": run.key,
        **asdict(run),
        "noise_level": 5,
        "model": (run.model or args.model) if run.method else None,
        "train_seconds": round(train_seconds, 1),
        "curve": curve,
        "pool": pool_fingerprint(train_root) if run.method else None,
        "psnr_mean": summary["psnr_mean"],
        "psnr_std": summary["psnr_std"],
        "ssim_mean": summary["ssim_mean"],
        "ssim_std": summary["ssim_std"],
        "n_test_images": summary["n"],
        "ssim_implementation": summary["ssim_implementation"],
        "images": result["images"],
        "threads": args.threads,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    save_record(record)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=800,
        help="optimizer steps of every trained run (the same budget for all)",
    )
    parser.add_argument("--model", default="unet-small", help="the network of every trained run")
    parser.add_argument(
        "--train_root", type=Path, default=HERE / "photo_pool", help="folder of training photographs"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument(
        "--only", action="append", default=[], help="run only keys containing this (repeatable)"
    )
    parser.add_argument("--skip", action="append", default=[], help="skip keys containing this (repeatable)")
    parser.add_argument(
        "--anchor",
        choices=("deepinv",),
        default=None,
        help="also run deepinv's own recipe (benchmarks/anchor_deepinv.py)",
    )
    parser.add_argument(
        "--dip_iterations",
        type=int,
        default=None,
        help="DIP iterations per image (default: the paper's, 4000 for Gaussian blur, 1000 otherwise)",
    )
    parser.add_argument(
        "--grid",
        choices=("main", "review"),
        default="main",
        help="main: the paper's table; "
        "review: seeds, convergence, capacity, harder blurs, transform ablation",
    )
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (it also stays off when stderr is not a terminal)",
    )
    args = parser.parse_args()
    done = {r["key"] for r in load_records()}
    runs = [
        r
        for r in (grid(args.steps) if args.grid == "main" else review_grid())
        if (not args.only or any(p in r.key for p in args.only)) and not any(p in r.key for p in args.skip)
    ]
    if args.list:
        for run in runs:
            print(("done " if run.key in done else "todo ") + run.key)
        return
    if not args.train_root.is_dir() and any(r.method for r in runs):
        sys.exit(f"no training photographs in {args.train_root}: run `python scripts/photo_pool.py` first")
    todo = [r for r in runs if r.key not in done]
    # the main comparison first (Gaussian_R2 and SR x2, all methods, and the stop-gradient ablation),
    # then the other blur levels and SR x4; within each, the longest runs first
    main_problem = {"gaussian_r2", "sr_x2"}
    if args.grid == "main":  # the review grid runs in its own order
        todo.sort(key=lambda r: (r.method is None, r.label not in main_problem, r.method in ("sup", "css")))
    print(f"{len(todo)} runs to do, {len(runs) - len(todo)} already recorded in {RESULTS}")
    jobs = []
    if args.anchor:
        jobs.append(
            lambda: subprocess.run(
                [
                    sys.executable,
                    str(HERE / "anchor_deepinv.py"),
                    "--threads",
                    str(args.threads),
                    "--train_root",
                    str(args.train_root),
                ],
                check=True,
            )
        )
    jobs += [lambda run=run: execute(run, args) for run in todo]
    from sei.runtime import progress_bar, set_quiet

    set_quiet(args.quiet)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(job) for job in jobs]
        bar = progress_bar(
            as_completed(futures), total=len(futures), unit="run", desc=f"reproducing ({args.jobs} at a time)"
        )
        for future in bar:
            try:
                record = future.result()
                if isinstance(record, dict):
                    bar.write(
                        f"{record['key']:<40} PSNR {record['psnr_mean']:6.2f} dB  SSIM "
                        f"{record['ssim_mean']:.4f}  train {record['train_seconds']:7.0f} s"
                    )
            except Exception as error:  # one failed run must not stop the others
                bar.write(f"FAILED: {error}")


if __name__ == "__main__":
    main()
