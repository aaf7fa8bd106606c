"""A velocity-controlled robot over ROS 2: sim-robot simulates it, serve drives it with a real exported
velocity policy, both on the topics their contract's interface implies (nobody names a topic).

The sim node executes the last velocity command until the next one, as ros2_control's
forward_velocity_controller does: if the policy node went quiet without ramping to zero the arm would
keep moving. So the test deactivates the node while the arm moves at 1 rad/s and checks that the node
published a ramp to exactly zero and the simulated joints came to rest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import NodeProcess, Probe
from velocity_robot import export_ros_test_policy

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

VELOCITY_TOPIC = "/forward_velocity_controller/commands"
# `make test-jazzy` runs these tests in a venv without torch: the robot and its policy are written in the main
# venv (`python tests/velocity_robot.py DIR`) and handed over through this variable.
VELOCITY_DIR_ENV = "MPO_ROS_TEST_VELOCITY_DIR"


@pytest.fixture(scope="module")
def velocity_robot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The robot's contract YAML and a constant-action policy exported for it (shoulder at 1 rad/s)."""
    given = os.environ.get(VELOCITY_DIR_ENV)
    if given:
        spec_path, policy = Path(given) / "arm2v.yaml", Path(given) / "arm2v.onnx"
        assert spec_path.is_file() and policy.is_file(), f"{VELOCITY_DIR_ENV}={given} lacks arm2v.yaml/.onnx"
        return spec_path, policy
    pytest.importorskip("torch")
    return export_ros_test_policy(tmp_path_factory.mktemp("arm2v"))


def start_moving(probe: Probe, serve: NodeProcess, sim: NodeProcess) -> None:
    """Wait for the disabled node's zero commands, give it a goal, enable it, and wait until the shoulder is
    commanded at its full 1 rad/s."""
    assert probe.wait_until(lambda: len(probe.commands) > 5, 60), serve.log() + sim.log()
    assert all(np.array_equal(c, [0.0, 0.0]) for _, c in probe.commands), "disabled at rest: zero velocity"
    probe.publish_goal(0.3, 0.0)  # the policy waits for a goal (the sim publishes none here)
    ok, message = probe.set_enabled(True)
    assert ok, message + serve.log()
    start = time.monotonic()
    assert probe.wait_until(lambda: any(c[0] >= 0.99 for c in probe.commands_since(start)), 10), serve.log()


def test_a_velocity_robot_is_driven_and_deactivate_brings_it_to_rest(
    tmp_path: Path, velocity_robot: tuple[Path, Path]
) -> None:
    from lifecycle_msgs.msg import Transition
    from test_lifecycle import LifecycleClient

    spec_path, policy = velocity_robot
    probe = Probe(command_topic=VELOCITY_TOPIC)
    sim = NodeProcess("sim-robot", ["--robot", str(spec_path), "--goal-period", "0"], tmp_path / "sim.log")
    serve = NodeProcess("serve", ["--policy", str(policy)], tmp_path / "serve.log")
    try:
        # Disabled at rest: the node publishes zero velocity (its hold), on the velocity topic by default.
        start_moving(probe, serve, sim)
        probe.spin_for(0.3)
        assert probe.wait_until(lambda: len(probe.joint_states) > 0, 10), sim.log()
        moving = probe.joint_states[-1]
        assert abs(moving.velocity[0]) > 0.8, "the shoulder moves at about 1 rad/s before deactivation"

        deactivated_at = time.monotonic()
        assert LifecycleClient(probe).change(Transition.TRANSITION_DEACTIVATE), serve.log()
        probe.spin_for(1.0)
        after = [c for s, c in probe.commands if s >= deactivated_at - 0.05]
        ramp = np.array(after)
        # The ramp: at most max_delta per step, down to exactly zero; then the node is quiet.
        assert len(ramp) >= 3, f"{ramp.tolist()}\n{serve.log()}"
        assert np.all(np.abs(np.diff(ramp[:, 0])) <= 0.4 + 1e-9)
        np.testing.assert_array_equal(ramp[-1], [0.0, 0.0])
        assert "ramped the velocity command to zero" in serve.log()
        quiet_since = time.monotonic()
        probe.spin_for(0.5)
        assert probe.commands_since(quiet_since) == [], "after the ramp the deactivated node is quiet"
        # The simulated arm, which keeps executing the last command, is at rest.
        probe.joint_states.clear()
        assert probe.wait_until(lambda: len(probe.joint_states) > 0, 5), sim.log()
        rest = probe.joint_states[-1]
        assert np.all(np.abs(np.array(rest.velocity)) < 0.05), list(rest.velocity)

        # Every command was a velocity within the contract's limits and slew.
        commands = np.array([c for _, c in probe.commands])
        assert np.all(np.abs(commands) <= [3.0, 3.5])
        assert np.all(np.abs(np.diff(commands, axis=0)) <= 0.4 + 1e-9)
    finally:
        serve.stop()
        sim.stop()
        probe.close()


def test_the_command_topic_and_type_must_fit_a_velocity_contract() -> None:
    from mpo_ros.errors import ConfigError
    from mpo_ros.ros.policy_node import check_command_interface, check_command_type, default_command_topic

    assert default_command_topic("velocity") == VELOCITY_TOPIC
    with pytest.raises(
        ConfigError, match="names a position controller, but the policy's contract commands the 'velocity'"
    ):
        check_command_interface("/forward_position_controller/commands", "velocity", False)
    check_command_interface(
        "/forward_position_controller/commands", "velocity", True
    )  # explicitly overridden
    check_command_interface(VELOCITY_TOPIC, "velocity", False)
    with pytest.raises(ConfigError, match="joint_trajectory sends position trajectories"):
        check_command_type("joint_trajectory", "velocity")
    check_command_type("joint_trajectory", "position")


def test_serve_refuses_a_position_topic_for_a_velocity_policy(
    tmp_path: Path, velocity_robot: tuple[Path, Path]
) -> None:
    _, policy = velocity_robot
    node = NodeProcess(
        "serve",
        ["--policy", str(policy), "--command-topic", "/forward_position_controller/commands"],
        tmp_path / "serve.log",
    )
    try:
        assert node.proc.wait(60) == 2, node.log()
    finally:
        node.stop()
    log = node.log()
    assert "names a position controller, but the policy's contract commands the 'velocity' interface" in log
    assert "Traceback" not in log


def test_ctrl_c_while_moving_ramps_a_velocity_robot_to_rest(
    tmp_path: Path, velocity_robot: tuple[Path, Path]
) -> None:
    """Shutdown (SIGINT, what Ctrl-C and `ros2 launch` send) goes through the same ramp as deactivate: a
    forward_velocity_controller would otherwise keep the arm moving at the last commanded velocity."""
    spec_path, policy = velocity_robot
    probe = Probe(command_topic=VELOCITY_TOPIC)
    sim = NodeProcess("sim-robot", ["--robot", str(spec_path), "--goal-period", "0"], tmp_path / "sim.log")
    serve = NodeProcess("serve", ["--policy", str(policy)], tmp_path / "serve.log")
    try:
        start_moving(probe, serve, sim)
        stopped_at = time.monotonic()
        assert serve.stop() == 0, serve.log()
        probe.spin_for(0.5)
        ramp = np.array([c for s, c in probe.commands if s >= stopped_at - 0.05])
        assert len(ramp) >= 3 and np.all(np.abs(np.diff(ramp[:, 0])) <= 0.4 + 1e-9), ramp.tolist()
        np.testing.assert_array_equal(ramp[-1], [0.0, 0.0])
        assert "ramped the velocity command to zero" in serve.log()
        probe.joint_states.clear()
        assert probe.wait_until(lambda: len(probe.joint_states) > 0, 5), sim.log()
        assert np.all(np.abs(np.array(probe.joint_states[-1].velocity)) < 0.05)
    finally:
        serve.stop()
        sim.stop()
        probe.close()
