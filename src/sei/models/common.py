"""Pieces shared by every network: padding to a multiple, the bicubic skip, state dicts loaded and checked."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sei.errors import SeiUserError

# Buffers that SwinIR recomputes from its configuration: the attention mask depends on the training
# patch size (img_size) and is rebuilt for any other size anyway, so files from other img_size load.
DERIVED_BUFFER_SUFFIXES = ("attn_mask", "relative_position_index")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` on the bottom and right up to multiples of ``multiple``.

    Reflection (as SwinIR does) avoids a dark seam; images smaller than the pad fall back to
    replication, which reflection cannot do.

    >>> pad_to_multiple(torch.zeros(1, 3, 37, 31), 8).shape
    torch.Size([1, 3, 40, 32])
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def upsample_bicubic(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by ``scale`` (identity for 1): the cheap skip connection of the CPU nets."""
    if scale == 1:
        return y
    return F.interpolate(y, scale_factor=scale, mode="bicubic", align_corners=False)


def learned_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the derived SwinIR buffers (they are rebuilt at construction)."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith(DERIVED_BUFFER_SUFFIXES)}


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly except for derived buffers; name the mismatching keys on failure.

    Accepts the paper's files: a bare state dict, or a checkpoint whose ``"params"`` key holds it.
    """
    if "params" in state and isinstance(state["params"], Mapping):
        state = state["params"]
    state = {k: v for k, v in state.items() if not k.endswith(DERIVED_BUFFER_SUFFIXES)}
    expected = learned_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                details.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise SeiUserError(
            f"weights in {source} do not fit this network ({'; '.join(details)}); "
            "check the task, SR factor and model name the weights were trained for"
        )
    model.load_state_dict(state, strict=False)
