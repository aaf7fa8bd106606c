"""Real ROS 2 processes for the tests, and a probe node that talks to them from the test process.

Every node runs in its own process on a ROS domain of its own (ROS_DOMAIN_ID derived from the pytest
pid, discovery on localhost only), is stopped with SIGINT and killed if it does not exit, and logs to
a file the test can read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mpo_ros.ros import processes

REPO = Path(__file__).resolve().parents[2]
# The trained policy the lead ships; tests that need it are parametrised away while it is absent.
SHIPPED_POLICY = REPO / "models" / "arm2_reach.onnx"


def ros_domain_id() -> int:
    """1..101, from the pytest pid: parallel test runs on one machine do not hear each other."""
    return processes.free_domain_id()


class NodeProcess(processes.NodeProcess):
    """A node of the test run: on the test's ROS domain, started from the repository root."""

    def __init__(self, command: str, args: list[str], log_path: Path) -> None:
        super().__init__(command, args, log_path, ros_domain_id(), cwd=REPO)


class Probe:
    """An rclpy node in the test process: records what the nodes publish, publishes test inputs."""

    def __init__(
        self,
        command_type: str = "float64_multi_array",
        command_topic: str = "/forward_position_controller/commands",
    ) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool
        from trajectory_msgs.msg import JointTrajectory

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=ros_domain_id())
        self.node = rclpy.create_node("mpo_test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.trajectories: list[Any] = []
        self.diagnostics: list[dict[str, str]] = []
        self.joint_states: list[Any] = []
        command_msg = Float64MultiArray if command_type == "float64_multi_array" else JointTrajectory
        self.node.create_subscription(command_msg, command_topic, self._on_command, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(
            JointState, "/joint_states", self._on_joint_state, qos_profile_sensor_data
        )
        self.joint_state_pub = self.node.create_publisher(
            JointState, "/joint_states", qos_profile_sensor_data
        )
        self.goal_pub = self.node.create_publisher(PointStamped, "/goal", 10)
        self.enable_client = self.node.create_client(SetBool, "/mpo_policy/enable")
        self._SetBool = SetBool
        self._JointState = JointState
        self._PointStamped = PointStamped

    def _on_command(self, msg: Any) -> None:
        if hasattr(msg, "points"):
            self.trajectories.append(msg)
            values = np.array(msg.points[-1].positions)
        else:
            values = np.array(msg.data)
        self.commands.append((time.monotonic(), values))

    def _on_joint_state(self, msg: Any) -> None:
        self.joint_states.append(msg)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("mpo_policy"):
                values = {kv.key: kv.value for kv in status.values}
                # Level (0 OK, 1 WARN, 2 ERROR) and message ride along under keys no node uses.
                values["_level"] = str(
                    int.from_bytes(status.level, "little")
                    if isinstance(status.level, bytes)
                    else int(status.level)
                )
                values["_message"] = status.message
                self.diagnostics.append(values)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.02, max(0.0, deadline - time.monotonic())))

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def commands_since(self, t: float) -> list[np.ndarray]:
        return [c for (s, c) in self.commands if s >= t]

    def set_enabled(self, flag: bool, timeout: float = 10.0) -> tuple[bool, str]:
        assert self.enable_client.wait_for_service(timeout_sec=timeout), "enable service not found"
        future = self.enable_client.call_async(self._SetBool.Request(data=flag))
        assert self.wait_until(future.done, timeout), "enable service did not answer"
        result = future.result()
        return result.success, result.message

    def set_parameter(self, node: str, name: str, value: Any, timeout: float = 10.0) -> tuple[bool, str]:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"/{node}/set_parameters")
        try:
            assert client.wait_for_service(timeout_sec=timeout)
            request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
            future = client.call_async(request)
            assert self.wait_until(future.done, timeout)
            result = future.result().results[0]
            return result.successful, result.reason
        finally:
            self.node.destroy_client(client)

    def publish_joint_state(
        self,
        names: list[str],
        positions: list[float],
        velocities: list[float],
        stamp_ns: int | None = None,
    ) -> None:
        """One JointState, stamped now unless `stamp_ns` is given (a stuck driver repeats an old stamp)."""
        from builtin_interfaces.msg import Time

        msg = self._JointState()
        if stamp_ns is None:
            msg.header.stamp = self.node.get_clock().now().to_msg()
        else:
            msg.header.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        msg.name = names
        msg.position = [float(v) for v in positions]
        msg.velocity = [float(v) for v in velocities]
        self.joint_state_pub.publish(msg)

    def publish_goal(self, x: float, y: float) -> None:
        msg = self._PointStamped()
        msg.point.x, msg.point.y = float(x), float(y)
        self.goal_pub.publish(msg)

    def stream_joint_states(
        self,
        seconds: float,
        names: list[str],
        positions: list[float],
        velocities: list[float],
        rate_hz: float = 100.0,
    ) -> None:
        """Publish the same joint state at `rate_hz` for `seconds`, spinning in between."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.publish_joint_state(names, positions, velocities)
            self.spin_for(1.0 / rate_hz)

    def diagnostics_since(
        self, count: int, predicate: Callable[[dict[str, str]], bool], timeout: float
    ) -> bool:
        """True once a /diagnostics status after the first `count` satisfies `predicate`."""
        return self.wait_until(lambda: any(predicate(d) for d in self.diagnostics[count:]), timeout)

    def stream_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        names: list[str],
        positions: list[float],
        velocities: list[float],
        rate_hz: float = 100.0,
    ) -> bool:
        """Publish the same joint state at `rate_hz` until `predicate()` holds (True) or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.publish_joint_state(names, positions, velocities)
            self.spin_for(1.0 / rate_hz)
        return predicate()

    def latest_diagnostics(self) -> dict[str, str]:
        return self.diagnostics[-1] if self.diagnostics else {}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
