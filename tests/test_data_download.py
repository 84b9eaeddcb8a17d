"""Downloads against a loopback HTTP server: checksums, atomic installs, archive traversal, the CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from sei.cli import main
from sei.data import DATASETS, DownloadError, load_images
from sei.data.download import RemoteFile, check_members, fetch, install, resolve_url
from sei.data.sources import validate_ct


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/truncated`` promises more bytes than it sends (a dropped connection)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path):
    """``(folder, base_url)``: files written into the folder are served on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _png_bytes(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _urban100_archive(path, count=100):
    with tarfile.open(path, "w:gz") as archive:
        for number in range(1, count + 1):
            data = _png_bytes(number)
            info = tarfile.TarInfo(f"Urban100_HR/img_{number:03d}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _visible(folder):
    """What a loader could mistake for data: everything not hidden."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_fetch_streams_and_verifies(server, tmp_path):
    served, url = server
    (served / "file.bin").write_bytes(b"payload" * 1000)
    destination = fetch(
        f"{url}/file.bin", tmp_path / "out" / "file.bin", _md5(served / "file.bin"), progress=False
    )
    assert destination.read_bytes() == b"payload" * 1000
    assert sorted(p.name for p in destination.parent.iterdir()) == ["file.bin"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    served, url = server
    (served / "file.bin").write_bytes(b"corrupt")
    target = tmp_path / "out"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(f"{url}/file.bin", target / "file.bin", "0" * 32, progress=False)
    assert list(target.iterdir()) == []


def test_dropped_connection_and_missing_file_are_errors(server, tmp_path):
    _, url = server
    with pytest.raises(DownloadError, match="cannot download|connection ended"):
        fetch(f"{url}/truncated", tmp_path / "t.bin", None, progress=False)
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{url}/absent.zip", tmp_path / "a.zip", None, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]


def _urban100_spec(md5):
    original = DATASETS["urban100"]
    remote = dataclasses.replace(original.files[0], md5=md5)
    return dataclasses.replace(original, files=(remote,))


def test_install_from_loopback_then_load(server, tmp_path, monkeypatch):
    served, url = server
    archive = _urban100_archive(served / "Urban100_HR.tar.gz")
    monkeypatch.setitem(DATASETS, "urban100", _urban100_spec(_md5(archive)))
    root = tmp_path / "root"
    with pytest.raises(Exception, match="sei data download urban100"):
        load_images("urban100", "test", root=root)
    images = load_images("urban100", "test", root=root, download=True, mirror=url, resize=None)
    assert [identity for identity, _ in images][:2] == ["urban100/img_091", "urban100/img_092"]
    assert abs(images[0][1][0, 0, 0].item() - 91 / 255) < 1e-6
    assert _visible(root / "urban100") == ["Urban100_HR"] and not list((root / "urban100").glob(".*"))


def test_corrupt_archive_never_looks_installed(server, tmp_path, monkeypatch):
    served, url = server
    archive = _urban100_archive(served / "Urban100_HR.tar.gz")
    expected = _md5(archive)
    archive.write_bytes(archive.read_bytes()[:-100])  # a truncated copy on the mirror
    monkeypatch.setitem(DATASETS, "urban100", _urban100_spec(expected))
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        load_images("urban100", "train", root=root, download=True, mirror=url)
    assert not DATASETS["urban100"].installed(root) and _visible(root / "urban100") == []
    with pytest.raises(Exception, match="not under"):
        load_images("urban100", "train", root=root)


def test_archive_with_too_few_images_is_rejected_after_extraction(server, tmp_path):
    served, url = server
    archive = _urban100_archive(served / "Urban100_HR.tar.gz", count=40)
    remote = dataclasses.replace(DATASETS["urban100"].files[0], md5=_md5(archive))
    with pytest.raises(DownloadError, match="40 images"):
        install(remote, tmp_path / "urban100", mirror=url, progress=False)
    assert _visible(tmp_path / "urban100") == [] and not list((tmp_path / "urban100").glob(".*"))


def _tar_with(path, member):
    with tarfile.open(path, "w") as archive:
        archive.addfile(member, io.BytesIO(b"x" * member.size))
    return path


def test_tar_member_escaping_is_refused_before_extraction(server, tmp_path):
    served, url = server
    escaping = tarfile.TarInfo("Urban100_HR/../../evil.txt")
    escaping.size = 1
    archive = _tar_with(served / "evil.tar", escaping)
    remote = RemoteFile(f"{url}/evil.tar", _md5(archive), "evil", ("train",))
    with pytest.raises(DownloadError, match="escapes the target folder"):
        install(remote, tmp_path / "dataset", progress=False)
    assert not (tmp_path / "evil.txt").exists() and _visible(tmp_path / "dataset") == []
    link = tarfile.TarInfo("inner/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
    with pytest.raises(DownloadError, match="escapes"):
        check_members(_tar_with(tmp_path / "link.tar", link), tmp_path / "target")


def test_zip_member_escaping_is_refused(tmp_path):
    for name in ("../evil.txt", "/abs/evil.txt"):
        path = tmp_path / "evil.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("ok/0001.png", b"fine")
            archive.writestr(name, b"evil")
        with pytest.raises(DownloadError, match="escapes"):
            check_members(path, tmp_path / "target")


def test_zip_archive_installs_and_force_replaces(server, tmp_path):
    served, url = server
    path = served / "DIV2K_valid_HR.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(801, 901):
            archive.writestr(f"DIV2K_valid_HR/{number:04d}.png", _png_bytes(number % 256))
    remote = dataclasses.replace(DATASETS["div2k"].files[1], md5=_md5(path))
    installed = install(remote, tmp_path / "div2k", mirror=url, progress=False)
    (installed / "marker").write_text("old")
    assert (
        install(remote, tmp_path / "div2k", mirror=url, progress=False) == installed
        and (installed / "marker").exists()
    )
    install(remote, tmp_path / "div2k", mirror=url, progress=False, force=True)
    assert not (installed / "marker").exists() and len(load_images("div2k", "test", root=tmp_path)) == 100


def test_ct_file_is_validated_by_structure(server, tmp_path):
    import h5py

    served, url = server
    with h5py.File(served / "dinv_dataset0.h5", "w") as file:
        file["x_train"] = np.zeros((5, 1, 8, 8), dtype=np.float32)
        file["x_test"] = np.zeros((3, 1, 8, 8), dtype=np.float32)
    remote = dataclasses.replace(
        DATASETS["ct"].files[0], validate=lambda p: validate_ct(p, {"train": 5, "test": 3})
    )
    assert install(remote, tmp_path / "ct", mirror=url, progress=False).is_file()
    (served / "dinv_dataset0.h5").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DownloadError, match="not a readable HDF5"):
        install(remote, tmp_path / "ct2", mirror=url, progress=False)
    assert _visible(tmp_path / "ct2") == []


def test_mirror_resolution(monkeypatch, tmp_path):
    remote = DATASETS["div2k"].files[0]
    monkeypatch.delenv("SEI_DATA_MIRROR", raising=False)
    assert resolve_url(remote) == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip"
    monkeypatch.setenv("SEI_DATA_MIRROR", "http://mirror.local/sei/")
    assert resolve_url(remote) == "http://mirror.local/sei/DIV2K_train_HR.zip"
    assert resolve_url(remote, str(tmp_path)) == tmp_path.as_uri() + "/DIV2K_train_HR.zip"


def test_file_url_mirror(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"local")
    remote = RemoteFile(
        "https://example.invalid/file.bin", _md5(tmp_path / "file.bin"), "file.bin", ("train",)
    )
    assert (
        install(remote, tmp_path / "dataset", mirror=str(tmp_path), progress=False).read_bytes() == b"local"
    )


def test_cli_download_and_info(server, tmp_path, monkeypatch, capsys):
    served, url = server
    archive = _urban100_archive(served / "Urban100_HR.tar.gz")
    monkeypatch.setitem(DATASETS, "urban100", _urban100_spec(_md5(archive)))
    monkeypatch.setenv("SEI_DATA_MIRROR", url)
    monkeypatch.setenv("SEI_DATA_ROOT", str(tmp_path / "root"))
    assert main(["data", "download", "urban100", "--quiet"]) == 0
    assert "train 90, test 10" in capsys.readouterr().out
    assert main(["data", "info"]) == 0
    info = capsys.readouterr().out
    assert "urban100  train 90 | test 10" in info and "div2k     train missing | test missing" in info
    from sei.data.samples import SAMPLES

    samples = {split: sum(sample.split == split for sample in SAMPLES) for split in ("train", "test")}
    assert f"samples   train {samples['train']} | test {samples['test']}" in info  # every packaged sample
    monkeypatch.setitem(DATASETS, "urban100", _urban100_spec("0" * 32))
    assert (
        main(["data", "download", "urban100", "--force", "--root", str(tmp_path / "other"), "--quiet"]) == 2
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "checksum mismatch" in error
    assert main(["data", "download", "imagenet"]) == 2
