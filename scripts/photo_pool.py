"""Build a DIV2K-like folder of real photographs from Debian wallpaper packages (offline benchmarks).

DIV2K cannot be downloaded on the machines here, but four Debian packages ship about forty real
high-resolution photographs under free licences (see docs/data.md). This script fetches them with
``apt-get download`` (no install, no root needed once the package lists exist), extracts only the
chosen photographs and the packages' copyright files, cuts each photograph into non-overlapping
1024x1536 tiles (DIV2K's 2:3 aspect at a similar scale) and resizes every tile so that its shorter
side is 256, bicubic with antialiasing, exactly as ``sei.data.load_images`` does. Tiles with almost
no detail (open sky, an out-of-focus background) are left out: they teach a deblurring network nothing.

Ten photographs (``HELD_OUT``) are never cut into training tiles: they are the test images of the
own-measurements benchmark (benchmarks/own_measurements.py), real photographs that no shipped model saw.
They are exported whole, resized (bicubic, antialiased, aspect kept) so that each is about 1 MP, as 8-bit
PNGs in a sibling folder (``<output>_held_out/``, by default ``benchmarks/photo_pool_held_out/``) with
their own manifest and attribution. The folder is a sibling, not a subfolder, because loaders read every
image below ``--dataset`` (recursively).

The output folder holds the PNG tiles, ``manifest.json`` (tile -> photograph, package, licence) and
``ATTRIBUTION.md`` generated from the packages' ``debian/copyright``; it is git-ignored and must never
be committed. Running the script again does nothing when the pool is complete and up to date.

usage:
  python scripts/photo_pool.py                   # -> benchmarks/photo_pool/ (+ photo_pool_held_out/)
  python scripts/photo_pool.py --output /data/pool --keep-cache
then train or test on it with ``--dataset benchmarks/photo_pool``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps

from sei.imageio import resize_short_side, to_uint8
from sei.runtime import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]  # the repository
DEFAULT_OUTPUT = ROOT / "benchmarks" / "photo_pool"  # the benchmarks and the shipped models train on it
FORMAT_VERSION = 3  # bump when the tiling changes, so that existing pools are rebuilt (3: HELD_OUT left out)
HELD_OUT_PIXELS = 1_000_000  # each held-out photograph is resized to about this many pixels


@dataclass(frozen=True)
class Package:
    """A Debian package and the real photographs it ships (drawings, renders and logos are left out)."""

    name: str
    folder: str  # where the photographs are inside the package
    upstream_folder: str  # the same folder as debian/copyright names it (its ``Files:`` patterns)
    photos: tuple[str, ...]
    notice: str | None = None  # an extra upstream licence/credits file to quote in the attribution


PACKAGES = (
    Package(
        "lomiri-wallpapers-16.04",
        "usr/share/backgrounds",
        "16.04",
        (
            "Bridge_by_Sander_Klootwijk.jpg",
            "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg",
            "aitzgorri_by_Aitzol_Berasategi.jpg",
            "analogpattern_by_Peter_Nerlich.jpg",
            "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg",
            "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        ),
    ),
    Package("lomiri-wallpapers-20.04", "usr/share/backgrounds", "20.04", ("Kleiber_by_Lukas_Baubkus.jpg",)),
    Package(
        "lxqt-themes",
        "usr/share/lxqt/wallpapers",
        "wallpapers",
        (
            "Butterfly-Kenneth-Wimer.jpg",
            "Valendas.png",
            "after-the-rain.jpg",
            "appleflower.png",
            "beam.png",
            "butterfly.png",
            "cloud.png",
            "drop.png",
            "flowers.png",
            "fog.jpg",
            "this-is-not-windows.jpg",
        ),
        notice="usr/share/lxqt/wallpapers/License",
    ),
    Package(
        "mate-backgrounds",
        "usr/share/backgrounds/mate/nature",
        "nature",
        (
            "Aqua.jpg",
            "Blinds.jpg",
            "Dune.jpg",
            "FreshFlower.jpg",
            "Garden.jpg",
            "GreenMeadow.jpg",
            "LadyBird.jpg",
            "RainDrops.jpg",
            "Storm.jpg",
            "TwoWings.jpg",
            "Wood.jpg",
            "YellowFlower.jpg",
        ),
    ),
)


# Test photographs of benchmarks/own_measurements.py: never training tiles. Varied content with detail:
# textures and objects, animals, landscapes, flowers (file names are unique across the packages).
HELD_OUT = (
    "Picture_1A_by_freespace.jpg",  # paint brushes: fine texture, saturated colours
    "Wine_by_Jakkub_Mede.jpg",  # an interior: objects, wood, glass
    "friends_by_Aitzol_Berasategi.jpg",  # two dogs at a door, fur and planks
    "Kleiber_by_Lukas_Baubkus.jpg",  # a nuthatch on tree bark
    "LadyBird.jpg",  # a ladybird on forget-me-nots
    "life_by_Aitzol_Berasategi.jpg",  # a stream through a forest, rocks
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",  # mountain landscape, a path
    "Dune.jpg",  # dune grass against the sea
    "flowers.png",  # a meadow of wild flowers
    "YellowFlower.jpg",  # a yellow flower, petals and pollen
)


def held_out_folder(output: Path) -> Path:
    """Where the held-out photographs go: next to the pool, never inside it (loaders recurse)."""
    return output.with_name(f"{output.name}_held_out")


def training_photos(package: Package) -> tuple[str, ...]:
    """The package's photographs that are cut into training tiles: all but the held-out ones."""
    return tuple(photo for photo in package.photos if photo not in HELD_OUT)


def held_out_size(width: int, height: int, pixels: int | None = None) -> int:
    """The shorter side that makes a ``width x height`` photograph about ``pixels`` pixels (default
    ``HELD_OUT_PIXELS``; never enlarged)."""
    scale = min(1.0, ((pixels or HELD_OUT_PIXELS) / (width * height)) ** 0.5)
    return round(min(width, height) * scale)


# --- fetch and extract -------------------------------------------------------------------------


def download_deb(package: str, cache: Path) -> Path:
    """The package's .deb in ``cache``, fetched with ``apt-get download`` (lists refreshed once if stale)."""
    found = sorted(cache.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    command = ["apt-get", "download", package]
    result = subprocess.run(command, cwd=cache, capture_output=True, text=True)
    if result.returncode != 0:  # usually: package lists never fetched on this machine
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        result = subprocess.run(command, cwd=cache, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"apt-get download {package} failed: {result.stderr.strip()}")
    return sorted(cache.glob(f"{package}_*.deb"))[-1]


def deb_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def extract(deb: Path, members: set[str], destination: Path) -> None:
    """Extract only ``members`` (paths inside the package) from the .deb's data tar, through tarfile's
    ``data`` filter: nothing can be written outside ``destination``."""
    if all((destination / member).is_file() for member in members):
        return
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as process:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for member in archive:
                if PurePosixPath(member.name).as_posix().removeprefix("./") in members and member.isfile():
                    archive.extract(member, destination, filter="data")
    missing = [m for m in members if not (destination / m).is_file()]
    if process.returncode != 0 or missing:
        raise SystemExit(f"{deb.name}: extraction failed (missing {missing[:3]})")


# --- attribution -------------------------------------------------------------------------------


def copyright_paragraphs(text: str) -> list[dict[str, str]]:
    """The paragraphs of a machine-readable debian/copyright (DEP-5), continuation lines joined."""
    paragraphs, current, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key is not None:
            current[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def credit(paragraphs: list[dict[str, str]], upstream_path: str) -> dict[str, str]:
    """Copyright and licence of one file: DEP-5 says the last ``Files`` paragraph that matches wins."""
    match = {}
    for paragraph in paragraphs:
        patterns = paragraph.get("Files", "").split()
        if any(fnmatch.fnmatchcase(upstream_path, pattern) for pattern in patterns):
            match = paragraph
    license_name = match.get("License", "unknown").splitlines()[0]
    return {"copyright": match.get("Copyright", "unknown").replace("\n", "; "), "license": license_name}


# --- tiles -------------------------------------------------------------------------------------


def tile_boxes(width: int, height: int, tile_short: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping landscape 2:3 tiles, the grid centred in the photograph;
    ``(left, top, right, bottom)``."""
    tile_height = min(tile_short, height)
    tile_width = min(tile_height * 3 // 2, width)
    rows, cols = height // tile_height, width // tile_width
    top0, left0 = (height - rows * tile_height) // 2, (width - cols * tile_width) // 2
    return [
        (
            left0 + c * tile_width,
            top0 + r * tile_height,
            left0 + (c + 1) * tile_width,
            top0 + (r + 1) * tile_height,
        )
        for r in range(rows)
        for c in range(cols)
    ]


def save_png(image: torch.Tensor, path: Path) -> None:
    """8-bit PNG written atomically, so an interruption leaves no half tile."""
    atomic_write(path, lambda handle: Image.fromarray(to_uint8(image)).save(handle, format="PNG"))


def detail(tile: torch.Tensor) -> float:
    """Mean absolute finite difference of the luma of ``(3, H, W)``: low for flat or defocused tiles
    (a gradient of std 0.1 can still have no detail, so the std is not the measure)."""
    luma = (tile * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    return (luma.diff(dim=0).abs().mean() + luma.diff(dim=1).abs().mean()).item()


def export_held_out(photo: Path, stem: str, folder: Path) -> tuple[str, list[int], list[int]]:
    """Write one held-out photograph whole at about 1 MP; return its name, original and saved (W, H)."""
    with Image.open(photo) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    name = f"{stem}.png"
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
    resized = resize_short_side(pixels, held_out_size(image.width, image.height))
    if not (folder / name).is_file():
        save_png(resized, folder / name)
    return name, [image.width, image.height], [resized.shape[2], resized.shape[1]]


def cut_tiles(
    photo: Path, stem: str, output: Path, tile_short: int, size: int, min_detail: float
) -> tuple[list[str], int]:
    """Write the tiles of one photograph; return their names and the number of flat tiles left out."""
    with Image.open(photo) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    names, flat = [], 0
    for left, top, right, bottom in tile_boxes(image.width, image.height, tile_short):
        crop = torch.from_numpy(np.array(image.crop((left, top, right, bottom)))).permute(2, 0, 1)
        tile = resize_short_side(crop.float() / 255.0, size)
        if detail(tile) < min_detail:
            flat += 1
            continue
        name = f"{stem}_y{top}x{left}.png"
        if not (output / name).is_file():
            save_png(tile, output / name)
        names.append(name)
    return names, flat


# --- main --------------------------------------------------------------------------------------


def build(output: Path, tile_short: int, size: int, min_detail: float, keep_cache: bool) -> dict:
    settings = {
        "format": FORMAT_VERSION,
        "tile_short": tile_short,
        "size": size,
        "min_detail": min_detail,
        "held_out": list(HELD_OUT),
        "held_out_pixels": HELD_OUT_PIXELS,
    }
    manifest_path = output / "manifest.json"
    held_folder = held_out_folder(output)
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        complete = all((output / t["file"]).is_file() for t in manifest["tiles"]) and all(
            (held_folder / h["file"]).is_file() for h in manifest.get("held_out", [{"file": "?"}])
        )
        if manifest.get("settings") == settings and complete:
            print(
                f"{output}: up to date, {len(manifest['tiles'])} tiles from {manifest['photos']} photos, "
                f"{len(manifest['held_out'])} held out in {held_folder}"
            )
            return manifest
    output.mkdir(parents=True, exist_ok=True)
    held_folder.mkdir(parents=True, exist_ok=True)
    cache = output / ".cache"  # hidden: image loaders skip it
    cache.mkdir(exist_ok=True)
    tiles, held_out, attributions, flat_total, photo_count = [], [], [], 0, 0
    for package in PACKAGES:
        deb = download_deb(package.name, cache)
        version = deb_version(deb)
        root = cache / package.name
        copyright_member = f"usr/share/doc/{package.name}/copyright"
        members = {f"{package.folder}/{photo}" for photo in package.photos} | {copyright_member}
        if package.notice:
            members.add(package.notice)
        extract(deb, members, root)
        paragraphs = copyright_paragraphs(
            (root / copyright_member).read_text(encoding="utf-8", errors="replace")
        )
        notice = (
            (root / package.notice).read_text(encoding="utf-8", errors="replace").strip()
            if package.notice
            else None
        )
        for photo in package.photos:
            stem = f"{package.name}__{Path(photo).stem}"
            rights = credit(paragraphs, f"{package.upstream_folder}/{photo}")
            if notice:  # the upstream notice is more specific than debian/copyright's catch-all paragraph
                rights["license"] += " (see the upstream notice below)"
            entry = {"photo": photo, "package": package.name, "version": version, **rights, "notice": notice}
            if photo in HELD_OUT:  # a test image: exported whole, never tiled
                name, original, saved = export_held_out(root / package.folder / photo, stem, held_folder)
                held_out.append(
                    {
                        "file": name,
                        "photo": photo,
                        "package": package.name,
                        "original_size": original,
                        "size": saved,
                        **rights,
                    }
                )
                attributions.append({**entry, "tiles": f"held out ({saved[0]}x{saved[1]})"})
                continue
            names, flat = cut_tiles(root / package.folder / photo, stem, output, tile_short, size, min_detail)
            tiles += [{"file": name, "photo": photo, "package": package.name, **rights} for name in names]
            attributions.append({**entry, "tiles": len(names)})
            flat_total += flat
            photo_count += 1
    expected = {tile["file"] for tile in tiles}
    for stale in output.glob("*.png"):  # tiles of an earlier setting
        if stale.name not in expected:
            stale.unlink()
    for stale in held_folder.glob("*.png"):
        if stale.name not in {h["file"] for h in held_out}:
            stale.unlink()
    manifest = {
        "settings": settings,
        "photos": photo_count,
        "flat_tiles_left_out": flat_total,
        "tiles": tiles,
        "held_out": held_out,
    }
    write_attribution(output / "ATTRIBUTION.md", attributions)
    write_attribution(held_folder / "ATTRIBUTION.md", attributions)
    held_manifest = {"settings": settings, "photos": held_out}
    (held_folder / "manifest.json").write_text(json.dumps(held_manifest, indent=1))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))  # last: its presence means complete
    if not keep_cache:
        shutil.rmtree(cache)
    print(
        f"{output}: {len(tiles)} tiles from {photo_count} photographs ({flat_total} flat tiles left out); "
        f"{len(held_out)} photographs held out in {held_folder}"
    )
    return manifest


def write_attribution(path: Path, attributions: list[dict]) -> None:
    lines = [
        "# Attribution of the photo pool",
        "",
        "Tiles (cut and resized, a modification) of photographs shipped by Debian packages; copyright and",
        "licence as stated in each package's debian/copyright. Do not redistribute without this file.",
        "Held-out photographs (test images, never tiled) are resized whole to about 1 MP (a modification).",
        "",
        "| photograph | package (version) | tiles | copyright | licence |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {a['photo']} | {a['package']} ({a['version']}) | {a['tiles']} | {a['copyright']} | "
        f"{a['license']} |"
        for a in attributions
    ]
    notices = {a["package"]: a["notice"] for a in attributions if a["notice"]}
    for package, notice in notices.items():
        lines += ["", f"## Upstream notice of {package}", "", "```", notice, "```"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="pool folder (default benchmarks/photo_pool); held-out photos go to <output>_held_out",
    )
    parser.add_argument(
        "--tile", type=int, default=1024, help="tile height in photograph pixels (width 1.5x)"
    )
    parser.add_argument("--size", type=int, default=256, help="shorter side of the saved tiles")
    parser.add_argument(
        "--min-detail",
        type=float,
        default=0.006,
        help="leave out tiles whose mean |luma gradient| is below this",
    )
    parser.add_argument(
        "--keep-cache", action="store_true", help="keep the .deb files and extracted photographs"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    build(args.output, args.tile, args.size, args.min_detail, args.keep_cache)


if __name__ == "__main__":
    main()
