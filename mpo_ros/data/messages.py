"""ROS message types by name, without ROS: typestores and builders for the messages mpo_ros logs.

The recorder and the tests write the same messages a robot publishes (JointState, Float64MultiArray,
JointTrajectory, PointStamped) through the `rosbags` typestore, so a bag written here is read by
`ros2 bag` and by the converter exactly like one recorded on a robot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from mpo_ros.errors import BagError

__all__ = [
    "FLOAT64_MULTI_ARRAY",
    "JOINT_STATE",
    "JOINT_TRAJECTORY",
    "POINT_STAMPED",
    "TYPESTORES",
    "float64_multi_array",
    "joint_state",
    "joint_trajectory",
    "point_stamped",
    "typestore",
]

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_MULTI_ARRAY = "std_msgs/msg/Float64MultiArray"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"

# Distro names accepted by `--typestore`; the definitions of the messages above are identical in all.
TYPESTORES: dict[str, Stores] = {
    "humble": Stores.ROS2_HUMBLE,
    "jazzy": Stores.ROS2_JAZZY,
    "kilted": Stores.ROS2_KILTED,
}

_CACHE: dict[str, Typestore] = {}


def typestore(name: str) -> Typestore:
    """The rosbags typestore of a ROS 2 distro ('humble', 'jazzy', 'kilted'), cached."""
    key = name.lower()
    if key not in TYPESTORES:
        raise BagError(f"unknown typestore '{name}'; choose one of {sorted(TYPESTORES)}")
    if key not in _CACHE:
        _CACHE[key] = get_typestore(TYPESTORES[key])
    return _CACHE[key]


def _header(store: Typestore, stamp_ns: int, frame_id: str) -> Any:
    time_cls = store.types["builtin_interfaces/msg/Time"]
    header_cls = store.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)


def joint_state(
    store: Typestore,
    stamp_ns: int,
    names: Sequence[str],
    positions: np.ndarray,
    velocities: np.ndarray | None = None,
    efforts: np.ndarray | None = None,
    frame_id: str = "",
) -> Any:
    """A sensor_msgs/msg/JointState; missing velocities/efforts become empty arrays, as on robots."""
    empty = np.zeros(0, dtype=np.float64)
    return store.types[JOINT_STATE](
        header=_header(store, stamp_ns, frame_id),
        name=list(names),
        position=np.asarray(positions, dtype=np.float64),
        velocity=empty if velocities is None else np.asarray(velocities, dtype=np.float64),
        effort=empty if efforts is None else np.asarray(efforts, dtype=np.float64),
    )


def float64_multi_array(store: Typestore, data: np.ndarray) -> Any:
    """A std_msgs/msg/Float64MultiArray with an empty layout, what forward_command_controller takes."""
    layout = store.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return store.types[FLOAT64_MULTI_ARRAY](layout=layout, data=np.asarray(data, dtype=np.float64))


def joint_trajectory(
    store: Typestore,
    stamp_ns: int,
    names: Sequence[str],
    positions: np.ndarray,
    time_from_start_s: float,
) -> Any:
    """A one-point trajectory_msgs/msg/JointTrajectory reaching `positions` after `time_from_start_s`."""
    sec, nanosec = divmod(round(time_from_start_s * 1e9), 1_000_000_000)
    duration = store.types["builtin_interfaces/msg/Duration"](sec=sec, nanosec=nanosec)
    empty = np.zeros(0, dtype=np.float64)
    point = store.types["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=np.asarray(positions, dtype=np.float64),
        velocities=empty,
        accelerations=empty,
        effort=empty,
        time_from_start=duration,
    )
    return store.types[JOINT_TRAJECTORY](
        header=_header(store, stamp_ns, ""), joint_names=list(names), points=[point]
    )


def point_stamped(store: Typestore, stamp_ns: int, xyz: Sequence[float], frame_id: str = "base") -> Any:
    """A geometry_msgs/msg/PointStamped; a 2-D goal leaves z at 0."""
    values = [float(v) for v in xyz] + [0.0] * (3 - len(xyz))
    point = store.types["geometry_msgs/msg/Point"](x=values[0], y=values[1], z=values[2])
    return store.types[POINT_STAMPED](header=_header(store, stamp_ns, frame_id), point=point)
