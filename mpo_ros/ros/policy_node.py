"""The policy node `mpo_policy`: /joint_states -> ONNX policy -> safety -> position commands.

Run it as ``ros2 run mpo_ros policy_node --ros-args -p policy:=models/arm2_reach.onnx`` or
``mpo-ros serve --policy models/arm2_reach.onnx``. Everything the node needs is in the ONNX file: the
robot contract (joint names and order, limits, control rate, observation layout) rides in its
metadata, and a file without one is refused.

How the loop holds its period (``loop``), chosen by measurement (benchmarks/ros_loop.py, results in
benchmarks/results/ros_loop.json; 2-vCPU VM shared with training jobs, load average 3-5; figures
from two runs of the whole benchmark):

- ``timer``: an rclpy timer fires only when the executor gets round to it, behind whatever callbacks
  are ready (a /joint_states message arrives every period), and it drops ticks when late. The node
  on it reached 403-431 Hz of 500 and 591-990 of 1000, p99 period jitter 0.5-10 ms.
- ``thread``: a dedicated thread keeps absolute deadlines (mpo_ros/robot/rate.py: sleep, then poll the
  clock for the last ``spin_margin``) while the executor thread runs callbacks. Every tick must win
  the GIL back from the executor thread, and under SCHED_FIFO that hand-over inverts priorities (the
  real-time thread waits for a normal-priority one): p99 1.1-5 ms here.
- ``single_thread`` (default): the same deadline loop runs the executor itself in the waiting time
  (``executor.spin_once`` with the time left, none started within 300 us of a deadline), so one
  thread owns the GIL and there is nothing to hand over. With ``realtime_priority`` (default 50,
  SCHED_FIFO, as ros2_control's controller manager does; refused without CAP_SYS_NICE / rtprio, then
  logged and run at normal priority) it was the only mechanism that held the period on the loaded
  machine: p99 period jitter 10-76 us at 500 Hz and 0.7-129 us at 1 kHz, achieved rate within
  0.07 % / 0.17 % of nominal (the misses are multi-ms stalls of the virtual CPU itself, max 5-7 ms).
  Without SCHED_FIFO no mechanism stays below ms-level p99 on a machine this loaded.
- ``joint_state``: the step runs inside the /joint_states callback (rate = the robot's publishing
  rate, like a ros2_control controller updated after each read): the lowest /joint_states -> command
  latency, no period of its own; a timer keeps holds going if the messages stop.

Choose ``loop: timer`` with ``use_sim_time`` (timers follow /clock; the deadline loops follow the
wall clock). rclpy publishers are thread-safe, so the ``thread`` mode publishes from its own thread.

Safety (rules in mpo_ros/robot/supervisor.py): the node starts disabled and holds the measured position;
``/mpo_policy/enable`` (std_srvs/SetBool) enables it, ``false`` is the software e-stop; a watchdog
holds or stops when /joint_states is older than ``state_timeout``; non-finite inputs or policy outputs
are rejected and the last command held; every command, held ones included, passes the contract's
per-step and joint limits (`observation.limit_command`). /diagnostics reports the loop at 1 Hz.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpo_ros.config import option
from mpo_ros.contract.spec import models_dir
from mpo_ros.errors import ConfigError, PolicyFileError
from mpo_ros.robot.controller import PolicyController
from mpo_ros.robot.rate import WAIT_STRATEGIES, FixedRateLoop, LoopStats, set_realtime_priority
from mpo_ros.robot.supervisor import ON_STALE_CHOICES, SafetyState, Supervisor

__all__ = [
    "DIAGNOSTIC_KEYS",
    "NODE_NAME",
    "PolicyNodeConfig",
    "add_arguments",
    "main",
    "run",
]

NODE_NAME = "mpo_policy"
LOOP_CHOICES = ("thread", "single_thread", "timer", "joint_state")
DEVICE_CHOICES = ("cpu", "cuda", "auto")
COMMAND_TYPE_CHOICES = ("float64_multi_array", "joint_trajectory")

# Keys of the KeyValue list in the node's /diagnostics status (tests and dashboards rely on them).
DIAGNOSTIC_KEYS = (
    "safety_state",
    "reason",
    "enabled",
    "robot",
    "loop",
    "rate_target_hz",
    "rate_achieved_hz",
    "period_jitter_p50_us",
    "period_jitter_p99_us",
    "period_jitter_max_us",
    "overruns",
    "inference_latency_p50_us",
    "inference_latency_p99_us",
    "policy_step_p50_us",
    "policy_step_p99_us",
    "observation_age_ms",
    "joint_states_received",
    "rejected_inputs",
    "rejected_missing_joints",
    "rejected_non_finite",
    "rejected_malformed",
    "rejected_goals",
    "rejected_policy_steps",
    "stale_events",
    "policy_commands",
    "hold_commands",
)


@dataclass
class PolicyNodeConfig:
    """Parameters of the policy node: ROS parameters, `mpo-ros serve` flags and config/policy.yaml."""

    policy: str = option("", "ONNX policy written by `mpo-ros export` (carries the robot contract)")
    device: str = option("cpu", "onnxruntime device", choices=DEVICE_CHOICES)
    rate_hz: float = option(0.0, "control rate (Hz); 0 uses the contract's control_rate_hz")
    joint_states_topic: str = option("/joint_states", "sensor_msgs/JointState input (sensor-data QoS)")
    command_topic: str = option("/forward_position_controller/commands", "position command output topic")
    command_type: str = option("float64_multi_array", "command message type", choices=COMMAND_TYPE_CHOICES)
    goal_topic: str = option("/goal", "geometry_msgs/PointStamped goal input (x, y for a 2-D goal)")
    state_timeout: float = option(0.1, "watchdog: /joint_states older than this (s) is stale")
    on_stale: str = option(
        "hold", "on stale /joint_states: hold the last command or stop publishing", choices=ON_STALE_CHOICES
    )
    loop: str = option(
        "single_thread", "control loop mechanism (see the module docstring)", choices=LOOP_CHOICES
    )
    wait: str = option("sleep_spin", "thread loop: how to wait for a deadline", choices=WAIT_STRATEGIES)
    spin_margin: float = option(1e-4, "thread loop, sleep_spin: busy-wait this long (s) before a deadline")
    realtime_priority: int = option(
        50, "SCHED_FIFO priority (1-99) of the control loop thread, if permitted; 0 = normal scheduling"
    )
    diagnostics_period: float = option(1.0, "seconds between /diagnostics messages")

    def validate(self) -> None:
        choices = {
            "device": DEVICE_CHOICES,
            "command_type": COMMAND_TYPE_CHOICES,
            "on_stale": ON_STALE_CHOICES,
            "loop": LOOP_CHOICES,
            "wait": WAIT_STRATEGIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.rate_hz) and 0 <= self.rate_hz <= 10000):
            raise ConfigError(f"rate_hz must be in [0, 10000] (0 = contract rate), got {self.rate_hz}")
        for name in ("state_timeout", "diagnostics_period"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be > 0 s, got {getattr(self, name)}")
        if not 0 <= self.realtime_priority <= 99:
            raise ConfigError(f"realtime_priority must be in 0..99 (0 = off), got {self.realtime_priority}")
        if not (math.isfinite(self.spin_margin) and 0 <= self.spin_margin < 0.01):
            raise ConfigError(f"spin_margin must be in [0, 0.01) s, got {self.spin_margin}")
        for name in ("joint_states_topic", "command_topic", "goal_topic"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name a topic")


def resolve_policy_path(path: str) -> Path:
    """A path as given, else a file shipped in models/ (so `policy:=arm2_reach.onnx` works installed)."""
    given = Path(path).expanduser()
    if given.is_file():
        return given
    for candidate in (models_dir() / path, models_dir() / f"{path}.onnx"):
        if candidate.is_file():
            return candidate
    raise PolicyFileError(
        f"policy file {path} not found (also looked in {models_dir()}); give the path of an ONNX file "
        "written by `mpo-ros export`"
    )


def load_policy(path: str, device: str) -> Any:
    """OnnxPolicy with a robot contract; a file without one cannot drive a robot."""
    if not path:
        raise ConfigError("no policy given: set the `policy` parameter (or --policy) to an ONNX file")
    from mpo_ros.robot.onnx_policy import OnnxPolicy

    path = str(resolve_policy_path(path))
    # require_contract: a policy of a plain gymnasium env has no joint names and cannot drive a robot.
    return OnnxPolicy(path, device=device, require_contract=True)


# --- the node -------------------------------------------------------------------------------------


def _make_node_class() -> type:
    """Build the rclpy node class on first use, so importing this module does not import rclpy."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PointStamped
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool

    from mpo_ros.ros.messages import SENSOR_QOS, goal_from_point, make_command_publisher
    from mpo_ros.ros.params import declare_config

    levels = {
        SafetyState.ENABLED: DiagnosticStatus.OK,
        SafetyState.DISABLED: DiagnosticStatus.OK,
        SafetyState.WAITING_FOR_STATE: DiagnosticStatus.WARN,
        SafetyState.STALE: DiagnosticStatus.WARN,
        SafetyState.FAULT: DiagnosticStatus.ERROR,
    }

    class PolicyNode(Node):
        """Shell around PolicyController: subscriptions, the loop, the service, diagnostics."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(NODE_NAME, **kwargs)
            self.config: PolicyNodeConfig = declare_config(
                self, PolicyNodeConfig, mutable=("state_timeout", "on_stale", "diagnostics_period")
            )
            self.add_post_set_parameters_callback(self._on_parameters_set)
            cfg = self.config
            self.policy = load_policy(cfg.policy, cfg.device)
            self.spec = self.policy.spec
            self.rate_hz = cfg.rate_hz or self.spec.control_rate_hz
            self.supervisor = Supervisor(self.spec, cfg.state_timeout, cfg.on_stale)
            self.controller = PolicyController(self.policy, self.supervisor)
            self._publish_command = make_command_publisher(
                self, cfg.command_topic, cfg.command_type, self.spec.joint_names, 1.0 / self.rate_hz
            )
            self._goal_dim = self.spec.task.goal_dim
            self.create_subscription(JointState, cfg.joint_states_topic, self._on_joint_state, SENSOR_QOS)
            self.create_subscription(PointStamped, cfg.goal_topic, self._on_goal, 10)
            self.create_service(SetBool, "~/enable", self._on_enable)
            self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._diagnostics_timer = self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
            self.create_timer(0.05, self._log_events)
            self.loop: FixedRateLoop | None = None
            self.timer_stats: LoopStats | None = None
            self.get_logger().info(
                f"policy {cfg.policy} for robot '{self.spec.name}' joints {list(self.spec.joint_names)} "
                f"at {self.rate_hz:g} Hz ({cfg.loop} loop); commands -> {cfg.command_topic} "
                f"[{cfg.command_type}]; DISABLED until {self.get_fully_qualified_name()}/enable"
            )

        # --- control loop ------------------------------------------------------------------
        def start(self) -> None:
            if self.config.loop in ("thread", "single_thread"):
                self.loop = FixedRateLoop(
                    self.rate_hz,
                    self._tick,
                    wait=self.config.wait,
                    spin_margin=self.config.spin_margin,
                    name="mpo_policy_control",
                    priority=self.config.realtime_priority,
                )
                if self.config.loop == "thread":
                    self.loop.start()  # single_thread: run() in spin()
            elif self.config.loop == "timer":
                self._prioritise_this_thread()
                self.timer_stats = LoopStats(1.0 / self.rate_hz)
                self.create_timer(1.0 / self.rate_hz, self._tick_from_timer)
            else:
                # Ticks follow /joint_states; this timer keeps holds (disabled, stale) going when
                # they stop, and never runs while messages arrive in time.
                self._prioritise_this_thread()
                self.timer_stats = LoopStats(1.0 / self.rate_hz)
                self._last_tick_ns = 0
                self.create_timer(1.0 / self.rate_hz, self._tick_if_idle)

        def _prioritise_this_thread(self) -> None:
            """timer / joint_state: the thread that spins the executor runs the step; prioritise it."""
            if self.config.realtime_priority > 0:
                problem = set_realtime_priority(self.config.realtime_priority)
                if problem:
                    self.get_logger().warning(f"realtime_priority: {problem}")

        def spin(self, executor: Any) -> None:
            """`single_thread`: this thread runs callbacks between ticks (see FixedRateLoop idle)."""
            if self.config.loop != "single_thread":
                executor.spin()
                return
            assert self.loop is not None
            self.loop.set_idle(lambda budget: executor.spin_once(timeout_sec=budget))
            self.loop.run()
            if self.loop.error is not None:
                raise self.loop.error  # ExternalShutdownException / KeyboardInterrupt end the run

        def stop(self) -> None:
            if self.loop is not None:
                self.loop.stop()

        def finish(self) -> None:
            """Stop commanding. The controller keeps the last command (no zero command is sent)."""
            self.stop()

        @property
        def loop_stats(self) -> LoopStats:
            if self.loop is not None:
                return self.loop.stats
            assert self.timer_stats is not None
            return self.timer_stats

        def _tick_if_idle(self) -> None:
            if time.monotonic_ns() - self._last_tick_ns > 1.5e9 / self.rate_hz:
                self._tick()
                self._last_tick_ns = time.monotonic_ns()

        def _tick_from_timer(self) -> None:
            assert self.timer_stats is not None
            self.timer_stats.record(time.monotonic_ns())
            self._tick()

        def _tick(self) -> None:
            command, _ = self.controller.tick()
            if command is not None:
                self._publish_command(command, self.get_clock().now().nanoseconds)

        # --- inputs ------------------------------------------------------------------------
        def _on_joint_state(self, msg: JointState) -> None:
            self.supervisor.accept_joint_state(msg.name, msg.position, msg.velocity)
            if self.config.loop == "joint_state" and self.timer_stats is not None:
                now = time.monotonic_ns()
                self.timer_stats.record(now)
                self._last_tick_ns = now
                self._tick()

        def _on_goal(self, msg: PointStamped) -> None:
            self.supervisor.accept_goal(goal_from_point(msg, self._goal_dim))

        def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
            response.success, response.message = self.supervisor.enable(bool(request.data))
            if response.success:
                self.get_logger().info(f"enable({request.data}): {response.message}")
            else:
                self.get_logger().warning(f"enable({request.data}): {response.message}")
            return response

        def _on_parameters_set(self, params: list[Any]) -> None:
            for param in params:
                if param.name == "state_timeout":
                    self.supervisor.state_timeout = float(param.value)
                elif param.name == "on_stale":
                    self.supervisor.on_stale = str(param.value)
                elif param.name == "diagnostics_period":
                    self._diagnostics_timer.timer_period_ns = round(float(param.value) * 1e9)
                self.get_logger().info(f"parameter {param.name} set to {param.value!r}")

        def _log_events(self) -> None:
            # rclpy loggers fix the severity per call site, hence two call sites.
            for level, message in self.supervisor.pop_events():
                if level == "error":
                    self.get_logger().error(message)
                else:
                    self.get_logger().info(message)
            if self.loop is not None and self.loop.priority_error:
                self.get_logger().warning(f"realtime_priority: {self.loop.priority_error}")
                self.loop.priority_error = ""
            if self.loop is not None and self.loop.error is not None:
                self.get_logger().fatal(f"control loop died: {self.loop.error!r}; commands stopped")
                self.loop.error = None

        # --- diagnostics -------------------------------------------------------------------
        def diagnostic_values(self) -> dict[str, Any]:
            loop = self.loop_stats.summary()
            inference = self.policy.latency_stats()
            step = self.controller.step_latency.summary()
            counters = self.supervisor.counters
            state = self.supervisor.state()
            return {
                "safety_state": state.value,
                "reason": self.supervisor.fault or ("" if state is not SafetyState.STALE else "stale"),
                "enabled": self.supervisor.enabled,
                "robot": self.spec.name,
                "loop": self.config.loop,
                "rate_target_hz": self.rate_hz,
                "rate_achieved_hz": loop.rate_hz,
                "period_jitter_p50_us": loop.jitter_p50 * 1e6,
                "period_jitter_p99_us": loop.jitter_p99 * 1e6,
                "period_jitter_max_us": loop.jitter_max * 1e6,
                "overruns": loop.overruns,
                "inference_latency_p50_us": inference.p50 * 1e6 if inference.count else math.nan,
                "inference_latency_p99_us": inference.p99 * 1e6 if inference.count else math.nan,
                "policy_step_p50_us": step["p50"] * 1e6,
                "policy_step_p99_us": step["p99"] * 1e6,
                "observation_age_ms": self.supervisor.observation_age() * 1e3,
                "joint_states_received": counters.joint_states,
                "rejected_inputs": counters.rejected_inputs + self.controller.rejected_policy_steps,
                "rejected_missing_joints": counters.rejected_missing_joints,
                "rejected_non_finite": counters.rejected_non_finite,
                "rejected_malformed": counters.rejected_malformed,
                "rejected_goals": counters.rejected_goals,
                "rejected_policy_steps": self.controller.rejected_policy_steps,
                "stale_events": counters.stale_events,
                "policy_commands": counters.policy_commands,
                "hold_commands": counters.hold_commands,
            }

        def _publish_diagnostics(self) -> None:
            values = self.diagnostic_values()
            state = SafetyState(values["safety_state"])
            status = DiagnosticStatus()
            status.name = f"{NODE_NAME}: control loop"
            status.hardware_id = self.spec.name
            status.level = levels[state]
            status.message = f"{state.value} at {values['rate_achieved_hz']:.1f} Hz"
            status.values = [KeyValue(key=k, value=_text(values[k])) for k in DIAGNOSTIC_KEYS]
            msg = DiagnosticArray()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.status = [status]
            self._diagnostics.publish(msg)

    return PolicyNode


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


_NODE_CLASS: type | None = None


def policy_node_class() -> type:
    global _NODE_CLASS
    if _NODE_CLASS is None:
        _NODE_CLASS = _make_node_class()
    return _NODE_CLASS


def spin_node(parameter_overrides: list[Any] | None = None, ros_args: list[str] | None = None) -> int:
    from mpo_ros.ros.lifecycle import run_node

    return run_node(policy_node_class(), NODE_NAME, parameter_overrides, ros_args)


# --- entry points ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mpo-ros serve` flags: one per parameter, plus a ROS params file and --use-sim-time."""
    from mpo_ros.ros.params import add_node_arguments

    add_node_arguments(parser, PolicyNodeConfig, "config/policy.yaml", NODE_NAME)


def run(args: argparse.Namespace) -> int:
    from mpo_ros.ros.params import cli_parameter_overrides

    return spin_node(parameter_overrides=cli_parameter_overrides(PolicyNodeConfig, args, NODE_NAME))


def main(argv: list[str] | None = None) -> int:
    """Console script `policy_node` (`ros2 run mpo_ros policy_node --ros-args -p policy:=...`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return spin_node(ros_args=sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
