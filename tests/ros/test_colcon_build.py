"""`colcon build` of the package, and the installed tree `ros2 launch mpo_ros policy.launch.py` relies on.

colcon-core, colcon-ros, colcon-python-setup-py and ros-ament-package come from the package index into
a venv of their own (cached in build/colcon-venv, so only the first run pays for it); the test skips
only when they cannot be installed. The build runs on a copy of the package's files, as a colcon
workspace would hold them, so nothing is written into the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from ros_helpers import REPO

pytestmark = [pytest.mark.timeout(600)]

COLCON_PACKAGES = ["colcon-core", "colcon-ros", "colcon-python-setup-py", "ros-ament-package", "setuptools"]
PACKAGE_FILES = [
    "setup.py",
    "setup.cfg",
    "package.xml",
    "resource",
    "mpo_ros",
    "sim",
    "launch",
    "config",
    "models",
]
EXECUTABLES = ["policy_node", "sim_node", "mpo-ros"]


def colcon_venv() -> Path:
    """A venv with colcon and the ament_python build support; pytest.skip if pip cannot install them."""
    home = REPO / "build" / "colcon-venv"
    colcon = home / "bin" / "colcon"
    if colcon.is_file():
        return home
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    result = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "-q", *COLCON_PACKAGES],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not colcon.is_file():
        shutil.rmtree(home, ignore_errors=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
        pytest.skip(f"cannot install {COLCON_PACKAGES}: {tail[0]}")
    return home


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = colcon_venv()
    workspace = tmp_path_factory.mktemp("colcon_ws")
    source = workspace / "src" / "mpo_ros"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    env = dict(os.environ, PATH=f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(home / "bin" / "colcon"), "build", "--event-handlers", "console_direct-"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workspace / "install" / "mpo_ros"


def test_installed_share_holds_launch_config_models_and_package_xml(installed: Path) -> None:
    share = installed / "share" / "mpo_ros"
    for relative in (
        "package.xml",
        "launch/policy.launch.py",
        "launch/sim.launch.py",
        "config/policy.yaml",
        "config/sim.yaml",
        "models/arm2.yaml",
        "models/arm2.xml",
        "models/arm6.yaml",
    ):
        assert (share / relative).is_file(), f"share/mpo_ros/{relative} missing"
    shipped = sorted(p.name for p in (REPO / "models").glob("*.onnx"))
    assert sorted(p.name for p in (share / "models").glob("*.onnx")) == shipped


def test_ament_index_entry_and_executables(installed: Path) -> None:
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / "mpo_ros").is_file()
    for name in EXECUTABLES:
        script = installed / "lib" / "mpo_ros" / name
        assert script.is_file() and os.access(script, os.X_OK), f"lib/mpo_ros/{name} missing"


def test_installed_python_package_is_complete_and_runs(installed: Path) -> None:
    [site] = list(installed.glob("lib/python3*/site-packages"))
    for package in ("mpo_ros", "mpo_ros/contract", "mpo_ros/robot", "mpo_ros/ros", "mpo_ros_sim"):
        assert (site / package / "__init__.py").is_file(), f"{package} not installed (setup.py packages)"
    # The installed entry point, on the installed package, refuses a typo'd parameter (exit 2): it ran.
    env = dict(os.environ, PYTHONPATH=str(site))
    script = installed / "lib" / "mpo_ros" / "policy_node"
    code = "import runpy, sys, mpo_ros; print(mpo_ros.__file__); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", code, str(script), "--ros-args", "-p", "state_timout:=1.0"],
        env=env,
        cwd=installed,  # not the checkout: `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.startswith(str(site)), result.stdout + result.stderr
    assert result.returncode == 2 and "state_timout" in result.stderr, result.stdout + result.stderr
