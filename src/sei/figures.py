"""Figures a person would rather look at than read: grids of images with titles."""

from __future__ import annotations

from pathlib import Path

import torch


def image_grid(rows: list[list[tuple[str, torch.Tensor]]], path: Path, dpi: int = 100) -> None:
    """Save a grid of ``(title, (C, H, W) image)`` panels, one list per row, shown nearest-neighbour
    at their own size (a low-resolution measurement stays visibly low-resolution)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sei.imageio import to_uint8

    columns = max(len(row) for row in rows)
    aspect = max(image.shape[-2] / image.shape[-1] for row in rows for _, image in row)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(4 * columns, (4 * aspect + 0.5) * len(rows)), squeeze=False
    )
    for row_axes, row in zip(axes, rows, strict=True):
        for axis in row_axes:
            axis.axis("off")
        for axis, (title, image) in zip(row_axes, row, strict=False):
            array = to_uint8(image)
            axis.imshow(
                array[..., 0] if array.shape[-1] == 1 else array,
                cmap="gray",
                interpolation="nearest",
                vmin=0,
                vmax=255,
            )
            axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
