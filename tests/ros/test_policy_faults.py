"""The policy node alone against a probe that plays the robot: bad inputs must leave it safe.

One node process (command_type joint_trajectory and loop thread, so that the output path and loop
mechanism the end-to-end module does not use are covered too) goes through:
a /joint_states without a contract joint (fault: error logged once, nothing published, enable
refused), valid states (hold, then policy), non-finite states (hold), and valid states again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import NodeProcess, Probe

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]

NAMES = ["elbow", "shoulder"]


@pytest.fixture(scope="module")
def policy_node(tmp_path_factory: pytest.TempPathFactory, ik_policy: Path):
    tmp = tmp_path_factory.mktemp("faults")
    node = NodeProcess(
        "serve",
        [
            "--policy",
            str(ik_policy),
            "--command-type",
            "joint_trajectory",
            "--state-timeout",
            "0.5",
            "--loop",
            "single_thread",
        ],
        tmp / "policy.log",
    )
    try:
        assert node.wait_for_log("DISABLED until", 30), node.log()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def robot():
    probe = Probe(command_type="joint_trajectory")
    try:
        yield probe
    finally:
        probe.close()


def test_missing_joint_is_reported_once_and_nothing_is_published(policy_node, robot: Probe) -> None:
    assert robot.wait_until(lambda: robot.node.count_subscribers("/joint_states") > 1, 15)
    robot.stream_joint_states(1.5, ["shoulder", "wrist"], [0.1, 0.2], [0.0, 0.0])
    assert robot.commands == [], "a node that cannot identify its joints must not command them"
    log = policy_node.log()
    assert log.count("missing from the message") == 1, log
    assert "['elbow']" in log and "wrist" in log
    ok, message = robot.set_enabled(True)
    assert not ok and "elbow" in message
    assert robot.wait_until(lambda: robot.latest_diagnostics().get("safety_state") == "fault", 3)
    assert int(robot.latest_diagnostics()["rejected_missing_joints"]) > 10


def test_valid_states_hold_then_policy_commands_by_name(robot: Probe) -> None:
    robot.stream_joint_states(0.5, NAMES, [0.3, -0.2], [0.0, 0.0])
    assert robot.trajectories, "valid joint states: the disabled node holds the measured position"
    latest = robot.trajectories[-1]
    assert list(latest.joint_names) == ["shoulder", "elbow"]
    np.testing.assert_allclose(latest.points[-1].positions, [-0.2, 0.3])
    robot.publish_goal(0.35, 0.1)
    robot.spin_for(0.2)
    ok, message = robot.set_enabled(True)
    assert ok, message
    start = time.monotonic()
    robot.stream_joint_states(0.6, NAMES, [0.3, -0.2], [0.0, 0.0])
    moving = np.array(robot.commands_since(start))
    assert np.ptp(moving, axis=0).max() > 0.05, "enabled with a goal: the policy moves the command"


def test_non_finite_states_hold_the_last_command(policy_node, robot: Probe) -> None:
    start = time.monotonic()
    robot.stream_joint_states(0.2, NAMES, [float("nan"), -0.2], [0.0, 0.0])
    robot.publish_goal(0.25, -0.2)  # a new goal must not move a holding node
    robot.stream_joint_states(0.8, NAMES, [float("nan"), -0.2], [0.0, 0.0])
    held = np.array(robot.commands_since(start + 0.1))
    assert len(held) > 20, "on non-finite input the node holds (keeps publishing the same command)"
    np.testing.assert_allclose(held, np.tile(held[0], (len(held), 1)))
    assert np.isfinite(held).all()
    assert robot.wait_until(lambda: int(robot.latest_diagnostics().get("rejected_non_finite", 0)) > 10, 3)
    assert policy_node.log().count("non-finite") == 1
    resumed = time.monotonic()
    robot.stream_joint_states(0.5, NAMES, [0.3, -0.2], [0.0, 0.0])
    after = np.array(robot.commands_since(resumed))
    assert np.abs(after[-1] - held[0]).max() > 0.05, "finite input again: the policy heads for the new goal"


def test_policy_without_robot_contract_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="exports a policy (the Jazzy venv has no torch)")

    from mpo_ros.training.export import export_module

    class Linear(torch.nn.Module):
        def forward(self, observation: torch.Tensor) -> torch.Tensor:
            return torch.tanh(observation[:, :2])

    path = tmp_path / "gym_policy.onnx"
    export_module(Linear(), 4, 2, path, parity_observations=np.random.default_rng(0).normal(size=(1000, 4)))
    # name_check_time 0: this module's node still runs under the same name; the policy is refused first.
    node = NodeProcess("serve", ["--policy", str(path), "--name-check-time", "0"], tmp_path / "refused.log")
    try:
        assert node.proc.wait(30) == 2
    finally:
        node.stop()
    assert "no robot contract" in node.log()
