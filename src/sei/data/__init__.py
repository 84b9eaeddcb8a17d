"""Datasets, seeded measurements and training patches.

``load_images`` gives ``(identity, image)`` pairs from the paper's datasets (``div2k``, ``urban100``,
``ct``, downloaded on request), a folder, or the embedded ``samples`` (no download, the default);
``MeasuredImages`` attaches one fixed noisy measurement to each; ``MeasurementFolder`` reads
measurements alone; ``PatchDataset`` crops aligned training pairs from either.
"""

from __future__ import annotations

from sei.data.download import DownloadError, RemoteFile
from sei.data.measurements import MeasuredImages, MeasurementFolder, modcrop
from sei.data.patches import PatchDataset
from sei.data.samples import SAMPLES
from sei.data.sources import (
    DATASETS,
    DEFAULT_DATASET,
    DatasetSpec,
    default_data_root,
    load_folder,
    load_images,
)

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "SAMPLES",
    "DatasetSpec",
    "DownloadError",
    "MeasuredImages",
    "MeasurementFolder",
    "PatchDataset",
    "RemoteFile",
    "default_data_root",
    "load_folder",
    "load_images",
    "modcrop",
]
