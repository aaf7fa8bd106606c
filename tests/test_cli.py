"""The `mpo-ros` entry point: every command is reachable and prints help without heavy imports failing."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from mpo_ros.cli import COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_module_has_the_cli_contract(command: str) -> None:
    module = importlib.import_module(COMMANDS[command][0])
    assert callable(module.add_arguments) and callable(module.run)


def test_help_lists_all_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mpo_ros.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in COMMANDS:
        assert command in out


def test_unknown_command_fails_with_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "mpo_ros.cli", "fly"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_serve_does_not_import_torch() -> None:
    """A robot computer runs `serve` with numpy + onnxruntime + rclpy only; torch must stay out."""
    code = (
        "import sys, mpo_ros.cli, importlib; importlib.import_module(mpo_ros.cli.COMMANDS['serve'][0]);"
        "import mpo_ros.robot.onnx_policy, mpo_ros.robot.safety; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
