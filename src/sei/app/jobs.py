"""Background jobs of ``sei app``: one worker thread runs them in order, outside the web requests.

A job is a folder under the app's working folder (``jobs/<id>/``: ``inputs/``, ``truth/``,
``outputs/``, ``previews/``) plus the state that the page polls. Work is what the command line
does, through the same functions: :func:`sei.inference.load_for_measurements` and
:func:`sei.inference.tiled` (as ``sei reconstruct``) or :func:`sei.restore.restore` (as
``sei restore``). One job runs at a time (a 2-core machine gains nothing from two), the others
wait in line; closing the page does not stop a job, and cancelling does, between two training
steps or two tiles.
"""

from __future__ import annotations

import math
import queue
import secrets
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sei.errors import SeiUserError

STATES = ("queued", "running", "done", "failed", "cancelled")
UNBOUNDED = 1 << 40  # TrainConfig's "not planned yet" step count


class Cancelled(Exception):
    """Raised inside a job's work when the user cancelled it."""


@dataclass
class Job:
    """One unit of work and everything the page shows about it."""

    id: str
    kind: str  # "model", "method" or "train"
    folder: Path
    params: dict[str, Any]
    inputs: list[Path]
    truths: dict[str, Path] = field(default_factory=dict)  # input name -> ground truth
    state: str = "queued"
    phase: str = "waiting for the jobs before it"
    progress: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(
        default_factory=dict
    )  # what may be downloaded: name -> path inside ``folder``
    weights: str | None = None  # name in ``files`` of the trained weights
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def add_file(self, path: Path) -> str:
        """Register ``path`` (inside the job folder) for download; returns its name in URLs."""
        name = path.relative_to(self.folder).as_posix()
        self.files[name] = path
        return name

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "phase": self.phase,
            "progress": dict(self.progress),
            "messages": list(self.messages),
            "error": self.error,
            "results": list(self.results),
            "weights": self.weights,
            "images": [path.name for path in self.inputs],
            "created": self.created,
            "seconds": round((self.finished or time.time()) - self.started, 1) if self.started else None,
        }


class JobManager:
    """Holds the jobs of one server and runs them, one at a time, in a daemon thread."""

    def __init__(self, workdir: Path, device: str = "cpu") -> None:
        self.workdir = Path(workdir).resolve()
        self.device = device
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="sei-app-jobs", daemon=True)
        self._worker.start()

    def new_folder(self) -> tuple[str, Path]:
        job_id = secrets.token_hex(6)
        folder = self.workdir / "jobs" / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self.jobs.values(), key=lambda job: job.created, reverse=True)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job.cancel.set()
            if job.state == "queued":
                job.phase = "cancelling"
        return job

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(job)
            finally:
                self._queue.task_done()

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.state, job.phase, job.finished = "cancelled", "cancelled before it started", time.time()
            return
        job.state, job.started, job.phase = "running", time.time(), "starting"
        try:
            if job.kind == "train":
                run_training(job, self.device)
            else:
                run_reconstruction(job, self.device)
            job.state, job.phase = "done", f"{len(job.results)} result(s) ready"
        except Cancelled:
            job.state, job.phase = "cancelled", "cancelled"
        except SeiUserError as error:
            job.state, job.phase, job.error = "failed", "failed", str(error)
        except Exception as error:  # a bug or a resource problem: the page says so, the log has the traceback
            traceback.print_exc(file=sys.stderr)
            job.state, job.phase, job.error = "failed", "failed", f"{type(error).__name__}: {error}"
        finally:
            job.finished = time.time()


# ---------------------------------------------------------------------------------------------
# the work


def _finish_image(
    job: Job, source: Path, measurement: torch.Tensor, estimate: torch.Tensor, target: Path | None
) -> None:
    """Write the result (in the input's bit depth) unless ``target`` already holds it, the 8-bit
    previews the page shows, and the PSNR against a ground truth when there is one."""
    from sei.evaluation import image_metrics
    from sei.imageio import bit_depth, read_image, write_image
    from sei.restore import _target

    bits = bit_depth(source)
    if read_image(source, channels=None).shape[0] == 1:  # grayscale in, grayscale out (16-bit stays 16-bit)
        estimate = estimate.mean(0, keepdim=True)
    if target is None:
        target = _target(job.folder / "outputs" / source.name, bits)
        write_image(estimate, target, bits=16 if bits == 16 else 8)
    previews = job.folder / "previews"
    input_preview, result_preview = (
        previews / f"{source.stem}_input.png",
        previews / f"{source.stem}_result.png",
    )
    write_image(measurement, input_preview)
    write_image(estimate, result_preview)
    entry: dict[str, Any] = {
        "name": source.name,
        "bits": bits,
        "size": list(estimate.shape[-2:]),
        "download": job.add_file(target),
        "input_preview": job.add_file(input_preview),
        "result_preview": job.add_file(result_preview),
    }
    truth = job.truths.get(source.name)
    if truth is not None:
        reference = read_image(truth)
        if reference.shape[-2:] != estimate.shape[-2:]:
            job.messages.append(
                f"{truth.name}: ground truth is {tuple(reference.shape[-2:])}, the result "
                f"{tuple(estimate.shape[-2:])}: "
                "PSNR on the common top-left part"
            )
        entry["psnr"] = _finite(
            image_metrics(estimate.expand_as(reference) if estimate.shape[0] == 1 else estimate, reference)[0]
        )
        if measurement.shape[-2:] == reference.shape[-2:]:
            entry["psnr_input"] = _finite(image_metrics(measurement, reference)[0])
    job.results.append(entry)


def _finite(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def run_reconstruction(job: Job, device: str) -> None:
    """A shipped or trained network (``kind == "model"``) or a training-free method (``"method"``) on every
    input, as ``sei reconstruct`` runs them (same loading, same tiling: the same pixels)."""
    from sei.imageio import read_image
    from sei.inference import ensembled, load_for_measurements, tiled
    from sei.runtime import resolve_device

    params = job.params
    device_ = resolve_device(device)
    job.phase = "reading the images"
    measurements = [read_image(path) for path in job.inputs]
    job.phase = "loading the model"
    trained_network = job.kind == "model"
    chosen = (
        (params["weights"], None, None, None, None)
        if trained_network
        else (None, params["method"], params["task"], params["kernel"], params["sr_factor"])
    )
    loaded, estimate = load_for_measurements(
        *chosen,
        params["noise_level"],
        device_,
        None,
        lambda physics: measurements,
        noise_model=params.get("noise_model"),
        gain=params.get("gain"),
    )
    if estimate is not None:
        message = f"noise level estimated from the images: {estimate:.3g} (8-bit units)"
        if trained_network:
            message += (
                f"; this network was trained for {float(loaded.physics.noise_level):g} "
                "(if the two differ much, train on your images)"
            )
        job.messages.append(message)
    if getattr(loaded.physics, "poisson", False):
        job.messages.append(
            f"Poisson-Gaussian noise: gain {loaded.physics.gain_level:.3g}, noise level "
            f"{loaded.physics.noise_level:.3g} (8-bit units)"
        )
    if params.get("ensemble"):
        loaded = ensembled(loaded)
        job.messages.append(f"ensemble over {loaded.description['ensemble']} flips and quarter turns")
    scale = loaded.physics.scale

    def reconstruct(piece: torch.Tensor) -> torch.Tensor:
        job.check_cancel()  # between tiles
        return loaded.reconstruct(piece)

    for index, (source, y) in enumerate(zip(job.inputs, measurements, strict=True)):
        job.phase = f"reconstructing {source.name}"
        job.progress = {"images_done": index, "images": len(measurements)}
        with torch.no_grad():
            result = (
                tiled(reconstruct, y[None].to(device_), scale, params["tile"], params["overlap"])[0]
                .float()
                .cpu()
            )
        _finish_image(job, source, y, result, None)
    job.progress = {"images_done": len(measurements), "images": len(measurements)}


def run_training(job: Job, device: str) -> None:
    """``sei restore`` on the inputs: fine-tune the closest shipped model within the time limit, with
    progress (steps, loss, time left) after every step and cancellation between steps."""
    from sei.imageio import read_image
    from sei.restore import restore

    params = job.params
    started = time.perf_counter()
    limit = params["time_limit"]

    def on_step(state: Any) -> None:
        job.check_cancel()
        total = state.total_steps if state.total_steps < UNBOUNDED else None
        job.phase = (
            "restoring the images" if total is not None and state.step >= total else "training on your images"
        )
        job.progress = {
            "step": state.step,
            "steps_planned": total,
            "loss": round(float(state.last_terms.get("loss", math.nan)), 6),
            "seconds_left": round(max(0.0, started + limit - time.perf_counter()), 1),
            "time_limit": limit,
        }

    job.phase = "estimating the noise and timing the network"
    result = restore(
        job.folder / "inputs",
        job.folder / "outputs",
        task=params["task"],
        kernel=params["kernel"],
        sr_factor=params["sr_factor"],
        noise_level=params["noise_level"],
        noise=params.get("noise_model") or "gaussian",
        gain=params.get("gain"),
        time_limit=limit,
        device=device,
        tile=params["tile"],
        overlap=params["overlap"],
        side_by_side=False,
        progress=False,
        ensemble=params.get("ensemble", False),
        started=started,
        on_step=on_step,
    )
    level = f"{result.noise_level:.3g}" + (" (estimated from the images)" if result.noise_estimated else "")
    if result.gain is not None:
        estimated = " (estimated from the images)" if result.gain_estimated else ""
        level = f"{level}, Poisson gain {result.gain:.3g}{estimated}"
    job.messages.append(
        f"trained {result.steps} steps from {result.init or 'scratch'} in {result.train_seconds:.0f} s; "
        f"noise level {level}"
    )
    job.phase = "writing the previews"
    by_stem = {path.stem: path for path in result.outputs}
    for source in job.inputs:
        target = by_stem[source.stem]
        _finish_image(job, source, read_image(source), read_image(target, channels=None), target)
    if result.weights is not None:
        job.weights = job.add_file(result.weights)
