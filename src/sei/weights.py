"""Weights files: save and load with metadata, pretrained names, Hugging Face downloads.

Every file ``sei`` writes is a ``.safetensors`` file whose metadata (key ``"sei"``, a JSON string)
holds the model's registry config plus the task it was trained for (kernel or SR factor, noise
level, method, steps), so :func:`load_weights` rebuilds the right network with no extra flags.
The paper's files (pickled SwinIR state dicts, optionally under a ``"params"`` key) carry no metadata;
their architecture follows from the file's keys, their name, and the caller's task.

Names resolve through two registries:

- ``PRETRAINED``: our own models, shipped in ``sei/pretrained/<name>.safetensors`` (work offline);
- the paper's Hugging Face repo ``jscanvic/scale-equivariant-imaging``, files ``<name>.pt``, both
  naming schemes (``Deblurring_Gaussian_R2_Noise5_Proposed``,
  ``Div2K-Train_Deblurring_Gaussian_R2_Noise5_SEI``, ``SR_X2_PyTorch_Noise5_CSS_Resize256_BatchSize8``).
  Downloads go through huggingface_hub, so ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and its cache apply.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sei.errors import SeiUserError
from sei.models import create_model
from sei.models.common import learned_state_dict, load_state_dict_checked
from sei.problem import DEFAULT_NOISE_LEVEL, GAUSSIAN, METHODS, POISSON_GAUSSIAN
from sei.runtime import atomic_write

if TYPE_CHECKING:
    from sei.physics import Operator

HF_REPO = "jscanvic/scale-equivariant-imaging"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
METADATA_KEY = "sei"
FORMAT = "sei-weights/1"
LOCAL_SUFFIXES = (".safetensors", ".pt", ".pth")
PHYSICS_PREFIX = "physics."  # tensors of the forward model (the blur kernel), beside the network's


@dataclass(frozen=True)
class PretrainedCfg:
    """What a shipped pretrained name stands for (the file's own metadata has the full model config)."""

    name: str
    task: str
    kernel: str | None
    sr_factor: int | None
    noise_level: float  # the Gaussian std (the read noise, with Poisson-Gaussian noise), 8-bit units
    method: str
    description: str
    noise_model: str = GAUSSIAN  # sei.problem.NOISE_MODELS
    gain: float | None = None  # the Poisson gain, 8-bit units (Poisson-Gaussian only)

    @property
    def path(self) -> Path:
        return PRETRAINED_DIR / f"{self.name}.safetensors"


PRETRAINED: dict[str, PretrainedCfg] = {
    cfg.name: cfg
    for cfg in (
        PretrainedCfg(
            "sei-gaussian_r2-noise5",
            "deblurring",
            "Gaussian_R2",
            None,
            5.0,
            "proposed",
            "deblurring, Gaussian blur std 2, noise 5/255, trained with SEI on CPU",
        ),
        PretrainedCfg(
            "sei-box_r3-noise5",
            "deblurring",
            "Box_R3",
            None,
            5.0,
            "proposed",
            "deblurring, 7x7 box blur (the paper's Urban100 kernel), noise 5/255, trained with SEI on CPU",
        ),
        PretrainedCfg(
            "sei-gaussian_r2-photon30",
            "deblurring",
            "Gaussian_R2",
            None,
            1.0,
            "proposed",
            "deblurring, Gaussian blur std 2, photon-limited: Poisson-Gaussian noise at 30 photons full "
            "scale (gain 8.5) and read noise 1/255, trained with SEI (PG-SURE) on CPU",
            noise_model=POISSON_GAUSSIAN,
            gain=8.5,
        ),
        PretrainedCfg(
            "sei-sr_x2-noise5",
            "sr",
            None,
            2,
            5.0,
            "proposed",
            "super-resolution x2, noise 5/255, trained with SEI on CPU",
        ),
        PretrainedCfg(
            "sei-sr_x4-noise5",
            "sr",
            None,
            4,
            5.0,
            "proposed",
            "super-resolution x4, noise 5/255, trained with SEI on CPU",
        ),
    )
}

# Names from the paper's repository and README (the repo holds more, following the same schemes).
PAPER_EXAMPLES = (
    "Deblurring_Gaussian_R2_Noise5_Proposed",
    "Deblurring_Box_R3_Noise5_Supervised_Urban100",
    "SR_X2_PyTorch_Noise5_CSS_Resize256_BatchSize8",
    "Div2K-Train_Deblurring_Gaussian_R2_Noise5_SEI",
)

_PAPER_NAME = re.compile(
    r"^(?:(?P<dataset>[A-Za-z0-9]+)-Train_)?"
    r"(?:Deblurring_(?P<kernel>(?:Gaussian|Box)_R\d+)|SR_X(?P<factor>\d+)(?:_[A-Za-z]+)?)"
    r"_Noise(?P<noise>\d+(?:\.\d+)?)_(?P<method>[A-Za-z0-9-]+)(?P<extra>(?:_\w+)?)$"
)


def parse_paper_name(name: str) -> dict[str, Any] | None:
    """Task, kernel or factor, noise level, method and dataset encoded in a paper weight name.

    >>> parse_paper_name("Div2K-Train_Deblurring_Gaussian_R2_Noise5_SEI")["kernel"]
    'Gaussian_R2'
    >>> info = parse_paper_name("SR_X2_PyTorch_Noise5_CSS_Resize256_BatchSize8")
    >>> info["task"], info["sr_factor"], info["method"]
    ('sr', 2, 'css')
    >>> parse_paper_name("my_weights") is None
    True
    """
    match = _PAPER_NAME.match(name)
    if match is None:
        return None
    extra = match["extra"].strip("_")
    dataset = match["dataset"] or (
        extra.split("_")[0] if extra and not extra.startswith("Resize") else "Div2K"
    )
    method = match["method"].lower()
    return {
        "task": "sr" if match["factor"] else "deblurring",
        "kernel": match["kernel"],
        "sr_factor": int(match["factor"]) if match["factor"] else None,
        "noise_level": float(match["noise"]),
        "method": METHODS.get(method, method),
        "dataset": dataset.lower(),
        "source": f"hf://{HF_REPO}/{name}.pt",
    }


# --- saving ---------------------------------------------------------------------------------------


def save_weights(
    model: nn.Module, path: str | Path, metadata: Mapping[str, Any], physics: Operator | None = None
) -> Path:
    """Write ``model``'s weights and metadata to a ``.safetensors`` file, atomically (tmp + rename).

    :param model: a network from :func:`sei.models.create_model` (it must carry ``sei_config``).
    :param metadata: JSON-serialisable facts about the training: ``kernel``, ``noise_level``,
        ``method``, ``steps``... The model's config is added under ``"model"`` and its task and SR
        factor are taken from it.
    :param physics: the operator the model was trained for: its description joins the metadata and
        its tensors (the blur kernel itself) are stored as ``physics.<name>``, so the file rebuilds
        the forward model anywhere (:func:`load_weights_with_physics`).
    """
    from safetensors.torch import save

    from sei.physics.state import physics_state

    config = getattr(model, "sei_config", None)
    if config is None:
        raise ValueError("save_weights needs a model built by sei.models.create_model (it has no sei_config)")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise SeiUserError(f"weights are written as .safetensors files, got {path}")
    physics_metadata, physics_tensors = physics_state(physics) if physics is not None else ({}, {})
    record = {
        **physics_metadata,
        **dict(metadata),
        "format": FORMAT,
        "model": dict(config),
        "task": config["task"],
        "sr_factor": config["sr_factor"],
    }
    text = json.dumps(record, sort_keys=True)
    # safetensors refuses tensors that share storage; cloning also detaches from the training graph
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in learned_state_dict(model).items()}
    tensors.update({PHYSICS_PREFIX + k: v.clone() for k, v in physics_tensors.items()})
    return atomic_write(path, lambda handle: handle.write(save(tensors, metadata={METADATA_KEY: text})))


# --- resolving names ------------------------------------------------------------------------------


def _download(name: str) -> Path:
    """The paper's ``<name>.pt`` from the hub (or huggingface_hub's cache)."""
    import httpx2  # huggingface_hub's HTTP client: a cut connection raises its TransportError
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    filename = f"{name}.pt"
    _hub_bars()
    try:
        return Path(hf_hub_download(repo_id=HF_REPO, filename=filename))
    except LocalEntryNotFoundError as error:
        raise SeiUserError(
            f"{filename} of {HF_REPO} is neither in the Hugging Face cache nor downloadable now "
            f"({_why(error)}); get it online with `sei weights download {name}` (or copy it and pass "
            "--weights PATH)"
        ) from error
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as error:
        raise SeiUserError(
            f"downloading {filename} from {HF_REPO} failed ({_why(error)}); retry, or pass a local file"
        ) from error


def _hub_bars() -> None:
    """huggingface_hub's download bars follow sei's: off under --quiet and when stderr is not a terminal."""
    from sei.runtime import progress_enabled

    if not progress_enabled():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


FOLDER_WEIGHTS = "weights.safetensors"  # the weights file of a run folder, an exported folder and a hub repo
_HUB_REPO = re.compile(r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


def _download_from_repo(repo_id: str, revision: str | None = None) -> Path:
    """``weights.safetensors`` of a hub model repository (or huggingface_hub's cache)."""
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    _hub_bars()
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=FOLDER_WEIGHTS, revision=revision))
    except LocalEntryNotFoundError as error:
        raise SeiUserError(
            f"{where} is not a local file or folder, and {FOLDER_WEIGHTS} of the hub repo {where} is "
            f"neither in the Hugging Face cache nor downloadable now ({_why(error)}); fetch it once online, "
            "or pass a local folder"
        ) from error
    except (RepositoryNotFoundError, EntryNotFoundError) as error:
        raise SeiUserError(
            f"{where} is not a local file or folder, and the hub has no model repo {where} holding "
            f"{FOLDER_WEIGHTS} ({_why(error)})"
        ) from error
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as error:
        raise SeiUserError(
            f"{where} is not a local file or folder, and downloading {FOLDER_WEIGHTS} from the hub repo "
            f"{where} failed ({_why(error)}); retry, or pass a local folder"
        ) from error


def _why(error: BaseException) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    return str(error).splitlines()[0][:160] if str(error) else type(error).__name__


def verify_shipped(path: Path) -> None:
    """Check a shipped file against ``pretrained/SHA256SUMS`` (written by scripts/ship_models.py)."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = dict(
        reversed(line.split(maxsplit=1)) for line in sums.read_text().splitlines() if line.strip()
    )
    if path.name not in expected:
        return
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected[path.name].strip():
        raise SeiUserError(
            f"{path} does not match its sha256 in {sums}: the file is corrupted; reinstall sei"
        )


def resolve_weights(spec: str | Path) -> tuple[Path, dict[str, Any]]:
    """A local file for ``spec`` plus what its name says about it.

    ``spec`` is a path to a ``.safetensors``/``.pt``/``.pth`` file, a folder holding
    ``weights.safetensors`` (a run or an exported model, see :mod:`sei.export`), one of our
    ``PRETRAINED`` names, a paper name, or a hub model repository ``user/repo`` (``user/repo@revision``,
    or ``hf://user/repo``) holding ``weights.safetensors``; hub files are downloaded through
    huggingface_hub on first use and come from its cache afterwards (``HF_HUB_OFFLINE=1``: cache only).
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():  # a paper file keeps its name when copied: read what the name says
        return path, {k: v for k, v in (parse_paper_name(path.stem) or {}).items() if k != "source"}
    if path.is_dir():
        if not (path / FOLDER_WEIGHTS).is_file():
            raise SeiUserError(
                f"the folder {text} holds no {FOLDER_WEIGHTS} (a finished run or a `sei weights export` "
                "folder does)"
            )
        return path / FOLDER_WEIGHTS, {}
    hub = _HUB_REPO.match(text)
    if hub is not None and not text.endswith(LOCAL_SUFFIXES):
        return _download_from_repo(hub["repo"], hub["revision"]), {}
    if text in PRETRAINED:
        cfg = PRETRAINED[text]
        if not cfg.path.is_file():
            raise SeiUserError(
                f"pretrained weights {text!r} are not installed ({cfg.path} is missing); "
                "reinstall sei, or train them with `sei train`"
            )
        verify_shipped(cfg.path)
        return cfg.path, {
            "task": cfg.task,
            "kernel": cfg.kernel,
            "sr_factor": cfg.sr_factor,
            "noise_level": cfg.noise_level,
            "method": cfg.method,
        }
    info = parse_paper_name(text)
    if info is not None:
        return _download(text), info
    if path.suffix in LOCAL_SUFFIXES or os.sep in text:
        raise SeiUserError(f"weights file not found: {text}")
    close = difflib.get_close_matches(text, [*PRETRAINED, *PAPER_EXAMPLES], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SeiUserError(
        f"{text!r} is neither a weights file nor a known pretrained name{hint} (see `sei weights list`)"
    )


# --- loading --------------------------------------------------------------------------------------


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a weights file and its sei metadata (``None`` for files without it)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get(METADATA_KEY)
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise SeiUserError(f"{path} is not a readable safetensors file ({error})") from error
        return tensors, json.loads(raw) if raw else None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises assorted pickle/zip errors for foreign files
        raise SeiUserError(
            f"{path} is not a weights file torch can read with weights_only=True ({error})"
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("params"), Mapping):
        state = state["params"]  # a training checkpoint of the paper's code
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SeiUserError(
            f"{path} holds no state dict (expected tensors, or a checkpoint with a 'params' key)"
        )
    return dict(state), None


def infer_swinir_task(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None]:
    """Task and SR factor of a paper SwinIR state dict, read from its upsampler's shapes.

    The classical upsampler stacks one conv + pixel shuffle per factor 2 (``upsample.0``,
    ``upsample.2``...), or a single 9x conv for factor 3; no upsampler means deblurring.
    """
    convs = sorted(int(k.split(".")[1]) for k in state if re.fullmatch(r"upsample\.\d+\.weight", k))
    if not convs:
        return "deblurring", None
    if (
        len(convs) == 1
        and state[f"upsample.{convs[0]}.weight"].shape[0] == 9 * state["upsample.0.weight"].shape[1]
    ):
        return "sr", 3
    return "sr", 2 ** len(convs)


def _check(field: str, stored: Any, requested: Any, source: str) -> None:
    if requested is not None and stored is not None and str(stored).lower() != str(requested).lower():
        raise SeiUserError(
            f"{source} was trained for {field}={stored}, but {field}={requested} was requested; "
            f"use weights trained for {field}={requested}, or drop the flag to use these as they are"
        )


def load_weights_with_physics(
    spec: str | Path,
    device: str | torch.device = "cpu",
    task: str | None = None,
    kernel: Any = None,
    sr_factor: int | None = None,
    noise_level: float | None = None,
    noise_model: str | None = None,
    gain: float | None = None,
) -> tuple[nn.Module, dict[str, Any], Operator]:
    """Rebuild the network a weights file was trained as, load it (eval mode, on ``device``), and
    rebuild the forward model it was trained for.

    :param spec: a local file or a pretrained name (see :func:`resolve_weights`).
    :param task: the task the caller needs; a file trained for another task is an error.
    :param kernel: the caller's kernel (name, file or tensor): compared by value with the kernel the
        file holds (the same PSF under another path passes; another PSF is an error). Files written
        before kernels travelled with the weights hold only a name: a kernel named by a file is then
        taken from ``kernel``.
    :param sr_factor: the caller's SR factor, checked likewise (and used for paper files).
    :param noise_level: the noise level of the returned physics (default: the one stored).
    :param noise_model: the caller's noise model: one other than the stored one is an error.
    :param gain: the Poisson gain of the returned physics (default: the stored one; Poisson-Gaussian only).
    :return: ``(model, metadata, physics)``; for paper files the metadata comes from the name and the keys.
    """
    from sei.physics.state import check_kernel, physics_from_state

    path, name_info = resolve_weights(spec)
    tensors, metadata = read_weights(path)
    physics_tensors = {
        k[len(PHYSICS_PREFIX) :]: tensors.pop(k) for k in list(tensors) if k.startswith(PHYSICS_PREFIX)
    }
    if metadata is None:  # a paper SwinIR file: the keys tell the task, the name the rest
        key_task, key_factor = infer_swinir_task(tensors)
        metadata = {
            **name_info,
            "task": key_task,
            "sr_factor": key_factor,
            "method": name_info.get("method"),
            "model": {"name": "swinir", "task": key_task, "sr_factor": key_factor},
        }
        for field in ("task", "sr_factor"):
            _check(field, name_info.get(field), metadata[field], f"{path} (named {spec})")
    _check("task", metadata.get("task"), task, str(spec))
    if metadata.get("task") == "sr":
        _check("sr_factor", metadata.get("sr_factor"), sr_factor, str(spec))
    noise = float(metadata.get("noise_level", DEFAULT_NOISE_LEVEL) if noise_level is None else noise_level)
    _check("noise_model", metadata.get("noise_model", GAUSSIAN), noise_model, str(spec))
    if gain is not None and metadata.get("noise_model", GAUSSIAN) == GAUSSIAN:
        raise SeiUserError(
            f"{spec} was trained for Gaussian noise; --gain applies to Poisson-Gaussian noise only"
        )
    if metadata.get("task") == "deblurring" and "kernel" in physics_tensors:
        check_kernel(physics_tensors["kernel"], kernel, str(spec))
        physics = physics_from_state(metadata, physics_tensors, noise_level=noise, gain=gain)
    elif metadata.get("task") == "deblurring":  # an older file or a paper file: the kernel is only named
        physics = _physics_of_named_kernel(metadata.get("kernel"), kernel, noise, str(spec))
    else:  # through the stored state, so the noise model (Gaussian or Poisson-Gaussian) comes back too
        physics = physics_from_state({**metadata, "task": "sr"}, {}, noise_level=noise, gain=gain)
    model = create_model(**metadata["model"])
    load_state_dict_checked(model, tensors, str(path))
    return model.to(device).eval(), metadata, physics.to(device)


def _physics_of_named_kernel(stored: str | None, requested: Any, noise: float, source: str) -> Operator:
    """The blur of a file that names its kernel without holding it (written before sei 0.2, or the
    paper's)."""
    from sei.physics import get_kernel, kernel_name, make_physics
    from sei.physics.kernels import is_kernel_name
    from sei.physics.state import check_kernel

    if stored is not None and is_kernel_name(stored):
        if requested is not None:
            check_kernel(get_kernel(stored), requested, source)
        return make_physics("deblurring", kernel=stored, noise_level=noise)
    if requested is None:
        raise SeiUserError(
            f"{source} was trained for the kernel file {stored!r} but does not hold the kernel itself (an "
            "older weights file); pass --kernel PATH_TO_THAT_FILE"
        )
    if stored is not None and not isinstance(requested, torch.Tensor) and kernel_name(requested) != stored:
        raise SeiUserError(
            f"{source} was trained for the kernel file {stored!r}, not {requested}; pass that file with "
            "--kernel"
        )
    return make_physics("deblurring", kernel=requested, noise_level=noise)


def load_weights(
    spec: str | Path,
    device: str | torch.device = "cpu",
    task: str | None = None,
    kernel: Any = None,
    sr_factor: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The network of :func:`load_weights_with_physics` and the file's metadata."""
    model, metadata, _ = load_weights_with_physics(spec, device, task, kernel, sr_factor)
    return model, metadata
