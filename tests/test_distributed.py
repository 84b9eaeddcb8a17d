"""Data-parallel training on CPU: ``torchrun -m sei train`` with the gloo backend and 2 processes.

What is checked, against 1-process runs of the same global batch (8 = 2 ranks x 4):

- ``sup`` (no randomness but the data): 2 x 4 is 1 x 8 up to float summation order. DDP averages
  the ranks' gradients and each rank's loss is a mean over its 4 images, so the averaged gradient
  is the gradient of the mean over 8. Tolerances: losses ``rtol=1e-5`` (float32 reduction order,
  ~1e-7, times the few ops between); weights ``1e-2 * lr``: Adam moves a parameter by at most
  ~``lr`` a step and by ``lr * |delta g| / eps`` for gradients near zero, so rounding differences
  stay orders of magnitude below 1 % of one step, while a wrong split or a missing average moves
  weights by ~``lr``.
- ``proposed`` (SURE probe, scale draws, re-measurement noise seeded per ``(seed, step, rank)``):
  rank ``r`` draws from its own generator, so 2 x 4 equals 1 x 8 *in distribution*, not bitwise.
  Exact part: the DDP run equals, to the ``sup`` tolerances, a 1-process run whose objective
  evaluates the two halves of the global batch with the generators seeded ``(seed, step, 0)`` and
  ``(seed, step, 1)`` and averages them. Statistical part: the tolerance is measured, not assumed;
  at every step of the 1 x 8 run the objective is re-evaluated with ``MC_SEEDS`` other seeds (same
  weights, same batch) as a 1 x 8 and as a 2 x 4 estimate, and the logged losses must agree within 5
  standard deviations of their difference; at step 1 (same weights, same data) the two estimators'
  means over those seeds must agree within 5 standard errors (no batch-size bias).
- only rank 0 writes (an audit hook in every worker records writes under the run folder);
- resume on another process count (``sup``): 1 process to step 2, 2 processes to step 4, 1 process
  to step 6 ends with the weights of an uninterrupted 1-process run.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import wrapped_training_objective, write_crops
from sei.training import TrainConfig, checkpoint_path, derive_seed, latest_checkpoint, load_checkpoint, train

pytestmark = [
    pytest.mark.slow,  # torchrun launches and three in-process trainings: about 40 s on two cores
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
    ),
]

LR = 5e-4
STEPS = {"sup": 6, "proposed": 4}  # sup: room for a resume chain 1 -> 2 -> 1 process
UNET = ("unet-small", {"channels": 8, "levels": 2, "blocks": 1})
# The paper's SwinIR has stochastic depth. With the exact SURE divergence the objective
# runs f(y) (plus a vector-Jacobian product through it) and f(y2) before the one backward, which
# then differentiates through that product (double backpropagation); with the paper's finite
# difference (the default) it runs f(y), f(y + tau b) (replaying the drop-path masks of f(y)) and f(y2) as
# three separate passes. Both are cases where DDP could see parameters "marked ready twice". A tiny SwinIR
# with drop_path_rate > 0 keeps that structure on CPU.
SWINIR = (
    "swinir-tiny",
    {"embed_dim": 12, "depths": [2], "num_heads": [2], "drop_path_rate": 0.1, "img_size": 16},
)
MC_SEEDS = 12  # re-evaluations of the objective per step for the Monte-Carlo spread
K_SIGMA = 5.0


# --- helpers -------------------------------------------------------------------------------------

# Imported by every worker through PYTHONPATH: records each write-like call (open for writing,
# rename, remove, mkdir) under SEI_TEST_WATCH, one log per rank, outside the watched folder.
_AUDIT_HOOK = """
import os, sys
_watch, _logs = os.environ.get("SEI_TEST_WATCH"), os.environ.get("SEI_TEST_WRITES")
_rank = os.environ.get("RANK")
if _watch and _logs and _rank is not None:
    _watch = os.path.realpath(_watch)
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _under(path):
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(_watch)
        except (TypeError, ValueError):
            return False

    def _hook(event, args):
        if event == "open":
            mode, flags = args[1], args[2]
            write = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _writing)
            paths = [args[0]] if write else []
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir"):
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        for path in paths:
            if not isinstance(path, int) and _under(path):
                with open(os.path.join(_logs, f"rank{_rank}.log"), "a") as log:
                    log.write(f"{event} {os.fsdecode(path)}\\n")

    sys.addaudithook(_hook)
"""


def _config(folder: Path, method: str, network: tuple[str, dict], **changes) -> TrainConfig:
    return TrainConfig(
        dataset=str(folder),
        resize=None,
        patch_size=16,
        batch_size=8,
        max_steps=STEPS[method],
        lr=LR,
        method=method,
        model=network[0],
        model_options=network[1],
        checkpoint_interval=2,
        keep_checkpoints=5,
        val_interval=0,
        val_images=0,
        log_interval=1,
        amp="none",  # float32: bf16 rounding would differ between 2x4 and 1x8 and hide what is compared
        **changes,
    )


def _toml(config: TrainConfig, path: Path) -> Path:
    """The config as a ``--config`` file (``resize = 0`` is the CLI's spelling of "native size")."""
    lines = []
    for key, value in {**config.to_dict(), "resize": config.resize or 0}.items():
        if value is not None and key != "model_options":
            lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}")
    lines += ["[model_options]", *(f"{key} = {value!r}" for key, value in config.model_options.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _torchrun(
    tmp: Path, config: TrainConfig, out_dir: Path, *extra: str
) -> tuple[Path, subprocess.CompletedProcess]:
    """``torchrun --standalone --nproc_per_node 2 -m sei train`` on CPU, with the write audit."""
    hook_dir, logs = tmp / "hook", tmp / f"writes_{out_dir.name}"
    hook_dir.mkdir(exist_ok=True)
    logs.mkdir()
    (hook_dir / "sitecustomize.py").write_text(textwrap.dedent(_AUDIT_HOOK))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(hook_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        OMP_NUM_THREADS="1",
        SEI_TEST_WATCH=str(out_dir),
        SEI_TEST_WRITES=str(logs),
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sei",
        "train",
        "--config",
        str(_toml(config, tmp / f"{out_dir.name}.toml")),
        "--device",
        "cpu",
        "--out_dir",
        str(out_dir),
        "--quiet",
        *extra,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return logs, result


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _terms(rows: list[dict[str, str]]) -> list[str]:
    from sei.run_log import BOOKKEEPING

    return [k for k in rows[0] if k not in BOOKKEEPING]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= 1e-2 * LR, f"weights differ by {worst:.3g} > 1% of one Adam step ({1e-2 * LR:.3g})"


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(latest_checkpoint(run))
    assert checkpoint["step"] == checkpoint["config"]["max_steps"]
    return checkpoint["model"]


class _Halves:
    """A method's objective evaluated as ``world`` ranks would: the global batch cut in equal
    shares, share ``r`` with a generator seeded ``(seed, step, r)``, the results averaged (with
    ``world=1`` the loop's own generator is used unchanged); like the loop, each share also seeds
    torch's global RNG (drop-path masks) with its rank's seed. With ``spread`` it also re-evaluates
    every step with ``MC_SEEDS`` other seeds, as 1 x 8 and as 2 x 4, at the same weights and batch,
    and records the losses; those draws use their own generators and a forked global RNG, so they
    leave the run unchanged. ``passes`` counts the network calls of each real evaluation."""

    def __init__(self, objective, world: int, seed: int, spread: list | None = None) -> None:
        self.objective, self.world, self.seed, self.spread = objective, world, seed, spread
        self.name, self.uses_ground_truth = objective.name, objective.uses_ground_truth
        self.step = -1
        self.passes: list[int] = []
        self._calls = 0

    def _ranks(self, world, model, y, physics, x, seed_of_rank) -> dict[str, torch.Tensor]:
        share = y.shape[0] // world
        outs = []
        for r in range(world):
            part = slice(r * share, (r + 1) * share)
            rng = torch.Generator(device=y.device).manual_seed(seed_of_rank(r))
            torch.manual_seed(seed_of_rank(r))
            outs.append(self.objective(model, y[part], physics, x=None if x is None else x[part], rng=rng))
        return {k: sum(o[k] for o in outs) / world for k in outs[0]}

    def __call__(self, model, y, physics, x=None, rng=None) -> dict[str, torch.Tensor]:
        self.step += 1
        step = self.step
        if self.step == 0 and isinstance(model, torch.nn.Module):
            model.register_forward_pre_hook(lambda *_: setattr(self, "_calls", self._calls + 1))
        if self.spread is not None:
            draws: dict[str, list[float]] = {"1x8": [], "2x4": []}
            with torch.random.fork_rng(devices=[]), torch.no_grad():  # values only
                for k in range(MC_SEEDS):
                    one = self._ranks(1, model, y, physics, x, lambda r, k=k: derive_seed("spread", step, k))
                    two = self._ranks(
                        2, model, y, physics, x, lambda r, k=k: derive_seed("spread", step, k, r)
                    )
                    draws["1x8"].append(float(one["loss"]))
                    draws["2x4"].append(float(two["loss"]))
            self.spread.append(draws)
        self._calls = 0
        if self.world == 1:
            terms = self.objective(model, y, physics, x=x, rng=rng)
        else:
            terms = self._ranks(
                self.world, model, y, physics, x, lambda r: derive_seed(self.seed, "step", step, r)
            )
        self.passes.append(self._calls)
        return terms


def _train_in_process(
    config: TrainConfig, out_dir: Path, world: int = 1, spread: list | None = None, resume: str | None = None
) -> list[int]:
    """One process (no torchrun), optionally with the objective evaluated as ``world`` ranks;
    returns the network calls of each step's objective (with ``world > 1`` or ``spread``)."""

    def halves(objective) -> _Halves:
        return _Halves(objective, world, config.seed, spread)

    threads = torch.get_num_threads()
    wrapping = world > 1 or spread is not None
    with (
        pytest.MonkeyPatch.context() as patch,
        wrapped_training_objective(halves if wrapping else None) as built,
    ):
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            patch.delenv(name, raising=False)
        torch.set_num_threads(1)  # the CPU is shared; oversubscribed threads make this 10x slower
        try:
            train(config, out_dir, resume=resume, progress=False)
        finally:
            torch.set_num_threads(threads)
    return built[0].passes if built else []


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut) -> Path:
    """Eight real 40x48 crops of the astronaut photograph."""
    corners = [(0, 0), (100, 200), (300, 120), (400, 400), (200, 40), (50, 300), (250, 250), (420, 100)]
    return write_crops(astronaut, tmp_path_factory.mktemp("photos"), corners, 40, 48)


@pytest.fixture(scope="module")
def sup_runs(tmp_path_factory, photos) -> dict[str, Path]:
    """``one``: 1 process, steps 1-6. ``two``: 2 processes resuming ``one`` at step 2, steps 3-6.
    ``two_then_one``: 1 process resuming ``two`` at step 4, steps 5-6. (A checkpoint is the same
    whether or not its run went on, so each resume is an interruption right after a checkpoint.)"""
    tmp = tmp_path_factory.mktemp("sup")
    config = _config(photos, "sup", UNET)
    _train_in_process(config, tmp / "one")
    logs, _ = _torchrun(tmp, config, tmp / "two", "--resume", str(checkpoint_path(tmp / "one", 2)))
    _train_in_process(config, tmp / "two_then_one", resume=str(checkpoint_path(tmp / "two", 4)))
    return {"one": tmp / "one", "two": tmp / "two", "two_then_one": tmp / "two_then_one", "logs": logs}


@pytest.fixture(scope="module")
def proposed_runs(tmp_path_factory, photos) -> dict[str, object]:
    """``two``: 2 processes from scratch (two network passes, one double backward, under DDP).
    ``halves``: 1 process whose objective averages the two rank-seeded halves of each batch.
    ``one``: plain 1 process, with the Monte-Carlo spread recorded at every step."""
    tmp = tmp_path_factory.mktemp("proposed")
    # --download on a folder downloads nothing, but runs the rank-by-rank download barriers
    config = _config(photos, "proposed", SWINIR, download=True, sure_divergence="exact")
    logs, _ = _torchrun(tmp, config, tmp / "two")
    passes = _train_in_process(config, tmp / "halves", world=2)
    spread: list[dict[str, list[float]]] = []
    _train_in_process(config, tmp / "one", spread=spread)
    return {
        "two": tmp / "two",
        "halves": tmp / "halves",
        "one": tmp / "one",
        "logs": logs,
        "spread": spread,
        "passes": passes,
    }


# --- tests ---------------------------------------------------------------------------------------


def _files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("runs", ["proposed_runs", "sup_runs"])
def test_two_processes_complete_and_only_rank_0_writes(request, runs):
    run, logs = request.getfixturevalue(runs)["two"], request.getfixturevalue(runs)["logs"]
    first, last = (1, STEPS["proposed"]) if runs == "proposed_runs" else (3, STEPS["sup"])  # sup resumes at 2
    assert [int(row["step"]) for row in _metrics(run)] == list(range(first, last + 1))  # each step once
    expected = {"config.json", "metrics.csv", "validation.csv", "loss.png", "weights.safetensors"}
    expected |= {f"checkpoints/step_{step:08d}.pt" for step in range(first + 1, last + 1, 2)}
    events = {name for name in _files(run) if name.startswith("tensorboard/events.out.tfevents.")}
    assert _files(run) - events == expected
    assert len(events) == 1  # one session per run folder: one event file, from rank 0
    # the audit saw rank 0 write (so it works) and rank 1 write nothing under the run folder
    assert not (logs / "rank1.log").exists(), (logs / "rank1.log").read_text()
    written = (logs / "rank0.log").read_text()
    assert (
        "metrics.csv" in written
        and f"step_{last:08d}.pt" in written
        and "weights.safetensors" in written
        and "tfevents" in written
    )
    assert load_checkpoint(latest_checkpoint(run))["config"]["batch_size"] == 8  # the global batch


def test_supervised_two_by_four_equals_one_by_eight(sup_runs):
    one, two = _metrics(sup_runs["one"]), _metrics(sup_runs["two"])
    assert _terms(one) == _terms(two) == ["supervised", "loss"]
    for a, b in zip(one[2:], two, strict=True):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-5), (a, b)
    _assert_same_weights(_final_weights(sup_runs["one"]), _final_weights(sup_runs["two"]))


def test_resume_on_another_number_of_processes(sup_runs):
    whole = _final_weights(sup_runs["one"])
    _assert_same_weights(whole, _final_weights(sup_runs["two"]))  # 1 -> 2 processes at step 2
    _assert_same_weights(whole, _final_weights(sup_runs["two_then_one"]))  # and 2 -> 1 at step 4
    assert [int(row["step"]) for row in _metrics(sup_runs["two_then_one"])] == [5, 6]


def test_proposed_under_ddp_is_the_mean_of_rank_seeded_halves(proposed_runs):
    assert proposed_runs["passes"] == [2 * 2] * STEPS["proposed"]  # per step: 2 halves x (f(y), f(y2))
    ddp, halves = _metrics(proposed_runs["two"]), _metrics(proposed_runs["halves"])
    assert _terms(ddp) == _terms(halves) == ["sure", "equivariance", "loss"]
    for a, b in zip(halves, ddp, strict=True):
        for term in _terms(ddp):
            assert float(b[term]) == pytest.approx(float(a[term]), rel=1e-5, abs=1e-9), (term, a, b)
    _assert_same_weights(_final_weights(proposed_runs["halves"]), _final_weights(proposed_runs["two"]))


def test_finite_difference_sure_under_ddp_is_the_mean_of_rank_seeded_halves(tmp_path, photos):
    """The paper's estimator: three separate passes (f(y + tau b) replays f(y)'s drop-path masks)."""
    config = _config(photos, "proposed", SWINIR, sure_divergence="finite-difference")
    _torchrun(tmp_path, config, tmp_path / "two")
    passes = _train_in_process(config, tmp_path / "halves", world=2)
    assert passes == [2 * 3] * STEPS["proposed"]
    ddp, halves = _metrics(tmp_path / "two"), _metrics(tmp_path / "halves")
    for a, b in zip(halves, ddp, strict=True):
        for term in _terms(ddp):
            assert float(b[term]) == pytest.approx(float(a[term]), rel=1e-5, abs=1e-9), (term, a, b)
    _assert_same_weights(_final_weights(tmp_path / "halves"), _final_weights(tmp_path / "two"))


def test_proposed_two_by_four_matches_one_by_eight_in_distribution(proposed_runs):
    single, ddp, spread = (
        _metrics(proposed_runs["one"]),
        _metrics(proposed_runs["two"]),
        proposed_runs["spread"],
    )
    assert len(spread) == STEPS["proposed"]
    for step, (a, b, draws) in enumerate(zip(single, ddp, spread, strict=True), start=1):
        sd = math.hypot(statistics.stdev(draws["1x8"]), statistics.stdev(draws["2x4"]))
        assert sd > 0  # the draws do differ between seeds
        gap = abs(float(a["loss"]) - float(b["loss"]))
        assert gap <= K_SIGMA * sd, f"step {step}: |1x8 - 2x4| = {gap:.3g} > {K_SIGMA} x {sd:.3g}"
    # no batch-size bias: at step 1 (same weights, same batch) the two estimators have one mean
    first = spread[0]
    standard_error = math.hypot(statistics.stdev(first["1x8"]), statistics.stdev(first["2x4"])) / math.sqrt(
        MC_SEEDS
    )
    gap = abs(statistics.mean(first["1x8"]) - statistics.mean(first["2x4"]))
    assert gap <= K_SIGMA * standard_error, (
        f"means of 1x8 and 2x4 differ by {gap:.3g} > {K_SIGMA} x {standard_error:.3g}"
    )
