"""The policy node's safety state machine, free of ROS so every transition is unit-tested.

The ROS node feeds it joint states, goals, enable requests and faults it sees in the ROS graph, and
asks it once per control tick what to publish (`decide`): run the policy on this sample, hold a given
position, or publish nothing. The rules, in priority order:

1. ``fault``: nothing is published and the node is disabled; enabling is refused until the cause is
   gone, and then a new enable is needed. Causes: no /joint_states message so far carried every
   contract joint (the joints cannot be identified); the newest measured position lies beyond a
   joint's limits by more than ``limit_tolerance`` (a sensor or calibration fault, or an arm pushed
   past its limits: holding or chasing from there is not safe); a fault the node reports with
   `set_external_fault` (another publisher on the command topic).
2. ``waiting_for_state``: no valid joint state yet. Nothing is published: there is no position to hold.
3. ``stale``: the newest valid joint state is older than ``state_timeout`` (wall clock, measured at
   reception). ``on_stale="hold"`` repeats the last command sent; ``"stop"`` publishes nothing (the
   controller's own timeout takes over). Fresh data clears it; an outage longer than
   ``reenable_after_outage`` also disables the node, so control never resumes by itself after a
   driver crash. With ``stamp_timeout`` > 0 a message whose header stamp is older than that is
   rejected, so a stuck driver that republishes an old sample goes stale too.
4. ``disabled``: the node starts here, and returns here on ``enable(False)`` (the software e-stop).
   ``on_disabled="hold"`` holds the *current* measured position (an operator may jog the arm with
   another controller meanwhile; the hold follows it), ``"stop"`` publishes nothing.
5. ``enabled``: the policy runs, starting from the measured position (bumpless), unless the newest
   joint state was non-finite (hold the last command until a finite one arrives) or no goal has been
   received yet (hold).

Invalid inputs (missing or duplicated joint names, mismatched arrays, non-finite values, old stamps,
goals outside the task's goal region plus ``goal_margin``) are rejected and counted, never passed on;
each kind is logged at once and then summarised every ``fault_log_period`` s while it goes on
(mpo_ros/robot/fault_log.py). All methods are thread-safe: the node calls them from its executor
thread (callbacks) and its control thread (decide).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from mpo_ros.contract.observation import joint_array
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ConfigError, ContractError
from mpo_ros.robot.fault_log import FaultLog

__all__ = [
    "ON_DISABLED_CHOICES",
    "ON_STALE_CHOICES",
    "Action",
    "Counters",
    "Decision",
    "SafetyState",
    "Supervisor",
    "SupervisorSettings",
    "supervisor_settings",
]

ON_STALE_CHOICES = ("hold", "stop")
ON_DISABLED_CHOICES = ("hold", "stop")


def _option(default: Any, help: str, **metadata: Any) -> Any:
    # mpo_ros.config.option's shape (help/choices metadata), kept here: robot/ imports no config code.
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class SupervisorSettings:
    """The safety rules' parameters; the policy node's config extends it, one name everywhere."""

    state_timeout: float = _option(0.1, "watchdog: /joint_states older than this (s) is stale")
    on_stale: str = _option(
        "hold", "on stale /joint_states: hold the last command or stop publishing", choices=ON_STALE_CHOICES
    )
    on_disabled: str = _option(
        "hold",
        "while disabled: hold the current measured position or stop publishing",
        choices=ON_DISABLED_CHOICES,
    )
    reenable_after_outage: float = _option(
        1.0, "a /joint_states outage longer than this (s) disables the node: enable again; 0 = never"
    )
    stamp_timeout: float = _option(
        0.0, "reject /joint_states whose header stamp is older than this (s) on the node's clock; 0 = off"
    )
    limit_tolerance: float = _option(
        0.1, "measured positions beyond a joint limit by more than this (rad) are a fault"
    )
    goal_margin: float = _option(0.05, "goals may lie this far (m) outside the task's goal region")
    fault_log_period: float = _option(
        5.0, "a repeating fault is logged once, then summarised every this many seconds"
    )

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value and its allowed range."""
        problems = []
        if self.on_stale not in ON_STALE_CHOICES:
            problems.append(f"on_stale must be one of {list(ON_STALE_CHOICES)}, got {self.on_stale!r}")
        if self.on_disabled not in ON_DISABLED_CHOICES:
            problems.append(
                f"on_disabled must be one of {list(ON_DISABLED_CHOICES)}, got {self.on_disabled!r}"
            )
        for name in ("state_timeout", "fault_log_period"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                problems.append(f"{name} must be > 0 s, got {value}")
        for name in ("reenable_after_outage", "stamp_timeout", "limit_tolerance", "goal_margin"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be >= 0, got {value}")
        if problems:
            raise ConfigError("; ".join(problems))
        if 0 < self.reenable_after_outage < self.state_timeout:
            raise ConfigError(
                f"reenable_after_outage ({self.reenable_after_outage} s) must be 0 (never) or at least "
                f"state_timeout ({self.state_timeout} s)"
            )


def supervisor_settings(config: Any) -> SupervisorSettings:
    """The SupervisorSettings part of a config that extends it (e.g. the policy node's)."""
    return SupervisorSettings(
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(SupervisorSettings)}
    )


class SafetyState(str, Enum):
    FAULT = "fault"
    WAITING_FOR_STATE = "waiting_for_state"
    STALE = "stale"
    DISABLED = "disabled"
    ENABLED = "enabled"


class Action(str, Enum):
    """What the node publishes this tick."""

    POLICY = "policy"  # run the policy on `positions/velocities/goal`, filter, publish
    HOLD = "hold"  # publish `command` (a position to hold)
    NONE = "none"  # publish nothing


@dataclass(frozen=True)
class Decision:
    action: Action
    state: SafetyState
    reason: str = ""
    # HOLD: the position to hold; None = repeat the last command published (the controller owns it).
    command: np.ndarray | None = None
    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None
    goal: np.ndarray | None = None
    # Age (s) of the joint state this decision is based on; NaN without one.
    observation_age: float = float("nan")
    # True on the first POLICY decision after the node was not under policy control: start from
    # `positions` (the measured pose), so enabling never makes the arm jump.
    starts_policy: bool = False


@dataclass
class Counters:
    """Running totals for /diagnostics."""

    joint_states: int = 0
    rejected_missing_joints: int = 0
    rejected_duplicate_names: int = 0
    rejected_non_finite: int = 0
    rejected_malformed: int = 0
    rejected_old_stamps: int = 0
    rejected_out_of_limits: int = 0
    rejected_goals: int = 0
    stale_events: int = 0
    outage_disables: int = 0
    policy_commands: int = 0
    hold_commands: int = 0
    silent_ticks: int = 0

    @property
    def rejected_inputs(self) -> int:
        return (
            self.rejected_missing_joints
            + self.rejected_duplicate_names
            + self.rejected_non_finite
            + self.rejected_malformed
            + self.rejected_old_stamps
            + self.rejected_out_of_limits
            + self.rejected_goals
        )


@dataclass
class _Sample:
    positions: np.ndarray
    velocities: np.ndarray
    received_ns: int


@dataclass
class _Status:
    enabled: bool = False
    in_policy: bool = False
    sample: _Sample | None = None
    goal: np.ndarray | None = None
    input_invalid: bool = False
    # Fault causes by key ("contract", "limits", and the node's external ones); any one blocks.
    faults: dict[str, str] = field(default_factory=dict)
    stale: bool = False


class Supervisor:
    """Decides, every control tick, whether the policy may command the robot.

    ``settings`` (or keyword overrides of its fields, e.g. ``state_timeout=0.2``) fixes the rules;
    `update_settings` changes them while running (the node's dynamic parameters).
    """

    def __init__(
        self,
        spec: RobotSpec,
        settings: SupervisorSettings | None = None,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        needs_goal: bool | None = None,
        **overrides: Any,
    ) -> None:
        settings = dataclasses.replace(settings or SupervisorSettings(), **overrides)
        settings.validate()
        self.spec = spec
        self.settings = settings
        self.needs_goal = ("goal" in spec.observation) if needs_goal is None else needs_goal
        self._needs_velocities = "joint_velocities" in spec.observation
        self._lower = np.array([j.lower for j in spec.joints])
        self._upper = np.array([j.upper for j in spec.joints])
        self._goal_low = np.asarray(spec.task.goal_low, dtype=np.float64)
        self._goal_high = np.asarray(spec.task.goal_high, dtype=np.float64)
        self.counters = Counters()
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._log = FaultLog(settings.fault_log_period, clock_ns)
        self._s = _Status()

    def update_settings(self, **changes: Any) -> None:
        """Change rules while running; validated as a whole, refused with ConfigError."""
        with self._lock:
            settings = dataclasses.replace(self.settings, **changes)
            settings.validate()
            self.settings = settings
            self._log.period_s = settings.fault_log_period

    # --- inputs (executor thread) --------------------------------------------------------------
    def accept_joint_state(
        self,
        names: Sequence[str],
        positions: Sequence[float] | np.ndarray,
        velocities: Sequence[float] | np.ndarray,
        received_ns: int | None = None,
        stamp_age: float | None = None,
    ) -> bool:
        """Store a /joint_states sample if it is valid; count and log it otherwise.

        ``stamp_age``: now minus the message's header stamp (s) on the node's clock; judged only
        when ``stamp_timeout`` > 0.
        """
        received_ns = self._clock_ns() if received_ns is None else received_ns
        names = list(names)
        with self._lock:
            self.counters.joint_states += 1
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                self.counters.rejected_duplicate_names += 1
                self._log.report(
                    "duplicate_names",
                    f"rejected /joint_states: duplicated joint name(s) {duplicated} in {names}; each joint "
                    "must appear once (check the driver's joint list)",
                )
                return False
            timeout = self.settings.stamp_timeout
            if timeout > 0 and stamp_age is not None and stamp_age > timeout:
                self.counters.rejected_old_stamps += 1
                self._log.report(
                    "old_stamp",
                    f"rejected /joint_states stamped {stamp_age:.3f} s ago (> stamp_timeout {timeout} s): "
                    "the driver republishes old data, or its clock differs from this computer's",
                )
                return False
            try:
                joint_positions = joint_array(self.spec, names, positions)
                if len(velocities) == 0 and not self._needs_velocities:
                    joint_velocities = np.zeros(self.spec.num_joints)
                else:
                    joint_velocities = joint_array(self.spec, names, velocities)
            except ContractError as exc:
                self._reject_unmatched(names, exc)
                return False
            if not (np.all(np.isfinite(joint_positions)) and np.all(np.isfinite(joint_velocities))):
                self.counters.rejected_non_finite += 1
                self._s.input_invalid = True
                self._log.report(
                    "non_finite", "rejected /joint_states with non-finite values; holding position"
                )
                return False
            beyond = self._beyond_limits(joint_positions)
            if beyond:
                self.counters.rejected_out_of_limits += 1
                self._set_fault("limits", f"measured {beyond}; check the joint calibration and the arm")
                self._log.report("limits", f"fault: measured {beyond}; commands stopped, enable refused")
                return False
            if self._s.input_invalid:
                self._s.input_invalid = False
                # Rate-limited too: NaN in every other message would otherwise log this 50 times a second.
                self._log.report("finite_again", "finite /joint_states again; policy may resume", "info")
            for key, message in (
                ("contract", "/joint_states now carries every contract joint; fault cleared"),
                ("limits", "measured positions inside the joint limits again; fault cleared, enable again"),
            ):
                if self._s.faults.pop(key, None) is not None:
                    self._log.event("info", message)
            self._s.sample = _Sample(joint_positions, joint_velocities, received_ns)
            return True

    def _reject_unmatched(self, names: list[str], exc: ContractError) -> None:
        if any(n not in names for n in self.spec.joint_names):
            self.counters.rejected_missing_joints += 1
            if self._s.sample is None:
                self._set_fault("contract", f"/joint_states does not match the policy contract: {exc}")
            self._log.report("missing_joints", f"rejected /joint_states: {exc}")
        else:
            self.counters.rejected_malformed += 1
            self._log.report(
                "malformed",
                f"rejected /joint_states: {exc}; position and velocity arrays must be as long as the name array",
            )

    def _beyond_limits(self, positions: np.ndarray) -> str:
        tolerance = self.settings.limit_tolerance
        bad = (positions < self._lower - tolerance) | (positions > self._upper + tolerance)
        return ", ".join(
            f"joint '{self.spec.joint_names[i]}' at {positions[i]:.4g} rad, beyond its limit "
            f"[{self._lower[i]:g}, {self._upper[i]:g}] + limit_tolerance {tolerance:g}"
            for i in np.flatnonzero(bad)
        )

    def accept_goal(self, goal: Sequence[float] | np.ndarray, frame_id: str = "") -> bool:
        """Store a goal if it is in the contract's goal frame (an empty frame_id is taken to mean it),
        finite, float32-representable and inside the goal region + margin."""
        goal = np.asarray(goal, dtype=np.float64)
        with self._lock:
            problem = self._frame_problem(frame_id) or self._goal_problem(goal)
            if problem:
                self.counters.rejected_goals += 1
                self._log.report(
                    "bad_goal", f"rejected goal {goal.tolist()}: {problem}; keeping the previous goal"
                )
                return False
            self._s.goal = goal
            return True

    def _frame_problem(self, frame_id: str) -> str:
        expected = self.spec.task.goal_frame
        if frame_id and frame_id != expected:
            return (
                f"stamped in frame '{frame_id}', but this policy's goals are in '{expected}' (the contract's "
                f"task.goal_frame); transform the goal into '{expected}' before sending it"
            )
        return ""

    def _goal_problem(self, goal: np.ndarray) -> str:
        if goal.shape != (self.spec.task.goal_dim,):
            return f"need {self.spec.task.goal_dim} values"
        if not np.all(np.isfinite(goal)):
            return "not finite"
        with np.errstate(over="ignore"):
            if not np.all(np.isfinite(goal.astype(np.float32))):
                return "not representable as float32 (the policy's input type)"
        margin = self.settings.goal_margin
        if np.any(goal < self._goal_low - margin) or np.any(goal > self._goal_high + margin):
            return (
                f"outside the task's goal region {self._goal_low.tolist()}..{self._goal_high.tolist()} "
                f"+ goal_margin {margin:g} m (the policy was trained there)"
            )
        return ""

    def set_external_fault(self, key: str, message: str) -> None:
        """A fault seen outside this class (the ROS graph); "" clears it (a new enable is still needed)."""
        with self._lock:
            if message:
                if self._s.faults.get(key) != message:
                    self._log.event("error", f"fault: {message}")
                self._set_fault(key, message)
            elif self._s.faults.pop(key, None) is not None:
                self._log.event("info", f"fault '{key}' cleared; enable again to resume")

    def _set_fault(self, key: str, message: str) -> None:
        self._s.faults[key] = message
        self._s.enabled = False

    def enable(self, flag: bool) -> tuple[bool, str]:
        """The e-stop service. Disabling always succeeds; enabling needs fresh, valid data and no fault."""
        with self._lock:
            if not flag:
                was = self._s.enabled
                self._s.enabled = False
                if not was:
                    return True, "already disabled"
                if self.settings.on_disabled == "stop":
                    return True, "disabled: not publishing (on_disabled=stop)"
                return True, "disabled: holding the measured position"
            if self._s.faults:
                return False, f"cannot enable: {self._fault_text()}"
            if self._s.sample is None:
                return False, "cannot enable: no valid /joint_states received yet"
            age = (self._clock_ns() - self._s.sample.received_ns) / 1e9
            if age > self.settings.state_timeout:
                return False, f"cannot enable: newest /joint_states is {age:.3f} s old"
            if self._s.enabled:
                return True, "already enabled"
            self._s.enabled = True
            return True, "enabled: policy commands the robot"

    # --- the control tick (control thread) -----------------------------------------------------
    def decide(self, now_ns: int | None = None) -> Decision:
        now_ns = self._clock_ns() if now_ns is None else now_ns
        with self._lock:
            decision = self._decide(now_ns)
            self._s.in_policy = decision.action is Action.POLICY
            if decision.action is Action.POLICY:
                self.counters.policy_commands += 1
            elif decision.action is Action.HOLD:
                self.counters.hold_commands += 1
            else:
                self.counters.silent_ticks += 1
            return decision

    def _decide(self, now_ns: int) -> Decision:
        s = self._s
        if s.faults:
            return Decision(Action.NONE, SafetyState.FAULT, self._fault_text())
        if s.sample is None:
            return Decision(Action.NONE, SafetyState.WAITING_FOR_STATE, "no valid /joint_states yet")
        age = (now_ns - s.sample.received_ns) / 1e9
        if age > self.settings.state_timeout:
            return self._stale(age)
        if s.stale:
            s.stale = False
            self._log.event(
                "info", f"watchdog: fresh /joint_states again ({age * 1e3:.1f} ms old); recovered"
            )
        if not s.enabled:
            if self.settings.on_disabled == "stop":
                return Decision(
                    Action.NONE, SafetyState.DISABLED, "disabled: not publishing", observation_age=age
                )
            return Decision(
                Action.HOLD,
                SafetyState.DISABLED,
                "disabled: holding the measured position",
                command=s.sample.positions,
                observation_age=age,
            )
        if s.input_invalid:
            return self._hold_enabled("non-finite /joint_states: holding", age)
        if self.needs_goal and s.goal is None:
            return self._hold_enabled("waiting for a goal", age)
        return Decision(
            Action.POLICY,
            SafetyState.ENABLED,
            "",
            positions=s.sample.positions,
            velocities=s.sample.velocities,
            goal=s.goal,
            observation_age=age,
            starts_policy=not s.in_policy,
        )

    def _stale(self, age: float) -> Decision:
        s = self._s
        settings = self.settings
        if not s.stale:
            s.stale = True
            self.counters.stale_events += 1
            self._log.event(
                "error",
                f"watchdog: /joint_states is {age:.3f} s old (> state_timeout {settings.state_timeout} s); "
                + ("holding the last command" if settings.on_stale == "hold" else "stopped publishing"),
            )
        if s.enabled and 0 < settings.reenable_after_outage < age:
            s.enabled = False
            self.counters.outage_disables += 1
            self._log.event(
                "error",
                f"/joint_states outage longer than reenable_after_outage ({settings.reenable_after_outage} s): "
                "disabled; enable again once the robot is back",
            )
        reason = f"/joint_states {age:.3f} s old"
        if settings.on_stale == "stop":
            return Decision(Action.NONE, SafetyState.STALE, reason, observation_age=age)
        return Decision(Action.HOLD, SafetyState.STALE, reason, observation_age=age)

    def _hold_enabled(self, reason: str, age: float) -> Decision:
        return Decision(Action.HOLD, SafetyState.ENABLED, reason, observation_age=age)

    def _fault_text(self) -> str:
        return "; ".join(self._s.faults.values())

    # --- reporting -----------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._s.enabled

    @property
    def fault(self) -> str:
        with self._lock:
            return self._fault_text()

    def state(self, now_ns: int | None = None) -> SafetyState:
        """The current state without counting a tick (for diagnostics)."""
        now_ns = self._clock_ns() if now_ns is None else now_ns
        with self._lock:
            s = self._s
            if s.faults:
                return SafetyState.FAULT
            if s.sample is None:
                return SafetyState.WAITING_FOR_STATE
            if (now_ns - s.sample.received_ns) / 1e9 > self.settings.state_timeout:
                return SafetyState.STALE
            return SafetyState.ENABLED if s.enabled else SafetyState.DISABLED

    def observation_age(self, now_ns: int | None = None) -> float:
        now_ns = self._clock_ns() if now_ns is None else now_ns
        with self._lock:
            if self._s.sample is None:
                return float("nan")
            return (now_ns - self._s.sample.received_ns) / 1e9

    def pop_events(self) -> list[tuple[str, str]]:
        """(level, message) lines since the last call, for the node to log (rate-limited faults).

        level is "error" (the node is not following the policy because of a problem) or "info".
        """
        with self._lock:
            return self._log.pop()

    def report(self, key: str, message: str, level: str = "error") -> None:
        """Log a repeating problem found elsewhere (the control step) through the same rate limit."""
        with self._lock:
            self._log.report(key, message, level)
