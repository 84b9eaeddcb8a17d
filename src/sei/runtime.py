"""Ground-floor runtime helpers, imported by every layer and importing nothing else of sei's (but its errors).

The facts about the machine a run is on and how it writes, none of them about the imaging problem:
device resolution, autocast / channels-last / native-bf16 detection, stable seed derivation, atomic
writes, parsing of durations, and progress bars.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import torch

from sei.errors import SeiUserError

# --- devices -------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device; CUDA asked but absent, or a name torch does not know, is a user
    error."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SeiUserError(
            f"--device {name} asked for CUDA, but no CUDA device is available; use --device cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise SeiUserError(f"unknown device {name!r}: {error}") from error


# --- autocast and memory format of the network passes --------------------------------------------

AutocastDtype = torch.dtype | Literal["auto"] | None
# --amp -> autocast of the network passes: "auto" is bf16 on CPUs with native bf16 (measured 2.1x per
# SEI step, no PSNR loss; docs/performance.md) and float32 elsewhere until measured.
AMP_DTYPES: dict[str, AutocastDtype] = {
    "auto": "auto",
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def _native_bfloat16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it,
    slower than float32."""
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(check is not None and check() for check in checks)


def resolve_autocast_dtype(autocast_dtype: AutocastDtype, device: torch.device) -> torch.dtype | None:
    """``"auto"``: bfloat16 on a CPU that computes it natively, float32 (``None``) elsewhere (on GPUs
    the lever was not measured)."""
    if autocast_dtype != "auto":
        return autocast_dtype
    return torch.bfloat16 if device.type == "cpu" and _native_bfloat16_cpu() else None


class NetworkRunner:
    """Calls ``model`` with the speed levers applied: inputs in channels-last memory format (the
    convolutions then run channels-last even with standard-format weights) and/or ``torch.autocast``.
    The output is returned as float32, so the physics and the loss arithmetic (the divergence is a
    difference of order tau) stay in full precision."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        autocast_dtype: torch.dtype | None,
        channels_last: bool,
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.model(inputs)
        with torch.autocast(inputs.device.type, dtype=self.autocast_dtype):
            output = self.model(inputs)
        return output.float()


# --- seeds ---------------------------------------------------------------------------------------


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (run seed, step, rank, purpose), the same on every machine
    (Python's ``hash`` is salted per process).

    >>> derive_seed(0, "step", 3) == derive_seed(0, "step", 3) != derive_seed(0, "step", 4)
    True
    """
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# --- atomic writes -------------------------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """``write(handle)`` into a temporary file in ``path``'s folder, fsync, then rename over ``path``:
    a reader (or a crash) sees the old file or the new one, never half of one; the temporary file is
    removed whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a text (UTF-8), e.g. a results or manifest JSON file."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


# --- durations -----------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$"
)


def parse_duration(text: str | float) -> float:
    """A wall-clock budget in seconds from ``"90"``, ``"90s"``, ``"10m"``, ``"1h30m"``; zero or negative is an
    error.

    >>> parse_duration("10m"), parse_duration("1h30m"), parse_duration("45")
    (600.0, 5400.0, 45.0)
    """
    value = str(text).strip().lower()
    match = _DURATION.match(value)
    if not value or match is None or not any(match.groupdict().values()):
        raise SeiUserError(f"cannot read the time limit {text!r}: write e.g. 90s, 10m or 1h30m")
    seconds = 3600 * float(match["h"] or 0) + 60 * float(match["m"] or 0) + float(match["s"] or 0)
    if seconds <= 0:
        raise SeiUserError(f"the time limit must be positive, got {text!r}")
    return seconds


# --- progress bars -------------------------------------------------------------------------------

_quiet = False  # set by a command's --quiet: every bar of that process stays silent


def set_quiet(quiet: bool = True) -> None:
    """Silence (or allow) every progress bar of this process: the CLI calls it for ``--quiet``."""
    global _quiet
    _quiet = bool(quiet)


def progress_enabled() -> bool:
    """Whether bars are shown: not under ``--quiet``, and only when stderr is a terminal (a log file or a
    pipe gets no carriage-return clutter)."""
    import sys

    return not _quiet and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress_bar(
    iterable=None, *, desc: str, total: int | None = None, unit: str = "it", leave: bool = True, **options
):
    """A tqdm bar on stderr with what is being done (``desc``), a rate and a time estimate; disabled
    (a plain pass-through) under ``--quiet`` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        leave=leave,
        dynamic_ncols=True,
        disable=not progress_enabled(),
        **options,
    )
