"""Unknown or wrongly typed parameters are refused on every start path, in one line (issue 12).

rclpy ignores parameters a node never declares, so before this check a typo in a params file
(``state_timout: 0.5``) left the default in force silently on the ``ros2 launch`` / ``ros2 run``
path, and a wrongly typed value ended in a traceback naming neither key nor file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ros_helpers import REPO, ros_domain_id

from mpo_ros.ros.processes import NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def start(tmp_path: Path, name: str, program: list[str], args: list[str]) -> NodeProcess:
    return NodeProcess("", args, tmp_path / f"{name}.log", ros_domain_id(), cwd=REPO, program=program)


def finish(node: NodeProcess) -> tuple[int | None, str]:
    try:
        code = node.proc.wait(30)
    except Exception:
        code = None  # still running: the bad parameter was ignored
    node.stop()
    return code, node.log()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line]


POLICY_NODE = [sys.executable, "-m", "mpo_ros.ros.policy_node"]


def params_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad_params.yaml"
    path.write_text(f"mpo_policy:\n  ros__parameters:\n{body}")
    return path


def test_typo_in_a_ros_args_params_file_is_refused_in_one_line(tmp_path: Path, ik_policy: Path) -> None:
    path = params_file(tmp_path, "    state_timout: 0.5\n    on_stail: stop\n")
    node = start(
        tmp_path,
        "typo",
        POLICY_NODE,
        ["--ros-args", "--params-file", str(path), "-p", f"policy:={ik_policy}"],
    )
    code, log = finish(node)
    assert code == 2, log
    [line] = error_lines(log)
    assert "state_timout" in line and "on_stail" in line and str(path) in line and "valid keys" in line
    assert "state_timeout" in line  # the valid keys are listed
    assert "Traceback" not in log


def test_wrong_type_in_a_ros_args_params_file_names_key_and_file(tmp_path: Path, ik_policy: Path) -> None:
    path = params_file(tmp_path, "    rate_hz: fast\n")
    node = start(
        tmp_path,
        "type",
        POLICY_NODE,
        ["--ros-args", "--params-file", str(path), "-p", f"policy:={ik_policy}"],
    )
    code, log = finish(node)
    assert code == 2, log
    [line] = error_lines(log)
    assert "rate_hz" in line and str(path) in line and "float" in line
    assert "Traceback" not in log


def test_unknown_dash_p_parameter_is_refused(tmp_path: Path, ik_policy: Path) -> None:
    node = start(
        tmp_path,
        "dash_p",
        POLICY_NODE,
        ["--ros-args", "-p", f"policy:={ik_policy}", "-p", "state_timout:=0.5"],
    )
    code, log = finish(node)
    assert code == 2, log
    [line] = error_lines(log)
    assert "state_timout" in line and "valid keys" in line


def test_serve_params_file_with_a_wrong_type_names_key_and_file(tmp_path: Path, ik_policy: Path) -> None:
    path = params_file(tmp_path, "    state_timeout: soon\n")
    node = start(
        tmp_path,
        "serve",
        [sys.executable, "-m", "mpo_ros.cli", "serve"],
        ["--policy", str(ik_policy), "--params-file", str(path)],
    )
    code, log = finish(node)
    assert code == 2, log
    assert "state_timeout" in log and str(path) in log
    assert "Traceback" not in log


def test_namespaced_and_wildcard_sections_are_checked_and_other_nodes_left_alone(tmp_path: Path) -> None:
    from mpo_ros.errors import ConfigError
    from mpo_ros.ros.params import check_ros_arguments
    from mpo_ros.ros.policy_node import PolicyNodeConfig

    path = tmp_path / "shared.yaml"
    path.write_text(
        "/robot1/mpo_policy:\n  ros__parameters:\n    state_timeout: 0.2\n"
        "mpo_sim:\n  ros__parameters:\n    robot: arm6\n"
        "/**:\n  ros__parameters:\n    use_sim_time: true\n"
    )
    check_ros_arguments(PolicyNodeConfig, ["x", "--ros-args", "--params-file", str(path)], "mpo_policy")
    path.write_text("/robot1/mpo_policy:\n  ros__parameters:\n    state_timout: 0.2\n")
    with pytest.raises(ConfigError, match="state_timout"):
        check_ros_arguments(PolicyNodeConfig, ["x", "--ros-args", "--params-file", str(path)], "mpo_policy")


def test_a_command_topic_of_another_interface_is_refused(tmp_path: Path, ik_policy: Path) -> None:
    """A position contract publishing on a velocity controller's topic would command rad as rad/s."""
    node = start(
        tmp_path,
        "serve",
        [sys.executable, "-m", "mpo_ros.cli", "serve"],
        ["--policy", str(ik_policy), "--command-topic", "/forward_velocity_controller/commands"],
    )
    code, log = finish(node)
    assert code == 2, log
    assert "names a velocity controller, but the policy's contract commands the 'position' interface" in log
    assert "Traceback" not in log
    # Overridden explicitly (a remapped topic), the node runs.
    node = start(
        tmp_path,
        "serve_override",
        [sys.executable, "-m", "mpo_ros.cli", "serve"],
        ["--policy", str(ik_policy), "--command-topic", "/forward_velocity_controller/commands",
         "--allow-interface-mismatch", "true"],
    )  # fmt: skip
    import time

    deadline = time.monotonic() + 30
    while "DISABLED until" not in node.log() and node.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    log = node.log()
    node.stop()
    assert "DISABLED until" in log, log  # configured and active: the override was accepted


def test_sim_robot_takes_any_randomisation_profile_and_names_the_shipped_ones(tmp_path: Path) -> None:
    """A calibration's profile.yaml (or a stand-in's latency profile) drives `sim-robot` as it drives training."""
    from mpo_ros.errors import ConfigError
    from mpo_ros.ros.sim_node import SimNodeConfig

    SimNodeConfig(robot="ur5e", randomize="ur5e_train").validate()
    profile = tmp_path / "latency.yaml"
    profile.write_text("latency_steps: [1, 1]\n")
    SimNodeConfig(randomize=str(profile)).validate()
    with pytest.raises(ConfigError, match=r"profile 'wide' not found; use one of \[.*'heldout'.*'train'"):
        SimNodeConfig(randomize="wide").validate()
