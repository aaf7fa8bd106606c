"""The policy node against a probe that plays the robot: faults that made the arm jump or left the
operator blind (issue 12), each checked on one node process in the order a session would meet them.

The tests run in file order and each leaves the node disabled with valid joint states, as the next
one expects. The policy is the analytic-IK controller, so every command is predictable: with the
probe holding the arm still at (0.4, 0.6) and a goal, the command converges to the IK pose.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import NodeProcess, Probe

from mpo_ros.contract.spec import load_spec

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

NAMES = ["shoulder", "elbow"]  # contract order
SPEC = load_spec("arm2")
MAX_DELTA = np.array([j.max_delta for j in SPEC.joints])
STATE_TIMEOUT = 0.3
COMMAND_TOPIC = "/forward_position_controller/commands"


@pytest.fixture(scope="module")
def policy_node(tmp_path_factory: pytest.TempPathFactory, ik_policy: Path):
    tmp = tmp_path_factory.mktemp("hardware_faults")
    node = NodeProcess(
        "serve",
        ["--policy", str(ik_policy), "--state-timeout", str(STATE_TIMEOUT)],
        tmp / "policy.log",
    )
    node.ik_policy = ik_policy  # type: ignore[attr-defined]
    node.tmp = tmp  # type: ignore[attr-defined]
    try:
        assert node.wait_for_log("DISABLED until", 30), node.log()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def robot():
    probe = Probe()
    try:
        yield probe
    finally:
        probe.close()


def enable(robot: Probe) -> None:
    ok, message = robot.set_enabled(True)
    assert ok, message


def disable(robot: Probe) -> None:
    ok, message = robot.set_enabled(False)
    assert ok, message


def test_duplicated_joint_names_are_rejected_counted_and_logged(policy_node, robot: Probe) -> None:
    assert robot.wait_until(lambda: robot.node.count_subscribers("/joint_states") > 1, 20)
    robot.stream_joint_states(0.6, ["shoulder", "elbow", "shoulder"], [-0.5, 1.2, 1.9], [0.0] * 3)
    shoulders = [c[0] for _, c in robot.commands]
    assert not any(abs(s - 1.9) < 0.5 for s in shoulders), "a duplicated name must not pick a value"
    assert robot.wait_until(
        lambda: int(robot.latest_diagnostics().get("rejected_duplicate_names", 0)) > 10, 3
    ), robot.latest_diagnostics()
    assert policy_node.log().count("duplicated joint name") == 1, policy_node.log()


def test_disabled_hold_follows_the_measured_pose_and_enable_starts_from_it(robot: Probe) -> None:
    robot.stream_joint_states(0.5, NAMES, [-0.5, 1.2], [0.0, 0.0])
    np.testing.assert_allclose(robot.commands[-1][1], [-0.5, 1.2], atol=1e-9)
    # Another controller jogs the arm while the policy is disabled.
    moved = time.monotonic()
    robot.stream_joint_states(0.8, NAMES, [0.4, 0.6], [0.0, 0.0])
    held = np.array(robot.commands_since(moved))
    np.testing.assert_allclose(held[-1], [0.4, 0.6], atol=1e-9, err_msg="disabled: hold the *current* pose")
    # Commands go out with keep-last-1 QoS, so a loaded machine may drop one: allow two steps between
    # received commands (the per-step limit itself is checked exactly in tests/robot).
    steps = np.abs(np.diff(held, axis=0))
    assert (steps <= 2 * MAX_DELTA + 1e-9).all(), "the hold follows the pose within the per-step limit"
    robot.publish_goal(0.35, 0.1)
    robot.spin_for(0.2)
    asked = time.monotonic()  # commands may arrive before the service's answer does
    enable(robot)
    robot.stream_joint_states(0.4, NAMES, [0.4, 0.6], [0.0, 0.0])
    moving = [c for c in robot.commands_since(asked) if np.abs(c - [0.4, 0.6]).max() > 1e-9]
    assert moving, "enabled with a goal: the policy moves"
    # The IK target is (-0.47, 1.70); the old code's first command after enable was 1.1 rad from the pose.
    first = moving[0]
    assert (np.abs(first - [0.4, 0.6]) <= 2 * MAX_DELTA + 1e-9).all(), f"enable jumped: first command {first}"


def test_goals_outside_the_goal_region_are_rejected(policy_node, robot: Probe) -> None:
    robot.stream_joint_states(1.0, NAMES, [0.4, 0.6], [0.0, 0.0])  # converge on the (0.35, 0.1) goal
    converged = robot.commands[-1][1]
    before = int(robot.latest_diagnostics()["rejected_goals"])
    start = time.monotonic()
    for x, y in [(1e30, 0.0), (10.0, 10.0), (0.0, 0.0), (1e39, 0.0), (math.inf, 0.0)]:
        robot.publish_goal(x, y)
        robot.stream_joint_states(0.3, NAMES, [0.4, 0.6], [0.0, 0.0])
    after = np.array(robot.commands_since(start))
    np.testing.assert_allclose(after, np.tile(converged, (len(after), 1)), atol=1e-6)
    assert robot.wait_until(lambda: int(robot.latest_diagnostics()["rejected_goals"]) >= before + 5, 3)
    log = policy_node.log()
    assert "goal region" in log and "goal_margin" in log, log


def test_policy_step_failures_show_in_diagnostics_with_the_reason(robot: Probe) -> None:
    # 1e39 rad/s is a finite double but overflows float32: the policy step rejects every observation.
    count = len(robot.diagnostics)
    robot.stream_joint_states(1.5, NAMES, [0.4, 0.6], [1e39, 0.0])
    failing = robot.diagnostics[count:]
    assert failing, "no /diagnostics while the policy step failed"
    assert any(d["_level"] == "2" and "nonfinite_observation" in d["reason"] for d in failing), failing[-1]
    count = len(robot.diagnostics)
    robot.stream_joint_states(2.5, NAMES, [0.4, 0.6], [0.0, 0.0])
    assert robot.diagnostics[count:] and robot.diagnostics[-1]["_level"] == "0", robot.diagnostics[-1]
    disable(robot)


def test_measured_positions_beyond_the_limits_are_a_fault(robot: Probe) -> None:
    start = time.monotonic()
    beyond = NAMES, [10.0, 0.6], [0.0, 0.0]
    robot.stream_joint_states(0.8, *beyond)
    assert robot.commands_since(start + 0.5) == [], "a pose beyond the limits must not be held or chased"
    assert robot.stream_until(lambda: robot.latest_diagnostics()["safety_state"] == "fault", 3, *beyond)
    assert "shoulder" in robot.latest_diagnostics()["reason"], robot.latest_diagnostics()
    robot.publish_joint_state(*beyond)
    robot.spin_for(0.05)
    ok, message = robot.set_enabled(True)
    assert not ok and "shoulder" in message and "limit" in message, message
    back = NAMES, [0.4, 0.6], [0.0, 0.0]
    assert robot.stream_until(lambda: robot.latest_diagnostics()["safety_state"] == "disabled", 3, *back)


def test_a_state_outage_needs_a_new_enable(policy_node, robot: Probe) -> None:
    robot.stream_joint_states(0.3, NAMES, [0.4, 0.6], [0.0, 0.0])
    enable(robot)
    robot.stream_joint_states(0.3, NAMES, [0.4, 0.6], [0.0, 0.0])
    robot.spin_for(1.6)  # the driver is gone for longer than reenable_after_outage (1 s)
    robot.stream_joint_states(1.5, NAMES, [0.4, 0.6], [0.0, 0.0])
    values = robot.latest_diagnostics()
    assert values["enabled"] == "false" and values["safety_state"] == "disabled", values
    assert "enable again" in policy_node.log()


def test_repeated_faults_are_logged_first_then_summarised(policy_node, robot: Probe) -> None:
    ok, reason = robot.set_parameter("mpo_policy", "fault_log_period", 1.0)
    assert ok, reason
    before = policy_node.log().count("non-finite")
    deadline = time.monotonic() + 2.6
    while time.monotonic() < deadline:  # NaN every other message, 100 messages/s
        robot.publish_joint_state(NAMES, [math.nan, 0.6], [0.0, 0.0])
        robot.spin_for(0.01)
        robot.publish_joint_state(NAMES, [0.4, 0.6], [0.0, 0.0])
        robot.spin_for(0.01)
    robot.stream_joint_states(1.2, NAMES, [0.4, 0.6], [0.0, 0.0])
    lines = [line for line in policy_node.log().splitlines() if "non-finite" in line][before:]
    assert 2 <= len(lines) <= 5, lines
    assert any("more" in line and "in the last" in line for line in lines), lines


def test_header_stamp_freshness_when_asked_for(policy_node, robot: Probe) -> None:
    ok, reason = robot.set_parameter("mpo_policy", "stamp_timeout", 0.5)
    assert ok, reason
    old = robot.node.get_clock().now().nanoseconds - 2_000_000_000
    robot.spin_for(0.2)
    for _ in range(60):  # a stuck driver republishing one old sample
        robot.publish_joint_state(NAMES, [0.4, 0.6], [0.0, 0.0], stamp_ns=old)
        robot.spin_for(0.01)

    def stale_and_counted() -> bool:
        values = robot.latest_diagnostics()
        return values.get("safety_state") == "stale" and int(values.get("rejected_old_stamps", 0)) >= 50

    assert robot.wait_until(stale_and_counted, 3), robot.latest_diagnostics()
    fresh = NAMES, [0.4, 0.6], [0.0, 0.0]
    assert robot.stream_until(lambda: robot.latest_diagnostics()["safety_state"] == "disabled", 3, *fresh)
    ok, reason = robot.set_parameter("mpo_policy", "stamp_timeout", 0.0)
    assert ok, reason


def test_a_joint_going_missing_after_valid_data_holds_as_the_readme_says(robot: Probe) -> None:
    robot.stream_joint_states(0.4, NAMES, [0.4, 0.6], [0.0, 0.0])
    start = time.monotonic()
    robot.stream_joint_states(1.0, ["shoulder"], [0.4], [0.0])
    held = np.array(robot.commands_since(start))
    assert len(held) > 20, "after valid data a missing joint holds the last command"
    np.testing.assert_allclose(held, np.tile([0.4, 0.6], (len(held), 1)), atol=1e-9)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "never publishes" not in readme
    assert "missing joint after valid data holds" in readme


def test_another_publisher_on_the_command_topic_is_a_fault(robot: Probe) -> None:
    from std_msgs.msg import Float64MultiArray

    robot.stream_joint_states(0.3, NAMES, [0.4, 0.6], [0.0, 0.0])
    intruder = robot.node.create_publisher(Float64MultiArray, COMMAND_TOPIC, 1)
    try:
        assert robot.wait_until(lambda: robot.latest_diagnostics().get("safety_state") == "fault", 5)
        assert "another publisher" in robot.latest_diagnostics()["reason"]
        ok, message = robot.set_enabled(True)
        assert not ok and "mpo_test_probe" in message, message
        start = time.monotonic()
        robot.stream_joint_states(0.5, NAMES, [0.4, 0.6], [0.0, 0.0])
        assert robot.commands_since(start) == [], "two command streams: this node must stop"
    finally:
        robot.node.destroy_publisher(intruder)
    fresh = NAMES, [0.4, 0.6], [0.0, 0.0]
    assert robot.stream_until(lambda: robot.latest_diagnostics()["safety_state"] == "disabled", 5, *fresh)


def test_a_second_node_of_the_same_name_refuses_to_start(policy_node, robot: Probe) -> None:
    second = NodeProcess("serve", ["--policy", str(policy_node.ik_policy)], policy_node.tmp / "second.log")
    try:
        assert second.proc.wait(40) == 2, second.log()
    finally:
        second.stop()
    log = second.log()
    assert "/mpo_policy" in log and "already" in log, log
    assert "Traceback" not in log
    start = time.monotonic()
    robot.stream_joint_states(0.5, NAMES, [0.4, 0.6], [0.0, 0.0])
    assert len(robot.commands_since(start)) > 10, "the first node keeps running"
