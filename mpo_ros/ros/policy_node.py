"""The policy node `mpo_policy`: /joint_states -> ONNX policy -> safety -> joint commands.

Run it as ``ros2 run mpo_ros policy_node --ros-args -p policy:=models/arm2_reach.onnx``,
``ros2 launch mpo_ros policy.launch.py`` or ``mpo-ros serve --policy models/arm2_reach.onnx``.
Everything the node needs is in the ONNX file: the robot contract (joint names and order, limits,
control rate, observation layout) rides in its metadata, and a file without one is refused.

A managed (lifecycle) node, as ros2_control and Nav2 nodes are: ``configure`` checks that no other
node has its name, loads and validates the ONNX file and its contract and creates its topics and
services; ``activate`` starts the control loop, still disabled until ``~/enable`` (unless
``enable_on_activate``); ``deactivate`` stops publishing (``on_deactivate: stop``) or keeps holding
the measured position (``hold``); ``cleanup`` and ``shutdown`` release everything. A failing
transition goes to the lifecycle error state, whose handler releases everything and returns to
``unconfigured``. With ``autostart`` (default) the node configures and activates itself; a failure
then ends the process with exit status 2 and one line naming the problem and its fix.

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

Command interface: the contract's ``command_interface`` says what the commands are. ``position``:
absolute targets (rad) to /forward_position_controller/commands or a JointTrajectory; ``velocity``:
joint velocities (rad/s, Float64MultiArray only) to /forward_velocity_controller/commands. An empty
``command_topic`` picks that default; a topic naming another interface is refused unless
``allow_interface_mismatch``. A forward_velocity_controller keeps executing the last command, so under a
velocity contract every hold and stop is a ramp to zero velocity (mpo_ros/robot/controller.py), and
deactivate (``on_deactivate: stop``), cleanup and shutdown publish that ramp before going quiet.

Safety (rules in mpo_ros/robot/supervisor.py, the control step in mpo_ros/robot/controller.py): the
node starts disabled and holds the measured position; ``~/enable`` (std_srvs/SetBool) enables it,
``false`` is the software e-stop. Every command, held ones included, passes the contract's per-step
and joint limits. The node also watches the ROS graph: another publisher on ``command_topic`` is a
fault (two command streams make the arm jump), and so is another node with this node's name.
/diagnostics reports the loop, the safety state and policy-step failures every ``diagnostics_period``.
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

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from mpo_ros.config import option
from mpo_ros.contract.spec import models_dir
from mpo_ros.errors import ConfigError, MpoRosError, PolicyFileError
from mpo_ros.robot.controller import PolicyController
from mpo_ros.robot.onnx_policy import OnnxPolicy
from mpo_ros.robot.rate import WAIT_STRATEGIES, FixedRateLoop, LoopStats, set_realtime_priority
from mpo_ros.robot.supervisor import SafetyState, Supervisor, SupervisorSettings, supervisor_settings
from mpo_ros.ros.messages import SENSOR_QOS, goal_from_point, make_command_publisher
from mpo_ros.ros.params import declare_config

__all__ = [
    "DIAGNOSTIC_KEYS",
    "NODE_NAME",
    "PolicyNode",
    "PolicyNodeConfig",
    "add_arguments",
    "main",
    "run",
]

NODE_NAME = "mpo_policy"
LOOP_CHOICES = ("thread", "single_thread", "timer", "joint_state")
DEVICE_CHOICES = ("cpu", "cuda", "auto")
COMMAND_TYPE_CHOICES = ("float64_multi_array", "joint_trajectory")
ON_DEACTIVATE_CHOICES = ("stop", "hold")
GRAPH_CHECK_PERIOD = 0.5  # s between looks at the ROS graph (other publishers, same-name nodes)
# A node that finds a same-name twin this soon after configuring (discovery was slower than
# name_check_time) is the newcomer: it refuses to run and exits 2, as if the startup check had seen it.
NEWCOMER_WINDOW = 10.0  # s

# Keys of the KeyValue list in the node's /diagnostics status (tests and dashboards rely on them).
DIAGNOSTIC_KEYS = (
    "safety_state",
    "reason",
    "enabled",
    "lifecycle_state",
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
    "rejected_duplicate_names",
    "rejected_non_finite",
    "rejected_malformed",
    "rejected_old_stamps",
    "rejected_out_of_limits",
    "rejected_goals",
    "rejected_policy_steps",
    "stale_events",
    "outage_disables",
    "policy_commands",
    "hold_commands",
)

_LEVELS = {
    SafetyState.ENABLED: DiagnosticStatus.OK,
    SafetyState.DISABLED: DiagnosticStatus.OK,
    SafetyState.WAITING_FOR_STATE: DiagnosticStatus.WARN,
    SafetyState.STALE: DiagnosticStatus.WARN,
    SafetyState.FAULT: DiagnosticStatus.ERROR,
}


@dataclass
class PolicyNodeConfig(SupervisorSettings):
    """Parameters of the policy node: ROS parameters, `mpo-ros serve` flags and config/policy.yaml.

    The safety rules' fields (state_timeout, on_stale, ...) come from SupervisorSettings, their one home.
    """

    policy: str = option("", "ONNX policy written by `mpo-ros export` (carries the robot contract)")
    device: str = option("cpu", "onnxruntime device", choices=DEVICE_CHOICES)
    rate_hz: float = option(0.0, "control rate (Hz); 0 uses the contract's control_rate_hz")
    joint_states_topic: str = option("/joint_states", "sensor_msgs/JointState input (sensor-data QoS)")
    command_topic: str = option(
        "",
        "command output topic; empty: /forward_<interface>_controller/commands for the contract's "
        "command_interface (position or velocity)",
    )
    command_type: str = option("float64_multi_array", "command message type", choices=COMMAND_TYPE_CHOICES)
    allow_interface_mismatch: bool = option(
        False,
        "publish even if command_topic names another command interface than the contract's (e.g. "
        "/forward_velocity_controller/commands for a position contract); only for a remapped topic you trust",
    )
    goal_topic: str = option("/goal", "geometry_msgs/PointStamped goal input (x, y for a 2-D goal)")
    loop: str = option(
        "single_thread", "control loop mechanism (see the module docstring)", choices=LOOP_CHOICES
    )
    wait: str = option("sleep_spin", "thread loop: how to wait for a deadline", choices=WAIT_STRATEGIES)
    spin_margin: float = option(1e-4, "thread loop, sleep_spin: busy-wait this long (s) before a deadline")
    realtime_priority: int = option(
        50, "SCHED_FIFO priority (1-99) of the control loop thread, if permitted; 0 = normal scheduling"
    )
    warmup_lead: float = option(
        5e-4,
        "thread loops: run the policy this long (s) before each deadline, then busy-wait to it, so the "
        "step runs on warm caches (costs that much CPU per period); 0 = off",
    )
    diagnostics_period: float = option(1.0, "seconds between /diagnostics messages")
    autostart: bool = option(True, "configure and activate at start (False: wait for a lifecycle manager)")
    enable_on_activate: bool = option(
        False, "enable as soon as the node is active and has fresh /joint_states (no ~/enable call)"
    )
    on_deactivate: str = option(
        "stop",
        "when deactivated: stop publishing or hold the measured position",
        choices=ON_DEACTIVATE_CHOICES,
    )
    name_check_time: float = option(
        1.0, "s spent at configure looking for another node with this node's name (discovery); 0 = skip"
    )

    def validate(self) -> None:
        super().validate()
        choices = {
            "device": DEVICE_CHOICES,
            "command_type": COMMAND_TYPE_CHOICES,
            "loop": LOOP_CHOICES,
            "wait": WAIT_STRATEGIES,
            "on_deactivate": ON_DEACTIVATE_CHOICES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.rate_hz) and 0 <= self.rate_hz <= 10000):
            raise ConfigError(f"rate_hz must be in [0, 10000] (0 = contract rate), got {self.rate_hz}")
        if not (math.isfinite(self.diagnostics_period) and self.diagnostics_period > 0):
            raise ConfigError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")
        if not (math.isfinite(self.name_check_time) and 0 <= self.name_check_time <= 30):
            raise ConfigError(f"name_check_time must be in [0, 30] s, got {self.name_check_time}")
        if not 0 <= self.realtime_priority <= 99:
            raise ConfigError(f"realtime_priority must be in 0..99 (0 = off), got {self.realtime_priority}")
        if not (math.isfinite(self.warmup_lead) and 0 <= self.warmup_lead < 0.01):
            raise ConfigError(f"warmup_lead must be in [0, 0.01) s, got {self.warmup_lead}")
        if not (math.isfinite(self.spin_margin) and 0 <= self.spin_margin < 0.01):
            raise ConfigError(f"spin_margin must be in [0, 0.01) s, got {self.spin_margin}")
        for name in ("joint_states_topic", "goal_topic"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name a topic")


# Parameters that may change while the node runs (ros2 param set); the others need a restart.
MUTABLE_PARAMETERS = (
    "state_timeout",
    "on_stale",
    "on_disabled",
    "reenable_after_outage",
    "stamp_timeout",
    "limit_tolerance",
    "goal_margin",
    "fault_log_period",
    "diagnostics_period",
    "enable_on_activate",
    "on_deactivate",
)


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


def load_policy(path: str, device: str) -> OnnxPolicy:
    """OnnxPolicy with a robot contract; a file without one cannot drive a robot."""
    if not path:
        raise ConfigError("no policy given: set the `policy` parameter (or --policy) to an ONNX file")
    # require_contract: a policy of a plain gymnasium env has no joint names and cannot drive a robot.
    return OnnxPolicy(str(resolve_policy_path(path)), device=device, require_contract=True)


class StartupError(MpoRosError):
    """The node cannot start (same-name node, bad policy file); the message says why and what to do."""


class PolicyNode(LifecycleNode):
    """Lifecycle shell around PolicyController: topics, the loop, the enable service, diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.config: PolicyNodeConfig = declare_config(self, PolicyNodeConfig, mutable=MUTABLE_PARAMETERS)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.policy: OnnxPolicy | None = None
        self.supervisor: Supervisor | None = None
        self.controller: PolicyController | None = None
        self.loop: FixedRateLoop | None = None
        self.timer_stats: LoopStats | None = None
        self.active = False
        self.rate_hz = 0.0
        self._entities: list[Any] = []  # publishers, subscriptions, services, timers of `configure`
        self._loop_timers: list[Any] = []  # timers of `activate` (timer and joint_state loops)
        self._publish_command: Any = None
        self.command_topic = ""  # resolved at configure: the parameter, or the contract interface's default
        self._enable_pending = False
        self._last_tick_ns = 0
        self._stop_requested = False
        self._configured_at = 0.0
        self.exit_status = 0  # what the process returns after a clean stop (2: refused to run)
        self.lifecycle_state = "unconfigured"

    # --- lifecycle transitions -------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except MpoRosError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.ERROR
        self.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._start_loop()
        self.active = True
        self._enable_pending = self.config.enable_on_activate
        self.lifecycle_state = "active"
        self.get_logger().info(
            f"active: DISABLED until {self.get_fully_qualified_name()}/enable"
            + (" (enable_on_activate: enabling once /joint_states is fresh)" if self._enable_pending else "")
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._enable_pending = False
        assert self.supervisor is not None
        self.supervisor.enable(False)
        if self.config.on_deactivate == "stop":
            self._stop_loop()
            self._ramp_to_rest()  # velocity contracts: the forward controller would keep the last command
        self.lifecycle_state = "inactive"
        self.get_logger().info(
            f"deactivated: {'holding the measured position' if self.loop else 'not publishing'}"
        )
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        cfg = self.config
        self._check_name_is_unique(cfg.name_check_time)
        self._configured_at = time.monotonic()
        self.policy = load_policy(cfg.policy, cfg.device)
        spec = self.policy.spec
        assert spec is not None  # require_contract
        self.rate_hz = cfg.rate_hz or spec.control_rate_hz
        if cfg.warmup_lead + cfg.spin_margin >= 0.5 / self.rate_hz:
            raise ConfigError(
                f"warmup_lead {cfg.warmup_lead} s + spin_margin {cfg.spin_margin} s leave too little of the "
                f"{1e3 / self.rate_hz:.3g} ms period at {self.rate_hz:g} Hz; lower warmup_lead (0 = off)"
            )
        self.command_topic = cfg.command_topic or default_command_topic(spec.command_interface)
        check_command_interface(self.command_topic, spec.command_interface, cfg.allow_interface_mismatch)
        check_command_type(cfg.command_type, spec.command_interface)
        self.supervisor = Supervisor(spec, supervisor_settings(cfg))
        self.controller = PolicyController(self.policy, self.supervisor)
        self._goal_dim = spec.task.goal_dim
        self._publish_command = make_command_publisher(
            self, self.command_topic, cfg.command_type, spec.joint_names, 1.0 / self.rate_hz
        )
        self._entities = [
            self.create_subscription(JointState, cfg.joint_states_topic, self._on_joint_state, SENSOR_QOS),
            self.create_subscription(PointStamped, cfg.goal_topic, self._on_goal, 10),
            self.create_service(SetBool, "~/enable", self._on_enable),
            self.create_publisher(DiagnosticArray, "/diagnostics", 10),
            self.create_timer(cfg.diagnostics_period, self._publish_diagnostics),
            self.create_timer(0.05, self._log_events),
            self.create_timer(GRAPH_CHECK_PERIOD, self._check_graph),
        ]
        self._diagnostics, self._diagnostics_timer = self._entities[3], self._entities[4]
        self.get_logger().info(
            f"policy {cfg.policy} for robot '{spec.name}' joints {list(spec.joint_names)} "
            f"at {self.rate_hz:g} Hz ({cfg.loop} loop); {spec.command_interface} commands -> "
            f"{self.command_topic} [{cfg.command_type}]"
        )

    def _check_name_is_unique(self, seconds: float) -> None:
        """Refuse to run beside a node of the same name: one enable call would enable both."""
        me = (self.get_name(), self.get_namespace())
        deadline = time.monotonic() + seconds
        while True:
            if self.get_node_names_and_namespaces().count(me) > 1:
                raise StartupError(
                    f"a node named {self.get_fully_qualified_name()} is already running; two would both "
                    "drive the robot. Stop it, or start this one under another name (--ros-args -r "
                    "__node:=other_name)"
                )
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def _ramp_to_rest(self) -> None:
        """Velocity contracts: publish the ramp to zero velocity, one command per control period, before
        the node goes quiet (a forward_velocity_controller keeps executing the last command it got).
        Nothing for position contracts. Runs with the control loop stopped, so nothing else publishes."""
        controller, publish = self.controller, self._publish_command
        if controller is None or publish is None or not controller.spec.velocity_commands:
            return
        arrays = controller.spec.joint_arrays
        # Enough steps for the fastest possible command to reach zero at max_delta per step.
        steps = int(max(arrays.velocity_limit / arrays.max_delta)) + 2
        period = 1.0 / self.rate_hz
        deadline = time.monotonic()
        published = 0
        for _ in range(steps):
            command = controller.stop_command()
            if command is None:
                break
            publish(command, self.get_clock().now().nanoseconds)
            published += 1
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))
        if published:
            self.get_logger().info(f"ramped the velocity command to zero in {published} control periods")
            self._wait_for_command_acks()

    def _wait_for_command_acks(self, timeout_s: float = 0.5) -> None:
        """Give the reliable command publisher time to deliver the final zero before it is destroyed."""
        from rclpy.duration import Duration

        topic = self.resolve_topic_name(self.command_topic)
        for publisher in [p for p in self.publishers if p.topic_name == topic]:
            try:
                publisher.wait_for_all_acked(Duration(seconds=timeout_s))
            except Exception as exc:  # not every RMW implements it; the zero was still published
                self.get_logger().warning(f"could not confirm delivery of the final zero command: {exc}")

    def _release(self) -> None:
        self.active = False
        self._stop_loop()
        self._ramp_to_rest()
        for entity in self._entities:
            self._destroy(entity)
        self._entities = []
        if self._publish_command is not None:
            # The command publisher lives inside the publish function; a second configure must not
            # leave two (the graph check would take this node for its own twin).
            topic = self.resolve_topic_name(self.command_topic)
            for publisher in [p for p in self.publishers if p.topic_name == topic]:
                self.destroy_publisher(publisher)
        self._publish_command = None
        self.controller = None
        self.supervisor = None
        self.policy = None

    def _destroy(self, entity: Any) -> None:
        for destroy in (
            self.destroy_timer,
            self.destroy_subscription,
            self.destroy_service,
            self.destroy_publisher,
        ):
            try:
                if destroy(entity):
                    return
            except (TypeError, AttributeError):
                continue

    # --- control loop ----------------------------------------------------------------------
    def _start_loop(self) -> None:
        cfg = self.config
        self._stop_loop()
        if cfg.loop in ("thread", "single_thread"):
            self.loop = FixedRateLoop(
                self.rate_hz,
                self._tick,
                wait=cfg.wait,
                spin_margin=cfg.spin_margin,
                name="mpo_policy_control",
                priority=cfg.realtime_priority,
                warmup=self.controller.warm if self.controller is not None else None,
                warmup_lead=cfg.warmup_lead,
            )
            if cfg.loop == "thread":
                self.loop.start()  # single_thread: run() in spin()
            return
        self._prioritise_this_thread()
        self.timer_stats = LoopStats(1.0 / self.rate_hz)
        if cfg.loop == "timer":
            self._loop_timers = [self.create_timer(1.0 / self.rate_hz, self._tick_from_timer)]
        else:
            # Ticks follow /joint_states; this timer keeps holds (disabled, stale) going when they
            # stop, and never runs while messages arrive in time.
            self._last_tick_ns = 0
            self._loop_timers = [self.create_timer(1.0 / self.rate_hz, self._tick_if_idle)]

    def _stop_loop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        for timer in self._loop_timers:
            self.destroy_timer(timer)
        self._loop_timers = []

    def _prioritise_this_thread(self) -> None:
        """timer / joint_state: the thread that spins the executor runs the step; prioritise it."""
        if self.config.realtime_priority > 0:
            problem = set_realtime_priority(self.config.realtime_priority)
            if problem:
                self.get_logger().warning(f"realtime_priority: {problem}")

    def start(self) -> None:
        """autostart: configure and activate now; if configuring fails, stop with exit status 2."""
        if not self.config.autostart:
            self.get_logger().info(
                "autostart false: waiting for a lifecycle manager to configure and activate"
            )
            return
        self.trigger_configure()
        if self.lifecycle_state != "inactive":
            # on_configure logged why; the process ends with exit status 2 and no second line.
            self.exit_status = 2
            self._stop_requested = True
            return
        self.trigger_activate()

    def request_stop(self) -> None:
        """From the signal handler: end `spin` within one executor wait (no rclpy call here)."""
        self._stop_requested = True
        if self.loop is not None:
            self.loop.stop(timeout=0)

    def spin(self, executor: Any) -> None:
        """Serve callbacks until `request_stop`; `single_thread` runs the loop here, callbacks between ticks."""
        while not self._stop_requested:
            loop = self.loop
            if loop is not None and self.config.loop == "single_thread":
                loop.set_idle(lambda budget: executor.spin_once(timeout_sec=budget))
                loop.run()
                if loop.error is not None and not self._stop_requested:
                    self.get_logger().fatal(f"control loop died: {loop.error!r}; commands stopped")
                    raise loop.error
            else:
                executor.spin_once(timeout_sec=0.05)

    def finish(self) -> None:
        """Stop commanding and release. A position controller keeps the last command (no command is sent);
        a velocity contract first ramps its command to zero (see `_ramp_to_rest`)."""
        self._release()

    @property
    def loop_stats(self) -> LoopStats:
        if self.loop is not None:
            return self.loop.stats
        if self.timer_stats is None:
            self.timer_stats = LoopStats(1.0 / max(self.rate_hz, 1.0))
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
        controller, publish = self.controller, self._publish_command
        if controller is None or publish is None:
            return
        command, _ = controller.tick()
        if command is not None and not self._stop_requested:
            publish(command, self.get_clock().now().nanoseconds)

    # --- inputs ----------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        supervisor = self.supervisor
        if supervisor is None:
            return
        stamp_age = None
        if self.config.stamp_timeout > 0:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            stamp_age = (self.get_clock().now().nanoseconds - stamp_ns) / 1e9
        supervisor.accept_joint_state(msg.name, msg.position, msg.velocity, stamp_age=stamp_age)
        if self.config.loop == "joint_state" and self._loop_timers and self.timer_stats is not None:
            now = time.monotonic_ns()
            self.timer_stats.record(now)
            self._last_tick_ns = now
            self._tick()

    def _on_goal(self, msg: PointStamped) -> None:
        if self.supervisor is not None:
            self.supervisor.accept_goal(goal_from_point(msg, self._goal_dim), msg.header.frame_id)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        assert self.supervisor is not None
        if request.data and not self.active:
            response.success = False
            response.message = f"cannot enable: the node is {self.lifecycle_state}; activate it first"
        else:
            response.success, response.message = self.supervisor.enable(bool(request.data))
            self._enable_pending = self._enable_pending and not request.data
        if response.success:
            self.get_logger().info(f"enable({request.data}): {response.message}")
        else:
            self.get_logger().warning(f"enable({request.data}): {response.message}")
        return response

    def _on_parameters_set(self, params: list[Any]) -> None:
        changes = {p.name: p.value for p in params if p.name in SupervisorSettings.__dataclass_fields__}
        for param in params:
            if param.name not in PolicyNodeConfig.__dataclass_fields__:
                continue  # use_sim_time and other rclpy parameters
            # `-p x:=1` style integers arrive for float parameters (dynamic typing); keep the field's type.
            is_float = isinstance(getattr(self.config, param.name), float)
            setattr(self.config, param.name, float(param.value) if is_float else param.value)
            self.get_logger().info(f"parameter {param.name} set to {param.value!r}")
        if changes and self.supervisor is not None:
            self.supervisor.update_settings(**{k: getattr(self.config, k) for k in changes})
        if any(p.name == "diagnostics_period" for p in params) and self._entities:
            self._diagnostics_timer.timer_period_ns = round(self.config.diagnostics_period * 1e9)

    def _check_graph(self) -> None:
        """Another publisher on the command topic, or a node with our name: a fault (two command streams)."""
        if self.supervisor is None:
            return
        me = (self.get_name(), self.get_namespace())
        topic = self.resolve_topic_name(self.command_topic)
        publishers = self.get_publishers_info_by_topic(topic)
        mine = [p for p in publishers if (p.node_name, p.node_namespace) == me]
        others = sorted(
            f"{p.node_namespace.rstrip('/')}/{p.node_name}"
            for p in publishers
            if (p.node_name, p.node_namespace) != me
        )
        if len(mine) > 1 or self.get_node_names_and_namespaces().count(me) > 1:
            if time.monotonic() - self._configured_at < self.config.name_check_time + NEWCOMER_WINDOW:
                self._refuse_twin()
                return
            others.append(f"another node named {self.get_fully_qualified_name()}")
        self.supervisor.set_external_fault(
            "command_topic",
            f"another publisher on {topic}: {others}; two command streams make the arm jump. Stop it, "
            "then enable again"
            if others
            else "",
        )

    def _refuse_twin(self) -> None:
        """A same-name node appeared right after this one started: stop commanding and exit 2."""
        self.get_logger().error(
            f"a node named {self.get_fully_qualified_name()} is already running (found after "
            f"name_check_time {self.config.name_check_time} s); two would both drive the robot. Refusing to "
            "run: stop the other one, or start this one under another name (--ros-args -r __node:=other_name)"
        )
        self.exit_status = 2
        if self.supervisor is not None:
            self.supervisor.set_external_fault("node_name", "another node has this node's name")
        self.request_stop()

    def _log_events(self) -> None:
        supervisor = self.supervisor
        if supervisor is None:
            return
        # rclpy loggers fix the severity per call site, hence two call sites.
        for level, message in supervisor.pop_events():
            if level == "error":
                self.get_logger().error(message)
            else:
                self.get_logger().info(message)
        if self._enable_pending and self.active:
            ok, message = supervisor.enable(True)
            if ok:
                self._enable_pending = False
                self.get_logger().info(f"enable_on_activate: {message}")
        loop = self.loop
        if loop is not None and loop.priority_error:
            self.get_logger().warning(f"realtime_priority: {loop.priority_error}")
            loop.priority_error = ""

    # --- diagnostics -----------------------------------------------------------------------
    def diagnostic_values(self) -> dict[str, Any]:
        assert self.supervisor is not None and self.controller is not None and self.policy is not None
        supervisor, controller = self.supervisor, self.controller
        loop = self.loop_stats.summary()
        inference = self.policy.latency_stats()
        step = controller.step_latency.summary()
        counters = supervisor.counters
        state = supervisor.state()
        spec = controller.spec
        return {
            "safety_state": state.value,
            "reason": supervisor.fault or ("stale" if state is SafetyState.STALE else ""),
            "enabled": supervisor.enabled,
            "lifecycle_state": self.lifecycle_state,
            "robot": spec.name,
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
            "observation_age_ms": supervisor.observation_age() * 1e3,
            "joint_states_received": counters.joint_states,
            "rejected_inputs": counters.rejected_inputs + controller.rejected_policy_steps,
            "rejected_missing_joints": counters.rejected_missing_joints,
            "rejected_duplicate_names": counters.rejected_duplicate_names,
            "rejected_non_finite": counters.rejected_non_finite,
            "rejected_malformed": counters.rejected_malformed,
            "rejected_old_stamps": counters.rejected_old_stamps,
            "rejected_out_of_limits": counters.rejected_out_of_limits,
            "rejected_goals": counters.rejected_goals,
            "rejected_policy_steps": controller.rejected_policy_steps,
            "stale_events": counters.stale_events,
            "outage_disables": counters.outage_disables,
            "policy_commands": counters.policy_commands,
            "hold_commands": counters.hold_commands,
        }

    def _publish_diagnostics(self) -> None:
        if self.controller is None:
            return
        values = self.diagnostic_values()
        state = SafetyState(values["safety_state"])
        level = _LEVELS[state]
        message = f"{state.value} at {values['rate_achieved_hz']:.1f} Hz"
        step_faults = self.controller.pop_step_faults()
        if step_faults:
            # The policy step failed since the last report: the robot holds, and the operator must see why.
            failures = ", ".join(f"{fault} x{count}" for fault, count in sorted(step_faults.items()))
            level = DiagnosticStatus.ERROR
            values["reason"] = "; ".join(filter(None, [values["reason"], f"policy step failed: {failures}"]))
            message = f"{message}; policy step failed: {failures}"
        status = DiagnosticStatus()
        status.name = f"{NODE_NAME}: control loop"
        status.hardware_id = values["robot"]
        status.level = level
        status.message = message
        status.values = [KeyValue(key=k, value=_text(values[k])) for k in DIAGNOSTIC_KEYS]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diagnostics.publish(msg)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def spin_node(parameter_overrides: list[Any] | None = None, ros_args: list[str] | None = None) -> int:
    from mpo_ros.ros.runner import run_node

    return run_node(PolicyNode, NODE_NAME, parameter_overrides, ros_args, config_class=PolicyNodeConfig)


# --- entry points ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`mpo-ros serve` flags: one per parameter, plus a ROS params file and --use-sim-time."""
    from mpo_ros.ros.params import add_node_arguments

    add_node_arguments(parser, PolicyNodeConfig, "config/policy.yaml", NODE_NAME)


def run(args: argparse.Namespace) -> int:
    from mpo_ros.ros.params import cli_parameter_overrides

    return spin_node(parameter_overrides=cli_parameter_overrides(PolicyNodeConfig, args, NODE_NAME))


INTERFACE_WORDS = ("position", "velocity", "effort")


def default_command_topic(interface: str) -> str:
    """The command topic of ros2_control's forward controller for ``interface`` (when none is configured)."""
    return f"/forward_{interface}_controller/commands"


def check_command_type(command_type: str, interface: str) -> None:
    """Refuse a JointTrajectory output under a velocity contract: its points carry positions for a
    joint_trajectory_controller, and velocities put there would be read as a trajectory to follow."""
    if interface == "velocity" and command_type == "joint_trajectory":
        raise ConfigError(
            "command_type joint_trajectory sends position trajectories, but the policy's contract commands "
            "the 'velocity' interface; use command_type float64_multi_array with a forward_velocity_controller "
            "(/forward_velocity_controller/commands)"
        )


def check_command_interface(topic: str, interface: str, allow_mismatch: bool) -> None:
    """Refuse a command topic whose name says it feeds another interface than the contract's: absolute
    positions published on /forward_velocity_controller/commands would be taken as rad/s by the robot."""
    named = [word for word in INTERFACE_WORDS if word in topic.lower()]
    if named and interface not in named and not allow_mismatch:
        raise ConfigError(
            f"command_topic {topic} names a {'/'.join(named)} controller, but the policy's contract commands "
            f"the '{interface}' interface; publish to that controller's topic (e.g. /forward_{interface}_"
            "controller/commands), or set allow_interface_mismatch: true if the topic is remapped on purpose"
        )


def main(argv: list[str] | None = None) -> int:
    """Console script `policy_node` (`ros2 run mpo_ros policy_node --ros-args -p policy:=...`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return spin_node(ros_args=sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
