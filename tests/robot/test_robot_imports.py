"""mpo_ros/robot/ runs on the robot: it may import only the contract and errors of this project."""

from __future__ import annotations

import ast
from pathlib import Path

ROBOT = Path(__file__).resolve().parents[2] / "mpo_ros" / "robot"
ALLOWED_OURS = ("mpo_ros.contract", "mpo_ros.errors", "mpo_ros.robot")
FORBIDDEN = ("torch", "rclpy", "mujoco", "ray", "mpo_ros_sim", "gymnasium")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_robot_package_imports_only_contract_and_errors() -> None:
    bad: dict[str, list[str]] = {}
    files = sorted(ROBOT.glob("*.py"))
    assert len(files) >= 6, "robot/ lost modules"
    for path in files:
        wrong = [
            m
            for m in imported_modules(path)
            if (m.startswith("mpo_ros") and not m.startswith(ALLOWED_OURS)) or m.split(".")[0] in FORBIDDEN
        ]
        if wrong:
            bad[path.name] = sorted(wrong)
    assert bad == {}, f"mpo_ros/robot may import only {ALLOWED_OURS} and numpy/onnxruntime: {bad}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import rclpy\nfrom mpo_ros.ros import messages\nfrom mpo_ros.contract import spec\n")
    assert imported_modules(sample) == {"rclpy", "mpo_ros.ros", "mpo_ros.contract"}
