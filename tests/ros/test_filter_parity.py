"""The contract's action filter over ROS 2: the node publishes exactly the filtered commands simulation computes.

A probe plays a robot that stays where it is (a blocked arm: the same joint state at 100 Hz), so every
observation the node builds is known. The commands the policy node publishes after enable must then be,
bit for bit, the sequence the simulator's command path produces (``observation.policy_command`` with
``executed_action`` fed back, what ``sim/reach_env.py`` runs every step), and, while the slew limit is
not active, the first-order lag's closed form c_t - target = (1 - alpha)^t (c_0 - target).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import NodeProcess, Probe

from mpo_ros.contract import observation
from mpo_ros.robot.onnx_policy import OnnxPolicy

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]

POSITIONS = {"shoulder": -0.7, "elbow": 1.5}  # the default pose
GOAL = (0.30, 0.12)


def test_node_commands_are_the_simulators_filtered_sequence(
    tmp_path: Path, probe: Probe, ik_policy: Path
) -> None:
    # arm2's contract (models/arm2.yaml) carries a 3 Hz low-pass; the IK policy is exported with it.
    policy_path = ik_policy
    policy = OnnxPolicy(policy_path)
    spec = policy.spec
    assert spec.action_filter == "lowpass" and spec.filter_alpha < 1.0, "this test needs a filtered contract"
    node = NodeProcess("serve", ["--policy", str(policy_path)], tmp_path / "policy.log")
    try:
        assert node.wait_for_log("DISABLED until", 30), node.log()
        names, q = list(POSITIONS), list(POSITIONS.values())
        assert probe.wait_until(lambda: probe.node.count_subscribers("/joint_states") > 1, 15)
        probe.stream_joint_states(0.5, names, q, [0.0, 0.0])
        probe.publish_goal(*GOAL)
        probe.stream_joint_states(0.3, names, q, [0.0, 0.0])
        ok, message = probe.set_enabled(True)
        assert ok, message
        start = time.monotonic()
        probe.stream_joint_states(1.5, names, q, [0.0, 0.0])
        published = np.array(probe.commands_since(start - 0.5))
    finally:
        node.stop()

    # Simulation's arithmetic from the same state: the held pose is the first command.
    held = observation.joint_array(spec, names, q)
    command, last_action, expected = held, observation.executed_action(spec, held), []
    for _ in range(60):
        obs = observation.build_observation(spec, held, np.zeros(2), last_action, np.array(GOAL))
        command = observation.policy_command(spec, command, policy.act(obs))
        last_action = observation.executed_action(spec, command)
        expected.append(command)
    expected = np.array(expected)

    moving = np.flatnonzero(np.abs(published - held).max(axis=1) > 0)
    assert len(moving) > 50, f"the enabled node published {len(moving)} policy commands: {node.log()}"
    sent = published[moving[0] :][: len(expected)]
    np.testing.assert_array_equal(sent, expected[: len(sent)])
    # The closed form of the lag, from the policy's (constant) target, while no slew limit is active.
    target = observation.action_to_command(spec, policy.act(obs))
    alpha = 1.0 - np.exp(-2.0 * np.pi * spec.action_filter_cutoff_hz / spec.control_rate_hz)
    steps = np.arange(1, len(sent) + 1)[:, None]
    closed = target + (1.0 - alpha) ** steps * (held - target)
    assert np.all(np.abs(np.diff(np.vstack([held, sent]), axis=0)) < spec.joint_arrays.max_delta)
    np.testing.assert_allclose(sent, closed, rtol=0, atol=1e-12)
