"""The photo pool script's pure parts: tiling grid, DEP-5 attribution lookup, flat-tile detection."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("photo_pool", Path(__file__).parents[1] / "benchmarks" / "photo_pool.py")
photo_pool = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("photo_pool", photo_pool)  # dataclasses look their module up while the script runs
_spec.loader.exec_module(photo_pool)

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: example

Files: *
Copyright: 2010 Team
License: LGPL-2.1+

Files: nature/Aqua.jpg
       nature/Garden.jpg
Copyright: 2008, Charles Barbin
           2009, Someone Else
License: GPL-2+
 long licence text
"""


def test_tiles_are_disjoint_centred_and_inside():
    boxes = photo_pool.tile_boxes(4352, 2448, 1024)
    assert len(boxes) == 4 and all((r - l, b - t) == (1536, 1024) for l, t, r, b in boxes)
    assert min(l for l, *_ in boxes) == (4352 - 2 * 1536) // 2 and max(b for *_, b in boxes) <= 2448
    assert photo_pool.tile_boxes(2560, 3837, 1024) == [(512, 382, 2048, 1406), (512, 1406, 2048, 2430), (512, 2430, 2048, 3454)]
    assert photo_pool.tile_boxes(1280, 1000, 1024) == [(0, 0, 1280, 1000)]  # small photographs give one tile


def test_last_matching_copyright_paragraph_wins():
    paragraphs = photo_pool.copyright_paragraphs(COPYRIGHT)
    assert photo_pool.credit(paragraphs, "nature/Garden.jpg") == {"copyright": "2008, Charles Barbin; 2009, Someone Else", "license": "GPL-2+"}
    assert photo_pool.credit(paragraphs, "nature/Dune.jpg") == {"copyright": "2010 Team", "license": "LGPL-2.1+"}


def test_detail_separates_flat_from_textured():
    generator = torch.Generator().manual_seed(0)
    gradient = torch.linspace(0, 1, 384).expand(3, 256, 384)
    assert photo_pool.detail(gradient) < 0.006 < photo_pool.detail(torch.rand(3, 256, 384, generator=generator))


def test_every_package_lists_distinct_photographs():
    photos = [(p.name, photo) for p in photo_pool.PACKAGES for photo in p.photos]
    assert len(photos) == len(set(photos)) == 38
