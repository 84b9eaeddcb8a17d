"""The model registry (timm style): ``@register_model`` entrypoints looked up by name.

An entrypoint takes ``(task, sr_factor, **overrides)`` and returns an ``nn.Module``. The registry
checks the overrides against the entrypoint's defaults (a typo is an error, never ignored) and
stores the resolved configuration on the model as ``model.sei_config``, which is exactly what
:func:`create_model` needs to rebuild it (weights files carry it as metadata).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from sei.errors import SeiUserError
from sei.problem import output_scale

Builder = Callable[..., nn.Module]
_ENTRYPOINTS: dict[str, tuple[Builder, dict[str, Any]]] = {}


def register_model(defaults: dict[str, Any]) -> Callable[[Builder], Builder]:
    """Register ``fn`` under its name (underscores become dashes) with its default constructor kwargs.

    ``fn(task, sr_factor, **kwargs)`` builds the network; ``defaults`` lists every accepted kwarg.
    """

    def decorate(fn: Builder) -> Builder:
        name = fn.__name__.replace("_", "-")
        if name in _ENTRYPOINTS:
            raise ValueError(f"model {name!r} is registered twice")
        _ENTRYPOINTS[name] = (fn, dict(defaults))
        return fn

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell pattern (``"swinir*"``)."""
    names = sorted(_ENTRYPOINTS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def _lookup(name: str) -> tuple[Builder, dict[str, Any]]:
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
    :param overrides: constructor keyword arguments that replace the entrypoint's defaults.
    :return: the module, with ``model.sei_config`` set.

    >>> model = create_model("dncnn-small", task="sr", sr_factor=3, depth=4)
    >>> model.sei_config["depth"], model.sei_config["sr_factor"]
    (4, 3)
    """
    builder, defaults = _lookup(name)
    scale = output_scale(task, sr_factor)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise SeiUserError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are {', '.join(defaults)}"
        )
    kwargs = {**defaults, **overrides}
    sr = scale if task == "sr" else None
    model = builder(task=task, sr_factor=sr, **kwargs)
    model.sei_config = {"name": name.replace("_", "-").lower(), "task": task, "sr_factor": sr, **kwargs}
    return model
