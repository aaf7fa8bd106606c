"""`make demo`'s ROS part: demo_run starts both nodes, enables the policy, scores, cleans up."""

from __future__ import annotations

from pathlib import Path

import pytest
from ros_helpers import SHIPPED_POLICY

from mpo_ros.ros.demo_run import run_demo

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


POLICIES = ["ik"] + (["shipped"] if SHIPPED_POLICY.is_file() else [])


@pytest.mark.parametrize("which", POLICIES)
def test_demo_run_reaches_goals_and_leaves_no_process(
    tmp_path: Path, ik_policy: Path, capsys, which: str
) -> None:
    policy = ik_policy if which == "ik" else SHIPPED_POLICY
    result = run_demo(policy, seconds=6.0, goal_period=1.5, workdir=tmp_path)
    assert result["enabled"]
    reach = result["reach"]
    assert reach["goals"] >= 3, reach
    if which == "ik":  # exact inverse kinematics: every goal
        assert reach["goals_reached"] == reach["goals"], reach
    else:  # a learned policy (about 95 % success in simulation): most goals, over ROS 2 in real time
        assert reach["goals_reached"] >= 0.75 * reach["goals"], reach
    commands = result["commands"]  # what the node published over ROS 2, judged like `mpo-ros eval`
    assert commands["received"] >= 200, commands
    if which == "shipped":  # smooth in simulation (5 % at the slew limit, 14 % energy > 5 Hz); so over ROS 2
        assert commands["slew_limited_fraction"] < 0.2 and commands["high_frequency_share"] < 0.3, commands
    assert 0.0 <= commands["high_frequency_share"] <= 1.0 and commands["command_rate"] > 0.0, commands
    diagnostics = result["diagnostics"]
    assert diagnostics["safety_state"] == "enabled"
    assert float(diagnostics["rate_achieved_hz"]) == pytest.approx(50.0, rel=0.05)
    printed = capsys.readouterr().out
    assert (
        "goals reached" in printed
        and "period jitter" in printed
        and "commands received over ROS 2" in printed
    )
    # Both nodes were stopped with SIGINT: the sim node wrote its summary at shutdown.
    assert "goals reached" in (tmp_path / "sim.log").read_text()


UR5E_POLICY = SHIPPED_POLICY.parent / "ur5e_reach.onnx"


@pytest.mark.skipif(not UR5E_POLICY.is_file(), reason="the UR5e policy is not shipped in this checkout")
def test_the_shipped_ur5e_policy_reaches_goals_over_ros_at_125_hz(tmp_path: Path) -> None:
    """The UR5e end to end: sim-robot simulates models/ur5e.yaml (driver joint names, 125 Hz, goals in
    base_link) and serve drives it with models/ur5e_reach.onnx over loopback DDS."""
    result = run_demo(
        UR5E_POLICY, seconds=10.0, robot="ur5e", goal_period=2.5, workdir=tmp_path, verbose=False
    )
    assert result["enabled"]
    reach = result["reach"]
    assert reach["goals"] >= 3 and reach["goals_reached"] >= 0.5 * reach["goals"], reach
    assert float(result["diagnostics"]["rate_achieved_hz"]) == pytest.approx(125.0, rel=0.1)
    assert result["diagnostics"]["rejected_goals"] == "0"  # the sim stamps goals in the contract's frame
