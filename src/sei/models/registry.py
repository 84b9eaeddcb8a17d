"""The model registry (timm style): named entrypoints, each an architecture and its own differences.

An entrypoint is registered beside its architecture (``sei.models.cpu``, ``sei.models.swinir``) as
``register_model(name, Architecture, **differences)``. The architecture's constructor takes
``(task, sr_factor, **options)``; its signature is the one place where the options' defaults are
written, and an entrypoint writes only what it changes (``unet-base`` is ``ResUNet`` with
``levels=4, blocks=2``). :func:`create_model` checks the overrides against those options (a typo is
an error, never ignored) and stores the resolved configuration on the model as ``model.sei_config``,
which is exactly what it needs to rebuild it (weights files carry it as metadata).
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from sei.errors import SeiUserError
from sei.problem import output_scale

Architecture = Callable[..., nn.Module]
_PROBLEM_ARGUMENTS = ("task", "sr_factor")  # given by create_model, not options of an entrypoint
_ENTRYPOINTS: dict[str, tuple[Architecture, dict[str, Any]]] = {}


def constructor_options(architecture: Architecture) -> dict[str, Any]:
    """The options of ``architecture(task, sr_factor, **options)`` with their defaults, read from its
    signature; a tuple default is given as a list, as a weights file's JSON metadata stores it."""
    options = {}
    for name, parameter in inspect.signature(architecture).parameters.items():
        if name in _PROBLEM_ARGUMENTS:
            continue
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise ValueError(f"{architecture.__name__}: option {name!r} must be a named parameter")
        if parameter.default is parameter.empty:
            raise ValueError(f"{architecture.__name__}: option {name!r} has no default")
        default = parameter.default
        options[name] = list(default) if isinstance(default, tuple) else default
    return options


def register_model(name: str, architecture: Architecture, /, **differences: Any) -> None:
    """Register ``name`` as ``architecture`` with ``differences`` from its constructor's defaults.

    :param str name: the model name (lowercase, dashes).
    :param architecture: a class (or function) called as ``architecture(task, sr_factor, **options)``.
    :param differences: the options this entrypoint sets otherwise than the constructor's defaults.
    """
    if name in _ENTRYPOINTS:
        raise ValueError(f"model {name!r} is registered twice")
    defaults = constructor_options(architecture)
    unknown = sorted(set(differences) - set(defaults))
    if unknown:
        raise ValueError(f"model {name!r}: {architecture.__name__} has no option {', '.join(unknown)}")
    _ENTRYPOINTS[name] = (architecture, {**defaults, **differences})


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell pattern (``"swinir*"``)."""
    names = sorted(_ENTRYPOINTS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def _lookup(name: str) -> tuple[Architecture, dict[str, Any]]:
    key = name.replace("_", "-").lower()
    if key not in _ENTRYPOINTS:
        close = difflib.get_close_matches(key, list(_ENTRYPOINTS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SeiUserError(f"unknown model {name!r}{hint} (available: {', '.join(list_models())})")
    return _ENTRYPOINTS[key]


def create_model(
    name: str, task: str = "deblurring", sr_factor: int | None = None, **overrides: Any
) -> nn.Module:
    """Build a registered network for a task; ``None`` overrides mean "use the default".

    :param str name: a name from :func:`list_models`.
    :param str task: ``"deblurring"`` or ``"sr"``.
    :param int sr_factor: the SR factor (default 2 for SR; must be ``None`` for deblurring).
    :param overrides: constructor options that replace the entrypoint's values.
    :return: the module, with ``model.sei_config`` set.

    >>> model = create_model("dncnn-small", task="sr", sr_factor=3, depth=4)
    >>> model.sei_config["depth"], model.sei_config["sr_factor"]
    (4, 3)
    """
    architecture, defaults = _lookup(name)
    scale = output_scale(task, sr_factor)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise SeiUserError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(defaults)}"
        )
    kwargs = {**copy.deepcopy(defaults), **overrides}  # sei_config never shares a list with the registry
    sr = scale if task == "sr" else None
    model = architecture(task=task, sr_factor=sr, **kwargs)
    model.sei_config = {"name": name.replace("_", "-").lower(), "task": task, "sr_factor": sr, **kwargs}
    return model
