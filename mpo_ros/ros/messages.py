"""Message <-> array conversion for the mpo_ros nodes, in one place for both of them.

Joint vectors inside mpo_ros are numpy arrays in contract order; on the wire they are named
(JointState) or carry the contract's order explicitly (Float64MultiArray for forward_command_controller,
JointTrajectory with joint_names).
"""

from __future__ import annotations

import array
from collections.abc import Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mpo_ros.errors import ConfigError

__all__ = [
    "COMMAND_TYPES",
    "CommandPublisher",
    "goal_from_point",
    "joint_state_message",
    "make_command_publisher",
    "point_from_goal",
    "stamp",
]

COMMAND_TYPES = ("float64_multi_array", "joint_trajectory")

# Commands are a stream where only the newest matters, but a dropped command on a lossy link is
# better retried: reliable, keep last 1 (what ros2_control's forward controllers subscribe with).
COMMAND_QOS = QoSProfile(depth=1)


def stamp(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _doubles(values: np.ndarray) -> array.array:
    return array.array("d", np.ascontiguousarray(values, dtype=np.float64).tobytes())


def joint_state_message(
    names: Sequence[str], positions: np.ndarray, velocities: np.ndarray, stamp_ns: int
) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp(stamp_ns)
    msg.name = list(names)
    msg.position = _doubles(positions)
    msg.velocity = _doubles(velocities)
    return msg


def goal_from_point(msg: PointStamped, goal_dim: int) -> np.ndarray:
    """A goal vector from a PointStamped: x, y (, z) — a 2-D task ignores z."""
    if not 1 <= goal_dim <= 3:
        raise ConfigError(f"a PointStamped goal carries 1 to 3 coordinates, the task needs {goal_dim}")
    return np.array([msg.point.x, msg.point.y, msg.point.z][:goal_dim], dtype=np.float64)


def point_from_goal(goal: np.ndarray, stamp_ns: int, frame_id: str = "base_link") -> PointStamped:
    msg = PointStamped()
    msg.header.stamp = stamp(stamp_ns)
    msg.header.frame_id = frame_id
    coords = [float(v) for v in goal] + [0.0] * (3 - len(goal))
    msg.point.x, msg.point.y, msg.point.z = coords[:3]
    return msg


CommandPublisher = Callable[[np.ndarray, int], None]


def make_command_publisher(
    node: Node,
    topic: str,
    command_type: str,
    joint_names: Sequence[str],
    period_s: float,
) -> CommandPublisher:
    """A function publishing one position command (contract order, rad) on `topic`.

    JointTrajectory commands carry one point reached one control period from now, with the joint
    names set so a joint_trajectory_controller maps them by name.
    """
    if command_type == "float64_multi_array":
        publisher = node.create_publisher(Float64MultiArray, topic, COMMAND_QOS)
        msg = Float64MultiArray()

        def publish_array(command: np.ndarray, stamp_ns: int) -> None:
            msg.data = _doubles(command)
            publisher.publish(msg)

        return publish_array
    if command_type == "joint_trajectory":
        publisher = node.create_publisher(JointTrajectory, topic, COMMAND_QOS)
        names = list(joint_names)
        reach = Duration(sec=int(period_s), nanosec=round((period_s % 1.0) * 1e9))

        def publish_trajectory(command: np.ndarray, stamp_ns: int) -> None:
            msg = JointTrajectory()
            msg.header.stamp = stamp(stamp_ns)
            msg.joint_names = names
            msg.points = [JointTrajectoryPoint(positions=_doubles(command), time_from_start=reach)]
            publisher.publish(msg)

        return publish_trajectory
    raise ConfigError(f"command_type must be one of {COMMAND_TYPES}, got {command_type!r}")


def command_from_message(msg: Float64MultiArray | JointTrajectory, joint_names: Sequence[str]) -> np.ndarray:
    """The position command (contract order) in a command message; a trajectory's last point is used.

    Raises ValueError when the message does not carry one value per contract joint.
    """
    if isinstance(msg, Float64MultiArray):
        values = np.asarray(msg.data, dtype=np.float64)
        if values.shape != (len(joint_names),):
            raise ValueError(f"command has {values.size} values, the robot has {len(joint_names)} joints")
        return values
    if not msg.points:
        raise ValueError("JointTrajectory without points")
    index = {name: i for i, name in enumerate(msg.joint_names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ValueError(f"JointTrajectory lacks joint(s) {missing}; it names {list(msg.joint_names)}")
    positions = np.asarray(msg.points[-1].positions, dtype=np.float64)
    if positions.size != len(msg.joint_names):
        raise ValueError("JointTrajectory point has a different number of positions than joint_names")
    return positions[[index[n] for n in joint_names]]


SENSOR_QOS = qos_profile_sensor_data
