"""sei app's server: the jobs return what the command line writes, and the server refuses what it must
(non-images, files over its limits, requests from elsewhere, paths outside its working folder).
A real server runs on a loopback port (tests/conftest.py); the page itself is driven in
test_app_browser.py."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sei.cli
from sei.app.server import safe_name


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff16(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


def _image(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(image)


def test_safe_name_keeps_uploads_in_their_folder():
    taken: set[str] = set()
    names = [
        safe_name(name, taken)
        for name in (
            "../../etc/passwd.png",
            "..\\..\\win.png",
            ".hidden.png",
            "a b.png",
            "A B.png",
            "a_b.tif",
        )
    ]
    assert names == ["passwd.png", "win.png", "hidden.png", "a_b.png", "A_B-2.png", "a_b-3.tif"]
    assert all("/" not in name and "\\" not in name and not name.startswith(".") for name in names)


@pytest.mark.parametrize("ensemble", [False, True])
def test_shipped_model_job_equals_sei_reconstruct(app_server, blurry_png, tmp_path, ensemble):
    fields = {"mode": "model", "weights": "sei-gaussian_r2-noise5", "noise_level": "auto"}
    status, job = app_server.post_job(
        fields | ({"ensemble": "on"} if ensemble else {}),
        [("images", "coffee_blurry.png", Path(blurry_png).read_bytes())],
    )
    assert status == 201, job
    job = app_server.wait(job["id"])
    assert job["state"] == "done", job
    [result] = job["results"]
    status, content, headers = app_server.request(f"/api/jobs/{job['id']}/files/{result['download']}")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    assert (
        sei.cli.main(
            ["reconstruct", blurry_png, str(tmp_path / "cli.png"), "--weights", "sei-gaussian_r2-noise5"]
            + (["--ensemble"] if ensemble else [])
        )
        == 0
    )
    expected = np.asarray(Image.open(tmp_path / "cli.png")).astype(int)
    got = _image(content).astype(int)
    assert got.shape == expected.shape == (200, 320, 3)
    assert (
        np.abs(got - expected).max() <= 1
    )  # the same network, tiling and rounding (<= 1/255 from thread-count rounding)
    assert any(
        "trained for 5" in message for message in job["messages"]
    )  # the noise estimate is compared with the model's
    assert any("ensemble over 8" in message for message in job["messages"]) == ensemble


def test_sixteen_bit_input_returns_sixteen_bits_and_psnr_matches(app_server, tmp_path):
    from sei.evaluation import image_metrics
    from sei.imageio import read_image
    from sei.physics import make_physics

    sharp = torch.linspace(0, 1, 120 * 160).reshape(1, 1, 120, 160) ** 2
    sharp = (sharp + 0.3 * torch.sin(torch.arange(160) / 3.0)).clamp(0, 1)
    blurry = make_physics("deblurring", kernel="Gaussian_R1.5", noise_level=1.0).measure(
        sharp.expand(1, 3, -1, -1), seed=0
    )[0, :1]
    truth_16 = (sharp[0, 0].numpy() * 65535).round().astype(np.uint16)
    blurry_16 = (blurry[0].clamp(0, 1).numpy() * 65535).round().astype(np.uint16)
    status, job = app_server.post_job(
        {
            "mode": "method",
            "method": "wiener",
            "task": "deblurring",
            "kernel_family": "gaussian",
            "kernel_size": "1.5",
            "noise_level": "1",
        },
        [("images", "cell.png", _png(blurry_16)), ("truth", "cell_sharp.png", _png(truth_16))],
    )
    assert status == 201, job
    job = app_server.wait(job["id"])
    assert job["state"] == "done", job
    [result] = job["results"]
    assert result["bits"] == 16
    content = app_server.request(f"/api/jobs/{job['id']}/files/{result['download']}")[1]
    with Image.open(io.BytesIO(content)) as image:
        assert image.mode.startswith("I;16")
        values = np.asarray(image).astype(np.int64)
    assert values.ndim == 2 and np.any(values % 257)  # finer than 8 bits
    path = tmp_path / "result.png"
    path.write_bytes(content)
    reference = torch.from_numpy(truth_16.astype(np.float32) / 65535)[None]
    expected_psnr = image_metrics(read_image(path, channels=None), reference)[0]
    assert result["psnr"] == pytest.approx(expected_psnr, abs=0.01)
    assert result["psnr"] > result["psnr_input"] + 1  # deblurring helped, and the page can say by how much


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"not an image", "notes.txt is not an image"),
        ("fake.png", b"plain text pretending", "fake.png is not an image sei can read"),
        (
            "large.png",
            _png(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)),
            "larger than the limit of 2 MB",
        ),
        ("wide.png", _png(np.zeros((500, 500), dtype=np.uint8)), "above the limit of 0.2"),
    ],
)
def test_refused_uploads_leave_nothing(app_server, name, content, message):
    jobs_folder = app_server.app.state.workdir / "jobs"
    before = set(jobs_folder.iterdir()) if jobs_folder.exists() else set()
    status, answer = app_server.post_job(
        {"mode": "model", "weights": "sei-gaussian_r2-noise5"}, [("images", name, content)]
    )
    assert status == 400 and message in answer["error"]
    after = set(jobs_folder.iterdir()) if jobs_folder.exists() else set()
    assert after == before


def test_refuses_bad_choices_and_foreign_requests(app_server):
    image = [("images", "x.png", _png(np.zeros((8, 8), dtype=np.uint8)))]
    assert (
        "unknown model"
        in app_server.post_job({"mode": "model", "weights": "../../weights"}, image)[1]["error"]
    )
    assert (
        "noise"
        in app_server.post_job({"mode": "method", "method": "wiener", "noise_level": "loud"}, image)[1][
            "error"
        ]
    )
    assert "time limit" in app_server.post_job({"mode": "train", "time_limit": "soon"}, image)[1]["error"]
    assert (
        app_server.post_job({"mode": "model", "weights": "sei-gaussian_r2-noise5"}, image, header=False)[0]
        == 403
    )
    assert app_server.request("/api/config", headers={"Host": "attacker.example"})[0] == 400  # DNS rebinding


def test_downloads_only_registered_files(app_server, blurry_png):
    status, job = app_server.post_job(
        {"mode": "model", "weights": "sei-gaussian_r2-noise5"},
        [("images", "c.png", Path(blurry_png).read_bytes())],
    )
    job = app_server.wait(job["id"])
    assert job["state"] == "done"
    base = f"/api/jobs/{job['id']}/files/"
    assert app_server.request(base + job["results"][0]["download"])[0] == 200
    for path in (
        "inputs/../../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "/etc/passwd",
        "inputs/c.png",
        "outputs",
    ):
        assert app_server.request(base + path)[0] == 404, path
    assert app_server.request("/api/jobs/nosuchjob/files/outputs/c.png")[0] == 404


@pytest.mark.slow
def test_training_job_reports_progress_and_cancels(app_server, blurry_png):
    import time

    status, job = app_server.post_job(
        {
            "mode": "train",
            "task": "deblurring",
            "kernel_family": "gaussian",
            "kernel_size": "2.5",
            "time_limit": "90s",
        },
        [("images", "c.png", Path(blurry_png).read_bytes())],
    )
    assert status == 201, job
    deadline = time.monotonic() + 120
    while (progress := app_server.job(job["id"])["progress"]).get("step", 0) < 2:
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    assert progress["loss"] > 0 and 0 < progress["seconds_left"] <= 90
    assert app_server.request(f"/api/jobs/{job['id']}/cancel", b"", {"X-Sei-App": "1"}, "POST")[0] == 200
    cancelled = app_server.wait(job["id"], timeout=60)
    assert cancelled["state"] == "cancelled" and cancelled["weights"] is None and cancelled["results"] == []
    run = app_server.app.state.workdir / "jobs" / job["id"] / "outputs" / "run"
    assert not (run / "weights.safetensors").exists()


@pytest.mark.slow
def test_sei_app_command_serves_on_loopback_and_refuses_a_taken_port(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    pytest.importorskip("uvicorn")
    env = {**os.environ, "PYTHONPATH": str(Path(sei.cli.__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "sei",
        "app",
        "--port",
        "0",
        "--no-browser",
        "--workdir",
        str(tmp_path / "work"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("sei app: open http://127.0.0.1:"), (
            line + process.stderr.read() if process.poll() is not None else line
        )
        address = line.split()[3]
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            address, timeout=30
        ) as response:
            assert "<title>sei" in response.read().decode()
        port = int(address.rstrip("/").rsplit(":", 1)[1])
        with socket.socket() as probe:  # loopback only: the port is not open on the machine's other addresses
            probe.settimeout(2)
            outside = socket.gethostbyname(socket.gethostname())
            if not outside.startswith("127."):
                assert probe.connect_ex((outside, port)) != 0
        taken = subprocess.run(
            [*command[:4], "--port", str(port), "--no-browser", "--workdir", str(tmp_path / "w2")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert taken.returncode == 2 and taken.stderr.count("\n") == 1 and "cannot listen" in taken.stderr
    finally:
        process.terminate()
        process.wait(30)
    assert (tmp_path / "work").is_dir()


def _result_pixels(app_server, job: dict) -> list[np.ndarray]:
    return [
        _image(app_server.request(f"/api/jobs/{job['id']}/files/{result['download']}")[1]).astype(int)
        for result in job["results"]
    ]


def test_psf_file_gives_what_the_named_kernel_gives(app_server, blurry_png):
    from sei.physics import get_kernel

    buffer = io.BytesIO()
    np.save(buffer, get_kernel("Gaussian_R2").numpy())
    image = [("images", "c.png", Path(blurry_png).read_bytes())]
    common = {"mode": "method", "method": "wiener", "task": "deblurring", "noise_level": "5"}
    status, by_file = app_server.post_job(
        {**common, "kernel_family": "file"}, [*image, ("psf", "my psf.npy", buffer.getvalue())]
    )
    assert status == 201, by_file
    status, by_name = app_server.post_job({**common, "kernel_family": "gaussian", "kernel_size": "2"}, image)
    by_file, by_name = app_server.wait(by_file["id"]), app_server.wait(by_name["id"])
    assert by_file["state"] == by_name["state"] == "done", (by_file, by_name)
    assert np.array_equal(_result_pixels(app_server, by_file)[0], _result_pixels(app_server, by_name)[0])
    status, answer = app_server.post_job(
        {**common, "kernel_family": "file"}, [*image, ("psf", "psf.png", b"not a psf")]
    )
    assert status == 400 and "psf.png is not an image" in answer["error"]


def test_super_resolution_model_returns_the_larger_image(app_server):
    small = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    status, job = app_server.post_job(
        {"mode": "model", "weights": "sei-sr_x2-noise5", "noise_level": "5"},
        [("images", "a.jpg", _png(small)), ("images", "b.png", _png(small[:40]))],
    )
    assert status == 201, job
    job = app_server.wait(job["id"])
    assert job["state"] == "done", job
    assert [result["size"] for result in job["results"]] == [[120, 160], [80, 160]]
    assert [result["download"] for result in job["results"]] == [
        "outputs/a.png",
        "outputs/b.png",
    ]  # a JPEG comes back lossless
    assert [pixels.shape for pixels in _result_pixels(app_server, job)] == [(120, 160, 3), (80, 160, 3)]


def test_weights_trained_by_a_job_serve_later_jobs(app_server, blurry_png, tmp_path):
    """A finished training job's weights are listed as a model, downloadable, and run like ``--weights FILE``
    (a shipped file stands in for the training here; the real training is in the slow tests)."""
    import json
    import shutil
    import time

    from sei.app.jobs import Job
    from sei.weights import PRETRAINED

    jobs = app_server.app.state.jobs
    job_id, folder = jobs.new_folder()
    weights = folder / "outputs" / "run" / "weights.safetensors"
    weights.parent.mkdir(parents=True)
    shutil.copy(PRETRAINED["sei-gaussian_r2-noise5"].path, weights)
    trained = Job(
        job_id,
        "train",
        folder,
        {"task": "deblurring", "kernel": "Gaussian_R2", "sr_factor": None},
        [folder / "x.png"],
        state="done",
        finished=time.time(),
    )
    trained.weights = trained.add_file(weights)
    jobs.jobs[job_id] = trained

    models = json.loads(app_server.request("/api/config")[1])["models"]
    assert f"job:{job_id}" in [model["name"] for model in models]
    assert app_server.request(f"/api/jobs/{job_id}/files/{trained.weights}")[1] == weights.read_bytes()
    status, job = app_server.post_job(
        {"mode": "model", "weights": f"job:{job_id}"}, [("images", "c.png", Path(blurry_png).read_bytes())]
    )
    assert status == 201, job
    job = app_server.wait(job["id"])
    assert (
        sei.cli.main(["reconstruct", blurry_png, str(tmp_path / "cli.png"), "--weights", str(weights)]) == 0
    )
    assert (
        np.abs(
            _result_pixels(app_server, job)[0] - np.asarray(Image.open(tmp_path / "cli.png")).astype(int)
        ).max()
        <= 1
    )


@pytest.mark.slow
def test_training_job_to_the_end_offers_results_and_weights(app_server, tmp_path):
    """The whole own-images path from the page's API: a grayscale 16-bit image blurred by a PSF no shipped
    model has, trained on within a short budget; the result keeps 16 bits, the weights hold the PSF."""
    from skimage import data

    from sei.physics import make_physics
    from sei.weights import load_weights_with_physics

    sharp = torch.from_numpy(data.camera()[200:296, 200:296].astype(np.float32) / 255)[None, None]
    blurry = make_physics("deblurring", kernel="Box_R1", noise_level=2).measure(sharp, seed=0)[0, 0]
    status, job = app_server.post_job(
        {
            "mode": "train",
            "task": "deblurring",
            "kernel_family": "box",
            "kernel_size": "1",
            "noise_level": "auto",
            "time_limit": "35s",
        },
        [("images", "cam.tif", _tiff16((blurry.clamp(0, 1).numpy() * 65535).round().astype(np.uint16)))],
    )
    assert status == 201, job
    job = app_server.wait(job["id"], timeout=240)
    assert job["state"] == "done", job
    [result] = job["results"]
    assert result["bits"] == 16 and result["download"] == "outputs/cam.tif"
    with Image.open(
        io.BytesIO(app_server.request(f"/api/jobs/{job['id']}/files/{result['download']}")[1])
    ) as image:
        assert image.mode.startswith("I;16") and image.size == (96, 96)
    assert job["weights"] == "outputs/run/weights.safetensors" and any(
        "trained" in m and "steps" in m for m in job["messages"]
    )
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(app_server.request(f"/api/jobs/{job['id']}/files/{job['weights']}")[1])
    _, _, physics = load_weights_with_physics(weights)
    assert physics.kernel_label == "Box_R1"
