"""Shared fixtures: real photographs that pip packages ship (no download); the ``cuda`` marker."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items) -> None:
    """A test marked ``cuda`` needs a CUDA device: skipped where there is none (benchmarks/gpu_check.py
    runs them on a GPU machine with ``pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def _skimage(name: str) -> torch.Tensor:
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    return torch.from_numpy(array[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """scikit-image's astronaut, (3, 512, 512) in [0, 1]."""
    return _skimage("astronaut")


@pytest.fixture(scope="session")
def coffee_small() -> torch.Tensor:
    """A non-square crop of scikit-image's coffee, (3, 96, 128)."""
    return _skimage("coffee")[:, 100:196, 200:328].contiguous()


@pytest.fixture(scope="session")
def astronaut_path(tmp_path_factory) -> str:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return str(path)


# --- small training runs: a tiny network and folders of real photograph crops

TINY = {"channels": 8, "levels": 2, "blocks": 1}  # options of a unet-small network that trains in a blink


def disk_psf(radius: int) -> torch.Tensor:
    """A uniform defocus disk of radius ``radius`` (a user's PSF that no shipped model was trained for): a
    (2 radius + 1)^2 float64 grid, normalised to sum 1."""
    grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    return disk / disk.sum()


def tiny_config(**fields):
    """A ``TrainConfig`` for a short run of the TINY unet-small (6 steps of batches of 2 patches of 24
    pixels, a checkpoint every 3, one validation image, a log row per step); ``fields`` say the data
    (``dataset=`` or ``measurements=``) and change anything else."""
    from sei.training import TrainConfig

    base = {
        "model": "unet-small",
        "model_options": TINY,
        "resize": None,
        "patch_size": 24,
        "batch_size": 2,
        "max_steps": 6,
        "checkpoint_interval": 3,
        "val_interval": 0,
        "val_images": 1,
        "log_interval": 1,
    }
    return TrainConfig(**{**base, **fields})


def write_crops(image: torch.Tensor, folder, corners, height: int, width: int):
    """``crop0.png``, ``crop1.png``, ... of ``image``: ``height x width`` crops at the ``(top, left)``
    corners."""
    from sei.imageio import write_image

    for index, (top, left) in enumerate(corners):
        write_image(image[:, top : top + height, left : left + width], folder / f"crop{index}.png")
    return folder


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, astronaut):
    """Four real 64x80 crops of the astronaut photograph."""
    return write_crops(
        astronaut, tmp_path_factory.mktemp("photos"), [(0, 0), (100, 200), (300, 120), (400, 400)], 64, 80
    )


def fit_psnr(
    model,
    objective,
    y: torch.Tensor,
    x: torch.Tensor,
    physics,
    generator: torch.Generator,
    steps: int,
    lr: float = 3e-3,
) -> float:
    """``steps`` Adam steps of ``objective`` on random batches of 8 of ``y``, then the PSNR (dB) of the
    trained ``model`` against ``x`` in [0, 1]."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = torch.randint(len(x), (8,), generator=generator)
        optimizer.zero_grad()
        objective(model, y[batch], physics, rng=generator)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        return float(10 * torch.log10(1 / ((model(y) - x) ** 2).mean()))


@contextlib.contextmanager
def wrapped_training_objective(wrap):
    """Within the block, the objective that ``sei.training.train`` builds is ``wrap(objective)`` (only the
    first ``sei.losses.build_method`` call: validation builds its own); ``wrap=None`` changes nothing.
    Yields the list of wrapped objectives."""
    import sei.losses

    if wrap is None:
        yield []
        return

    real_build = sei.losses.build_method
    built: list = []

    def build_once(*args, **kwargs):
        sei.losses.build_method = real_build
        built.append(wrap(real_build(*args, **kwargs)))
        return built[-1]

    sei.losses.build_method = build_once
    try:
        yield built
    finally:
        sei.losses.build_method = real_build


# --- a loopback server standing in for the Hugging Face hub (tests/test_weights.py, tests/test_export.py)


class LoopbackHub(http.server.BaseHTTPRequestHandler):
    """Answers ``HEAD``/``GET`` of a file with the headers huggingface_hub reads (commit, ETag, size).
    A subclass says which bytes a path holds (:meth:`lookup`), what a missing one answers
    (:meth:`missing_headers`) and how the body travels (:meth:`send_body`)."""

    commit = "a" * 40

    def lookup(self) -> bytes | None:
        raise NotImplementedError

    def missing_headers(self) -> dict[str, str]:
        return {}

    def send_body(self, body: bytes) -> None:
        self.wfile.write(body)

    def _answer(self, with_body: bool) -> None:
        body = self.lookup()
        if body is None:
            self.send_response(404)
            for name, value in self.missing_headers().items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.send_body(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]):
    """``handler`` served on a free loopback port in a daemon thread, for the ``with`` block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


_NO_WAITING = """import time
time.sleep = lambda seconds: None  # huggingface_hub waits 1 s before each resume of a cut download
"""


def sei_against_hub(
    args: list[str], home, endpoint: str, offline: bool = False, timeout: float = 120, **environment: str
) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (huggingface_hub reads HF_* variables at import) against ``endpoint``,
    with ``time.sleep`` a no-op there (a ``sitecustomize`` under ``home``): the client's retries do not
    wait."""
    hooks = home / "no_waiting"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "sitecustomize.py").write_text(_NO_WAITING)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        **environment,
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "sei", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


# --- sei app: a real server on a free loopback port, in a thread of the test process


class AppServer:
    """A running ``sei app`` server: its address, its ASGI app and a tiny multipart client."""

    def __init__(self, url: str, app) -> None:
        self.url, self.app = url, app

    def request(
        self, path: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None
    ):
        """``(status, body bytes, headers)``; HTTP errors are returned, not raised."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                request, timeout=60
            ) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers

    def post_job(self, fields: dict, files: list[tuple[str, str, bytes]], header: bool = True):
        """POST a job as the page does; ``files`` are ``(field, filename, content)``. Returns
        ``(status, json)``."""
        import json
        import secrets

        boundary = secrets.token_hex(16)
        parts = []
        for key, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
            )
        for field, filename, content in files:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if header:
            headers["X-Sei-App"] = "1"
        status, content, _ = self.request("/api/jobs", body, headers)
        return status, json.loads(content)

    def job(self, job_id: str) -> dict:
        import json

        return json.loads(self.request(f"/api/jobs/{job_id}")[1])

    def wait(self, job_id: str, timeout: float = 300.0) -> dict:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} still {job['state']} ({job['phase']}) after {timeout} s")


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """``sei app`` serving a temporary working folder (limits: 2 MB and 0.2 megapixels per image)."""
    pytest.importorskip("starlette", reason="sei app needs the app extra: pip install 'sei[app]'")
    pytest.importorskip("multipart", reason="sei app needs the app extra: pip install 'sei[app]'")
    import socket
    import threading
    import time

    import uvicorn

    from sei.app.server import Limits, create_app

    app = create_app(tmp_path_factory.mktemp("sei-app"), limits=Limits(max_upload_mb=2, max_megapixels=0.2))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the sei app server did not start"
    yield AppServer(f"http://127.0.0.1:{listener.getsockname()[1]}", app)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def blurry_png(tmp_path_factory) -> str:
    """A bundled photograph (scikit-image's coffee, 320 x 200: wider than one 256-pixel tile), blurred
    with Gaussian_R2 and noise 5 by ``sei degrade``: a measurement the shipped deblurring model fits."""
    from PIL import Image
    from skimage import data

    import sei.cli

    folder = tmp_path_factory.mktemp("blurry")
    Image.fromarray(data.coffee()[100:300, 150:470]).save(folder / "coffee.png")
    assert (
        sei.cli.main(
            [
                "degrade",
                str(folder / "coffee.png"),
                str(folder / "coffee_blurry.png"),
                "--kernel",
                "Gaussian_R2",
                "--noise_level",
                "5",
            ]
        )
        == 0
    )
    return str(folder / "coffee_blurry.png")
