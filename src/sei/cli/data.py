"""Download the paper's datasets and see what is available.

Datasets live under the data root: --root, else $SEI_DATA_ROOT, else ~/.cache/sei/data. Downloads are
checksummed and moved into place only when complete; $SEI_DATA_MIRROR (or --mirror) points at a URL
prefix or folder that holds the same files (DIV2K_train_HR.zip, Urban100_HR.tar.gz, ...).
`samples` ships with the installed packages and needs no download.

examples:
  sei data info
  sei data download urban100
  sei data download div2k --split test --root /data/sei
  sei data download ct --mirror file:///mnt/datasets
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sei.data import DATASETS, default_data_root, load_images
from sei.data.sources import SPLITS
from sei.errors import SeiUserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    download = actions.add_parser("download", help="download and install a dataset")
    download.add_argument("name", help=f"dataset: {', '.join(DATASETS)}")
    download.add_argument(
        "--split", choices=SPLITS, default=None, help="only the files of this split (default: all)"
    )
    download.add_argument("--force", action="store_true", help="download again even if installed")
    info = actions.add_parser("info", help="list datasets, where they live and whether they are installed")
    for sub in (download, info):
        sub.add_argument(
            "--root",
            "--data-root",
            type=Path,
            default=None,
            help="data root (default $SEI_DATA_ROOT or ~/.cache/sei/data)",
        )
    download.add_argument(
        "--mirror",
        default=None,
        help="URL prefix or folder holding the dataset files (default $SEI_DATA_MIRROR)",
    )
    download.add_argument("--quiet", action="store_true", help="no progress bar")


def _download(args: argparse.Namespace) -> int:
    if args.name not in DATASETS:
        raise SeiUserError(f"unknown dataset {args.name!r}: choose one of {', '.join(DATASETS)}")
    spec = DATASETS[args.name]
    if not spec.files:
        print(f"{args.name}: {spec.description}; nothing to download")
        return 0
    folder = spec.download(
        args.root, split=args.split, mirror=args.mirror, progress=not args.quiet, force=args.force
    )
    splits = SPLITS if args.split is None else (args.split,)
    counts = ", ".join(f"{split} {len(load_images(args.name, split, root=args.root))}" for split in splits)
    print(f"{args.name} installed in {folder} ({counts} images)")
    return 0


def _info(args: argparse.Namespace) -> int:
    root = args.root if args.root is not None else default_data_root()
    print(f"data root: {root}")
    for name, spec in DATASETS.items():
        states = []
        for split in SPLITS:
            if not spec.installed(root, split):
                states.append(f"{split} missing")
                continue
            try:
                states.append(f"{split} {len(load_images(name, split, root=root))}")
            except SeiUserError:  # e.g. files deleted by hand since the download
                states.append(f"{split} incomplete")
        where = "packaged" if not spec.files else str(spec.folder(root))
        print(f"  {name:<9} {' | '.join(states):<26} {where}\n            {spec.description}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _download(args) if args.action == "download" else _info(args)
