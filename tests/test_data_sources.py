"""Sources: the embedded samples, folders, the paper's dataset layouts and splits, CT (HDF5 and DICOM)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sei.data import DATASETS, default_data_root, load_images
from sei.data.sources import validate_ct
from sei.errors import SeiUserError

SAMPLES_TEST = {
    "samples/" + name
    for name in (
        "barbara",
        "kodim23",
        "monarch",
        "sail",
        "tulips",
        "astronaut",
        "coffee",
        "chelsea",
        "china",
        "flower",
    )
}


def _tiny_png(path, value=128, size=(6, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def samples():
    return {split: load_images("samples", split) for split in ("train", "test")}


def test_samples_test_split_is_exactly_the_ten_benchmark_photographs(samples):
    assert {identity for identity, _ in samples["test"]} == SAMPLES_TEST


def test_samples_train_split_is_disjoint_real_photographs(samples):
    train = [identity for identity, _ in samples["train"]]
    assert len(set(train)) == len(train)
    # the split sizes docs/data.md gives are the real ones
    docs = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    sizes = re.search(r"^\| `samples` \(default\) \|[^|]*\| (\d+) / (\d+) \|", docs, flags=re.MULTILINE)
    assert sizes and (int(sizes[1]), int(sizes[2])) == (len(train), len(samples["test"]))
    assert not set(train) & SAMPLES_TEST
    assert (
        "samples/shepp_logan_phantom" not in train and "samples/cat" not in train
    )  # synthetic; chelsea again


def test_samples_are_rgb_in_unit_range_short_side_256(samples):
    for identity, image in [*samples["train"], *samples["test"]]:
        assert image.dtype == torch.float32 and image.shape[0] == 3, identity
        assert min(image.shape[-2:]) == 256, identity
        assert 0 <= image.min() and image.max() <= 1, identity


def test_no_dataset_means_samples_and_native_size_option():
    default = load_images(split="test", resize=None)
    assert [identity for identity, _ in default][:1] == ["samples/barbara"]
    assert default[5][1].shape == (3, 512, 512)  # astronaut at its native size


def test_folder_is_recursive_with_relative_identities(tmp_path):
    _tiny_png(tmp_path / "b.png")
    _tiny_png(tmp_path / "sub" / "a.png", value=10)
    images = load_images(tmp_path, resize=None)
    assert [identity for identity, _ in images] == ["folder/b.png", "folder/sub/a.png"]
    assert images[1][1].shape == (3, 6, 8)
    assert load_images(str(tmp_path), resize=4)[0][1].shape == (3, 4, 5)


def test_folder_unreadable_file_skipped_with_warning_or_raised(tmp_path):
    _tiny_png(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning, match="bad.jpg"):
        images = load_images(tmp_path, resize=None)
    assert [identity for identity, _ in images] == ["folder/good.png"]
    with pytest.raises(SeiUserError, match="bad.jpg"):
        load_images(tmp_path, on_error="raise")


def test_missing_dataset_says_what_to_run(tmp_path):
    with pytest.raises(SeiUserError, match=r"sei data download div2k.*--download"):
        load_images("div2k", split="test", root=tmp_path)
    with pytest.raises(SeiUserError, match="unknown dataset"):
        load_images(str(tmp_path / "nowhere"))
    with pytest.raises(SeiUserError, match="split"):
        load_images("samples", split="valid")


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEI_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("SEI_DATA_ROOT")
    assert default_data_root().parts[-3:] == (".cache", "sei", "data")


def test_div2k_and_urban100_split_sizes(tmp_path):
    for number in range(1, 801):
        _tiny_png(tmp_path / "div2k" / "DIV2K_train_HR" / "DIV2K_train_HR" / f"{number:04d}.png")
    for number in range(801, 901):
        _tiny_png(tmp_path / "div2k" / "DIV2K_valid_HR" / f"{number:04d}.png")
    for number in range(1, 101):
        _tiny_png(tmp_path / "urban100" / "Urban100_HR" / f"img_{number:03d}.png")
    sizes = {
        (name, split): len(load_images(name, split, root=tmp_path))
        for name in ("div2k", "urban100")
        for split in ("train", "test")
    }
    assert sizes == {
        ("div2k", "train"): 800,
        ("div2k", "test"): 100,
        ("urban100", "train"): 90,
        ("urban100", "test"): 10,
    }
    test = load_images("div2k", "test", root=tmp_path, resize=None)
    assert (test[0][0], test[99][0]) == ("div2k/0801", "div2k/0900")
    assert test[0][1].shape == (3, 6, 8)
    assert load_images("urban100", "test", root=tmp_path)[0][0] == "urban100/img_091"
    (tmp_path / "urban100" / "Urban100_HR" / "img_095.png").unlink()
    with pytest.raises(SeiUserError, match="incomplete"):
        load_images("urban100", "test", root=tmp_path)


def _fake_ct(path, train=5, test=3, size=16):
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        file["x_train"] = rng.random((train, 1, size, size), dtype=np.float32)
        file["x_test"] = rng.random((test, 1, size, size), dtype=np.float32)
        file["y_test"] = rng.random((test, 1, size, size), dtype=np.float32)


def test_ct_hdf5_is_gray_repeated_to_rgb(tmp_path):
    (tmp_path / "ct").mkdir()
    _fake_ct(tmp_path / "ct" / "dinv_dataset0.h5")
    images = load_images("ct", "test", root=tmp_path, resize=None)
    assert len(images) == 3 and images[2][0] == "ct/test/0002"
    identity, image = images[0]
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[1])
    assert len(load_images("ct", "train", root=tmp_path)) == 5
    assert load_images("ct", "test", root=tmp_path, channels=1, resize=None)[0][1].shape == (1, 16, 16)
    validate_ct(tmp_path / "ct" / "dinv_dataset0.h5", {"train": 5, "test": 3})
    with pytest.raises(SeiUserError, match="4992"):
        validate_ct(tmp_path / "ct" / "dinv_dataset0.h5")


def test_dicom_folder_with_hu_window(tmp_path):
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "slice_001.dcm")
    [(identity, image)] = load_images(tmp_path, resize=None)
    assert identity == "folder/slice_001.dcm" and image.shape == (3, 128, 128)
    [(_, windowed)] = load_images(tmp_path, resize=None, dicom_window=(40, 400))
    assert not torch.equal(image, windowed)


def test_every_downloaded_file_is_checked_and_samples_need_none():
    """No dataset file is installed unchecked: each has a published md5 or a content check; ``samples``
    downloads nothing and is installed anywhere."""
    import re

    for name, spec in DATASETS.items():
        for remote in spec.files:
            assert (remote.md5 and re.fullmatch(r"[0-9a-f]{32}", remote.md5)) or remote.validate, (
                name,
                remote,
            )
            assert set(remote.splits) <= {"train", "test"} and remote.splits, (name, remote)
    assert DATASETS["samples"].files == () and DATASETS["samples"].installed("/nonexistent")


def test_dataset_images_are_read_lazily_and_slice_lazily(tmp_path, monkeypatch):
    for number in range(801, 901):
        _tiny_png(tmp_path / "div2k" / "DIV2K_valid_HR" / f"{number:04d}.png", value=number % 256)
    images = load_images("div2k", "test", root=tmp_path, resize=None)
    reads = []
    monkeypatch.setattr(
        "sei.data.sources.read_image", lambda path, *args: reads.append(path.name) or torch.zeros(3, 2, 2)
    )
    head = images[:3]
    assert reads == [] and len(head) == 3
    assert [identity for identity, _ in head] == ["div2k/0801", "div2k/0802", "div2k/0803"] and len(
        reads
    ) == 3
