"""The symmetry ensemble: which flips and quarter turns commute with the forward model, and what averaging
over them does to an estimate (``--ensemble``)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import disk_psf
from sei.cli import main
from sei.evaluation import image_metrics
from sei.inference import DIHEDRAL, dihedral, dihedral_inverse, physics_symmetries, symmetry_ensemble
from sei.physics import make_physics

ALL = tuple(DIHEDRAL)


def _kernel(entries: dict[tuple[int, int], float], size: int = 5) -> torch.Tensor:
    kernel = torch.zeros(size, size, dtype=torch.float64)
    for (row, col), value in entries.items():
        kernel[row, col] = value
    return kernel / kernel.sum()


# (physics, the flips and quarter turns it commutes with): a catalogue of symmetric and asymmetric PSFs
CATALOGUE = {
    "gaussian": (lambda: make_physics("deblurring", kernel="Gaussian_R2"), ALL),
    "box": (lambda: make_physics("deblurring", kernel="Box_R3"), ALL),
    "disk": (lambda: make_physics("deblurring", kernel=disk_psf(4)), ALL),
    "sr_x2": (lambda: make_physics("sr", sr_factor=2), ALL),
    "sr_x3": (lambda: make_physics("sr", sr_factor=3), ALL),
    # a streak along the diagonal: point-symmetric and mirror-symmetric about its own diagonal only
    "diagonal streak": (
        lambda: make_physics("deblurring", kernel=_kernel({(1, 1): 1, (2, 2): 2, (3, 3): 1})),
        (0, 2, 5, 7),
    ),
    # two taps in a row, off centre: only the flip across the row keeps it
    "motion, one side": (lambda: make_physics("deblurring", kernel=_kernel({(2, 2): 1, (2, 3): 1})), (0, 6)),
    "random": (
        lambda: make_physics(
            "deblurring", kernel=torch.rand(5, 5, generator=torch.Generator().manual_seed(3))
        ),
        (0,),
    ),
}


def test_dihedral_inverse_undoes_every_element():
    x = torch.rand(1, 2, 5, 7)
    for index in DIHEDRAL:
        assert torch.equal(dihedral_inverse(dihedral(x, index), index), x)
    assert len({tuple(dihedral(x, index).flatten().tolist()) for index in DIHEDRAL}) == 8


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_symmetries_are_exactly_those_that_commute_with_the_forward_model(name):
    build, expected = CATALOGUE[name]
    physics = build()
    found = physics_symmetries(physics)
    assert found == expected
    # on another image, non-square: every element found commutes, every other one does not
    x = torch.rand(1, 3, 24 * physics.scale, 36 * physics.scale, generator=torch.Generator().manual_seed(1))
    reference = physics.A(x)
    for index in DIHEDRAL:
        error = float((physics.A(dihedral(x, index)) - dihedral(reference, index)).abs().max())
        assert (error < 1e-5) == (index in found), (index, error)


@pytest.mark.parametrize("name", ["gaussian", "diagonal streak", "motion, one side"])
def test_the_ensemble_of_any_estimator_is_equivariant_under_the_symmetries(name):
    """The symmetries form a group, so the average over it turns even an orientation-biased estimator (an
    random convolution) into one that commutes with each of them: E(g y) = g E(y)."""
    physics = CATALOGUE[name][0]()
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3)
    )
    symmetries = physics_symmetries(physics)
    ensemble = symmetry_ensemble(network, symmetries)
    y = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        reference = ensemble(y)
        assert not torch.allclose(network(dihedral(y, 2)), dihedral(network(y), 2), atol=1e-4)
        for index in symmetries:
            assert torch.allclose(ensemble(dihedral(y, index)), dihedral(reference, index), atol=1e-5)


def test_the_ensemble_leaves_an_equivariant_estimator_unchanged(astronaut):
    from sei.models.baselines import Wiener

    physics = make_physics("deblurring", kernel="Gaussian_R2")
    wiener = Wiener(physics, reg=0.01)
    y = physics.measure(astronaut[None, :, :96, :128], seed=0)
    ensemble = symmetry_ensemble(wiener, physics_symmetries(physics))
    assert torch.allclose(ensemble(y), wiener(y), atol=1e-5)


def test_the_ensemble_raises_the_psnr_of_the_shipped_model(astronaut, coffee_small):
    """On real photographs the average over the eight symmetries of a Gaussian blur beats the plain estimate
    of the shipped network, image by image (+0.2 dB on the ten test photographs, docs/models.md)."""
    from skimage import data

    from sei.weights import load_weights_with_physics

    network, _, physics = load_weights_with_physics("sei-gaussian_r2-noise5")
    ensemble = symmetry_ensemble(network, physics_symmetries(physics))
    chelsea = torch.from_numpy(data.chelsea()[:128, :160] / 255.0).float().permute(2, 0, 1)
    gains = []
    for seed, x in enumerate([astronaut[:, 96:224, 160:320], coffee_small, chelsea]):
        y = physics.measure(x[None], seed=seed)
        with torch.no_grad():
            plain, averaged = network(y)[0], ensemble(y)[0]
        gains.append(image_metrics(averaged, x)[0] - image_metrics(plain, x)[0])
    assert min(gains) > 0.02, gains


def test_reconstruct_and_test_take_ensemble(tmp_path, astronaut_path, capsys):
    from sei.imageio import read_image

    measured = tmp_path / "blurry.png"
    assert main(["degrade", astronaut_path, str(measured), "--kernel", "Gaussian_R2"]) == 0
    plain, averaged = tmp_path / "plain.png", tmp_path / "ensemble.png"
    for target, extra in ((plain, []), (averaged, ["--ensemble"])):
        command = [
            "reconstruct",
            str(measured),
            str(target),
            "--weights",
            "sei-gaussian_r2-noise5",
            "--quiet",
        ]
        assert main(command + extra) == 0
    assert (read_image(plain) - read_image(averaged)).abs().max() > 2 / 255
    # a PSF with no symmetry: said on stderr, never silently
    psf = tmp_path / "streak.npy"
    import numpy as np

    np.save(psf, CATALOGUE["random"][0]().kernel.numpy())
    capsys.readouterr()
    command = [
        "reconstruct",
        str(measured),
        str(tmp_path / "w.png"),
        "--model_kind",
        "wiener",
        "--kernel",
        str(psf),
    ]
    assert main(command + ["--ensemble", "--quiet"]) == 0
    assert "no flip or quarter-turn symmetry" in capsys.readouterr().err
    report = tmp_path / "test.json"
    arguments = ["test", "--weights", "sei-gaussian_r2-noise5", "--max_images", "1", "--quiet"]
    assert main(arguments + ["--ensemble", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["setup"]["ensemble"] == 8
