"""Hub-ready exports: the folder (weights with physics, config.json, model card, sample figure) loads back
anywhere, `sei test --weights FOLDER` equals the run's weights, and a loopback hub takes the push and
serves it back to `--weights USER/REPO` (then offline, from the cache)."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import LoopbackHub, sei_against_hub, serving, tiny_config
from sei.cli import main
from sei.export import CARD_FILE, CONFIG_FILE, SAMPLE_FILE, WEIGHTS_FILE, export_model, read_card_header
from sei.models import create_model
from sei.models.common import load_state_dict_checked
from sei.training import train
from sei.weights import load_weights_with_physics, read_weights

REPO = "someone/sei-tiny"


@pytest.fixture(scope="module")
def run(tmp_path_factory, photo_folder) -> Path:
    """A finished 4-step SEI run with two validations."""
    config = tiny_config(
        dataset=str(photo_folder),
        max_steps=4,
        checkpoint_interval=4,
        val_interval=2,
        amp="none",
        kernel="Gaussian_R1.5",
        noise_level=3.0,
    )
    out = tmp_path_factory.mktemp("run") / "run"
    train(config, out, progress=False, log="csv")
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    return export_model(run, tmp_path_factory.mktemp("export") / "model", repo_id=REPO)


def test_export_folder_rebuilds_the_same_network_and_operator(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        [WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, SAMPLE_FILE]
    )
    source_model, source_metadata, source_physics = load_weights_with_physics(run / WEIGHTS_FILE)
    model, metadata, physics = load_weights_with_physics(exported)  # the folder itself is a --weights spec
    y = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(model(y), source_model(y))
    assert (
        torch.equal(physics.kernel, source_physics.kernel)
        and physics.noise_level == source_physics.noise_level == 3.0
    )
    assert {k: metadata[k] for k in ("kernel", "method", "steps", "train_seconds", "validation")} == {
        k: source_metadata[k] for k in ("kernel", "method", "steps", "train_seconds", "validation")
    }
    # config.json alone rebuilds the network, which takes the file's tensors
    config = json.loads((exported / CONFIG_FILE).read_text())
    rebuilt = create_model(**config)
    tensors, _ = read_weights(exported / WEIGHTS_FILE)
    load_state_dict_checked(
        rebuilt, {k: v for k, v in tensors.items() if not k.startswith("physics.")}, "exported"
    )
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(y), source_model(y))
    assert oct((exported / WEIGHTS_FILE).stat().st_mode & 0o044) == oct(
        0o044
    )  # readable by others: it is to be shared


def test_model_card_has_the_hub_header_and_the_runs_facts(run, exported):
    header = read_card_header(exported / CARD_FILE)
    assert (
        header["license"] == "bsd-3-clause"
        and header["library_name"] == "sei"
        and header["pipeline_tag"] == "image-to-image"
    )
    assert {"deblurring", "self-supervised", "sei"} <= set(header["tags"]) and header["metrics"] == [
        "psnr",
        "ssim",
    ]
    assert "datasets" not in header  # a user's folder is no hub dataset (and its path is not published)
    card = (exported / CARD_FILE).read_text()
    _, metadata, _ = load_weights_with_physics(run / WEIGHTS_FILE)
    validation = metadata["validation"]
    with open(run / "validation.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert float(last["val_psnr"]) == pytest.approx(validation["val_psnr"])
    for text in (
        "**Task**: deblurring",
        "`Gaussian_R1.5`, 11x11 pixels",
        "sigma 3 in 8-bit units",
        "`proposed`: SEI",
        "**Steps**: 4",
        f"PSNR {validation['val_psnr']:.2f} dB, SSIM {validation['val_ssim']:.4f}",
        f"SURE-gaming gap {validation['val_sure_gap']:.3g}",
        f"sei test --weights {REPO}",
        "](sample.png)",
    ):
        assert text in card, text
    assert str(run.parent) not in card  # no local path leaks into a published card
    from PIL import Image

    with Image.open(exported / SAMPLE_FILE) as image:
        assert (
            image.format == "PNG" and image.width > 3 * image.height
        )  # measurement | estimate | truth | PSF in a row


def test_cli_test_on_the_folder_equals_the_runs_weights(run, exported, tmp_path, capsys):
    results = []
    for spec in (str(run / WEIGHTS_FILE), str(exported)):
        out = tmp_path / f"{len(results)}.json"
        assert main(["test", "--weights", spec, "--max_images", "1", "--json", str(out), "--quiet"]) == 0
        results.append(json.loads(out.read_text())["images"])
    assert results[0] == results[1]


def test_export_user_errors(run, exported, tmp_path, capsys):
    assert main(["weights", "export", str(run), str(exported)]) == 2  # not empty, no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    empty_run = tmp_path / "unfinished"
    empty_run.mkdir()
    assert main(["weights", "export", str(empty_run), str(tmp_path / "x")]) == 2
    assert "holds no weights.safetensors" in capsys.readouterr().err
    assert main(["weights", "info", str(run), "--push", REPO]) == 2
    assert "belong to `sei weights export`" in capsys.readouterr().err
    assert main(["weights", "export", str(run), str(tmp_path / "y"), "--push", "not a repo"]) == 2
    assert not (tmp_path / "y").exists()
    with pytest.raises(Exception, match="holds no weights.safetensors"):
        load_weights_with_physics(empty_run)


def test_overwrite_replaces_the_folder_atomically(run, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export_model(run, target, overwrite=True, figure=False)
    assert sorted(p.name for p in target.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE, CARD_FILE])
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".model.")
    ]  # no staging folder left behind


# --- a loopback server answering the part of the hub's API that an upload and a download use ---------


class _Hub(LoopbackHub):
    """``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/<repo>/preupload/<rev>`` (every file
    "regular": its bytes travel inside the commit), ``/api/models/<repo>/commit/<rev>`` (NDJSON, base64
    files), and ``HEAD/GET /<repo>/resolve/<rev>/<file>`` of what was committed."""

    repos: dict[str, dict[str, bytes]] = {}
    requests: list[str] = []
    commit = "c" * 40

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.requests.append(f"POST {self.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Authorization") != "Bearer hf_loopback":
            return self._json(401, {"error": "Invalid credentials"})
        if self.path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            if repo in self.repos:
                return self._json(409, {"error": "You already created this model repo"})
            self.repos[repo] = {}
            return self._json(200, {"url": f"http://{self.headers['Host']}/{repo}"})
        if self.path == "/api/validate-yaml":
            text = json.loads(body)["content"]
            header = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
            if not isinstance(header, dict) or "license" not in header:
                return self._json(400, {"errors": [{"message": "no license in the YAML header"}]})
            return self._json(200, {"warnings": []})
        parts = self.path.split("/")  # /api/models/<user>/<name>/<preupload|commit>/<rev>
        repo = "/".join(parts[3:5])
        if len(parts) == 7 and parts[5] == "preupload" and repo in self.repos:
            files = json.loads(body)["files"]
            return self._json(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )
        if len(parts) == 7 and parts[5] == "commit" and repo in self.repos:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    assert item["value"]["encoding"] == "base64"
                    self.repos[repo][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return self._json(
                200,
                {
                    "commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{'c' * 40}",
                    "commitOid": "c" * 40,
                },
            )
        return self._json(404, {"error": f"not served here: {self.path}"})

    def lookup(self) -> bytes | None:
        self.requests.append(f"{self.command} {self.path}")
        parts = self.path.split("/")  # /<user>/<name>/resolve/<rev>/<file>
        return (
            self.repos.get("/".join(parts[1:3]), {}).get("/".join(parts[5:]))
            if len(parts) >= 6 and parts[3] == "resolve"
            else None
        )

    def missing_headers(self) -> dict[str, str]:
        return {
            "X-Error-Code": "RepoNotFound"
            if "/".join(self.path.split("/")[1:3]) not in self.repos
            else "EntryNotFound"
        }


@pytest.fixture
def hub():
    _Hub.repos, _Hub.requests = {}, []
    with serving(_Hub) as server:
        yield server


def _sei(
    args: list[str], home: Path, endpoint: str, offline: bool = False, token: str = "hf_loopback"
) -> subprocess.CompletedProcess:
    return sei_against_hub(args, home, endpoint, offline, timeout=180, HF_TOKEN=token)


@pytest.mark.slow
def test_push_then_test_from_the_hub_then_offline_from_the_cache(run, tmp_path, hub):
    endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    denied = _sei(
        ["weights", "export", str(run), str(tmp_path / "denied"), "--push", REPO, "--no_figure"],
        tmp_path,
        endpoint,
        token="hf_wrong",
    )
    assert (
        denied.returncode == 2
        and "HF_TOKEN" in denied.stderr
        and len(denied.stderr.strip().splitlines()) == 1
    ), denied.stderr
    pushed = _sei(
        ["weights", "export", str(run), str(tmp_path / "model"), "--push", REPO], tmp_path, endpoint
    )
    assert pushed.returncode == 0, pushed.stderr
    local = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}
    assert _Hub.repos[REPO] == local  # every file arrived, byte for byte
    assert "POST /api/validate-yaml" in _Hub.requests  # the hub checked the card's YAML header

    reference = tmp_path / "local.json"
    assert (
        main(
            [
                "test",
                "--weights",
                str(tmp_path / "model"),
                "--max_images",
                "2",
                "--json",
                str(reference),
                "--quiet",
            ]
        )
        == 0
    )
    from_hub = _sei(
        ["test", "--weights", REPO, "--max_images", "2", "--json", str(tmp_path / "hub.json"), "--quiet"],
        tmp_path,
        endpoint,
    )
    assert from_hub.returncode == 0, from_hub.stderr
    expected = json.loads(reference.read_text())["images"]
    assert json.loads((tmp_path / "hub.json").read_text())["images"] == expected

    hub.shutdown()  # the hub is gone: the cache answers
    offline = _sei(
        ["test", "--weights", REPO, "--max_images", "2", "--json", str(tmp_path / "offline.json"), "--quiet"],
        tmp_path,
        endpoint,
        offline=True,
    )
    assert offline.returncode == 0, offline.stderr
    assert json.loads((tmp_path / "offline.json").read_text())["images"] == expected
    missing = _sei(["weights", "info", "someone/never-pushed"], tmp_path, endpoint, offline=True)
    assert (
        missing.returncode == 2
        and "someone/never-pushed" in missing.stderr
        and len(missing.stderr.strip().splitlines()) == 1
    )


@pytest.mark.slow
def test_unknown_hub_repo_is_a_one_line_user_error(tmp_path, hub):
    endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    result = _sei(["weights", "info", "nobody/nothing"], tmp_path, endpoint)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "hub has no model repo nobody/nothing" in result.stderr, result.stderr


def test_hub_repo_specs_and_local_paths_are_told_apart(tmp_path):
    from sei.weights import _HUB_REPO

    assert _HUB_REPO.match("someone/sei-tiny")["repo"] == "someone/sei-tiny"
    match = _HUB_REPO.match("hf://someone/sei-tiny@v1.0")
    assert (match["repo"], match["revision"]) == ("someone/sei-tiny", "v1.0")
    assert (
        _HUB_REPO.match("runs/a/weights") is None
        and _HUB_REPO.match("Deblurring_Gaussian_R2_Noise5_Proposed") is None
    )
    with pytest.raises(
        Exception, match="weights file not found"
    ):  # a missing local file is never sent to the hub
        load_weights_with_physics("runs/missing.safetensors")
