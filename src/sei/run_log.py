"""Run logging: where a training run's numbers and pictures go while it trains.

A :class:`RunLog` takes groups of named scalars at a step (``"train"``: the loss terms, learning rate,
epoch, training seconds and seconds per step; ``"validation"``: PSNR / SSIM or SURE and the
SURE-gaming gap) and, at each validation, an image panel (measurement | estimate | ground truth).
Backends, chosen with ``sei train --log``:

- ``csv``: ``metrics.csv`` (group ``train``) and ``validation.csv`` (group ``validation``), one row per
  call; what ``loss.png``, the benchmarks and :mod:`sei.export` read. Images are not written.
- ``tensorboard``: event files under ``tensorboard/`` (the ``tensorboard`` package's writer, through
  ``torch.utils.tensorboard``); tags ``<group>/<name>``, the panel as ``validation/panel``.
- ``none``: nothing.

Only rank 0 of a distributed run logs (:func:`open_run_log` returns a :class:`NullLog` elsewhere).
A resumed run drops what was logged after the checkpoint it resumes from: CSV rows are cut, and
TensorBoard is told to purge the steps after it, so every step appears once.

>>> parse_backends("csv,tensorboard"), parse_backends("none"), parse_backends("tensorboard")
(('csv', 'tensorboard'), (), ('tensorboard',))
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sei.errors import SeiUserError
from sei.runtime import atomic_write

if TYPE_CHECKING:
    from sei.physics import Operator

BACKENDS = ("csv", "tensorboard")
DEFAULT = "csv,tensorboard"
CSV_FILES = {"train": "metrics.csv", "validation": "validation.csv"}
BOOKKEEPING = (
    "step",
    "epoch",
    "lr",
    "seconds",
    "step_seconds",
    "noise_level",
)  # train columns that are not loss terms (noise_level: UNSURE's estimate)
TENSORBOARD_DIR = "tensorboard"
PANEL_CROP = 192  # side of the measurement crop shown in the panel (bounded cost on large photographs)
PANEL_GAP = 4  # white pixels between the panel's images


def parse_backends(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"csv,tensorboard"`` / ``"none"`` / ``["csv"]`` -> the backends, in :data:`BACKENDS` order."""
    if spec is None:
        spec = DEFAULT
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if names == ["none"] or (
        not names and not isinstance(spec, str)
    ):  # "none", or an already parsed empty choice
        return ()
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise SeiUserError(
            f"--log takes none or a comma-separated list of {', '.join(BACKENDS)}, got {spec!r}"
        )
    return tuple(b for b in BACKENDS if b in names)


class RunLog:
    """The interface (and the ``none`` backend): scalars by group, images, flush, close."""

    wants_images = False

    def scalars(self, step: int, group: str, values: Mapping[str, float]) -> None:
        pass

    def image(self, step: int, tag: str, image: torch.Tensor) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


NullLog = RunLog


class CsvLog(RunLog):
    """One CSV file per group; a column that appears later (e.g. after a resume by a newer sei) widens the
    file."""

    def __init__(self, out_dir: Path, start_step: int = 0) -> None:
        self.out_dir = out_dir
        for name in CSV_FILES.values():  # drop rows logged after the checkpoint we resume from
            path = out_dir / name
            if path.exists():
                rows = [row for row in self._read(path) if int(row["step"]) <= start_step]
                self._write(path, rows)

    @staticmethod
    def _read(path: Path) -> list[dict[str, str]]:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    @staticmethod
    def _write(path: Path, rows: list[Mapping[str, Any]]) -> None:
        if not rows:
            path.unlink()
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))

    def scalars(self, step: int, group: str, values: Mapping[str, float]) -> None:
        path = self.out_dir / CSV_FILES.get(group, f"{group}.csv")
        row = {"step": step, **values}
        if path.exists():
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), [])
            if set(row) - set(header):  # a new column: rewrite with the union (rare; small files)
                self._write(path, [*self._read(path), row])
                return
        else:
            header = list(row)
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)


class TensorBoardLog(RunLog):
    """Event files under ``OUT/tensorboard/``, written by the ``tensorboard`` package's writer."""

    wants_images = True

    def __init__(self, out_dir: Path, start_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # the package is pinned; a hand-made environment may lack it
            raise SeiUserError(
                "--log tensorboard needs the tensorboard package (pip install tensorboard); or pass --log csv"
            ) from error
        # purge_step: a resumed run hides what the interrupted one logged after its checkpoint
        self.writer = SummaryWriter(
            log_dir=str(out_dir / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None
        )

    def scalars(self, step: int, group: str, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{group}/{name}", float(value), global_step=step)

    def image(self, step: int, tag: str, image: torch.Tensor) -> None:
        self.writer.add_image(
            tag, image.detach().float().clamp(0, 1).cpu(), global_step=step, dataformats="CHW"
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MultiLog(RunLog):
    """Several backends as one."""

    def __init__(self, logs: list[RunLog]) -> None:
        self.logs = logs
        self.wants_images = any(log.wants_images for log in logs)

    def scalars(self, step: int, group: str, values: Mapping[str, float]) -> None:
        for log in self.logs:
            log.scalars(step, group, values)

    def image(self, step: int, tag: str, image: torch.Tensor) -> None:
        for log in self.logs:
            if log.wants_images:
                log.image(step, tag, image)

    def flush(self) -> None:
        for log in self.logs:
            log.flush()

    def close(self) -> None:
        for log in self.logs:
            log.close()


def open_run_log(
    out_dir: Path, backends: str | Iterable[str] | None = DEFAULT, enabled: bool = True, start_step: int = 0
) -> RunLog:
    """The run log of ``out_dir`` (``enabled=False``: ranks other than 0, which log nothing)."""
    names = parse_backends(backends)
    if not enabled or not names:
        return NullLog()
    out_dir.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[], RunLog]] = {
        "csv": lambda: CsvLog(out_dir, start_step),
        "tensorboard": lambda: TensorBoardLog(out_dir, start_step),
    }
    logs = [makers[name]() for name in names]
    return logs[0] if len(logs) == 1 else MultiLog(logs)


# --- the validation panel ---------------------------------------------------------------------------


def _same_height(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``image`` shown at ``height x width`` by pixel repetition (a low-resolution measurement stays
    blocky)."""
    if image.shape[-2:] == (height, width):
        return image
    return torch.nn.functional.interpolate(image[None], size=(height, width), mode="nearest")[0]


def side_by_side(images: list[torch.Tensor], gap: int = PANEL_GAP) -> torch.Tensor:
    """Images ``(C, H, W)`` in one row, each repeated to the largest height and width, white gaps between.

    >>> side_by_side([torch.zeros(3, 4, 4), torch.zeros(3, 8, 8)], gap=2).shape
    torch.Size([3, 8, 18])
    """
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    channels = max(image.shape[-3] for image in images)
    parts: list[torch.Tensor] = []
    for index, image in enumerate(images):
        if index:
            parts.append(torch.ones(channels, height, gap))
        parts.append(_same_height(image.float().cpu().clamp(0, 1), height, width).expand(channels, -1, -1))
    return torch.cat(parts, dim=-1)


@torch.no_grad()
def validation_panel(
    model: torch.nn.Module,
    physics: Operator,
    held_out: Any,
    training: Any,
    device: torch.device,
    crop: int = PANEL_CROP,
) -> torch.Tensor:
    """measurement | estimate | ground truth (when there is one) of the first held-out image (else the
    first training measurement), on a centre crop of ``crop`` measurement pixels."""
    source = held_out if held_out is not None and len(held_out) else training
    _, x, y = source[0]
    scale = physics.scale
    height, width = y.shape[-2:]
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    y = y[..., top : top + crop, left : left + crop]
    was_training = model.training
    model.eval()
    try:
        estimate = model(y[None].to(device))[0].float().cpu()
    finally:
        model.train(was_training)
    images = [y, estimate]
    if x is not None:
        images.append(
            x[..., top * scale : (top + y.shape[-2]) * scale, left * scale : (left + y.shape[-1]) * scale]
        )
    return side_by_side(images)
