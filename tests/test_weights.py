"""Weights files: metadata round trip, paper files, name registries, and downloads from a fake hub."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import LoopbackHub, disk_psf, sei_against_hub, serving
from sei import weights
from sei.errors import SeiUserError
from sei.models import create_model

torch.set_num_threads(1)
SMALL_UNET = {"channels": 8}
PAPER_NAME = "Deblurring_Gaussian_R2_Noise5_Proposed"
CUT_NAME = "Deblurring_Box_R3_Noise5_Proposed"


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random non-zero weights everywhere (the CPU nets start with a zero head)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_save_load_round_trip_rebuilds_the_model_from_metadata(tmp_path):
    model = _trained_like(create_model("unet-small", task="sr", sr_factor=4, **SMALL_UNET))
    path = weights.save_weights(
        model,
        tmp_path / "run" / "final.safetensors",
        {"noise_level": 5.0, "method": "proposed", "steps": 123, "kernel": None},
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["final.safetensors"]  # no temporary left behind
    loaded, metadata = weights.load_weights(str(path))
    assert metadata["model"] == model.sei_config and loaded.sei_config == model.sei_config
    assert (metadata["task"], metadata["sr_factor"], metadata["steps"], metadata["method"]) == (
        "sr",
        4,
        123,
        "proposed",
    )
    y = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(loaded(y), model(y))


def test_wrong_task_or_factor_for_the_weights_is_a_user_error(tmp_path):
    model = create_model("unet-small", task="sr", sr_factor=2, **SMALL_UNET)
    path = weights.save_weights(model, tmp_path / "w.safetensors", {"noise_level": 5.0})
    with pytest.raises(SeiUserError, match="trained for task=sr, but task=deblurring was requested"):
        weights.load_weights(path, task="deblurring")
    with pytest.raises(SeiUserError, match="trained for sr_factor=2, but sr_factor=4"):
        weights.load_weights(path, task="sr", sr_factor=4)
    blur = create_model("unet-small", **SMALL_UNET)
    blur_path = weights.save_weights(blur, tmp_path / "b.safetensors", {"kernel": "Gaussian_R2"})
    with pytest.raises(SeiUserError, match="another kernel than --kernel Box_R3"):
        weights.load_weights(blur_path, task="deblurring", kernel="Box_R3")


@pytest.fixture(scope="module")
def paper_deblurring_state() -> dict[str, torch.Tensor]:
    """A state dict in the layout of the paper's SwinIR files (original SwinIR key names)."""
    return create_model("swinir", task="deblurring").state_dict()


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "params-checkpoint"])
def test_paper_pt_files_load_into_swinir(tmp_path, paper_deblurring_state, wrapped):
    path = tmp_path / f"{PAPER_NAME}.pt"
    torch.save({"params": paper_deblurring_state} if wrapped else paper_deblurring_state, path)
    model, metadata = weights.load_weights(path, task="deblurring")
    assert metadata["task"] == "deblurring" and model.sei_config["name"] == "swinir"
    assert (metadata["kernel"], metadata["method"]) == ("Gaussian_R2", "proposed")  # from the file name
    key = "layers.0.residual_group.blocks.0.attn.qkv.weight"
    assert torch.equal(model.state_dict()[key], paper_deblurring_state[key])
    with pytest.raises(SeiUserError, match="trained for task=deblurring, but task=sr"):
        weights.load_weights(path, task="sr", sr_factor=2)


def test_infer_task_from_paper_keys():
    for factor in (2, 3, 4):
        state = create_model(
            "swinir", task="sr", sr_factor=factor, embed_dim=12, depths=[1], num_heads=[2]
        ).state_dict()
        assert weights.infer_swinir_task(state) == ("sr", factor)


def test_paper_names_of_both_schemes_parse():
    old = weights.parse_paper_name("Deblurring_Box_R3_Noise5_Supervised_Urban100")
    assert (old["task"], old["kernel"], old["noise_level"], old["method"], old["dataset"]) == (
        "deblurring",
        "Box_R3",
        5.0,
        "sup",
        "urban100",
    )
    new = weights.parse_paper_name("Div2K-Train_Deblurring_Gaussian_R2_Noise5_SEI")
    assert (new["kernel"], new["method"], new["dataset"]) == ("Gaussian_R2", "proposed", "div2k")
    sr = weights.parse_paper_name("SR_X2_PyTorch_Noise5_CSS_Resize256_BatchSize8")
    assert (sr["task"], sr["sr_factor"], sr["method"]) == ("sr", 2, "css")


def test_shipped_names_resolve_to_the_package_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(SeiUserError, match="'sei-sr_x2-noise5' are not installed"):
        weights.load_weights("sei-sr_x2-noise5")
    model = create_model("unet-small", task="sr", sr_factor=2, **SMALL_UNET)
    weights.save_weights(
        model, tmp_path / "sei-sr_x2-noise5.safetensors", {"noise_level": 5.0, "method": "proposed"}
    )
    loaded, metadata = weights.load_weights("sei-sr_x2-noise5", task="sr")
    assert loaded.sei_config == model.sei_config and metadata["method"] == "proposed"


def test_unknown_names_and_missing_files_are_user_errors():
    with pytest.raises(SeiUserError, match="did you mean sei-sr_x2-noise5"):
        weights.resolve_weights("sei-sr_x2_noise5")
    with pytest.raises(SeiUserError, match="weights file not found: missing.pt"):
        weights.resolve_weights("missing.pt")


# --- a loopback server standing in for the Hugging Face hub ----------------------------------------


class _Hub(LoopbackHub):
    """Serves ``/<repo>/resolve/main/<file>`` with the headers huggingface_hub reads (commit, ETag, size);
    ``truncate`` cuts the body short, as a dropped connection would (huggingface_hub then retries
    resumes five times, one second apart)."""

    files: dict[str, bytes] = {}
    truncate = False

    def lookup(self) -> bytes | None:
        prefix = f"/{weights.HF_REPO}/resolve/main/"
        return self.files.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None

    def send_body(self, body: bytes) -> None:
        if self.truncate:
            # the first transfer dies half-way and every resume (a Range request) dies before any byte
            self.wfile.write(b"" if self.headers.get("Range") else body[: len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)


@pytest.fixture
def hub(paper_deblurring_state):
    buffer = io.BytesIO()
    torch.save(paper_deblurring_state, buffer)
    _Hub.files = {f"{PAPER_NAME}.pt": buffer.getvalue(), f"{CUT_NAME}.pt": buffer.getvalue()[:4096]}
    _Hub.truncate = False
    with serving(_Hub) as server:
        yield server


def _sei(args: list[str], home: Path, endpoint: str, offline: bool = False) -> subprocess.CompletedProcess:
    return sei_against_hub(args, home, endpoint, offline)


@pytest.mark.slow
def test_download_truncated_then_complete_then_offline_from_cache(hub, tmp_path):
    endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    _Hub.truncate = True
    cut = _sei(["weights", "download", CUT_NAME], tmp_path, endpoint)
    assert cut.returncode == 2 and f"downloading {CUT_NAME}.pt" in cut.stderr, cut.stderr
    assert not list((tmp_path / "hub").rglob(f"{CUT_NAME}.pt"))  # nothing half-written is cached
    blobs = [p for p in (tmp_path / "hub").rglob("blobs/*") if not p.name.endswith(".incomplete")]
    assert not blobs
    _Hub.truncate = False
    info = _sei(["weights", "info", PAPER_NAME, "--json"], tmp_path, endpoint)
    assert info.returncode == 0, info.stderr
    metadata = json.loads(info.stdout)
    assert (metadata["task"], metadata["kernel"], metadata["method"]) == (
        "deblurring",
        "Gaussian_R2",
        "proposed",
    )
    hub.shutdown()  # the hub is gone: only the cache can answer now
    cached = _sei(["weights", "info", PAPER_NAME, "--json"], tmp_path, endpoint, offline=True)
    assert cached.returncode == 0 and json.loads(cached.stdout)["model"]["name"] == "swinir", cached.stderr


def test_offline_and_not_cached_says_which_file_and_how_to_get_it(tmp_path, monkeypatch, capsys):
    """In this process: huggingface_hub reads HF_HUB_OFFLINE and its cache folder at import, so the test
    sets them where it looks them up at call time (the subprocess tests above and in test_export.py run
    the CLI with the variables themselves)."""
    from huggingface_hub import constants

    from sei.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["weights", "info", "SR_X2_PyTorch_Noise5_CSS_Resize256_BatchSize8"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "SR_X2_PyTorch_Noise5_CSS_Resize256_BatchSize8.pt" in lines[0]
    assert "sei weights download" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert not (tmp_path / "hub").exists() or not list((tmp_path / "hub").rglob("*.pt"))


def test_cli_list_and_info_on_a_local_file(tmp_path, capsys):
    from sei.cli import main

    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert "sei-gaussian_r2-noise5" in listed and "Div2K-Train_Deblurring" in listed
    model = create_model("dncnn-small", task="sr", sr_factor=3, channels=8, depth=3)
    path = weights.save_weights(
        model, tmp_path / "m.safetensors", {"noise_level": 5.0, "method": "css", "steps": 7}
    )
    assert main(["weights", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["method"], info["steps"], info["model"]["depth"]) == ("css", 7, 3)
    assert main(["weights", "download", "not-a-paper-name"]) == 2
    assert "not a paper weight name" in capsys.readouterr().err


def test_shipped_file_is_checked_against_its_sha256(tmp_path, monkeypatch):
    """A shipped weights file that no longer matches pretrained/SHA256SUMS is refused."""
    import sei.weights as weights
    from sei.models import create_model

    model = create_model("unet-small", task="deblurring", channels=8, levels=2)
    path = weights.save_weights(
        model, tmp_path / "sei-gaussian_r2-noise5.safetensors", {"kernel": "Gaussian_R2", "noise_level": 5.0}
    )
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    monkeypatch.setattr(weights, "PRETRAINED_DIR", tmp_path)
    assert weights.resolve_weights("sei-gaussian_r2-noise5")[0] == path
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(weights.SeiUserError, match="sha256"):
        weights.resolve_weights("sei-gaussian_r2-noise5")


def test_closest_shipped_model_is_the_nearest_blur_whatever_the_names(monkeypatch):
    """``sei restore``'s starting point: the shipped model with the user's kernel when there is one, else
    the one whose blur is nearest (frequency responses), never the first name in the catalogue."""
    from sei.inference import closest_shipped
    from sei.physics import get_kernel
    from sei.physics.state import kernel_distance

    gaussian, box = weights.PRETRAINED["sei-gaussian_r2-noise5"], weights.PRETRAINED["sei-box_r3-noise5"]
    for first, second in (("a", "z"), ("z", "a")):  # the names' order must not decide
        catalogue = {
            f"{first}-gaussian": dataclasses.replace(gaussian, name=f"{first}-gaussian"),
            f"{second}-box": dataclasses.replace(box, name=f"{second}-box"),
        }
        monkeypatch.setattr(weights, "PRETRAINED", catalogue)
        assert closest_shipped("deblurring", "Box_R3", None, 5) == f"{second}-box"
        assert closest_shipped("deblurring", "Gaussian_R2", None, 5) == f"{first}-gaussian"
        for psf in (disk_psf(2), disk_psf(3), disk_psf(4), get_kernel("Gaussian_R1"), get_kernel("Box_R4")):
            distances = {
                name: kernel_distance(get_kernel(cfg.kernel), psf) for name, cfg in catalogue.items()
            }
            assert closest_shipped("deblurring", psf, None, 5) == min(distances, key=distances.get)
        assert closest_shipped("deblurring", disk_psf(3), None, 5, same_kernel=True) is None


def test_photon_limited_data_start_from_the_photon_limited_model_and_gaussian_data_never_do():
    """The shipped catalogue has one model per noise model for Gaussian_R2: Poisson-Gaussian data (a gain)
    start from the photon-limited one whatever the blur (its denoising matters more than the nearest PSF),
    Gaussian data never do, and a problem with no photon-limited model (SR) falls back to the Gaussian one."""
    from sei.inference import closest_shipped, default_weights

    photon = "sei-gaussian_r2-photon30"
    assert weights.PRETRAINED[photon].noise_model == "poisson-gaussian"
    for psf in ("Gaussian_R2", "Gaussian_R1", "Box_R3", disk_psf(3)):
        assert (
            closest_shipped("deblurring", psf, None, 12, noise_model="poisson-gaussian", gain=25.5) == photon
        )
        assert (
            closest_shipped("deblurring", psf, None, 1.0) != photon
        )  # Gaussian data at the photon model's level
    assert closest_shipped("sr", None, 2, 12, noise_model="poisson-gaussian", gain=8.5) == "sei-sr_x2-noise5"
    # sei reconstruct without --weights: the same kernel and the same noise model, or nothing
    assert default_weights("deblurring", "Gaussian_R2", None, None, "poisson-gaussian") == photon
    assert default_weights("deblurring", "Gaussian_R2", None, 5.0) == "sei-gaussian_r2-noise5"
    with pytest.raises(SeiUserError, match="no shipped model"):
        default_weights("deblurring", "Box_R3", None, None, "poisson-gaussian")
