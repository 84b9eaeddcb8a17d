"""The web server of ``sei app``: a Starlette application, its JSON API and the upload checks.

Routes (all under the app's own origin; the page in ``static/`` is their only client):

- ``GET /``: the page; ``GET /static/...``: its script and style;
- ``GET /api/config``: the shipped and trained models, the methods, the limits;
- ``POST /api/jobs``: a multipart form (images, optional ground truths and PSF, the choices) that
  becomes a background job; a bad file or choice is a 400 with a one-line ``error``;
- ``GET /api/jobs``, ``GET /api/jobs/{id}``: state and progress; ``POST /api/jobs/{id}/cancel``;
- ``GET /api/jobs/{id}/files/{name}``: a result, a preview or the trained weights.

Safety: uploads are written under the working folder only, under names the server makes; downloads
are the files a job registered, looked up by name (no path from a request reaches the disk); each
file and image has a size limit that the page states; only images that decode are accepted; with a
loopback address (the default) only requests addressed to localhost are served, and every POST must
carry the page's ``X-Sei-App`` header, which a cross-site form cannot send.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from sei.app.jobs import Job, JobManager
from sei.errors import SeiUserError
from sei.problem import DEFAULT_SR_FACTOR, DEFAULT_TASK, SR_FACTORS, TASKS

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_MB = 100.0  # per file
DEFAULT_MAX_MEGAPIXELS = 40.0  # per image (e.g. 7300 x 5500)
MAX_FILES = 64  # per job
MODES = ("model", "method", "train")
METHODS = {  # the training-free methods offered (sei.models.RECONSTRUCTORS less "id"), as the page names them
    "wiener": "Wiener filter",
    "rl": "Richardson-Lucy",
    "pnp": "plug-and-play (denoiser prior)",
    "bm3d": "BM3D deblurring",
    "dip": "deep image prior (slow)",
    "up": "bicubic upsampling (super-resolution only)",
}
KERNEL_FAMILIES = ("gaussian", "box", "file")
DEFAULT_TIME_LIMIT = "2m"
TILE, OVERLAP = 256, 32  # sei reconstruct's defaults, so that the app returns the same pixels
POST_HEADER = "x-sei-app"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def accepted_suffixes() -> tuple[str, ...]:
    from sei.imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES

    return tuple(suffix for suffix in IMAGE_SUFFIXES if suffix not in DICOM_SUFFIXES)


def safe_name(filename: str, taken: set[str]) -> str:
    """A file name made from an uploaded one: its last component, characters outside ``[A-Za-z0-9._-]``
    replaced, no leading dot, unique among ``taken`` (which it joins).

    >>> taken = set()
    >>> safe_name("../../etc/passwd.png", taken), safe_name("a b.png", taken), safe_name("a b.png", taken)
    ('passwd.png', 'a_b.png', 'a_b-2.png')
    """
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename.replace("\\", "/")).name).lstrip(".") or "image"
    stem, suffix = Path(base).stem or "image", Path(base).suffix
    name, count = base, 1
    while name.lower() in taken or Path(name).stem.lower() in {Path(t).stem for t in taken}:
        count += 1
        name = f"{stem}-{count}{suffix}"
    taken.add(name.lower())
    return name


class Limits:
    def __init__(
        self, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    ) -> None:
        self.max_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_pixels = int(max_megapixels * 1e6)
        self.max_upload_mb, self.max_megapixels = max_upload_mb, max_megapixels

    def describe(self) -> str:
        return (
            f"at most {MAX_FILES} images per run, "
            f"each at most {self.max_upload_mb:g} MB and {self.max_megapixels:g} megapixels"
        )


async def _save_upload(upload: Any, folder: Path, name: str, limits: Limits) -> Path:
    """Write one uploaded file to ``folder/name`` if it is within the size limit, then check that it
    decodes as an image within the pixel limit; otherwise delete it and raise a user error."""
    from starlette.concurrency import run_in_threadpool

    label = upload.filename or "a file"
    if Path(name).suffix.lower() not in accepted_suffixes():
        raise SeiUserError(f"{label} is not an image: give PNG, JPEG or TIFF files (8 or 16 bits)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    size = 0
    with open(path, "wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limits.max_bytes:
                out.close()
                path.unlink()
                raise SeiUserError(
                    f"{label} is larger than the limit of {limits.max_upload_mb:g} MB per file"
                )
            out.write(chunk)
    try:
        await run_in_threadpool(_check_image, path, label, limits)
    except SeiUserError:
        path.unlink(missing_ok=True)
        raise
    return path


def _check_image(path: Path, label: str, limits: Limits) -> None:
    from PIL import Image, UnidentifiedImageError

    from sei.imageio import read_image

    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise SeiUserError(f"{label} is not an image sei can read (PNG, JPEG, TIFF)") from error
    if width * height > limits.max_pixels:
        raise SeiUserError(
            f"{label} has {width * height / 1e6:.1f} megapixels, above the limit of {limits.max_megapixels:g}"
        )
    try:
        read_image(path)
    except SeiUserError as error:
        raise SeiUserError(
            f"{label} is not an image sei can read: {str(error).replace(str(path), 'it')}"
        ) from error


def _choice(form: Any, key: str, options: tuple, default: Any = None) -> Any:
    value = form.get(key, default)
    if value not in options:
        raise SeiUserError(f"unknown {key} {value!r}: choose one of {', '.join(map(str, options))}")
    return value


def _problem(params: dict[str, Any]) -> str:
    if params["task"] == "sr":
        return f"super-resolution x{params['sr_factor']}"
    return f"deblurring, PSF {Path(str(params['kernel'])).name}"


def _trained_weights(jobs: JobManager) -> dict[str, tuple[Job, Path]]:
    """Weights trained by this server's finished jobs, as ``job:<id>`` -> (job, file)."""
    return {
        f"job:{job.id}": (job, job.files[job.weights])
        for job in jobs.list()
        if job.state == "done" and job.weights
    }


async def _job_from_form(form: Any, jobs: JobManager, limits: Limits) -> Job:
    from sei.physics.noise import parse_gain, parse_noise_level
    from sei.problem import GAUSSIAN, NOISE_MODELS, POISSON_GAUSSIAN
    from sei.runtime import parse_duration
    from sei.weights import PRETRAINED

    mode = _choice(form, "mode", MODES, "model")
    images = [item for item in form.getlist("images") if getattr(item, "filename", None)]
    truths = [item for item in form.getlist("truth") if getattr(item, "filename", None)]
    if not images:
        raise SeiUserError("drop or choose at least one image first")
    if len(images) > MAX_FILES or len(truths) > MAX_FILES:
        raise SeiUserError(f"at most {MAX_FILES} images per run")
    noise_text = str(form.get("noise_level", "auto")).strip() or "auto"
    params: dict[str, Any] = {"noise_level": parse_noise_level(noise_text), "tile": TILE, "overlap": OVERLAP}
    # the Poisson-Gaussian model (photon-limited data) takes a gain, a number or auto; the page shows the gain
    # field for that model only, so a Gaussian job never reads it
    poisson = _choice(form, "noise", NOISE_MODELS, GAUSSIAN) == POISSON_GAUSSIAN
    params["noise_model"] = POISSON_GAUSSIAN if poisson else None
    params["gain"] = parse_gain(str(form.get("gain", "auto")).strip() or "auto") if poisson else None
    params["ensemble"] = _choice(form, "ensemble", ("on", "off"), "off") == "on"  # --ensemble
    if mode == "model":
        name = str(form.get("weights", ""))
        trained = _trained_weights(jobs)
        if name in PRETRAINED:
            params["weights"] = name
        elif name in trained:
            params["weights"] = str(trained[name][1])
        else:
            raise SeiUserError(f"unknown model {name!r}: choose a shipped model or one trained here")
        params["model"] = name
    else:
        params["task"] = _choice(form, "task", TASKS, DEFAULT_TASK)
        params["sr_factor"] = (
            int(_choice(form, "sr_factor", tuple(map(str, SR_FACTORS)), str(DEFAULT_SR_FACTOR)))
            if params["task"] == "sr"
            else None
        )
        params["kernel"] = None
        if mode == "method":
            params["method"] = _choice(form, "method", tuple(METHODS), "wiener")
            if params["method"] == "up" and params["task"] != "sr":
                raise SeiUserError("'up' (bicubic upsampling) is for super-resolution")
        else:
            params["time_limit"] = parse_duration(
                str(form.get("time_limit", DEFAULT_TIME_LIMIT)).strip() or DEFAULT_TIME_LIMIT
            )

    job_id, folder = jobs.new_folder()
    try:
        return await _fill_job(form, Job(job_id, mode, folder, params, []), limits, truths, images)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing behind
        raise


async def _fill_job(form: Any, job: Job, limits: Limits, truths: list, images: list) -> Job:
    from sei.physics import get_kernel

    folder, params = job.folder, job.params
    taken: set[str] = set()
    inputs = job.inputs = [
        await _save_upload(item, folder / "inputs", safe_name(item.filename, taken), limits)
        for item in images
    ]
    if job.kind != "model" and params["task"] == "deblurring":
        family = _choice(form, "kernel_family", KERNEL_FAMILIES, "gaussian")
        if family == "file":
            psf = form.get("psf")
            if not getattr(psf, "filename", None):
                raise SeiUserError("choose the PSF file (an image, or .npy), or pick a named kernel")
            suffix = Path(psf.filename).suffix.lower()
            if suffix == ".npy":
                path = folder / "psf.npy"
                data = await psf.read(limits.max_bytes + 1)
                if len(data) > limits.max_bytes:
                    raise SeiUserError(
                        f"{psf.filename} is larger than the limit of {limits.max_upload_mb:g} MB"
                    )
                path.write_bytes(data)
            else:
                path = await _save_upload(psf, folder, "psf" + suffix, limits)
            get_kernel(path)  # a one-line error now rather than a failed job
            params["kernel"] = str(path)
        else:
            try:
                size = float(str(form.get("kernel_size", "2")))
            except ValueError:
                raise SeiUserError(
                    f"the kernel size must be a number, got {form.get('kernel_size')!r}"
                ) from None
            if not 0 < size <= 50:
                raise SeiUserError(f"the kernel size must be in (0, 50], got {size:g}")
            params["kernel"] = f"Gaussian_R{size:g}" if family == "gaussian" else f"Box_R{size:g}"
            get_kernel(params["kernel"])
    if truths:
        taken_truth: set[str] = set()
        saved = [
            await _save_upload(item, folder / "truth", safe_name(item.filename, taken_truth), limits)
            for item in truths
        ]
        if len(saved) != len(inputs):
            raise SeiUserError(
                f"give one ground truth per image, in the same order ({len(inputs)} images, {len(saved)} "
                "ground truths)"
            )
        job.truths = {source.name: truth for source, truth in zip(inputs, saved, strict=True)}
    return job


def create_app(workdir: str | Path, device: str = "cpu", limits: Limits | None = None, loopback: bool = True):
    """The ASGI application serving the page and running jobs in ``workdir``."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from sei.models import RECONSTRUCTORS
    from sei.weights import PRETRAINED

    limits = limits or Limits()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = JobManager(workdir, device=device)
    assert set(METHODS) <= set(RECONSTRUCTORS)

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def config(request: Request) -> JSONResponse:
        models = [
            {"name": name, "label": f"{name}: {cfg.description}", "task": cfg.task}
            for name, cfg in PRETRAINED.items()
        ]
        models += [
            {
                "name": key,
                "label": f"trained here: job {job.id} ({_problem(job.params)}, {len(job.inputs)} image(s))",
                "task": job.params["task"],
            }
            for key, (job, _) in _trained_weights(jobs).items()
        ]
        return JSONResponse(
            {
                "models": models,
                "methods": [{"name": name, "label": label} for name, label in METHODS.items()],
                "sr_factors": list(SR_FACTORS),
                "time_limit": DEFAULT_TIME_LIMIT,
                "limits": limits.describe(),
                "accept": ",".join(accepted_suffixes()),
                "workdir": str(workdir),
                "device": device,
            }
        )

    async def submit(request: Request) -> JSONResponse:
        if request.headers.get(POST_HEADER) != "1":
            return error("requests must come from the sei app page", 403)
        declared = int(request.headers.get("content-length") or 0)
        if declared > limits.max_bytes * (2 * MAX_FILES + 1):
            return error(f"the upload is too large: {limits.describe()}", 413)
        try:
            async with request.form(max_files=2 * MAX_FILES + 1, max_fields=100) as form:
                job = await _job_from_form(form, jobs, limits)
        except SeiUserError as problem:
            return error(str(problem))
        jobs.submit(job)
        return JSONResponse(job.summary(), status_code=201)

    async def list_jobs(request: Request) -> JSONResponse:
        return JSONResponse({"jobs": [job.summary() for job in jobs.list()]})

    async def show(request: Request) -> JSONResponse:
        job = jobs.get(request.path_params["job_id"])
        return error("no such job", 404) if job is None else JSONResponse(job.summary())

    async def cancel(request: Request) -> JSONResponse:
        if request.headers.get(POST_HEADER) != "1":
            return error("requests must come from the sei app page", 403)
        job = jobs.cancel(request.path_params["job_id"])
        return error("no such job", 404) if job is None else JSONResponse(job.summary())

    async def download(request: Request) -> FileResponse | JSONResponse:
        job = jobs.get(request.path_params["job_id"])
        path = job.files.get(request.path_params["name"]) if job is not None else None
        if path is None or not path.resolve().is_relative_to(workdir) or not path.is_file():
            return error("no such file", 404)
        inline = request.query_params.get("inline") == "1"
        return FileResponse(
            path,
            filename=None if inline else f"{Path(path).stem}_sei{path.suffix}",
            content_disposition_type="inline" if inline else "attachment",
        )

    routes = [
        Route("/", index),
        Route("/api/config", config),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", show),
        Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job_id}/files/{name:path}", download),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS))] if loopback else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.jobs = jobs
    app.state.workdir = workdir
    return app
