"""Hub-ready model folders: ``sei weights export RUN_OR_FILE OUT_DIR [--push USER/REPO]``.

An exported folder holds everything a Hugging Face model repository needs, and loads back anywhere
with ``--weights OUT_DIR`` or, once pushed, ``--weights USER/REPO``:

- ``weights.safetensors``: the network's tensors, the forward model's tensors (``physics.kernel``) and
  sei's metadata (task, kernel, noise, method, steps, training time, the last validation...), the
  same format ``sei train`` writes (:mod:`sei.weights`);
- ``config.json``: the network's constructor configuration, ``create_model(**config)`` rebuilds it;
- ``README.md``: the model card, with the hub's YAML header (licence, library, tags, datasets,
  metrics) and a body saying what the model inverts (task, PSF, noise model), how it was trained
  (method, steps, wall time), how it validated, and how to use it;
- ``sample.png``: the sample figure the card shows, measured now on a bundled photograph.

Pushing goes through huggingface_hub (``HF_TOKEN`` or ``hf auth login``; ``HF_ENDPOINT`` applies).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sei.errors import SeiUserError

if TYPE_CHECKING:
    from sei.physics import Operator

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLE_FILE = "sample.png"
SAMPLE_IMAGE = "samples/monarch"  # the bundled test photograph of the card's figure
SAMPLE_SEED = 0
DEFAULT_LICENSE = "bsd-3-clause"  # the code's licence; the weights follow it unless the user says otherwise
KNOWN_DATASETS = ("div2k", "urban100", "ct", "samples")
METHOD_NAMES = {
    "proposed": "SEI (scale-equivariant imaging): SURE + scale-equivariance loss, measurements only",
    "sup": "supervised (ground truth pairs)",
    "css": "CSS (corrupted-to-corrupted, measurements only)",
    "ei-shift": "equivariant imaging with shifts (measurements only)",
    "ei-rotate": "equivariant imaging with rotations (measurements only)",
    "sure": "SURE only (measurements only)",
}
_OWN = ("format", "model", "task", "sr_factor")  # metadata keys that save_weights writes itself


# --- what the export knows about the model -----------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _run_facts(folder: Path) -> dict[str, Any]:
    """What a run folder adds to the weights' metadata: the configuration and the validation history."""
    facts: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        try:
            facts["config"] = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as error:
            raise SeiUserError(f"{folder / 'config.json'} is not valid JSON ({error})") from error
    validation = _read_csv(folder / "validation.csv")
    if validation:
        facts["validation_history"] = [
            {k: _number(v) for k, v in row.items() if v != ""} for row in validation
        ]
    return facts


def resolve_source(source: str | Path) -> tuple[str, dict[str, Any]]:
    """The weights to export (a file or a name for :func:`sei.weights.load_weights_with_physics`) and the
    run facts when ``source`` is a run folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise SeiUserError(
                f"{path} holds no {WEIGHTS_FILE}: export a finished run (sei train writes it at the end) or "
                "a weights file"
            )
        return str(weights), _run_facts(path)
    return str(source), {}


# --- the card ------------------------------------------------------------------------------------------


def _task_text(metadata: dict[str, Any]) -> str:
    if metadata.get("task") == "sr":
        return f"super-resolution x{metadata.get('sr_factor')}"
    return "deblurring"


def _psf_text(metadata: dict[str, Any], physics: Operator) -> str:
    if metadata.get("task") == "sr":
        return (
            f"antialiased bicubic downsampling by {metadata.get('sr_factor')} (torch "
            "`interpolate(mode='bicubic', antialias=True)`)"
        )
    kernel = getattr(physics, "kernel", None)
    shape = (
        f", {tuple(kernel.shape[-2:])[0]}x{tuple(kernel.shape[-2:])[1]} pixels" if kernel is not None else ""
    )
    label = metadata.get("kernel") or "custom"
    label = (
        Path(str(label)).name if any(sep in str(label) for sep in "/\\") else label
    )  # a user's path: its name only
    boundary = metadata.get("boundary")
    return f"`{label}`{shape}, stored in `weights.safetensors` as `physics.kernel`" + (
        f"; boundary {boundary}" if boundary else ""
    )


def _dataset_text(metadata: dict[str, Any]) -> tuple[str, str | None]:
    """How the card names the training data, and the hub ``datasets`` entry (known datasets only:
    a user's folder is named by its last component, never by its full path)."""
    dataset = str(metadata.get("dataset") or "")
    if not dataset:
        return "not recorded", None
    if dataset.lower() in KNOWN_DATASETS:
        return dataset, dataset.lower()
    return f"the user's own images (`{Path(dataset).name}`)", None


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "not recorded"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _validation_lines(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return ["- no validation was recorded"]
    lines = []
    if "val_psnr" in record:
        lines.append(
            f"- PSNR {record['val_psnr']:.2f} dB"
            + (f", SSIM {record['val_ssim']:.4f}" if "val_ssim" in record else "")
            + f" on held-out images at step {int(record.get('step', 0))}"
        )
    if "val_sure" in record:
        lines.append(
            f"- SURE estimate of the measurement-domain error {record['val_sure']:.4g} (exact divergence) "
            f"at step {int(record.get('step', 0))}: there was no ground truth"
        )
    if "val_sure_gap" in record:
        lines.append(
            f"- SURE-gaming gap {record['val_sure_gap']:.3g} sigma^2 (about 0 for an honest network; below "
            "-0.5 it games the finite-difference estimator)"
        )
    return lines or ["- no validation was recorded"]


def yaml_header(metadata: dict[str, Any], license_id: str) -> dict[str, Any]:
    """The hub's model-card metadata."""
    _, dataset = _dataset_text(metadata)
    tags = [
        "sei",
        "deepinv",
        "image-restoration",
        "super-resolution" if metadata.get("task") == "sr" else "deblurring",
        "self-supervised" if metadata.get("method") not in ("sup", None) else "supervised",
        "scale-equivariant-imaging",
        "pytorch",
        "safetensors",
    ]
    header: dict[str, Any] = {
        "license": license_id,
        "library_name": "sei",
        "pipeline_tag": "image-to-image",
        "tags": tags,
    }
    if dataset:
        header["datasets"] = [dataset]
    header["metrics"] = ["psnr", "ssim"]
    return header


def model_card(
    metadata: dict[str, Any],
    physics: Operator,
    facts: dict[str, Any],
    sample: dict[str, Any] | None,
    repo_id: str | None,
    license_id: str = DEFAULT_LICENSE,
) -> str:
    """The ``README.md`` of an exported folder."""
    import yaml

    config = facts.get("config") or {}
    model = metadata.get("model") or {}
    method = str(metadata.get("method") or "unknown")
    dataset_text, _ = _dataset_text(metadata)
    repo = repo_id or "USER/REPO"
    noise = metadata.get("noise_level")
    estimated = " (estimated from the measurements)" if metadata.get("noise_level_estimated") else ""
    validation = metadata.get("validation") or ((facts.get("validation_history") or [None])[-1])
    options = ", ".join(f"{k}={v}" for k, v in model.items() if k not in ("name", "task", "sr_factor"))
    title = (
        f"sei {model.get('name', 'network')}: {_task_text(metadata)}, noise {noise:g}/255"
        if noise is not None
        else "sei model"
    )
    lines = [
        "---",
        yaml.safe_dump(yaml_header(metadata, license_id), sort_keys=False).strip(),
        "---",
        "",
        f"# {title}",
        "",
        f"A {model.get('name', '?')} network for {_task_text(metadata)}, trained with sei "
        "(Scale-Equivariant Imaging on deepinv: self-supervised deblurring and super-resolution from "
        "measurements alone).",
        "",
        "## What it inverts",
        "",
        f"- **Task**: {_task_text(metadata)}",
        f"- **PSF / operator**: {_psf_text(metadata, physics)}",
        f"- **Noise model**: additive white Gaussian, sigma {noise:g} in 8-bit units (= "
        f"{float(noise) / 255:.4f} in [0, 1]){estimated}"
        if noise is not None
        else "- **Noise model**: not recorded",
        "",
        "## How it was trained",
        "",
        f"- **Method**: `{method}`: {METHOD_NAMES.get(method, method)}"
        + (f"; stop-gradient {metadata['stop_gradient']}" if "stop_gradient" in metadata else "")
        + (
            f"; SURE divergence {config['sure_divergence']}"
            if config.get("sure_divergence") and method in ("proposed", "sure")
            else ""
        ),
        f"- **Network**: `{model.get('name', '?')}`" + (f" ({options})" if options else ""),
        f"- **Training data**: {dataset_text}",
        f"- **Steps**: {metadata.get('steps', 'not recorded')}"
        + (
            f" (batch {config['batch_size']} of {config['patch_size']}x{config['patch_size']} patches, lr "
            f"{config['lr']})"
            if {"batch_size", "patch_size", "lr"} <= set(config)
            else ""
        ),
        (
            f"- **Wall time**: {_duration(metadata['train_seconds'])} of training (validations excluded)"
            + (f" on `{config['device']}`" if config.get("device") else "")
        )
        if metadata.get("train_seconds") is not None
        else "- **Wall time**: not recorded (weights written before sei recorded it)",
        f"- **Seed**: {metadata['seed']}" if "seed" in metadata else "- **Seed**: not recorded",
        *([f"- **Initialised from**: `{metadata['init']}`"] if metadata.get("init") else []),
        "",
        "## Validation",
        "",
        *_validation_lines(validation),
        "",
    ]
    if sample is not None:
        lines += [
            "## Sample",
            "",
            f"![measurement | estimate | ground truth]({SAMPLE_FILE})",
            "",
            f"The bundled test photograph `{sample['image']}` measured with this operator and noise (seed "
            f"{SAMPLE_SEED}): measurement {sample['input_psnr']:.2f} dB, estimate {sample['psnr']:.2f} dB, "
            f"SSIM {sample['ssim']:.4f} (Y-PSNR after 8-bit quantisation, the paper's protocol; written by "
            "`sei weights export`).",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```sh",
        "source scripts/activate   # in a clone of the sei repository: puts `sei` on the PATH",
        f"sei reconstruct {'lowres' if metadata.get('task') == 'sr' else 'blurry'}.png restored.png "
        f"--weights {repo}",
        f"sei test --weights {repo}                    # PSNR / SSIM on the bundled test photographs",
        "```",
        "",
        "```python",
        "from sei.weights import load_weights_with_physics",
        f'model, metadata, physics = load_weights_with_physics("{repo}")   # the network and the operator '
        "it inverts",
        "```",
        "",
        "The folder also loads offline: `--weights PATH/TO/THIS/FOLDER`; `config.json` is the network's "
        "configuration (`sei.models.create_model(**config)`).",
        "",
        "## Limits",
        "",
        "Trained for one operator at one noise level: other blurs or noise levels need fine-tuning "
        "(`sei train --measurements DIR --init " + repo + "`, or `sei restore`).",
        "",
        "## Citation",
        "",
        "J. Scanvic, M. Davies, P. Abry, J. Tachella, *Scale-Equivariant Imaging: Self-Supervised Learning "
        "for Image Super-Resolution and Deblurring*, IEEE Transactions on Computational Imaging, 2026 "
        "(arXiv 2312.11232).",
        "",
    ]
    return "\n".join(lines)


# --- the sample figure ---------------------------------------------------------------------------------


@torch.no_grad()
def sample_figure(model: torch.nn.Module, physics: Operator, path: Path) -> dict[str, Any]:
    """measurement | estimate | ground truth (| PSF) on a bundled test photograph; returns its metrics."""
    from sei.data import load_images
    from sei.data.measurements import modcrop
    from sei.evaluation import image_metrics
    from sei.figures import image_grid

    images = dict(load_images("samples", split="test"))
    name = SAMPLE_IMAGE if SAMPLE_IMAGE in images else next(iter(images))
    x = images[name]
    scale = physics.scale
    x = modcrop(x, scale)[None]
    device = next(model.parameters()).device
    y = physics.measure(x.to(device), seed=SAMPLE_SEED)
    estimate = model(y)[0].float().cpu()
    psnr, ssim = image_metrics(estimate, x[0])
    shown_input = physics.initial_estimate(y)[0].cpu()
    input_psnr = image_metrics(shown_input, x[0])[0]
    panels = [
        (f"measurement ({input_psnr:.2f} dB)", y[0].cpu()),
        (f"estimate ({psnr:.2f} dB)", estimate),
        ("ground truth", x[0]),
    ]
    kernel = getattr(physics, "kernel", None)
    if physics.task == "deblurring" and kernel is not None:
        psf = kernel.detach().float().cpu().reshape(-1, *kernel.shape[-2:])[:1]
        panels.append((f"PSF {tuple(psf.shape[-2:])}", (psf / psf.max()).expand(3, -1, -1)))
    image_grid([panels], path)
    return {"image": name, "psnr": psnr, "ssim": ssim, "input_psnr": input_psnr}


# --- the folder ----------------------------------------------------------------------------------------


def export_model(
    source: str | Path,
    out_dir: str | Path,
    repo_id: str | None = None,
    overwrite: bool = False,
    license_id: str = DEFAULT_LICENSE,
    figure: bool = True,
) -> Path:
    """Write the hub-ready folder of ``source`` (a run folder, a weights file or a pretrained name) to
    ``out_dir``, all at once: the folder appears complete or not at all.

    :param repo_id: the repository the card's usage lines name (default ``USER/REPO``).
    :param overwrite: replace an existing non-empty ``out_dir``.
    :param figure: measure and draw the sample figure (a bundled photograph through the network).
    """
    from sei.weights import load_weights_with_physics, save_weights

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise SeiUserError(
            f"{out_dir} exists and is not empty; pass --overwrite to replace it, or choose another folder"
        )
    spec, facts = resolve_source(source)
    model, metadata, physics = load_weights_with_physics(spec)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        kept = {k: v for k, v in metadata.items() if k not in _OWN}
        if "train_seconds" not in kept and facts.get(
            "validation_history"
        ):  # a run written before sei logged it in the weights
            kept["train_seconds"] = facts["validation_history"][-1].get("train_seconds")
        save_weights(model, staging / WEIGHTS_FILE, kept, physics=physics)
        (staging / CONFIG_FILE).write_text(
            json.dumps(dict(metadata["model"]), indent=2, sort_keys=True) + "\n"
        )
        sample = sample_figure(model, physics, staging / SAMPLE_FILE) if figure else None
        card = model_card(
            {
                **kept,
                "model": metadata["model"],
                "task": metadata.get("task"),
                "sr_factor": metadata.get("sr_factor"),
            },
            physics,
            facts,
            sample,
            repo_id,
            license_id,
        )
        (staging / CARD_FILE).write_text(card)
        umask = os.umask(0)
        os.umask(umask)
        for path in (
            staging,
            *staging.iterdir(),
        ):  # a folder to share: the usual permissions, not mkstemp's private ones
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def read_card_header(path: Path) -> dict[str, Any]:
    """The YAML header of a model card (``README.md``)."""
    import yaml

    text = Path(path).read_text()
    if not text.startswith("---\n"):
        raise SeiUserError(f"{path} has no YAML header")
    return yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an exported folder to the hub repository ``repo_id`` (created if missing); returns the commit
    URL."""
    import httpx2  # huggingface_hub's HTTP client: a refused or cut connection raises its errors
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE) if not (folder / name).is_file()]
    if missing:
        raise SeiUserError(
            f"{folder} is not an exported model folder (missing {', '.join(missing)}); run `sei weights "
            "export` first"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, commit_message="Upload a sei model (sei weights export)"
        )
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = "; log in with `hf auth login` or set HF_TOKEN" if status in (401, 403) else ""
        raise SeiUserError(
            f"pushing {folder} to {repo_id} failed ({str(error).splitlines()[0][:160]}){hint}"
        ) from error
    except (httpx2.HTTPError, OSError, ValueError) as error:
        raise SeiUserError(f"pushing {folder} to {repo_id} failed ({error})") from error
    return str(getattr(commit, "commit_url", commit))
