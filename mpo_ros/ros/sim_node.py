"""The simulated robot `mpo_sim`: a MuJoCo robot behind the topics a ros2_control robot offers.

Run it as ``mpo-ros sim-robot --robot arm2`` or ``ros2 run mpo_ros sim_node --ros-args -p robot:=arm2``.
It publishes /joint_states (sensor-data QoS, contract names; optionally in another order, with an
extra joint, or without one joint, to exercise the policy node's name matching), takes commands of the
robot's ``command_interface`` on ``command_topic`` (positions: Float64MultiArray in contract order, or
JointTrajectory by joint name; velocities: Float64MultiArray in rad/s, executed like ros2_control's
forward_velocity_controller does, the last command until the next one), and steps `mpo_ros_sim.robot_sim.RobotSim` one control period per tick from a fixed-rate
loop (mpo_ros/robot/rate.py) at ``rate_hz * realtime_factor`` wall-clock ticks per second. With
``use_sim_time`` it publishes /clock and stamps messages with simulated time.

For the reach task it also publishes goals (a new one every ``goal_period`` s of simulated time,
drawn with `tasks.sample_goal`; the current goal is repeated twice a second for late joiners) and
keeps score: per goal, whether the end effector came within the success threshold, how fast, and the
final distance. The summary goes to the log and, with ``result_file``, to a JSON file that is
rewritten at every goal change and at shutdown, so an end-to-end run can be judged from outside.

Recording: every message this node publishes or receives passes `SimNode._tap` (topic, message),
the single place where a rosbag2 recorder attaches (`SimNode.add_tap(callback)`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from mpo_ros_sim.randomization import load_profile
from mpo_ros_sim.robot_sim import RobotSim
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from mpo_ros.config import option
from mpo_ros.contract import tasks
from mpo_ros.contract.resolve import resolve_robot
from mpo_ros.errors import ConfigError
from mpo_ros.robot.rate import FixedRateLoop
from mpo_ros.ros.messages import (
    SENSOR_QOS,
    command_from_message,
    joint_state_message,
    point_from_goal,
    stamp,
)
from mpo_ros.ros.params import declare_config

__all__ = [
    "NODE_NAME",
    "GoalScore",
    "ReachScorer",
    "SimNode",
    "SimNodeConfig",
    "add_arguments",
    "main",
    "run",
]

NODE_NAME = "mpo_sim"
COMMAND_TYPE_CHOICES = ("float64_multi_array", "joint_trajectory")
JOINT_ORDER_CHOICES = ("contract", "reversed", "shuffled")


@dataclass
class SimNodeConfig:
    """Parameters of the sim node: ROS parameters, `mpo-ros sim-robot` flags and config/sim.yaml."""

    robot: str = option(
        "arm2",
        "robot: a name in models/, a spec YAML or a policy.onnx (its contract; MJCF beside it or --mjcf)",
    )
    mjcf: str = option("", "the robot's MJCF, when --robot is a policy.onnx whose MJCF is elsewhere")
    rate_hz: float = option(0.0, "control periods simulated per simulated second; 0 = contract rate")
    realtime_factor: float = option(1.0, "simulated seconds per wall-clock second (>1: faster)")
    randomize: str = option(
        "none",
        "domain randomisation: none, a shipped profile (train, heldout, ur5e_train, ...) or a profile YAML "
        "(e.g. calibrate's profile.yaml, or a latency-only profile for a stand-in robot)",
    )
    seed: int = option(0, "seed of randomisation and goals")
    goal_period: float = option(4.0, "seconds (simulated) between new goals; 0 disables the goal publisher")
    joint_states_topic: str = option("/joint_states", "sensor_msgs/JointState output")
    command_topic: str = option(
        "",
        "command input topic; empty: /forward_<interface>_controller/commands for the robot's command_interface",
    )
    command_type: str = option("float64_multi_array", "command message type", choices=COMMAND_TYPE_CHOICES)
    goal_topic: str = option("/goal", "geometry_msgs/PointStamped goal output")
    joint_order: str = option(
        "contract", "order of names in /joint_states (tests of name matching)", choices=JOINT_ORDER_CHOICES
    )
    extra_joint: str = option("", "publish an additional, unknown joint with this name (tests)")
    drop_joint: str = option("", "leave this contract joint out of /joint_states (tests of the fault path)")
    result_file: str = option("", "write the reach summary as JSON here (at goal changes and shutdown)")
    record: str = option(
        "", "record every topic of this node into a new rosbag2 directory here (mpo_ros.data)"
    )
    record_storage: str = option("mcap", "storage plugin of --record", choices=("mcap", "sqlite3"))

    def validate(self) -> None:
        for name, allowed in (
            ("command_type", COMMAND_TYPE_CHOICES),
            ("joint_order", JOINT_ORDER_CHOICES),
            ("record_storage", ("mcap", "sqlite3")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        load_profile(self.randomize)  # ConfigError naming the shipped profiles when it is neither
        if not (math.isfinite(self.rate_hz) and 0 <= self.rate_hz <= 5000):
            raise ConfigError(f"rate_hz must be in [0, 5000] (0 = contract rate), got {self.rate_hz}")
        if not (math.isfinite(self.realtime_factor) and 0.01 <= self.realtime_factor <= 100):
            raise ConfigError(f"realtime_factor must be in [0.01, 100], got {self.realtime_factor}")
        if not (math.isfinite(self.goal_period) and self.goal_period >= 0):
            raise ConfigError(f"goal_period must be >= 0 s, got {self.goal_period}")
        for name in ("joint_states_topic", "goal_topic"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name a topic")


# --- scoring (ROS-free) ----------------------------------------------------------------------------


@dataclass
class GoalScore:
    goal: list[float]
    start_time: float  # simulated seconds
    start_wall_time: float = 0.0  # UNIX time, to line up with events outside the simulation
    reached: bool = False
    time_to_reach: float | None = None
    min_distance: float = math.inf
    final_distance: float = math.nan


@dataclass
class ReachScorer:
    """Distance to goal over simulated time; one GoalScore per goal."""

    success_threshold: float
    goals: list[GoalScore] = field(default_factory=list)
    trace: list[tuple[float, float]] = field(default_factory=list)  # (sim time, distance), 10 Hz

    def new_goal(self, goal: np.ndarray, sim_time: float, wall_time: float = 0.0) -> None:
        self.goals.append(GoalScore([float(v) for v in goal], sim_time, wall_time))

    def update(self, sim_time: float, distance: float) -> None:
        if not self.goals:
            return
        score = self.goals[-1]
        score.final_distance = distance
        score.min_distance = min(score.min_distance, distance)
        if not score.reached and distance < self.success_threshold:
            score.reached = True
            score.time_to_reach = sim_time - score.start_time
        if not self.trace or sim_time - self.trace[-1][0] >= 0.1 - 1e-9:
            self.trace.append((sim_time, distance))

    def summary(self) -> dict[str, Any]:
        reached = [g for g in self.goals if g.reached]
        times = [g.time_to_reach for g in reached if g.time_to_reach is not None]
        finals = [g.final_distance for g in self.goals if math.isfinite(g.final_distance)]
        return {
            "goals": len(self.goals),
            "goals_reached": len(reached),
            "success_threshold": self.success_threshold,
            "mean_time_to_reach": float(np.mean(times)) if times else None,
            "mean_final_distance": float(np.mean(finals)) if finals else None,
            "per_goal": [
                {
                    "goal": g.goal,
                    "start_time": g.start_time,
                    "start_wall_time": g.start_wall_time,
                    "reached": g.reached,
                    "time_to_reach": g.time_to_reach,
                    "min_distance": None if math.isinf(g.min_distance) else g.min_distance,
                    "final_distance": None if math.isnan(g.final_distance) else g.final_distance,
                }
                for g in self.goals
            ],
            "distance_trace": [[round(t, 4), round(d, 5)] for t, d in self.trace],
        }


def _published_joint_order(config: SimNodeConfig, joint_names: tuple[str, ...]) -> list[int]:
    """Indices into the contract order, in the order /joint_states lists them."""
    indices = list(range(len(joint_names)))
    if config.drop_joint:
        if config.drop_joint not in joint_names:
            raise ConfigError(
                f"drop_joint '{config.drop_joint}' is not a joint of the robot {list(joint_names)}"
            )
        indices.remove(joint_names.index(config.drop_joint))
    if config.joint_order == "reversed":
        indices.reverse()
    elif config.joint_order == "shuffled":
        np.random.default_rng(config.seed).shuffle(indices)
        if len(indices) > 1 and indices == sorted(indices):
            indices.reverse()
    return indices


# --- the node --------------------------------------------------------------------------------------


class SimNode(Node):
    """RobotSim + topics; the loop thread owns the physics, callbacks only store commands."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.config: SimNodeConfig = declare_config(self, SimNodeConfig)
        cfg = self.config
        self.spec = resolve_robot(cfg.robot, cfg.mjcf or None)
        self.rng = np.random.default_rng(cfg.seed)
        self.robot = RobotSim(self.spec, load_profile(cfg.randomize), seed=cfg.seed)
        self.dynamics = self.robot.randomize(self.rng)
        self.robot.reset()
        self.rate_hz = cfg.rate_hz or self.spec.control_rate_hz
        timestep = float(self.robot.model.opt.timestep)
        self.substeps = max(1, round(1.0 / (self.rate_hz * timestep)))
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)
        self._order = _published_joint_order(cfg, self.spec.joint_names)
        self._names = [self.spec.joint_names[i] for i in self._order]
        if cfg.extra_joint:
            self._names.append(cfg.extra_joint)
        self.taps: list[Callable[[str, Any], None]] = []
        self.recorder = _attach_recorder(self) if cfg.record else None
        self.scorer = ReachScorer(self.spec.task.success_threshold)
        self._goal: np.ndarray | None = None
        self._next_goal_time = 0.0
        self._next_goal_repeat = 0.0
        self._command: np.ndarray | None = None
        self._command_lock = threading.Lock()
        self.commands_received = 0
        self.commands_rejected = 0
        self._joint_states = self.create_publisher(JointState, cfg.joint_states_topic, SENSOR_QOS)
        self._goals = self.create_publisher(PointStamped, cfg.goal_topic, 10)
        self._clock_publisher = self.create_publisher(Clock, "/clock", 10) if self.use_sim_time else None
        self.command_topic = (
            cfg.command_topic or f"/forward_{self.spec.command_interface}_controller/commands"
        )
        if self.spec.velocity_commands and cfg.command_type == "joint_trajectory":
            raise ConfigError(
                f"robot '{self.spec.name}' takes velocity commands (command_interface: velocity), which a "
                "JointTrajectory of positions cannot carry; use command_type float64_multi_array"
            )
        command_msg = Float64MultiArray if cfg.command_type == "float64_multi_array" else JointTrajectory
        self.create_subscription(command_msg, self.command_topic, self._on_command, 10)
        self.loop = FixedRateLoop(self.rate_hz * cfg.realtime_factor, self._tick, name="mpo_sim_physics")
        self.get_logger().info(
            f"robot '{self.spec.name}' ({cfg.randomize} randomisation) at {self.rate_hz:g} Hz x "
            f"{cfg.realtime_factor:g} real time; /joint_states names {self._names}; commands <- "
            f"{self.command_topic} [{self.spec.command_interface}, {cfg.command_type}]"
        )

    # --- recording hook ----------------------------------------------------------------
    def add_tap(self, callback: Callable[[str, Any], None]) -> None:
        """Call `callback(topic, message)` for every message published or received."""
        self.taps.append(callback)

    def _tap(self, topic: str, msg: Any) -> None:
        for callback in self.taps:
            callback(topic, msg)

    # --- inputs ------------------------------------------------------------------------
    def _on_command(self, msg: Any) -> None:
        self._tap(self.command_topic, msg)
        try:
            command = command_from_message(msg, self.spec.joint_names)
            if not np.all(np.isfinite(command)):
                raise ValueError(f"non-finite command {command.tolist()}")
        except ValueError as exc:
            self.commands_rejected += 1
            if self.commands_rejected == 1:
                self.get_logger().error(f"rejected command: {exc}; the servos keep their targets")
            return
        with self._command_lock:
            self._command = command
            self.commands_received += 1

    # --- the physics loop --------------------------------------------------------------
    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def _stamp_ns(self, sim_time: float) -> int:
        if self.use_sim_time:
            return round(sim_time * 1e9)
        return self.get_clock().now().nanoseconds

    def _tick(self) -> None:
        with self._command_lock:
            command, self._command = self._command, None
        if command is not None:
            self.robot.apply_command(command)
        self.robot.step(self.substeps)
        sim_time = self.robot.time
        stamp_ns = self._stamp_ns(sim_time)
        if self._clock_publisher is not None:
            clock = Clock(clock=stamp(stamp_ns))
            self._clock_publisher.publish(clock)
            self._tap("/clock", clock)
        positions, velocities = self.robot.measure()
        order = self._order
        names_positions = [positions[i] for i in order]
        names_velocities = [velocities[i] for i in order]
        if self.config.extra_joint:
            names_positions.append(0.0)
            names_velocities.append(0.0)
        msg = joint_state_message(
            self._names, np.array(names_positions), np.array(names_velocities), stamp_ns
        )
        self._joint_states.publish(msg)
        self._tap(self.config.joint_states_topic, msg)
        self._goal_step(sim_time, stamp_ns)

    def _goal_step(self, sim_time: float, stamp_ns: int) -> None:
        if self.config.goal_period <= 0:
            return
        if sim_time >= self._next_goal_time:
            if self._goal is not None:
                self._write_result()
            self._goal = tasks.sample_goal(self.spec, self.rng)
            self.scorer.new_goal(self._goal, sim_time, time.time())
            self._next_goal_time = sim_time + self.config.goal_period
            self._next_goal_repeat = sim_time
        if sim_time >= self._next_goal_repeat:
            goal_msg = point_from_goal(self._goal, stamp_ns, self.spec.task.goal_frame)
            self._goals.publish(goal_msg)
            self._tap(self.config.goal_topic, goal_msg)
            self._next_goal_repeat = sim_time + 0.5
        assert self._goal is not None
        self.scorer.update(sim_time, float(tasks.distance(self.robot.ee_position, self._goal)))

    # --- results -----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        loop = self.loop.stats.summary()
        return {
            "robot": self.spec.name,
            "randomize": self.config.randomize,
            "sim_time": self.robot.time,
            "rate_hz": self.rate_hz,
            "realtime_factor": self.config.realtime_factor,
            "loop": loop.as_dict(),
            "commands_received": self.commands_received,
            "commands_rejected": self.commands_rejected,
            "reach": self.scorer.summary(),
        }

    def _write_result(self) -> None:
        if not self.config.result_file:
            return
        path = Path(self.config.result_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.summary(), indent=1, allow_nan=False, default=_json_default))
        tmp.replace(path)

    def finish(self) -> dict[str, Any]:
        """Stop the physics, log and write the summary."""
        self.stop()
        if self.recorder is not None:
            self.recorder.close()  # after the physics stopped: the bag is complete and valid
        summary = self.summary()
        reach = summary["reach"]
        # Python logging: at shutdown the rclpy context (and with it /rosout) may be gone already.
        logging.getLogger(NODE_NAME).info(
            f"simulated {summary['sim_time']:.1f} s: {reach['goals_reached']}/{reach['goals']} goals "
            f"reached, mean final distance {reach['mean_final_distance']}, "
            f"{self.commands_received} commands received"
        )
        self._write_result()
        return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _attach_recorder(node: Any) -> Any:
    """Record every tapped message (CDR bytes, ROS type, receive time).

    The receive time is the wall clock, or with ``use_sim_time`` the simulated time itself (what the
    messages are stamped with). Not the node's ROS clock: under ``use_sim_time`` that clock follows the
    /clock this node publishes, one message late, so a log on it trailed the physics and its stamps and
    could not be used for calibration.
    """
    from rclpy.serialization import serialize_message

    from mpo_ros.data.recorder import BagRecorder, ros_type_name

    recorder = BagRecorder(node.config.record, storage=node.config.record_storage).open()

    def record(topic: str, msg: Any) -> None:
        recorder.write_serialized(
            topic, ros_type_name(msg), serialize_message(msg), node._stamp_ns(node.robot.time)
        )

    node.add_tap(record)
    return recorder


def spin_node(parameter_overrides: list[Any] | None = None, ros_args: list[str] | None = None) -> int:
    from mpo_ros.ros.runner import run_node

    return run_node(SimNode, NODE_NAME, parameter_overrides, ros_args, config_class=SimNodeConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mpo-ros sim-robot` flags: one per parameter, plus a ROS params file and --use-sim-time."""
    from mpo_ros.ros.params import add_node_arguments

    add_node_arguments(parser, SimNodeConfig, "config/sim.yaml", NODE_NAME)


def run(args: argparse.Namespace) -> int:
    from mpo_ros.ros.params import cli_parameter_overrides

    return spin_node(parameter_overrides=cli_parameter_overrides(SimNodeConfig, args, NODE_NAME))


def main(argv: list[str] | None = None) -> int:
    """Console script `sim_node` (`ros2 run mpo_ros sim_node --ros-args -p robot:=arm2`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return spin_node(ros_args=sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
