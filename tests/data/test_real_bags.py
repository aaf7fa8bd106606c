"""The reader against two real recordings (metadata v5, no stored definitions, foreign types)."""

from __future__ import annotations

import numpy as np
import pytest

from mpo_ros.data.bag_reader import open_bag, read_streams
from mpo_ros.data.convert import Bag2DataConfig, convert_bags
from mpo_ros.errors import DatasetError


def test_turtlebot_bag_reads_joint_states_and_skips_gazebo_type(real_bags):
    with open_bag(real_bags / "tb3_walker_gazebo", typestore="humble") as bag:
        assert bag.topics["/joint_states"].count == 598
        assert "/performance_metrics" in bag.report.skipped_topics
        assert "gazebo_msgs/msg/PerformanceMetrics" in bag.report.skipped_topics["/performance_metrics"]
        states = read_streams(bag, ["/joint_states"])["/joint_states"].finish()
    assert len(states) == 598
    assert states.names == ("wheel_left_joint", "wheel_right_joint")
    assert np.all(np.isnan(states.efforts))  # published empty: NaN, not zeros
    assert 4980 < states.positions[:, 0].min() < states.positions[:, 0].max() < 5020
    assert np.allclose(np.abs(states.velocities), 1.3045, atol=1e-3)
    assert np.all(np.diff(states.receive_ns) >= 0)
    assert bag.report.messages_read == {"/joint_states": 598}
    assert not bag.report.partial


def test_epuck_bag_keeps_nan_efforts_repeated_stamps_and_names_with_spaces(real_bags):
    with open_bag(real_bags / "epuck_webots_ros2_control", typestore="jazzy") as bag:
        skipped = set(bag.report.skipped_topics)
        assert "/dynamic_joint_states" in skipped
        assert {"/e_puck/receiver/signal_strength", "/e_puck/receiver/data"} <= skipped
        sinks = read_streams(bag, ["/joint_states"])
        states = sinks["/joint_states"].finish(("left wheel motor", "right wheel motor"))
    assert len(states) == 792
    assert states.names == ("left wheel motor", "right wheel motor")
    assert np.isnan(states.efforts).all() and states.efforts.shape == (792, 2)
    repeated = int(np.sum(np.diff(states.header_ns) == 0))
    assert repeated == 184
    assert np.all(np.diff(states.header_ns) >= 0)
    # Reordering by name swapped the columns: the right wheel is published first in the bag.
    assert states.positions[:, 1].max() == pytest.approx(42.1, abs=0.1)


def test_converting_foreign_bags_names_what_is_missing_and_writes_nothing(real_bags, tmp_path):
    out = tmp_path / "ds"
    config = Bag2DataConfig(
        bags=[str(real_bags / "tb3_walker_gazebo"), str(real_bags / "epuck_webots_ros2_control")],
        robot="arm2",
        out=str(out),
        progress=False,
    )
    with pytest.raises(DatasetError) as info:
        convert_bags(config)
    message = str(info.value)
    assert "/forward_position_controller/commands" in message and "/goal" in message
    assert "--command-topic" in message
    assert not out.exists() and not list(tmp_path.iterdir())


def test_wheel_joint_states_do_not_fit_an_arm_contract(real_bags, tmp_path):
    """Pointing the converter at the bag's own topics still fails cleanly: the joints do not match."""
    config = Bag2DataConfig(
        bags=[str(real_bags / "tb3_walker_gazebo")], robot="arm2", out=str(tmp_path / "ds"), progress=False
    )
    with open_bag(config.bags[0]) as bag:
        sink = read_streams(bag, ["/joint_states"])["/joint_states"]
    states = sink.finish(("shoulder", "elbow"))
    assert len(states) == 0 and states.dropped == {"missing_joints": 598}
