"""`source scripts/activate` puts `sei` on the PATH: sourced in a fresh bash, `sei --help` works.

The test points SEI_VENV at a throwaway environment that sees the shared one's packages (a .pth file)
and is marked complete, so bootstrap installs this checkout into it (editable) without re-installing
torch and without touching the environment the other tests run in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bash(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_sourcing_activate_puts_sei_on_the_path(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for old in [
        *site.glob("setuptools*"),
        *site.glob("_distutils_hack"),
        *site.glob("distutils-precedence.pth"),
    ]:
        shutil.rmtree(
            old
        ) if old.is_dir() else old.unlink()  # the venv's own old setuptools would shadow the pinned one
    (site / "shared.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )  # torch & co. from the shared environment
    (venv / ".complete").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        SEI_VENV=str(venv), PATH="/usr/bin:/bin", HOME=str(tmp_path), OMP_NUM_THREADS="1", PIP_NO_INDEX="1"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # from another folder, by its path: the script finds the repository itself
    result = _bash(
        f"source {ROOT}/scripts/activate && command -v sei && sei --help && echo VIRTUAL_ENV=$VIRTUAL_ENV",
        env,
        elsewhere,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(venv / "bin" / "sei")
    assert "usage: sei COMMAND" in result.stdout and f"VIRTUAL_ENV={venv}" in result.stdout
    # the sei it runs is this checkout's
    where = _bash(
        f"source {ROOT}/scripts/activate >/dev/null 2>&1 && python -c 'import sei; print(sei.__file__)'",
        env,
        elsewhere,
    )
    assert where.stdout.strip() == str(ROOT / "src" / "sei" / "__init__.py"), where.stderr


def test_running_instead_of_sourcing_says_how(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "activate")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "must be sourced" in result.stderr
