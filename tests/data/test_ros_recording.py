"""End to end over ROS 2: record the sim node while the policy node drives it, then convert the bag.

The sim node (`mpo-ros sim-robot --record`) taps everything it publishes and receives into a bag,
like `ros2 bag record` next to a real robot; the policy node serves an IK reach controller. The bag
must close cleanly on SIGINT and convert into episodes that reach their goals.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROS_TESTS = Path(__file__).resolve().parents[1] / "ros"
sys.path.insert(0, str(ROS_TESTS))

from reach_policy import export_reach_policy  # noqa: E402
from ros_helpers import NodeProcess, Probe  # noqa: E402

from mpo_ros.contract.spec import load_spec  # noqa: E402
from mpo_ros.data.bag_reader import open_bag  # noqa: E402
from mpo_ros.data.convert import Bag2DataConfig, convert_bags  # noqa: E402
from mpo_ros.data.dataset import load_dataset  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

GOAL_PERIOD = 2.0


@pytest.mark.parametrize("storage", ["sqlite3"])
def test_sim_node_records_a_bag_that_converts(tmp_path, storage):
    spec = load_spec("arm2")
    policy = export_reach_policy(spec, tmp_path / "ik.onnx")
    bag = tmp_path / "recording"
    sim = NodeProcess(
        "sim-robot",
        [
            "--robot",
            "arm2",
            "--goal-period",
            str(GOAL_PERIOD),
            "--record",
            str(bag),
            "--record-storage",
            storage,
        ],
        tmp_path / "sim.log",
    )
    serve = NodeProcess(
        "serve",
        ["--policy", str(policy), "--state-timeout", "0.5", "--on-stale", "hold"],
        tmp_path / "policy.log",
    )
    probe = Probe()
    try:
        assert probe.wait_until(lambda: len(probe.commands) >= 10, 40), serve.log() + sim.log()
        ok, message = probe.set_enabled(True)
        assert ok, message + serve.log()
        probe.spin_for(3.2 * GOAL_PERIOD)
    finally:
        probe.close()
        assert sim.stop() == 0, sim.log()
        serve.stop()

    with open_bag(bag) as opened:
        topics = {t: i.count for t, i in opened.topics.items()}
        assert not opened.report.notes and not opened.report.partial
    assert topics["/joint_states"] > 100 and topics["/forward_position_controller/commands"] > 100
    assert topics["/goal"] >= 3

    path, summary = convert_bags(
        Bag2DataConfig(bags=[str(bag)], robot="arm2", out=str(tmp_path / "ds"), progress=False)
    )
    data = load_dataset(path)
    assert summary["steps"] > 100 and summary["episodes"] >= 2
    assert np.all(np.isfinite(data.rewards)) and np.all(np.abs(data.actions) <= 1.0 + 1e-6)
    # The IK controller reaches its goals: most episodes end in the success region.
    assert summary["final_success_rate"] >= 0.5, summary


def test_sim_time_recording_is_logged_on_the_simulated_clock(tmp_path):
    """With --use-sim-time the bag's receive times are the simulated time the messages are stamped with.

    Regression: they were the node's ROS clock, which follows the /clock the node itself publishes one
    message late, so a log recorded this way trailed its own stamps and could not be calibrated from.
    """
    bag = tmp_path / "sim_time"
    sim = NodeProcess(
        "sim-robot",
        ["--robot", "arm2", "--use-sim-time", "--realtime-factor", "2", "--record", str(bag)],
        tmp_path / "sim.log",
    )
    probe = Probe()
    try:
        assert probe.wait_until(lambda: len(probe.joint_states) >= 150, 40), sim.log()
    finally:
        probe.close()
        assert sim.stop() == 0, sim.log()
    with open_bag(bag) as opened:
        rows = [
            (t, m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec)
            for _, t, m in opened.messages(["/joint_states"])
        ]
    assert len(rows) >= 100
    logged, stamped = np.array(rows).T
    np.testing.assert_array_equal(logged, stamped)
    steps = np.diff(stamped)
    assert np.all(steps > 0) and np.all(steps % 20_000_000 == 0), "whole 20 ms control periods apart"
