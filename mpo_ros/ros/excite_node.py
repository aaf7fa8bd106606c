"""`mpo-ros excite`: drive a robot with a safe excitation signal and record it for calibration.

    mpo-ros excite --robot arm2 --record excite_bag --duration 60

Running it is the operator's intent: it starts at once, takes the first /joint_states as the start
pose, ramps to the default pose, plays the excitation (mpo_ros.calibration.signals) for --duration
seconds, ramps back to the start pose and exits 0 with the rosbag2 (MCAP) recording of
/joint_states and the commands closed. Every command passes the policy node's SafetyFilter (joint
limits, per-step slew limit). It stops early, holding nothing further and exiting 1, when
/joint_states goes stale (older than --stale-timeout) or never arrives, or when ~/enable is set false
(the software e-stop); the recording is closed in every case, so what was recorded stays usable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from mpo_ros.calibration.signals import SIGNALS, ExcitationConfig, ExcitationPlan
from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.data.recorder import BagRecorder, ros_type_name
from mpo_ros.errors import ConfigError
from mpo_ros.robot.safety import SafetyFilter  # the policy node's own filter
from mpo_ros.ros.messages import SENSOR_QOS

__all__ = ["NODE_NAME", "ExciteConfig", "ExciteNode", "add_arguments", "run"]

NODE_NAME = "mpo_excite"
log = logging.getLogger(NODE_NAME)

EXIT_DONE, EXIT_STOPPED = 0, 1


@dataclass
class ExciteConfig:
    """Options of `mpo-ros excite` (one field per flag)."""

    robot: str
    record: str
    excitation: ExcitationConfig
    joint_states_topic: str = "/joint_states"
    command_topic: str = "/forward_position_controller/commands"
    # /joint_states older than this (s) stops the run; also the wait for the first message is
    # `start_timeout`.
    stale_timeout: float = 0.25
    start_timeout: float = 10.0
    storage: str = "mcap"
    # Take time from /clock (a simulator's physics time): plan, timer and recording follow it, so
    # the logged dynamics stay true when the simulator runs slower than real time. The watchdog
    # stays on the wall clock.
    use_sim_time: bool = False


class ExciteNode(Node):
    """Timer at the contract rate: target from the plan -> SafetyFilter -> command; records both topics."""

    def __init__(self, config: ExciteConfig, spec: RobotSpec) -> None:
        overrides = [Parameter("use_sim_time", value=True)] if config.use_sim_time else []
        super().__init__(NODE_NAME, parameter_overrides=overrides)
        self.config, self.spec = config, spec
        self.recorder = BagRecorder(config.record, storage=config.storage).open()
        self.safety = SafetyFilter(spec, on_fault="stop")
        self.plan: ExcitationPlan | None = None
        self.exit_code: int | None = None
        self._measured: np.ndarray | None = None
        self._measured_at = 0.0
        self._started_at = time.monotonic()
        self._plan_started_ns = 0
        self._commands = self.create_publisher(Float64MultiArray, config.command_topic, 10)
        self.create_subscription(JointState, config.joint_states_topic, self._on_joint_state, SENSOR_QOS)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_timer(spec.control_period, self._tick)
        log.info(
            "exciting '%s' (%s, %.1f s, amplitude %.3g rad, %.2g-%.2g Hz); recording to %s",
            spec.name,
            config.excitation.signal,
            config.excitation.duration,
            config.excitation.amplitude,
            config.excitation.f_min,
            config.excitation.f_max,
            config.record,
        )

    # --- inputs ------------------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        self._record(self.config.joint_states_topic, msg)
        index = {name: k for k, name in enumerate(msg.name)}
        if any(name not in index for name in self.spec.joint_names) or len(msg.position) != len(msg.name):
            return  # not a full state of this robot: it does not refresh the watchdog
        self._measured = np.array([msg.position[index[name]] for name in self.spec.joint_names])
        self._measured_at = time.monotonic()

    def _on_enable(self, request: Any, response: Any) -> Any:
        if not request.data:
            self.safety.disable()
            self._stop("disabled through ~/enable (e-stop)")
        response.success = not request.data
        response.message = (
            "excitation stopped" if not request.data else "excite runs once; restart it to run again"
        )
        return response

    # --- the control tick ------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.exit_code is not None:
            return
        now = time.monotonic()
        if self._measured is None:
            if now - self._started_at > self.config.start_timeout:
                self._stop(
                    f"no /joint_states with joints {list(self.spec.joint_names)} within "
                    f"{self.config.start_timeout} s on {self.config.joint_states_topic}"
                )
            return
        age = now - self._measured_at
        if age > self.config.stale_timeout:
            self._stop(f"/joint_states is stale ({age:.3f} s old > {self.config.stale_timeout} s)")
            return
        if self.plan is None:
            self.plan = ExcitationPlan(self.spec, self.config.excitation, self._measured.copy())
            self.safety.reset(self._measured)
            self._plan_started_ns = self.get_clock().now().nanoseconds
            log.info("start pose %s; ramping to the default pose", np.round(self._measured, 4).tolist())
        t = (self.get_clock().now().nanoseconds - self._plan_started_ns) * 1e-9
        decision = self.safety.step_command(self._measured, self.plan.target(t))
        if not decision.publish:
            self._stop(f"the safety filter stopped the run ({decision.fault})")
            return
        msg = Float64MultiArray()
        msg.data = decision.command.tolist()
        self._commands.publish(msg)
        self._record(self.config.command_topic, msg)
        if t >= self.plan.total_seconds:
            self.exit_code = EXIT_DONE
            log.info("excitation done: back at the start pose after %.1f s", t)

    def _record(self, topic: str, msg: Any) -> None:
        self.recorder.write_serialized(
            topic, ros_type_name(msg), serialize_message(msg), self.get_clock().now().nanoseconds
        )

    def _stop(self, reason: str) -> None:
        if self.exit_code is None:
            log.error("stopping: %s; no further commands (the controller holds its last target)", reason)
            self.exit_code = EXIT_STOPPED

    def finish(self) -> None:
        """Close the recording (always: a stopped run still leaves a valid bag)."""
        self.recorder.close()
        log.info("recording closed: %s %s", self.config.record, self.recorder.message_counts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    e = ExcitationConfig()
    parser.add_argument("--robot", required=True, help="robot spec YAML or shipped name (e.g. arm2)")
    parser.add_argument("--record", required=True, help="new rosbag2 directory for /joint_states + commands")
    parser.add_argument("--duration", type=float, default=e.duration, help="seconds of excitation")
    parser.add_argument("--signal", choices=SIGNALS, default=e.signal)
    parser.add_argument(
        "--amplitude", type=float, default=e.amplitude, help="peak offset from the default pose (rad)"
    )
    parser.add_argument("--f-min", type=float, default=e.f_min, help="lowest frequency (Hz)")
    parser.add_argument("--f-max", type=float, default=e.f_max, help="highest frequency (Hz)")
    parser.add_argument("--joints", nargs="+", default=[], help="joints to excite (default: all)")
    parser.add_argument(
        "--per-joint", action="store_true", help="one joint after another instead of all at once"
    )
    parser.add_argument("--ramp-seconds", type=float, default=e.ramp_seconds, help="ramp in/out duration (s)")
    parser.add_argument("--seed", type=int, default=e.seed)
    parser.add_argument("--joint-states-topic", default="/joint_states")
    parser.add_argument("--command-topic", default="/forward_position_controller/commands")
    parser.add_argument(
        "--stale-timeout", type=float, default=0.25, help="stop if /joint_states is older (s)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=10.0, help="wait for the first /joint_states (s)"
    )
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument(
        "--use-sim-time", action="store_true", help="time from /clock (run sim-robot with --use-sim-time too)"
    )


def run(args: argparse.Namespace) -> int:
    excitation = ExcitationConfig(
        signal=args.signal,
        amplitude=args.amplitude,
        f_min=args.f_min,
        f_max=args.f_max,
        duration=args.duration,
        joints=tuple(args.joints),
        per_joint=args.per_joint,
        ramp_seconds=args.ramp_seconds,
        seed=args.seed,
    )
    config = ExciteConfig(
        robot=args.robot,
        record=args.record,
        excitation=excitation,
        joint_states_topic=args.joint_states_topic,
        command_topic=args.command_topic,
        stale_timeout=args.stale_timeout,
        start_timeout=args.start_timeout,
        storage=args.storage,
        use_sim_time=args.use_sim_time,
    )
    spec = load_spec(config.robot)
    spec.require_position_interface("mpo-ros excite", EXCITE_VELOCITY_LIMITATION)
    excitation.check(spec)
    if config.stale_timeout <= 0 or config.start_timeout <= 0:
        raise ConfigError("--stale-timeout and --start-timeout must be > 0 s")
    return excite(config, spec)


EXCITE_VELOCITY_LIMITATION = (
    "Excitation plays position targets about the measured pose through the position safety filter; velocity "
    "excitation is not implemented. Excite the robot with its vendor tools and record /joint_states and "
    "/forward_velocity_controller/commands, or excite a position-controlled configuration of it."
)


def excite(config: ExciteConfig, spec: RobotSpec) -> int:
    """Run the node until the plan is done or it stops; returns the exit code."""
    rclpy.init()
    try:
        node = ExciteNode(config, spec)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while node.exit_code is None and rclpy.ok():
                executor.spin_once(timeout_sec=0.05)
        except KeyboardInterrupt:
            node._stop("interrupted")
        finally:
            node.finish()
            executor.remove_node(node)
            node.destroy_node()
        return int(node.exit_code if node.exit_code is not None else EXIT_STOPPED)
    finally:
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(run(argparse.ArgumentParser().parse_args()))
