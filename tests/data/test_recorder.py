"""BagRecorder writes valid bags in both storages, from many threads, and survives a killed process."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from mpo_ros.data import messages
from mpo_ros.data.bag_reader import open_bag, read_streams
from mpo_ros.data.recorder import BagRecorder
from mpo_ros.errors import BagError

STORE = messages.typestore("kilted")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_through_rosbags_and_our_reader(tmp_path, storage):
    path = tmp_path / "bag"
    names = ["shoulder", "elbow"]
    with BagRecorder(path, storage=storage) as rec:
        for i in range(50):
            t = 1_000_000_000 + i * 20_000_000
            efforts = np.array([np.nan, 1.5])
            rec.write(
                "/joint_states",
                messages.joint_state(STORE, t, names, [0.01 * i, -0.02 * i], [1.0, 2.0], efforts),
                t,
            )
            rec.write("/cmd", messages.float64_multi_array(STORE, np.array([i, -i], float)), t + 1000)
            if i % 10 == 0:
                rec.write("/goal", messages.point_stamped(STORE, t, (0.3, 0.1)), t)
        # Already-serialised bytes (what rclpy.serialization.serialize_message returns) go in as they are.
        raw = bytes(
            STORE.serialize_cdr(
                messages.float64_multi_array(STORE, np.array([7.0, 8.0])), messages.FLOAT64_MULTI_ARRAY
            )
        )
        rec.write_serialized("/cmd", messages.FLOAT64_MULTI_ARRAY, raw, 3_000_000_000)
    assert rec.message_counts == {"/joint_states": 50, "/cmd": 51, "/goal": 5}
    # A plain rosbags reader needs no typestore: the definitions are stored in the bag.
    with AnyReader([path]) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == {
            "/joint_states": 50,
            "/cmd": 51,
            "/goal": 5,
        }
    with open_bag(path) as bag:
        sinks = read_streams(bag, ["/joint_states", "/cmd", "/goal"])
    states = sinks["/joint_states"].finish()
    commands = sinks["/cmd"].finish()
    goals = sinks["/goal"].finish()
    assert states.names == ("shoulder", "elbow")
    assert np.allclose(states.positions[:, 0], 0.01 * np.arange(50))
    assert np.isnan(states.efforts[:, 0]).all() and np.all(states.efforts[:, 1] == 1.5)
    assert np.array_equal(commands.positions[-1], [7.0, 8.0]) and len(commands) == 51
    assert np.allclose(goals.points, [0.3, 0.1, 0.0])


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "bag"
    rec = BagRecorder(path, storage="mcap").open()

    def publish(topic: str) -> None:
        for i in range(300):
            rec.write(topic, messages.float64_multi_array(STORE, np.array([float(i)])), 1_000 + i)

    threads = [threading.Thread(target=publish, args=(f"/t{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rec.close()
    rec.close()  # idempotent: a shutdown path may call it twice
    rec.write("/t0", messages.float64_multi_array(STORE, np.array([0.0])), 5)  # late callback: ignored
    assert rec.dropped_after_close == 1
    with open_bag(path) as bag:
        assert {t: i.count for t, i in bag.topics.items()} == {f"/t{k}": 300 for k in range(4)}


def test_refuses_existing_path_and_mixed_types(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists already"):
        BagRecorder(tmp_path / "exists")
    with pytest.raises(BagError, match="storage"):
        BagRecorder(tmp_path / "x", storage="rosbag1")
    with BagRecorder(tmp_path / "bag") as rec:
        rec.write("/a", messages.float64_multi_array(STORE, np.zeros(2)), 1)
        with pytest.raises(BagError, match="one type"):
            rec.write("/a", messages.point_stamped(STORE, 1, (0, 0)), 2)


KILLED_WRITER = """
import os, sys, time
import numpy as np
from mpo_ros.data import messages
from mpo_ros.data.recorder import BagRecorder
store = messages.typestore("kilted")
rec = BagRecorder(sys.argv[1], storage=sys.argv[2], flush_seconds=0.0).open()
for i in range(int(sys.argv[3])):
    rec.write("/joint_states", messages.joint_state(store, i, ["a"], [float(i)]), 1000 + i)
while rec.message_counts.get("/joint_states", 0) < int(sys.argv[3]):  # written by the writer thread
    time.sleep(0.01)
os._exit(0)  # killed: no close(), no metadata.yaml, no MCAP summary
"""


@pytest.mark.parametrize("storage,count", [("sqlite3", 200), ("mcap", 20000)])
def test_bag_of_a_killed_recorder_is_still_read(tmp_path, storage, count):
    path = tmp_path / "bag"
    subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), storage, str(count)], check=True, timeout=120
    )
    assert not (path / "metadata.yaml").exists()
    with open_bag(path) as bag:
        states = read_streams(bag, ["/joint_states"])["/joint_states"].finish()
        notes = " ".join(bag.report.notes)
    assert "metadata.yaml missing" in notes
    if storage == "sqlite3":
        assert len(states) == count  # committed after every message (flush_seconds=0)
    else:
        # MCAP: every chunk written before the kill is recovered; the open chunk is lost.
        assert bag.report.partial and "salvaged" in notes
        assert 0 < len(states) < count
        assert np.array_equal(states.positions[:, 0], np.arange(len(states)))


def test_rclpy_serialised_messages_with_alignment_padding_read_back(tmp_path):
    """Fast-CDR pads to 8 bytes; rosbags' own deserialize_cdr rejects that, our reader must not."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    from mpo_ros.data.recorder import ros_type_name

    msg = JointState()
    msg.name = ["shoulder", "elbow"]
    msg.position = [0.1, 0.2]
    msg.velocity = [0.0, 0.1]
    raw = bytes(serialize_message(msg))
    path = tmp_path / "bag"
    with BagRecorder(path, storage="sqlite3") as rec:
        rec.write_serialized("/joint_states", ros_type_name(msg), raw, 1)
    with open_bag(path) as bag:
        states = read_streams(bag, ["/joint_states"])["/joint_states"].finish()
        assert not bag.report.decode_errors
        assert not bag.report.fallback_decodes  # padded bytes stay on the fast CDR path
    assert states.names == ("shoulder", "elbow") and np.allclose(states.positions, [[0.1, 0.2]])
