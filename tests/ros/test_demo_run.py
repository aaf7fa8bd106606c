"""`make demo`'s ROS part: demo_run starts both nodes, enables the policy, scores, cleans up."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpo_ros.ros.demo_run import run_demo

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def test_demo_run_reaches_goals_and_leaves_no_process(tmp_path: Path, reach_policy: Path, capsys) -> None:
    result = run_demo(reach_policy, seconds=5.0, goal_period=1.5, workdir=tmp_path)
    assert result["enabled"]
    reach = result["reach"]
    assert reach["goals"] >= 2 and reach["goals_reached"] == reach["goals"], reach
    diagnostics = result["diagnostics"]
    assert diagnostics["safety_state"] == "enabled"
    assert float(diagnostics["rate_achieved_hz"]) == pytest.approx(50.0, rel=0.05)
    printed = capsys.readouterr().out
    assert "goals reached" in printed and "period jitter" in printed
    # Both nodes were stopped with SIGINT: the sim node wrote its summary at shutdown.
    assert "goals reached" in (tmp_path / "sim.log").read_text()
