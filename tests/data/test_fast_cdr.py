"""The fast CDR path (fastcdr.py) gives bit-identical streams to rosbags, and hands over what it cannot parse."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mpo_ros.data import messages
from mpo_ros.data.bag_reader import open_bag, read_streams
from mpo_ros.data.fastcdr import PARSERS, group_by_layout
from mpo_ros.data.recorder import BagRecorder
from mpo_ros.data.scripted import record_scripted_bag

STORE = messages.typestore("kilted")
READABLE = (
    messages.JOINT_STATE,
    messages.FLOAT64_MULTI_ARRAY,
    messages.JOINT_TRAJECTORY,
    messages.POINT_STAMPED,
)


def _finish(topic_sink):
    sink = topic_sink
    if sink.msgtype == messages.POINT_STAMPED:
        return sink.finish()
    if sink.msgtype == messages.FLOAT64_MULTI_ARRAY:
        return sink.finish()
    # Default columns, and the columns of every name set seen (exercises each block's reordering).
    return [sink.finish()] + [sink.finish(tuple(reversed(names))) for names in sink.names]


def _streams(path, fast: bool, typestore: str = "humble"):
    with open_bag(path, typestore, fast_cdr=fast) as bag:
        topics = [
            t
            for t, info in bag.topics.items()
            if info.msgtype in READABLE and t not in bag.report.skipped_topics
        ]
        sinks = read_streams(bag, topics)
        report = bag.report
    return {t: _finish(s) for t, s in sinks.items()}, report


def _assert_identical(a, b, where=""):
    """Same arrays bit for bit (NaN payloads included), same names and drop counts."""
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_identical(x, y, where)
        return
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f"{where}.{f.name}: {x.shape} vs {y.shape}"
            assert x.tobytes() == y.tobytes(), f"{where}.{f.name} differs"
        else:
            assert x == y, f"{where}.{f.name}: {x} != {y}"


def _assert_paths_agree(path, typestore="humble", fallbacks=None):
    fast, fast_report = _streams(path, True, typestore)
    slow, slow_report = _streams(path, False, typestore)
    assert fast.keys() == slow.keys() and fast
    for topic in fast:
        _assert_identical(fast[topic], slow[topic], topic)
    assert fast_report.messages_read == slow_report.messages_read
    assert fast_report.decode_errors == slow_report.decode_errors
    assert fast_report.fallback_decodes == (fallbacks or {})
    assert slow_report.fallback_decodes == {}
    return fast, fast_report


@pytest.mark.parametrize(
    ("storage", "command_type"),
    [("mcap", "float64_multi_array"), ("sqlite3", "joint_trajectory")],
)
def test_recorded_sim_bags_decode_identically(tmp_path, arm2, storage, command_type):
    path = tmp_path / "bag"
    record_scripted_bag(arm2, path, storage=storage, episodes=2, seed=3, command_type=command_type)
    streams, _ = _assert_paths_agree(path)
    assert len(streams["/joint_states"][0]) == 2 * arm2.episode_steps


def test_real_bags_decode_identically(real_bags):
    """NaN efforts, repeated stamps, names with spaces, empty effort arrays: all on the fast path."""
    streams, _ = _assert_paths_agree(real_bags / "tb3_walker_gazebo", "humble")
    assert len(streams["/joint_states"][0]) == 598
    streams, _ = _assert_paths_agree(real_bags / "epuck_webots_ros2_control", "jazzy")
    states = streams["/joint_states"][0]
    assert states.names == ("right wheel motor", "left wheel motor") and np.isnan(states.efforts).all()


def _awkward_bag(path):
    """Layout changes, odd shapes, padding, big-endian and broken messages on every fast-path type."""
    js, cmd, traj, goal = "/joint_states", "/cmd", "/traj", "/goal"
    big_endian_js = bytes(
        STORE.serialize_cdr(
            messages.joint_state(STORE, 5, ["a", "b"], [1.0, 2.0]), messages.JOINT_STATE, little_endian=False
        )
    )
    with BagRecorder(path, storage="mcap") as rec:
        for i in range(40):
            t = 1_000_000 * (i + 1)
            names = ["a", "b"] if i < 20 else ["b", "épaule 2", "a"]  # a layout change, non-ASCII
            width = len(names) if i % 7 else 1  # every 7th message malformed (positions too short)
            velocities = None if i % 3 == 0 else np.arange(len(names)) * 0.5 - i
            efforts = np.full(len(names), np.nan) if i % 2 else None
            frame = "base" if i % 11 else "world_frame"
            rec.write(
                js,
                messages.joint_state(
                    STORE, -t if i == 4 else t, names, np.arange(width) + i, velocities, efforts, frame
                ),
                t,
            )
            layout = STORE.types["std_msgs/msg/MultiArrayLayout"](
                dim=[STORE.types["std_msgs/msg/MultiArrayDimension"](label="joints", size=2, stride=2)]
                if i % 5 == 0
                else [],
                data_offset=i % 2,
            )
            data = np.array([i, -i, 0.5 * i][: 2 + (i % 9 == 0)], dtype=np.float64)
            rec.write(cmd, STORE.types[messages.FLOAT64_MULTI_ARRAY](layout=layout, data=data), t + 1)
            message = messages.joint_trajectory(STORE, t, ["a", "b"], np.array([i, i + 0.5]), 0.02)
            if i % 6 == 0:
                message.points = []
            elif i % 6 == 1:
                message.points = message.points * 3  # multi-point: the first point counts
                message.points[1].velocities = np.ones(2)
            rec.write(traj, message, t + 2)
            rec.write(goal, messages.point_stamped(STORE, t, (0.1 * i, 0.2, -0.3), "f" * (i % 4)), t + 3)
        # Fast-CDR (rmw_fastrtps) pads to 8 bytes: still the fast path, a layout of its own.
        padded = bytes(
            STORE.serialize_cdr(messages.joint_state(STORE, 9, ["a", "b"], [3.0, 4.0]), messages.JOINT_STATE)
        )
        rec.write_serialized(js, messages.JOINT_STATE, padded + b"\0" * 4, 50_000_000)
        # Big-endian: rosbags decodes it, the fast path hands it over (counted).
        rec.write_serialized(js, messages.JOINT_STATE, big_endian_js, 51_000_000)
        # Broken bytes: neither path decodes them (a decode error on both).
        rec.write_serialized(js, messages.JOINT_STATE, padded[:30], 52_000_000)
        rec.write_serialized(
            cmd, messages.FLOAT64_MULTI_ARRAY, b"\x00\x01\x00\x00\xff\xff\xff\xff", 53_000_000
        )
    return path


def test_awkward_messages_decode_identically_and_fallbacks_are_counted(tmp_path):
    streams, report = _assert_paths_agree(_awkward_bag(tmp_path / "bag"), fallbacks={"/joint_states": 1})
    assert report.decode_errors == {"/joint_states": 1, "/cmd": 1}
    states = streams["/joint_states"][0]
    assert states.dropped == {"malformed": 6}  # i % 7 == 0: positions shorter than the names
    assert np.isnan(states.efforts).any() and np.isnan(states.velocities).any()
    commands = streams["/cmd"]
    assert commands.dropped == {"wrong_length": 5}
    trajectory = streams["/traj"][0]
    assert trajectory.dropped == {"no_points": 7}
    assert len(streams["/goal"]) == 40


def test_layout_groups_hold_rosbags_values_and_refuse_big_endian():
    raws = [
        bytes(
            STORE.serialize_cdr(
                messages.joint_state(STORE, k * 10**9 + 7, ["x y", "z"], [k, -k], [0.5, k]),
                messages.JOINT_STATE,
            )
        )
        for k in range(5)
    ]
    raws.insert(
        2,
        bytes(
            STORE.serialize_cdr(
                messages.joint_state(STORE, 1, ["x y", "z"], [1, 2]),
                messages.JOINT_STATE,
                little_endian=False,
            )
        ),
    )
    groups, failed = group_by_layout(raws, PARSERS[messages.JOINT_STATE])
    assert failed == [2] and len(groups) == 1
    (group,) = groups
    assert group.rows.tolist() == [0, 1, 3, 4, 5] and group.layout.names == ("x y", "z")
    decoded = [STORE.deserialize_cdr(raws[i], messages.JOINT_STATE) for i in group.rows]
    assert np.array_equal(group.floats(0), [m.position for m in decoded])
    assert np.array_equal(group.floats(1), [m.velocity for m in decoded])
    assert group.floats(2).shape == (5, 0)
    assert group.stamp_ns().tolist() == [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in decoded]


def test_a_bag_defining_its_own_joint_state_is_decoded_by_rosbags(tmp_path):
    """A stored definition that differs from the standard one never takes the fast path."""
    humble = get_typestore(Stores.ROS2_HUMBLE)
    custom = get_types_from_msg(
        "std_msgs/Header header\nstring[] name\nfloat64[] temperature\nfloat64[] position\n"
        "float64[] velocity\nfloat64[] effort\n",
        messages.JOINT_STATE,
    )
    store = get_typestore(Stores.EMPTY)
    store.register({**{k: v for k, v in humble.fielddefs.items() if k != messages.JOINT_STATE}, **custom})
    cls = store.types[messages.JOINT_STATE]
    path = tmp_path / "bag"
    writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    with writer:
        connection = writer.add_connection("/joint_states", messages.JOINT_STATE, typestore=store)
        for i in range(5):
            header = messages._header(store, i, "")
            msg = cls(header=header, name=["a"], temperature=np.array([40.0 + i]), position=np.array([float(i)]),
                      velocity=np.zeros(0), effort=np.zeros(0))  # fmt: skip
            writer.write(connection, i + 1, bytes(store.serialize_cdr(msg, messages.JOINT_STATE)))
    with open_bag(path) as bag:
        assert messages.JOINT_STATE not in bag.fast_types
        states = read_streams(bag, ["/joint_states"])["/joint_states"].finish()
        assert any("not the standard one" in note for note in bag.report.notes)
        assert bag.report.fallback_decodes == {} and bag.report.messages_read == {"/joint_states": 5}
    assert np.array_equal(states.positions[:, 0], np.arange(5.0))
