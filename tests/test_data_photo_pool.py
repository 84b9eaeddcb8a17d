"""The photo pool script's pure parts: tiling grid, DEP-5 attribution lookup, flat-tile detection."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "photo_pool", Path(__file__).parents[1] / "scripts" / "photo_pool.py"
)
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
    assert photo_pool.tile_boxes(2560, 3837, 1024) == [
        (512, 382, 2048, 1406),
        (512, 1406, 2048, 2430),
        (512, 2430, 2048, 3454),
    ]
    assert photo_pool.tile_boxes(1280, 1000, 1024) == [(0, 0, 1280, 1000)]  # small photographs give one tile


def test_last_matching_copyright_paragraph_wins():
    paragraphs = photo_pool.copyright_paragraphs(COPYRIGHT)
    assert photo_pool.credit(paragraphs, "nature/Garden.jpg") == {
        "copyright": "2008, Charles Barbin; 2009, Someone Else",
        "license": "GPL-2+",
    }
    assert photo_pool.credit(paragraphs, "nature/Dune.jpg") == {
        "copyright": "2010 Team",
        "license": "LGPL-2.1+",
    }


def test_detail_separates_flat_from_textured():
    generator = torch.Generator().manual_seed(0)
    gradient = torch.linspace(0, 1, 384).expand(3, 256, 384)
    assert (
        photo_pool.detail(gradient) < 0.006 < photo_pool.detail(torch.rand(3, 256, 384, generator=generator))
    )


def test_every_package_lists_distinct_photographs():
    photos = [(p.name, photo) for p in photo_pool.PACKAGES for photo in p.photos]
    assert photos and len(photos) == len(set(photos))


def test_held_out_photographs_are_pool_photographs_never_cut_into_tiles():
    every = {photo for package in photo_pool.PACKAGES for photo in package.photos}
    assert (
        len(photo_pool.HELD_OUT) == len(set(photo_pool.HELD_OUT)) == 10 and set(photo_pool.HELD_OUT) <= every
    )
    training = {photo for package in photo_pool.PACKAGES for photo in photo_pool.training_photos(package)}
    assert training.isdisjoint(photo_pool.HELD_OUT) and training | set(photo_pool.HELD_OUT) == every


def test_held_out_folder_is_beside_the_pool_not_inside():
    pool = Path("/data/photo_pool")  # loaders read every image below --dataset, so inside would leak them
    assert photo_pool.held_out_folder(pool) == Path("/data/photo_pool_held_out")
    assert not photo_pool.held_out_folder(pool).is_relative_to(pool)


def test_held_out_photographs_are_about_one_megapixel_and_never_enlarged():
    short = photo_pool.held_out_size(6028, 3391)
    assert abs(short * round(6028 * short / 3391) - 1e6) < 2e3
    assert photo_pool.held_out_size(900, 600) == 600


def test_build_keeps_held_out_photographs_out_of_the_tiles(tmp_path, monkeypatch):
    """The whole build on two fake photographs, one of them held out: it is exported whole, never tiled."""
    import json

    import numpy as np
    from PIL import Image

    from sei.data import load_images

    held, kept = photo_pool.HELD_OUT[0], "kept.jpg"
    package = photo_pool.Package("fake-wallpapers", "usr/share/backgrounds", "bg", (kept, held))
    output = tmp_path / "pool"
    root = output / ".cache" / package.name
    (root / package.folder).mkdir(parents=True)
    (root / "usr/share/doc" / package.name).mkdir(parents=True)
    (root / "usr/share/doc" / package.name / "copyright").write_text(COPYRIGHT)
    generator = np.random.default_rng(0)
    for name in (kept, held):
        pixels = generator.integers(0, 256, (120, 180, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / package.folder / name, format="PNG")  # any suffix: PIL reads it
    monkeypatch.setattr(photo_pool, "PACKAGES", (package,))
    monkeypatch.setattr(photo_pool, "download_deb", lambda name, cache: cache / f"{name}_1_all.deb")
    monkeypatch.setattr(photo_pool, "deb_version", lambda deb: "1")
    monkeypatch.setattr(photo_pool, "extract", lambda deb, members, destination: None)
    monkeypatch.setattr(photo_pool, "HELD_OUT_PIXELS", 6000)
    manifest = photo_pool.build(output, tile_short=1024, size=32, min_detail=0.0, keep_cache=True)
    assert {tile["photo"] for tile in manifest["tiles"]} == {kept}
    assert [h["photo"] for h in manifest["held_out"]] == [held] and manifest["held_out"][0]["size"] == [
        94,
        63,
    ]
    stem = Path(held).stem
    assert not any(stem in path.name for path in output.rglob("*.png"))
    assert not any(stem in identity for identity, _ in load_images(str(output), split="train"))
    held_folder = photo_pool.held_out_folder(output)
    assert (held_folder / manifest["held_out"][0]["file"]).is_file()
    assert json.loads((held_folder / "manifest.json").read_text())["photos"][0]["photo"] == held
    assert "held out (94x63)" in (held_folder / "ATTRIBUTION.md").read_text()


def test_a_built_pool_holds_no_held_out_photograph():
    manifest_path = photo_pool.DEFAULT_OUTPUT / "manifest.json"
    if not manifest_path.is_file():
        import pytest

        pytest.skip("no photo pool built here (python scripts/photo_pool.py)")
    import json

    manifest = json.loads(manifest_path.read_text())
    if manifest["settings"].get("format") != photo_pool.FORMAT_VERSION:
        import pytest

        pytest.skip("the photo pool here is of an older format: rebuild it")
    assert not {tile["photo"] for tile in manifest["tiles"]} & set(photo_pool.HELD_OUT)
    stems = [Path(photo).stem for photo in photo_pool.HELD_OUT]
    assert not [
        p.name for p in photo_pool.DEFAULT_OUTPUT.rglob("*.png") if any(f"__{s}_y" in p.name for s in stems)
    ]
