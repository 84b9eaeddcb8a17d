"""Progress bars: what is being done and a time estimate on a terminal; silent under --quiet and when
stderr is not a terminal (logs and pipes get no carriage-return clutter)."""

from __future__ import annotations

import io
import sys

import pytest

from sei import runtime
from sei.cli import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a terminal, patched in the test itself (pytest's capture resets sys.stderr after
    fixtures)."""

    def patch() -> _Terminal:
        stream = _Terminal()
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    runtime.set_quiet(False)
    yield patch
    runtime.set_quiet(False)


def test_bar_shows_the_task_and_an_estimate_on_a_terminal_only(terminal, monkeypatch):
    terminal = terminal()
    for _ in runtime.progress_bar(range(3), desc="measuring things", unit="image"):
        pass
    shown = terminal.getvalue()
    assert (
        "measuring things" in shown and "3/3" in shown and "<00:00" in shown
    )  # elapsed<remaining: the estimate
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file: no bar
    assert runtime.progress_bar(range(3), desc="x").disable
    monkeypatch.setattr(sys, "stderr", terminal)
    runtime.set_quiet(True)
    assert runtime.progress_bar(range(3), desc="x").disable


@pytest.mark.slow
def test_cli_test_bar_on_a_terminal_and_quiet(terminal):
    terminal = terminal()
    assert main(["test", "--model_kind", "id", "--max_images", "2"]) == 0
    assert "testing id on samples" in terminal.getvalue() and "2/2" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    assert main(["test", "--model_kind", "id", "--max_images", "2", "--quiet"]) == 0
    assert "testing" not in terminal.getvalue()


def test_reconstruct_folder_and_pnp_iterations_show_bars(terminal, tmp_path, astronaut):
    terminal = terminal()
    from sei.imageio import write_image
    from sei.models import create_reconstructor
    from sei.physics import make_physics

    for index in range(2):
        write_image(astronaut[:, :48, index * 48 : index * 48 + 48], tmp_path / "in" / f"{index}.png")
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "in"),
                str(tmp_path / "out"),
                "--model_kind",
                "id",
                "--kernel",
                "Gaussian_R2",
            ]
        )
        == 0
    )
    assert f"reconstructing {tmp_path / 'in'}" in terminal.getvalue() and "2/2" in terminal.getvalue()
    physics = make_physics("deblurring", kernel="Gaussian_R1", noise_level=5)
    pnp = create_reconstructor("pnp", physics, iterations=3)
    pnp(physics.measure(astronaut[None, :, :32, :32], seed=0))
    assert "PnP-HQS iterations" in terminal.getvalue()
    dip = create_reconstructor("dip", physics, iterations=2)
    dip(physics.measure(astronaut[None, :, :32, :32], seed=0))
    assert "DIP iterations" in terminal.getvalue()
